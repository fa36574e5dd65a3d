"""Every Pallas kernel lowered, not run, for CUDA (Triton) and TPU (Mosaic) on this CPU machine.

`swejax_kernels.platform.lowering_for` makes the kernels build their hardware layout, and
`lower(lowering_platforms=...)` runs all of Pallas' lowering for that platform: block shapes
against the backend's tiling rules, index maps, every op of the kernel bodies down to Triton or
Mosaic IR, and shard_map around them. A kernel that lowers here can still fail in the device
compiler (register or VMEM limits); that step needs the device (`tools/gpu_suite.sh`).

Interpret-mode tests (test_flash_attention, test_decode_attention, test_ring_attention) check
what the kernels compute; these check that the same code is accepted by the real lowerings,
alone, inside the ring, inside the model's training gradient and inside the engine's decode.
"""

from __future__ import annotations

import collections
import contextlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from swejax.models import build_model, place_state, preset
from swejax.sharding import activation_mesh, make_mesh
from swejax_kernels import flash
from swejax_kernels.decode import paged_decode_attention
from swejax_kernels.platform import lowering_for, target_platform

# Our platform name, the name JAX lowers for, and the custom call each kernel becomes.
PLATFORMS = {"gpu": ("cuda", "__gpu$xla.gpu.triton"), "tpu": ("tpu", "tpu_custom_call")}
S = jax.ShapeDtypeStruct


def _lower(fn, backend: str, *args, mesh=None) -> str:
    """StableHLO text of jit(fn) lowered for `backend`'s device, under `mesh` if given."""
    platform, _ = PLATFORMS[backend]
    context = activation_mesh(mesh) if mesh is not None else contextlib.nullcontext()
    with lowering_for(backend), context:
        return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()


def _kernels(text: str, backend: str) -> collections.Counter:
    """Pallas kernel names, one per distinct lowered kernel (jit outlines repeated calls of one
    shape into one function, so a kernel traced several times with one shape counts once)."""
    _, call = PLATFORMS[backend]
    calls = re.findall(r"stablehlo\.custom_call @([\w$.]+)", text)
    assert calls and set(calls) == {call}, f"want only {call} custom calls, got {set(calls)}"
    names = re.findall(r'\b(?:kernel_)?name = "(flash_\w+|paged_decode\w*)"', text)
    assert len(names) == len(calls), "every custom call should be one named kernel"
    return collections.Counter(names)


def test_lowering_for_sets_and_restores_the_target():
    q = jnp.zeros((1, 16, 2, 16))
    assert target_platform() == "cpu"
    with lowering_for("tpu"):
        assert target_platform() == "tpu"
        assert flash.BlockSizes.for_backend() == flash.BlockSizes.for_backend("tpu")
        jax.jit(flash.flash_attention).trace(q, q, q)  # caches a trace of the TPU kernel
    assert target_platform() == "cpu"
    with pytest.raises(ValueError, match="one of"), lowering_for("cpu"):
        pass
    # Outside the block the kernels are refused again: the cached trace is not reused.
    with pytest.raises(ValueError, match="interpret=True"):
        flash.flash_attention(q, q, q)


FLASH_CASES = [
    # (T, S), (Nq, Nkv), head_dim, dtype, causal, segments
    ((2048, 2048), (8, 1), 128, jnp.bfloat16, True, False),  # the benchmark's shape, shorter
    ((1000, 1000), (4, 2), 128, jnp.bfloat16, True, True),  # not a tile multiple, packed
    ((256, 1536), (8, 2), 128, jnp.bfloat16, True, False),  # queries are the last T keys
    ((384, 384), (2, 2), 64, jnp.float32, False, False),
    ((520, 520), (4, 1), 80, jnp.bfloat16, False, True),  # head dim padded for Triton
]


@pytest.mark.parametrize("backend", PLATFORMS)
@pytest.mark.parametrize("case", FLASH_CASES, ids=lambda case: f"T{case[0][0]}S{case[0][1]}")
def test_flash_forward_and_backward_lower(backend, case):
    (q_len, kv_len), (num_q, num_kv), head_dim, dtype, causal, segmented = case
    q = S((2, q_len, num_q, head_dim), dtype)
    kv = S((2, kv_len, num_kv, head_dim), dtype)
    segment_ids = S((2, q_len), jnp.int32) if segmented else None

    def loss(q, k, v, segment_ids):
        out = flash.flash_attention(q, k, v, causal=causal, segment_ids=segment_ids)
        return jnp.sum(out.astype(jnp.float32))

    grad = jax.grad(loss, argnums=(0, 1, 2))
    text = _lower(grad, backend, q, kv, kv, segment_ids)
    assert _kernels(text, backend) == {"flash_forward": 1, "flash_dq": 1, "flash_dkdv": 1}


DECODE_CASES = [
    # page_size, block_pages, group, num_splits, kv_heads
    (16, 4, 8, 1, 2),
    (64, 1, 1, 4, 2),
    (32, 2, 4, 2, 2),
    (64, 4, 8, 2, 1),  # one KV head per device: the TPU kernel drops the unit axis
]


@pytest.mark.parametrize("backend", PLATFORMS)
@pytest.mark.parametrize("case", DECODE_CASES, ids=lambda case: "p{}b{}g{}s{}k{}".format(*case))
def test_paged_decode_kernel_lowers(backend, case):
    page_size, block_pages, group, num_splits, kv_heads = case
    layers, pages, head_dim, batch, table = 4, 64, 128, 8, 16
    pool = S((layers, pages, page_size, kv_heads, head_dim), jnp.bfloat16)
    args = (
        S((batch, kv_heads * group, head_dim), jnp.bfloat16),
        pool,
        pool,
        S((), jnp.int32),
        S((batch, table), jnp.int32),
        S((batch,), jnp.int32),
    )

    def decode(*args):
        return paged_decode_attention(*args, block_pages=block_pages, num_splits=num_splits)

    assert sum(_kernels(_lower(decode, backend, *args), backend).values()) == 1


# The model's training gradient: flash alone, flash per shard of batch and heads, and the ring
# over context=4 (its zigzag steps call three block shapes, each a forward, dq and dk/dv kernel).
MODEL_CASES = [
    ("flash", None, 1),
    ("flash", {"fsdp": 4, "tensor": 2}, 1),
    ("ring", {"context": 4, "fsdp": 2}, 3),
]


@pytest.mark.parametrize("backend", PLATFORMS)
@pytest.mark.parametrize(
    ("attention", "mesh_shape", "shapes"), MODEL_CASES, ids=["flash", "flash-mesh", "ring"]
)
def test_model_gradient_lowers_with_the_kernels(backend, attention, mesh_shape, shapes):
    cfg = preset("tiny", vocab_size=128, num_layers=2, attention=attention, dtype="bfloat16")
    mesh = make_mesh(**mesh_shape) if mesh_shape else None
    with lowering_for(backend):  # the model checks its attention choice when built
        model = build_model(cfg, seed=0)
    if mesh is not None:
        model = place_state(model, mesh)
    graphdef, state = nnx.split(model)
    ids = np.zeros((2, 64), np.int32)
    positions = np.broadcast_to(np.arange(64, dtype=np.int32), (2, 64))
    segments = np.ones((2, 64), np.int32)

    def loss(state):
        logits = nnx.merge(graphdef, state)(ids, positions, segments)
        return jnp.sum(logits.astype(jnp.float32))

    text = _lower(jax.grad(loss), backend, state, mesh=mesh)
    kernels = _kernels(text, backend)
    assert kernels == {"flash_forward": shapes, "flash_dq": shapes, "flash_dkdv": shapes}
    if attention == "ring":
        assert "collective_permute" in text, "the ring passes K/V blocks between devices"


@pytest.mark.parametrize("backend", PLATFORMS)
def test_engine_decode_step_lowers_with_the_decode_kernel(backend):
    """The engine's decode program (sampling loop and all) on an fsdp=4 x tensor=2 mesh: the
    paged decode kernel per device's slots, pages and KV heads, and no other attention."""
    from swejax.sampling import Engine, EngineConfig, SamplingParams

    cfg = preset("tiny", vocab_size=128, num_layers=2, attention="flash", dtype="bfloat16")
    mesh = make_mesh(fsdp=4, tensor=2)
    with lowering_for(backend):
        model = place_state(build_model(cfg, seed=0), mesh)
    config = EngineConfig(num_slots=4, capacity=64, page_size=16, chunk=8, steps_per_call=4)
    engine = Engine(model, config, SamplingParams(temperature=1.0), mesh=mesh)
    platform, _ = PLATFORMS[backend]
    with lowering_for(backend):
        traced = engine.trace_decode(config.pages_per_slot)
        lowered = traced.lower(lowering_platforms=(platform,))
    kernels = _kernels(lowered.as_text(), backend)
    assert list(kernels) == ["paged_decode_attention"]
