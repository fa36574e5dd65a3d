"""Plain XLA attention: the references every kernel in this package is checked against.

`attention` is self-attention over a sequence (training, prefill of packed rows);
`cached_attention` is attention of new tokens over a slot's KV cache (sampling), and
`paged_attention` the same over the cache's pages one at a time, as the engine runs it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

# Finite, so a row whose keys are all masked gives a uniform average instead of NaN, and small
# enough that adding a logit to it cannot overflow.
_MASKED = -1e30


def attention(
    q: Float[Array, "B T Nq H"],
    k: Float[Array, "B S Nkv H"],
    v: Float[Array, "B S Nkv H"],
    *,
    causal: bool = True,
    segment_ids: Int[Array, "B T"] | None = None,
) -> Float[Array, "B T Nq H"]:
    """Softmax attention with grouped-query heads, causal mask and packed-segment mask.

    Query head n reads key/value head n // (Nq // Nkv); K and V are never repeated in memory.
    With `segment_ids`, a token attends only to tokens of its own segment (T == S). Logits and
    softmax are computed in float32 whatever the input dtype.
    """
    batch, q_len = q.shape[:2]
    kv_len = k.shape[1]
    allowed = jnp.ones((batch, q_len, kv_len), dtype=bool)
    if causal:
        # Queries are the last q_len positions of the kv_len keys.
        q_index = jnp.arange(q_len)[:, None] + (kv_len - q_len)
        allowed &= (q_index >= jnp.arange(kv_len)[None, :])[None]
    if segment_ids is not None:
        allowed &= segment_ids[:, :, None] == segment_ids[:, None, :]
    return _masked_attention(q, k, v, allowed)


def cached_attention(
    q: Float[Array, "B T Nq H"],
    k_cache: Float[Array, "B C Nkv H"],
    v_cache: Float[Array, "B C Nkv H"],
    q_positions: Int[Array, "B T"],
) -> Float[Array, "B T Nq H"]:
    """New tokens at absolute `q_positions` attend to cache entries 0..position (inclusive).

    Cache entries past a query's position (stale data of a longer earlier sequence, or not yet
    written) are masked, so a slot's cache never needs clearing.
    """
    capacity = k_cache.shape[1]
    allowed = jnp.arange(capacity)[None, None, :] <= q_positions[:, :, None]
    return _masked_attention(q, k_cache, v_cache, allowed)


def paged_attention(
    q: Float[Array, "B T Nq H"],
    k_pages: Float[Array, "B n page Nkv H"],
    v_pages: Float[Array, "B n page Nkv H"],
    q_positions: Int[Array, "B T"],
) -> Float[Array, "B T Nq H"]:
    """`cached_attention` over a slot's pages in order, one page at a time with an online
    softmax (a running max, sum and weighted sum, as flash attention keeps them).

    Why page by page: a page wholly past a query's position changes nothing, bit for bit (its
    weights are exactly 0, the running max and the rescaling exactly as they were), so the
    result does not depend on how many pages a call attends over. The engine picks that number
    from every slot it serves at once, so with one softmax over all of them a sequence's
    numbers would depend on what else was being sampled, and a rerun would not repeat them.
    """
    batch, q_len, num_q_heads, head_dim = q.shape
    page_size, num_kv_heads = k_pages.shape[2], k_pages.shape[3]
    group = num_q_heads // num_kv_heads
    q = (q * head_dim**-0.5).reshape(batch, q_len, num_kv_heads, group, head_dim)
    q = q.transpose(0, 2, 3, 1, 4).reshape(batch, num_kv_heads, group * q_len, head_dim)
    rows = group * q_len
    row_positions = jnp.tile(q_positions, (1, group))[:, None, :, None]  # [B, 1, G*T, 1]

    def page_step(carry, page):
        running_max, total, acc = carry
        index, k, v = page  # k, v [B, page, K, H]
        logits = jnp.einsum(
            "BKQH,BSKH->BKQS", q, k.astype(q.dtype), preferred_element_type=jnp.float32
        )
        key_positions = index * page_size + jnp.arange(page_size)
        logits = jnp.where(key_positions <= row_positions, logits, _MASKED)
        new_max = jnp.maximum(running_max, logits.max(axis=-1, keepdims=True))
        scale = jnp.exp(running_max - new_max)
        weights = jnp.exp(logits - new_max)
        total = total * scale + weights.sum(axis=-1, keepdims=True)
        update = jnp.einsum(
            "BKQS,BSKH->BKQH",
            weights.astype(v.dtype),
            v,
            preferred_element_type=jnp.float32,
        )
        return (new_max, total, acc * scale + update), None

    init = (
        jnp.full((batch, num_kv_heads, rows, 1), -jnp.inf, jnp.float32),
        jnp.zeros((batch, num_kv_heads, rows, 1), jnp.float32),
        jnp.zeros((batch, num_kv_heads, rows, head_dim), jnp.float32),
    )
    pages = (
        jnp.arange(k_pages.shape[1]),
        jnp.moveaxis(k_pages, 1, 0),
        jnp.moveaxis(v_pages, 1, 0).astype(q.dtype),
    )
    (_, total, acc), _ = jax.lax.scan(page_step, init, pages)
    out = (acc / total).reshape(batch, num_kv_heads, group, q_len, head_dim)
    out = out.transpose(0, 3, 1, 2, 4)
    return out.reshape(batch, q_len, num_q_heads, head_dim).astype(q.dtype)


def _masked_attention(
    q: Float[Array, "B T Nq H"],
    k: Float[Array, "B S Nkv H"],
    v: Float[Array, "B S Nkv H"],
    allowed: Bool[Array, "B T S"],
) -> Float[Array, "B T Nq H"]:
    batch, q_len, num_q_heads, head_dim = q.shape
    kv_len, num_kv_heads = k.shape[1], k.shape[2]
    group = num_q_heads // num_kv_heads
    # Batch axes (B, K) lead and the group folds into the query rows, so both products are plain
    # batched matmuls; XLA's CPU backend runs that layout about twice as fast as "BTKGH,BSKH".
    # Scaling q costs T*N*H multiplies; scaling the logits would cost T*S*N.
    q = (q * head_dim**-0.5).reshape(batch, q_len, num_kv_heads, group, head_dim)
    q = q.transpose(0, 2, 3, 1, 4).reshape(batch, num_kv_heads, group * q_len, head_dim)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, S, H]
    logits = jnp.einsum("BKQH,BKSH->BKQS", q, k, preferred_element_type=jnp.float32)
    logits = logits.reshape(batch, num_kv_heads, group, q_len, kv_len)
    # An additive bias fuses into the softmax; a select over the 5-D logits costs twice as much.
    bias = jnp.where(allowed, 0.0, _MASKED).astype(jnp.float32)
    weights = jax.nn.softmax(logits + bias[:, None, None], axis=-1).astype(v.dtype)
    weights = weights.reshape(batch, num_kv_heads, group * q_len, kv_len)
    out = jnp.einsum("BKQS,BKSH->BKQH", weights, v, preferred_element_type=jnp.float32)
    out = out.reshape(batch, num_kv_heads, group, q_len, head_dim).transpose(0, 3, 1, 2, 4)
    return out.reshape(batch, q_len, num_q_heads, head_dim).astype(q.dtype)
