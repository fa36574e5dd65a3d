"""Rollouts: many episodes over the engine's slots, sandboxes stepped beside decoding, and the
`Trajectory` records they produce."""

from swejax.rollout._runner import RolloutConfig, RolloutRunner, RolloutStats
from swejax.rollout._trajectory import Trajectory, read_trajectories, write_trajectory

__all__ = [
    "RolloutConfig",
    "RolloutRunner",
    "RolloutStats",
    "Trajectory",
    "read_trajectories",
    "write_trajectory",
]
