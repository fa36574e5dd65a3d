"""The attention implementations `ModelConfig.attention` can name, and what each needs.

`ATTENTION_IMPLS` maps each name to an `AttentionImpl`. Everything that depends on the choice
reads it here: `ModelConfig` validates the name, `swejax.models.attention` checks that the
choice can run and dispatches on its kernel and its handling of the `context` mesh axis, the
model's cached layers decide by it whether one-token decode steps use the paged decode kernel,
and the memory planner (`swejax.memory_plan`, `tools/plan_memory.py`) counts its buffers by it.

This module imports no JAX at module level, so config validation stays light; only the cuDNN
capability check, which has to ask the device, imports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

# How an implementation treats a row whose sequence the mesh splits over its `context` axis.
RING = "ring"  # passes K/V round the axis (`swejax_kernels.ring`): only local blocks at once
GATHER = "gather"  # XLA's partitioner: each device's queries against all keys, gathered
WHOLE = "whole"  # needs every key on each device: refuses a split sequence
CONTEXT_MODES = (RING, GATHER, WHOLE)

# What computes attention on one device (for the ring: on each block). The flash kernel is the
# Pallas one, which Pallas's interpreter can also run on CPU.
KERNELS = ("reference", "flash", "cudnn")
PALLAS_KERNELS = ("flash",)


@dataclasses.dataclass(frozen=True)
class AttentionImpl:
    """One attention implementation and the facts about it that its users decide by."""

    name: str
    description: str
    backends: tuple[str, ...] | None  # JAX platforms it lowers on; None: any
    kernel: str  # one of KERNELS: what computes attention on a device (or a ring block)
    context: str  # one of CONTEXT_MODES: how it treats a sequence split over `context`
    quadratic: bool  # whether its memory grows with the square of the local sequence
    decode_kernel: bool  # whether one-token decode steps use the paged decode kernel
    # Raises ValueError with the reason if (head_dim, dtype) cannot run; None: nothing beyond
    # the backend to check.
    capability_check: Callable[[int, Any], None] | None = None

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"{self.name}: kernel={self.kernel!r}; choose one of {KERNELS}")
        if self.context not in CONTEXT_MODES:
            raise ValueError(
                f"{self.name}: context={self.context!r}; choose one of {CONTEXT_MODES}"
            )

    @property
    def pallas(self) -> bool:
        """A Pallas kernel: Pallas's interpreter can run it on any backend, CPU included."""
        return self.kernel in PALLAS_KERNELS

    @property
    def ring(self) -> bool:
        """Splits the sequence over `context`; the model keeps its tokens in the ring's order."""
        return self.context == RING

    @property
    def whole_sequence(self) -> bool:
        """Needs the whole sequence on each device: refuses `context` > 1."""
        return self.context == WHOLE

    def check(self, backend: str, head_dim: int, dtype: Any, *, interpret: bool = False) -> None:
        """Raise ValueError, with the reason, if this cannot run on `backend` (a JAX platform
        name) at `head_dim` and `dtype`; `interpret`: Pallas kernels run in the interpreter."""
        runs_anywhere = self.backends is None or (interpret and self.pallas)
        if not runs_anywhere and backend not in self.backends:
            anywhere = [repr(i.name) for i in ATTENTION_IMPLS.values() if i.backends is None]
            hint = f" (on CPU use {' or '.join(anywhere)})" if backend == "cpu" else ""
            raise ValueError(
                f"attention={self.name!r} runs on {' or '.join(self.backends)}, "
                f"not on {backend!r}{hint}"
            )
        if self.capability_check is not None:
            self.capability_check(head_dim, dtype)

    def check_context(self, context: int, axis: str = "context") -> None:
        """Raise ValueError if a mesh that splits the sequence `context` ways over `axis` is one
        this implementation cannot run on."""
        if self.whole_sequence and context != 1:
            rings = " or ".join(repr(impl.name) for impl in ATTENTION_IMPLS.values() if impl.ring)
            raise ValueError(
                f"attention={self.name!r} needs the whole sequence on each device, but the mesh "
                f"splits it {context} ways over {axis!r}; use {rings}"
            )


def _cudnn_capability(head_dim: int, dtype: Any) -> None:
    # cuDNN's fused flash attention takes half precision only, and a bounded head dim.
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.bfloat16, jnp.float16):
        raise ValueError(f"attention='cudnn' needs bfloat16 or float16 activations, not {dtype}")
    capability = getattr(jax.devices()[0], "compute_capability", None)
    if not capability:
        raise ValueError(
            "attention='cudnn' needs a CUDA GPU; this device reports no compute capability"
        )
    limit = 256 if tuple(int(part) for part in str(capability).split(".")) >= (9, 0) else 128
    if head_dim % 8 or head_dim > limit:
        raise ValueError(
            f"attention='cudnn' needs a head dim that is a multiple of 8 and at most {limit} "
            f"on this GPU, not {head_dim}"
        )


_IMPLS = (
    AttentionImpl(
        name="reference",
        description="plain XLA (swejax_kernels.reference), float32 softmax",
        backends=None,
        kernel="reference",
        context=GATHER,
        # float32 scores [B, N, T_local, T]: all keys are gathered.
        quadratic=True,
        decode_kernel=False,
    ),
    AttentionImpl(
        name="flash",
        description="the Pallas flash kernel (swejax_kernels.flash), per shard of batch and heads",
        backends=("gpu", "tpu"),
        kernel="flash",
        context=WHOLE,
        quadratic=False,  # the row log-sum-exp and output accumulator; tiles stay on chip
        decode_kernel=True,
    ),
    AttentionImpl(
        name="ring",
        description="ring attention over the context mesh axis with flash blocks",
        backends=("gpu", "tpu"),
        kernel="flash",
        context=RING,
        quadratic=False,
        decode_kernel=True,
    ),
    AttentionImpl(
        name="ring_reference",
        description="the same ring with plain jnp blocks (what the CPU tests run)",
        backends=None,
        kernel="reference",
        context=RING,
        # float32 blocks [B, N, T_local, T_local]: quadratic in the local length only.
        quadratic=True,
        decode_kernel=False,
    ),
    AttentionImpl(
        name="cudnn",
        description=(
            "cuDNN's fused attention via jax.nn.dot_product_attention: CUDA GPUs, half "
            "precision, head dims that are multiples of 8 up to 128 (256 from Hopper on)"
        ),
        backends=("gpu",),
        kernel="cudnn",
        context=WHOLE,
        # Flash-like scores, but packed rows' segments go in as a dense [B, 1, T, S] bool mask.
        quadratic=True,
        decode_kernel=False,
        capability_check=_cudnn_capability,
    ),
)

ATTENTION_IMPLS: dict[str, AttentionImpl] = {impl.name: impl for impl in _IMPLS}


def attention_impl(name: str) -> AttentionImpl:
    """The registered implementation called `name`; ValueError, listing them, if there is none."""
    if name not in ATTENTION_IMPLS:
        raise ValueError(
            f"attention implementation {name!r} is not available; have {sorted(ATTENTION_IMPLS)}"
        )
    return ATTENTION_IMPLS[name]
