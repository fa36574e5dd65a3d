"""Attention as `ModelConfig.attention` names it: the checks, the dispatch, the ring's order.

What each name means, where it runs and how it treats a split sequence is the registry's
(`swejax.models.attention_impls.ATTENTION_IMPLS`); this module acts on it. A choice that cannot
run raises ValueError with the reason, never falls back: `check_attention` at model build, and
the same checks again when `attend` is traced.

The ring choices take their mesh from `jax.set_mesh` (`jax.sharding.get_abstract_mesh()`).
Without a mesh in context, or with `context` of size 1, the ring has one device (blockwise
attention over the whole sequence), so a config with a ring runs unchanged on one device. On a
mesh that splits the sequence the model keeps its tokens in the ring's zigzag order from input
to final hidden states (`to_ring_order`, `from_ring_order`), so `attend` takes and returns the
ring choices' q, k, v and output in that order and no layer reorders them. The whole-sequence
choices (`AttentionImpl.whole_sequence`) run per shard of batch and heads under a mesh and
refuse a sequence split over `context` (each needs all keys on one device; that is what the
ring is for).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float, Int

from swejax.models.attention_impls import AttentionImpl, attention_impl
from swejax.models.kv_cache import LayerCache, per_page_shard
from swejax.sharding import CONTEXT_AXIS, LOGICAL_RULES, logical_to_spec
from swejax_kernels.platform import target_platform
from swejax_kernels.reference import attention as _reference
from swejax_kernels.reference import paged_attention as _reference_paged
from swejax_kernels.ring import from_zigzag, ring_attention, to_zigzag

if TYPE_CHECKING:
    from swejax.models.config import ModelConfig

# How the ring sees the mesh: the sequence over context, rows over the batch axes.
_RING_AXES = {"axis_name": CONTEXT_AXIS, "batch_axes": LOGICAL_RULES["batch"]}
_INTERPRET = {"on": False}  # set by `pallas_interpreter`


@contextlib.contextmanager
def pallas_interpreter() -> Iterator[None]:
    """Within this context the Pallas choices run in Pallas's interpreter on any backend: how
    the CPU tests check the model's kernel paths end to end. Slow; never for real runs. It is
    read when a function is traced, so trace (build the engine, jit the step) inside it."""
    _INTERPRET["on"] = True
    try:
        yield
    finally:
        _INTERPRET["on"] = False


def check_attention(cfg: ModelConfig, backend: str | None = None) -> None:
    """Raise ValueError, with the reason, if `cfg.attention` cannot run on `backend`.

    `backend` is a JAX platform name ("cpu", "gpu", "tpu"); None means the kernels' target
    (`swejax_kernels.platform.target_platform()`: the default backend unless overridden).
    """
    backend = target_platform() if backend is None else backend
    _check(cfg.attention, backend, cfg.head_dim, jnp.dtype(cfg.dtype))


def in_ring_order(impl: str) -> bool:
    """Whether the model's tokens travel in the causal ring's zigzag order: a ring choice on
    a mesh in context whose `context` axis splits the sequence."""
    if not attention_impl(impl).ring:
        return False
    mesh = _mesh_in_context()
    return mesh is not None and mesh.shape.get(CONTEXT_AXIS, 1) > 1


def to_ring_order(impl: str, *arrays: Array | None) -> tuple[Array | None, ...]:
    """[B, T, ...] arrays (None passes) into the zigzag order if `in_ring_order(impl)`."""
    if not in_ring_order(impl):
        return arrays
    mesh = _mesh_in_context()
    return tuple(None if x is None else to_zigzag(x, mesh=mesh, **_RING_AXES) for x in arrays)


def from_ring_order(impl: str, x: Array) -> Array:
    """The inverse of `to_ring_order`, for one array."""
    if not in_ring_order(impl):
        return x
    return from_zigzag(x, mesh=_mesh_in_context(), **_RING_AXES)


def attend(
    q: Float[Array, "B T Nq H"],
    k: Float[Array, "B S Nkv H"],
    v: Float[Array, "B S Nkv H"],
    segment_ids: Int[Array, "B T"] | None,
    *,
    impl: str,
) -> Float[Array, "B T Nq H"]:
    """Causal self-attention by the named implementation; one that cannot run here raises.

    When `in_ring_order(impl)`, q, k, v and segment ids come in the ring's zigzag order and the
    output is returned in it (the model moved its tokens there once, at its input).
    """
    entry = _check(impl, target_platform(), q.shape[-1], q.dtype)
    mesh = _mesh_in_context()
    if entry.ring:
        return ring_attention(
            q,
            k,
            v,
            mesh=mesh,
            **_RING_AXES,
            head_axis=LOGICAL_RULES["act_kv_heads"][0],
            causal=True,
            segment_ids=segment_ids,
            block_impl=entry.kernel,
            interpret=_INTERPRET["on"],
            zigzagged=in_ring_order(impl),
        )
    kernel = _KERNELS[entry.kernel]
    if entry.whole_sequence:
        return _per_shard(kernel, entry, mesh, q, k, v, segment_ids)
    # The partitioner lays it out: each device's queries against all keys.
    return kernel(q, k, v, segment_ids)


def attend_cached(
    q: Float[Array, "B T Nq H"],
    k_pages: Float[Array, "B n page Nkv H"],
    v_pages: Float[Array, "B n page Nkv H"],
    q_positions: Int[Array, "B T"],
) -> Float[Array, "B T Nq H"]:
    """New tokens over a slot's gathered KV pages, by the reference whatever the choice:
    prefill and ingest chunks, and decode steps of choices without a decode kernel (those with
    one decode by `attend_paged_decode`). Page by page (`paged_attention`): the numbers do not
    depend on how many pages a call attends over, so a rerun repeats them."""
    return _reference_paged(q, k_pages, v_pages, q_positions)


def attend_paged_decode(
    q: Float[Array, "B 1 Nq H"],
    cache: LayerCache,
    layer: Int[Array, ""],
    page_table: Int[Array, "B n"],
    positions: Int[Array, "B 1"],
    *,
    impl: str,
) -> Float[Array, "B 1 Nq H"]:
    """One new token per slot over its pages, read in place by the Pallas decode kernel (the
    token's K/V already written at `positions`). Under a mesh the kernel runs on each device's
    slots, pages and KV heads (`kv_cache.per_page_shard`: the page table holds shard-local ids)."""
    from swejax_kernels.decode import paged_decode_attention

    if not attention_impl(impl).decode_kernel:
        raise ValueError(f"attention={impl!r} has no decode kernel; use attend_cached")
    _check(impl, target_platform(), q.shape[-1], q.dtype)

    def decode(q, k_pool, v_pool, layer, page_table, lengths):
        out = paged_decode_attention(
            q[:, 0], k_pool, v_pool, layer, page_table, lengths, interpret=_INTERPRET["on"]
        )
        return out[:, None]

    # Idle slots sit at a position past their visible pages (the engine's "beyond"): length 0,
    # so the kernel reads none of their pages (their output is discarded).
    visible = page_table.shape[1] * cache.k.shape[2]
    lengths = jnp.where(positions[:, 0] < visible, positions[:, 0] + 1, 0)
    # check_vma=False: a pallas_call's outputs carry no record of the axes they vary over.
    (out,) = per_page_shard(
        lambda *args: (decode(*args),), cache, (4, None, None, 0, 2, 1), (4,), check_vma=False
    )(q, cache.k, cache.v, layer, page_table, lengths)
    return out


def _check(impl: str, backend: str, head_dim: int, dtype: jnp.dtype) -> AttentionImpl:
    entry = attention_impl(impl)
    entry.check(backend, head_dim, dtype, interpret=_INTERPRET["on"])
    return entry


# --- what computes attention on one device, by the registry's `kernel` ------------------------


def _reference_kernel(q, k, v, segment_ids):
    return _reference(q, k, v, causal=True, segment_ids=segment_ids)


def _flash(q, k, v, segment_ids):
    # Imported here: the Pallas module only lowers on GPU and TPU.
    from swejax_kernels.flash import flash_attention

    return flash_attention(
        q, k, v, causal=True, segment_ids=segment_ids, interpret=_INTERPRET["on"]
    )


def _cudnn(q, k, v, segment_ids):
    # GQA is native (Nq a multiple of Nkv). Packed rows go in as a boolean mask, which this API
    # hands to cuDNN as a dense [B, 1, T, S] bias: memory T x S per row, unlike the flash kernels.
    mask = None
    if segment_ids is not None:
        mask = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True, implementation="cudnn")


_KERNELS = {"reference": _reference_kernel, "flash": _flash, "cudnn": _cudnn}


def _per_shard(kernel, entry: AttentionImpl, mesh: AbstractMesh | None, q, k, v, segment_ids):
    """Run `kernel` on each device's shard of batch and heads (a Pallas or cuDNN call would
    otherwise be replicated by the partitioner: every device computing every head)."""
    if mesh is None:
        return kernel(q, k, v, segment_ids)
    entry.check_context(mesh.shape.get(CONTEXT_AXIS, 1), CONTEXT_AXIS)
    # One spec for q, k and v: heads are split only when the kv heads divide, so each device's
    # query heads read exactly its own kv heads.
    spec = logical_to_spec(("batch", "seq", "act_kv_heads", None), k.shape, mesh)
    segment_spec = None if segment_ids is None else P(spec[0], spec[1])
    # check_vma=False: a pallas_call's outputs carry no record of which mesh axes they vary over.
    return jax.shard_map(
        kernel,
        mesh=mesh,
        in_specs=(spec, spec, spec, segment_spec),
        out_specs=spec,
        check_vma=False,
    )(q, k, v, segment_ids)


def _mesh_in_context() -> AbstractMesh | None:
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh
