"""Demonstrations: gold patches written through the scaffold, as trajectories a policy could
have produced, so even a tiny model can learn the reply format and the tools before RL."""

from __future__ import annotations

from swejax.env.scaffold import patch_commands
from swejax.rollout._episode import EpisodeEnv, run_episode
from swejax.rollout._policy import ScriptedPolicy
from swejax.rollout._trajectory import Trajectory
from swejax.tasks import Task


def demonstration_replies(task: Task) -> list[str]:
    """Replies that apply the task's gold patch with the editor tools, then submit."""
    replies = [
        f"I will change the code to fix the issue.\n```command\n{command}\n```"
        for command in patch_commands(task.patch)
    ]
    return replies + ["The fix is in place.\n```command\nsubmit\n```"]


def demonstrate(task: Task, tokenizer, env: EpisodeEnv, group: int = 0) -> Trajectory:
    """The gold patch played through a real episode, laid out token for token as a rollout
    would be (the replies are encoded, not sampled: their logprobs are 0 and only RFT uses
    them)."""
    policy = ScriptedPolicy(demonstration_replies(task), tokenizer)
    return run_episode(task, policy, env, tokenizer, group).trajectory
