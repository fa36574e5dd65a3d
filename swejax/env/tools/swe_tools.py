"""The agent's file viewer and editor, run inside the sandbox: open, goto, scroll_down, scroll_up,
create, edit, replace, search_file.

    python3 swe_tools.py COMMAND [ARGS...]       (edit and create read new lines from stdin)

It runs under whatever Python the task's image has, so it uses the standard library of Python
3.6 and nothing newer. The open file and the first line of its window persist between commands
in a small JSON file in the sandbox's state directory. Errors print one line saying what was
wrong and how to do it right, and exit with status 1.
"""

import json
import os
import stat
import sys

WINDOW = int(os.environ.get("SWEJAX_WINDOW", "100"))
STATE_FILE = os.path.join(os.environ.get("SWEJAX_STATE", "/.swejax_state"), "editor.json")
MAX_MATCHES = 100
EDIT_REMINDER = (
    "Check the indentation and that no line is duplicated or missing; edit again if needed."
)


class ToolError(Exception):
    pass


# --- state and files ---------------------------------------------------------------------------


def load_state():
    try:
        with open(STATE_FILE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"file": None, "top": 1}


def save_state(state):
    with open(STATE_FILE, "w") as f:
        json.dump(state, f)


def read_lines(path):
    if not os.path.exists(path):
        raise ToolError("File {} not found.".format(path))
    if os.path.isdir(path):
        raise ToolError("{} is a directory; give a file.".format(path))
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            return f.read().splitlines(True)
    except OSError as error:
        raise ToolError("Cannot read {}: {}".format(path, error.strerror)) from None


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
        f.write("".join(lines))


def open_file(state):
    if not state.get("file"):
        raise ToolError("No file is open. Use `open FILE` first.")
    return state["file"]


def parse_line_number(text, what):
    try:
        return int(text)
    except ValueError:
        raise ToolError("{} must be a line number, got {!r}.".format(what, text)) from None


# --- showing a window ----------------------------------------------------------------------


def clamp_top(top, total):
    return max(1, min(top, total - WINDOW + 1))


def centered_top(line, total):
    return clamp_top(line - WINDOW // 2, total)


def show(path, top, lines=None):
    lines = read_lines(path) if lines is None else lines
    total = len(lines)
    top = clamp_top(top, total)
    out = ["[File: {} ({} lines total)]".format(path, total)]
    if top > 1:
        out.append("({} more lines above)".format(top - 1))
    last = min(total, top + WINDOW - 1)
    for number in range(top, last + 1):
        out.append("{}:{}".format(number, lines[number - 1].rstrip("\r\n")))
    if last < total:
        out.append("({} more lines below)".format(total - last))
    print("\n".join(out))
    return top


def show_and_save(state, path, top, lines=None):
    state["file"], state["top"] = path, show(path, top, lines)
    save_state(state)


# --- commands --------------------------------------------------------------------------------


def cmd_open(state, args):
    if len(args) > 2:
        raise ToolError("Usage: open [FILE] [LINE]")
    if not args:
        path = open_file(state)
        show_and_save(state, path, state.get("top", 1))
        return
    path = os.path.abspath(args[0])
    lines = read_lines(path)
    top = 1
    if len(args) == 2:
        line = parse_line_number(args[1], "LINE")
        if not 1 <= line <= max(1, len(lines)):
            raise ToolError("LINE must be between 1 and {}.".format(max(1, len(lines))))
        top = centered_top(line, len(lines))
    show_and_save(state, path, top, lines)


def cmd_goto(state, args):
    if len(args) != 1:
        raise ToolError("Usage: goto LINE")
    path = open_file(state)
    lines = read_lines(path)
    line = parse_line_number(args[0], "LINE")
    if not 1 <= line <= max(1, len(lines)):
        raise ToolError("LINE must be between 1 and {}.".format(max(1, len(lines))))
    show_and_save(state, path, centered_top(line, len(lines)), lines)


def cmd_scroll(state, args, direction):
    if args:
        raise ToolError("scroll_down and scroll_up take no arguments.")
    path = open_file(state)
    show_and_save(state, path, state.get("top", 1) + direction * WINDOW)


def stdin_text():
    """Lines given through a heredoc, or None when nothing was piped in."""
    mode = os.fstat(0).st_mode
    if stat.S_ISCHR(mode) or sys.stdin.isatty():
        return None
    return sys.stdin.buffer.read().decode("utf-8", errors="surrogateescape")


def cmd_create(state, args):
    if len(args) != 1:
        raise ToolError("Usage: create FILE")
    path = os.path.abspath(args[0])
    if os.path.exists(path):
        raise ToolError("{} already exists; use `open {}` to view it.".format(path, args[0]))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory)
    text = stdin_text() or ""
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
        f.write(text)
    show_and_save(state, path, 1)


def plural(count):
    return "" if count == 1 else "s"


def parse_range(text):
    if ":" not in text:
        raise ToolError("The line range must be START:END, got {!r}.".format(text))
    start, end = text.split(":", 1)
    return parse_line_number(start, "START"), parse_line_number(end, "END")


def syntax_warning(path, lines):
    if not path.endswith(".py"):
        return ""
    try:
        compile("".join(lines), path, "exec")
    except SyntaxError as error:
        return "Warning: {} no longer parses as Python (line {}: {}).".format(
            path, error.lineno, error.msg
        )
    except ValueError:
        pass
    return ""


def cmd_edit(state, args):
    usage = "Usage: edit [--file PATH] START:END << 'EOF' ... EOF"
    path = None
    if len(args) >= 2 and args[0] == "--file":
        path, args = os.path.abspath(args[1]), args[2:]
    if len(args) != 1:
        raise ToolError(usage)
    path = path or open_file(state)
    start, end = parse_range(args[0])
    body = stdin_text()
    if not body:
        # The shell gives an empty heredoc as /dev/null, the same as no heredoc at all, so an
        # empty body cannot safely mean "delete": it is refused either way.
        raise ToolError(
            "edit got no new lines; it reads them from a heredoc: {}. To delete lines START to "
            "END of FILE, run: sed -i 'START,ENDd' FILE".format(usage)
        )
    lines = read_lines(path)
    total = len(lines)
    if not 1 <= start <= total + 1:
        raise ToolError(
            "START must be between 1 and {} (the file has {} lines).".format(total + 1, total)
        )
    if not start - 1 <= end <= total:
        raise ToolError("END must be between START - 1 (insert before START) and {}.".format(total))
    new = body.splitlines(True)
    if new and not new[-1].endswith("\n"):
        new[-1] += "\n"
    if start > 1 and not lines[start - 2].endswith("\n"):
        lines[start - 2] += "\n"  # text appended after a last line without a newline
    lines[start - 1 : end] = new
    write_lines(path, lines)
    first, last = start, start + len(new) - 1
    state["file"] = path
    top = centered_top((first + max(first, last)) // 2, len(lines))
    state["top"] = show(path, top, lines)
    save_state(state)
    if end < start:
        done = "Inserted {} line{} before line {}.".format(len(new), plural(len(new)), start)
    else:
        done = "Replaced lines {}-{} ({} line{}) with {} line{}.".format(
            start, end, end - start + 1, plural(end - start + 1), len(new), plural(len(new))
        )
    print(done + " " + EDIT_REMINDER)
    warning = syntax_warning(path, lines)
    if warning:
        print(warning)


def cmd_replace(state, args):
    usage = "Usage: replace SEARCH REPLACE [--replace-all] (quote each with the shell's quotes)"
    replace_all = "--replace-all" in args
    args = [a for a in args if a != "--replace-all"]
    if len(args) != 2:
        raise ToolError(usage)
    search, replacement = args
    if not search:
        raise ToolError("SEARCH must not be empty.")
    path = open_file(state)
    text = "".join(read_lines(path))
    count = text.count(search)
    if count == 0:
        raise ToolError("{!r} was not found in {}.".format(search, path))
    if count > 1 and not replace_all:
        lines_at, offset = [], -1
        for _ in range(count):
            offset = text.index(search, offset + 1)
            lines_at.append(str(text.count("\n", 0, offset) + 1))
        shown = ", ".join(lines_at[:20]) + (", ..." if len(lines_at) > 20 else "")
        raise ToolError(
            "{!r} occurs {} times in {} (lines {}); include more context to match once, "
            "or add --replace-all.".format(search, count, path, shown)
        )
    first_line = text.count("\n", 0, text.index(search)) + 1
    text = text.replace(search, replacement, -1 if replace_all else 1)
    lines = text.splitlines(True)
    write_lines(path, lines)
    state["top"] = show(path, centered_top(first_line, len(lines)), lines)
    save_state(state)
    print(
        "Replaced {} occurrence{}. {}".format(
            count if replace_all else 1, "s" if replace_all and count > 1 else "", EDIT_REMINDER
        )
    )
    warning = syntax_warning(path, lines)
    if warning:
        print(warning)


def cmd_search_file(state, args):
    if not 1 <= len(args) <= 2:
        raise ToolError("Usage: search_file TERM [FILE]")
    term = args[0]
    path = os.path.abspath(args[1]) if len(args) == 2 else open_file(state)
    matches = [(n, line) for n, line in enumerate(read_lines(path), 1) if term in line]
    if not matches:
        print('No matches found for "{}" in {}'.format(term, path))
        return
    print('Found {} matches for "{}" in {}:'.format(len(matches), term, path))
    for number, line in matches[:MAX_MATCHES]:
        print("Line {}: {}".format(number, line.rstrip("\r\n")))
    if len(matches) > MAX_MATCHES:
        print("({} more matches not shown; narrow the search.)".format(len(matches) - MAX_MATCHES))


COMMANDS = {
    "open": cmd_open,
    "goto": cmd_goto,
    "scroll_down": lambda state, args: cmd_scroll(state, args, +1),
    "scroll_up": lambda state, args: cmd_scroll(state, args, -1),
    "create": cmd_create,
    "edit": cmd_edit,
    "replace": cmd_replace,
    "search_file": cmd_search_file,
}


def main(argv):
    if not argv or argv[0] not in COMMANDS:
        print("Error: unknown tool; one of " + ", ".join(sorted(COMMANDS)))
        return 2
    try:
        COMMANDS[argv[0]](load_state(), argv[1:])
    except ToolError as error:
        print("Error: {}".format(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
