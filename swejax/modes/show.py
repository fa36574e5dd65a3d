"""`show`: one episode of a trajectory file as a person reads it.

    python -m swejax.main show runs/tiny/eval/trajectories.jsonl --index 3
    python -m swejax.main show runs/tiny/trajectories/iter_00002.jsonl --task ID --group 1
    python -m swejax.main show FILE --list          # a line per episode

A trajectory keeps token ids only (`swejax.rollout.Trajectory`): they are decoded with the
tokenizer of the run that wrote them (--tokenizer, else the config's, else the one named by
the config.json next to the file or one folder up, as `eval` and a run directory keep it), and
the ChatML markup is taken apart into the first message (system prompt and task), then per turn
the reply (its thought and command, or the reply marked as a format error) and the observation
that answered it, then how the episode ended and its submission.

This mode builds no model; the file is read as `swejax.rollout.Trajectory` lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os

from swejax import builder
from swejax.config import Config
from swejax.errors import UserError
from swejax.rollout import Trajectory

SUMMARY = "print one episode of a trajectory file: its turns, observations and outcome"

# Lines shown of each part unless --full (replies are always whole). An observation keeps its
# last lines too: the scaffold ends each with the open file and the current directory.
_SYSTEM_LINES, _TASK_LINES, _PATCH_LINES = 8, 60, 60
_OBSERVATION_HEAD, _OBSERVATION_TAIL = 30, 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="TRAJECTORY_FILE", help="a trajectories .jsonl file")
    parser.add_argument(
        "--index",
        type=int,
        default=0,
        metavar="N",
        help="which episode, from 0 (of those --task/--group pick)",
    )
    parser.add_argument("--task", default="", metavar="ID", help="only this task's episodes")
    parser.add_argument(
        "--group", type=int, default=None, metavar="G", help="only this sample of each task"
    )
    parser.add_argument("--list", action="store_true", help="a line per episode instead")
    parser.add_argument(
        "--full", action="store_true", help="the first message, observations and patch whole"
    )
    parser.add_argument(
        "--tokenizer", default="", metavar="DIR", help="decode with this tokenizer (see below)"
    )
    parser.epilog = (
        "The tokenizer: --tokenizer, else the config's, else the one named by the config.json\n"
        "beside the file or one folder up (an eval folder's, a run directory's), else the\n"
        "built-in one."
    )


# --- reading --------------------------------------------------------------------------------


def read_recorded(path: str) -> list[Trajectory]:
    """Every complete line of `path` as a `Trajectory` (a line cut short by a kill is skipped,
    as `read_trajectories` skips it); a file that is not there or not trajectories is a user
    error naming the line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f if line.endswith("\n")]
    except OSError as error:
        raise UserError(f"cannot read trajectory file {path}: {error.strerror or error}") from None
    names = [field.name for field in dataclasses.fields(Trajectory)]
    episodes = []
    for number, line in enumerate(lines, 1):
        try:
            fields = json.loads(line)
            if not isinstance(fields, dict):
                raise TypeError
            missing = [name for name in names if name not in fields]
            if missing:
                raise KeyError(missing[0])
            trajectory = Trajectory.from_json(line)
            if len(trajectory.tokens) != len(trajectory.loss_mask):
                raise ValueError("tokens and loss_mask differ in length")
        except (ValueError, KeyError, TypeError) as error:
            problems = {KeyError: f"no field {error}", TypeError: "not a JSON object of fields"}
            problem = problems.get(type(error), str(error))
            raise UserError(f"{path} line {number} is not a trajectory ({problem})") from None
        episodes.append(trajectory)
    if not episodes:
        raise UserError(f"{path} holds no trajectory")
    return episodes


def chosen(
    episodes: list[Trajectory], index: int, task: str, group: int | None, path: str
) -> tuple[int, Trajectory]:
    """(its place in the file, the episode): the `index`-th of those of `task` and `group`."""
    places = [
        i
        for i, e in enumerate(episodes)
        if (not task or e.task_id == task) and (group is None or e.group == group)
    ]
    if not places:
        tasks = ", ".join(dict.fromkeys(e.task_id for e in episodes))
        wanted = " and ".join(
            filter(None, [task and f"task {task}", group is not None and f"group {group}"])
        )
        raise UserError(f"no episode of {wanted} in {path}; its tasks: {tasks}")
    if not -len(places) <= index < len(places):
        picked = f" of {len(places)} picked" if len(places) < len(episodes) else ""
        raise UserError(
            f"--index {index}: {path} holds {len(episodes)} episodes{picked} "
            f"(--index 0 to {len(places) - 1})"
        )
    place = places[index]
    return place, episodes[place]


# --- decoding -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Message:
    role: str  # ChatML's: system, user (the task, or an observation), assistant
    text: str


@dataclasses.dataclass(frozen=True)
class Turn:
    number: int  # from 1
    reply: str  # the sampled text, without its <|im_end|>
    sampled: int  # tokens
    closed: bool  # ended by <|im_end|>; else cut off (the reply budget or the context)
    format_error: bool
    observation: list[Message]  # what answered it (none after the last turn)


def _text(tokenizer, ids: list[int]) -> str:
    """The text of `ids`; an id past the tokenizer's vocabulary (the model's can be larger, and
    an untrained one samples there) shows as [token ID] rather than vanishing."""
    size, parts = len(tokenizer), []
    for known, run in itertools.groupby(ids, key=lambda i: 0 <= i < size):
        run = list(run)
        if known:
            parts.append(
                tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            )
        else:
            parts += [f"[token {i}]" for i in run]
    return "".join(parts)


def chat_messages(ids: list[int], tokenizer) -> list[Message]:
    """The ChatML turns of context ids, without the markup: each `<|im_start|>role\n` up to
    the next control token. Split on the control tokens' ids, not on decoded text: a literal
    "<|im_end|>" in a file the agent printed is ordinary text. The empty assistant header that
    opens the next reply is dropped."""
    from swejax.tokenizer import im_end_id, im_start_id

    start, end = im_start_id(tokenizer), im_end_id(tokenizer)
    opens = [i for i, token in enumerate(ids) if token == start]
    messages = []
    for i in opens:
        stop = next((j for j in range(i + 1, len(ids)) if ids[j] in (start, end)), len(ids))
        role, _, body = _text(tokenizer, ids[i + 1 : stop]).partition("\n")
        if role != "assistant" or body.strip():
            messages.append(Message(role, body))
    return messages


def decoded(recorded: Trajectory, tokenizer) -> tuple[list[Message], list[Turn]]:
    """The first message's parts and the turns of an episode."""
    from swejax.tokenizer import im_end_id

    tokens, im_end = recorded.tokens, im_end_id(tokenizer)
    starts = [start for start, _ in recorded.turns] + [len(tokens)]
    prompt = chat_messages(tokens[: starts[0]], tokenizer)
    turns = []
    for number, (start, end) in enumerate(recorded.turns, 1):
        ids = tokens[start:end]
        closed = bool(ids) and ids[-1] == im_end
        observation = chat_messages(tokens[end : starts[number]], tokenizer)
        turns.append(
            Turn(
                number,
                _text(tokenizer, ids[:-1] if closed else ids),
                len(ids),
                closed,
                number - 1 in recorded.format_error_turns,
                observation,
            )
        )
    return prompt, turns


# --- printing -------------------------------------------------------------------------------


def shortened(text: str, head: int, full: bool, tail: int = 0) -> str:
    """`text`, or its first `head` and last `tail` lines around how many more --full shows."""
    kept = text.rstrip("\n").split("\n")
    if full or len(kept) <= head + tail:
        return "\n".join(kept)
    cut = f"[... {len(kept) - head - tail} more lines: --full shows them]"
    return "\n".join([*kept[:head], cut, *kept[len(kept) - tail :]])


def _heading(title: str) -> str:
    return f"=== {title} ==="


def _reply_lines(turn: Turn) -> list[str]:
    from swejax.env.scaffold import FormatError, parse_reply

    parsed = parse_reply(turn.reply)
    cut = [] if turn.closed else ["[the reply was cut off before <|im_end|>]"]
    if turn.format_error or isinstance(parsed, FormatError):
        problem = parsed.problem if isinstance(parsed, FormatError) else "see the observation"
        mark = "FORMAT ERROR" if turn.format_error else "no command ran"
        return [f"[{mark}: {problem}]", turn.reply.rstrip("\n"), *cut]
    thought = [parsed.thought] if parsed.thought else []
    return [*thought, "--- command ---", parsed.command, *cut]


def episode_text(
    recorded: Trajectory, place: int, count: int, path: str, tokenizer, full: bool
) -> str:
    """The whole episode as the mode prints it."""
    prompt, turns = decoded(recorded, tokenizer)
    errors = len(recorded.format_error_turns)
    sampled = sum(recorded.loss_mask)
    out = [
        f"episode  {place} (of {count} in {path}, counted from 0)",
        f"task     {recorded.task_id} (group {recorded.group})",
        f"turns    {len(turns)}, format errors {errors}; "
        f"{len(recorded.tokens)} tokens, {sampled} sampled",
        "",
    ]
    prompt_tokens = recorded.turns[0][0] if recorded.turns else len(recorded.tokens)
    out.append(_heading(f"first message ({prompt_tokens} tokens)"))
    for message in prompt:
        limit = _SYSTEM_LINES if message.role == "system" else _TASK_LINES
        out += [f"[{message.role}]", shortened(message.text, limit, full)]
    for turn in turns:
        mark = ", FORMAT ERROR" if turn.format_error else ""
        out += ["", _heading(f"turn {turn.number}: assistant, {turn.sampled} tokens{mark}")]
        out += _reply_lines(turn)
        for message in turn.observation:
            out += [f"--- observation {turn.number} ---"]
            out += [shortened(message.text, _OBSERVATION_HEAD, full, _OBSERVATION_TAIL)]
    out += ["", _heading("end")]
    out += [
        f"ended     {recorded.end_reason or 'unknown'}",
        f"resolved  {'yes' if recorded.resolved else 'no'}",
        f"reward    {recorded.reward:.3f}",
    ]
    if recorded.infrastructure_error:
        out.append(f"infrastructure error (kept out of training): {recorded.infrastructure_error}")
    patch = recorded.submission
    patch_lines = len(patch.rstrip("\n").split("\n")) if patch else 0
    out += ["", _heading(f"submission ({patch_lines} lines)")]
    out.append(shortened(patch, _PATCH_LINES, full) if patch else "(empty)")
    return "\n".join(out)


def _list_lines(episodes: list[Trajectory]) -> list[str]:
    width = max(len(e.task_id) for e in episodes)
    lines = [f"{'index':>5}  {'task':<{width}}  group  turns  resolved  reward  ended"]
    for i, e in enumerate(episodes):
        lines.append(
            f"{i:>5}  {e.task_id:<{width}}  {e.group:>5}  {len(e.turns):>5}  "
            f"{'yes' if e.resolved else 'no':<8}  {e.reward:>6.3f}  {e.end_reason}"
        )
    return lines


# --- the tokenizer --------------------------------------------------------------------------


def _saved_run_config(path: str) -> dict:
    """The config.json beside the file or one folder up (an eval folder, a run directory)."""
    folder = os.path.dirname(os.path.abspath(path))
    for candidate in (folder, os.path.dirname(folder)):
        saved = os.path.join(candidate, "config.json")
        if os.path.isfile(saved):
            with open(saved) as f:
                return json.load(f)
    return {}


def tokenizer_dir(config: Config, options: argparse.Namespace) -> str | None:
    """--tokenizer, else the config's (--config, --config.tokenizer), else the one of the run
    that wrote the file; None: the built-in tokenizer."""
    if options.tokenizer:
        return options.tokenizer
    configured = builder.tokenizer_dir(config)
    if configured or options.config:
        return configured
    saved = _saved_run_config(options.file)
    checkpoint = saved.get("model", {}).get("checkpoint", "")
    model = dataclasses.replace(config.model, checkpoint=checkpoint)
    return builder.tokenizer_dir(
        dataclasses.replace(config, tokenizer=saved.get("tokenizer", ""), model=model)
    )


def _tokenizer(directory: str | None, episode: Trajectory):
    """The tokenizer, checked against the episode's context (what the environment wrote, never
    sampled): it opens with this tokenizer's <|im_start|> and has no id past its vocabulary."""
    from swejax.tokenizer import im_start_id, load_tokenizer

    tokenizer = builder.from_user_input("cannot load the tokenizer", load_tokenizer, directory)
    context = [
        t for t, sampled in zip(episode.tokens, episode.loss_mask, strict=True) if not sampled
    ]
    if context and (context[0] != im_start_id(tokenizer) or max(context) >= len(tokenizer)):
        raise UserError(
            f"the episode was not written with the {directory or 'built-in'} tokenizer "
            f"({len(tokenizer)} tokens; its prompt is not this tokenizer's ChatML): "
            "pass the run's --config or --tokenizer DIR"
        )
    return tokenizer


def run(config: Config, options: argparse.Namespace) -> int:
    episodes = read_recorded(options.file)
    if options.list:
        print("\n".join(_list_lines(episodes)))
        return 0
    place, episode = chosen(episodes, options.index, options.task, options.group, options.file)
    tokenizer = _tokenizer(tokenizer_dir(config, options), episode)
    print(episode_text(episode, place, len(episodes), options.file, tokenizer, options.full))
    return 0
