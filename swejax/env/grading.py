"""Grading a submission.

SWE-bench-family tasks (SWE-bench, its newer records, SWE-rebench) are graded exactly as their
harness grades them, in their images (swejax.env.harness). swejax's own tasks (built-in and
synthesized): in a fresh sandbox over the task's repository at its base commit, apply the
submitted diff less its changes to protected paths (swejax.env._protected: the tests and how
they run), apply the task's test patch, run the listed tests, and read per-test outcomes from
pytest's JUnit report; resolved iff every FAIL_TO_PASS and PASS_TO_PASS test passes. A harness
failure (sandbox error, a broken test patch) is reported as such, never scored as a wrong answer.
"""

from __future__ import annotations

import collections
import dataclasses
import secrets
import shlex
import threading
from collections.abc import Callable
from concurrent.futures import Future

from swejax.env import harness
from swejax.env._protected import filter_submission
from swejax.env._task_sandbox import task_sandbox
from swejax.env.junit import parse_junit
from swejax.env.sandbox import SandboxError, SandboxLimits
from swejax.env.swebench_logs import LogParserUnavailable, parse_test_log
from swejax.tasks import Task

__all__ = ["GradeMemo", "GradeResult", "eval_script", "filter_submission", "grade"]
_GRADING_LIMITS = SandboxLimits(timeout_seconds=600, output_bytes=20 * 2**20)


@dataclasses.dataclass(frozen=True)
class GradeResult:
    resolved: bool
    outcomes: dict[str, str]  # every listed test: passed | failed | error | skipped | missing
    patch_applied: bool
    dropped_files: tuple[str, ...]  # files of the submission that grading ignored
    infrastructure_error: str = ""  # non-empty: the harness failed; keep out of the reward
    log: str = ""  # the test run's output, for debugging


def _apply(sandbox, patch: str, name: str) -> tuple[bool, str]:
    sandbox.write_file(name, patch)
    result = sandbox.run(f"git apply --whitespace=nowarn {name}; s=$?; rm -f {name}; exit $s")
    return result.exit_code == 0, result.output


def grade(
    task: Task, submission: str, runtime: str = "bwrap", timeout: float | None = None
) -> GradeResult:
    """Grade `submission` (a git diff of the repository) against `task`'s tests; `timeout`
    bounds the test run (default: the harness's 1800 s for the SWE-bench family, else 600 s)."""
    if harness.in_swebench_family(task):
        if runtime != "docker":
            raise harness.HarnessError(_NEEDS_DOCKER.format(task.instance_id))
        return harness.grade_in_image(task, submission, timeout)
    kept, dropped = filter_submission(submission, task)
    tests = [*task.FAIL_TO_PASS, *task.PASS_TO_PASS]
    try:
        with task_sandbox(task, runtime, _GRADING_LIMITS) as sandbox:
            # A runner that cannot start would look like a submission that broke the tests.
            runner = sandbox.run(f"{task.test_command} --version", timeout=120)
            if runner.exit_code != 0:
                return _infrastructure(
                    tests, dropped, f"the test runner does not start: {runner.output[-500:]}"
                )
            applied = True
            if kept.strip():
                applied, _ = _apply(sandbox, kept, ".swejax_submission.patch")
            if not applied:
                return GradeResult(False, dict.fromkeys(tests, "missing"), False, dropped)
            if task.test_patch.strip():  # synthesized tasks keep the package's tests as they are
                ok, output = _apply(sandbox, task.test_patch, ".swejax_test.patch")
                if not ok:
                    message = f"the test patch does not apply: {output}"
                    return _infrastructure(tests, dropped, message)
            return _run_tests(sandbox, task, tests, dropped, timeout or 600)
    except SandboxError as error:
        return _infrastructure(tests, dropped, str(error))


_NEEDS_DOCKER = (
    "task {} is graded by the SWE-bench harness in its docker image; the bwrap runtime cannot "
    "run it: use tasks.runtime=docker"
)


def eval_script(task: Task) -> str:
    """The script grading runs for `task`: for the SWE-bench family exactly the harness's
    /eval.sh; for swejax's own tasks the same steps as `grade` after the submission is applied
    (start the runner, apply the test patch, run the listed tests with a JUnit report)."""
    if harness.in_swebench_family(task):
        return harness.eval_script(task)
    tests = [*task.FAIL_TO_PASS, *task.PASS_TO_PASS]
    delimiter = "EOF_SWEJAX_TEST_PATCH"
    apply_test_patch = [
        f"git apply --whitespace=nowarn - <<'{delimiter}' || exit 3",
        task.test_patch.rstrip("\n"),
        delimiter,
    ]
    return "\n".join(
        [
            "#!/bin/bash",
            "set -uo pipefail",
            f"cd {task.workdir}",
            f"{task.test_command} --version || exit 3",
            *(apply_test_patch if task.test_patch.strip() else []),
            _test_command(task, tests, "/tmp/swejax-report.xml", "===swejax-exit==="),
            "",
        ]
    )


def _test_command(task: Task, tests: list[str], report: str, marker: str) -> str:
    """The test run: with a log parser, the log behind the exit status; else JUnit's report
    between two markers, then the log."""
    names = " ".join(shlex.quote(t) for t in tests)
    if task.log_parser:
        return f"{task.test_command} {names} > /tmp/log 2>&1; echo {marker}$?; cat /tmp/log"
    return (
        f"{task.test_command} --junitxml={report} {names} > /tmp/log 2>&1;"
        f" echo {marker}; cat {report} 2>/dev/null; echo {marker}; cat /tmp/log"
    )


def _run_tests_parsed(sandbox, task: Task, tests: list[str], dropped, timeout: float):
    """Run the tests and read the log with the swebench parser the task names."""
    marker = f"===swejax-exit-{secrets.token_hex(8)}==="
    result = sandbox.run(_test_command(task, tests, "", marker), timeout=timeout)
    _, _, log = result.output.partition(marker)
    status, _, log = log.partition("\n")
    if result.timed_out or not status.strip().isdigit():
        return GradeResult(False, dict.fromkeys(tests, "missing"), True, dropped, log=log[-5000:])
    try:
        reported = parse_test_log(task, log, int(status))
    except LogParserUnavailable as error:
        return _infrastructure(tests, dropped, str(error))
    outcomes = {test: reported.get(test, "missing") for test in tests}
    resolved = all(outcome == "passed" for outcome in outcomes.values())
    return GradeResult(resolved, outcomes, True, dropped, log=log[-5000:])


def _run_tests(sandbox, task: Task, tests: list[str], dropped, timeout: float) -> GradeResult:
    if task.log_parser:
        return _run_tests_parsed(sandbox, task, tests, dropped, timeout)
    # The report goes to a name the code under test cannot guess, read back in the same command.
    report = f"/tmp/report-{secrets.token_hex(8)}.xml"
    marker = f"===swejax-report-{secrets.token_hex(8)}==="
    result = sandbox.run(_test_command(task, tests, report, marker), timeout=timeout)
    parts = result.output.split(marker + "\n")
    if result.timed_out or len(parts) < 3 or not parts[1].strip():
        # No report: the tests hung or crashed the runner. The submission's fault, not ours.
        outcomes = dict.fromkeys(tests, "missing")
        return GradeResult(False, outcomes, True, dropped, log=result.output[-5000:])
    reported = parse_junit(parts[1])
    outcomes = {test: reported.get(test, "missing") for test in tests}
    resolved = all(outcome == "passed" for outcome in outcomes.values())
    return GradeResult(resolved, outcomes, True, dropped, log=parts[2][-5000:])


def _infrastructure(tests: list[str], dropped, message: str) -> GradeResult:
    return GradeResult(
        False, dict.fromkeys(tests, "missing"), False, dropped, infrastructure_error=message
    )


class GradeMemo:
    """`grade`, run once for each distinct (task, submission, runtime) and remembered: a run's
    episodes often submit the same diff (every success of a group that found one fix; an empty
    diff for each episode that never edited), and its grade does not change. Harness failures
    are never remembered. A thread that asks for a diff being graded waits for that grade
    rather than start its own. At most `max_entries` grades are kept, the oldest dropped."""

    def __init__(self, grader: Callable[..., GradeResult] = grade, max_entries: int = 1024):
        self._grader = grader
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._grades: collections.OrderedDict[tuple, Future] = collections.OrderedDict()
        self.graded = 0  # grades run
        self.remembered = 0  # grades answered from memory

    def __call__(self, task: Task, submission: str, runtime: str = "bwrap") -> GradeResult:
        key = (task.instance_id, task.base_commit, submission, runtime)
        with self._lock:
            earlier = self._grades.get(key)
            if earlier is None:
                mine = self._grades[key] = Future()
                while len(self._grades) > self._max_entries:
                    self._grades.popitem(last=False)
            else:
                self._grades.move_to_end(key)
        if earlier is not None:
            result = _result_or_none(earlier)
            if result is not None and not result.infrastructure_error:
                with self._lock:
                    self.remembered += 1
                return result
            return self._grade(task, submission, runtime)  # that grade failed: run one
        try:
            result = self._grade(task, submission, runtime)
        except BaseException as error:
            self._forget(key)
            mine.set_exception(error)
            raise
        if result.infrastructure_error:
            self._forget(key)
        mine.set_result(result)
        return result

    def _grade(self, task: Task, submission: str, runtime: str) -> GradeResult:
        with self._lock:
            self.graded += 1
        return self._grader(task, submission, runtime)

    def _forget(self, key: tuple) -> None:
        with self._lock:
            self._grades.pop(key, None)


def _result_or_none(future: Future) -> GradeResult | None:
    try:
        return future.result()
    except Exception:  # the first grader's error is its own to report
        return None
