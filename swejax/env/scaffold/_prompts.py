"""The scaffold's texts, as template files in `prompts/` (placeholders `${name}`).

Templates are read once per process. A run chooses a set with `ScaffoldConfig.prompts`: "" for
the full prompts here, "compact" for the short set in `prompts/compact/` (tiny models on a CPU,
where every context token costs), or a folder of its own holding files of the same names.
`SWEJAX_PROMPTS` sets the default folder.
"""

from __future__ import annotations

import functools
import os
import string

PROMPTS_DIR = os.path.join(os.path.dirname(__file__), "prompts")
NAMES = ("system", "instance", "format_error", "prompt_line", "no_output")


@functools.cache
def _template(name: str, directory: str) -> string.Template:
    path = os.path.join(directory, f"{name}.txt")
    try:
        with open(path, encoding="utf-8") as f:
            return string.Template(f.read().rstrip("\n"))
    except OSError as error:
        raise FileNotFoundError(f"prompt template {path} cannot be read: {error}") from error


def prompts_directory(choice: str = "") -> str:
    if choice == "compact":
        return os.path.join(PROMPTS_DIR, "compact")
    return choice or os.environ.get("SWEJAX_PROMPTS", PROMPTS_DIR)


def render(name: str, directory: str = "", **values: object) -> str:
    """The template `name` with `values` filled in; a placeholder left unfilled is an error.
    `directory` is a prompt set as `ScaffoldConfig.prompts` names it."""
    if name not in NAMES:
        raise KeyError(f"unknown prompt {name!r}; one of {NAMES}")
    directory = prompts_directory(directory)
    try:
        return _template(name, directory).substitute(**values)
    except KeyError as error:
        raise KeyError(f"prompt {name!r} needs a value for {error}") from None
