"""What swejax's own grading (built-in and synthesized tasks) ignores of a submission.

Protected, so a submission cannot edit, delete or short-circuit the tests or how they run:
- the files of the task's test patch, and the files that hold its listed tests;
- pytest's runner files, anywhere: conftest.py, pytest.ini, .pytest.ini, pytest.toml,
  .pytest.toml, tox.ini, and sitecustomize.py / usercustomize.py (run at interpreter start);
- the pytest configuration in setup.cfg ([tool:pytest]) and pyproject.toml ([tool.pytest...]):
  `addopts = -p plugin` there would load a module that rewrites outcomes. The rest of those
  files (dependencies, package metadata, other tools' sections) is the submission's to change,
  as real fixes sometimes do.

SWE-bench-family tasks drop nothing: their eval scripts reset the test files themselves.
"""

from __future__ import annotations

import os
import re

from swejax.tasks import Task

RUNNER_FILES = frozenset(
    {
        "conftest.py",
        "pytest.ini",
        ".pytest.ini",
        "pytest.toml",
        ".pytest.toml",
        "tox.ini",
        "sitecustomize.py",
        "usercustomize.py",
    }
)
CONFIG_FILES = frozenset({"setup.cfg", "pyproject.toml"})  # protected where they configure pytest
_SECTION = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)
_HEADER = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+")
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@")


def split_patch(patch: str) -> list[tuple[str, str, str]]:
    """(old path, new path, section text) for each file of a unified git diff."""
    matches = list(_SECTION.finditer(patch))
    sections = []
    for k, match in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(patch)
        sections.append((match.group(1), match.group(2), patch[match.start() : end]))
    return sections


def listed_test_files(task: Task) -> frozenset[str]:
    """The test patch's files and the files named by the listed tests' pytest node ids."""
    files = set(task.test_files)
    for test in (*task.FAIL_TO_PASS, *task.PASS_TO_PASS):
        path = test.split("::", 1)[0]
        if path.endswith(".py"):
            files.add(path)
    return frozenset(files)


def _is_pytest_section(name: str) -> bool:
    name = name.strip().strip("\"'")
    return name in ("pytest", "tool:pytest") or re.match(r"tool\.[\"']?pytest\b", name) is not None


def pytest_ranges(text: str) -> list[tuple[int, int]]:
    """1-based line ranges of the pytest sections of an INI or TOML file."""
    ranges, start, number = [], 0, 0
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            if start:
                ranges.append((start, number - 1))
            start = number if _is_pytest_section(header.group(1)) else 0
    if start:
        ranges.append((start, number))
    return ranges


def _touches_pytest(section: str, base: str | None) -> bool:
    """Whether a config file's diff section changes its pytest configuration: a changed line
    that names pytest, or a line removed or added inside a pytest section of the base file."""
    if base is None:
        return True  # the base cannot be read: keep the file as it is
    ranges = pytest_ranges(base)
    if ranges and ("\nrename from " in section or "\ndeleted file mode" in section):
        return True
    inside = lambda number: any(a <= number <= b for a, b in ranges)
    after = None  # the base file's next line, once in a hunk (None: the file's header)
    for line in section.splitlines():
        hunk = _HUNK.match(line)
        if hunk:  # "-5,0" inserts after line 5; "-5,3" starts at line 5
            after = int(hunk.group(1)) + (1 if hunk.group(2) == "0" else 0)
            continue
        tag = line[:1]
        if after is None or tag not in ("+", "-", " "):
            continue
        if tag != " " and "pytest" in line[1:].lower():
            return True
        if tag == "-" and inside(after):
            return True
        if tag == "+" and inside(after - 1):
            return True
        after += tag != "+"
    return False


def _base_text(task: Task, path: str) -> str | None:
    if not task.repo_dir:
        return None
    full = os.path.join(task.repo_dir, path)
    if not os.path.exists(full):
        return ""
    try:
        with open(full, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def is_protected(old: str, new: str, section: str, task: Task, tests: frozenset[str]) -> bool:
    for path in (old, new):
        name = os.path.basename(path)
        if path in tests or name in RUNNER_FILES:
            return True
        if name in CONFIG_FILES and _touches_pytest(section, _base_text(task, old)):
            return True
    return False


def filter_submission(patch: str, task: Task) -> tuple[str, tuple[str, ...]]:
    """The submission without its changes to protected paths, and the files dropped."""
    tests = listed_test_files(task)
    kept, dropped = [], []
    for old, new, text in split_patch(patch):
        if is_protected(old, new, text, task, tests):
            dropped.append(new)
        else:
            kept.append(text if text.endswith("\n") else text + "\n")
    return "".join(kept), tuple(dropped)
