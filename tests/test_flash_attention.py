"""The Pallas flash-attention kernels against the XLA reference, in interpret mode on CPU.

Both grid layouts run: "gpu" (the Triton kernels: a key loop inside each program) and "tpu"
(the Mosaic kernels: the key loop as an "arbitrary" grid axis with VMEM scratch). Tiles are
small so every case spans several query and key tiles, and lengths are not multiples of them.
Gradients are those of a random linear function of the output, so every output entry counts.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swejax_kernels import flash
from swejax_kernels.reference import attention

# Small tiles for interpret mode. GPU tiles are powers of two (>= 16); TPU key tiles are whole
# 128-lane tiles, so the TPU cases use longer sequences to span several of them.
GPU_TILES = flash.BlockSizes(block_q=32, block_kv=16, block_q_bwd=16, block_kv_bwd=32)
TPU_TILES = flash.BlockSizes(block_q=32, block_kv=128, block_q_bwd=16, block_kv_bwd=128)
TILES = {"gpu": GPU_TILES, "tpu": TPU_TILES}

F32_ATOL = 2e-5


def _inputs(seed, batch, q_len, kv_len, num_q_heads, num_kv_heads, head_dim, dtype, segments):
    keys = jax.random.split(jax.random.key(seed), 5)
    q = jax.random.normal(keys[0], (batch, q_len, num_q_heads, head_dim), dtype)
    k = jax.random.normal(keys[1], (batch, kv_len, num_kv_heads, head_dim), dtype)
    v = jax.random.normal(keys[2], (batch, kv_len, num_kv_heads, head_dim), dtype)
    weights = jax.random.normal(keys[3], (batch, q_len, num_q_heads, head_dim), jnp.float32)
    segment_ids = None
    if segments:
        # Packed rows of a few segments each, of uneven lengths.
        starts = jax.random.bernoulli(keys[4], 0.08, (batch, q_len))
        segment_ids = jnp.cumsum(starts, axis=1).astype(jnp.int32)
    return q, k, v, weights, segment_ids


def _out_and_grads(attend, q, k, v, weights):
    """Output and (dq, dk, dv) of sum(out * weights), in one compiled function."""

    def run(q, k, v):
        out, vjp = jax.vjp(attend, q, k, v)
        return out, vjp(weights.astype(out.dtype))

    return jax.jit(run)(q, k, v)


def _max_err(a, b) -> float:
    return float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))


CASES = [
    # backend, dtype, causal, segments, (T, S), (Nq, Nkv)
    ("gpu", jnp.float32, True, False, (40, 40), (4, 2)),
    ("gpu", jnp.float32, False, False, (40, 40), (2, 2)),
    ("gpu", jnp.float32, True, False, (24, 53), (4, 1)),
    ("gpu", jnp.float32, True, True, (48, 48), (4, 2)),
    ("gpu", jnp.float32, False, True, (40, 40), (2, 2)),
    ("gpu", jnp.bfloat16, True, False, (56, 56), (4, 1)),
    ("gpu", jnp.bfloat16, False, True, (48, 48), (4, 2)),
    ("tpu", jnp.float32, True, False, (150, 150), (4, 2)),
    ("tpu", jnp.float32, True, False, (72, 190), (4, 1)),
    ("tpu", jnp.float32, True, True, (160, 160), (2, 2)),
    ("tpu", jnp.bfloat16, False, False, (150, 150), (4, 2)),
]


def _case_id(case) -> str:
    backend, dtype, causal, segments, (t, s), (nq, nkv) = case
    mask = ("causal" if causal else "full") + ("+seg" if segments else "")
    return f"{backend}-{jnp.dtype(dtype).name}-{mask}-T{t}S{s}-g{nq // nkv}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_flash_attention_matches_reference(case):
    backend, dtype, causal, segments, (q_len, kv_len), (num_q, num_kv) = case
    q, k, v, weights, segment_ids = _inputs(0, 2, q_len, kv_len, num_q, num_kv, 16, dtype, segments)
    kwargs = dict(causal=causal, segment_ids=segment_ids)

    def attend(q, k, v):
        return flash.flash_attention(
            q, k, v, interpret=True, block_sizes=TILES[backend], backend=backend, **kwargs
        )

    out, grads = _out_and_grads(attend, q, k, v, weights)
    assert out.dtype == dtype and [g.dtype for g in grads] == [dtype] * 3

    if dtype == jnp.float32:
        ref_out, ref_grads = _out_and_grads(
            lambda q, k, v: attention(q, k, v, **kwargs), q, k, v, weights
        )
        assert _max_err(out, ref_out) < F32_ATOL
        for name, got, want in zip("qkv", grads, ref_grads, strict=True):
            assert _max_err(got, want) < F32_ATOL, f"d{name}"
        return

    # bf16: the truth is the reference in float32 on the same (bf16-rounded) inputs. The kernel
    # must be about as close to it as XLA's own bf16 attention is: it rounds the same operands
    # (p and ds to bf16 before their matmuls) and accumulates in float32.
    up = [x.astype(jnp.float32) for x in (q, k, v)]
    true_out, true_grads = _out_and_grads(
        lambda q, k, v: attention(q, k, v, **kwargs), *up, weights
    )
    xla_out, xla_grads = _out_and_grads(
        lambda q, k, v: attention(q, k, v, **kwargs), q, k, v, weights
    )
    assert _max_err(out, true_out) <= 2 * _max_err(xla_out, true_out)
    assert _max_err(out, true_out) < 0.05
    for name, got, xla, true in zip("qkv", grads, xla_grads, true_grads, strict=True):
        assert _max_err(got, true) <= 2 * _max_err(xla, true), f"d{name}"


def _reference_lse(q, k, causal, q_segment_ids=None, kv_segment_ids=None):
    q_len, kv_len, head_dim = q.shape[1], k.shape[1], q.shape[3]
    group = q.shape[2] // k.shape[2]
    k = jnp.repeat(k, group, axis=2)
    logits = jnp.einsum("BTNH,BSNH->BNTS", q, k) * head_dim**-0.5
    visible = jnp.ones((q.shape[0], q_len, kv_len), bool)
    if causal:
        visible &= jnp.arange(kv_len)[None, :] <= jnp.arange(q_len)[:, None] + kv_len - q_len
    if q_segment_ids is not None:
        visible &= q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
    return jax.nn.logsumexp(jnp.where(visible[:, None], logits, -jnp.inf), axis=-1)


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_forward_lse_is_logsumexp_of_scaled_logits(backend):
    q, k, v, _, _ = _inputs(1, 1, 100, 140, 4, 2, 16, jnp.float32, segments=False)
    out, lse = flash.flash_forward(
        q, k, v, causal=True, interpret=True, block_sizes=TILES[backend], backend=backend
    )
    assert lse.shape == (1, 4, 100) and lse.dtype == jnp.float32
    np.testing.assert_allclose(lse, _reference_lse(q, k, causal=True), atol=F32_ATOL)
    np.testing.assert_allclose(out, attention(q, k, v, causal=True), atol=F32_ATOL)


def _merge(parts):
    """Combine (out, lse) of disjoint key shards exactly, as ring attention does."""
    lse = jnp.logaddexp(*[p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    out = 0.0
    for part_out, part_lse in parts:
        # A shard a row cannot see has lse = -inf and weight exp(-inf) = 0.
        weight = jnp.exp(part_lse - jnp.where(jnp.isneginf(lse), 0.0, lse))
        out = out + weight.transpose(0, 2, 1)[..., None] * part_out.astype(jnp.float32)
    return out, lse


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
@pytest.mark.slow
def test_block_contract_over_key_shards(backend):
    """flash_forward on two key shards, merged, then flash_backward per shard with the FINAL
    out/lse, equals attention over all keys and its VJP: the contract ring attention uses.
    Segments are chosen so some rows see nothing in one shard (lse = -inf there)."""
    seq = 256 if backend == "tpu" else 64
    split = seq // 2
    q, k, v, dout, _ = _inputs(2, 1, seq, seq, 4, 2, 16, jnp.float32, segments=False)
    # Segment 3 spans the first shard and part of the second, so segment 4's rows see nothing
    # in the first shard and both segments' rows see keys in the second.
    boundary = (split + seq) // 2
    segment_ids = (jnp.arange(seq)[None, :] >= boundary).astype(jnp.int32) + 3
    shards = [(slice(0, split), "first"), (slice(split, seq), "second")]
    kwargs = dict(causal=False, interpret=True, block_sizes=TILES[backend], backend=backend)

    parts = [
        flash.flash_forward(
            q,
            k[:, keys],
            v[:, keys],
            q_segment_ids=segment_ids,
            kv_segment_ids=segment_ids[:, keys],
            **kwargs,
        )
        for keys, _ in shards
    ]
    assert bool(jnp.all(jnp.isneginf(parts[0][1][:, :, boundary:])))
    out, lse = _merge(parts)
    ref_out, ref_vjp = jax.vjp(
        lambda q, k, v: attention(q, k, v, causal=False, segment_ids=segment_ids), q, k, v
    )
    np.testing.assert_allclose(out, ref_out, atol=F32_ATOL)
    np.testing.assert_allclose(lse, _reference_lse(q, k, False, segment_ids, segment_ids), 1e-6)

    ref_dq, ref_dk, ref_dv = ref_vjp(dout)
    dq = jnp.zeros_like(q)
    for keys, name in shards:
        dq_part, dk, dv = flash.flash_backward(
            q,
            k[:, keys],
            v[:, keys],
            out,
            lse,
            dout,
            q_segment_ids=segment_ids,
            kv_segment_ids=segment_ids[:, keys],
            **kwargs,
        )
        np.testing.assert_allclose(dk, ref_dk[:, keys], atol=F32_ATOL, err_msg=f"dk {name}")
        np.testing.assert_allclose(dv, ref_dv[:, keys], atol=F32_ATOL, err_msg=f"dv {name}")
        dq = dq + dq_part
    np.testing.assert_allclose(dq, ref_dq, atol=F32_ATOL)


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
@pytest.mark.slow
def test_rows_that_see_no_key(backend):
    """Causal with T > S: the first T - S queries precede every key. They get out = 0 and
    lse = -inf; the backward is finite and they add nothing to dk and dv. 10 of them share the
    first query tile with rows that do see keys, so the tile is computed, not skipped."""
    q, k, v, dout, _ = _inputs(3, 1, 40, 30, 2, 1, 16, jnp.float32, segments=False)
    kwargs = dict(causal=True, interpret=True, block_sizes=TILES[backend], backend=backend)
    out, lse = flash.flash_forward(q, k, v, **kwargs)
    empty = slice(0, 10)
    assert bool(jnp.all(jnp.isneginf(lse[:, :, empty]))) and bool(jnp.all(out[:, empty] == 0))
    assert bool(jnp.all(jnp.isfinite(lse[:, :, 10:])))
    np.testing.assert_allclose(lse, _reference_lse(q, k, causal=True), atol=F32_ATOL)

    dq, dk, dv = flash.flash_backward(q, k, v, out, lse, dout, **kwargs)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in (dq, dk, dv))
    assert bool(jnp.all(dq[:, empty] == 0))
    # The reference gives empty rows a uniform average instead, so compare on the others only.
    ref_out, ref_vjp = jax.vjp(lambda q, k, v: attention(q, k, v, causal=True), q, k, v)
    np.testing.assert_allclose(out[:, 10:], ref_out[:, 10:], atol=F32_ATOL)
    _, ref_dk, ref_dv = ref_vjp(dout.at[:, empty].set(0.0))
    np.testing.assert_allclose(dk, ref_dk, atol=F32_ATOL)
    np.testing.assert_allclose(dv, ref_dv, atol=F32_ATOL)


def test_compiled_kernels_are_refused_on_cpu():
    q = jnp.zeros((1, 16, 2, 16))
    with pytest.raises(ValueError, match="interpret=True"):
        flash.flash_attention(q, q, q)
    with pytest.raises(ValueError, match="interpret=True"):
        flash.flash_forward(q, q, q, causal=True, backend="tpu")


def test_bad_shapes_and_tiles_are_refused():
    q = jnp.zeros((1, 16, 3, 16))
    kv = jnp.zeros((1, 16, 2, 16))
    with pytest.raises(ValueError, match="grouping"):
        flash.flash_attention(q, kv, kv, interpret=True)
    q = jnp.zeros((1, 16, 2, 16))
    with pytest.raises(ValueError, match="powers of two"):
        flash.flash_attention(q, q, q, interpret=True, block_sizes=flash.BlockSizes(block_q=24))
    with pytest.raises(ValueError, match="multiple of 128"):
        flash.flash_attention(
            q, q, q, interpret=True, backend="tpu", block_sizes=flash.BlockSizes(block_kv=64)
        )
    with pytest.raises(ValueError, match="T == S"):
        flash.flash_attention(q, q[:, :8], q[:, :8], segment_ids=jnp.zeros((1, 16), jnp.int32))


def test_default_tiles_fit_each_backend():
    tpu = flash.BlockSizes.for_backend("tpu")
    assert tpu.block_q % 8 == 0 and tpu.block_q_bwd % 8 == 0
    assert tpu.block_kv % 128 == 0 and tpu.block_kv_bwd % 128 == 0
    gpu = flash.BlockSizes.for_backend("gpu")
    for block in (gpu.block_q, gpu.block_kv, gpu.block_q_bwd, gpu.block_kv_bwd):
        assert block >= 16 and block & (block - 1) == 0
    assert flash.BlockSizes.for_backend() == gpu  # CPU runs the GPU layout in interpret mode


@pytest.mark.slow
def test_bench_smoke(tmp_path):
    path = Path(__file__).parents[1] / "tools" / "bench_attention.py"
    spec = importlib.util.spec_from_file_location("bench_attention", path)
    bench_attention = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_attention)

    out = tmp_path / "bench.json"
    assert bench_attention.main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["jax_version"] == jax.__version__
    rows = report["results"]
    assert (
        max(report["flash_vs_reference_max_abs_diff"][g] for g in ("out", "dq", "dk", "dv")) < 0.1
    )
    by_impl = {(row["impl"], row["seq"]): row for row in rows}
    for seq in (40, 72):
        assert by_impl["flash", seq]["fwd_tflops"] > 0
        assert by_impl["flash", seq]["fwd_bwd_tflops"] > 0
        assert by_impl["reference", seq]["fwd_tflops"] > 0
        assert "NVIDIA GPU" in by_impl["cudnn", seq]["skipped"]
