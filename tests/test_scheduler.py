"""The rollout scheduler over a scripted stand-in for the engine: every job runs, slots are
reused, strict alternation gives the same episodes, a failing episode stops the rollout
without a hang, and a prompt that cannot fit is a harness error, not a crash."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from swejax.config import EngineConfig, RolloutConfig, ScaffoldConfig
from swejax.env.grading import GradeResult
from swejax.env.sandbox import bwrap_available
from swejax.rollout import EpisodeEnv, RolloutRunner
from swejax.sampling import DecodeResult, Fed, Preemption, StopReason, stream_id
from swejax.tasks import builtin_tasks
from swejax.tokenizer import im_end_id, load_tokenizer

if not bwrap_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install bubblewrap (see .ci/run)")
    pytest.skip("bubblewrap is not installed", allow_module_level=True)

TOKENIZER = load_tokenizer()
IM_END = im_end_id(TOKENIZER)
TASKS = builtin_tasks()[:3]


class ScriptedEngine:
    """The engine's slot API over host lists: every reply is `reply_text`, sampled at once.
    With `defer_first`, each prompt and observation is deferred the first time it is fed (as
    a pool without room does)."""

    collective = False

    def __init__(self, num_slots: int, capacity: int, reply_text: str, defer_first=False):
        self.config = EngineConfig(num_slots=num_slots, capacity=capacity, stop_tokens=(IM_END,))
        self.preemption = Preemption()
        self.defer_first, self.deferred = defer_first, []
        self.reply = [*TOKENIZER.encode(reply_text, add_special_tokens=False), IM_END]
        self.lengths = [0] * num_slots
        self.budget: dict[int, int] = {}
        self.calls: list[tuple[str, int]] = []
        self.streams: list[int | None] = []

    def _fill(self, slot: int, ids, start: int) -> bool:
        if start + len(ids) > self.config.capacity:
            return False
        self.lengths[slot] = start + len(ids)
        return True

    @property
    def local_slots(self):
        return tuple(range(self.config.num_slots))

    def feed(self, starts, extends) -> Fed:
        if self.defer_first:
            fresh = [(s, list(ids)) for s, ids, *_ in [*starts, *extends]]
            fresh = [r for r in fresh if r not in self.deferred]
            if fresh:
                self.deferred += fresh
                return Fed(frozenset(), frozenset(slot for slot, _ in fresh))
        refused = set()
        for slot, ids, stream in starts:
            self.calls.append(("prefill", slot))
            self.streams.append(stream)
            if not self._fill(slot, ids, 0):
                refused.add(slot)
        for slot, ids in extends:
            self.calls.append(("extend", slot))
            if not self._fill(slot, ids, self.lengths[slot]):
                refused.add(slot)
        return Fed(frozenset(refused), frozenset())

    def length(self, slot) -> int:
        return self.lengths[slot]

    def start_turn(self, slot, max_tokens) -> None:
        self.budget[slot] = max_tokens

    def decode(self) -> DecodeResult:
        slots = self.config.num_slots
        tokens = [np.zeros(0, np.int32) for _ in range(slots)]
        stopped, reasons = np.zeros(slots, bool), np.zeros(slots, np.int32)
        for slot, budget in self.budget.items():
            tokens[slot] = np.asarray(self.reply[:budget], np.int32)
            self.lengths[slot] += len(tokens[slot])
            stopped[slot] = True
            reasons[slot] = (
                StopReason.STOP_TOKEN if budget >= len(self.reply) else StopReason.BUDGET
            )
        self.budget = {}
        return DecodeResult(
            tokens, [np.zeros(len(t), np.float32) for t in tokens], stopped, reasons
        )

    def free(self, slot) -> None:
        self.calls.append(("free", slot))
        self.lengths[slot] = 0


def _not_graded(task, submission, runtime) -> GradeResult:
    return GradeResult(False, {}, True, ())


def _runner(engine, grader=_not_graded, overlap=True, max_turns=2):
    env = EpisodeEnv("bwrap", ScaffoldConfig(max_turns=max_turns), l_thr=1, grader=grader)
    return RolloutRunner(
        engine, TOKENIZER, RolloutConfig(max_reply_tokens=64, workers=2), env, overlap
    )


def _by_job(trajectories):
    return {(t.task_id, t.group): t for t in trajectories}


def test_every_job_runs_on_the_slots_and_alternation_gives_the_same_episodes():
    jobs = [(task, group) for task in TASKS for group in range(2)]  # 6 jobs on 2 slots
    engine = ScriptedEngine(2, 4096, "Look first.\n```command\nls\n```")
    overlapped, stats = _runner(engine).run(jobs)
    assert sorted(_by_job(overlapped)) == sorted((t.instance_id, g) for t, g in jobs)
    assert [kind for kind, _ in engine.calls].count("prefill") == 6  # a slot per job
    assert {slot for _, slot in engine.calls} == {0, 1}
    for t in overlapped:  # two turns of `ls`, the prompt and an observation in between
        assert t.end_reason == "turn_limit" and t.num_turns == 2 and not t.infrastructure_error
        assert t.tokens.count(IM_END) >= 3 and t.reward == -1.0
    assert stats.trajectories == 6 and stats.sampled_tokens == 12 * len(engine.reply)
    alternating, stats = _runner(
        ScriptedEngine(2, 4096, "Look first.\n```command\nls\n```"), overlap=False
    ).run(jobs)
    for job, t in _by_job(alternating).items():
        assert t.tokens == _by_job(overlapped)[job].tokens
    # Trajectories come back in job order, each sequence drawn from its job's own stream.
    assert [(t.task_id, t.group) for t in overlapped] == [(t.instance_id, g) for t, g in jobs]
    expected = {stream_id(t.instance_id, g) for t, g in jobs}
    assert set(engine.streams) == expected and len(engine.streams) == 6


def test_what_the_pool_defers_is_fed_again_and_the_episodes_are_the_same():
    jobs = [(task, group) for task in TASKS[:2] for group in range(2)]
    reply = "Look first.\n```command\nls\n```"
    plain, _ = _runner(ScriptedEngine(2, 4096, reply)).run(jobs)
    engine = ScriptedEngine(2, 4096, reply, defer_first=True)
    deferred, _ = _runner(engine).run(jobs)
    assert len(engine.deferred) == 4 * 2  # each prompt and each observation, once
    assert [t.tokens for t in deferred] == [t.tokens for t in plain]
    assert all(t.end_reason == "turn_limit" for t in deferred)


def test_jobs_must_be_distinct_and_the_draw_names_the_streams():
    engine = ScriptedEngine(2, 4096, "```command\nsubmit\n```")
    with pytest.raises(ValueError, match="distinct"):
        _runner(engine).run([(TASKS[0], 0), (TASKS[0], 0)])
    _runner(engine).run([(TASKS[0], 0), (TASKS[0], 1)], draw=("dapo", 3))
    # Episodes reach the engine in thread order, so compare the streams as a set.
    assert sorted(engine.streams) == sorted(
        stream_id("dapo", 3, TASKS[0].instance_id, g) for g in (0, 1)
    )


def test_a_failing_episode_stops_the_rollout_and_no_thread_is_left_waiting():
    def grader(task, submission, runtime):
        if task.instance_id == TASKS[1].instance_id:
            raise RuntimeError("the grader broke")
        time.sleep(0.2)
        return _not_graded(task, submission, runtime)

    before = threading.active_count()
    engine = ScriptedEngine(3, 4096, "Done.\n```command\nsubmit\n```")
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="the grader broke"):
        _runner(engine, grader).run([(task, g) for task in TASKS for g in range(2)])
    assert time.perf_counter() - started < 60
    assert threading.active_count() == before  # every episode thread has ended


def test_a_prompt_longer_than_the_context_is_a_harness_error():
    engine = ScriptedEngine(1, 64, "```command\nsubmit\n```")
    (t,), _ = _runner(engine).run([(TASKS[0], 0)])
    assert t.end_reason == "context_full" and "do not fit" in t.infrastructure_error
    assert t.tokens == [] and t.reward == 0.0


def test_a_context_that_fills_during_a_reply_ends_the_episode_with_the_reply_kept():
    engine = ScriptedEngine(1, 4096, "```command\nls\n```")
    prompt_only = _runner(engine).run([(TASKS[0], 0)])[0][0].turns[0][0]
    capacity = prompt_only + 3  # room for three reply tokens
    (t,), _ = _runner(ScriptedEngine(1, capacity, "```command\nls\n```")).run([(TASKS[0], 0)])
    assert t.end_reason == "context_full" and t.num_turns == 1 and len(t.tokens) == capacity
    assert not t.infrastructure_error
