"""Scaffold commands that apply a patch: how a demonstration (or a test) writes a gold patch
through the agent's own tools (`edit`, `create`; `rm` and `sed` for deletions) rather than with
`git apply`."""

from __future__ import annotations

import re

_FILE = re.compile(r"^diff --git a/(\S+) b/(\S+)$")
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _heredoc(lines: list[str]) -> str:
    delimiter = "EOF"
    while delimiter in lines:
        delimiter += "_"
    return f"<< '{delimiter}'\n" + "".join(line + "\n" for line in lines) + delimiter


def patch_commands(patch: str) -> list[str]:
    """One command per hunk (bottom-up within a file, so line numbers stay valid), one `create`
    per new file and one `rm` per deleted file."""
    commands: list[str] = []
    for section in re.split(r"(?m)^(?=diff --git )", patch):
        header = _FILE.match(section.split("\n", 1)[0])
        if not header:
            continue
        path = header.group(2)
        if re.search(r"(?m)^deleted file mode", section):
            commands.append(f"rm {path}")
            continue
        hunks = []
        current = None
        for line in section.splitlines()[1:]:
            match = _HUNK.match(line)
            if match:
                old_start, old_len = int(match.group(1)), int(match.group(2) or 1)
                current = (old_start, old_len, [])
                hunks.append(current)
            elif current is not None and line[:1] in (" ", "+"):
                current[2].append(line[1:])
            elif current is not None and line == "":
                current[2].append("")  # a context line that was blank, trailing space stripped
        if re.search(r"(?m)^new file mode", section) or re.search(r"(?m)^--- /dev/null", section):
            body = [line for _, _, lines in hunks for line in lines]
            commands.append(f"create {path} {_heredoc(body)}")
            continue
        for old_start, old_len, new_lines in reversed(hunks):
            if old_len == 0:  # pure insertion after line old_start
                start, end = old_start + 1, old_start
            else:
                start, end = old_start, old_start + old_len - 1
            if new_lines:
                commands.append(f"edit --file {path} {start}:{end} {_heredoc(new_lines)}")
            else:  # a pure deletion (a diff without context lines); edit needs new lines
                commands.append(f"sed -i '{start},{end}d' {path}")
    return commands
