"""Rotary position embeddings (half-rotation layout, as Qwen2) with optional YaRN scaling."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from swejax.models.config import YarnScaling


def _yarn_inv_freq(inv_freq: np.ndarray, dim: int, theta: float, s: YarnScaling) -> np.ndarray:
    """Blend interpolated and extrapolated frequencies by YaRN's linear ramp over dimensions."""

    def correction_dim(num_rotations: float) -> float:
        ratio = s.original_max_position_embeddings / (num_rotations * 2 * math.pi)
        return dim * math.log(ratio) / (2 * math.log(theta))

    low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid dividing by zero in the ramp
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extrapolate = 1 - ramp  # 1: keep the original frequency (high-frequency dims)
    interpolated = inv_freq / s.factor
    return interpolated * (1 - extrapolate) + inv_freq * extrapolate


def rope_frequencies(
    head_dim: int, theta: float, scaling: YarnScaling | None
) -> tuple[np.ndarray, float]:
    """Inverse frequencies [head_dim / 2] and the factor that scales cos and sin."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / head_dim
    inv_freq = (1.0 / (theta**exponents)).astype(np.float32)
    if scaling is None:
        return inv_freq, 1.0
    attention_factor = scaling.attention_factor
    if attention_factor is None:
        attention_factor = 0.1 * math.log(scaling.factor) + 1.0 if scaling.factor > 1 else 1.0
    return _yarn_inv_freq(inv_freq, head_dim, theta, scaling).astype(np.float32), attention_factor


class RotaryTables(NamedTuple):
    """cos and sin of every (token, frequency), scaled; computed once per forward, not per layer."""

    cos: Float[Array, "B T H2"]
    sin: Float[Array, "B T H2"]


def rotary_tables(
    positions: Int[Array, "B T"], head_dim: int, theta: float, scaling: YarnScaling | None
) -> RotaryTables:
    inv_freq, attention_factor = rope_frequencies(head_dim, theta, scaling)
    angles = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)  # [B, T, H/2]
    return RotaryTables(jnp.cos(angles) * attention_factor, jnp.sin(angles) * attention_factor)


def apply_rope(x: Float[Array, "B T N H"], tables: RotaryTables) -> Float[Array, "B T N H"]:
    """Rotate pairs (i, i + H/2) of each head by position * frequency, in float32."""
    cos, sin = tables.cos[:, :, None, :], tables.sin[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)
