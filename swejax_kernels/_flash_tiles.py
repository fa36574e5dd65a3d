"""What both flash layouts share: tile sizes, the mask and plan of a call, the per-tile
softmax and gradient math (values in, values out, no refs), and input padding."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jaxtyping import Array, Bool, Float, Int

from swejax_kernels.platform import target_platform

# Logit given to masked entries. Finite, so a row that has seen only masked keys so far has a
# finite running max (m = MASKED) and no inf - inf; the first visible key then rescales the
# row's junk sums by exp(MASKED - m) = 0. A row that never sees a key ends with m == MASKED
# and is turned into out = 0, lse = -inf.
MASKED = -1e30
LANES = 128  # TPU vector lanes: per-row vectors are stored replicated across them.
SUBLANES = 8  # TPU sublanes: key segment ids are stored replicated across them.
BACKENDS = ("gpu", "tpu")

# Contraction patterns of the tile matmuls, as lax.dot_general dimension numbers.
NN = (((1,), (0,)), ((), ()))  # a @ b
NT = (((1,), (1,)), ((), ()))  # a @ b.T
TN = (((0,), (0,)), ((), ()))  # a.T @ b


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

        `None` means `platform.target_platform()`; on CPU that is the GPU layout, which is what
        interpret mode runs unless told otherwise.
        """
        backend = default_layout() if backend is None else backend
        if backend == "tpu":
            # 512-wide tiles keep the MXU busy; the backward holds ~5 f32 (q, kv) tiles at once,
            # so its query tile is halved to stay inside the default scoped VMEM.
            return cls(block_q=512, block_kv=512, block_q_bwd=256, block_kv_bwd=512)
        if backend == "gpu":
            return cls()
        raise ValueError(f"no flash attention tiles for backend {backend!r}; one of {BACKENDS}")


@dataclasses.dataclass(frozen=True)
class Mask:
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
            visible = both(visible, cols < self.kv_len)
        if self.segments:
            visible = both(visible, q_seg == kv_seg)
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

    def interior(self) -> Mask:
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

    def key_gradients(self) -> Mask:
        """The mask for dK/dV: a padding key's gradients are cropped, so it needs no mask."""
        return dataclasses.replace(self, kv_padded=False)


@dataclasses.dataclass(frozen=True)
class Plan:
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
    mask: Mask
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


# ----------------------------------------------------------------------------- tile math
# Shared by both layouts: values in, values out, no refs. Per-row statistics are [rows, 1]
# columns that broadcast against the [rows, keys] logit tile.


def dot(a: Array, b: Array, dims) -> Float[Array, "M N"]:
    """a . b over `dims`, accumulated in float32, at a precision fixed by the inputs' dtype.

    Never left to `jax_default_matmul_precision`: float32 inputs ask for float32 products
    (the default would let Triton use TF32), and half-precision inputs for the native MXU /
    tensor-core product, which is exact for them (with the default at "highest", Mosaic is
    asked for an fp32-contract matmul of bf16 operands and refuses to compile it).
    """
    exact = lax.Precision.HIGHEST if a.dtype == jnp.float32 else lax.Precision.DEFAULT
    return lax.dot_general(a, b, dims, precision=exact, preferred_element_type=jnp.float32)


def both(a: Array | None, b: Array) -> Array:
    return b if a is None else a & b


def scores(q: Float[Array, "Tq H"], k: Float[Array, "Tk H"], scale: float) -> Float[Array, "Tq Tk"]:
    # Scaling the float32 logits rather than q keeps bf16 inputs unrounded.
    return dot(q, k, NT) * scale


def softmax_init(rows: int, head_dim: int):
    return (
        jnp.full((rows, 1), MASKED, jnp.float32),
        jnp.zeros((rows, 1), jnp.float32),
        jnp.zeros((rows, head_dim), jnp.float32),
    )


def softmax_step(
    carry: tuple[Float[Array, "Tq 1"], Float[Array, "Tq 1"], Float[Array, "Tq H"]],
    s: Float[Array, "Tq Tk"],
    visible: Bool[Array, "Tq Tk"] | None,
    v: Float[Array, "Tk H"],
):
    """Fold one key tile into the running max m, normaliser and unnormalised output."""
    m_prev, norm_prev, acc_prev = carry
    if visible is not None:
        s = jnp.where(visible, s, MASKED)
    m = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
    p = jnp.exp(s - m)
    alpha = jnp.exp(m_prev - m)  # rescales what was summed under the old max
    norm = alpha * norm_prev + jnp.sum(p, axis=1, keepdims=True)
    acc = alpha * acc_prev + dot(p.astype(v.dtype), v, NN)
    return m, norm, acc


def softmax_finish(
    m: Float[Array, "Tq 1"], norm: Float[Array, "Tq 1"], acc: Float[Array, "Tq H"]
) -> tuple[Float[Array, "Tq H"], Float[Array, "Tq 1"]]:
    empty = m <= 0.5 * MASKED  # the row never saw a visible key
    norm = jnp.where(empty, 1.0, norm)
    out = jnp.where(empty, 0.0, acc / norm)
    lse = jnp.where(empty, -jnp.inf, m + jnp.log(norm))
    return out, lse


def probs(
    s: Float[Array, "Tq Tk"], visible: Bool[Array, "Tq Tk"] | None, lse: Float[Array, "Tq 1"]
) -> Float[Array, "Tq Tk"]:
    if visible is not None:
        s = jnp.where(visible, s, MASKED)
    return jnp.exp(s - lse)


def dkdv_step(carry, q, k, v, do, lse, delta, visible, scale: float):
    """Add one query tile's share to the key tile's dK (unscaled) and dV."""
    dk, dv = carry
    p = probs(scores(q, k, scale), visible, lse)
    dv = dv + dot(p.astype(do.dtype), do, TN)
    ds = p * (dot(do, v, NT) - delta)
    dk = dk + dot(ds.astype(q.dtype), q, TN)
    return dk, dv


def dq_step(dq, q, k, v, do, lse, delta, visible, scale: float):
    """Add one key tile's share to the query tile's dQ (unscaled)."""
    p = probs(scores(q, k, scale), visible, lse)
    ds = p * (dot(do, v, NT) - delta)
    return dq + dot(ds.astype(k.dtype), k, NN)


# ----------------------------------------------------------------------------- planning


def default_layout() -> str:
    platform = target_platform()
    return "gpu" if platform == "cpu" else platform


def _resolve_backend(backend: str | None, interpret: bool) -> str:
    platform = target_platform()
    backend = default_layout() if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"no flash attention kernel for backend {backend!r}; one of {BACKENDS}")
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


def make_plan(
    q, k, v, causal, segment_ids, block_sizes, interpret, backend, *, bwd: bool = False
) -> Plan:
    backend = _resolve_backend(backend, interpret)
    _check_inputs(q, k, v, *segment_ids)
    sizes = BlockSizes.for_backend(backend) if block_sizes is None else block_sizes
    block_q, block_kv = (
        (sizes.block_q_bwd, sizes.block_kv_bwd) if bwd else (sizes.block_q, sizes.block_kv)
    )
    q_align, kv_align = (16, 16) if backend == "gpu" else (SUBLANES, LANES)
    _check_block("block_q", block_q, backend, q_align)
    _check_block("block_kv", block_kv, backend, kv_align)
    q_len, kv_len, head_dim = q.shape[1], k.shape[1], q.shape[3]
    block_q = _fit_block(block_q, q_len, backend, q_align)
    block_kv = _fit_block(block_kv, kv_len, backend, kv_align)
    kv_padded = pl.cdiv(kv_len, block_kv) * block_kv
    # Triton tiles are powers of two in every dim; zero head-dim padding changes no product.
    head_padded = max(16, pl.next_power_of_2(head_dim)) if backend == "gpu" else head_dim
    return Plan(
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
        mask=Mask(
            causal=causal,
            offset=kv_len - q_len,
            kv_len=kv_len,
            kv_padded=kv_padded != kv_len,
            segments=segment_ids[0] is not None,
        ),
        num_warps=sizes.num_warps,
        num_stages=sizes.num_stages,
    )


def pad_axis(x: Array, axis: int, size: int, value=0) -> Array:
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def pad_inputs(plan: Plan, q, *kvs):
    """Pad the sequence axis to whole tiles and the head dim to the layout's tile."""
    q = pad_axis(pad_axis(q, 1, plan.q_padded), 3, plan.head_padded)
    kvs = [pad_axis(pad_axis(x, 1, plan.kv_padded), 3, plan.head_padded) for x in kvs]
    return (q, *kvs)


def pad_segments(plan: Plan, q_segment_ids, kv_segment_ids):
    if q_segment_ids is None:
        return None, None
    # Padding keys are masked by position and padding rows are cropped, so their ids are moot.
    q_seg = pad_axis(q_segment_ids.astype(jnp.int32), 1, plan.q_padded)
    kv_seg = pad_axis(kv_segment_ids.astype(jnp.int32), 1, plan.kv_padded)
    return q_seg, kv_seg
