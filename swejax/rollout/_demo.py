"""Demonstrations: gold patches written through the scaffold, as trajectories a policy could
have produced, so even a tiny model can learn the reply format and the tools before RL."""

from __future__ import annotations

from swejax.env.grading import grade
from swejax.env.scaffold import patch_commands, run_episode
from swejax.rl import episode_reward
from swejax.rollout._runner import RolloutConfig, observation_ids, prompt_ids
from swejax.rollout._trajectory import Trajectory
from swejax.tasks import Task
from swejax.tokenizer import im_end_id


def demonstration_replies(task: Task) -> list[str]:
    """Replies that apply the task's gold patch with the editor tools, then submit."""
    replies = [
        f"I will change the code to fix the issue.\n```command\n{command}\n```"
        for command in patch_commands(task.patch)
    ]
    return replies + ["The fix is in place.\n```command\nsubmit\n```"]


def demonstrate(task: Task, tokenizer, config: RolloutConfig, group: int = 0) -> Trajectory:
    """Run the demonstration through a real episode and lay its tokens out as a rollout would
    (reply tokens are encoded, not sampled: their logprobs are 0 and only RFT uses them)."""
    replies = iter(demonstration_replies(task))
    episode = run_episode(task, lambda e, o: next(replies), config.runtime, config.scaffold)
    trajectory = Trajectory(task.instance_id, group)
    trajectory.add_context(prompt_ids(tokenizer, episode))
    for index, step in enumerate(episode.steps):
        ids = [*tokenizer.encode(step.reply, add_special_tokens=False), im_end_id(tokenizer)]
        trajectory.add_sampled(ids, [0.0] * len(ids))
        if index < len(episode.steps) - 1:
            trajectory.add_context(observation_ids(tokenizer, step.observation, True))
    trajectory.end_reason = episode.end_reason.value
    trajectory.submission = episode.submission or ""
    result = grade(task, trajectory.submission, config.runtime)
    trajectory.resolved = result.resolved
    trajectory.infrastructure_error = result.infrastructure_error
    trajectory.reward = episode_reward(
        result.resolved, trajectory.num_turns, config.l_thr, config.scaffold.max_turns
    )
    return trajectory
