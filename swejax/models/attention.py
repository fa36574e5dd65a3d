"""The one place that chooses an attention implementation (`ModelConfig.attention`).

  reference        plain XLA (`swejax_kernels.reference`); any backend.
  flash            the Pallas flash kernel (`swejax_kernels.flash`); GPU and TPU.
  ring             ring attention over the `context` mesh axis with flash blocks; GPU and TPU.
  ring_reference   the same ring with plain jnp blocks; any backend (what CPU tests run).
  cudnn            cuDNN's fused attention via `jax.nn.dot_product_attention`; CUDA GPUs,
                   bfloat16, head dims that are multiples of 8 up to 128 (256 from Hopper on).

A choice that cannot run raises ValueError with the reason, never falls back:
`check_attention` at model build, and the same checks again when `attend` is traced.

The ring takes its mesh from `jax.set_mesh` (`jax.sharding.get_abstract_mesh()`). Without a
mesh in context, or with `context` of size 1, it is a ring of one device (blockwise attention
over the whole sequence), so a config with a ring runs unchanged on one device. On a mesh that
splits the sequence the model keeps its tokens in the ring's zigzag order from input to final
hidden states (`to_ring_order`, `from_ring_order`), so `attend` takes and returns the ring
choices' q, k, v and output in that order and no layer reorders them. `flash` and
`cudnn` run per shard of batch and heads under a mesh and refuse a sequence split over
`context` (each needs all keys on one device; that is what the ring is for).
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

from swejax.models.kv_cache import LayerCache, per_page_shard
from swejax.sharding import CONTEXT_AXIS, LOGICAL_RULES, logical_to_spec
from swejax_kernels.platform import target_platform
from swejax_kernels.reference import attention as _reference
from swejax_kernels.reference import cached_attention as _reference_cached
from swejax_kernels.ring import from_zigzag, ring_attention, to_zigzag

if TYPE_CHECKING:
    from swejax.models.config import ModelConfig

# Backends each implementation lowers on (None: any).
_BACKENDS: dict[str, tuple[str, ...] | None] = {
    "reference": None,
    "ring_reference": None,
    "flash": ("gpu", "tpu"),
    "ring": ("gpu", "tpu"),
    "cudnn": ("gpu",),
}

# How the ring sees the mesh: the sequence over context, rows over the batch axes.
_RING_AXES = {"axis_name": CONTEXT_AXIS, "batch_axes": LOGICAL_RULES["batch"]}
# The Pallas choices also decode with the paged decode kernel (`swejax_kernels.decode`).
_DECODE_KERNEL = ("flash", "ring")
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


def uses_decode_kernel(impl: str) -> bool:
    return impl in _DECODE_KERNEL


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
    if impl not in ("ring", "ring_reference"):
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
    _check(impl, target_platform(), q.shape[-1], q.dtype)
    mesh = _mesh_in_context()
    if impl == "reference":
        return _reference(q, k, v, causal=True, segment_ids=segment_ids)
    if impl in ("ring", "ring_reference"):
        return ring_attention(
            q,
            k,
            v,
            mesh=mesh,
            **_RING_AXES,
            head_axis=LOGICAL_RULES["act_kv_heads"][0],
            causal=True,
            segment_ids=segment_ids,
            block_impl="flash" if impl == "ring" else "reference",
            interpret=_INTERPRET["on"],
            zigzagged=in_ring_order(impl),
        )
    return _per_shard(_WHOLE_SEQUENCE[impl], impl, mesh, q, k, v, segment_ids)


def attend_cached(
    q: Float[Array, "B T Nq H"],
    k_cache: Float[Array, "B C Nkv H"],
    v_cache: Float[Array, "B C Nkv H"],
    q_positions: Int[Array, "B T"],
) -> Float[Array, "B T Nq H"]:
    """New tokens over a slot's gathered KV cache, by the reference whatever the choice:
    prefill and ingest chunks, and decode steps of choices without a decode kernel (those with
    one decode by `attend_paged_decode`)."""
    return _reference_cached(q, k_cache, v_cache, q_positions)


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

    if not uses_decode_kernel(impl):
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


# --- checks -----------------------------------------------------------------------------------


def _check(impl: str, backend: str, head_dim: int, dtype: jnp.dtype) -> None:
    if impl not in _BACKENDS:
        raise ValueError(
            f"attention implementation {impl!r} is not available; have {sorted(_BACKENDS)}"
        )
    backends = _BACKENDS[impl]
    interpreted = _INTERPRET["on"] and impl in ("flash", "ring")
    if backends is not None and backend not in backends and not interpreted:
        cpu_hint = " (on CPU use 'reference' or 'ring_reference')" if backend == "cpu" else ""
        raise ValueError(
            f"attention={impl!r} runs on {' or '.join(backends)}, not on {backend!r}{cpu_hint}"
        )
    if impl == "cudnn":
        _check_cudnn(head_dim, dtype)


def _check_cudnn(head_dim: int, dtype: jnp.dtype) -> None:
    # cuDNN's fused flash attention takes half precision only, and a bounded head dim.
    if dtype not in (jnp.bfloat16, jnp.float16):
        raise ValueError(f"attention='cudnn' needs bfloat16 or float16 activations, not {dtype}")
    limit = 256 if _compute_capability() >= (9, 0) else 128
    if head_dim % 8 or head_dim > limit:
        raise ValueError(
            f"attention='cudnn' needs a head dim that is a multiple of 8 and at most {limit} "
            f"on this GPU, not {head_dim}"
        )


def _compute_capability() -> tuple[int, ...]:
    capability = getattr(jax.devices()[0], "compute_capability", None)
    if not capability:
        raise ValueError(
            "attention='cudnn' needs a CUDA GPU; this device reports no compute capability"
        )
    return tuple(int(part) for part in str(capability).split("."))


# --- implementations that need the whole sequence on one device -------------------------------


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


_WHOLE_SEQUENCE = {"flash": _flash, "cudnn": _cudnn}


def _per_shard(attention, impl: str, mesh: AbstractMesh | None, q, k, v, segment_ids):
    """Run `attention` on each device's shard of batch and heads (a Pallas or cuDNN call would
    otherwise be replicated by the partitioner: every device computing every head)."""
    if mesh is None:
        return attention(q, k, v, segment_ids)
    if mesh.shape.get(CONTEXT_AXIS, 1) > 1:
        raise ValueError(
            f"attention={impl!r} needs the whole sequence on each device, but the mesh splits it "
            f"{mesh.shape[CONTEXT_AXIS]} ways over {CONTEXT_AXIS!r}; use 'ring'"
        )
    # One spec for q, k and v: heads are split only when the kv heads divide, so each device's
    # query heads read exactly its own kv heads.
    spec = logical_to_spec(("batch", "seq", "act_kv_heads", None), k.shape, mesh)
    segment_spec = None if segment_ids is None else P(spec[0], spec[1])
    # check_vma=False: a pallas_call's outputs carry no record of which mesh axes they vary over.
    return jax.shard_map(
        attention,
        mesh=mesh,
        in_specs=(spec, spec, spec, segment_spec),
        out_specs=spec,
        check_vma=False,
    )(q, k, v, segment_ids)


def _mesh_in_context() -> AbstractMesh | None:
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh
