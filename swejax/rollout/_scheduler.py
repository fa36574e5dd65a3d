"""Many episodes at once over one engine's slots, sandboxes stepped while other slots decode.

Each episode is the straight-line loop of `swejax.rollout._episode`, run in a thread of its own
with a policy bound to one engine slot. The policy's calls (`start`, `observe`, `reply`) are
requests to the main thread, which owns the engine: it feeds prompts and observations into
their slots (prefill, extend: the prefix is never recomputed), starts each requested reply,
and decodes every slot that is sampling in one call. A slot whose reply ends answers its
episode, which runs the command in its sandbox while the other slots keep decoding. A finished
episode is written to disk at once, and its slot takes the next job.

Reproducible whatever the timing: an episode's tokens are drawn from its own stream, named by
the rollout's `draw` (phase, iteration) and the job (task, sample), so which slot it gets and
when its turns are decoded do not change what it samples; and the trajectories come back, and
end up in the file, in the order of the jobs.

Many processes: each runs its own jobs on its own slots (`Engine.local_slots`), and its
sandboxes on its own host. An engine on the process's own devices (the rollout layout) is
driven by that process alone, at its own pace. A collective engine (decoding over the training
layout, a mesh spanning processes) needs every process in every call: then each round all
processes agree (one small all-gather) on whether any has prompts or observations to feed and
slots to decode, and make those engine calls together, a process with nothing ready taking
part with no rows; the rollout ends when every process has finished its jobs.

A prompt or observation the engine's page pool has no room for now is fed again in the next
rounds (`Engine.feed` defers it) while other episodes move on; the engine preempts episodes
rather than cutting any short, and what it moved is counted in `RolloutStats`.

The time the main thread waits with no slot sampling is the accelerator's idle time, reported
in `RolloutStats`. With `overlap=False` the main thread instead waits for every episode to be
back before each decode call (strict alternation): the baseline tools/bench_rollout.py measures
the overlap against.
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from swejax import distributed
from swejax.config import RolloutConfig
from swejax.rollout._episode import EpisodeEnv, run_episode
from swejax.rollout._policy import Reply
from swejax.rollout._trajectory import Trajectory, rewrite_trajectories, write_trajectory
from swejax.sampling import Engine, StopReason, stream_id
from swejax.tasks import Task
from swejax.tokenizer import im_end_id


@dataclasses.dataclass
class RolloutStats:
    wall_s: float = 0.0
    decode_s: float = 0.0  # inside engine calls (decode, prefill, extend)
    idle_s: float = 0.0  # no slot sampling: the main thread waits on sandboxes
    trajectories: int = 0
    sampled_tokens: int = 0
    model_tokens: int = 0  # tokens run through the model: equals the trajectories' lengths
    preemptions: int = 0  # episodes swapped out of the KV pool for want of pages
    swapped_tokens: int = 0  # tokens whose keys and values moved out or back in
    swap_s: float = 0.0
    # The decode copy of the weights the rollout ran on (swejax.sampling.decode_weights),
    # per device: 0 where the training state was decoded in place.
    copy_bytes: int = 0
    copy_s: float = 0.0

    @property
    def idle_fraction(self) -> float:
        return self.idle_s / self.wall_s if self.wall_s else 0.0


_POLL_S = 0.5  # how often a waiting episode checks whether the rollout stopped
_ROUND_WAIT_S = 0.02  # with other processes: the longest a round waits for a local request


class _Aborted(Exception):
    """The rollout stopped (an error elsewhere, or an interrupt): unwind this episode."""


@dataclasses.dataclass
class _Request:
    kind: str  # "start", "observe", "reply", or "done" / "failed" when the episode ends
    slot: int
    # (ids, stream) for start, ids for observe; the trajectory or the exception at the end
    payload: object = None
    answer: futures.Future = dataclasses.field(default_factory=futures.Future)


class _SlotPolicy:
    """An episode's policy over one engine slot: each call waits for the main thread."""

    def __init__(self, slot: int, stream: int, requests: queue.Queue, stopped: threading.Event):
        self.slot, self.stream = slot, stream
        self._requests, self._stopped = requests, stopped

    def _ask(self, kind: str, payload=None):
        request = _Request(kind, self.slot, payload)
        self._requests.put(request)
        while True:  # a request made after the rollout stopped is never answered
            try:
                return request.answer.result(timeout=_POLL_S)
            except futures.TimeoutError:
                if self._stopped.is_set():
                    raise _Aborted() from None

    def start(self, prompt: Sequence[int]) -> bool:
        return self._ask("start", (list(prompt), self.stream))

    def observe(self, ids: Sequence[int]) -> bool:
        return self._ask("observe", list(ids))

    def reply(self) -> Reply:
        return self._ask("reply")


@dataclasses.dataclass
class _Sampling:
    """A reply being decoded in a slot."""

    request: _Request
    ids: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)


class RolloutRunner:
    """Runs (task, group) jobs over `engine`'s slots; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        tokenizer,
        rollout: RolloutConfig,
        env: EpisodeEnv,
        overlap: bool = True,
    ):
        if im_end_id(tokenizer) not in engine.config.stop_tokens:
            raise ValueError("the engine must stop on <|im_end|> (EngineConfig.stop_tokens)")
        self.engine, self.tokenizer, self.rollout = engine, tokenizer, rollout
        gate = threading.Semaphore(rollout.workers)
        self.env = dataclasses.replace(env, sandbox_gate=gate)
        self.overlap = overlap
        self.im_end = im_end_id(tokenizer)
        self._stats = RolloutStats()

    @property
    def stats(self) -> RolloutStats:
        """The counts of the rollout in progress (read between episodes, e.g. in
        `on_trajectory`, for progress), else of the last one."""
        return self._stats

    def run(
        self,
        jobs: Sequence[tuple[Task, int]],
        output_path: str | None = None,
        on_trajectory: Callable[[Trajectory], None] | None = None,
        draw: tuple[str | int, ...] = (),
    ) -> tuple[list[Trajectory], RolloutStats]:
        """Roll out every job; each finished trajectory is appended to `output_path` at once,
        and the file is rewritten in job order once all are done. `draw` names the rollout's
        random streams (e.g. ("dapo", iteration)); job (task, g) samples from
        `stream_id(*draw, task id, g)`."""
        self._stats, started = RolloutStats(), time.perf_counter()
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._sampling: dict[int, _Sampling] = {}
        self._deferred: list[_Request] = []  # prompts and observations the pool had no room for
        self._waiting = 0  # episodes whose request is not answered yet
        moved_before = dataclasses.replace(self.engine.preemption)
        stopped = threading.Event()
        jobs = list(jobs)
        order = {(task.instance_id, group): i for i, (task, group) in enumerate(jobs)}
        if len(order) != len(jobs):
            raise ValueError("a rollout's jobs must be distinct (task, sample) pairs")
        waiting_jobs, free = jobs[::-1], list(self.engine.local_slots)[::-1]
        live, finished = 0, []
        pool = futures.ThreadPoolExecutor(len(free), "episode")
        self._elsewhere = False  # another process sampled in the last round
        try:
            while True:
                while waiting_jobs and free:
                    task, group = waiting_jobs.pop()
                    stream = stream_id(*draw, task.instance_id, group)
                    policy = _SlotPolicy(free.pop(), stream, self._requests, stopped)
                    pool.submit(self._episode, task, group, policy)
                    live += 1
                starts = [r for r in self._deferred if r.kind == "start"]
                extends = [r for r in self._deferred if r.kind == "observe"]
                self._deferred = []
                for request in self._gather(live):
                    if request.kind == "failed":
                        raise request.payload
                    if request.kind == "done":
                        finished.append(request.payload)
                        if output_path:
                            write_trajectory(output_path, request.payload)
                        if on_trajectory:
                            on_trajectory(request.payload)
                        self.engine.free(request.slot)
                        free.append(request.slot)
                        live -= 1
                    elif request.kind == "reply":
                        self._start_reply(request)
                    else:
                        (starts if request.kind == "start" else extends).append(request)
                unfinished = bool(waiting_jobs or live)
                round_ = self._agree(unfinished, len(starts) + len(extends), len(self._sampling))
                if not round_.unfinished:
                    break
                if round_.fills:
                    self._feed(starts, extends)
                if round_.sampling:
                    self._decode()
                self._elsewhere = round_.sampling > len(self._sampling)
        finally:
            stopped.set()
            self._abort_waiting()
            pool.shutdown(wait=True)
        finished.sort(key=lambda t: order[t.task_id, t.group])
        if output_path:
            rewrite_trajectories(output_path, finished)
        self._stats.wall_s = time.perf_counter() - started
        self._stats.trajectories = len(finished)
        moved, before = self.engine.preemption, moved_before
        self._stats.preemptions = moved.preemptions - before.preemptions
        self._stats.swapped_tokens = (
            moved.swapped_out_tokens
            + moved.swapped_in_tokens
            - before.swapped_out_tokens
            - before.swapped_in_tokens
        )
        self._stats.swap_s = moved.seconds - before.seconds
        return finished, self._stats

    # --- the episodes' side ------------------------------------------------------------------

    def _episode(self, task: Task, group: int, policy: _SlotPolicy) -> None:
        try:
            result = run_episode(task, policy, self.env, self.tokenizer, group)
        except _Aborted:
            return
        except BaseException as error:  # a bug: the main thread re-raises it
            self._requests.put(_Request("failed", policy.slot, error))
            return
        self._requests.put(_Request("done", policy.slot, result.trajectory))

    # --- the engine's side -------------------------------------------------------------------

    def _gather(self, live: int) -> list[_Request]:
        """The requests that have arrived; waits for one when no slot samples (or, without
        overlap, until every live episode has asked). With other processes a wait is short
        (`_ROUND_WAIT_S`): they may need this one in the next round's calls."""
        arrived = []
        alone = not self.engine.collective

        def wait_for_one() -> None:
            waited = time.perf_counter()
            try:
                arrived.append(self._requests.get(timeout=None if alone else _ROUND_WAIT_S))
            except queue.Empty:
                return
            finally:
                self._stats.idle_s += time.perf_counter() - waited
            self._count(arrived[-1])

        if not self._sampling and not self._elsewhere and (live or alone):
            wait_for_one()
        while not self.overlap and self._waiting < live and not _ended(arrived):
            wait_for_one()
            if not alone:
                break
        while True:
            try:
                arrived.append(self._requests.get_nowait())
            except queue.Empty:
                return arrived
            self._count(arrived[-1])

    def _count(self, request: _Request) -> None:
        if request.kind in ("start", "observe", "reply"):
            self._waiting += 1

    def _answer(self, request: _Request, value) -> None:
        self._waiting -= 1
        request.answer.set_result(value)

    def _engine_call(self, fn, *args):
        begun = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._stats.decode_s += time.perf_counter() - begun

    def _start_reply(self, request: _Request) -> None:
        slot = request.slot
        room = self.engine.config.capacity - self.engine.length(slot)
        if room <= 0:
            self._answer(request, Reply([], [], "", context_full=True))
            return
        budget = min(self.rollout.max_reply_tokens, room)
        self._engine_call(self.engine.start_turn, slot, budget)
        self._sampling[slot] = _Sampling(request)

    def _feed(self, starts: list[_Request], extends: list[_Request]) -> None:
        """Prompts and observations into their slots, in one set of ingest calls (collective
        on a collective engine); a request beyond its slot's capacity is answered False, one
        the pool has no room for now waits for the next round."""
        fed = self._engine_call(
            self.engine.feed,
            [(r.slot, *r.payload) for r in starts],
            [(r.slot, r.payload) for r in extends],
        )
        for request in starts + extends:
            if request.slot in fed.deferred:
                self._deferred.append(request)
                continue
            ok = request.slot not in fed.refused
            if ok:  # the prompt's last token is fed by the first decode step
                ids = request.payload[0] if request.kind == "start" else request.payload
                self._stats.model_tokens += len(ids) - (request.kind == "start")
            self._answer(request, ok)

    def _decode(self) -> None:
        result = self._engine_call(self.engine.decode)
        for slot, reply in list(self._sampling.items()):
            tokens = result.tokens[slot]
            reply.ids += tokens.tolist()
            reply.logprobs += result.logprobs[slot].tolist()
            self._stats.sampled_tokens += len(tokens)
            self._stats.model_tokens += len(tokens)
            if not result.stopped[slot]:
                continue
            del self._sampling[slot]
            reason = StopReason(int(result.reasons[slot]))
            full = reason == StopReason.CONTEXT_FULL
            text_ids = reply.ids[:-1] if reply.ids and reply.ids[-1] == self.im_end else reply.ids
            text = self.tokenizer.decode(text_ids)
            self._answer(reply.request, Reply(reply.ids, reply.logprobs, text, full))

    def _agree(self, unfinished: bool, fills: int, sampling: int) -> _Round:
        """This round's work: over all processes for a collective engine (each process runs
        the same device calls), else this process's own."""
        local = np.array([unfinished, fills, sampling], np.int64)
        if not self.engine.collective:
            return _Round(*(int(x) for x in local))
        return _Round(*(int(x) for x in distributed.allgather(local).sum(axis=0)))

    def _abort_waiting(self) -> None:
        """Unblock every episode still waiting on the engine, so its thread unwinds (and closes
        its sandbox) when the rollout stops early."""
        for reply in self._sampling.values():
            reply.request.answer.set_exception(_Aborted())
        self._sampling.clear()
        for request in self._deferred:
            request.answer.set_exception(_Aborted())
        self._deferred.clear()
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if not request.answer.done():
                request.answer.set_exception(_Aborted())


@dataclasses.dataclass(frozen=True)
class _Round:
    """What every process's rollout has this round, summed over processes."""

    unfinished: int  # processes with jobs waiting or episodes live
    fills: int  # prompts and observations to feed
    sampling: int  # slots decoding


def _ended(requests: list[_Request]) -> bool:
    """Whether an episode ended among `requests` (the live count is then stale)."""
    return any(r.kind in ("done", "failed") for r in requests)
