"""The built-in tasks: small repositories written for swejax, each with an issue, a gold patch
and a test patch, so the whole pipeline runs with nothing to download.

A task lives in `builtin/<name>/`: `repo/` (the repository at its base commit), `issue.md`,
`gold.patch`, `test.patch` and `task.json` (instance_id, FAIL_TO_PASS, PASS_TO_PASS).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from swejax.tasks._task import Task, TaskError, task_from_record

BUILTIN_DIR = os.path.join(os.path.dirname(__file__), "builtin")
BASE_COMMIT = "base"  # built-in repositories get a git history of one commit when materialized


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def load_builtin_task(directory: str) -> Task:
    for name in ("repo", "issue.md", "gold.patch", "test.patch", "task.json"):
        if not os.path.exists(os.path.join(directory, name)):
            raise TaskError(f"built-in task {directory!r} lacks {name}")
    meta = json.loads(_read(os.path.join(directory, "task.json")))
    record = {
        **meta,
        "repo": f"swejax-builtin/{os.path.basename(directory)}",
        "base_commit": BASE_COMMIT,
        "problem_statement": _read(os.path.join(directory, "issue.md")),
        "patch": _read(os.path.join(directory, "gold.patch")),
        "test_patch": _read(os.path.join(directory, "test.patch")),
    }
    where = os.path.join(directory, "task.json")
    return task_from_record(record, where, repo_dir=os.path.join(directory, "repo"))


def builtin_tasks() -> list[Task]:
    """Every built-in task, sorted by instance_id."""
    names = sorted(
        name
        for name in os.listdir(BUILTIN_DIR)
        if os.path.isfile(os.path.join(BUILTIN_DIR, name, "task.json"))
    )
    return sorted(
        (load_builtin_task(os.path.join(BUILTIN_DIR, n)) for n in names),
        key=lambda t: t.instance_id,
    )


def materialize(task: Task, destination: str) -> str:
    """Copy a task's repository to `destination` as a git repository at its base commit (a
    folder that is already a clean git checkout gets an empty commit on top)."""
    if not task.repo_dir:
        raise TaskError(f"task {task.instance_id} has no local repository (it runs in its image)")
    shutil.copytree(task.repo_dir, destination, ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-c", "user.name=swejax", "-c", "user.email=swejax@localhost"]
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["commit", "-q", "--allow-empty", "-m", BASE_COMMIT],
    ):
        subprocess.run(git + args, cwd=destination, check=True, capture_output=True)
    return destination
