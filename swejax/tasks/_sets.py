"""Task sources and sets: loading a `tasks.source`, choosing training and evaluation tasks, and
named sets of instance ids (Verified-50)."""

from __future__ import annotations

from collections.abc import Sequence

from swejax.tasks._builtin import builtin_tasks
from swejax.tasks._task import Task, TaskError, load_hf_dataset, load_jsonl

_VERIFIED_50 = {
    "sympy__sympy": "22080 13615 14248 16792 17139 14531 19346 15017 13852",
    "django__django": (
        "15315 11333 11532 16642 14855 13089 15987 14725 15280 16560 15103 14007 11880 16136 "
        "16661 10880 11265 13417 15368 11095 15554 15863 13363 14017"
    ),
    "matplotlib__matplotlib": "20826 23299 25332 24870",
    "sphinx-doc__sphinx": "8721 8595 9229",
    "pylint-dev__pylint": "4604 4661",
    "pytest-dev__pytest": "7982 5809",
    "scikit-learn__scikit-learn": "13142 13135",
    "psf__requests": "2317",
    "pydata__xarray": "6744 6461 6992",
}

# The paper's fixed random subset of SWE-bench Verified used to track training (docs/method.md).
VERIFIED_50 = tuple(
    f"{repo}-{number}" for repo, numbers in _VERIFIED_50.items() for number in numbers.split()
)
TASK_SETS = {"verified-50": VERIFIED_50}


def _load_one(source: str) -> list[Task]:
    if source == "builtin":
        return builtin_tasks()
    if source.startswith("hf:"):
        name, _, split = source[3:].partition(":")
        return load_hf_dataset(name, split=split or "test")
    return load_jsonl(source)


def split_list(value: str) -> list[str]:
    """The items of a comma-separated config value, stripped, empty ones left out."""
    return [item for item in (x.strip() for x in value.split(",")) if item]


def load_source(source: str) -> list[Task]:
    """The tasks of a `tasks.source`: comma-separated sources, each "builtin", "hf:NAME[:SPLIT]"
    (split "test" by default) or a JSONL file of SWE-bench records (e.g. a synthesized set), in
    the order named. An instance id in two sources is an error naming both."""
    names = split_list(source)
    if not names:
        raise TaskError("tasks.source names no source")
    tasks: list[Task] = []
    origin: dict[str, str] = {}
    for name in names:
        for task in _load_one(name):
            if task.instance_id in origin:
                raise TaskError(
                    f"task {task.instance_id!r} is in two sources: {origin[task.instance_id]} "
                    f"and {name}"
                )
            origin[task.instance_id] = name
            tasks.append(task)
    return tasks


def select_tasks(
    tasks: Sequence[Task], train_ids: str, eval_ids: str, eval_repos: str = ""
) -> tuple[list, list]:
    """(training tasks, evaluation tasks) from comma-separated ids and repositories.

    Held out: the tasks named by `eval_ids` and every task of a repository in `eval_repos`
    (a split by repository: no repository is in both sets). Training: the tasks named by
    `train_ids`, else every task not held out. No held-out tasks means evaluation reuses the
    training tasks."""
    by_id = {t.instance_id: t for t in tasks}
    repos = split_list(eval_repos)
    unknown_repos = sorted(set(repos) - {t.repo for t in tasks})
    if unknown_repos:
        raise TaskError(f"tasks.eval_repos names repositories with no task: {unknown_repos[0]}")

    def pick(ids: str, what: str) -> list[Task]:
        names = split_list(ids)
        missing = [n for n in names if n not in by_id]
        if missing:
            raise TaskError(f"tasks.{what} names unknown tasks: {', '.join(missing)}")
        return [by_id[n] for n in names]

    held_out = pick(eval_ids, "eval")
    held_out += [t for t in tasks if t.repo in repos and t not in held_out]
    named = pick(train_ids, "train")
    leaked = [t.instance_id for t in named if t.repo in repos]
    if leaked:
        raise TaskError(f"tasks.train names a task of a held-out repository: {leaked[0]}")
    train = named or [t for t in tasks if t not in held_out]
    return train, held_out or train
