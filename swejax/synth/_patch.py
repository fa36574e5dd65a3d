"""Unified diffs in `git diff` form, written without git."""

from __future__ import annotations

import difflib
from collections.abc import Mapping

_NO_NEWLINE = "\\ No newline at end of file\n"


def file_diff(path: str, before: str, after: str, context: int = 3) -> str:
    """One file's section of a git diff from `before` to `after` ("" when they are equal)."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    lines = list(difflib.unified_diff(old, new, f"a/{path}", f"b/{path}", n=context))
    if not lines:
        return ""
    out = [f"diff --git a/{path} b/{path}\n"]
    for line in lines:
        if line.endswith("\n"):
            out.append(line)
        else:  # the file's last line, which has no newline: git marks it
            out.append(line + "\n" + _NO_NEWLINE)
    return "".join(out)


def tree_diff(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    """A git diff over several files (same paths on both sides), in path order."""
    return "".join(file_diff(path, before[path], after[path]) for path in sorted(before))
