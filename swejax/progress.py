"""Progress of the long stages, one way for all of them: rollouts and evaluations, RFT's
demonstrations and steps, DAPO iterations, validate-tasks, synthesis, weight loading.

    with Report("eval (rft)", total=32, unit="episode", process=this_process()) as report:
        ...
        report.advance(tokens=sampled_so_far)       # after each episode

    for index in reported(range(3, 10), "dapo iterations", "iteration", done=3):
        ...                                         # a resumed loop: 3 of 10 were done before

On a terminal (stderr a tty, one process) it is a tqdm bar: done/total, rate, tokens/s, time
left. Anywhere else (a file, a pipe, a pod's processes) it is plain lines, without carriage
returns or colours, at a cadence a log can keep:

    eval (rft): 0/32 episodes
    eval (rft): 12/32 episodes, 3.5 s/episode, 310 tokens/s, 0:42 left
    eval (rft): 32/32 episodes in 1:52, 3.5 s/episode, 305 tokens/s

a line at the start, when the first item is done, then after `MAX_GAP_S` or after
`STEP_SHARE` of the total (but not within `MIN_GAP_S` of the last line), and at the end.
The lines go to the `swejax.progress` logger, so they reach stderr with the rest of swejax's
log and the run's log file (`RunDirectory.log_to_file`); under a bar only the log file gets
them. With many processes each reports its own share, named: `eval (rft) [process 1 of 2]: ...`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from tqdm.auto import tqdm

MIN_GAP_S = 10.0  # no two lines closer than this, but the first item's and the last
MAX_GAP_S = 30.0  # a line at the first item done this long after the last line
STEP_SHARE = 0.1  # ... or once this share of the total more is done

logger = logging.getLogger("swejax.progress")
_Item = TypeVar("_Item")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Where a stage stands: what one progress line says."""

    what: str  # e.g. "eval (rft)"
    unit: str  # singular: "episode"
    done: int
    total: int
    seconds: float  # since the report began
    resumed: int = 0  # done before it began (a resumed run's iterations): not in the rates
    tokens: int | None = None  # produced since it began, for tokens/s
    finished: bool = False

    @property
    def seconds_per_item(self) -> float | None:
        counted = self.done - self.resumed
        return self.seconds / counted if counted > 0 else None

    @property
    def seconds_left(self) -> float | None:
        per_item = self.seconds_per_item
        return None if per_item is None else per_item * max(0, self.total - self.done)


def clock_text(seconds: float) -> str:
    """0:42, 12:05, 1:02:03."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def rate_text(seconds_per_item: float, unit: str) -> str:
    """Slow items as seconds each, fast ones as items per second."""
    if seconds_per_item >= 1.0:
        return f"{seconds_per_item:.1f} s/{unit}"
    return f"{1.0 / max(seconds_per_item, 1e-9):.1f} {unit}s/s"


def progress_line(s: Snapshot) -> str:
    """One plain line, e.g. `eval (rft): 12/32 episodes, 3.5 s/episode, 310 tokens/s, 0:42
    left`; a finished stage says how long it took instead of what is left."""
    count = f"{s.done}/{s.total} {s.unit}s"
    parts = [f"{count} in {clock_text(s.seconds)}" if s.finished else count]
    per_item = s.seconds_per_item
    if per_item is not None:
        parts.append(rate_text(per_item, s.unit))
    if s.tokens is not None and s.seconds > 0:
        parts.append(f"{s.tokens / s.seconds:.0f} tokens/s")
    left = s.seconds_left
    if left is not None and not s.finished and s.done < s.total:
        parts.append(f"{clock_text(left)} left")
    return f"{s.what}: {', '.join(parts)}"


def line_due(now: float, last_at: float, done: int, last_done: int, first: int, total: int) -> bool:
    """Whether advancing to `done` items at `now` earns a line, the last one having been at
    `last_at` with `last_done` done; `first` is where the report began."""
    if done >= total or last_done == first:  # the end, or the first item done
        return True
    gap = now - last_at
    return gap >= MAX_GAP_S or (gap >= MIN_GAP_S and done - last_done >= STEP_SHARE * total)


def this_process() -> tuple[int, int]:
    """(index, count) of this process among the run's; after `swejax.distributed.start`."""
    from swejax import distributed

    return distributed.process_index(), distributed.process_count()


def log_line(line: str, files_only: bool = False) -> None:
    """`line` to the `swejax.progress` logger; `files_only`: only to the log files its records
    reach (a bar holds the terminal)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    if not files_only:
        logger.info(line)
        return
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, line, None, None)
    for handler in _log_file_handlers():
        if record.levelno >= handler.level:
            handler.handle(record)


def _log_file_handlers() -> list[logging.FileHandler]:
    handlers, node = [], logger
    while node is not None:
        handlers += [h for h in node.handlers if isinstance(h, logging.FileHandler)]
        node = node.parent if node.propagate else None
    return handlers


class Report:
    """The progress of one stage of `total` items (see the module docstring).

    `done`: items done before it began (a resumed loop); `process`: (index, count), named in
    the lines when there are many; `bar`: a tqdm bar instead of lines on stderr (None: when
    stderr is a terminal and there is one process); `lines`: where the plain lines go (default
    `log_line`); `quiet`: nothing at all. `clock` is injectable for tests."""

    def __init__(
        self,
        what: str,
        total: int,
        unit: str,
        *,
        done: int = 0,
        process: tuple[int, int] = (0, 1),
        bar: bool | None = None,
        lines: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        quiet: bool = False,
    ):
        index, count = process
        self.what = what + (f" [process {index} of {count}]" if count > 1 else "")
        self.total, self.unit, self.done, self.first = total, unit, done, done
        self.tokens: int | None = None
        self._clock, self._began = clock, clock()
        self._quiet, self._closed = quiet, quiet
        if bar is None:
            bar = count == 1 and sys.stderr.isatty()
        self._bar = None
        if bar and not quiet:
            self._bar = tqdm(
                total=total, initial=done, desc=what, unit=unit, leave=False, dynamic_ncols=True
            )
        if lines is None:
            lines = (lambda line: log_line(line, files_only=True)) if self._bar else log_line
        self._lines = lines
        self._last_at, self._last_done = self._began, done
        self._say()  # that it began, and how much there is

    def snapshot(self, finished: bool = False) -> Snapshot:
        seconds = self._clock() - self._began
        return Snapshot(
            self.what, self.unit, self.done, self.total, seconds, self.first, self.tokens, finished
        )

    def advance(self, items: int = 1, tokens: int | None = None) -> None:
        """`items` more done; `tokens`: those produced since the report began (a running count
        such as the engine's sampled tokens), for tokens/s."""
        if self._closed:
            return
        self.done += items
        if tokens is not None:
            self.tokens = tokens
        if self._bar is not None:
            self._bar.update(items)
            if self.tokens is not None:
                seconds = max(self._clock() - self._began, 1e-9)
                self._bar.set_postfix_str(f"{self.tokens / seconds:.0f} tokens/s")
        now = self._clock()
        if self.done >= self.total:
            self.close()
        elif line_due(now, self._last_at, self.done, self._last_done, self.first, self.total):
            self._say()
            self._last_at, self._last_done = now, self.done

    def close(self) -> None:
        """The last line (also for a stage that stops short of its total); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        self._say(finished=True)

    def _say(self, finished: bool = False) -> None:
        if not self._quiet:
            self._lines(progress_line(self.snapshot(finished)))

    def __enter__(self) -> Report:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def reported(items: Sequence[_Item], what: str, unit: str, **options) -> Iterator[_Item]:
    """`items` one by one, each counted done once the caller asks for the next; `options` as
    `Report` takes them (with `done`, the total is `done + len(items)`)."""
    total = options.get("done", 0) + len(items)
    with Report(what, total, unit, **options) as report:
        for item in items:
            yield item
            report.advance()
