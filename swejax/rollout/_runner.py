"""Many episodes at once over the engine's slots, with sandboxes stepped beside decoding.

The main thread owns the engine: it decodes every slot that is sampling a reply. A slot whose
reply ends hands it to a thread pool, which runs the command in the episode's sandbox while the
other slots keep decoding; when the observation is back, the main thread appends it to the
slot's cache with `extend` (never recomputing the earlier turns) and starts the next reply. A
finished episode is graded in the pool, written to disk as a `Trajectory`, and its slot takes
the next job. The time the main thread waits with no slot sampling is the accelerator's idle
time, reported in `RolloutStats`.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence

from swejax.env.grading import grade
from swejax.env.sandbox import SandboxError
from swejax.env.scaffold import EndReason, Episode, ScaffoldConfig, open_episode
from swejax.rl import episode_reward
from swejax.rollout._trajectory import Trajectory, write_trajectory
from swejax.sampling import ContextFull, Engine, StopReason
from swejax.tasks import Task
from swejax.tokenizer import generation_prompt, im_end_id, render_conversation, render_turn


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    runtime: str = "bwrap"
    max_reply_tokens: int = 1024  # per assistant turn
    workers: int = 8  # threads stepping sandboxes and grading
    l_thr: int = 10  # length penalty: no penalty below this many turns
    scaffold: ScaffoldConfig = ScaffoldConfig()
    # Step sandboxes while other slots decode. False waits for every pending sandbox before
    # each decode call (strict alternation): the baseline tools/bench_rollout.py compares with.
    overlap: bool = True


@dataclasses.dataclass
class RolloutStats:
    wall_s: float = 0.0
    decode_s: float = 0.0  # inside engine calls (decode, prefill, extend)
    idle_s: float = 0.0  # no slot sampling: the main thread waits on sandboxes
    trajectories: int = 0
    sampled_tokens: int = 0
    model_tokens: int = 0  # tokens run through the model: equals the trajectories' lengths

    @property
    def idle_fraction(self) -> float:
        return self.idle_s / self.wall_s if self.wall_s else 0.0


@dataclasses.dataclass
class _Slot:
    task: Task
    group: int
    trajectory: Trajectory
    episode: Episode | None = None  # None while its sandbox opens
    close: Callable[[], None] = lambda: None
    sampling: bool = False  # between start_turn and the end of the reply
    reply_ids: list[int] = dataclasses.field(default_factory=list)
    reply_logprobs: list[float] = dataclasses.field(default_factory=list)


def _open(task: Task, config: RolloutConfig) -> tuple[Episode, Callable[[], None]]:
    """An open episode and the function that closes its sandbox (runs in the pool)."""
    stack = contextlib.ExitStack()
    episode = stack.enter_context(open_episode(task, config.runtime, config.scaffold))
    return episode, stack.close


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


class RolloutRunner:
    """Runs (task, group) jobs over `engine`'s slots; see the module docstring."""

    def __init__(self, engine: Engine, tokenizer, config: RolloutConfig, grader=grade):
        if im_end_id(tokenizer) not in engine.config.stop_tokens:
            raise ValueError("the engine must stop on <|im_end|> (EngineConfig.stop_tokens)")
        self.engine, self.tokenizer, self.config, self.grader = engine, tokenizer, config, grader
        self.im_end = im_end_id(tokenizer)

    def run(
        self,
        jobs: Sequence[tuple[Task, int]],
        output_path: str | None = None,
        on_trajectory: Callable[[Trajectory], None] | None = None,
    ) -> tuple[list[Trajectory], RolloutStats]:
        """Roll out every job; each finished trajectory is appended to `output_path` at once."""
        stats = RolloutStats()
        start = time.perf_counter()
        queue = list(jobs)[::-1]
        slots: dict[int, _Slot] = {}
        free = list(range(self.engine.config.num_slots))[::-1]
        pending: dict[futures.Future, tuple[str, int]] = {}  # future -> (kind, slot)
        finished: list[Trajectory] = []
        with futures.ThreadPoolExecutor(self.config.workers) as pool:
            while queue or slots or pending:
                while queue and free:
                    task, group = queue.pop()
                    slot = free.pop()
                    pending[pool.submit(_open, task, self.config)] = ("open", slot)
                    slots[slot] = _Slot(task, group, Trajectory(task.instance_id, group))
                for future in [f for f in pending if f.done()]:
                    kind, slot = pending.pop(future)
                    result = self._handle(kind, slot, slots, future, pool, pending, stats)
                    if result is not None:  # a graded trajectory
                        finished.append(result)
                        if output_path:
                            write_trajectory(output_path, result)
                        if on_trajectory:
                            on_trajectory(result)
                        del slots[slot]
                        self.engine.free(slot)
                        free.append(slot)
                if pending and not self.config.overlap:
                    waited = time.perf_counter()
                    futures.wait(pending, return_when=futures.ALL_COMPLETED)
                    stats.idle_s += time.perf_counter() - waited
                    continue
                if any(s.sampling for s in slots.values()):
                    self._decode(slots, pool, pending, stats)
                elif pending:
                    waited = time.perf_counter()
                    futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                    stats.idle_s += time.perf_counter() - waited
        stats.wall_s = time.perf_counter() - start
        stats.trajectories = len(finished)
        return finished, stats

    # --- the slot state machine -------------------------------------------------------------

    def _handle(self, kind, slot, slots, future, pool, pending, stats):
        state = slots[slot]
        if kind == "open":
            try:
                state.episode, state.close = future.result()
            except SandboxError as error:  # no image, setup failed: the harness, not the policy
                state.trajectory.end_reason = EndReason.SANDBOX_ERROR.value
                state.trajectory.infrastructure_error = str(error)
                return state.trajectory
            self._start(slot, state, stats)
        elif kind == "step":
            step = future.result()
            if step.format_error is not None:
                state.trajectory.format_error_turns.append(state.trajectory.num_turns - 1)
            if state.episode.done:
                pending[pool.submit(self._finish, state)] = ("finish", slot)
            else:
                self._continue(slot, state, pool, pending, stats)
        elif kind == "finish":
            return future.result()
        return None

    def _engine_call(self, stats: RolloutStats, fn, *args):
        begun = time.perf_counter()
        try:
            return fn(*args)
        finally:
            stats.decode_s += time.perf_counter() - begun

    def _start(self, slot: int, state: _Slot, stats: RolloutStats) -> None:
        ids = prompt_ids(self.tokenizer, state.episode)
        state.trajectory.add_context(ids)
        self._engine_call(stats, self.engine.prefill, slot, ids)
        stats.model_tokens += len(ids) - 1  # the last is fed by the first decode step
        self._start_turn(slot, state, stats)

    def _start_turn(self, slot: int, state: _Slot, stats: RolloutStats) -> None:
        room = self.engine.config.capacity - self.engine.length(slot)
        self._engine_call(
            stats, self.engine.start_turn, slot, max(1, min(self.config.max_reply_tokens, room))
        )
        state.sampling = True

    def _decode(self, slots, pool, pending, stats) -> None:
        result = self._engine_call(stats, self.engine.decode)
        for slot, state in slots.items():
            if not state.sampling:
                continue
            tokens = result.tokens[slot]
            if len(tokens):
                state.reply_ids += tokens.tolist()
                state.reply_logprobs += result.logprobs[slot].tolist()
                stats.sampled_tokens += len(tokens)
                stats.model_tokens += len(tokens)
            if not result.stopped[slot]:
                continue
            state.sampling = False
            reason = StopReason(int(result.reasons[slot]))
            reply_ids, reply_logprobs = state.reply_ids, state.reply_logprobs
            state.reply_ids, state.reply_logprobs = [], []
            state.trajectory.add_sampled(reply_ids, reply_logprobs)
            if reason in (StopReason.CONTEXT_FULL, StopReason.OUT_OF_PAGES):
                state.episode.end(EndReason.CONTEXT_FULL)
                pending[pool.submit(self._finish, state)] = ("finish", slot)
                continue
            text_ids = reply_ids[:-1] if reply_ids and reply_ids[-1] == self.im_end else reply_ids
            reply = self.tokenizer.decode(text_ids)
            pending[pool.submit(state.episode.step, reply)] = ("step", slot)

    def _continue(self, slot, state: _Slot, pool, pending, stats) -> None:
        """Append the observation (closing the reply's turn if it was cut short), then sample."""
        closed = state.trajectory.tokens[-1] == self.im_end
        ids = observation_ids(self.tokenizer, state.episode.steps[-1].observation, closed)
        try:
            self._engine_call(stats, self.engine.extend, slot, ids)
        except ContextFull:
            state.episode.end(EndReason.CONTEXT_FULL)
            pending[pool.submit(self._finish, state)] = ("finish", slot)
            return
        state.trajectory.add_context(ids)
        stats.model_tokens += len(ids)
        if self.engine.length(slot) >= self.engine.config.capacity:
            state.episode.end(EndReason.CONTEXT_FULL)
            pending[pool.submit(self._finish, state)] = ("finish", slot)
            return
        self._start_turn(slot, state, stats)

    def _finish(self, state: _Slot) -> Trajectory:
        """Grade the episode, close its sandbox, and fill in the trajectory (in the pool)."""
        trajectory, episode = state.trajectory, state.episode
        try:
            trajectory.end_reason = episode.end_reason.value
            trajectory.submission = episode.submission or ""
            if episode.end_reason is EndReason.SANDBOX_ERROR:
                trajectory.infrastructure_error = episode.error or "sandbox failed"
            else:
                result = self.grader(state.task, trajectory.submission, self.config.runtime)
                trajectory.resolved = result.resolved
                trajectory.infrastructure_error = result.infrastructure_error
                trajectory.reward = episode_reward(
                    result.resolved,
                    trajectory.num_turns,
                    self.config.l_thr,
                    self.config.scaffold.max_turns,
                )
        finally:
            state.close()
        return trajectory
