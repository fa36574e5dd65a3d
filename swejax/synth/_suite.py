"""Running a package's tests in the sandbox and reading back, per test, what happened."""

from __future__ import annotations

import dataclasses
import os
import secrets
import shlex
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

from swejax.env.junit import _node_id, parse_junit

# Exit status 1 of pytest: it ran, and some tests failed. 0: all passed.
_RAN = (0, 1)


@dataclasses.dataclass(frozen=True)
class SuiteRun:
    outcomes: Mapping[str, str]  # node id -> passed | failed | error | skipped
    failures: Mapping[str, str]  # node id -> the report's traceback text (or its message)
    collection_errors: int  # test modules that did not import
    exit_code: int
    timed_out: bool
    seconds: float
    log: str  # the end of pytest's own output, for error messages

    @property
    def ran(self) -> bool:
        return not self.timed_out and self.exit_code in _RAN and bool(self.outcomes)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The unmutated suite: which tests pass every time, when run by their ids."""

    found: int  # test cases in the first run's report
    passing: tuple[str, ...]  # passed in every run
    flaky: tuple[str, ...]  # passed in some runs, not in others
    unselectable: tuple[str, ...]  # passed, but not when named by the id the report gives
    collection_errors: int
    seconds: float  # the first, whole-suite run


def run_pytest(sandbox, command: str, args: Sequence[str], timeout: float) -> SuiteRun:
    """`command ARGS` with a JUnit report, in `sandbox`. The report goes to the sandbox's own
    temporary folder and is printed back by the same command (each command is a new container)."""
    report = f"/tmp/report-{secrets.token_hex(8)}.xml"
    marker = f"===swejax-synth-{secrets.token_hex(8)}==="
    quoted = " ".join(shlex.quote(a) for a in args)
    script = (
        f"{command} --continue-on-collection-errors --junitxml={report} {quoted}"
        f" > /tmp/log 2>&1; echo {marker}$?; cat {report} 2>/dev/null; echo {marker};"
        " tail -c 3000 /tmp/log"
    )
    result = sandbox.run(script, timeout=timeout)
    head, _, rest = result.output.partition(marker)
    status, _, rest = rest.partition("\n")
    xml_text, _, log = rest.partition(marker + "\n")
    exit_code = int(status) if status.strip().isdigit() else -1
    outcomes, failures, collection = _read_report(xml_text)
    return SuiteRun(
        outcomes, failures, collection, exit_code, result.timed_out, result.seconds, log or head
    )


def _read_report(xml_text: str) -> tuple[dict[str, str], dict[str, str], int]:
    if not xml_text.strip():
        return {}, {}, 0
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return {}, {}, 0
    outcomes = parse_junit(xml_text)
    failures: dict[str, str] = {}
    collection = 0
    for case in root.iter("testcase"):
        for child in case:
            if child.tag not in ("failure", "error"):
                continue
            node = _node_id(case.get("classname", ""), case.get("name", ""), case.get("file"))
            if child.get("message") == "collection failure":
                # A module that did not import, reported as a "test" named after it: no test.
                collection += 1
                outcomes.pop(node, None)
            else:  # the traceback, which ends in the message's E lines; else the message
                failures[node] = (child.text or "").strip("\n") or child.get("message", "")
    return outcomes, failures, collection


def split_flaky(
    runs: Sequence[Mapping[str, str]], exists=lambda node: True
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(stable, flaky, unselectable) among the tests the first run passed.

    The later runs name the tests by id: a test they never report could not be selected by its
    id (a node id the report spells differently from pytest's command line), one they report
    with another outcome is flaky. Only the stable ones can be graded."""
    first, later = runs[0], runs[1:]
    stable, flaky, unselectable = [], [], []
    for node in sorted(n for n, outcome in first.items() if outcome == "passed"):
        if not exists(node) or (later and all(node not in run for run in later)):
            unselectable.append(node)
        elif all(run.get(node) == "passed" for run in later):
            stable.append(node)
        else:
            flaky.append(node)
    return tuple(stable), tuple(flaky), tuple(unselectable)


def node_file_exists(repo: str):
    """A predicate: does a node id's file exist in `repo`? (ids rebuilt from JUnit class names
    can name a file that is not there, e.g. a test module with capitals in its name)."""

    def exists(node: str) -> bool:
        return os.path.isfile(os.path.join(repo, node.split("::")[0]))

    return exists
