"""The scaffold's texts, as template files in `prompts/` (placeholders `${name}`).

Templates are read once per process; a run can point `SWEJAX_PROMPTS` at its own folder holding
files of the same names to change the wording without touching code.
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


def render(name: str, **values: object) -> str:
    """The template `name` with `values` filled in; a placeholder left unfilled is an error."""
    if name not in NAMES:
        raise KeyError(f"unknown prompt {name!r}; one of {NAMES}")
    directory = os.environ.get("SWEJAX_PROMPTS", PROMPTS_DIR)
    try:
        return _template(name, directory).substitute(**values)
    except KeyError as error:
        raise KeyError(f"prompt {name!r} needs a value for {error}") from None
