"""Demonstrations: gold patches written through the scaffold, as trajectories a policy could
have produced, so even a tiny model can learn the reply format and the tools before RL.

A demonstration can also take the long way to the same fix (a detour): it first looks at the
code for a few turns, then edits and submits. Under a turn limit too short for the detour, a
policy that learned both ways fails whenever it takes the long one; which way it takes is
the first decision of the episode, the same in every task, and DAPO's reward can teach it.
"""

from __future__ import annotations

import dataclasses
import itertools
import posixpath

from swejax.env.scaffold import patch_commands
from swejax.rollout._episode import EpisodeEnv, run_episode
from swejax.rollout._policy import ScriptedPolicy
from swejax.rollout._trajectory import Trajectory
from swejax.tasks import Task, patch_files


def detour_replies(task: Task, turns: int) -> list[str]:
    """`turns` replies that only look around, with short outputs (a detour must fit the
    context next to the fix): list the repository, count the lines of the file to fix, list
    its folder, and round again."""
    if turns <= 0:
        return []
    files = patch_files(task.patch)  # before the fix: a renamed file's old name
    if not files:
        raise ValueError(f"{task.instance_id}: its gold patch changes no file")
    path = files[0]
    looks = (
        ("Let me list the files first.", "ls"),
        ("Let me see how long the file is.", f"wc -l {path}"),
        ("Let me list its folder.", f"ls {posixpath.dirname(path) or '.'}"),
    )
    return [
        f"{text}\n```command\n{command}\n```"
        for text, command in itertools.islice(itertools.cycle(looks), turns)
    ]


def demonstration_replies(task: Task, detour: int = 0) -> list[str]:
    """Replies that apply the task's gold patch with the editor tools, then submit; with
    `detour` > 0, after that many replies that only look at the code."""
    replies = [
        f"I will change the code to fix the issue.\n```command\n{command}\n```"
        for command in patch_commands(task.patch)
    ]
    return (
        detour_replies(task, detour) + replies + ["The fix is in place.\n```command\nsubmit\n```"]
    )


def demonstration_env(env: EpisodeEnv, tasks: list[Task], detour: int) -> EpisodeEnv:
    """`env` with a turn limit that fits every demonstration: its own, or with detours the
    longest demonstration's if that is longer (a detour can be longer than the agent's
    budget). Without detours `env` is returned as it is: a demonstration longer than the turn
    limit is cut off there, like an agent's episode."""
    if detour <= 0:
        return env
    longest = max(len(demonstration_replies(task, detour)) for task in tasks)
    turns = max(env.scaffold.max_turns, longest)
    return dataclasses.replace(env, scaffold=dataclasses.replace(env.scaffold, max_turns=turns))


def demonstrate(
    task: Task, tokenizer, env: EpisodeEnv, group: int = 0, detour: int = 0
) -> Trajectory:
    """The gold patch played through a real episode, laid out token for token as a rollout
    would be (the replies are encoded, not sampled: their logprobs are 0 and only RFT uses
    them)."""
    policy = ScriptedPolicy(demonstration_replies(task, detour), tokenizer)
    return run_episode(task, policy, env, tokenizer, group).trajectory
