"""Rollouts: many episodes over the engine's slots, sandboxes stepped beside decoding, and the
`Trajectory` records they produce."""

from swejax.rollout._demo import demonstrate, demonstration_replies
from swejax.rollout._runner import (
    RolloutConfig,
    RolloutRunner,
    RolloutStats,
    observation_ids,
    prompt_ids,
)
from swejax.rollout._trajectory import Trajectory, read_trajectories, write_trajectory

__all__ = [
    "RolloutConfig",
    "RolloutRunner",
    "RolloutStats",
    "Trajectory",
    "demonstrate",
    "demonstration_replies",
    "observation_ids",
    "prompt_ids",
    "read_trajectories",
    "write_trajectory",
]
