"""Plain XLA attention: the reference every kernel in this package is checked against."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

# Finite, so a row whose keys are all masked gives a uniform average instead of NaN.
_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


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
    batch, q_len, num_q_heads, head_dim = q.shape
    kv_len, num_kv_heads = k.shape[1], k.shape[2]
    group = num_q_heads // num_kv_heads
    q = q.reshape(batch, q_len, num_kv_heads, group, head_dim)
    logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, k, preferred_element_type=jnp.float32)
    logits = logits * (head_dim**-0.5)
    mask = jnp.ones((batch, q_len, kv_len), dtype=bool)
    if causal:
        # Queries are the last q_len positions of the kv_len keys.
        q_index = jnp.arange(q_len)[:, None] + (kv_len - q_len)
        mask &= (q_index >= jnp.arange(kv_len)[None, :])[None]
    if segment_ids is not None:
        mask &= segment_ids[:, :, None] == segment_ids[:, None, :]
    logits = jnp.where(mask[:, None, None], logits, _MASKED)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("BKGTS,BSKH->BTKGH", weights, v, preferred_element_type=jnp.float32)
    return out.reshape(batch, q_len, num_q_heads, head_dim).astype(q.dtype)
