"""`Task`: one SWE problem in the SWE-bench schema, plus what it takes to run it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from swejax.errors import UserError

_DIFF_HEADER = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)


class TaskError(UserError):
    """A task record that cannot be used; the message names where and which field."""


@dataclasses.dataclass(frozen=True)
class Task:
    # The SWE-bench / SWE-rebench fields.
    instance_id: str
    repo: str
    base_commit: str
    problem_statement: str
    patch: str  # the gold patch
    test_patch: str
    FAIL_TO_PASS: tuple[str, ...]
    PASS_TO_PASS: tuple[str, ...]
    # How to run it.
    image: str = ""  # docker image; "" for the built-in tasks (see docker_image)
    repo_dir: str = ""  # a local directory holding the repository at base_commit
    setup_commands: tuple[str, ...] = ()
    test_command: str = "python3 -m pytest -rA -p no:cacheprovider"
    workdir: str = "/repo"  # where the repository is inside the image (SWE-bench: /testbed)
    log_parser: str = ""  # "": JUnit report; else a swebench parser name, e.g. "parse_log_pytest"
    version: str = ""  # the SWE-bench record's version (some swebench parsers read it)
    # The record as loaded, every field (read-only): the SWE-bench harness builds its scripts
    # from fields swejax does not model (environment_setup_commit, install_config, ...).
    record: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def docker_image(self) -> str:
        """The task's image; built-in tasks use the one tools/build_images.py makes."""
        return self.image or f"swejax/task:{self.instance_id.lower()}"

    @property
    def test_files(self) -> tuple[str, ...]:
        """Files the test patch touches: a submission's changes to them are discarded."""
        return patch_files(self.test_patch)


def patch_files(patch: str) -> tuple[str, ...]:
    """Paths a unified git diff changes (new and old names)."""
    files: list[str] = []
    for old, new in _DIFF_HEADER.findall(patch):
        for path in (old, new):
            if path not in files:
                files.append(path)
    return tuple(files)


def _test_ids(value: Any, field: str, where: str) -> tuple[str, ...]:
    # SWE-bench stores these lists as JSON-encoded strings; SWE-rebench as lists.
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise TaskError(f"{where}: field {field!r} is a string but not a JSON list") from error
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskError(f"{where}: field {field!r} must be a list of test ids")
    return tuple(value)


_REQUIRED = ("instance_id", "repo", "base_commit", "problem_statement", "patch", "test_patch")


def task_from_record(record: Any, where: str, **runtime: Any) -> Task:
    """A Task from one SWE-bench-style record; `where` names it in errors (file:line)."""
    if not isinstance(record, dict):
        raise TaskError(f"{where}: a task record must be a JSON object")
    for field in _REQUIRED:
        if not isinstance(record.get(field), str):
            problem = "is missing" if field not in record else "must be a string"
            raise TaskError(f"{where}: field {field!r} {problem}")
    for field in ("FAIL_TO_PASS", "PASS_TO_PASS"):
        if field not in record:
            raise TaskError(f"{where}: field {field!r} is missing")
    fields = {field: record[field] for field in _REQUIRED}
    image = record.get("image_name") or record.get("docker_image") or record.get("image") or ""
    if image and "workdir" not in runtime:
        runtime["workdir"] = "/testbed"  # where SWE-bench-style images hold the repository
    for field in ("log_parser", "version", "test_command"):
        if isinstance(record.get(field), str) and field not in runtime:
            runtime[field] = record[field]
    if isinstance(record.get("setup_commands"), list) and "setup_commands" not in runtime:
        runtime["setup_commands"] = tuple(record["setup_commands"])
    return Task(
        **fields,
        FAIL_TO_PASS=_test_ids(record["FAIL_TO_PASS"], "FAIL_TO_PASS", where),
        PASS_TO_PASS=_test_ids(record["PASS_TO_PASS"], "PASS_TO_PASS", where),
        image=runtime.pop("image", image),
        record=types.MappingProxyType(dict(record)),
        **runtime,
    )


def load_jsonl(path: str) -> list[Task]:
    """Tasks from a JSONL file in SWE-bench / SWE-rebench form, one record per line.

    Besides the SWE-bench fields a record may carry swejax's own: `repo_dir` (the repository at
    its base commit, relative to the file's folder, as `synthesize` writes it), `test_command`
    and `setup_commands`."""
    return list(_iter_jsonl(path))


def _iter_jsonl(path: str) -> Iterator[Task]:
    def records() -> Iterator[tuple[str, Any]]:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    yield where, json.loads(line)
                except json.JSONDecodeError as error:
                    raise TaskError(f"{where}: not valid JSON ({error.msg})") from error

    return _unique_tasks(records(), os.path.dirname(os.path.abspath(path)))


def _unique_tasks(records: Iterable[tuple[str, Any]], folder: str = "") -> Iterator[Task]:
    seen: set[str] = set()
    for where, record in records:
        runtime = {}
        if isinstance(record, dict) and record.get("repo_dir"):
            if not isinstance(record["repo_dir"], str):
                raise TaskError(f"{where}: field 'repo_dir' must be a string")
            repo_dir = os.path.join(folder, record["repo_dir"])
            if not os.path.isdir(repo_dir):
                raise TaskError(f"{where}: repo_dir {record['repo_dir']!r} is not a folder")
            runtime["repo_dir"] = repo_dir
        task = task_from_record(record, where, **runtime)
        if task.instance_id in seen:
            raise TaskError(f"{where}: instance_id {task.instance_id!r} appears twice")
        seen.add(task.instance_id)
        yield task


def load_hf_dataset(name: str, split: str = "test", **load_kwargs: Any) -> list[Task]:
    """Tasks from a Hugging Face dataset in SWE-bench / SWE-rebench form (e.g.
    "princeton-nlp/SWE-bench_Verified" or "nebius/SWE-rebench"), through the optional
    `datasets` library; a bad record is named as NAME[SPLIT]:INDEX."""
    try:
        import datasets
    except ImportError as error:
        raise TaskError(
            "loading a Hugging Face dataset needs the datasets library: pip install datasets"
        ) from error
    rows = datasets.load_dataset(name, split=split, **load_kwargs)
    return list(_unique_tasks((f"{name}[{split}]:{i}", dict(r)) for i, r in enumerate(rows)))
