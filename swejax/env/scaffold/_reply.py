"""Reading a model reply: its reasoning, and exactly one fenced `command` block, or a format error.

As in the paper (docs/method.md), each reply holds some reasoning and exactly one block fenced
as ```command ... ```. No block or more than one is a format error; the environment answers with
the `format_error` prompt and the episode goes on (the turn stays in the context but is masked
out of RFT's loss).
"""

from __future__ import annotations

import dataclasses
import re

from swejax.env.scaffold._prompts import render

# A fence opens with ```command on its own line and closes with ``` on its own line.
_BLOCK = re.compile(r"^```command[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_OPENING = re.compile(r"^```command[ \t]*$", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Action:
    thought: str  # the text before the block
    command: str  # the block's content, without the fences


@dataclasses.dataclass(frozen=True)
class FormatError:
    problem: str  # what was wrong, for the log and the message

    @property
    def message(self) -> str:
        """What the environment answers (the `format_error` prompt template)."""
        return render("format_error", problem=self.problem)


def parse_reply(reply: str) -> Action | FormatError:
    """The reply's single command block, or why there is not exactly one."""
    blocks = list(_BLOCK.finditer(reply))
    openings = len(_OPENING.findall(reply))
    if openings > len(blocks):
        return FormatError("A ```command block was opened but never closed with ```.")
    if not blocks:
        return FormatError("Your reply had no command block.")
    if len(blocks) > 1:
        return FormatError(f"Your reply had {len(blocks)} command blocks; send one at a time.")
    (block,) = blocks
    command = block.group(1).rstrip("\n")
    if not command.strip():
        return FormatError("The command block was empty.")
    return Action(thought=reply[: block.start()].strip(), command=command)
