"""A paged KV cache: one pool of fixed-size pages shared by all sequences, and page tables.

A sequence's token at position p lives in page `page_table[b, p // page_size]`, row
`p % page_size`. Sequences take pages as they grow, so a 131k-token trajectory does not reserve
131k tokens in every slot. A dense cache is the special case of one page per sequence.

The pools hold every layer, [L, P, page, K, H], and are read and written by layer index: the
layer scan carries them, so XLA updates them in place instead of copying a layer's pool (or the
whole cache) on every decode step.

On a mesh the pages are split over the batch axes, like the slots, and over `context` too
(`pool_page_axes`; a decode step has no sequence to split): with S slots and P pages in
`shards` batch shards, slot s uses only pages of its own shard s // (S / shards), which are
pages [g * P / shards, (g + 1) * P / shards) of the pool, and its page table holds their ids
local to that shard (global id - g * P / shards). `write_cache` and `read_cache` run the scatter
and the gather on each device's own rows, pages and KV heads (`per_page_shard`); the
partitioner alone cannot know a row touches only its shard's pages and would gather the whole
pool. A pool over one shard is the plain case: local ids are global ids.

    pool[L, P_batch, page, K_tp, H]    page_table[B_batch, n]    new K/V [B_batch, T, K_tp, H]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import AbstractMesh, Mesh
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float, Int

from swejax.sharding import CONTEXT_AXIS, logical_to_spec


@struct.dataclass
class LayerCache:
    """Key and value page pools of every layer, [L, P, page_size, K, H].

    `page_axes`: the mesh axes the page axis is split over (static; () when it is not split).
    Page tables that index these pools hold ids local to a row's shard.
    """

    k: Array
    v: Array
    page_axes: tuple[str, ...] = struct.field(pytree_node=False, default=())

    def __iter__(self) -> Iterator[Array]:
        return iter((self.k, self.v))


def pool_page_axes(mesh: Mesh | AbstractMesh | None, num_slots: int) -> tuple[str, ...]:
    """The mesh axes that split the slots, and with them the page pool (each shard owns its
    slots' pages): the batch axes (logical "batch") that divide `num_slots`, then `context` if
    it divides what is left. A decode step has one token per slot, nothing to split over
    context, so the context devices take slots of their own rather than each holding a copy of
    the same pages: at long context the pool is most of a device."""
    if mesh is None:
        return ()
    axes = logical_to_spec(("batch",), (num_slots,), mesh)[0]
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    context = dict(mesh.shape).get(CONTEXT_AXIS, 1)
    if context > 1 and (num_slots // num_shards(mesh, axes)) % context == 0:
        axes += (CONTEXT_AXIS,)
    return axes


def num_shards(mesh: Mesh | AbstractMesh | None, axes: tuple[str, ...]) -> int:
    return 1 if mesh is None else math.prod(mesh.shape[a] for a in axes)


def pool_spec(mesh: Mesh | AbstractMesh, axes: tuple[str, ...], kv_heads: int) -> P:
    """PartitionSpec of a pool [L, P, page, K, H]: pages over `axes`, KV heads over tensor
    (when they divide)."""
    heads = logical_to_spec(("act_kv_heads",), (kv_heads,), mesh)[0]
    return P(None, axes or None, None, heads, None)


def per_page_shard(
    fn: Callable,
    cache: LayerCache,
    batch_ndims: tuple[int | None, ...],
    out_ndims: tuple[int | None, ...],
    *,
    check_vma: bool = True,
) -> Callable:
    """`fn` run on each device's shard of rows, pages and KV heads (as it is without a mesh).

    `fn`'s arguments and results are pools (ndim None: split like the pool) or batch-major
    arrays of the given ndim whose axis 0 is split over the page axes and, for ndim 4
    ([B, T, K, H] or [B, T, N, H]), axis 2 over the KV heads' axis (axis 3 for ndim 5, pages
    [B, n, page, K, H]; axis 4 for ndim 6, every layer's pages [B, L, n, page, K, H]);
    scalars (ndim 0) are replicated. Inside, page ids are the shard-local ids the page tables
    already hold.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return fn
    kv_heads = cache.k.shape[3]
    pool = pool_spec(mesh, cache.page_axes, kv_heads)
    rows, heads = pool[1], pool[3]

    def spec(ndim: int | None) -> P:
        if ndim is None:
            return pool
        if ndim == 0:
            return P()
        if ndim == 5:  # pages [B, n, page, K, H]
            return P(rows, None, None, heads, None)
        if ndim == 6:  # every layer's pages [B, L, n, page, K, H]
            return P(rows, None, None, None, heads, None)
        return P(rows, None, heads, None) if ndim == 4 else P(rows, *(None,) * (ndim - 1))

    return jax.shard_map(
        fn,
        mesh=mesh,
        in_specs=tuple(spec(n) for n in batch_ndims),
        out_specs=tuple(spec(n) for n in out_ndims),
        check_vma=check_vma,
    )


def write_cache(
    cache: LayerCache,
    layer: Int[Array, ""],
    k: Float[Array, "B T K H"],
    v: Float[Array, "B T K H"],
    page_table: Int[Array, "B n"],
    positions: Int[Array, "B T"],
) -> LayerCache:
    """`write_pages` of k and v, on each shard's own pages."""

    def write(k_pool, v_pool, layer, k, v, page_table, positions):
        return (
            write_pages(k_pool, layer, k, page_table, positions),
            write_pages(v_pool, layer, v, page_table, positions),
        )

    ndims = (None, None, 0, 4, 4, 2, 2)
    k_pool, v_pool = per_page_shard(write, cache, ndims, (None, None))(
        cache.k, cache.v, layer, k, v, page_table, positions
    )
    return cache.replace(k=k_pool, v=v_pool)


def read_cache(
    cache: LayerCache, layer: Int[Array, ""], page_table: Int[Array, "B n"]
) -> tuple[Float[Array, "B n page K H"], Float[Array, "B n page K H"]]:
    """Each sequence's pages of k and v (`read_pages`, unflattened), each shard gathering its
    own rows from its own pages."""

    def read(k_pool, v_pool, layer, page_table):
        return gather_pages(k_pool, layer, page_table), gather_pages(v_pool, layer, page_table)

    return per_page_shard(read, cache, (None, None, 0, 2), (5, 5))(
        cache.k, cache.v, layer, page_table
    )


def write_pages(
    pool: Float[Array, "L P page K H"],
    layer: Int[Array, ""],
    new: Float[Array, "B T K H"],
    page_table: Int[Array, "B n"],
    positions: Int[Array, "B T"],
) -> Float[Array, "L P page K H"]:
    """Store `new` at `positions` of `layer`; positions past the page table are dropped.
    Page ids index `pool` (shard-local ids for a shard's pool)."""
    num_pages, page_size = pool.shape[1:3]
    page_index = positions // page_size
    inside = page_index < page_table.shape[1]
    page = jnp.take_along_axis(page_table, jnp.where(inside, page_index, 0), axis=1)
    page = jnp.where(inside, page, num_pages)  # out of range: the scatter drops it
    layer_index = jnp.broadcast_to(layer, page.shape)
    return pool.at[layer_index, page, positions % page_size].set(
        new.astype(pool.dtype), mode="drop"
    )


def read_pages(
    pool: Float[Array, "L P page K H"], layer: Int[Array, ""], page_table: Int[Array, "B n"]
) -> Float[Array, "B C K H"]:
    """Each sequence's pages of `layer` in order, C = n * page_size (one gather, no copy of the
    layer's pool). Unassigned entries hold stale data; attention masks everything past a
    query's position, so they are never used."""
    pages = gather_pages(pool, layer, page_table)
    batch, n, page_size = pages.shape[:3]
    return pages.reshape(batch, n * page_size, *pool.shape[3:])


def gather_pages(
    pool: Float[Array, "L P page K H"], layer: Int[Array, ""], page_table: Int[Array, "B n"]
) -> Float[Array, "B n page K H"]:
    """Each sequence's pages of `layer` in order, as pages."""
    layer_index = jnp.broadcast_to(layer, page_table.shape)
    return pool.at[layer_index, page_table].get(mode="clip")


def copy_out_pages(
    cache: LayerCache, page_table: Int[Array, "B n"]
) -> tuple[Float[Array, "B L n page K H"], Float[Array, "B L n page K H"]]:
    """Every layer's k and v of each row's pages, for moving a sequence out of the pool (a
    preempted episode's keys and values, kept on the host). Entries past a row's pages
    (`unassigned`) read clipped, stale pages that nobody uses."""

    def gather(k_pool, v_pool, page_table):
        def rows(pool):
            return jnp.moveaxis(pool.at[:, page_table].get(mode="clip"), 0, 1)

        return rows(k_pool), rows(v_pool)

    return per_page_shard(gather, cache, (None, None, 2), (6, 6))(cache.k, cache.v, page_table)


def copy_in_pages(
    cache: LayerCache,
    page_table: Int[Array, "B n"],
    k: Float[Array, "B L n page K H"],
    v: Float[Array, "B L n page K H"],
) -> LayerCache:
    """The inverse of `copy_out_pages`: each row's pages of every layer written from k and v,
    bit for bit (entries `unassigned`, one past a shard's pages, are dropped)."""

    def scatter(k_pool, v_pool, page_table, k, v):
        def write(pool, new):
            return pool.at[:, page_table].set(jnp.moveaxis(new, 1, 0), mode="drop")

        return write(k_pool, k), write(v_pool, v)

    k_pool, v_pool = per_page_shard(scatter, cache, (None, None, 2, 6, 6), (None, None))(
        cache.k, cache.v, page_table, k, v
    )
    return cache.replace(k=k_pool, v=v_pool)
