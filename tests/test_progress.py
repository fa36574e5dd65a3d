"""Progress off a terminal: plain lines with done/total, rate, tokens/s and time left, at a
cadence a log can keep (an injected clock), and into the run's log file under a bar."""

import io
import logging

import pytest

from swejax import progress
from swejax.progress import Report, Snapshot, clock_text, progress_line, reported


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _report(total, clock, lines, **options):
    return Report(
        "eval (rft)", total, "episode", bar=False, lines=lines.append, clock=clock, **options
    )


def test_a_line_says_done_of_total_rate_tokens_per_second_and_time_left():
    line = progress_line(Snapshot("eval (rft)", "episode", 12, 32, seconds=42.0, tokens=13020))
    assert line == "eval (rft): 12/32 episodes, 3.5 s/episode, 310 tokens/s, 1:10 left"
    done = Snapshot("eval (rft)", "episode", 32, 32, seconds=112.0, tokens=34160, finished=True)
    assert progress_line(done) == "eval (rft): 32/32 episodes in 1:52, 3.5 s/episode, 305 tokens/s"
    fast = Snapshot("loading ckpt", "weight", 50, 300, seconds=2.0)
    assert progress_line(fast) == "loading ckpt: 50/300 weights, 25.0 weights/s, 0:10 left"
    assert progress_line(Snapshot("rft", "step", 0, 8, seconds=0.0)) == "rft: 0/8 steps"
    assert [clock_text(s) for s in (42, 725, 3723)] == ["0:42", "12:05", "1:02:03"]


def test_lines_come_at_the_start_the_first_item_every_tenth_and_the_end():
    clock, lines = FakeClock(), []
    report = _report(100, clock, lines)
    assert lines == ["eval (rft): 0/100 episodes"]
    clock.now += 5
    report.advance(tokens=500)  # the first item: at once
    assert lines[-1] == "eval (rft): 1/100 episodes, 5.0 s/episode, 100 tokens/s, 8:15 left"
    for _ in range(20):  # 20 more in 4 s: under the minimal gap, no line
        clock.now += 0.2
        report.advance()
    assert len(lines) == 2
    clock.now += 10
    report.advance()  # 10 s later and over a tenth more done: a line
    assert len(lines) == 3 and lines[-1].startswith("eval (rft): 22/100 episodes, ")
    clock.now += 29
    report.advance()  # one more after 29 s: neither a tenth nor the longest gap
    assert len(lines) == 3
    clock.now += 1
    report.advance()  # 30 s since the last line: one, whatever was done
    assert len(lines) == 4 and lines[-1].startswith("eval (rft): 24/100 episodes, ")
    report.advance(76)
    assert len(lines) == 5 and lines[-1].startswith("eval (rft): 100/100 episodes in 0:49, ")
    report.close()  # the end was said once
    assert len(lines) == 5
    assert not any("\r" in line or "\x1b" in line for line in lines)


def test_a_resumed_loop_counts_its_pace_from_where_it_began():
    clock, lines = FakeClock(), []
    options = {"done": 4, "bar": False, "lines": lines.append, "clock": clock}
    for index in reported(range(4, 10), "dapo", "iteration", **options):
        clock.now += 60
        assert index >= 4
    assert lines[0] == "dapo: 4/10 iterations"
    assert lines[1] == "dapo: 5/10 iterations, 60.0 s/iteration, 5:00 left"
    assert lines[-1] == "dapo: 10/10 iterations in 6:00, 60.0 s/iteration"


def test_a_stage_that_stops_short_still_ends_with_a_line():
    clock, lines = FakeClock(), []
    with pytest.raises(KeyboardInterrupt), _report(8, clock, lines) as report:
        clock.now += 3
        report.advance()
        raise KeyboardInterrupt
    assert lines[-1] == "eval (rft): 1/8 episodes in 0:03, 3.0 s/episode"
    lines.clear()
    for _ in reported([1, 2, 3], "x", "task", bar=False, lines=lines.append, clock=clock):
        break  # the caller stops early: the generator's close still ends the report
    assert lines == ["x: 0/3 tasks", "x: 0/3 tasks in 0:00"]


def test_many_processes_name_their_share_and_quiet_says_nothing():
    clock, lines = FakeClock(), []
    _report(16, clock, lines, process=(1, 2)).close()
    assert lines[0] == "eval (rft) [process 1 of 2]: 0/16 episodes"
    lines.clear()
    report = _report(4, clock, lines, quiet=True)
    report.advance(4)
    report.close()
    assert lines == []


def test_lines_reach_the_log_and_under_a_bar_only_its_files(tmp_path):
    swejax_logger = logging.getLogger("swejax")
    file_handler = logging.FileHandler(tmp_path / "process_0.log")
    stream = io.StringIO()
    stream_handler = logging.StreamHandler(stream)
    level = swejax_logger.level
    swejax_logger.addHandler(file_handler)
    swejax_logger.addHandler(stream_handler)
    swejax_logger.setLevel(logging.INFO)
    try:
        progress.log_line("validate-tasks: 1/2 tasks")
        progress.log_line("validate-tasks: 2/2 tasks in 0:01", files_only=True)
    finally:
        swejax_logger.removeHandler(file_handler)
        swejax_logger.removeHandler(stream_handler)
        swejax_logger.setLevel(level)
        file_handler.close()
    assert stream.getvalue() == "validate-tasks: 1/2 tasks\n"
    logged = (tmp_path / "process_0.log").read_text().splitlines()
    assert logged == ["validate-tasks: 1/2 tasks", "validate-tasks: 2/2 tasks in 0:01"]
