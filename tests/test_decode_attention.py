"""Paged decode attention: the Pallas kernel (interpret mode, both lowerings' formulations)
against its plain-XLA reference and against the model's gather + cached_attention path."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from swejax.models.kv_cache import read_pages, write_pages
from swejax_kernels.decode import paged_decode_attention, reference_paged_decode_attention
from swejax_kernels.reference import cached_attention

NUM_LAYERS, NUM_POOL_PAGES, HEAD_DIM, NUM_KV_HEADS = 3, 11, 16, 2
TABLE_PAGES = 4
LAYER = 2  # not 0: the kernel must index the layer axis of the pool
TOLERANCE = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}


def _case(page_size: int, group: int, dtype, seed: int = 0, kv_heads: int = NUM_KV_HEADS):
    """Pools, a random page table (pages shared between slots, out of order, some unassigned
    entries = P), and lengths covering 0, 1, page boundaries, full and past the table."""
    rng = np.random.default_rng(seed)
    capacity = TABLE_PAGES * page_size
    lengths = [0, 1, page_size, 2 * page_size, capacity, 3, capacity - 1, capacity + 7]
    batch = len(lengths)
    pool_shape = (NUM_LAYERS, NUM_POOL_PAGES, page_size, kv_heads, HEAD_DIM)
    k_pool = jnp.asarray(rng.standard_normal(pool_shape), dtype)
    v_pool = jnp.asarray(rng.standard_normal(pool_shape), dtype)
    q = jnp.asarray(rng.standard_normal((batch, kv_heads * group, HEAD_DIM)), dtype)
    table = rng.integers(0, NUM_POOL_PAGES, (batch, TABLE_PAGES))
    table[1, 1:] = NUM_POOL_PAGES  # the engine's marker for unassigned pages
    return q, k_pool, v_pool, jnp.asarray(table, jnp.int32), jnp.asarray(lengths, jnp.int32)


def _kernel(platform, block_pages, num_splits):
    return jax.jit(
        functools.partial(
            paged_decode_attention,
            block_pages=block_pages,
            num_splits=num_splits,
            interpret=True,
            platform=platform,
        )
    )


@pytest.mark.parametrize(
    "platform, page_size, block_pages, group, num_splits, dtype, kv_heads",
    [
        ("gpu", 4, 4, 1, 1, jnp.float32, 2),
        ("gpu", 8, 2, 2, 1, jnp.float32, 2),
        ("gpu", 16, 1, 4, 1, jnp.float32, 2),
        ("gpu", 8, 2, 4, 3, jnp.float32, 2),
        ("gpu", 16, 1, 2, 2, jnp.bfloat16, 2),
        ("gpu", 8, 2, 4, 2, jnp.float32, 1),
        ("tpu", 4, 1, 1, 1, jnp.float32, 2),
        ("tpu", 8, 2, 2, 2, jnp.float32, 2),
        ("tpu", 3, 2, 4, 1, jnp.float32, 2),
        ("tpu", 8, 1, 4, 1, jnp.bfloat16, 2),
        # One KV head per device: the TPU kernel takes the pools without that axis.
        ("tpu", 8, 2, 4, 2, jnp.float32, 1),
    ],
)
def test_matches_reference(platform, page_size, block_pages, group, num_splits, dtype, kv_heads):
    q, k_pool, v_pool, table, lengths = _case(page_size, group, dtype, kv_heads=kv_heads)
    layer = jnp.int32(LAYER)
    got = _kernel(platform, block_pages, num_splits)(q, k_pool, v_pool, layer, table, lengths)
    want = reference_paged_decode_attention(q, k_pool, v_pool, layer, table, lengths)
    assert got.shape == q.shape and got.dtype == q.dtype
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(
        np.asarray(got, np.float32), np.asarray(want, np.float32), atol=tol, rtol=tol
    )
    assert not np.any(np.asarray(got[0])), "a slot of length 0 must read nothing"


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_matches_model_cache_path(platform):
    """Like Attention.with_cache at T == 1: write the new token's K/V, then attend. The kernel
    must equal read_pages + cached_attention for every slot that holds a token."""
    page_size, group = 8, 2
    q, k_pool, v_pool, table, lengths = _case(page_size, group, jnp.float32, seed=1)
    lengths = jnp.maximum(lengths, 1)  # a decode step always attends to its own token
    positions = (lengths - 1)[:, None]
    rng = np.random.default_rng(2)
    new_kv = rng.standard_normal((2, q.shape[0], 1, NUM_KV_HEADS, HEAD_DIM))
    layer = jnp.int32(LAYER)
    k_pool = write_pages(k_pool, layer, jnp.asarray(new_kv[0], jnp.float32), table, positions)
    v_pool = write_pages(v_pool, layer, jnp.asarray(new_kv[1], jnp.float32), table, positions)

    keys = read_pages(k_pool, layer, table)
    values = read_pages(v_pool, layer, table)
    want = cached_attention(q[:, None], keys, values, positions)[:, 0]
    got = _kernel(platform, 2, 1)(q, k_pool, v_pool, layer, table, lengths)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)


def test_entries_past_the_length_are_never_read():
    """Overwriting every cache entry at or past each slot's length leaves the output unchanged."""
    page_size = 8
    q, k_pool, v_pool, table, lengths = _case(page_size, 2, jnp.float32, seed=3)
    layer = jnp.int32(LAYER)
    kernel = _kernel("gpu", 2, 2)
    before = kernel(q, k_pool, v_pool, layer, table, lengths)
    # Positions 0..length-1 of each slot keep their values; every other pool entry becomes 1e4.
    positions = jnp.arange(TABLE_PAGES * page_size)[None, :]
    keep = positions < lengths[:, None]
    rows = jnp.clip(table, 0, NUM_POOL_PAGES - 1)[:, :, None] * page_size
    rows = (rows + jnp.arange(page_size)).reshape(len(lengths), -1)
    # min over duplicates: a row that any slot keeps (a shared page) stays unchanged.
    flat = jnp.full((NUM_LAYERS, NUM_POOL_PAGES * page_size), True).at[LAYER, rows].min(~keep)
    stale = flat.reshape(NUM_LAYERS, NUM_POOL_PAGES, page_size, 1, 1)
    after = kernel(
        q, jnp.where(stale, 1e4, k_pool), jnp.where(stale, 1e4, v_pool), layer, table, lengths
    )
    np.testing.assert_array_equal(np.asarray(after), np.asarray(before))


def test_unsupported_input_raises():
    q, k_pool, v_pool, table, lengths = _case(4, 2, jnp.float32)
    layer = jnp.int32(0)
    with pytest.raises(ValueError, match="interpret=True"):
        paged_decode_attention(q, k_pool, v_pool, layer, table, lengths)
    with pytest.raises(ValueError, match="powers of two"):
        _, k3, v3, t3, l3 = _case(3, 2, jnp.float32)
        paged_decode_attention(q, k3, v3, layer, t3, l3, interpret=True, platform="gpu")
    with pytest.raises(ValueError, match="GQA"):
        paged_decode_attention(q[:, :3], k_pool, v_pool, layer, table, lengths, interpret=True)


@pytest.mark.slow
def test_the_engine_decoding_with_the_kernel_equals_the_reference_engine():
    """The model's decode steps through `attend_paged_decode` (the kernel in Pallas's
    interpreter, run per device's slots, pages and KV heads on an fsdp=4, tensor=2 mesh) give
    the reference engine's tokens and logprobs."""
    from flax import nnx

    from swejax.models import build_model, place_state, preset
    from swejax.models.attention import pallas_interpreter
    from swejax.sampling import Engine, EngineConfig, SamplingParams
    from swejax.sharding import make_mesh

    reference = build_model(preset("tiny", vocab_size=160, num_layers=2), seed=0)
    # 4 slots: one per fsdp shard, each with its own quarter of the pool's pages.
    config = EngineConfig(num_slots=4, capacity=64, page_size=16, chunk=8, steps_per_call=5)
    mesh = make_mesh(data=1, fsdp=4, tensor=2)
    results = {}
    with pallas_interpreter():
        kernel = build_model(preset("tiny", vocab_size=160, num_layers=2, attention="flash"))
        nnx.update(kernel, nnx.state(reference))
        for name, model, msh in (
            ("reference", reference, None),
            ("kernel", kernel, None),
            ("kernel on a mesh", place_state(kernel, mesh), mesh),
        ):
            engine = Engine(model, config, SamplingParams(temperature=1.0), mesh=msh, seed=3)
            if msh is not None:
                assert engine.state.cache.k.sharding.spec == P(None, "fsdp", None, "tensor", None)
            for slot, prompt in enumerate([[1, 2, 3], list(range(4, 24)), [30], [7, 8]]):
                engine.prefill(slot, prompt)
                engine.start_turn(slot, 8)
            first = engine.decode()
            engine.extend(0, [40, 41])  # a second turn for slot 0; slot 2 idles
            engine.free(3)  # slot 3 starts over
            engine.prefill(3, list(range(50, 70)))
            engine.start_turn(0, 4)
            engine.start_turn(1, 4)
            engine.start_turn(3, 6)
            results[name] = (first, engine.decode())
    for name in ("kernel", "kernel on a mesh"):
        for a, b in zip(results["reference"], results[name], strict=True):
            for slot in range(4):
                assert a.tokens[slot].tolist() == b.tokens[slot].tolist(), name
                np.testing.assert_allclose(a.logprobs[slot], b.logprobs[slot], atol=1e-4)
