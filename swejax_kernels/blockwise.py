"""Attention over one block of keys, returning what a later merge needs: the block contract.

Ring attention (`swejax_kernels.ring`) sees the keys a block at a time, so it needs from each
block both the normalised output and the row log-sum-exp, and for the backward pass it hands
back the final (merged) output and log-sum-exp. Two functions make that contract; this module
holds them in plain `jnp` (any backend), and `swejax_kernels.flash` holds the Pallas pair with
the same signatures (plus `block_sizes` and `interpret`):

    block_forward(q, k, v, *, causal, q_segment_ids, kv_segment_ids) -> (out, lse)
    block_backward(q, k, v, out, lse, dout, *, causal, q_segment_ids, kv_segment_ids)
        -> (dq, dk, dv)

Shapes: q [B, T, Nq, H], k and v [B, S, Nkv, H]; query head n reads key/value head
n // (Nq // Nkv). `causal` means the queries are the last T positions of the S keys, as in
`swejax_kernels.reference.attention`. `lse` [B, Nq, T] is float32, the natural-log
log-sum-exp of the scaled (1 / sqrt(H)) logits over the keys a query may see. A query that sees
no key of the block gets out 0 and lse -inf, so merging it with other blocks is exact; the
reference instead averages every key for such a row, which self-attention never produces.

The backward pass is the flash-attention one: probabilities are recomputed from the final lse
(p = exp(s - lse)), so a block's gradient is its share of the gradient of the whole attention,
whatever other blocks the row also saw. Nothing of size T x S is kept between the passes.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

# Axis letters in the einsums: B batch, K key/value heads, G query heads per key/value head,
# T queries, S keys, H head dim.


def block_forward(
    q: Float[Array, "B T Nq H"],
    k: Float[Array, "B S Nkv H"],
    v: Float[Array, "B S Nkv H"],
    *,
    causal: bool,
    q_segment_ids: Int[Array, "B T"] | None = None,
    kv_segment_ids: Int[Array, "B S"] | None = None,
) -> tuple[Float[Array, "B T Nq H"], Float[Array, "B Nq T"]]:
    """Attention of `q` over one block of keys: output (q.dtype) and float32 row log-sum-exp."""
    logits, visible = _logits(q, k, causal, q_segment_ids, kv_segment_ids)
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    # A row with no visible key has max -inf; shifting by 0 instead keeps exp() at 0, not NaN.
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    weights = jnp.exp(logits - row_max)  # masked logits are -inf: weight 0
    total = jnp.sum(weights, axis=-1)  # [B K G T]
    lse = jnp.log(total) + row_max[..., 0]  # log(0) = -inf for rows that see nothing
    unnormalised = jnp.einsum("BKGTS,BSKH->BTKGH", weights, v.astype(jnp.float32))
    # Such a row's sum is 0 too: dividing by 1 instead leaves its output 0.
    out = unnormalised / jnp.where(total > 0, total, 1.0).transpose(0, 3, 1, 2)[..., None]
    return _merge_heads(out).astype(q.dtype), _flat_heads(lse)


def block_backward(
    q: Float[Array, "B T Nq H"],
    k: Float[Array, "B S Nkv H"],
    v: Float[Array, "B S Nkv H"],
    out: Float[Array, "B T Nq H"],
    lse: Float[Array, "B Nq T"],
    dout: Float[Array, "B T Nq H"],
    *,
    causal: bool,
    q_segment_ids: Int[Array, "B T"] | None = None,
    kv_segment_ids: Int[Array, "B S"] | None = None,
) -> tuple[Float[Array, "B T Nq H"], Float[Array, "B S Nkv H"], Float[Array, "B S Nkv H"]]:
    """This block's share of (dq, dk, dv), given the FINAL output and lse of every query row.

    dk and dv are summed over the query heads that share each key/value head. Rows whose final
    lse is -inf (no visible key anywhere) contribute nothing.
    """
    num_kv_heads, head_dim = k.shape[2], q.shape[3]
    scale = head_dim**-0.5
    logits, visible = _logits(q, k, causal, q_segment_ids, kv_segment_ids)
    lse = _group_heads_lse(lse, num_kv_heads)[..., None]  # [B K G T 1]
    probs = jnp.where(visible & jnp.isfinite(lse), jnp.exp(logits - lse), 0.0)
    dout32 = _split_heads(dout.astype(jnp.float32), num_kv_heads)  # [B T K G H]
    out32 = _split_heads(out.astype(jnp.float32), num_kv_heads)
    # delta = rowsum(dout * out) = sum over keys of p * dp: the softmax Jacobian's correction.
    delta = jnp.einsum("BTKGH,BTKGH->BKGT", dout32, out32)[..., None]
    dv = jnp.einsum("BKGTS,BTKGH->BSKH", probs, dout32)
    dprobs = jnp.einsum("BTKGH,BSKH->BKGTS", dout32, v.astype(jnp.float32))
    dlogits = probs * (dprobs - delta)
    dq = scale * jnp.einsum("BKGTS,BSKH->BTKGH", dlogits, k.astype(jnp.float32))
    dk = scale * jnp.einsum(
        "BKGTS,BTKGH->BSKH", dlogits, _split_heads(q.astype(jnp.float32), num_kv_heads)
    )
    return _merge_heads(dq).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


def _logits(
    q: Float[Array, "B T Nq H"],
    k: Float[Array, "B S Nkv H"],
    causal: bool,
    q_segment_ids: Int[Array, "B T"] | None,
    kv_segment_ids: Int[Array, "B S"] | None,
) -> tuple[Float[Array, "B K G T S"], Bool[Array, "B 1 1 T S"]]:
    """Scaled float32 logits, -inf where masked, and the mask of keys each query may see."""
    num_kv_heads, head_dim = k.shape[2], q.shape[3]
    q_len, kv_len = q.shape[1], k.shape[1]
    q32 = _split_heads(q.astype(jnp.float32), num_kv_heads) * head_dim**-0.5
    logits = jnp.einsum("BTKGH,BSKH->BKGTS", q32, k.astype(jnp.float32))
    visible = _visible(q.shape[0], q_len, kv_len, causal, q_segment_ids, kv_segment_ids)
    visible = visible[:, None, None]
    return jnp.where(visible, logits, -jnp.inf), visible


def _visible(
    batch: int,
    q_len: int,
    kv_len: int,
    causal: bool,
    q_segment_ids: Int[Array, "B T"] | None,
    kv_segment_ids: Int[Array, "B S"] | None,
) -> Bool[Array, "B T S"]:
    if (q_segment_ids is None) != (kv_segment_ids is None):
        raise ValueError("pass both q_segment_ids and kv_segment_ids, or neither")
    visible = jnp.ones((batch, q_len, kv_len), dtype=bool)
    if causal:
        # Queries are the last q_len positions of the kv_len keys.
        q_index = jnp.arange(q_len)[:, None] + (kv_len - q_len)
        visible &= (q_index >= jnp.arange(kv_len)[None, :])[None]
    if q_segment_ids is not None:
        visible &= q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
    return visible


def _split_heads(x: Float[Array, "B T Nq H"], num_kv_heads: int) -> Float[Array, "B T K G H"]:
    batch, length, num_heads, head_dim = x.shape
    return x.reshape(batch, length, num_kv_heads, num_heads // num_kv_heads, head_dim)


def _merge_heads(x: Float[Array, "B T K G H"]) -> Float[Array, "B T Nq H"]:
    batch, length, num_kv_heads, group, head_dim = x.shape
    return x.reshape(batch, length, num_kv_heads * group, head_dim)


def _flat_heads(lse: Float[Array, "B K G T"]) -> Float[Array, "B Nq T"]:
    batch, num_kv_heads, group, length = lse.shape
    return lse.reshape(batch, num_kv_heads * group, length)


def _group_heads_lse(lse: Float[Array, "B Nq T"], num_kv_heads: int) -> Float[Array, "B K G T"]:
    batch, num_heads, length = lse.shape
    return lse.reshape(batch, num_kv_heads, num_heads // num_kv_heads, length)
