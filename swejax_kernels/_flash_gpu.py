"""The flash kernels laid out for GPU (Pallas Triton lowering): [B, T, N, H] arrays, one
program per query tile (dK/dV: per key tile) looping over the other axis inside the kernel."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from swejax_kernels._flash_tiles import (
    Mask,
    Plan,
    dkdv_step,
    dq_step,
    scores,
    softmax_finish,
    softmax_init,
    softmax_step,
)

# ----------------------------------------------------------------------------- GPU (Triton)
# Layout [B, T, N, H]. Squeezed (None) block dims drop batch and head; a whole-sequence block
# is just a pointer for Triton, read one tile at a time with pl.ds.


def _gpu_params(plan: Plan) -> pltriton.CompilerParams:
    return pltriton.CompilerParams(num_warps=plan.num_warps, num_stages=plan.num_stages)


def _split_loop(body, mask: Mask, *, interior, edge, init):
    """`body(i, carry, mask)` over the interior tiles with the cheap mask and over the edge
    tiles with the full one. The edge either starts where the interior ends (start None: key
    loops, the diagonal comes last) or ends where it starts (query loops, diagonal first)."""
    inner = functools.partial(body, mask=mask.interior())
    outer = functools.partial(body, mask=mask)
    if mask.interior() == mask:  # nothing positional to mask: one loop over both ranges
        if edge[0] is None:
            return lax.fori_loop(interior[0], edge[1], outer, init)
        return lax.fori_loop(edge[0], interior[1], outer, init)
    if edge[0] is None:
        carry = lax.fori_loop(interior[0], interior[1], inner, init)
        return lax.fori_loop(interior[1], edge[1], outer, carry)
    carry = lax.fori_loop(edge[0], edge[1], outer, init)
    return lax.fori_loop(interior[0], interior[1], inner, carry)


def _query_tile_specs(plan: Plan, head: int):
    """Grid (batch, query head, query tile) of the forward and dQ kernels: the query tile, the
    whole key/value sequence of its group's KV head, and the segment ids of both (if any)."""
    bq, group = plan.block_q, plan.group
    q_spec = pl.BlockSpec((None, bq, None, head), lambda b, n, i: (b, i, n, 0))
    kv_spec = pl.BlockSpec(
        (None, plan.kv_padded, None, head), lambda b, n, i: (b, 0, lax.div(n, group), 0)
    )
    segment_specs = []
    if plan.mask.segments:
        segment_specs = [
            pl.BlockSpec((None, bq), lambda b, n, i: (b, i)),
            pl.BlockSpec((None, plan.kv_padded), lambda b, n, i: (b, 0)),
        ]
    return q_spec, kv_spec, segment_specs


def _segment_args(plan: Plan, q_seg, kv_seg) -> list:
    return [q_seg, kv_seg] if plan.mask.segments else []


def gpu_forward(plan: Plan, q, k, v, q_seg, kv_seg):
    batch, _, num_q_heads, head = q.shape
    bq = plan.block_q
    q_spec, kv_spec, segment_specs = _query_tile_specs(plan, head)
    in_specs = [q_spec, kv_spec, kv_spec, *segment_specs]
    args = [q, k, v, *_segment_args(plan, q_seg, kv_seg)]
    return pl.pallas_call(
        functools.partial(_gpu_forward_kernel, plan=plan),
        grid=(batch, num_q_heads, plan.num_q_tiles),
        in_specs=in_specs,
        out_specs=[q_spec, pl.BlockSpec((None, None, bq), lambda b, n, i: (b, n, i))],
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((batch, num_q_heads, plan.q_padded), jnp.float32),
        ],
        compiler_params=_gpu_params(plan),
        interpret=plan.interpret,
        name="flash_forward",
    )(*args)


def _gpu_forward_kernel(*refs, plan: Plan):
    q_ref, k_ref, v_ref, *seg_refs, o_ref, lse_ref = refs
    bq, bk = plan.block_q, plan.block_kv
    q_tile = pl.program_id(2)
    q = q_ref[...]
    q_seg = seg_refs[0][...][:, None] if seg_refs else None

    def kv_tile(j, carry, mask):
        start = pl.multiple_of(j * bk, bk)
        keys = pl.ds(start, bk)
        s = scores(q, k_ref[keys, :], plan.scale)
        kv_seg = seg_refs[1][keys][None, :] if seg_refs else None
        visible = mask.visible(q_tile * bq, start, s.shape, q_seg, kv_seg)
        return softmax_step(carry, s, visible, v_ref[keys, :])

    carry = _split_loop(
        kv_tile,
        plan.mask,
        interior=(0, plan.mask.kv_interior_end(q_tile, bq, bk, plan.num_kv_tiles)),
        edge=(None, plan.mask.kv_end(q_tile, bq, bk, plan.num_kv_tiles)),
        init=softmax_init(bq, q.shape[1]),
    )
    out, lse = softmax_finish(*carry)
    o_ref[...] = out.astype(o_ref.dtype)
    lse_ref[...] = lse.reshape(bq)


def gpu_backward(plan: Plan, q, k, v, do, lse, delta, q_seg, kv_seg):
    return (
        _gpu_dq(plan, q, k, v, do, lse, delta, q_seg, kv_seg),
        *_gpu_dkdv(plan, q, k, v, do, lse, delta, q_seg, kv_seg),
    )


def _gpu_dkdv(plan: Plan, q, k, v, do, lse, delta, q_seg, kv_seg):
    """One program per key tile and kv head, looping over the group's query heads and tiles."""
    batch, _, num_kv_heads, head = k.shape
    bk, group = plan.block_kv, plan.group
    # A block of `group` heads at block index n starts at query head n * group.
    q_spec = pl.BlockSpec((None, plan.q_padded, group, head), lambda b, n, j: (b, 0, n, 0))
    row_spec = pl.BlockSpec((None, group, plan.q_padded), lambda b, n, j: (b, n, 0))
    kv_spec = pl.BlockSpec((None, bk, None, head), lambda b, n, j: (b, j, n, 0))
    in_specs = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec]
    args = [q, k, v, do, lse, delta]
    if plan.mask.segments:
        in_specs += [
            pl.BlockSpec((None, plan.q_padded), lambda b, n, j: (b, 0)),
            pl.BlockSpec((None, bk), lambda b, n, j: (b, j)),
        ]
        args += [q_seg, kv_seg]
    return pl.pallas_call(
        functools.partial(_gpu_dkdv_kernel, plan=plan),
        grid=(batch, num_kv_heads, plan.num_kv_tiles),
        in_specs=in_specs,
        out_specs=[kv_spec, kv_spec],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=_gpu_params(plan),
        interpret=plan.interpret,
        name="flash_dkdv",
    )(*args)


def _gpu_dkdv_kernel(*refs, plan: Plan):
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *seg_refs, dk_ref, dv_ref = refs
    bq, bk = plan.block_q, plan.block_kv
    kv_tile = pl.program_id(2)
    k, v = k_ref[...], v_ref[...]
    kv_seg = seg_refs[1][...][None, :] if seg_refs else None
    mask = plan.mask.key_gradients()
    begin = mask.q_begin(kv_tile, bq, bk, plan.num_q_tiles)
    interior = mask.q_interior_begin(kv_tile, bq, bk, plan.num_q_tiles)

    def q_head(g, carry):
        def q_tile(i, carry, mask):
            start = pl.multiple_of(i * bq, bq)
            rows = pl.ds(start, bq)
            q_seg = seg_refs[0][rows][:, None] if seg_refs else None
            visible = mask.visible(start, kv_tile * bk, (bq, bk), q_seg, kv_seg)
            return dkdv_step(
                carry,
                q_ref[rows, g, :],
                k,
                v,
                do_ref[rows, g, :],
                lse_ref[g, rows][:, None],
                delta_ref[g, rows][:, None],
                visible,
                plan.scale,
            )

        # The masked tiles at the diagonal first, then the interior ones below it.
        return _split_loop(
            q_tile,
            mask,
            interior=(interior, plan.num_q_tiles),
            edge=(begin, interior),
            init=carry,
        )

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(0, plan.group, q_head, (zeros, zeros))
    dk_ref[...] = (dk * plan.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _gpu_dq(plan: Plan, q, k, v, do, lse, delta, q_seg, kv_seg):
    batch, _, num_q_heads, head = q.shape
    q_spec, kv_spec, segment_specs = _query_tile_specs(plan, head)
    row_spec = pl.BlockSpec((None, None, plan.block_q), lambda b, n, i: (b, n, i))
    in_specs = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec, *segment_specs]
    args = [q, k, v, do, lse, delta, *_segment_args(plan, q_seg, kv_seg)]
    return pl.pallas_call(
        functools.partial(_gpu_dq_kernel, plan=plan),
        grid=(batch, num_q_heads, plan.num_q_tiles),
        in_specs=in_specs,
        out_specs=q_spec,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=_gpu_params(plan),
        interpret=plan.interpret,
        name="flash_dq",
    )(*args)


def _gpu_dq_kernel(*refs, plan: Plan):
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *seg_refs, dq_ref = refs
    bq, bk = plan.block_q, plan.block_kv
    q_tile = pl.program_id(2)
    q, do = q_ref[...], do_ref[...]
    lse, delta = lse_ref[...][:, None], delta_ref[...][:, None]
    q_seg = seg_refs[0][...][:, None] if seg_refs else None

    def kv_tile(j, dq, mask):
        start = pl.multiple_of(j * bk, bk)
        keys = pl.ds(start, bk)
        kv_seg = seg_refs[1][keys][None, :] if seg_refs else None
        visible = mask.visible(q_tile * bq, start, (bq, bk), q_seg, kv_seg)
        return dq_step(dq, q, k_ref[keys, :], v_ref[keys, :], do, lse, delta, visible, plan.scale)

    dq = _split_loop(
        kv_tile,
        plan.mask,
        interior=(0, plan.mask.kv_interior_end(q_tile, bq, bk, plan.num_kv_tiles)),
        edge=(None, plan.mask.kv_end(q_tile, bq, bk, plan.num_kv_tiles)),
        init=jnp.zeros(q.shape, jnp.float32),
    )
    dq_ref[...] = (dq * plan.scale).astype(dq_ref.dtype)
