"""Which harness grades a task, and that harness's own pieces for it (swebench 4.1.0's): its
TestSpec, eval script, image, log parser, and its reading of a test log.

The SWE-bench family is graded by the benchmarks' harnesses, not by swejax's rules: a classic
SWE-bench record (repo and version keyed into swebench's MAP_REPO_VERSION_TO_SPECS), a record
that brings its own eval script (swebench's newer form), and a SWE-rebench record, whose
`install_config` is the specs dict its harness (the SWE-rebench fork of SWE-bench) uses in place
of swebench's. Built-in and synthesized tasks (they carry a local repository) are swejax's own.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import importlib.metadata
import json
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from typing import Any
from unittest import mock

from swejax.tasks import Task, TaskError

SWEBENCH_VERSION = "4.1.0"
ENV_NAME = "testbed"
WORKDIR = "/testbed"  # the harness's DOCKER_WORKDIR: where its images hold the repository
NAMESPACE = "swebench"  # run_evaluation's default --namespace: images on Docker Hub
# What SWE-agent and mini-swe-agent run so the agent's shell is in the image's environment.
ACTIVATE = f"source /opt/miniconda3/bin/activate && conda activate {ENV_NAME}"
_PARSER_MODULES = ("python", "javascript", "java", "go", "c", "php", "ruby", "rust")
# swebench 4.1.0 reads test_cmd and the log parser from module-level maps keyed by repository;
# for a record that brings its own (install_config, log_parser), grading puts them there for
# the call (unittest.mock.patch.dict, undone after) while holding this lock, so no concurrent
# grading sees another task's entry.
_LOCK = threading.Lock()


class Harness(enum.Enum):
    SWEBENCH = "swe-bench"  # classic record: swebench's specs for its repo and version
    SWEBENCH_SCRIPT = "swe-bench-script"  # newer-form record: its own eval_script and parser
    SWE_REBENCH = "swe-rebench"  # record with install_config (the SWE-rebench fork)
    SWEJAX = "swejax"  # built-in and synthesized tasks: swejax's own grading


class HarnessError(TaskError):
    """The harness cannot grade this task (swebench missing, specs unknown); names the task."""


def install_config(task: Task) -> dict[str, Any] | None:
    config = task.record.get("install_config")
    if isinstance(config, str) and config.strip():
        try:
            config = json.loads(config)
        except json.JSONDecodeError as error:
            raise HarnessError(f"task {task.instance_id}: install_config is not JSON") from error
    return dict(config) if isinstance(config, Mapping) else None


def harness_of(task: Task) -> Harness:
    """A record's own fields decide, never which packages happen to be installed."""
    if install_config(task) is not None:
        return Harness.SWE_REBENCH
    if isinstance(task.record.get("eval_script"), str):
        return Harness.SWEBENCH_SCRIPT
    if not task.repo_dir and task.version:
        return Harness.SWEBENCH
    return Harness.SWEJAX


def in_swebench_family(task: Task) -> bool:
    return harness_of(task) is not Harness.SWEJAX


def shell_activation(task: Task) -> str:
    """The command that puts a shell in the image's environment ("" for none)."""
    kind = harness_of(task)
    if kind in (Harness.SWEBENCH, Harness.SWE_REBENCH):
        return ACTIVATE
    if kind is Harness.SWEBENCH_SCRIPT and f"conda activate {ENV_NAME}" in eval_script(task):
        return ACTIVATE
    return ""


def swebench(task: Task):
    """swebench's harness package, checked to be the version swejax grades with."""
    try:
        version = importlib.metadata.version("swebench")
        import swebench.harness.grading  # noqa: F401  (loads constants, parsers, test specs)
    except (ImportError, importlib.metadata.PackageNotFoundError) as error:
        raise HarnessError(
            f"task {task.instance_id}: its grading (the SWE-bench harness's scripts, log parsers "
            f"and resolution) needs swebench=={SWEBENCH_VERSION}: pip install 'swejax[swebench]'"
        ) from error
    if version != SWEBENCH_VERSION:
        raise HarnessError(
            f"task {task.instance_id}: swejax builds SWE-bench eval scripts with swebench "
            f"{SWEBENCH_VERSION} (newer versions no longer build them from repo and version); "
            f"swebench {version} is installed: pip install 'swejax[swebench]'"
        )
    return importlib.import_module("swebench.harness")


def _instance(task: Task) -> dict[str, Any]:
    """The record as swebench reads it; the test lists as swejax parsed them."""
    return {
        **task.record,
        "version": task.version,
        "FAIL_TO_PASS": list(task.FAIL_TO_PASS),
        "PASS_TO_PASS": list(task.PASS_TO_PASS),
    }


def specs(task: Task) -> dict[str, Any]:
    """The specs dict the harness builds the task's scripts from."""
    config = install_config(task)
    if config is not None:
        return config
    harness = swebench(task)
    known = harness.constants.MAP_REPO_VERSION_TO_SPECS.get(task.repo, {})
    if task.version not in known:
        raise HarnessError(
            f"task {task.instance_id}: swebench {SWEBENCH_VERSION} has no specs for "
            f"{task.repo} version {task.version!r}"
        )
    return known[task.version]


def parser_named(task: Task, name: str):
    """A swebench log parser by name (swebench 5's records and SWE-rebench's install_config
    name them), looked up in 4.1.0's parser modules."""
    harness = swebench(task)
    if name in harness.log_parsers.MAP_REPO_TO_PARSER:  # the fork's map holds repositories too
        return harness.log_parsers.MAP_REPO_TO_PARSER[name]
    for module in _PARSER_MODULES:
        found = getattr(
            importlib.import_module(f"swebench.harness.log_parsers.{module}"), name, None
        )
        if name.startswith("parse_log_") and callable(found):
            return found
    raise HarnessError(f"task {task.instance_id}: swebench has no log parser named {name!r}")


def log_parser(task: Task):
    """The parser the harness reads this task's log with."""
    kind = harness_of(task)
    if kind is Harness.SWE_REBENCH:
        name = install_config(task).get("log_parser", "")
        return parser_named(task, name or "parse_log_pytest")
    if kind is Harness.SWEBENCH_SCRIPT or (kind is Harness.SWEJAX and task.log_parser):
        return parser_named(task, task.log_parser)
    parsers = swebench(task).log_parsers.MAP_REPO_TO_PARSER
    if task.repo not in parsers:
        raise HarnessError(f"task {task.instance_id}: swebench has no log parser for {task.repo}")
    return parsers[task.repo]


@contextlib.contextmanager
def _registered(task: Task) -> Iterator[None]:
    """swebench's maps, holding this task's specs and parser if the record brings its own."""
    harness = swebench(task)
    kind = harness_of(task)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_LOCK)
        if kind in (Harness.SWE_REBENCH, Harness.SWEBENCH_SCRIPT):
            own = specs(task) if kind is Harness.SWE_REBENCH else {"test_cmd": ""}
            parser = log_parser(task)
            stack.enter_context(
                mock.patch.dict(
                    harness.constants.MAP_REPO_VERSION_TO_SPECS, {task.repo: {task.version: own}}
                )
            )
            stack.enter_context(
                mock.patch.dict(harness.log_parsers.MAP_REPO_TO_PARSER, {task.repo: parser})
            )
        yield


def test_spec(task: Task):
    """swebench's TestSpec for the task, as make_test_spec builds it, less the environment
    image's script (which fetches requirement files from GitHub and grading does not use)."""
    harness = swebench(task)
    from swebench.harness.test_spec.create_scripts import make_eval_script_list
    from swebench.harness.test_spec.python import make_eval_script_list_py
    from swebench.harness.test_spec.test_spec import TestSpec

    kind = harness_of(task)
    task_specs = specs(task) if kind is not Harness.SWEBENCH_SCRIPT else {}
    script: list[str] = []
    if kind is not Harness.SWEBENCH_SCRIPT:
        # The fork defaults every repository it does not know to Python's scripts.
        make = make_eval_script_list_py if kind is Harness.SWE_REBENCH else make_eval_script_list
        with _registered(task):
            script = make(
                _instance(task), task_specs, ENV_NAME, WORKDIR, task.base_commit, task.test_patch
            )
    return TestSpec(
        instance_id=task.instance_id,
        repo=task.repo,
        version=task.version,
        repo_script_list=[],
        eval_script_list=script,
        env_script_list=[],
        arch="x86_64",
        FAIL_TO_PASS=list(task.FAIL_TO_PASS),
        PASS_TO_PASS=list(task.PASS_TO_PASS),
        language=harness.constants.MAP_REPO_TO_EXT.get(task.repo, "py"),
        docker_specs=task_specs.get("docker_specs", {}),
        namespace=NAMESPACE,
    )


def eval_script(task: Task) -> str:
    """The script the harness writes to /eval.sh and runs for this task."""
    if harness_of(task) is Harness.SWEBENCH_SCRIPT:
        return task.record["eval_script"]
    return test_spec(task).eval_script


def image(task: Task) -> str:
    """The record's image (docker_image, image_name, image) or else the harness's name for it."""
    return task.image or test_spec(task).instance_image_key


def _eval_type(task: Task, harness):
    EvalType = harness.constants.EvalType
    named = task.record.get("eval_type")
    if isinstance(named, str) and named:
        return EvalType(named.lower())
    fail_only = task.repo in harness.constants.FAIL_ONLY_REPOS
    return EvalType.FAIL_ONLY if fail_only else EvalType.PASS_AND_FAIL


def read_log(task: Task, log: str) -> tuple[bool, dict[str, str], bool]:
    """(resolved, swebench's status map, log usable) as the harness decides from a log of
    /eval.sh: get_logs_eval (markers, bad codes, the parser), then get_eval_tests_report and
    get_resolution_status == FULL."""
    harness = swebench(task)
    grading, constants = harness.grading, harness.constants
    spec = test_spec(task)
    with tempfile.TemporaryDirectory(prefix="swejax-log-") as folder:
        path = os.path.join(folder, "test_output.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(log)
        with _registered(task):
            status, found = grading.get_logs_eval(spec, path)
    if found and harness_of(task) is Harness.SWE_REBENCH:
        # The fork's get_logs_eval parses only between the markers (4.1.0 falls back to the
        # whole log when that finds nothing).
        section = log.split(constants.START_TEST_OUTPUT)[1].split(constants.END_TEST_OUTPUT)[0]
        if not log_parser(task)(section, spec):
            status = {}
    if not found:
        return False, {}, False
    reference = {
        constants.KEY_INSTANCE_ID: task.instance_id,
        constants.FAIL_TO_PASS: spec.FAIL_TO_PASS,
        constants.PASS_TO_PASS: spec.PASS_TO_PASS,
    }
    report = grading.get_eval_tests_report(status, reference, eval_type=_eval_type(task, harness))
    resolved = grading.get_resolution_status(report) == constants.ResolvedStatus.FULL.value
    return resolved, status, True
