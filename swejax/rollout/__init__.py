"""Rollouts: the episode loop, policies, many episodes over the engine's slots with sandboxes
stepped beside decoding, and the `Trajectory` records they produce.

    env = EpisodeEnv(runtime="bwrap", scaffold=ScaffoldConfig(), l_thr=10)
    result = run_episode(task, ScriptedPolicy(replies, tokenizer), env, tokenizer)
    runner = RolloutRunner(engine, tokenizer, RolloutConfig(), env)
    trajectories, stats = runner.run([(task, g) for g in range(10)], "iter_00000.jsonl")
"""

from swejax.config import RolloutConfig
from swejax.rollout._demo import demonstrate, demonstration_env, demonstration_replies
from swejax.rollout._episode import (
    EpisodeEnv,
    EpisodeResult,
    observation_ids,
    prompt_ids,
    run_episode,
)
from swejax.rollout._policy import Policy, Reply, ScriptedPolicy
from swejax.rollout._scheduler import RolloutRunner, RolloutStats
from swejax.rollout._trajectory import Trajectory, read_trajectories, write_trajectory

__all__ = [
    "EpisodeEnv",
    "EpisodeResult",
    "Policy",
    "Reply",
    "RolloutConfig",
    "RolloutRunner",
    "RolloutStats",
    "ScriptedPolicy",
    "Trajectory",
    "demonstrate",
    "demonstration_env",
    "demonstration_replies",
    "observation_ids",
    "prompt_ids",
    "read_trajectories",
    "run_episode",
    "write_trajectory",
]
