"""A kept mutant as a SWE-bench record, and its repository at the buggy state."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
from collections.abc import Mapping, Sequence

from swejax.synth._patch import tree_diff

BASE_COMMIT = "base"  # as for the built-in tasks: materialize() commits the folder as "base"
# Changed lines shorter than this ("pass", "else:") say nothing about the bug by themselves.
_MIN_FORBIDDEN = 8


@dataclasses.dataclass(frozen=True)
class Bug:
    """A mutant that passed the filter: what changed and which tests it breaks."""

    index: int  # the candidate index, part of the draw's key and of the instance id
    original: Mapping[str, str]  # path -> text, for the mutated files
    mutant: Mapping[str, str]
    fail_to_pass: tuple[str, ...]
    pass_to_pass: tuple[str, ...]
    problem_statement: str


def changed_lines(original: Mapping[str, str], mutant: Mapping[str, str]) -> list[str]:
    """The lines a diff between the two trees adds or removes (stripped), to keep out of the
    issue: neither the bug nor its fix may be quoted there."""
    lines = []
    for line in tree_diff(mutant, original).splitlines():
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---")):
            text = line[1:].strip()
            if len(text) >= _MIN_FORBIDDEN:
                lines.append(text)
    return lines


def pass_to_pass(
    passing: Sequence[str], failing: Sequence[str], cap: int, rng: random.Random, least: int = 20
) -> tuple[str, ...]:
    """The stable tests of the failing tests' files that still pass, a keyed sample of `cap`
    when there are more (grading runs every listed test, twice per validation); topped up to
    `least` from the other files, so a fix that breaks something else is seen."""
    files = {t.split("::")[0] for t in failing}
    others = [t for t in passing if t not in failing]
    same_file = sorted(t for t in others if t.split("::")[0] in files)
    if len(same_file) > cap:
        same_file = rng.sample(same_file, cap)
    elsewhere = sorted(t for t in others if t.split("::")[0] not in files)
    missing = min(len(elsewhere), max(0, least - len(same_file)))
    return tuple(sorted(same_file + rng.sample(elsewhere, missing)))


def write_buggy_repo(source_repo: str, destination: str, bug: Bug) -> None:
    """A plain folder (no git): the sdist with the bug in; materialize() commits it at grading."""
    shutil.copytree(source_repo, destination, ignore=shutil.ignore_patterns("__pycache__"))
    for path, text in bug.mutant.items():
        with open(os.path.join(destination, path), "w", encoding="utf-8", newline="") as f:
            f.write(text)


def record(
    *,
    instance_id: str,
    package: str,
    version: str,
    bug: Bug,
    test_patch: str,
    repo_dir: str,
    test_command: str,
) -> dict:
    """The JSONL record: SWE-bench's fields, then swejax's (repo_dir relative to the file)."""
    return {
        "instance_id": instance_id,
        "repo": f"pypi/{package}",
        "base_commit": BASE_COMMIT,
        "problem_statement": bug.problem_statement,
        "patch": tree_diff(bug.mutant, bug.original),  # from the buggy tree back to the sdist
        "test_patch": test_patch,
        "FAIL_TO_PASS": list(bug.fail_to_pass),
        "PASS_TO_PASS": list(bug.pass_to_pass),
        "version": version,
        "repo_dir": repo_dir,
        "test_command": test_command,
    }
