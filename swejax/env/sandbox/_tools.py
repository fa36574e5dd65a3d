"""The scaffold's editor tools, installed in every sandbox at TOOLS_DIR with TOOLS_DIR/bin first
on PATH, so `open`, `edit` and the rest are commands of the sandbox's shell (a heredoc after
`edit` reaches it as standard input, as in any shell)."""

from __future__ import annotations

import os

TOOLS_DIR = "/.swejax_tools"
STATE_DIR = "/.swejax_state"  # per-sandbox state: the shell's cwd and exports, the open file
EDITOR_COMMANDS = (
    "open",
    "goto",
    "scroll_down",
    "scroll_up",
    "create",
    "edit",
    "replace",
    "search_file",
)
INTERACTIVE_PROGRAMS = ("vim", "vi", "nano", "emacs", "less", "more", "top", "man", "ipython")
SANDBOX_PATH = f"{TOOLS_DIR}/bin:/usr/local/bin:/usr/bin:/bin"
_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools", "swe_tools.py")


def _tool_wrapper(command: str) -> str:
    script = f"{TOOLS_DIR}/swe_tools.py"
    return (
        "#!/bin/sh\n"
        f'command -v python3 >/dev/null 2>&1 && exec python3 {script} {command} "$@"\n'
        f'exec python {script} {command} "$@"\n'
    )


def _refusal(message: str) -> str:
    return f"#!/bin/sh\necho '{message}'\nexit 1\n"


def tool_files() -> dict[str, tuple[bytes, int]]:
    """Relative path under TOOLS_DIR -> (content, mode)."""
    with open(_SCRIPT, "rb") as f:
        files = {"swe_tools.py": (f.read(), 0o644)}
    for command in EDITOR_COMMANDS:
        files[f"bin/{command}"] = (_tool_wrapper(command).encode(), 0o755)
    files["bin/submit"] = (
        _refusal(
            "submit ends the episode: send it alone, as the whole command, with no arguments."
        ).encode(),
        0o755,
    )
    for program in INTERACTIVE_PROGRAMS:
        message = (
            f"{program} is interactive and not available here; view and change files with open, "
            "goto, scroll_down, scroll_up, edit and replace."
        )
        files[f"bin/{program}"] = (_refusal(message).encode(), 0o755)
    return files


def write_tools(destination: str) -> None:
    """Write the tools into a host directory (for a runtime that mounts it)."""
    for relative, (content, mode) in tool_files().items():
        path = os.path.join(destination, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, mode)
