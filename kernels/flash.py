"""Flash attention in Pallas: blockwise online softmax, forward and backward, for GPU and TPU.

`flash_attention` is the differentiable entry point (a custom VJP). `flash_forward` and
`flash_backward` are the block-level pieces it is built from; they are public because ring
attention runs them on one key/value shard at a time and merges the results through the
log-sum-exp. `reference` has the same signature and is what the kernels are tested against.

Two grid layouts share one set of per-tile functions (`_scores`, `_softmax_step`, `_dkdv_step`,
`_dq_step`, `_Mask.visible`):

- GPU (Pallas Triton lowering). Arrays keep the model's [B, T, N, H] layout. One program owns a
  query tile (or, for dK/dV, a key tile) and loops over the other axis inside the kernel,
  because Triton programs run concurrently and cannot carry state from one grid step to the
  next.
- TPU (Mosaic). Arrays are transposed to head-major [B, N, T, H] so a block's last two dims are
  a (sequence, head_dim) tile, as Mosaic's (8, 128) tiling wants. The reduction axis is the
  innermost "arbitrary" grid axis and the running statistics live in VMEM scratch. Per-row
  vectors (log-sum-exp, delta, query segment ids) travel lane-replicated, [.., T, 128].

Interpret mode runs either layout on CPU with the same kernel bodies (`backend="gpu"` or
`"tpu"`); compiled, the layout must match `jax.default_backend()`.

Causal attention skips tiles above the diagonal (GPU: loop bounds; TPU: `pl.when` around the
compute plus index maps that repeat the last needed block, so no DMA is issued for it), and
tiles wholly below it run without a position mask. Lengths that are not a multiple of the tile
are padded inside and masked. Grouped-query heads read their key/value head through the index
map, and dK/dV are summed over each group inside the kernel. Matmuls take the input dtype
(bf16 on the tensor cores / MXU) and accumulate in float32, as do the softmax statistics.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton
from jaxtyping import Array, Bool, Float, Int
from swejax_kernels import reference as _reference

# Logit given to masked entries. Finite, so a row that has seen only masked keys so far has a
# finite running max (m = _MASKED) and no inf - inf; the first visible key then rescales the
# row's junk sums by exp(_MASKED - m) = 0. A row that never sees a key ends with m == _MASKED
# and is turned into out = 0, lse = -inf.
_MASKED = -1e30
_LANES = 128  # TPU vector lanes: per-row vectors are stored replicated across them.
_SUBLANES = 8  # TPU sublanes: key segment ids are stored replicated across them.
_BACKENDS = ("gpu", "tpu")

# Contraction patterns of the tile matmuls, as lax.dot_general dimension numbers.
_NN = (((1,), (0,)), ((), ()))  # a @ b
_NT = (((1,), (1,)), ((), ()))  # a @ b.T
_TN = (((0,), (0,)), ((), ()))  # a.T @ b


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes of the three kernels, and the Triton launch parameters that go with them.

    The forward kernel works on block_q x block_kv logit tiles, the two backward kernels (dK/dV
    over key tiles, dQ over query tiles) on block_q_bwd x block_kv_bwd. A tile longer than its
    (padded) sequence is shrunk to fit, so one setting serves short and long inputs. GPU tiles
    must be powers of two, at least 16 (Triton's smallest matmul); TPU query tiles multiples of
    8 and key tiles multiples of 128 (Mosaic's tile). `num_warps` and `num_stages` are the
    Triton launch parameters; Mosaic has no equivalent and TPU runs do not read them.
    """

    block_q: int = 128
    block_kv: int = 64
    block_q_bwd: int = 64
    block_kv_bwd: int = 64
    num_warps: int = 8
    num_stages: int = 2

    @classmethod
    def for_backend(cls, backend: str | None = None) -> BlockSizes:
        """Starting points per device: H100-class GPUs via Triton, TPU v4/v5 via Mosaic.

        `None` means `jax.default_backend()`; on CPU that is the GPU layout, which is what
        interpret mode runs unless told otherwise.
        """
        backend = _default_layout() if backend is None else backend
        if backend == "tpu":
            # 512-wide tiles keep the MXU busy; the backward holds ~5 f32 (q, kv) tiles at once,
            # so its query tile is halved to stay inside the default scoped VMEM.
            return cls(block_q=512, block_kv=512, block_q_bwd=256, block_kv_bwd=512)
        if backend == "gpu":
            return cls()
        raise ValueError(f"no flash attention tiles for backend {backend!r}; one of {_BACKENDS}")


@dataclasses.dataclass(frozen=True)
class _Mask:
    """Which (query, key) pairs of a tile are visible; static apart from the tile offsets."""

    causal: bool
    offset: int  # kv_len - q_len: query row r sits at key position r + offset
    kv_len: int  # keys at or past it are padding
    kv_padded: bool
    segments: bool

    def visible(
        self,
        q_start: Int[Array, ""],
        kv_start: Int[Array, ""],
        shape: tuple[int, int],
        q_seg: Int[Array, "Tq W"] | None,
        kv_seg: Int[Array, "1 Tk"] | None,
    ) -> Bool[Array, "Tq Tk"] | None:
        """None when every pair is visible, so unmasked tiles pay for no select.

        Query ids come as a column (W = 1) or already widened to the tile (W = Tk).
        """
        rows = q_start + lax.broadcasted_iota(jnp.int32, shape, 0)
        cols = kv_start + lax.broadcasted_iota(jnp.int32, shape, 1)
        visible = None
        if self.causal:
            visible = cols <= rows + self.offset
        if self.kv_padded:
            visible = _and(visible, cols < self.kv_len)
        if self.segments:
            visible = _and(visible, q_seg == kv_seg)
        return visible

    def kv_end(self, q_tile, block_q: int, block_kv: int, num_kv_tiles: int):
        """One past the last key tile that query tile `q_tile` can see."""
        if not self.causal:
            return num_kv_tiles
        # The tile's last row sees keys 0 .. (q_tile + 1) * block_q - 1 + offset.
        seen = (q_tile + 1) * block_q + self.offset
        end = lax.div(jnp.maximum(seen + block_kv - 1, 0), block_kv)
        return jnp.minimum(end, num_kv_tiles)

    def q_begin(self, kv_tile, block_q: int, block_kv: int, num_q_tiles: int):
        """The first query tile that can see key tile `kv_tile`."""
        if not self.causal:
            return 0
        first_row = kv_tile * block_kv - self.offset  # the first row that sees the tile's first key
        begin = lax.div(jnp.maximum(first_row, 0), block_q)
        return jnp.minimum(begin, num_q_tiles)

    # Tiles wholly below the diagonal and inside the keys need no position mask: finding them
    # saves an iota, compare and select per logit on most of a long causal sequence.

    def interior(self) -> _Mask:
        """The mask of such tiles: segments only."""
        return dataclasses.replace(self, causal=False, kv_padded=False)

    def kv_interior_end(self, q_tile, block_q: int, block_kv: int, num_kv_tiles: int):
        """Key tiles before this one are seen whole by every row of query tile `q_tile`."""
        end = self.kv_len // block_kv if self.kv_padded else num_kv_tiles
        if self.causal:
            seen = q_tile * block_q + self.offset + 1  # keys the tile's first row sees
            end = jnp.minimum(end, lax.div(jnp.maximum(seen, 0), block_kv))
        return end

    def q_interior_begin(self, kv_tile, block_q: int, block_kv: int, num_q_tiles: int):
        """Query tiles from this one on see all of key tile `kv_tile` (a `key_gradients` mask)."""
        if not self.causal:
            return 0
        first_row = (kv_tile + 1) * block_kv - 1 - self.offset  # the first to see the last key
        begin = lax.div(jnp.maximum(first_row, 0) + block_q - 1, block_q)
        return jnp.minimum(begin, num_q_tiles)

    def key_gradients(self) -> _Mask:
        """The mask for dK/dV: a padding key's gradients are cropped, so it needs no mask."""
        return dataclasses.replace(self, kv_padded=False)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything static about one kernel launch: layout, tiles, padding, masking."""

    backend: str
    interpret: bool
    block_q: int
    block_kv: int
    q_len: int
    kv_len: int
    q_padded: int
    kv_padded: int
    head_dim: int
    head_padded: int
    group: int
    mask: _Mask
    num_warps: int
    num_stages: int

    @property
    def scale(self) -> float:
        return self.head_dim**-0.5

    @property
    def num_q_tiles(self) -> int:
        return self.q_padded // self.block_q

    @property
    def num_kv_tiles(self) -> int:
        return self.kv_padded // self.block_kv


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
    plan = _plan(q, k, v, causal, (q_segment_ids, kv_segment_ids), block_sizes, interpret, backend)
    q, k, v = _pad_inputs(plan, q, k, v)
    q_seg, kv_seg = _pad_segments(plan, q_segment_ids, kv_segment_ids)
    build = _gpu_forward if plan.backend == "gpu" else _tpu_forward
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
    plan = _plan(
        q, k, v, causal, (q_segment_ids, kv_segment_ids), block_sizes, interpret, backend, bwd=True
    )
    # delta_i = sum_j p_ij dp_ij = rowsum(dout * out); cheap in XLA, read per tile by the kernels.
    delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
    delta = delta.transpose(0, 2, 1)  # [B, Nq, T]
    # exp(s - inf) = 0: a row that saw no key (or a padding row) contributes nothing, and
    # exp(_MASKED - (-inf)) = inf is never formed.
    lse = jnp.where(jnp.isneginf(lse), jnp.inf, lse.astype(jnp.float32))
    lse = _pad_axis(lse, 2, plan.q_padded, jnp.inf)
    delta = _pad_axis(delta, 2, plan.q_padded, 0.0)
    q, k, v = _pad_inputs(plan, q, k, v)
    (dout,) = _pad_inputs(plan, dout)
    q_seg, kv_seg = _pad_segments(plan, q_segment_ids, kv_segment_ids)
    build = _gpu_backward if plan.backend == "gpu" else _tpu_backward
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


# ----------------------------------------------------------------------------- tile math
# Shared by both layouts: values in, values out, no refs. Per-row statistics are [rows, 1]
# columns that broadcast against the [rows, keys] logit tile.


def _dot(a: Array, b: Array, dims) -> Float[Array, "M N"]:
    # float32 inputs ask for float32 products: left at the default, Triton would use TF32.
    precision = lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
    return lax.dot_general(a, b, dims, precision=precision, preferred_element_type=jnp.float32)


def _and(a: Array | None, b: Array) -> Array:
    return b if a is None else a & b


def _scores(
    q: Float[Array, "Tq H"], k: Float[Array, "Tk H"], scale: float
) -> Float[Array, "Tq Tk"]:
    # Scaling the float32 logits rather than q keeps bf16 inputs unrounded.
    return _dot(q, k, _NT) * scale


def _softmax_init(rows: int, head_dim: int):
    return (
        jnp.full((rows, 1), _MASKED, jnp.float32),
        jnp.zeros((rows, 1), jnp.float32),
        jnp.zeros((rows, head_dim), jnp.float32),
    )


def _softmax_step(
    carry: tuple[Float[Array, "Tq 1"], Float[Array, "Tq 1"], Float[Array, "Tq H"]],
    s: Float[Array, "Tq Tk"],
    visible: Bool[Array, "Tq Tk"] | None,
    v: Float[Array, "Tk H"],
):
    """Fold one key tile into the running max m, normaliser and unnormalised output."""
    m_prev, norm_prev, acc_prev = carry
    if visible is not None:
        s = jnp.where(visible, s, _MASKED)
    m = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
    p = jnp.exp(s - m)
    alpha = jnp.exp(m_prev - m)  # rescales what was summed under the old max
    norm = alpha * norm_prev + jnp.sum(p, axis=1, keepdims=True)
    acc = alpha * acc_prev + _dot(p.astype(v.dtype), v, _NN)
    return m, norm, acc


def _softmax_finish(
    m: Float[Array, "Tq 1"], norm: Float[Array, "Tq 1"], acc: Float[Array, "Tq H"]
) -> tuple[Float[Array, "Tq H"], Float[Array, "Tq 1"]]:
    empty = m <= 0.5 * _MASKED  # the row never saw a visible key
    norm = jnp.where(empty, 1.0, norm)
    out = jnp.where(empty, 0.0, acc / norm)
    lse = jnp.where(empty, -jnp.inf, m + jnp.log(norm))
    return out, lse


def _probs(
    s: Float[Array, "Tq Tk"], visible: Bool[Array, "Tq Tk"] | None, lse: Float[Array, "Tq 1"]
) -> Float[Array, "Tq Tk"]:
    if visible is not None:
        s = jnp.where(visible, s, _MASKED)
    return jnp.exp(s - lse)


def _dkdv_step(carry, q, k, v, do, lse, delta, visible, scale: float):
    """Add one query tile's share to the key tile's dK (unscaled) and dV."""
    dk, dv = carry
    p = _probs(_scores(q, k, scale), visible, lse)
    dv = dv + _dot(p.astype(do.dtype), do, _TN)
    ds = p * (_dot(do, v, _NT) - delta)
    dk = dk + _dot(ds.astype(q.dtype), q, _TN)
    return dk, dv


def _dq_step(dq, q, k, v, do, lse, delta, visible, scale: float):
    """Add one key tile's share to the query tile's dQ (unscaled)."""
    p = _probs(_scores(q, k, scale), visible, lse)
    ds = p * (_dot(do, v, _NT) - delta)
    return dq + _dot(ds.astype(k.dtype), k, _NN)


# ----------------------------------------------------------------------------- GPU (Triton)
# Layout [B, T, N, H]. Squeezed (None) block dims drop batch and head; a whole-sequence block
# is just a pointer for Triton, read one tile at a time with pl.ds.


def _gpu_params(plan: _Plan) -> pltriton.CompilerParams:
    return pltriton.CompilerParams(num_warps=plan.num_warps, num_stages=plan.num_stages)


def _split_loop(body, mask: _Mask, *, interior, edge, init):
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


def _gpu_forward(plan: _Plan, q, k, v, q_seg, kv_seg):
    batch, _, num_q_heads, head = q.shape
    bq, group = plan.block_q, plan.group
    q_spec = pl.BlockSpec((None, bq, None, head), lambda b, n, i: (b, i, n, 0))
    kv_spec = pl.BlockSpec(
        (None, plan.kv_padded, None, head), lambda b, n, i: (b, 0, lax.div(n, group), 0)
    )
    in_specs, args = [q_spec, kv_spec, kv_spec], [q, k, v]
    if plan.mask.segments:
        in_specs += [
            pl.BlockSpec((None, bq), lambda b, n, i: (b, i)),
            pl.BlockSpec((None, plan.kv_padded), lambda b, n, i: (b, 0)),
        ]
        args += [q_seg, kv_seg]
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


def _gpu_forward_kernel(*refs, plan: _Plan):
    q_ref, k_ref, v_ref, *seg_refs, o_ref, lse_ref = refs
    bq, bk = plan.block_q, plan.block_kv
    q_tile = pl.program_id(2)
    q = q_ref[...]
    q_seg = seg_refs[0][...][:, None] if seg_refs else None

    def kv_tile(j, carry, mask):
        start = pl.multiple_of(j * bk, bk)
        keys = pl.ds(start, bk)
        s = _scores(q, k_ref[keys, :], plan.scale)
        kv_seg = seg_refs[1][keys][None, :] if seg_refs else None
        visible = mask.visible(q_tile * bq, start, s.shape, q_seg, kv_seg)
        return _softmax_step(carry, s, visible, v_ref[keys, :])

    carry = _split_loop(
        kv_tile,
        plan.mask,
        interior=(0, plan.mask.kv_interior_end(q_tile, bq, bk, plan.num_kv_tiles)),
        edge=(None, plan.mask.kv_end(q_tile, bq, bk, plan.num_kv_tiles)),
        init=_softmax_init(bq, q.shape[1]),
    )
    out, lse = _softmax_finish(*carry)
    o_ref[...] = out.astype(o_ref.dtype)
    lse_ref[...] = lse.reshape(bq)


def _gpu_backward(plan: _Plan, q, k, v, do, lse, delta, q_seg, kv_seg):
    return (
        _gpu_dq(plan, q, k, v, do, lse, delta, q_seg, kv_seg),
        *_gpu_dkdv(plan, q, k, v, do, lse, delta, q_seg, kv_seg),
    )


def _gpu_dkdv(plan: _Plan, q, k, v, do, lse, delta, q_seg, kv_seg):
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


def _gpu_dkdv_kernel(*refs, plan: _Plan):
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
            return _dkdv_step(
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


def _gpu_dq(plan: _Plan, q, k, v, do, lse, delta, q_seg, kv_seg):
    batch, _, num_q_heads, head = q.shape
    bq, group = plan.block_q, plan.group
    q_spec = pl.BlockSpec((None, bq, None, head), lambda b, n, i: (b, i, n, 0))
    kv_spec = pl.BlockSpec(
        (None, plan.kv_padded, None, head), lambda b, n, i: (b, 0, lax.div(n, group), 0)
    )
    row_spec = pl.BlockSpec((None, None, bq), lambda b, n, i: (b, n, i))
    in_specs = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec]
    args = [q, k, v, do, lse, delta]
    if plan.mask.segments:
        in_specs += [
            pl.BlockSpec((None, bq), lambda b, n, i: (b, i)),
            pl.BlockSpec((None, plan.kv_padded), lambda b, n, i: (b, 0)),
        ]
        args += [q_seg, kv_seg]
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


def _gpu_dq_kernel(*refs, plan: _Plan):
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
        return _dq_step(dq, q, k_ref[keys, :], v_ref[keys, :], do, lse, delta, visible, plan.scale)

    dq = _split_loop(
        kv_tile,
        plan.mask,
        interior=(0, plan.mask.kv_interior_end(q_tile, bq, bk, plan.num_kv_tiles)),
        edge=(None, plan.mask.kv_end(q_tile, bq, bk, plan.num_kv_tiles)),
        init=jnp.zeros(q.shape, jnp.float32),
    )
    dq_ref[...] = (dq * plan.scale).astype(dq_ref.dtype)


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
    return jnp.broadcast_to(x[..., None], (*x.shape, _LANES))


def _column(x: Float[Array, "Tq 128"]) -> Float[Array, "Tq 1"]:
    # A lane reduction of a replicated value is exact and is a shape Mosaic always lowers.
    return jnp.max(x, axis=1, keepdims=True)


def _tpu_segment_widths(plan: _Plan) -> int:
    """Lane width of the replicated query ids: 128, or the key tile where that is narrower."""
    return _LANES if plan.block_kv % _LANES == 0 else plan.block_kv


def _tpu_segment_inputs(plan: _Plan, q_seg, kv_seg):
    """Query ids lane-replicated [B, T, W]; key ids sublane-replicated [B, 8, S]."""
    width = _tpu_segment_widths(plan)
    q_ids = jnp.broadcast_to(q_seg[..., None], (*q_seg.shape, width))
    kv_ids = jnp.broadcast_to(kv_seg[:, None, :], (kv_seg.shape[0], _SUBLANES, kv_seg.shape[1]))
    return q_ids, kv_ids


def _tpu_segments(plan: _Plan, seg_refs):
    """The tile's ids as [bq, bk] and [1, bk], so comparing them broadcasts to the tile."""
    if not seg_refs:
        return None, None
    q_ids = seg_refs[0][...]
    repeats = plan.block_kv // q_ids.shape[1]
    if repeats > 1:
        q_ids = jnp.tile(q_ids, (1, repeats))
    return q_ids, seg_refs[1][:1, :]


def _tpu_split_step(step, mask: _Mask, *, interior, edge) -> None:
    """`step(mask)` on interior tiles with the cheap mask, on edge tiles with the full one."""
    if mask.interior() == mask:
        pl.when(interior | edge)(lambda: step(mask))
        return
    pl.when(interior)(lambda: step(mask.interior()))
    pl.when(edge)(lambda: step(mask))


def _tpu_kv_step(step, plan: _Plan, q_tile, kv_tile) -> None:
    """A key-tile grid step: skipped past the diagonal, unmasked below it."""
    bq, bk, nk = plan.block_q, plan.block_kv, plan.num_kv_tiles
    interior = kv_tile < plan.mask.kv_interior_end(q_tile, bq, bk, nk)
    edge = ~interior & (kv_tile < plan.mask.kv_end(q_tile, bq, bk, nk))
    _tpu_split_step(step, plan.mask, interior=interior, edge=edge)


def _tpu_forward(plan: _Plan, q, k, v, q_seg, kv_seg):
    q, k, v = _head_major(q), _head_major(k), _head_major(v)
    batch, num_q_heads, _, head = q.shape
    bq, bk, group, mask = plan.block_q, plan.block_kv, plan.group, plan.mask
    nk = plan.num_kv_tiles

    def kv_block(i, j):
        return jnp.maximum(jnp.minimum(j, mask.kv_end(i, bq, bk, nk) - 1), 0)

    q_spec = pl.BlockSpec((None, None, bq, head), lambda b, n, i, j: (b, n, i, 0))
    kv_spec = pl.BlockSpec(
        (None, None, bk, head), lambda b, n, i, j: (b, lax.div(n, group), kv_block(i, j), 0)
    )
    in_specs, args = [q_spec, kv_spec, kv_spec], [q, k, v]
    if mask.segments:
        q_ids, kv_ids = _tpu_segment_inputs(plan, q_seg, kv_seg)
        in_specs += [
            pl.BlockSpec((None, bq, q_ids.shape[2]), lambda b, n, i, j: (b, i, 0)),
            pl.BlockSpec((None, _SUBLANES, bk), lambda b, n, i, j: (b, 0, kv_block(i, j))),
        ]
        args += [q_ids, kv_ids]
    out, lse = pl.pallas_call(
        functools.partial(_tpu_forward_kernel, plan=plan),
        grid=(batch, num_q_heads, plan.num_q_tiles, nk),
        in_specs=in_specs,
        out_specs=[q_spec, pl.BlockSpec((None, None, bq, _LANES), lambda b, n, i, j: (b, n, i, 0))],
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((batch, num_q_heads, plan.q_padded, _LANES), jnp.float32),
        ],
        scratch_shapes=[
            pltpu.VMEM((bq, _LANES), jnp.float32),  # running max m
            pltpu.VMEM((bq, _LANES), jnp.float32),  # running normaliser
            pltpu.VMEM((bq, head), jnp.float32),  # unnormalised output
        ],
        compiler_params=_tpu_params(3, 1),
        interpret=plan.interpret,
        name="flash_forward",
    )(*args)
    return _head_major(out), lse[..., 0]


def _tpu_forward_kernel(*refs, plan: _Plan):
    q_ref, k_ref, v_ref, *seg_refs, o_ref, lse_ref, m_ref, norm_ref, acc_ref = refs
    bq, bk = plan.block_q, plan.block_kv
    q_tile, kv_tile = pl.program_id(2), pl.program_id(3)

    @pl.when(kv_tile == 0)
    def _init():
        m_ref[...] = jnp.full(m_ref.shape, _MASKED, jnp.float32)
        norm_ref[...] = jnp.zeros(norm_ref.shape, jnp.float32)
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    def step(mask: _Mask):
        s = _scores(q_ref[...], k_ref[...], plan.scale)
        q_seg, kv_seg = _tpu_segments(plan, seg_refs)
        visible = mask.visible(q_tile * bq, kv_tile * bk, s.shape, q_seg, kv_seg)
        carry = (_column(m_ref[...]), _column(norm_ref[...]), acc_ref[...])
        m, norm, acc = _softmax_step(carry, s, visible, v_ref[...])
        m_ref[...] = jnp.broadcast_to(m, m_ref.shape)
        norm_ref[...] = jnp.broadcast_to(norm, norm_ref.shape)
        acc_ref[...] = acc

    _tpu_kv_step(step, plan, q_tile, kv_tile)

    @pl.when(kv_tile == plan.num_kv_tiles - 1)
    def _finish():
        out, lse = _softmax_finish(_column(m_ref[...]), _column(norm_ref[...]), acc_ref[...])
        o_ref[...] = out.astype(o_ref.dtype)
        lse_ref[...] = jnp.broadcast_to(lse, lse_ref.shape)


def _tpu_backward(plan: _Plan, q, k, v, do, lse, delta, q_seg, kv_seg):
    q, k, v, do = _head_major(q), _head_major(k), _head_major(v), _head_major(do)
    lse, delta = _lane_replicated(lse), _lane_replicated(delta)
    seg = _tpu_segment_inputs(plan, q_seg, kv_seg) if plan.mask.segments else ()
    dq = _tpu_dq(plan, q, k, v, do, lse, delta, seg)
    dk, dv = _tpu_dkdv(plan, q, k, v, do, lse, delta, seg)
    return _head_major(dq), _head_major(dk), _head_major(dv)


def _tpu_dq(plan: _Plan, q, k, v, do, lse, delta, seg):
    batch, num_q_heads, _, head = q.shape
    bq, bk, group, mask = plan.block_q, plan.block_kv, plan.group, plan.mask
    nk = plan.num_kv_tiles

    def kv_block(i, j):
        return jnp.maximum(jnp.minimum(j, mask.kv_end(i, bq, bk, nk) - 1), 0)

    q_spec = pl.BlockSpec((None, None, bq, head), lambda b, n, i, j: (b, n, i, 0))
    kv_spec = pl.BlockSpec(
        (None, None, bk, head), lambda b, n, i, j: (b, lax.div(n, group), kv_block(i, j), 0)
    )
    row_spec = pl.BlockSpec((None, None, bq, _LANES), lambda b, n, i, j: (b, n, i, 0))
    in_specs = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec]
    if seg:
        in_specs += [
            pl.BlockSpec((None, bq, seg[0].shape[2]), lambda b, n, i, j: (b, i, 0)),
            pl.BlockSpec((None, _SUBLANES, bk), lambda b, n, i, j: (b, 0, kv_block(i, j))),
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


def _tpu_dq_kernel(*refs, plan: _Plan):
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *seg_refs, dq_ref, acc_ref = refs
    bq, bk = plan.block_q, plan.block_kv
    q_tile, kv_tile = pl.program_id(2), pl.program_id(3)

    @pl.when(kv_tile == 0)
    def _init():
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    def step(mask: _Mask):
        q_seg, kv_seg = _tpu_segments(plan, seg_refs)
        visible = mask.visible(q_tile * bq, kv_tile * bk, (bq, bk), q_seg, kv_seg)
        acc_ref[...] = _dq_step(
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


def _tpu_dkdv(plan: _Plan, q, k, v, do, lse, delta, seg):
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
        (None, None, bq, _LANES), lambda b, n, j, g, i: (b, n * group + g, q_block(i, j), 0)
    )
    kv_spec = pl.BlockSpec((None, None, bk, head), lambda b, n, j, g, i: (b, n, j, 0))
    in_specs = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec]
    if seg:
        in_specs += [
            pl.BlockSpec((None, bq, seg[0].shape[2]), lambda b, n, j, g, i: (b, q_block(i, j), 0)),
            pl.BlockSpec((None, _SUBLANES, bk), lambda b, n, j, g, i: (b, 0, j)),
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


def _tpu_dkdv_kernel(*refs, plan: _Plan):
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *seg_refs, dk_ref, dv_ref, dk_acc, dv_acc = (
        refs
    )
    bq, bk = plan.block_q, plan.block_kv
    kv_tile, head, q_tile = pl.program_id(2), pl.program_id(3), pl.program_id(4)

    @pl.when((head == 0) & (q_tile == 0))
    def _init():
        dk_acc[...] = jnp.zeros(dk_acc.shape, jnp.float32)
        dv_acc[...] = jnp.zeros(dv_acc.shape, jnp.float32)

    def step(mask: _Mask):
        q_seg, kv_seg = _tpu_segments(plan, seg_refs)
        visible = mask.visible(q_tile * bq, kv_tile * bk, (bq, bk), q_seg, kv_seg)
        dk, dv = _dkdv_step(
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


# ----------------------------------------------------------------------------- planning


def _default_layout() -> str:
    platform = jax.default_backend()
    return "gpu" if platform == "cpu" else platform


def _resolve_backend(backend: str | None, interpret: bool) -> str:
    platform = jax.default_backend()
    backend = _default_layout() if backend is None else backend
    if backend not in _BACKENDS:
        raise ValueError(f"no flash attention kernel for backend {backend!r}; one of {_BACKENDS}")
    if not interpret and backend != platform:
        raise ValueError(
            f"flash attention compiles its {backend} kernels only on a {backend}, and the "
            f"default backend is {platform}; pass interpret=True to run them in Pallas' "
            "interpreter (the only way on CPU)"
        )
    return backend


def _check_inputs(q, k, v, q_segment_ids, kv_segment_ids) -> None:
    if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape:
        raise ValueError(
            f"want q [B,T,Nq,H], k and v [B,S,Nkv,H]; got {q.shape}, {k.shape}, {v.shape}"
        )
    (batch, _, num_q_heads, head), (kv_batch, kv_len, num_kv_heads, kv_head) = q.shape, k.shape
    if (batch, head) != (kv_batch, kv_head) or num_q_heads % num_kv_heads:
        raise ValueError(f"q {q.shape} and k/v {k.shape} disagree on batch, head dim or grouping")
    if (q_segment_ids is None) != (kv_segment_ids is None):
        raise ValueError("give both q_segment_ids and kv_segment_ids, or neither")
    if q_segment_ids is not None and (
        q_segment_ids.shape != q.shape[:2] or kv_segment_ids.shape != (batch, kv_len)
    ):
        raise ValueError(
            f"segment ids {q_segment_ids.shape}, {kv_segment_ids.shape} do not match "
            f"[B, T] = {q.shape[:2]} and [B, S] = {(batch, kv_len)}"
        )


def _fit_block(block: int, length: int, backend: str, align: int) -> int:
    """The tile actually used: `block`, or the smallest legal tile covering a short sequence."""
    if length >= block:
        return block
    if backend == "gpu":
        return max(16, pl.next_power_of_2(length))
    return pl.cdiv(length, align) * align


def _check_block(name: str, block: int, backend: str, align: int) -> None:
    if backend == "gpu" and (block < 16 or block & (block - 1)):
        raise ValueError(f"{name}={block}: Triton tiles must be powers of two, at least 16")
    if backend == "tpu" and block % align:
        raise ValueError(f"{name}={block}: Mosaic needs a multiple of {align}")


def _plan(
    q, k, v, causal, segment_ids, block_sizes, interpret, backend, *, bwd: bool = False
) -> _Plan:
    backend = _resolve_backend(backend, interpret)
    _check_inputs(q, k, v, *segment_ids)
    sizes = BlockSizes.for_backend(backend) if block_sizes is None else block_sizes
    block_q, block_kv = (
        (sizes.block_q_bwd, sizes.block_kv_bwd) if bwd else (sizes.block_q, sizes.block_kv)
    )
    q_align, kv_align = (16, 16) if backend == "gpu" else (_SUBLANES, _LANES)
    _check_block("block_q", block_q, backend, q_align)
    _check_block("block_kv", block_kv, backend, kv_align)
    q_len, kv_len, head_dim = q.shape[1], k.shape[1], q.shape[3]
    block_q = _fit_block(block_q, q_len, backend, q_align)
    block_kv = _fit_block(block_kv, kv_len, backend, kv_align)
    kv_padded = pl.cdiv(kv_len, block_kv) * block_kv
    # Triton tiles are powers of two in every dim; zero head-dim padding changes no product.
    head_padded = max(16, pl.next_power_of_2(head_dim)) if backend == "gpu" else head_dim
    return _Plan(
        backend=backend,
        interpret=interpret,
        block_q=block_q,
        block_kv=block_kv,
        q_len=q_len,
        kv_len=kv_len,
        q_padded=pl.cdiv(q_len, block_q) * block_q,
        kv_padded=kv_padded,
        head_dim=head_dim,
        head_padded=head_padded,
        group=q.shape[2] // k.shape[2],
        mask=_Mask(
            causal=causal,
            offset=kv_len - q_len,
            kv_len=kv_len,
            kv_padded=kv_padded != kv_len,
            segments=segment_ids[0] is not None,
        ),
        num_warps=sizes.num_warps,
        num_stages=sizes.num_stages,
    )


def _pad_axis(x: Array, axis: int, size: int, value=0) -> Array:
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def _pad_inputs(plan: _Plan, q, *kvs):
    """Pad the sequence axis to whole tiles and the head dim to the layout's tile."""
    q = _pad_axis(_pad_axis(q, 1, plan.q_padded), 3, plan.head_padded)
    kvs = [_pad_axis(_pad_axis(x, 1, plan.kv_padded), 3, plan.head_padded) for x in kvs]
    return (q, *kvs)


def _pad_segments(plan: _Plan, q_segment_ids, kv_segment_ids):
    if q_segment_ids is None:
        return None, None
    # Padding keys are masked by position and padding rows are cropped, so their ids are moot.
    q_seg = _pad_axis(q_segment_ids.astype(jnp.int32), 1, plan.q_padded)
    kv_seg = _pad_axis(kv_segment_ids.astype(jnp.int32), 1, plan.kv_padded)
    return q_seg, kv_seg
