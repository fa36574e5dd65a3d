"""The one place that chooses an attention implementation (`ModelConfig.attention`)."""

from __future__ import annotations

from jaxtyping import Array, Float, Int
from swejax_kernels.reference import attention as _reference

_IMPLEMENTATIONS = {"reference": _reference}


def attend(
    q: Float[Array, "B T Nq H"],
    k: Float[Array, "B S Nkv H"],
    v: Float[Array, "B S Nkv H"],
    segment_ids: Int[Array, "B T"] | None,
    *,
    impl: str,
) -> Float[Array, "B T Nq H"]:
    """Causal self-attention by the named implementation; an unknown name raises (no fallback)."""
    if impl not in _IMPLEMENTATIONS:
        raise ValueError(
            f"attention implementation {impl!r} is not available; have {sorted(_IMPLEMENTATIONS)}"
        )
    return _IMPLEMENTATIONS[impl](q, k, v, causal=True, segment_ids=segment_ids)
