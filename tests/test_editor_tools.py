"""The agent's editor tools, run as the agent runs them: shell commands inside the sandbox."""

import ast
import json
import os
import subprocess

import pytest

from swejax.env import open_sandbox
from swejax.env.sandbox import bwrap_available
from swejax.env.sandbox._tools import TOOLS_DIR, tool_files

if not bwrap_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install bubblewrap (see .ci/run)")
    pytest.skip("bubblewrap is not installed", allow_module_level=True)

LINES = [f"line {n}\n" for n in range(1, 251)]


@pytest.fixture
def sb(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "long.txt").write_text("".join(LINES))
    (repo / "pkg" / "mod.py").write_text("def f(x):\n    return x + 1\n")
    (repo / "no_newline.txt").write_text("first\nlast")
    (repo / "empty.txt").write_text("")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    with open_sandbox(str(repo)) as sandbox:
        yield sandbox


def read(sb, path):
    with open(os.path.join(sb.repo, path)) as f:
        return f.read()


def numbered(output):
    """Line numbers shown in a window."""
    return [int(line.split(":")[0]) for line in output.splitlines() if line[:1].isdigit()]


def test_tools_script_is_python_36():
    with open(os.path.join(os.path.dirname(__file__), "..", "swejax/env/tools/swe_tools.py")) as f:
        ast.parse(f.read(), feature_version=(3, 6))
    files = tool_files()
    assert {"bin/open", "bin/edit", "bin/submit", "bin/vim"} <= set(files)
    assert all(mode == 0o755 for name, (_, mode) in files.items() if name.startswith("bin/"))


def test_open_windows_and_file_edges(sb):
    out = sb.run("open long.txt").output
    assert out.startswith("[File: /repo/long.txt (250 lines total)]")
    assert numbered(out) == list(range(1, 101)) and "(150 more lines below)" in out
    out = sb.run("open long.txt 125").output
    assert numbered(out) == list(range(75, 175)) and "(74 more lines above)" in out
    # Near the end the window stops at the last line instead of running past it.
    assert numbered(sb.run("goto 250").output) == list(range(151, 251))
    assert numbered(sb.run("scroll_down").output) == list(range(151, 251))
    assert numbered(sb.run("scroll_up").output) == list(range(51, 151))
    assert numbered(sb.run("goto 1").output) == list(range(1, 101))
    assert numbered(sb.run("scroll_up").output) == list(range(1, 101))
    assert numbered(sb.run("open").output) == list(range(1, 101))  # the open file again
    out = sb.run("open empty.txt").output
    assert "(0 lines total)" in out and numbered(out) == []


def test_bad_arguments_and_missing_files(sb):
    cases = {
        "goto 3": "No file is open",
        "scroll_down": "No file is open",
        "open missing.py": "not found",
        "open pkg": "is a directory",
        "open long.txt 0": "between 1 and 250",
        "open long.txt 251": "between 1 and 250",
        "open long.txt x": "must be a line number",
        "open a b c": "Usage: open",
    }
    for command, message in cases.items():
        result = sb.run(command)
        assert result.exit_code == 1 and message in result.output, (command, result.output)
    sb.run("open long.txt")
    assert "between 1 and 250" in sb.run("goto 999").output
    assert "take no arguments" in sb.run("scroll_down 5").output


def test_edit_replaces_inserts_deletes_and_appends(sb):
    sb.run("open pkg/mod.py")
    out = sb.run("edit 2:2 << 'EOF'\n    y = x * 2\n    return y\nEOF").output
    assert read(sb, "pkg/mod.py") == "def f(x):\n    y = x * 2\n    return y\n"
    assert "Replaced lines 2-2 (1 line) with 2 lines" in out and "indentation" in out
    assert "2:    y = x * 2" in out  # the edited region, numbered
    sb.run("edit 1:0 << 'EOF'\nimport os\nEOF")  # insert before line 1
    assert read(sb, "pkg/mod.py").startswith("import os\ndef f(x):")
    sb.run("edit 5:4 << 'EOF'\nprint(f(1))\nEOF")  # append after the last line
    assert read(sb, "pkg/mod.py").endswith("    return y\nprint(f(1))\n")
    # No new lines: bash hands an empty heredoc over as /dev/null, just like a missing one, so
    # it is refused rather than taken as a deletion.
    out = sb.run("edit 1:1 << 'EOF'\nEOF").output
    assert read(sb, "pkg/mod.py").startswith("import os\n") and "sed -i" in out


def test_edit_of_another_file_and_a_file_without_final_newline(sb):
    sb.run("edit --file no_newline.txt 3:2 << 'EOF'\nadded\nEOF")
    assert read(sb, "no_newline.txt") == "first\nlast\nadded\n"
    sb.run("edit --file no_newline.txt 1:1 << 'EOF'\nFIRST\nEOF")
    assert read(sb, "no_newline.txt") == "FIRST\nlast\nadded\n"
    state = json.loads(sb.run("cat /.swejax_state/editor.json").output)
    assert state["file"] == "/repo/no_newline.txt"


def test_edit_rejects_bad_ranges_and_a_missing_heredoc(sb):
    sb.run("open pkg/mod.py")
    before = read(sb, "pkg/mod.py")
    cases = {
        "edit 0:1 << 'EOF'\nx\nEOF": "START must be between 1 and 3",
        "edit 3:4 << 'EOF'\nx\nEOF": "END must be between",
        "edit 2:0 << 'EOF'\nx\nEOF": "END must be between",
        "edit 2-3 << 'EOF'\nx\nEOF": "START:END",
        "edit a:b << 'EOF'\nx\nEOF": "must be a line number",
        "edit 1:1": "heredoc",  # no new lines given at all: refuse, do not delete
        "edit --file missing.py 1:1 << 'EOF'\nx\nEOF": "not found",
    }
    for command, message in cases.items():
        result = sb.run(command)
        assert result.exit_code == 1 and message in result.output, (command, result.output)
    assert read(sb, "pkg/mod.py") == before


def test_heredoc_quirks(sb):
    sb.run("open pkg/mod.py")
    # A quoted delimiter keeps $ and backquotes; the body may contain the word EOF mid-line.
    sb.run("edit 2:2 << 'EOF'\n    return f\"$HOME `x` EOF\"\nEOF")
    assert read(sb, "pkg/mod.py").splitlines()[1] == '    return f"$HOME `x` EOF"'
    # A delimiter never closed: the shell takes the rest as the body and says so.
    result = sb.run("edit 2:2 << 'EOF'\n    return 0")
    assert read(sb, "pkg/mod.py").splitlines()[1] == "    return 0"
    assert "here-document" in result.output
    # A different delimiter, and a heredoc with tabs stripped (<<-).
    sb.run("edit 2:2 << 'END'\n    return 1\nEND")
    assert read(sb, "pkg/mod.py").splitlines()[1] == "    return 1"
    sb.run("edit 2:2 <<- 'EOF'\n\t    return 2\n\tEOF")
    assert read(sb, "pkg/mod.py").splitlines()[1] == "    return 2"


def test_an_edit_that_breaks_python_warns(sb):
    out = sb.run("edit --file pkg/mod.py 2:2 << 'EOF'\n    return (x\nEOF").output
    assert "no longer parses as Python" in out


def test_create(sb):
    out = sb.run("create new/dir/a.py").output
    assert "[File: /repo/new/dir/a.py (0 lines total)]" in out
    sb.run("edit 1:0 << 'EOF'\nA = 1\nEOF")  # the created file is the open one
    assert read(sb, "new/dir/a.py") == "A = 1\n"
    assert "already exists" in sb.run("create pkg/mod.py").output
    sb.run("create b.txt << 'EOF'\nhello\nEOF")
    assert read(sb, "b.txt") == "hello\n"


def test_replace(sb):
    sb.run("open long.txt")
    assert "occurs 11 times" in sb.run("replace 'line 24' 'LINE 24'").output
    out = sb.run("replace 'line 10\n' 'line ten\n'").output
    assert "Replaced 1 occurrence" in out and read(sb, "long.txt").count("line ten\n") == 1
    assert "was not found" in sb.run("replace 'absent' 'x'").output
    assert "must not be empty" in sb.run("replace '' 'x'").output
    sb.run("replace 'line 2' 'L2' --replace-all")
    assert "line 2" not in read(sb, "long.txt")
    sb.run("open pkg/mod.py")
    sb.run("replace 'x + 1' \"x + '\\$1'\"")
    assert "return x + '$1'" in read(sb, "pkg/mod.py")


def test_search_file(sb):
    out = sb.run("search_file 'line 24' long.txt").output
    assert out.splitlines()[0] == 'Found 11 matches for "line 24" in /repo/long.txt:'
    assert "Line 24: line 24" in out and "Line 249: line 249" in out
    assert "No matches found" in sb.run("search_file zzz long.txt").output
    assert "No file is open" in sb.run("search_file line").output
    out = sb.run("search_file line long.txt").output
    assert "Found 250 matches" in out and "150 more matches not shown" in out


def test_interactive_programs_and_submit_inside_a_command_are_refused(sb):
    for command in ("vim long.txt", "less long.txt", "nano x", "ls; submit"):
        result = sb.run(command)
        assert result.exit_code == 1, command
        assert "not available" in result.output or "send it alone" in result.output


def test_tools_are_installed_read_only(sb):
    result = sb.run(f"echo x > {TOOLS_DIR}/bin/open")
    assert result.exit_code != 0
    assert sb.run("command -v open").output.strip() == f"{TOOLS_DIR}/bin/open"
