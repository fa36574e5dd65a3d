"""The engine's device state: the paged KV pools and every slot's bookkeeping, where each part
lives on a mesh, and a fresh state allocated there (or described, for compiling ahead of time).

    cache.k, cache.v [L, P, page, K, H]   pages split over the batch shards, KV heads over tensor
    page_table [S, pages_per_slot]         ids local to the slot's shard (`PageAllocator`)
    limit, lengths, pending, budget [S]    int32, replicated
    active [S]                             bool, replicated
    streams [S, 2]                         uint32, replicated: each slot's random stream
    key                                    the engine's base key (its seed)

A token's random draw is keyed by the base key, its slot's stream (set with the sequence: the
episode it belongs to, `stream_id`) and its position in the sequence, never by the slot, the
call or the order of calls: the same episode samples the same tokens wherever it runs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from swejax.config import EngineConfig
from swejax.models.kv_cache import LayerCache, num_shards, pool_page_axes, pool_spec


class EngineState(NamedTuple):
    """Device state of every slot (a pytree, donated through each jitted call)."""

    cache: LayerCache  # page pools k, v: [L, P, page, K, H], pages split over batch shards
    # [S, pages_per_slot] page ids local to the slot's shard; unassigned entries hold
    # P / shards (the number of pages of a shard)
    page_table: jax.Array
    limit: jax.Array  # [S] tokens the slot's pages can hold (at most the capacity)
    lengths: jax.Array  # [S] tokens whose K/V are in the cache
    pending: jax.Array  # [S] the next token to feed
    active: jax.Array  # [S] decoding in this turn
    budget: jax.Array  # [S] tokens it may still sample this turn
    streams: jax.Array  # [S, 2] uint32: the random stream of each slot's sequence
    key: jax.Array  # the base key; never advanced (draws fold in stream and position)


def cache_bytes_per_token(model_cfg, dtype: str | None = None) -> int:
    """Bytes of K and V one token takes over all layers."""
    itemsize = jnp.dtype(dtype or model_cfg.dtype).itemsize
    return 2 * model_cfg.num_layers * model_cfg.num_kv_heads * model_cfg.head_dim * itemsize


def replicated(mesh: Mesh | None) -> jax.sharding.Sharding:
    """Where the bookkeeping lives: on every device of the mesh (or the one device)."""
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


def state_shardings(model_cfg, config: EngineConfig, mesh: Mesh | None) -> EngineState:
    """Where each part of an engine's state lives: the pools' pages split like the slots
    (`kv_cache.pool_page_axes`) and KV heads over tensor, the bookkeeping replicated."""
    rep = replicated(mesh)
    pool, page_axes = rep, pool_page_axes(mesh, config.num_slots)
    if mesh is not None:
        pool = NamedSharding(mesh, pool_spec(mesh, page_axes, model_cfg.num_kv_heads))
    return EngineState(LayerCache(pool, pool, page_axes), rep, rep, rep, rep, rep, rep, rep, rep)


def abstract_state(model_cfg, config: EngineConfig, mesh: Mesh) -> EngineState:
    """An engine's state as ShapeDtypeStructs at its shardings: for compiling the decode
    program ahead of time (`swejax.memory_plan`), nothing allocated."""
    shardings = state_shardings(model_cfg, config, mesh)
    slots, dtype = config.num_slots, jnp.dtype(model_cfg.dtype)

    def struct(shape, dt, sharding):
        return jax.ShapeDtypeStruct(shape, dt, sharding=sharding)

    pool = struct(pool_shape(model_cfg, config), dtype, shardings.cache.k)
    rows = (
        struct((slots,), dt, sharding)
        for dt, sharding in zip(
            (jnp.int32, jnp.int32, jnp.int32, bool, jnp.int32),
            shardings[2:7],
            strict=True,
        )
    )
    table = struct((slots, config.pages_per_slot), jnp.int32, shardings.page_table)
    streams = struct((slots, 2), jnp.uint32, shardings.streams)
    key = jax.eval_shape(lambda: jax.random.key(0))
    return EngineState(
        LayerCache(pool, pool, shardings.cache.page_axes),
        table,
        *rows,
        streams,
        struct(key.shape, key.dtype, shardings.key),
    )


def new_state(model_cfg, config: EngineConfig, mesh: Mesh | None, seed: int) -> EngineState:
    """A fresh state, allocated at its shardings: zeroed pools, every slot empty and holding
    no page, the random stream seeded with `seed`."""
    shape, dtype = pool_shape(model_cfg, config), jnp.dtype(model_cfg.dtype)
    slots, page_axes = config.num_slots, pool_page_axes(mesh, config.num_slots)
    unassigned = config.pool_pages // page_shards(config, mesh)

    def init() -> EngineState:
        zeros = jnp.zeros((slots,), jnp.int32)
        return EngineState(
            cache=LayerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), page_axes),
            page_table=jnp.full((slots, config.pages_per_slot), unassigned, jnp.int32),
            limit=zeros,
            lengths=zeros,
            pending=zeros,
            active=jnp.zeros((slots,), bool),
            budget=zeros,
            streams=jnp.zeros((slots, 2), jnp.uint32),
            key=jax.random.key(seed),
        )

    # Built on the devices at their shardings, so a pool larger than one device never exists
    # whole anywhere.
    return jax.jit(init, out_shardings=state_shardings(model_cfg, config, mesh))()
