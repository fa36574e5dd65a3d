"""Grading a submission: resolved iff every FAIL_TO_PASS and PASS_TO_PASS test passes.

In a fresh sandbox over the task's repository at its base commit: apply the submitted diff with
every change to test files and test-runner configuration removed (so a submission cannot edit,
delete or short-circuit the tests), apply the task's test patch, run the listed tests, and read
per-test outcomes from pytest's JUnit report. A harness failure (sandbox error, a broken test
patch) is reported as such and never scored as a wrong answer.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shlex

from swejax.env._task_sandbox import task_sandbox
from swejax.env.junit import parse_junit
from swejax.env.sandbox import SandboxError, SandboxLimits
from swejax.env.swebench_logs import LogParserUnavailable, parse_test_log
from swejax.tasks import Task

# Files through which a submission could change how tests run or what they report.
_RUNNER_FILES = {
    "conftest.py",
    "pytest.ini",
    "tox.ini",
    "setup.cfg",
    "pyproject.toml",
    "sitecustomize.py",
    "usercustomize.py",
}
_SECTION = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)
_GRADING_LIMITS = SandboxLimits(timeout_seconds=600, output_bytes=20 * 2**20)


@dataclasses.dataclass(frozen=True)
class GradeResult:
    resolved: bool
    outcomes: dict[str, str]  # every listed test: passed | failed | error | skipped | missing
    patch_applied: bool
    dropped_files: tuple[str, ...]  # files of the submission that grading ignored
    infrastructure_error: str = ""  # non-empty: the harness failed; keep out of the reward
    log: str = ""  # the test run's output, for debugging


def split_patch(patch: str) -> list[tuple[str, str, str]]:
    """(old path, new path, section text) for each file of a unified git diff."""
    matches = list(_SECTION.finditer(patch))
    sections = []
    for k, match in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(patch)
        sections.append((match.group(1), match.group(2), patch[match.start() : end]))
    return sections


def _is_protected(path: str, test_files: set[str]) -> bool:
    name = os.path.basename(path)
    parts = path.split("/")
    return (
        path in test_files
        or name in _RUNNER_FILES
        or "tests" in parts[:-1]
        or name.startswith("test_")
        or name.endswith("_test.py")
    )


def filter_submission(patch: str, task: Task) -> tuple[str, tuple[str, ...]]:
    """The submission without changes to tests or test-runner files, and what was dropped."""
    protected = set(task.test_files)
    kept, dropped = [], []
    for old, new, text in split_patch(patch):
        if _is_protected(old, protected) or _is_protected(new, protected):
            dropped.append(new)
        else:
            kept.append(text if text.endswith("\n") else text + "\n")
    return "".join(kept), tuple(dropped)


def _apply(sandbox, patch: str, name: str) -> tuple[bool, str]:
    sandbox.write_file(name, patch)
    result = sandbox.run(f"git apply --whitespace=nowarn {name}; s=$?; rm -f {name}; exit $s")
    return result.exit_code == 0, result.output


def grade(task: Task, submission: str, runtime: str = "bwrap", timeout: float = 600) -> GradeResult:
    """Grade `submission` (a git diff of the repository) against `task`'s tests."""
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
            ok, output = _apply(sandbox, task.test_patch, ".swejax_test.patch")
            if not ok:
                return _infrastructure(tests, dropped, f"the test patch does not apply: {output}")
            return _run_tests(sandbox, task, tests, dropped, timeout)
    except SandboxError as error:
        return _infrastructure(tests, dropped, str(error))


def _run_tests_parsed(sandbox, task: Task, tests: list[str], dropped, timeout: float):
    """Run the tests and read the log with the swebench parser the task names."""
    marker = f"===swejax-exit-{secrets.token_hex(8)}==="
    command = (
        f"{task.test_command} {' '.join(shlex.quote(t) for t in tests)} > /tmp/log 2>&1;"
        f" echo {marker}$?; cat /tmp/log"
    )
    result = sandbox.run(command, timeout=timeout)
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
    command = (
        f"{task.test_command} --junitxml={report} {' '.join(shlex.quote(t) for t in tests)}"
        f" > /tmp/log 2>&1; echo {marker}; cat {report} 2>/dev/null; echo {marker}; cat /tmp/log"
    )
    result = sandbox.run(command, timeout=timeout)
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
