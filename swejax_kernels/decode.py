"""Decode attention over a paged KV cache: one new token per slot reads its pages in place.

`reference_paged_decode_attention` is the plain-XLA meaning (gather the slot's pages, then
`cached_attention`); `paged_decode_attention` is a Pallas kernel that reads pages straight from
the pool through the page table, so no dense copy of the cache is made on each decode step.

Both kernels process every query head of a KV head together, so a K/V page is read once per
group, keep an online softmax over blocks of pages in float32, and stop at the slot's length.

- GPU (Triton lowering): Triton has no scalar prefetch, so the pools enter whole (plain global
  pointers) and the kernel gathers a block of pages itself: it loads the page ids from the page
  table, then `pool[layer, page_ids, :, kv_head, :]` becomes one pointer gather. The loop over
  page blocks has the slot's own trip count, so pages past the length are never loaded.
- TPU (Mosaic): page table, lengths and layer are scalar-prefetched into SMEM; each grid step's
  BlockSpecs DMA `block_pages` pages (all KV heads of each) picked by the page table. Steps past
  the length repeat the last page's block index, which the pipeline does not fetch again, and
  skip the compute.

Split-K (`num_splits`): with few slots and long contexts, one program per (slot, KV head) leaves
most of a GPU idle. The pages are then cut into `num_splits` contiguous ranges, each program
returns its partial output with its log-sum-exp, and a small XLA merge combines them.

One module, though over 400 lines: the API, its reference, the two lowerings and the split-K
merge share one page-block schedule and one set of argument checks, and are read together.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton
from jaxtyping import Array, Bool, Float, Int

from swejax_kernels._flash_tiles import NN, NT, dot
from swejax_kernels.platform import target_platform
from swejax_kernels.reference import cached_attention

Platform = Literal["gpu", "tpu"]

# Finite, like the reference's mask: exp(_MASKED - m) is exactly 0 and never NaN.
_MASKED = -1e30
# Tokens per inner step when `block_pages` is not given. Triton keeps a [tokens, D] K and V
# block in registers, so it wants a modest block; a TPU grid step costs ~0.35 us of overhead,
# so it wants larger ones.
_DEFAULT_BLOCK_TOKENS = {"gpu": 64, "tpu": 256}
# tl.dot needs every matmul dimension >= 16, so the query rows of a group are padded to 16.
_MIN_DOT_DIM = 16


def paged_decode_attention(
    q: Float[Array, "B Nq H"],
    k_pool: Float[Array, "L P page Nkv H"],
    v_pool: Float[Array, "L P page Nkv H"],
    layer: Int[Array, ""],
    page_table: Int[Array, "B n"],
    lengths: Int[Array, " B"],
    *,
    block_pages: int | None = None,
    num_splits: int = 1,
    interpret: bool = False,
    platform: Platform | None = None,
) -> Float[Array, "B Nq H"]:
    """Attention of each slot's one new token over its first `lengths[b]` cache entries.

    `lengths[b]` counts the valid entries (the new token's position + 1; it must already be
    written). A slot with length 0 returns zeros; a length past the page table's capacity
    attends to every entry, as `cached_attention` does. Page ids outside the pool are clipped,
    as `read_pages` does (the engine marks unassigned entries with P).

    `block_pages`: pages per inner step (default: 64 tokens on GPU, 256 on TPU).
    `num_splits`: contiguous page ranges handled by separate programs and merged (split-K).
    `platform`: which lowering the kernel is written for, "gpu" (Triton) or "tpu" (Mosaic);
    default the JAX backend's. On CPU only `interpret=True` runs, with the GPU formulation
    unless `platform` says otherwise.
    """
    platform = _resolve_platform(platform, interpret)
    page_size = k_pool.shape[2]
    if block_pages is None:
        block_pages = max(1, _DEFAULT_BLOCK_TOKENS[platform] // page_size)
    _check_inputs(q, k_pool, v_pool, page_table, lengths, block_pages, num_splits, platform)

    batch, num_q_heads, head_dim = q.shape
    num_pages, num_kv_heads = k_pool.shape[1], k_pool.shape[3]
    group = num_q_heads // num_kv_heads
    table_pages = page_table.shape[1]
    # Each split covers whole blocks, so no block straddles two splits and the padded table
    # holds every block's page ids.
    pages_per_split = math.ceil(math.ceil(table_pages / num_splits) / block_pages) * block_pages
    page_table = jnp.clip(page_table.astype(jnp.int32), 0, num_pages - 1)
    page_table = jnp.pad(page_table, ((0, 0), (0, num_splits * pages_per_split - table_pages)))
    lengths = jnp.clip(lengths.astype(jnp.int32), 0, table_pages * page_size)
    layer = jnp.asarray(layer, jnp.int32).reshape(1)
    # Query head n reads KV head n // group, so [B, Nq, H] -> [B, Nkv, group, H]. Scaling q,
    # in its own dtype as the reference does, costs Nq * H multiplies instead of a scale per logit.
    q = (q * head_dim**-0.5).reshape(batch, num_kv_heads, group, head_dim)

    call = _gpu_call if platform == "gpu" else _tpu_call
    out, lse = call(
        q,
        k_pool,
        v_pool,
        layer,
        page_table,
        lengths,
        block_pages=block_pages,
        pages_per_split=pages_per_split,
        num_splits=num_splits,
        interpret=interpret,
    )
    out = _merge_splits(out, lse)
    return out.reshape(batch, num_q_heads, head_dim).astype(q.dtype)


def reference_paged_decode_attention(
    q: Float[Array, "B Nq H"],
    k_pool: Float[Array, "L P page Nkv H"],
    v_pool: Float[Array, "L P page Nkv H"],
    layer: Int[Array, ""],
    page_table: Int[Array, "B n"],
    lengths: Int[Array, " B"],
    *,
    block_pages: int | None = None,
    num_splits: int = 1,
    interpret: bool = False,
    platform: Platform | None = None,
) -> Float[Array, "B Nq H"]:
    """The kernel's meaning in plain XLA: gather the pages (as `read_pages`), then
    `cached_attention` of the token at position length - 1. Tiling arguments are ignored."""
    del block_pages, num_splits, interpret, platform
    keys = _gather_pages(k_pool, layer, page_table).astype(q.dtype)
    values = _gather_pages(v_pool, layer, page_table).astype(q.dtype)
    positions = (lengths - 1)[:, None]
    out = cached_attention(q[:, None], keys, values, positions)[:, 0]
    # cached_attention averages uniformly when nothing is visible; an empty slot reads nothing.
    return jnp.where((lengths > 0)[:, None, None], out, 0).astype(q.dtype)


def _gather_pages(
    pool: Float[Array, "L P page Nkv H"], layer: Int[Array, ""], page_table: Int[Array, "B n"]
) -> Float[Array, "B C Nkv H"]:
    """`swejax.models.kv_cache.read_pages`, restated so kernels do not import the model."""
    layer_index = jnp.broadcast_to(layer, page_table.shape)
    pages = pool.at[layer_index, page_table].get(mode="clip")  # [B, n, page, Nkv, H]
    return pages.reshape(pages.shape[0], -1, *pages.shape[3:])


def _resolve_platform(platform: Platform | None, interpret: bool) -> Platform:
    backend = target_platform()
    if platform is None:
        if backend in ("gpu", "tpu"):
            platform = backend
        elif interpret:
            platform = "gpu"
        else:
            raise ValueError(
                f"paged_decode_attention is a Pallas kernel for GPU or TPU; on {backend!r} it "
                "only runs with interpret=True (use reference_paged_decode_attention instead)."
            )
    if platform not in ("gpu", "tpu"):
        raise ValueError(f"platform must be 'gpu' or 'tpu', got {platform!r}")
    if not interpret and backend != platform:
        raise ValueError(
            f"the {platform} kernel cannot compile for the {backend!r} backend; "
            "pass interpret=True to run it in the Pallas interpreter."
        )
    return platform


def _check_inputs(q, k_pool, v_pool, page_table, lengths, block_pages, num_splits, platform):
    batch, num_q_heads, head_dim = q.shape
    if k_pool.ndim != 5 or k_pool.shape != v_pool.shape:
        raise ValueError(f"pools must share one [L, P, page, Nkv, H] shape: {k_pool.shape}")
    page_size, num_kv_heads = k_pool.shape[2], k_pool.shape[3]
    if k_pool.shape[4] != head_dim or num_q_heads % num_kv_heads:
        raise ValueError(f"q {q.shape} does not fit pools {k_pool.shape} (GQA needs Nkv | Nq)")
    if page_table.shape[0] != batch or lengths.shape != (batch,):
        raise ValueError(f"page_table {page_table.shape} / lengths {lengths.shape} vs B={batch}")
    if block_pages < 1 or num_splits < 1:
        raise ValueError(f"block_pages {block_pages} and num_splits {num_splits} must be >= 1")
    if platform == "gpu":
        # Triton tensors have power-of-two sizes, and tl.dot wants every dimension >= 16.
        sizes = {"page_size": page_size, "block_pages": block_pages, "head_dim": head_dim}
        odd = [f"{name}={size}" for name, size in sizes.items() if size & (size - 1)]
        if odd:
            raise ValueError(f"the GPU kernel needs powers of two: {', '.join(odd)}")
        if block_pages * page_size < _MIN_DOT_DIM or head_dim < _MIN_DOT_DIM:
            raise ValueError(
                f"the GPU kernel needs block_pages * page_size and head_dim >= {_MIN_DOT_DIM}"
            )


def _softmax_step(
    q: Float[Array, "G H"],
    k: Float[Array, "S H"],
    v: Float[Array, "S H"],
    valid: Bool[Array, "1 S"],
    m: Float[Array, "G 1"],
    row_sum: Float[Array, "G 1"],
    acc: Float[Array, "G H"],
) -> tuple[Array, Array, Array]:
    """One online-softmax update with a block of keys; `valid` masks entries past the length.

    Dtypes follow the reference: K and V are cast to q's dtype, products accumulate in float32,
    the probabilities are cast back to V's dtype for the second product.
    """
    k, v = k.astype(q.dtype), v.astype(q.dtype)
    logits = dot(q, k, NT)  # q @ k.T without materialising k.T
    logits = jnp.where(valid, logits, _MASKED)
    m_new = jnp.maximum(m, jnp.max(logits, axis=1, keepdims=True))
    correction = jnp.exp(m - m_new)
    p = jnp.exp(logits - m_new)
    row_sum = row_sum * correction + jnp.sum(p, axis=1, keepdims=True)
    pv = dot(p.astype(v.dtype), v, NN)
    return m_new, row_sum, acc * correction + pv


def _finish(m, row_sum, acc):
    """Normalised output and log-sum-exp; a split that saw no entry gives 0 and _MASKED."""
    seen = row_sum > 0
    out = acc / jnp.where(seen, row_sum, 1.0)
    lse = jnp.where(seen, m + jnp.log(jnp.where(seen, row_sum, 1.0)), _MASKED)
    return out, lse


def _merge_splits(
    out: Float[Array, "B S Nkv G H"], lse: Float[Array, "B S Nkv G 1"]
) -> Float[Array, "B Nkv G H"]:
    """Combine split partials: weights exp(lse_s - max lse) renormalised over the splits."""
    if out.shape[1] == 1:
        return out[:, 0]
    top = jnp.max(lse, axis=1, keepdims=True)
    weights = jnp.exp(lse - top)  # empty splits: exp(_MASKED - top) = 0, or 1 times a 0 output
    total = jnp.sum(weights, axis=1)
    return jnp.sum(weights * out, axis=1) / total


def _gpu_call(
    q,
    k_pool,
    v_pool,
    layer,
    page_table,
    lengths,
    *,
    block_pages,
    pages_per_split,
    num_splits,
    interpret,
):
    batch, num_kv_heads, group, head_dim = q.shape
    # tl.dot needs >= 16 rows and Triton power-of-two shapes: pad the group with zero queries.
    rows = max(_MIN_DOT_DIM, pl.next_power_of_2(group))
    q = jnp.pad(q, ((0, 0), (0, 0), (0, rows - group), (0, 0)))
    whole = pl.BlockSpec(memory_space=pl.ANY)  # a global pointer; the kernel indexes it
    squeezed = pl.squeezed
    out, lse = pl.pallas_call(
        functools.partial(_gpu_kernel, block_pages=block_pages, pages_per_split=pages_per_split),
        grid=(batch, num_kv_heads, num_splits),
        in_specs=[
            whole,  # layer [1]
            whole,  # lengths [B]
            whole,  # page table [B, n]
            pl.BlockSpec((squeezed, squeezed, rows, head_dim), lambda b, h, s: (b, h, 0, 0)),
            whole,  # k pool
            whole,  # v pool
        ],
        out_specs=[
            pl.BlockSpec(
                (squeezed, squeezed, squeezed, rows, head_dim), lambda b, h, s: (b, s, h, 0, 0)
            ),
            pl.BlockSpec((squeezed, squeezed, squeezed, rows, 1), lambda b, h, s: (b, s, h, 0, 0)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((batch, num_splits, num_kv_heads, rows, head_dim), jnp.float32),
            jax.ShapeDtypeStruct((batch, num_splits, num_kv_heads, rows, 1), jnp.float32),
        ],
        compiler_params=pltriton.CompilerParams(num_warps=4, num_stages=2),
        interpret=interpret,
        name="paged_decode_attention",
    )(layer, lengths, page_table, q, k_pool, v_pool)
    return out[..., :group, :], lse[..., :group, :]


def _gpu_kernel(
    layer_ref,
    lengths_ref,
    table_ref,
    q_ref,
    k_ref,
    v_ref,
    o_ref,
    lse_ref,
    *,
    block_pages,
    pages_per_split,
):
    slot, kv_head, split = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    page_size, head_dim = k_ref.shape[2], k_ref.shape[4]
    block_tokens = block_pages * page_size
    layer = layer_ref[0]
    first_page = split * pages_per_split
    # Entries this split may read: its own page range, cut at the slot's length.
    end = jnp.minimum(lengths_ref[slot], (first_page + pages_per_split) * page_size)
    num_blocks = jnp.maximum(pl.cdiv(end - first_page * page_size, block_tokens), 0)
    q = q_ref[...]

    def body(i, carry):
        start_page = first_page + i * block_pages
        page_ids = table_ref[slot, pl.ds(start_page, block_pages)]
        # One pointer gather of block_pages pages: [block_pages, page, H] -> [tokens, H].
        k = k_ref[layer, page_ids, :, kv_head, :].reshape(block_tokens, head_dim)
        v = v_ref[layer, page_ids, :, kv_head, :].reshape(block_tokens, head_dim)
        positions = start_page * page_size + lax.broadcasted_iota(jnp.int32, (1, block_tokens), 1)
        return _softmax_step(q, k, v, positions < end, *carry)

    rows = q.shape[0]
    init = (
        jnp.full((rows, 1), _MASKED, jnp.float32),
        jnp.zeros((rows, 1), jnp.float32),
        jnp.zeros((rows, head_dim), jnp.float32),
    )
    out, lse = _finish(*lax.fori_loop(0, num_blocks, body, init))
    o_ref[...] = out
    lse_ref[...] = lse


def _tpu_call(
    q,
    k_pool,
    v_pool,
    layer,
    page_table,
    lengths,
    *,
    block_pages,
    pages_per_split,
    num_splits,
    interpret,
):
    batch, num_kv_heads, group, head_dim = q.shape
    page_size = k_pool.shape[2]
    blocks_per_split = pages_per_split // block_pages
    squeezed = pl.squeezed
    # One KV head per device (72B at tensor=8): the TPU lays [.., page, 1, H] out with the unit
    # axis outside its (8, 128) tiles, while a kernel operand must be row-major, so XLA would
    # copy both pools whole on every call. Without the unit axis the same bytes are a
    # row-major [.., page, H] array: dropping it is a bitcast.
    page_block = (page_size, head_dim)
    if num_kv_heads == 1:
        k_pool, v_pool = k_pool[:, :, :, 0], v_pool[:, :, :, 0]
    else:
        page_block = (page_size, num_kv_heads, head_dim)

    def page_map(offset):
        def index_map(b, s, j, layer_ref, lengths_ref, table_ref):
            index = s * pages_per_split + j * block_pages + offset
            # Past the length, repeat the last used page: the pipeline skips re-fetching an
            # unchanged block, and the kernel skips the step.
            last_used = jnp.maximum(pl.cdiv(lengths_ref[b], page_size) - 1, 0)
            page = table_ref[b, jnp.minimum(index, last_used)]
            return layer_ref[0], page, *(0,) * len(page_block)

        return pl.BlockSpec((squeezed, squeezed, *page_block), index_map)

    # One BlockSpec per page of a block: a BlockSpec can only address contiguous blocks, and a
    # block's pages are scattered over the pool.
    page_specs = [page_map(offset) for offset in range(block_pages)]
    slot_map = lambda b, s, j, *_: (b, 0, 0, 0)
    split_map = lambda b, s, j, *_: (b, s, 0, 0, 0)
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=3,
        grid=(batch, num_splits, blocks_per_split),
        in_specs=[
            pl.BlockSpec((squeezed, num_kv_heads, group, head_dim), slot_map),
            *page_specs,
            *page_specs,
        ],
        out_specs=[
            pl.BlockSpec((squeezed, squeezed, num_kv_heads, group, head_dim), split_map),
            pl.BlockSpec((squeezed, squeezed, num_kv_heads, group, 1), split_map),
        ],
        scratch_shapes=[
            pltpu.VMEM((num_kv_heads, group, 1), jnp.float32),
            pltpu.VMEM((num_kv_heads, group, 1), jnp.float32),
            pltpu.VMEM((num_kv_heads, group, head_dim), jnp.float32),
        ],
    )
    return pl.pallas_call(
        functools.partial(_tpu_kernel, block_pages=block_pages, pages_per_split=pages_per_split),
        grid_spec=grid_spec,
        out_shape=[
            jax.ShapeDtypeStruct((batch, num_splits, num_kv_heads, group, head_dim), jnp.float32),
            jax.ShapeDtypeStruct((batch, num_splits, num_kv_heads, group, 1), jnp.float32),
        ],
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "arbitrary")
        ),
        interpret=interpret,
        name="paged_decode_attention",
    )(layer, lengths, page_table, q, *[k_pool] * block_pages, *[v_pool] * block_pages)


def _tpu_kernel(layer_ref, lengths_ref, table_ref, q_ref, *refs, block_pages, pages_per_split):
    del layer_ref, table_ref  # used by the index maps only
    k_refs, v_refs = refs[:block_pages], refs[block_pages : 2 * block_pages]
    o_ref, lse_ref, m_ref, sum_ref, acc_ref = refs[2 * block_pages :]
    slot, split, step = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    page_size = k_refs[0].shape[0]
    num_kv_heads = q_ref.shape[0]
    block_tokens = block_pages * page_size
    length = lengths_ref[slot]
    start = (split * pages_per_split + step * block_pages) * page_size

    @pl.when(step == 0)
    def _init():
        m_ref[...] = jnp.full(m_ref.shape, _MASKED, jnp.float32)
        sum_ref[...] = jnp.zeros(sum_ref.shape, jnp.float32)
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    @pl.when(start < length)
    def _accumulate():
        # Pages stack along the leading axis: [block_pages * page, Nkv, H], or [.., H] when
        # the pools came without their unit KV-head axis.
        k = jnp.concatenate([ref[...] for ref in k_refs], axis=0)
        v = jnp.concatenate([ref[...] for ref in v_refs], axis=0)
        valid = start + lax.broadcasted_iota(jnp.int32, (1, block_tokens), 1) < length
        for h in range(num_kv_heads):  # static: a few KV heads, each with its query group
            k_head, v_head = (k, v) if k.ndim == 2 else (k[:, h, :], v[:, h, :])
            carry = (m_ref[h], sum_ref[h], acc_ref[h])
            m, row_sum, acc = _softmax_step(q_ref[h], k_head, v_head, valid, *carry)
            m_ref[h], sum_ref[h], acc_ref[h] = m, row_sum, acc

    @pl.when(step == pl.num_programs(2) - 1)
    def _write():
        out, lse = _finish(m_ref[...], sum_ref[...], acc_ref[...])
        o_ref[...] = out
        lse_ref[...] = lse
