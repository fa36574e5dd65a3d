"""A paged KV cache: one pool of fixed-size pages shared by all sequences, and page tables.

A sequence's token at position p lives in page `page_table[b, p // page_size]`, row
`p % page_size`. Sequences take pages as they grow, so a 131k-token trajectory does not reserve
131k tokens in every slot. A dense cache is the special case of one page per sequence.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float, Int


class LayerCache(NamedTuple):
    """Key and value page pools of one layer, [P, page_size, K, H] (stacked: [L, P, ...])."""

    k: Array
    v: Array


def write_pages(
    pool: Float[Array, "P page K H"],
    new: Float[Array, "B T K H"],
    page_table: Int[Array, "B n"],
    positions: Int[Array, "B T"],
) -> Float[Array, "P page K H"]:
    """Store `new` at `positions`; positions past the page table (padding) are dropped."""
    num_pages, page_size = pool.shape[:2]
    page_index = positions // page_size
    inside = page_index < page_table.shape[1]
    page = jnp.take_along_axis(page_table, jnp.where(inside, page_index, 0), axis=1)
    page = jnp.where(inside, page, num_pages)  # out of range: the scatter drops it
    return pool.at[page, positions % page_size].set(new.astype(pool.dtype), mode="drop")


def read_pages(
    pool: Float[Array, "P page K H"], page_table: Int[Array, "B n"]
) -> Float[Array, "B C K H"]:
    """Each sequence's pages in order, C = n * page_size. Unassigned entries hold stale data;
    attention masks everything past a query's position, so they are never used."""
    pages = jnp.take(pool, page_table, axis=0, mode="clip")  # [B, n, page, K, H]
    batch, n, page_size = pages.shape[:3]
    return pages.reshape(batch, n * page_size, *pool.shape[2:])
