"""GradeMemo: one grade per distinct (task, diff, runtime), never a remembered harness failure."""

import threading
import time

import pytest

from swejax.builder import episode_env
from swejax.config import Config
from swejax.env.grading import GradeMemo, GradeResult, grade
from swejax.env.sandbox import bwrap_available
from swejax.tasks import builtin_tasks

TASKS = builtin_tasks()


class CountingGrader:
    """Resolved iff the diff is "fix"; counts calls; can fail, raise or take its time."""

    def __init__(self, infrastructure_error: str = "", raises: bool = False, delay: float = 0.0):
        self.calls: list[tuple[str, str, str]] = []
        self.infrastructure_error = infrastructure_error
        self.raises = raises
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, task, submission, runtime="bwrap"):
        with self.lock:
            self.calls.append((task.instance_id, submission, runtime))
        time.sleep(self.delay)
        if self.raises:
            raise RuntimeError("grader broke")
        return GradeResult(submission == "fix", {}, True, (), self.infrastructure_error)


def test_each_distinct_submission_is_graded_once():
    grader = CountingGrader()
    memo = GradeMemo(grader)
    first, second = TASKS[0], TASKS[1]
    results = [memo(first, "fix"), memo(first, "fix"), memo(first, ""), memo(second, "fix")]
    results.append(memo(first, "fix", "docker"))
    assert [r.resolved for r in results] == [True, True, False, True, True]
    assert grader.calls == [
        (first.instance_id, "fix", "bwrap"),
        (first.instance_id, "", "bwrap"),
        (second.instance_id, "fix", "bwrap"),
        (first.instance_id, "fix", "docker"),
    ]
    assert (memo.graded, memo.remembered) == (4, 1)


def test_harness_failures_and_errors_are_not_remembered():
    failing = CountingGrader(infrastructure_error="sandbox died")
    memo = GradeMemo(failing)
    assert memo(TASKS[0], "fix").infrastructure_error == "sandbox died"
    memo(TASKS[0], "fix")
    assert len(failing.calls) == 2
    raising = CountingGrader(raises=True)
    memo = GradeMemo(raising)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="grader broke"):
            memo(TASKS[0], "fix")
    assert len(raising.calls) == 2


def test_the_oldest_grade_is_dropped_past_the_limit():
    grader = CountingGrader()
    memo = GradeMemo(grader, max_entries=2)
    for diff in ("a", "b", "a", "c", "a", "b"):
        memo(TASKS[0], diff)
    # a, b graded; a remembered; c evicts b (a was used last); a remembered; b graded again.
    assert [call[1] for call in grader.calls] == ["a", "b", "c", "b"]


def test_concurrent_requests_for_one_diff_share_one_grade():
    grader = CountingGrader(delay=0.3)
    memo = GradeMemo(grader)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(memo(TASKS[0], "fix"))) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(grader.calls) == 1 and len(results) == 6 and all(r.resolved for r in results)


def test_a_run_grades_through_one_memo():
    env = episode_env(Config())
    assert isinstance(env.grader, GradeMemo)


@pytest.mark.skipif(not bwrap_available(), reason="needs bubblewrap")
def test_a_remembered_grade_equals_a_fresh_one():
    task = TASKS[0]
    memo = GradeMemo()
    for diff in (task.patch, ""):
        remembered = [memo(task, diff, "bwrap") for _ in range(2)]
        assert remembered[0] is remembered[1]
        fresh = grade(task, diff, "bwrap")
        assert (remembered[0].resolved, remembered[0].outcomes) == (fresh.resolved, fresh.outcomes)
    assert (memo.graded, memo.remembered) == (2, 2)
