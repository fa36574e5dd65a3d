"""Per-test outcomes from a test log, by the `swebench` package's parsers (an optional extra:
`pip install 'swejax[swebench]'`), for SWE-bench-family tasks whose records name a `log_parser`.

Parsers read what the test runner printed, and a submission can print too; so, as the SWE-bench
harness does, a run whose command failed while its log reports no failure is not trusted.
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


def _parser(name: str):
    try:
        from swebench.harness.log_parsers import PARSER_REGISTRY
    except ImportError as error:
        raise LogParserUnavailable(
            f"the task's log parser {name!r} needs the swebench package: "
            "pip install 'swejax[swebench]'"
        ) from error
    if name not in PARSER_REGISTRY:
        raise LogParserUnavailable(f"swebench has no log parser named {name!r}")
    return PARSER_REGISTRY[name]


def _test_spec(task: Task):
    from swebench.types import TestSpec

    return TestSpec(
        instance_id=task.instance_id,
        image=task.docker_image,
        eval_script_list=[],
        repo=task.repo,
        version=task.version,
        FAIL_TO_PASS=list(task.FAIL_TO_PASS),
        PASS_TO_PASS=list(task.PASS_TO_PASS),
        log_parser=task.log_parser,
    )


def parse_test_log(task: Task, log: str, exit_code: int) -> dict[str, str]:
    """Outcome of every test the log mentions; {} when the log cannot be trusted."""
    statuses = _parser(task.log_parser)(log, _test_spec(task))
    outcomes = {test: _OUTCOMES.get(status, "error") for test, status in statuses.items()}
    if exit_code != 0 and not any(o in ("failed", "error") for o in outcomes.values()):
        return {}
    return outcomes
