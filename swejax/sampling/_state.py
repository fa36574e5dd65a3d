"""The engine's device state (the paged KV pools and the base key), the slot table each call
takes, where each part lives on a mesh, and a fresh state allocated there (or described, for
compiling ahead of time).

    cache.k, cache.v [L, P, page, K, H]   pages split over the batch shards, KV heads over tensor
    key                                    the engine's base key (its seed), replicated

The slots' bookkeeping is the host's (`_engine._Slot`); every call takes what it needs of it
as a `SlotTable`, split over the batch shards like the slots, built on each process from its
own slots only (JAX multi-controller: a process holds the rows of the shards on its devices).

    pages [S, visible]                    page ids local to the slot's shard (`PageAllocator`)
    limit, lengths, pending, budget [S]   int32
    active [S]                            bool
    streams [S, 2]                        uint32: each slot's random stream

A token's random draw is keyed by the base key, its slot's stream (set with the sequence: the
episode it belongs to, `stream_id`) and its position in the sequence, never by the slot, the
call or the order of calls: the same episode samples the same tokens wherever it runs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from swejax.config import EngineConfig
from swejax.models.kv_cache import LayerCache, num_shards, pool_page_axes, pool_spec


class EngineState(NamedTuple):
    """Device state of an engine (a pytree, donated through each jitted call)."""

    cache: LayerCache  # page pools k, v: [L, P, page, K, H], pages split over batch shards
    key: jax.Array  # the base key; never advanced (draws fold in stream and position)


class SlotTable(NamedTuple):
    """What a decode call needs of every slot's bookkeeping (see the module docstring)."""

    pages: jax.Array  # [S, visible] page ids local to the slot's shard
    limit: jax.Array  # [S] tokens the slot's pages can hold (at most the capacity)
    lengths: jax.Array  # [S] tokens whose K/V are in the cache
    pending: jax.Array  # [S] the next token to feed
    active: jax.Array  # [S] decoding in this turn
    budget: jax.Array  # [S] tokens it may still sample this turn
    streams: jax.Array  # [S, 2] uint32: the random stream of each slot's sequence


TABLE_DTYPES = SlotTable(np.int32, np.int32, np.int32, np.int32, np.bool_, np.int32, np.uint32)


def cache_bytes_per_token(model_cfg, dtype: str | None = None) -> int:
    """Bytes of K and V one token takes over all layers."""
    itemsize = jnp.dtype(dtype or model_cfg.dtype).itemsize
    return 2 * model_cfg.num_layers * model_cfg.num_kv_heads * model_cfg.head_dim * itemsize


def replicated(mesh: Mesh | None) -> jax.sharding.Sharding:
    """Where the base key lives: on every device of the mesh (or the one device)."""
    if mesh is None:
        return SingleDeviceSharding(jax.devices()[0])
    return NamedSharding(mesh, PartitionSpec())


def pool_shape(model_cfg, config: EngineConfig) -> tuple[int, int, int, int, int]:
    """[L, P, page, K, H] of each of the k and v pools, over all batch shards."""
    c, m = config, model_cfg
    return (m.num_layers, c.pool_pages, c.page_size, m.num_kv_heads, m.head_dim)


def page_shards(config: EngineConfig, mesh: Mesh | None) -> int:
    """The batch shards the slots, and with them the pool's pages, are split over."""
    return num_shards(mesh, pool_page_axes(mesh, config.num_slots))


def row_sharding(mesh: Mesh | None, config: EngineConfig) -> jax.sharding.Sharding:
    """Where per-slot arrays ([S, ...]: the slot table, ingest rows, decode outputs) live: rows
    split over the batch shards like the slots and their pages."""
    if mesh is None:
        return replicated(None)
    return NamedSharding(mesh, PartitionSpec(pool_page_axes(mesh, config.num_slots) or None))


def state_shardings(model_cfg, config: EngineConfig, mesh: Mesh | None) -> EngineState:
    """Where each part of an engine's state lives: the pools' pages split like the slots
    (`kv_cache.pool_page_axes`) and KV heads over tensor, the key replicated."""
    rep = replicated(mesh)
    pool, page_axes = rep, pool_page_axes(mesh, config.num_slots)
    if mesh is not None:
        pool = NamedSharding(mesh, pool_spec(mesh, page_axes, model_cfg.num_kv_heads))
    return EngineState(LayerCache(pool, pool, page_axes), rep)


def abstract_state(model_cfg, config: EngineConfig, mesh: Mesh) -> EngineState:
    """An engine's state as ShapeDtypeStructs at its shardings: for compiling the decode
    program ahead of time (`swejax.memory_plan`), nothing allocated."""
    shardings = state_shardings(model_cfg, config, mesh)
    dtype = jnp.dtype(model_cfg.dtype)
    pool = jax.ShapeDtypeStruct(pool_shape(model_cfg, config), dtype, sharding=shardings.cache.k)
    key = jax.eval_shape(lambda: jax.random.key(0))
    return EngineState(
        LayerCache(pool, pool, shardings.cache.page_axes),
        jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=shardings.key),
    )


def abstract_table(config: EngineConfig, mesh: Mesh, visible_pages: int) -> SlotTable:
    """A slot table as ShapeDtypeStructs at its sharding (compiling ahead of time)."""
    rows, slots = row_sharding(mesh, config), config.num_slots
    shapes = SlotTable((slots, visible_pages), *((slots,),) * 5, (slots, 2))
    return SlotTable(
        *(
            jax.ShapeDtypeStruct(shape, dt, sharding=rows)
            for shape, dt in zip(shapes, TABLE_DTYPES, strict=True)
        )
    )


def new_state(model_cfg, config: EngineConfig, mesh: Mesh | None, seed: int) -> EngineState:
    """A fresh state, allocated at its shardings: zeroed pools, the base key from `seed`."""
    shape, dtype = pool_shape(model_cfg, config), jnp.dtype(model_cfg.dtype)
    page_axes = pool_page_axes(mesh, config.num_slots)

    def init() -> EngineState:
        pools = jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)
        return EngineState(LayerCache(*pools, page_axes), jax.random.key(seed))

    # Built on the devices at their shardings, so a pool larger than one device never exists
    # whole anywhere (and every process makes its own shards: no host value crosses hosts).
    return jax.jit(init, out_shardings=state_shardings(model_cfg, config, mesh))()


def new_key(seed: int, mesh: Mesh | None) -> jax.Array:
    """The base key for `seed`, replicated over the mesh (made on every process alike)."""
    return jax.jit(lambda: jax.random.key(seed), out_shardings=replicated(mesh))()
