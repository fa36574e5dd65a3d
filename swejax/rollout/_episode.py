"""One episode, start to end: the loop every rollout, demonstration and scripted test runs.

    prompt -> reply -> run its command -> observation -> reply -> ... -> grade -> reward

The policy holds the context (`swejax.rollout._policy`); the episode (`swejax.env.scaffold`)
owns the sandbox, the turn limit and `submit`. The trajectory records the exact ids the policy
was given and produced, in order. An episode ends when the agent submits, at the turn limit,
when the context is full, or when its sandbox fails; the last is an infrastructure error, kept
out of the reward.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable

from swejax.config import ScaffoldConfig
from swejax.env.grading import GradeResult, grade
from swejax.env.sandbox import SandboxError
from swejax.env.scaffold import EndReason, Episode, open_episode
from swejax.rl import episode_reward
from swejax.rollout._policy import Policy
from swejax.rollout._trajectory import Trajectory
from swejax.tasks import Task
from swejax.tokenizer import generation_prompt, im_end_id, render_conversation, render_turn

Grader = Callable[[Task, str, str], GradeResult]


@dataclasses.dataclass(frozen=True)
class EpisodeEnv:
    """The environment side of an episode: where its commands run, the scaffold, and how the
    result is scored."""

    runtime: str  # sandbox runtime: bwrap or docker
    scaffold: ScaffoldConfig
    l_thr: int  # length penalty: none below this many turns
    grader: Grader = grade
    # Sandbox work (setup, commands, grading) of this many episodes at once; None: no limit.
    sandbox_gate: threading.Semaphore | None = dataclasses.field(default=None, compare=False)

    def gate(self) -> contextlib.AbstractContextManager:
        return self.sandbox_gate or contextlib.nullcontext()


@dataclasses.dataclass
class EpisodeResult:
    trajectory: Trajectory
    episode: Episode | None  # None when the sandbox did not start


def prompt_ids(tokenizer, episode: Episode) -> list[int]:
    """The system prompt and the task, then the header of the first reply."""
    messages = [
        {"role": "system", "content": episode.system_prompt},
        {"role": "user", "content": episode.first_message},
    ]
    return render_conversation(tokenizer, messages, add_generation_prompt=True).ids


def observation_ids(tokenizer, observation: str, reply_closed: bool) -> list[int]:
    """What follows a reply: its turn's end (`<|im_end|>` too, if the reply was cut off before
    sampling it), the observation as a user turn, and the header of the next reply."""
    ids = [] if reply_closed else [im_end_id(tokenizer)]
    ids += tokenizer.encode("\n", add_special_tokens=False)
    ids += render_turn(tokenizer, "observation", observation).ids
    return ids + generation_prompt(tokenizer)


def run_episode(
    task: Task, policy: Policy, env: EpisodeEnv, tokenizer, group: int = 0
) -> EpisodeResult:
    """Play `task` with `policy` in a fresh sandbox, grade the submission, score it."""
    trajectory = Trajectory(task.instance_id, group)
    with contextlib.ExitStack() as stack:
        try:
            with env.gate():
                episode = stack.enter_context(open_episode(task, env.runtime, env.scaffold))
        except SandboxError as error:  # no image, setup failed: the harness, not the policy
            trajectory.end_reason = EndReason.SANDBOX_ERROR.value
            trajectory.infrastructure_error = str(error)
            return EpisodeResult(trajectory, None)
        prompt = prompt_ids(tokenizer, episode)
        if not policy.start(prompt):
            trajectory.end_reason = EndReason.CONTEXT_FULL.value
            trajectory.infrastructure_error = f"the prompt's {len(prompt)} tokens do not fit"
            return EpisodeResult(trajectory, episode)
        trajectory.add_context(prompt)
        _play(episode, policy, env, tokenizer, trajectory)
    # The episode's sandbox is closed; grading takes a fresh one.
    _score(task, episode, env, trajectory)
    return EpisodeResult(trajectory, episode)


def _play(episode: Episode, policy: Policy, env: EpisodeEnv, tokenizer, trajectory) -> None:
    """Replies and observations until the episode ends."""
    im_end = im_end_id(tokenizer)
    while not episode.done:
        reply = policy.reply()
        if reply.ids:
            trajectory.add_sampled(reply.ids, reply.logprobs)
        if reply.context_full:
            episode.end(EndReason.CONTEXT_FULL)
            break
        with env.gate():
            step = episode.step(reply.text)
        if step.format_error is not None:
            trajectory.format_error_turns.append(trajectory.num_turns - 1)
        if episode.done:
            break
        closed = trajectory.tokens[-1] == im_end
        ids = observation_ids(tokenizer, step.observation, closed)
        if not policy.observe(ids):
            episode.end(EndReason.CONTEXT_FULL)
            break
        trajectory.add_context(ids)


def _score(task: Task, episode: Episode, env: EpisodeEnv, trajectory: Trajectory) -> None:
    trajectory.end_reason = episode.end_reason.value
    trajectory.submission = episode.submission or ""
    if episode.end_reason is EndReason.SANDBOX_ERROR:
        trajectory.infrastructure_error = episode.error or "sandbox failed"
        return
    with env.gate():
        result = env.grader(task, trajectory.submission, env.runtime)
    trajectory.resolved = result.resolved
    trajectory.infrastructure_error = result.infrastructure_error
    trajectory.reward = episode_reward(
        result.resolved, trajectory.num_turns, env.l_thr, env.scaffold.max_turns
    )
