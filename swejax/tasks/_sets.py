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


def load_source(source: str) -> list[Task]:
    """The tasks of a `tasks.source`: "builtin", "hf:NAME[:SPLIT]" (split "test" by default),
    or a JSONL file of SWE-bench records."""
    if source == "builtin":
        return builtin_tasks()
    if source.startswith("hf:"):
        name, _, split = source[3:].partition(":")
        return load_hf_dataset(name, split=split or "test")
    return load_jsonl(source)


def select_tasks(tasks: Sequence[Task], train_ids: str, eval_ids: str) -> tuple[list, list]:
    """(training tasks, evaluation tasks) from comma-separated ids: no training ids means every
    task not held out, and no evaluation ids means the training tasks."""
    by_id = {t.instance_id: t for t in tasks}

    def pick(ids: str, what: str) -> list[Task]:
        names = [n for n in (x.strip() for x in ids.split(",")) if n]
        missing = [n for n in names if n not in by_id]
        if missing:
            raise TaskError(f"tasks.{what} names unknown tasks: {', '.join(missing)}")
        return [by_id[n] for n in names]

    held_out = pick(eval_ids, "eval")
    train = pick(train_ids, "train") or [t for t in tasks if t not in held_out]
    return train, held_out or train
