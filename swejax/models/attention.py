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
over the whole sequence), so a config with a ring runs unchanged on one device. `flash` and
`cudnn` run per shard of batch and heads under a mesh and refuse a sequence split over
`context` (each needs all keys on one device; that is what the ring is for).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float, Int
from swejax_kernels.reference import attention as _reference
from swejax_kernels.reference import cached_attention as _reference_cached
from swejax_kernels.ring import ring_attention

from swejax.sharding import LOGICAL_RULES, logical_to_spec

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

(_CONTEXT_AXIS,) = LOGICAL_RULES["seq"]


def check_attention(cfg: ModelConfig, backend: str | None = None) -> None:
    """Raise ValueError, with the reason, if `cfg.attention` cannot run on `backend`.

    `backend` is a JAX platform name ("cpu", "gpu", "tpu"); None means `jax.default_backend()`.
    """
    backend = jax.default_backend() if backend is None else backend
    _check(cfg.attention, backend, cfg.head_dim, jnp.dtype(cfg.dtype))


def attend(
    q: Float[Array, "B T Nq H"],
    k: Float[Array, "B S Nkv H"],
    v: Float[Array, "B S Nkv H"],
    segment_ids: Int[Array, "B T"] | None,
    *,
    impl: str,
) -> Float[Array, "B T Nq H"]:
    """Causal self-attention by the named implementation; one that cannot run here raises."""
    _check(impl, jax.default_backend(), q.shape[-1], q.dtype)
    mesh = _mesh_in_context()
    if impl == "reference":
        return _reference(q, k, v, causal=True, segment_ids=segment_ids)
    if impl in ("ring", "ring_reference"):
        return ring_attention(
            q,
            k,
            v,
            mesh=mesh,
            axis_name=_CONTEXT_AXIS,
            causal=True,
            segment_ids=segment_ids,
            block_impl="flash" if impl == "ring" else "reference",
            batch_axes=LOGICAL_RULES["batch"],
            head_axis=LOGICAL_RULES["act_kv_heads"][0],
        )
    return _per_shard(_WHOLE_SEQUENCE[impl], impl, mesh, q, k, v, segment_ids)


def attend_cached(
    q: Float[Array, "B T Nq H"],
    k_cache: Float[Array, "B C Nkv H"],
    v_cache: Float[Array, "B C Nkv H"],
    q_positions: Int[Array, "B T"],
    *,
    impl: str,
) -> Float[Array, "B T Nq H"]:
    """New tokens over a KV cache. Every `impl` uses the reference for now: the decode kernel
    (`swejax_kernels.decode`) is wired in separately, and `impl` names the training kernel."""
    del impl
    return _reference_cached(q, k_cache, v_cache, q_positions)


# --- checks -----------------------------------------------------------------------------------


def _check(impl: str, backend: str, head_dim: int, dtype: jnp.dtype) -> None:
    if impl not in _BACKENDS:
        raise ValueError(
            f"attention implementation {impl!r} is not available; have {sorted(_BACKENDS)}"
        )
    backends = _BACKENDS[impl]
    if backends is not None and backend not in backends:
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

    return flash_attention(q, k, v, causal=True, segment_ids=segment_ids, interpret=False)


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
    if mesh.shape.get(_CONTEXT_AXIS, 1) > 1:
        raise ValueError(
            f"attention={impl!r} needs the whole sequence on each device, but the mesh splits it "
            f"{mesh.shape[_CONTEXT_AXIS]} ways over {_CONTEXT_AXIS!r}; use 'ring'"
        )
    # One spec for q, k and v: heads are split only when the kv heads divide, so each device's
    # query heads read exactly its own kv heads.
    spec = logical_to_spec(("batch", "seq", "act_kv_heads", None), k.shape, mesh)
    segment_spec = None if segment_ids is None else P(spec[0], spec[1])
    return jax.shard_map(
        attention, mesh=mesh, in_specs=(spec, spec, spec, segment_spec), out_specs=spec
    )(q, k, v, segment_ids)


def _mesh_in_context() -> AbstractMesh | None:
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh
