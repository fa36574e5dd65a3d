"""The one place that chooses an attention implementation (`ModelConfig.attention`)."""

from __future__ import annotations

from jaxtyping import Array, Float, Int
from swejax_kernels.reference import attention as _reference
from swejax_kernels.reference import cached_attention as _reference_cached

_SELF_ATTENTION = {"reference": _reference}
_CACHED_ATTENTION = {"reference": _reference_cached}


def _choose(table: dict, impl: str):
    if impl not in table:
        raise ValueError(
            f"attention implementation {impl!r} is not available; have {sorted(table)}"
        )
    return table[impl]


def attend(
    q: Float[Array, "B T Nq H"],
    k: Float[Array, "B S Nkv H"],
    v: Float[Array, "B S Nkv H"],
    segment_ids: Int[Array, "B T"] | None,
    *,
    impl: str,
) -> Float[Array, "B T Nq H"]:
    """Causal self-attention by the named implementation; an unknown name raises (no fallback)."""
    return _choose(_SELF_ATTENTION, impl)(q, k, v, causal=True, segment_ids=segment_ids)


def attend_cached(
    q: Float[Array, "B T Nq H"],
    k_cache: Float[Array, "B C Nkv H"],
    v_cache: Float[Array, "B C Nkv H"],
    q_positions: Int[Array, "B T"],
    *,
    impl: str,
) -> Float[Array, "B T Nq H"]:
    """New tokens over a KV cache by the named implementation; an unknown name raises."""
    return _choose(_CACHED_ATTENTION, impl)(q, k_cache, v_cache, q_positions)
