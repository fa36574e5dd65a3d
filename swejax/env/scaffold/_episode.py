"""One agent episode over a sandbox: replies in, observations out, until it ends and says why.

The episode owns the turn limit, the prompt line, observation truncation and `submit`; the
sandbox owns the shell (timeouts, output cap, the editor tools on PATH). The caller owns the
context: when the next observation does not fit, it ends the episode with `end(CONTEXT_FULL)`.
Every way out (submitted, turn limit, context full, sandbox failure) records an `EndReason`, and
all but a sandbox failure record the repository's diff as the submission.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import re
from collections.abc import Iterator

from swejax.config import ScaffoldConfig
from swejax.env._task_sandbox import task_sandbox
from swejax.env.sandbox import Sandbox, SandboxError, SandboxLimits
from swejax.env.sandbox._tools import STATE_DIR
from swejax.env.scaffold._prompts import render
from swejax.env.scaffold._reply import Action, parse_reply
from swejax.tasks import Task

# A heredoc after `edit` or `create` whose delimiter is bare (<< EOF) would let the shell expand
# $names and backquotes inside the new lines; the episode quotes it, as the prompt shows.
_BARE_HEREDOC = re.compile(
    r"^(\s*(?:edit|create)\b[^\n]*?<<-?\s*)([A-Za-z_][A-Za-z0-9_]*)[ \t]*$", re.MULTILINE
)


class EndReason(enum.Enum):
    SUBMITTED = "submitted"
    TURN_LIMIT = "turn_limit"
    CONTEXT_FULL = "context_full"
    SANDBOX_ERROR = "sandbox_error"


class EpisodeEnded(RuntimeError):
    """A reply was given to an episode that has already ended."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One turn: the reply, what ran, and what went back."""

    reply: str
    command: str | None  # None: the reply was a format error
    format_error: str | None  # what was wrong with the reply
    observation: str  # the next user message ("" once the episode has ended)
    exit_code: int | None = None
    timed_out: bool = False
    seconds: float = 0.0


def truncate_middle(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its head and tail around a marker."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    cut = len(text) - head - tail
    return (
        text[:head]
        + f"\n[... {cut} characters of output cut here; narrow the command to see them ...]\n"
        + text[-tail:]
    )


def quote_heredocs(command: str) -> str:
    return _BARE_HEREDOC.sub(lambda m: f"{m.group(1)}'{m.group(2)}'", command)


class Episode:
    """The scaffold of docs/method.md over one sandbox (see the module docstring)."""

    def __init__(self, task: Task, sandbox: Sandbox, config: ScaffoldConfig | None = None):
        self.task, self.sandbox = task, sandbox
        self.config = config or ScaffoldConfig()
        self.steps: list[Step] = []
        self.end_reason: EndReason | None = None
        self.submission: str | None = None  # the repository's diff once the episode ended
        self.error: str = ""  # what failed, for SANDBOX_ERROR
        prompts = self.config.prompts
        self.system_prompt = render(
            "system", prompts, window=self.config.window, max_turns=self.config.max_turns
        )
        self.first_message = render(
            "instance",
            prompts,
            repo=task.repo,
            workdir=getattr(sandbox, "workdir", task.workdir) if sandbox.repo is None else "/repo",
            problem_statement=task.problem_statement.strip(),
        )

    @property
    def done(self) -> bool:
        return self.end_reason is not None

    @property
    def turns(self) -> int:
        return len(self.steps)

    @property
    def format_errors(self) -> int:
        return sum(step.format_error is not None for step in self.steps)

    def step(self, reply: str) -> Step:
        """Act on one reply; the returned observation is the next user message."""
        if self.done:
            raise EpisodeEnded(f"the episode already ended ({self.end_reason.value})")
        parsed = parse_reply(reply)
        if isinstance(parsed, Action) and parsed.command.strip() == "submit":
            step = Step(reply, "submit", None, "")
            self.steps.append(step)
            self.end(EndReason.SUBMITTED)
            return step
        try:
            step = self._run(reply, parsed)
        except SandboxError as error:
            step = Step(reply, getattr(parsed, "command", None), None, "")
            self.steps.append(step)
            self.error = str(error)
            self.end(EndReason.SANDBOX_ERROR)
            return step
        self.steps.append(step)
        if self.turns >= self.config.max_turns:
            self.end(EndReason.TURN_LIMIT)
        return step

    def _run(self, reply: str, parsed) -> Step:
        if not isinstance(parsed, Action):
            message = render("format_error", self.config.prompts, problem=parsed.problem)
            return Step(reply, None, parsed.problem, self._with_prompt_line(message))
        command = quote_heredocs(parsed.command)
        result = self.sandbox.run(command, timeout=self.config.command_timeout)
        output = result.output.rstrip("\n")
        if result.timed_out:
            output += (
                f"\n[The command was stopped after {self.config.command_timeout:g} seconds. "
                "Run long jobs with a smaller input, or in the background with a time limit.]"
            )
        elif result.exit_code != 0:
            output += f"\n[exit code {result.exit_code}]"
        if not output.strip():
            output = render("no_output", self.config.prompts)
        observation = truncate_middle(output.strip("\n"), self.config.max_observation_chars)
        return Step(
            reply,
            parsed.command,
            None,
            self._with_prompt_line(observation),
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            seconds=result.seconds,
        )

    def _with_prompt_line(self, text: str) -> str:
        cwd, open_file = self._shell_state()
        line = render("prompt_line", self.config.prompts, open_file=open_file or "n/a", cwd=cwd)
        return text + "\n" + line

    def _shell_state(self) -> tuple[str, str]:
        result = self.sandbox.run(f"pwd; cat {STATE_DIR}/editor.json 2>/dev/null", timeout=30)
        lines = result.output.splitlines()
        cwd = lines[0] if lines else "/repo"
        try:
            open_file = json.loads("\n".join(lines[1:])).get("file") or ""
        except ValueError:
            open_file = ""
        return cwd, open_file

    def end(self, reason: EndReason) -> None:
        """End the episode (idempotent) and record the submission."""
        if self.done:
            return
        self.end_reason = reason
        if reason is EndReason.SANDBOX_ERROR:
            return
        try:
            self.submission = self.sandbox.diff()
        except SandboxError as error:
            self.end_reason, self.error = EndReason.SANDBOX_ERROR, str(error)


# The agent cannot see the future (SWE-bench's history leak): in the repository, every remote,
# tag, stash and branch but the checked-out one goes, with the reflogs and pseudo-refs, and
# commits no longer reachable are pruned from the object store. The pruning repacks only when
# the store holds commits that HEAD does not reach, so a clean repository costs a few git calls.
HIDE_FUTURE = r"""(
git rev-parse -q --verify HEAD > /dev/null 2>&1 || exit 0
set -e
branch=$(git symbolic-ref -q HEAD || true)
for remote in $(git remote); do git remote remove "$remote"; done
git for-each-ref --format='%(refname)' | while read -r ref; do
  [ "$ref" = "$branch" ] || git update-ref -d "$ref"
done
dir=$(git rev-parse --git-dir)
rm -f "$dir/ORIG_HEAD" "$dir/FETCH_HEAD" "$dir/MERGE_HEAD" "$dir/CHERRY_PICK_HEAD" \
  "$dir/REVERT_HEAD" "$dir/info/refs" "$dir/packed-refs.lock"
git reflog expire --expire=now --all
stored=$(git cat-file --batch-all-objects --batch-check='%(objecttype)' |
  grep -c '^commit$' || true)
if [ "$stored" != "$(git rev-list --count HEAD)" ]; then
  git repack -a -d -q
  git prune --expire=now
fi
)"""


def hide_future(sandbox: Sandbox, task: Task) -> None:
    """Remove from the sandbox's repository everything past the checked-out commit."""
    result = sandbox.run(HIDE_FUTURE, timeout=600)
    if result.exit_code != 0:
        raise SandboxError(
            f"task {task.instance_id}: could not remove the repository's later history "
            f"(exit {result.exit_code}): {result.output[-500:]}"
        )


@contextlib.contextmanager
def open_episode(
    task: Task,
    runtime: str = "bwrap",
    config: ScaffoldConfig | None = None,
    limits: SandboxLimits | None = None,
) -> Iterator[Episode]:
    """An episode on a fresh sandbox over the task's repository, its later history removed,
    closed on every way out."""
    config = config or ScaffoldConfig()
    with task_sandbox(task, runtime, limits) as sandbox:
        setup = [f"export SWEJAX_WINDOW={config.window}", *task.setup_commands]
        for command in setup:
            result = sandbox.run(command, timeout=600)
            if result.exit_code != 0:
                raise SandboxError(
                    f"task {task.instance_id}: setup command {command!r} failed "
                    f"(exit {result.exit_code}): {result.output[-500:]}"
                )
        hide_future(sandbox, task)
        yield Episode(task, sandbox, config)
