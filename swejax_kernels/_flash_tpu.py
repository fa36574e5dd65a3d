"""The flash kernels laid out for TPU (Mosaic): head-major [B, N, T, H] arrays, the reduction
over the innermost "arbitrary" grid axis, running statistics in VMEM scratch."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jaxtyping import Array, Float

from swejax_kernels._flash_tiles import (
    LANES,
    MASKED,
    SUBLANES,
    Mask,
    Plan,
    dkdv_step,
    dq_step,
    scores,
    softmax_finish,
    softmax_step,
)

# ----------------------------------------------------------------------------- TPU (Mosaic)
# Layout [B, N, T, H]; the reduction axis is the last grid axis ("arbitrary"), its running
# state in VMEM scratch. Index maps clamp skipped causal tiles to the last needed block, so the
# pipeline sees an unchanged block index and issues no copy for them.


def _tpu_params(num_parallel: int, num_arbitrary: int) -> pltpu.CompilerParams:
    semantics = ("parallel",) * num_parallel + ("arbitrary",) * num_arbitrary
    return pltpu.CompilerParams(dimension_semantics=semantics)


def _head_major(x: Float[Array, "B T N H"]) -> Float[Array, "B N T H"]:
    return x.transpose(0, 2, 1, 3)


def _lane_replicated(x: Float[Array, "B N T"]) -> Float[Array, "B N T 128"]:
    return jnp.broadcast_to(x[..., None], (*x.shape, LANES))


def _column(x: Float[Array, "Tq 128"]) -> Float[Array, "Tq 1"]:
    # A lane reduction of a replicated value is exact and is a shape Mosaic always lowers.
    return jnp.max(x, axis=1, keepdims=True)


def _tpu_segment_widths(plan: Plan) -> int:
    """Lane width of the replicated query ids: 128, or the key tile where that is narrower."""
    return LANES if plan.block_kv % LANES == 0 else plan.block_kv


def _tpu_segment_inputs(plan: Plan, q_seg, kv_seg):
    """Query ids lane-replicated [B, T, W]; key ids sublane-replicated [B, 8, S]."""
    width = _tpu_segment_widths(plan)
    q_ids = jnp.broadcast_to(q_seg[..., None], (*q_seg.shape, width))
    kv_ids = jnp.broadcast_to(kv_seg[:, None, :], (kv_seg.shape[0], SUBLANES, kv_seg.shape[1]))
    return q_ids, kv_ids


def _tpu_segments(plan: Plan, seg_refs):
    """The tile's ids as [bq, bk] and [1, bk], so comparing them broadcasts to the tile."""
    if not seg_refs:
        return None, None
    q_ids = seg_refs[0][...]
    repeats = plan.block_kv // q_ids.shape[1]
    if repeats > 1:
        q_ids = jnp.tile(q_ids, (1, repeats))
    return q_ids, seg_refs[1][:1, :]


def _tpu_split_step(step, mask: Mask, *, interior, edge) -> None:
    """`step(mask)` on interior tiles with the cheap mask, on edge tiles with the full one."""
    if mask.interior() == mask:
        pl.when(interior | edge)(lambda: step(mask))
        return
    pl.when(interior)(lambda: step(mask.interior()))
    pl.when(edge)(lambda: step(mask))


def _tpu_kv_step(step, plan: Plan, q_tile, kv_tile) -> None:
    """A key-tile grid step: skipped past the diagonal, unmasked below it."""
    bq, bk, nk = plan.block_q, plan.block_kv, plan.num_kv_tiles
    interior = kv_tile < plan.mask.kv_interior_end(q_tile, bq, bk, nk)
    edge = ~interior & (kv_tile < plan.mask.kv_end(q_tile, bq, bk, nk))
    _tpu_split_step(step, plan.mask, interior=interior, edge=edge)


def _query_grid_specs(plan: Plan, head: int):
    """For a grid (batch, query head, query tile, key tile): the query tile's BlockSpec, its
    group's key/value tile's, and the key-tile index map they use, which repeats the last tile
    a query tile needs past the diagonal (so no DMA is issued for skipped steps)."""
    bq, bk, group, mask, nk = plan.block_q, plan.block_kv, plan.group, plan.mask, plan.num_kv_tiles

    def kv_block(i, j):
        return jnp.maximum(jnp.minimum(j, mask.kv_end(i, bq, bk, nk) - 1), 0)

    q_spec = pl.BlockSpec((None, None, bq, head), lambda b, n, i, j: (b, n, i, 0))
    kv_spec = pl.BlockSpec(
        (None, None, bk, head), lambda b, n, i, j: (b, lax.div(n, group), kv_block(i, j), 0)
    )
    return q_spec, kv_spec, kv_block


def tpu_forward(plan: Plan, q, k, v, q_seg, kv_seg):
    q, k, v = _head_major(q), _head_major(k), _head_major(v)
    batch, num_q_heads, _, head = q.shape
    bq, bk, nk = plan.block_q, plan.block_kv, plan.num_kv_tiles
    q_spec, kv_spec, kv_block = _query_grid_specs(plan, head)
    in_specs, args = [q_spec, kv_spec, kv_spec], [q, k, v]
    if plan.mask.segments:
        q_ids, kv_ids = _tpu_segment_inputs(plan, q_seg, kv_seg)
        in_specs += [
            pl.BlockSpec((None, bq, q_ids.shape[2]), lambda b, n, i, j: (b, i, 0)),
            pl.BlockSpec((None, SUBLANES, bk), lambda b, n, i, j: (b, 0, kv_block(i, j))),
        ]
        args += [q_ids, kv_ids]
    out, lse = pl.pallas_call(
        functools.partial(_tpu_forward_kernel, plan=plan),
        grid=(batch, num_q_heads, plan.num_q_tiles, nk),
        in_specs=in_specs,
        out_specs=[q_spec, pl.BlockSpec((None, None, bq, LANES), lambda b, n, i, j: (b, n, i, 0))],
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((batch, num_q_heads, plan.q_padded, LANES), jnp.float32),
        ],
        scratch_shapes=[
            pltpu.VMEM((bq, LANES), jnp.float32),  # running max m
            pltpu.VMEM((bq, LANES), jnp.float32),  # running normaliser
            pltpu.VMEM((bq, head), jnp.float32),  # unnormalised output
        ],
        compiler_params=_tpu_params(3, 1),
        interpret=plan.interpret,
        name="flash_forward",
    )(*args)
    return _head_major(out), lse[..., 0]


def _tpu_forward_kernel(*refs, plan: Plan):
    q_ref, k_ref, v_ref, *seg_refs, o_ref, lse_ref, m_ref, norm_ref, acc_ref = refs
    bq, bk = plan.block_q, plan.block_kv
    q_tile, kv_tile = pl.program_id(2), pl.program_id(3)

    @pl.when(kv_tile == 0)
    def _init():
        m_ref[...] = jnp.full(m_ref.shape, MASKED, jnp.float32)
        norm_ref[...] = jnp.zeros(norm_ref.shape, jnp.float32)
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    def step(mask: Mask):
        s = scores(q_ref[...], k_ref[...], plan.scale)
        q_seg, kv_seg = _tpu_segments(plan, seg_refs)
        visible = mask.visible(q_tile * bq, kv_tile * bk, s.shape, q_seg, kv_seg)
        carry = (_column(m_ref[...]), _column(norm_ref[...]), acc_ref[...])
        m, norm, acc = softmax_step(carry, s, visible, v_ref[...])
        m_ref[...] = jnp.broadcast_to(m, m_ref.shape)
        norm_ref[...] = jnp.broadcast_to(norm, norm_ref.shape)
        acc_ref[...] = acc

    _tpu_kv_step(step, plan, q_tile, kv_tile)

    @pl.when(kv_tile == plan.num_kv_tiles - 1)
    def _finish():
        out, lse = softmax_finish(_column(m_ref[...]), _column(norm_ref[...]), acc_ref[...])
        o_ref[...] = out.astype(o_ref.dtype)
        lse_ref[...] = jnp.broadcast_to(lse, lse_ref.shape)


def tpu_backward(plan: Plan, q, k, v, do, lse, delta, q_seg, kv_seg):
    q, k, v, do = _head_major(q), _head_major(k), _head_major(v), _head_major(do)
    lse, delta = _lane_replicated(lse), _lane_replicated(delta)
    seg = _tpu_segment_inputs(plan, q_seg, kv_seg) if plan.mask.segments else ()
    dq = _tpu_dq(plan, q, k, v, do, lse, delta, seg)
    dk, dv = _tpu_dkdv(plan, q, k, v, do, lse, delta, seg)
    return _head_major(dq), _head_major(dk), _head_major(dv)


def _tpu_dq(plan: Plan, q, k, v, do, lse, delta, seg):
    batch, num_q_heads, _, head = q.shape
    bq, bk, nk = plan.block_q, plan.block_kv, plan.num_kv_tiles
    q_spec, kv_spec, kv_block = _query_grid_specs(plan, head)
    row_spec = pl.BlockSpec((None, None, bq, LANES), lambda b, n, i, j: (b, n, i, 0))
    in_specs = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec]
    if seg:
        in_specs += [
            pl.BlockSpec((None, bq, seg[0].shape[2]), lambda b, n, i, j: (b, i, 0)),
            pl.BlockSpec((None, SUBLANES, bk), lambda b, n, i, j: (b, 0, kv_block(i, j))),
        ]
    return pl.pallas_call(
        functools.partial(_tpu_dq_kernel, plan=plan),
        grid=(batch, num_q_heads, plan.num_q_tiles, nk),
        in_specs=in_specs,
        out_specs=q_spec,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        scratch_shapes=[pltpu.VMEM((bq, head), jnp.float32)],
        compiler_params=_tpu_params(3, 1),
        interpret=plan.interpret,
        name="flash_dq",
    )(q, k, v, do, lse, delta, *seg)


def _tpu_dq_kernel(*refs, plan: Plan):
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *seg_refs, dq_ref, acc_ref = refs
    bq, bk = plan.block_q, plan.block_kv
    q_tile, kv_tile = pl.program_id(2), pl.program_id(3)

    @pl.when(kv_tile == 0)
    def _init():
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    def step(mask: Mask):
        q_seg, kv_seg = _tpu_segments(plan, seg_refs)
        visible = mask.visible(q_tile * bq, kv_tile * bk, (bq, bk), q_seg, kv_seg)
        acc_ref[...] = dq_step(
            acc_ref[...],
            q_ref[...],
            k_ref[...],
            v_ref[...],
            do_ref[...],
            _column(lse_ref[...]),
            _column(delta_ref[...]),
            visible,
            plan.scale,
        )

    _tpu_kv_step(step, plan, q_tile, kv_tile)

    @pl.when(kv_tile == plan.num_kv_tiles - 1)
    def _finish():
        dq_ref[...] = (acc_ref[...] * plan.scale).astype(dq_ref.dtype)


def _tpu_dkdv(plan: Plan, q, k, v, do, lse, delta, seg):
    """Grid (B, Nkv, key tile, group head, query tile): the last two axes accumulate."""
    batch, num_kv_heads, _, head = k.shape
    bq, bk, group, mask = plan.block_q, plan.block_kv, plan.group, plan.mask
    nq = plan.num_q_tiles

    def q_block(i, j):
        return jnp.minimum(jnp.maximum(i, mask.q_begin(j, bq, bk, nq)), nq - 1)

    q_spec = pl.BlockSpec(
        (None, None, bq, head), lambda b, n, j, g, i: (b, n * group + g, q_block(i, j), 0)
    )
    row_spec = pl.BlockSpec(
        (None, None, bq, LANES), lambda b, n, j, g, i: (b, n * group + g, q_block(i, j), 0)
    )
    kv_spec = pl.BlockSpec((None, None, bk, head), lambda b, n, j, g, i: (b, n, j, 0))
    in_specs = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec]
    if seg:
        in_specs += [
            pl.BlockSpec((None, bq, seg[0].shape[2]), lambda b, n, j, g, i: (b, q_block(i, j), 0)),
            pl.BlockSpec((None, SUBLANES, bk), lambda b, n, j, g, i: (b, 0, j)),
        ]
    return pl.pallas_call(
        functools.partial(_tpu_dkdv_kernel, plan=plan),
        grid=(batch, num_kv_heads, plan.num_kv_tiles, group, nq),
        in_specs=in_specs,
        out_specs=[kv_spec, kv_spec],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        scratch_shapes=[pltpu.VMEM((bk, head), jnp.float32), pltpu.VMEM((bk, head), jnp.float32)],
        compiler_params=_tpu_params(3, 2),
        interpret=plan.interpret,
        name="flash_dkdv",
    )(q, k, v, do, lse, delta, *seg)


def _tpu_dkdv_kernel(*refs, plan: Plan):
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *seg_refs, dk_ref, dv_ref, dk_acc, dv_acc = (
        refs
    )
    bq, bk = plan.block_q, plan.block_kv
    kv_tile, head, q_tile = pl.program_id(2), pl.program_id(3), pl.program_id(4)

    @pl.when((head == 0) & (q_tile == 0))
    def _init():
        dk_acc[...] = jnp.zeros(dk_acc.shape, jnp.float32)
        dv_acc[...] = jnp.zeros(dv_acc.shape, jnp.float32)

    def step(mask: Mask):
        q_seg, kv_seg = _tpu_segments(plan, seg_refs)
        visible = mask.visible(q_tile * bq, kv_tile * bk, (bq, bk), q_seg, kv_seg)
        dk, dv = dkdv_step(
            (dk_acc[...], dv_acc[...]),
            q_ref[...],
            k_ref[...],
            v_ref[...],
            do_ref[...],
            _column(lse_ref[...]),
            _column(delta_ref[...]),
            visible,
            plan.scale,
        )
        dk_acc[...] = dk
        dv_acc[...] = dv

    mask = plan.mask.key_gradients()
    begin = mask.q_begin(kv_tile, bq, bk, plan.num_q_tiles)
    interior = mask.q_interior_begin(kv_tile, bq, bk, plan.num_q_tiles)
    _tpu_split_step(
        step, mask, interior=q_tile >= interior, edge=(q_tile >= begin) & (q_tile < interior)
    )

    @pl.when((head == plan.group - 1) & (q_tile == plan.num_q_tiles - 1))
    def _finish():
        dk_ref[...] = (dk_acc[...] * plan.scale).astype(dk_ref.dtype)
        dv_ref[...] = dv_acc[...].astype(dv_ref.dtype)
