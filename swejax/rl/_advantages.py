"""Group-relative advantages and the zero-advantage filter of DAPO (docs/method.md, steps 4-5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def group_advantages(
    rewards: Sequence[float], group_ids: Sequence[object], delta: float = 1e-6
) -> np.ndarray:
    """A_i = (R_i - mean(R_g)) / (std(R_g) + delta) over the trajectories of i's group g.

    std is the population standard deviation (numpy's default): a group whose rewards are all
    equal gets advantage exactly 0 everywhere, whatever its size.
    """
    rewards = np.asarray(rewards, np.float64)
    if rewards.ndim != 1 or len(rewards) != len(group_ids):
        raise ValueError(f"{len(rewards)} rewards for {len(group_ids)} group ids")
    if not np.all(np.isfinite(rewards)):
        raise ValueError("rewards must be finite")
    advantages = np.zeros_like(rewards)
    groups: dict[object, list[int]] = {}
    for index, group in enumerate(group_ids):
        groups.setdefault(group, []).append(index)
    for members in groups.values():
        group_rewards = rewards[members]
        centered = group_rewards - group_rewards.mean()
        # Exactly equal rewards: 0, not a rounding residue divided by delta.
        if np.all(group_rewards == group_rewards[0]):
            centered = np.zeros_like(centered)
        advantages[members] = centered / (group_rewards.std() + delta)
    return advantages


def keep_nonzero(advantages: np.ndarray) -> np.ndarray:
    """Which trajectories train: those with a non-zero advantage (no refill: docs/method.md,
    step 5)."""
    return np.asarray(advantages) != 0.0
