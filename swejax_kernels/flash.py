"""Flash attention in Pallas: blockwise online softmax, forward and backward, for GPU and TPU.

`flash_attention` is the differentiable entry point (a custom VJP). `flash_forward` and
`flash_backward` are the block-level pieces it is built from; they are public because ring
attention runs them on one key/value shard at a time and merges the results through the
log-sum-exp. `reference` has the same signature and is what the kernels are tested against.

Two grid layouts (`_flash_gpu`, `_flash_tpu`) share one set of per-tile functions in
`_flash_tiles` (`scores`, `softmax_step`, `dkdv_step`, `dq_step`, `Mask.visible`):

- GPU (Pallas Triton lowering). Arrays keep the model's [B, T, N, H] layout. One program owns a
  query tile (or, for dK/dV, a key tile) and loops over the other axis inside the kernel,
  because Triton programs run concurrently and cannot carry state from one grid step to the
  next.
- TPU (Mosaic). Arrays are transposed to head-major [B, N, T, H] so a block's last two dims are
  a (sequence, head_dim) tile, as Mosaic's (8, 128) tiling wants. The reduction axis is the
  innermost "arbitrary" grid axis and the running statistics live in VMEM scratch. Per-row
  vectors (log-sum-exp, delta, query segment ids) travel lane-replicated, [.., T, 128].

Interpret mode runs either layout on CPU with the same kernel bodies (`backend="gpu"` or
`"tpu"`); compiled, the layout must match `platform.target_platform()`: the default backend,
or the stand-in `platform.lowering_for` sets so CPU tests can lower the kernels for GPU and TPU.

Causal attention skips tiles above the diagonal (GPU: loop bounds; TPU: `pl.when` around the
compute plus index maps that repeat the last needed block, so no DMA is issued for it), and
tiles wholly below it run without a position mask. Lengths that are not a multiple of the tile
are padded inside and masked. Grouped-query heads read their key/value head through the index
map, and dK/dV are summed over each group inside the kernel. Matmuls take the input dtype
(bf16 on the tensor cores / MXU) and accumulate in float32, as do the softmax statistics.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from swejax_kernels import reference as _reference
from swejax_kernels._flash_gpu import gpu_backward, gpu_forward
from swejax_kernels._flash_tiles import BlockSizes, make_plan, pad_axis, pad_inputs, pad_segments
from swejax_kernels._flash_tpu import tpu_backward, tpu_forward

# ----------------------------------------------------------------------------- public API


def reference(
    q: Float[Array, "B T Nq H"],
    k: Float[Array, "B S Nkv H"],
    v: Float[Array, "B S Nkv H"],
    *,
    causal: bool = True,
    segment_ids: Int[Array, "B T"] | None = None,
    interpret: bool = False,
    block_sizes: BlockSizes | None = None,
    backend: str | None = None,
) -> Float[Array, "B T Nq H"]:
    """Plain XLA attention with `flash_attention`'s signature; the tiling arguments are unused."""
    del interpret, block_sizes, backend
    return _reference.attention(q, k, v, causal=causal, segment_ids=segment_ids)


def flash_attention(
    q: Float[Array, "B T Nq H"],
    k: Float[Array, "B S Nkv H"],
    v: Float[Array, "B S Nkv H"],
    *,
    causal: bool = True,
    segment_ids: Int[Array, "B T"] | None = None,
    interpret: bool = False,
    block_sizes: BlockSizes | None = None,
    backend: str | None = None,
) -> Float[Array, "B T Nq H"]:
    """Softmax attention, scale 1/sqrt(H), same masks and GQA rule as `reference`.

    Query head n reads key/value head n // (Nq // Nkv). With `causal` the queries are the last
    T of the S keys; `segment_ids` (T == S) restricts each token to its own packed segment.
    `backend` picks the kernel layout ("gpu" or "tpu", default the default backend's);
    `interpret=True` runs it in Pallas' interpreter, which is the only way on CPU.
    """
    if segment_ids is not None and q.shape[1] != k.shape[1]:
        raise ValueError(f"segment_ids need T == S; got T={q.shape[1]}, S={k.shape[1]}")
    return _flash(q, k, v, segment_ids, causal, block_sizes, interpret, backend)


@functools.partial(jax.jit, static_argnames=("causal", "block_sizes", "interpret", "backend"))
def flash_forward(
    q: Float[Array, "B T Nq H"],
    k: Float[Array, "B S Nkv H"],
    v: Float[Array, "B S Nkv H"],
    *,
    causal: bool,
    q_segment_ids: Int[Array, "B T"] | None = None,
    kv_segment_ids: Int[Array, "B S"] | None = None,
    block_sizes: BlockSizes | None = None,
    interpret: bool = False,
    backend: str | None = None,
) -> tuple[Float[Array, "B T Nq H"], Float[Array, "B Nq T"]]:
    """Attention output (q.dtype) and the natural-log log-sum-exp of each row's scaled logits.

    Causal: query i sees key j iff j <= i + (S - T). Segments: iff their ids are equal. A row
    that sees no key gets out = 0 and lse = -inf, so merging it with other shards is exact.
    """
    plan = make_plan(
        q, k, v, causal, (q_segment_ids, kv_segment_ids), block_sizes, interpret, backend
    )
    q, k, v = pad_inputs(plan, q, k, v)
    q_seg, kv_seg = pad_segments(plan, q_segment_ids, kv_segment_ids)
    build = gpu_forward if plan.backend == "gpu" else tpu_forward
    out, lse = build(plan, q, k, v, q_seg, kv_seg)
    return out[:, : plan.q_len, :, : plan.head_dim], lse[:, :, : plan.q_len]


@functools.partial(jax.jit, static_argnames=("causal", "block_sizes", "interpret", "backend"))
def flash_backward(
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
    block_sizes: BlockSizes | None = None,
    interpret: bool = False,
    backend: str | None = None,
) -> tuple[Float[Array, "B T Nq H"], Float[Array, "B S Nkv H"], Float[Array, "B S Nkv H"]]:
    """(dq, dk, dv) of attention, given the FINAL output and log-sum-exp of every query row.

    Only `lse` and `out` tie the keys seen here to the rest of the row, so `out`/`lse` may come
    from merging several key shards (ring attention) and this call differentiates through the
    shard at hand: p = exp(s - lse), delta = rowsum(dout * out), ds = p * (dout v^T - delta).
    dk and dv are summed over the query heads of each group. Rows with lse = -inf add nothing.
    """
    plan = make_plan(
        q, k, v, causal, (q_segment_ids, kv_segment_ids), block_sizes, interpret, backend, bwd=True
    )
    # delta_i = sum_j p_ij dp_ij = rowsum(dout * out); cheap in XLA, read per tile by the kernels.
    delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
    delta = delta.transpose(0, 2, 1)  # [B, Nq, T]
    # exp(s - inf) = 0: a row that saw no key (or a padding row) contributes nothing, and
    # exp(MASKED - (-inf)) = inf is never formed.
    lse = jnp.where(jnp.isneginf(lse), jnp.inf, lse.astype(jnp.float32))
    lse = pad_axis(lse, 2, plan.q_padded, jnp.inf)
    delta = pad_axis(delta, 2, plan.q_padded, 0.0)
    q, k, v = pad_inputs(plan, q, k, v)
    (dout,) = pad_inputs(plan, dout)
    q_seg, kv_seg = pad_segments(plan, q_segment_ids, kv_segment_ids)
    build = gpu_backward if plan.backend == "gpu" else tpu_backward
    dq, dk, dv = build(plan, q, k, v, dout, lse, delta, q_seg, kv_seg)
    crop_q, crop_kv = (slice(None), slice(0, plan.q_len)), (slice(None), slice(0, plan.kv_len))
    head = (slice(None), slice(0, plan.head_dim))
    return dq[crop_q + head], dk[crop_kv + head], dv[crop_kv + head]


# ----------------------------------------------------------------------------- custom VJP


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _flash(q, k, v, segment_ids, causal, block_sizes, interpret, backend):
    return _flash_fwd(q, k, v, segment_ids, causal, block_sizes, interpret, backend)[0]


def _flash_fwd(q, k, v, segment_ids, causal, block_sizes, interpret, backend):
    out, lse = flash_forward(
        q,
        k,
        v,
        causal=causal,
        q_segment_ids=segment_ids,
        kv_segment_ids=segment_ids,
        block_sizes=block_sizes,
        interpret=interpret,
        backend=backend,
    )
    return out, (q, k, v, segment_ids, out, lse)


def _flash_bwd(causal, block_sizes, interpret, backend, residuals, dout):
    q, k, v, segment_ids, out, lse = residuals
    dq, dk, dv = flash_backward(
        q,
        k,
        v,
        out,
        lse,
        dout,
        causal=causal,
        q_segment_ids=segment_ids,
        kv_segment_ids=segment_ids,
        block_sizes=block_sizes,
        interpret=interpret,
        backend=backend,
    )
    return dq, dk, dv, None  # segment ids are integers: no cotangent


_flash.defvjp(_flash_fwd, _flash_bwd)
