"""On a GPU: the kernels compiled for real (Triton through Pallas, cuDNN) against their XLA
references, with the tolerances of the interpret-mode tests on CPU.

The suite runs on CPU by default (tests/conftest.py); on a machine with a GPU run these with

    JAX_PLATFORMS=cuda,cpu .venv/bin/python -m pytest -m gpu
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_decode_attention import _case as decode_case
from test_flash_attention import F32_ATOL, _inputs, _max_err, _out_and_grads

from swejax_kernels import flash
from swejax_kernels.decode import paged_decode_attention, reference_paged_decode_attention
from swejax_kernels.reference import attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        jax.default_backend() != "gpu", reason="needs a GPU (JAX_PLATFORMS=cuda,cpu)"
    ),
]

FLASH_CASES = [
    # dtype, causal, segments, (T, S), (Nq, Nkv), head dim
    (jnp.float32, True, False, (512, 512), (8, 2), 128),
    (jnp.float32, True, True, (384, 384), (4, 4), 64),
    (jnp.float32, True, False, (200, 333), (8, 1), 128),
    (jnp.bfloat16, True, False, (1024, 1024), (8, 1), 128),
    (jnp.bfloat16, False, True, (512, 512), (4, 2), 64),
]


@pytest.mark.parametrize("case", FLASH_CASES, ids=lambda c: f"{jnp.dtype(c[0]).name}-T{c[3][0]}")
def test_flash_compiled_for_the_gpu_matches_the_reference(case):
    dtype, causal, segments, (q_len, kv_len), (num_q, num_kv), head_dim = case
    q, k, v, weights, segment_ids = _inputs(
        0, 2, q_len, kv_len, num_q, num_kv, head_dim, dtype, segments
    )
    kwargs = dict(causal=causal, segment_ids=segment_ids)
    out, grads = _out_and_grads(
        lambda q, k, v: flash.flash_attention(q, k, v, **kwargs), q, k, v, weights
    )
    up = [x.astype(jnp.float32) for x in (q, k, v)]
    true_out, true_grads = _out_and_grads(
        lambda q, k, v: attention(q, k, v, **kwargs), *up, weights
    )
    if dtype == jnp.float32:
        assert _max_err(out, true_out) < F32_ATOL
        for name, got, want in zip("qkv", grads, true_grads, strict=True):
            assert _max_err(got, want) < F32_ATOL, f"d{name}"
        return
    # bf16: about as close to the float32 truth as XLA's own bf16 attention.
    xla_out, xla_grads = _out_and_grads(
        lambda q, k, v: attention(q, k, v, **kwargs), q, k, v, weights
    )
    assert _max_err(out, true_out) <= 2 * _max_err(xla_out, true_out)
    for name, got, xla, true in zip("qkv", grads, xla_grads, true_grads, strict=True):
        assert _max_err(got, true) <= 2 * _max_err(xla, true), f"d{name}"


@pytest.mark.parametrize("num_splits", [1, 2])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_paged_decode_compiled_for_the_gpu_matches_the_reference(dtype, num_splits):
    args = decode_case(page_size=16, group=4, dtype=dtype)
    got = jax.jit(lambda *a: paged_decode_attention(*a, num_splits=num_splits))(*args)
    want = reference_paged_decode_attention(*args)
    tolerance = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}[dtype]
    np.testing.assert_allclose(np.float32(got), np.float32(want), atol=tolerance)


def test_cudnn_matches_the_reference_in_bfloat16():
    from swejax.models.attention import _cudnn

    q, k, v, weights, segment_ids = _inputs(1, 2, 512, 512, 8, 2, 128, jnp.bfloat16, True)
    up = [x.astype(jnp.float32) for x in (q, k, v)]
    got, _ = _out_and_grads(lambda q, k, v: _cudnn(q, k, v, segment_ids), q, k, v, weights)
    kwargs = dict(causal=True, segment_ids=segment_ids)
    true, _ = _out_and_grads(lambda q, k, v: attention(q, k, v, **kwargs), *up, weights)
    xla, _ = _out_and_grads(lambda q, k, v: attention(q, k, v, **kwargs), q, k, v, weights)
    assert _max_err(got, true) <= 2 * _max_err(xla, true)
