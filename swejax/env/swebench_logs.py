"""Per-test outcomes from a test log, by the `swebench` package's parsers (the extra
`pip install 'swejax[swebench]'`, swebench 4.1.0), for swejax's own tasks whose records name a
`log_parser`. (SWE-bench-family tasks are read by their harness: swejax.env.harness.)

Parsers read what the test runner printed, and a submission can print too; so a run whose
command failed while its log reports no failure is not trusted.
"""

from __future__ import annotations

from swejax.tasks import Task

# swebench's statuses -> the outcomes grading reports.
_OUTCOMES = {
    "PASSED": "passed",
    "XFAIL": "passed",
    "FAILED": "failed",
    "ERROR": "error",
    "SKIPPED": "skipped",
}


class LogParserUnavailable(RuntimeError):
    """The swebench package, or the parser a task names, is not available."""


def outcome_of(status: str | None) -> str:
    """A swebench status (None: the log does not mention the test) as a grading outcome."""
    return "missing" if status is None else _OUTCOMES.get(status, "error")


def _parser(task: Task):
    from swejax.env.harness import HarnessError, parser_named

    try:
        return parser_named(task, task.log_parser)
    except HarnessError as error:
        raise LogParserUnavailable(str(error)) from error


def _test_spec(task: Task):
    """What swebench's parsers are handed besides the log (a few read its instance_id)."""
    from swebench.harness.test_spec.test_spec import TestSpec

    return TestSpec(
        instance_id=task.instance_id,
        repo=task.repo,
        version=task.version,
        repo_script_list=[],
        eval_script_list=[],
        env_script_list=[],
        arch="x86_64",
        FAIL_TO_PASS=list(task.FAIL_TO_PASS),
        PASS_TO_PASS=list(task.PASS_TO_PASS),
        language="py",
        docker_specs={},
        namespace=None,
    )


def parse_test_log(task: Task, log: str, exit_code: int) -> dict[str, str]:
    """Outcome of every test the log mentions; {} when the log cannot be trusted."""
    statuses = _parser(task)(log, _test_spec(task))
    outcomes = {test: outcome_of(status) for test, status in statuses.items()}
    if exit_code != 0 and not any(o in ("failed", "error") for o in outcomes.values()):
        return {}
    return outcomes
