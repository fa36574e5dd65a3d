"""A paged KV cache: one pool of fixed-size pages shared by all sequences, and page tables.

A sequence's token at position p lives in page `page_table[b, p // page_size]`, row
`p % page_size`. Sequences take pages as they grow, so a 131k-token trajectory does not reserve
131k tokens in every slot. A dense cache is the special case of one page per sequence.

The pools hold every layer, [L, P, page, K, H], and are read and written by layer index: the
layer scan carries them, so XLA updates them in place instead of copying a layer's pool (or the
whole cache) on every decode step.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float, Int


class LayerCache(NamedTuple):
    """Key and value page pools of every layer, [L, P, page_size, K, H]."""

    k: Array
    v: Array


def write_pages(
    pool: Float[Array, "L P page K H"],
    layer: Int[Array, ""],
    new: Float[Array, "B T K H"],
    page_table: Int[Array, "B n"],
    positions: Int[Array, "B T"],
) -> Float[Array, "L P page K H"]:
    """Store `new` at `positions` of `layer`; positions past the page table are dropped."""
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
    layer_index = jnp.broadcast_to(layer, page_table.shape)
    pages = pool.at[layer_index, page_table].get(mode="clip")  # [B, n, page, K, H]
    batch, n, page_size = pages.shape[:3]
    return pages.reshape(batch, n * page_size, *pool.shape[3:])
