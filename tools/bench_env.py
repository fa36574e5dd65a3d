"""Environment overhead: sandbox start-up, command round trip, a whole scripted episode, grading.

    python tools/bench_env.py                        # bwrap, and docker when an engine is up
    python tools/bench_env.py --runtimes bwrap --repeat 20

Prints one JSON object with, per runtime, the median seconds of: opening and closing a sandbox
over a task's repository; a trivial command (`true`); an editor command (`open`); a scripted
episode that applies the gold patch with `edit` commands and submits; and grading it. A
`--turns`-turn episode's environment time (start-up plus one step per turn) is set against the
time a model decoding `--decode-tokens-per-s` (default: the 7B at batch 1 on an H100) spends on
its replies (`--reply-tokens` each): below 1, the environment, overlapped with decoding, keeps up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from swejax.config import ScaffoldConfig
from swejax.env._task_sandbox import task_sandbox
from swejax.env.grading import GradeResult, grade
from swejax.env.scaffold import open_episode, patch_commands
from swejax.rollout import EpisodeEnv, ScriptedPolicy, run_episode
from swejax.tasks import builtin_tasks
from swejax.tokenizer import load_tokenizer


def _median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _docker_ready() -> bool:
    try:
        import docker

        docker.from_env(timeout=10).ping()
        return True
    except Exception:
        return False


def _not_graded(task, submission: str, runtime: str) -> GradeResult:
    return GradeResult(False, {}, False, ())


def bench_runtime(task, runtime: str, repeat: int) -> dict:
    def open_close() -> None:
        with task_sandbox(task, runtime):
            pass

    row = {"runtime": runtime, "open_close_s": _median_seconds(open_close, max(3, repeat // 4))}
    with task_sandbox(task, runtime) as sandbox:
        path = task.patch.split(" b/", 1)[1].split("\n", 1)[0]
        row["command_true_s"] = _median_seconds(lambda: sandbox.run("true"), repeat)
        row["command_open_s"] = _median_seconds(lambda: sandbox.run(f"open {path}"), repeat)
    with open_episode(task, runtime) as open_one:
        # One turn as the rollout sees it: the command, then the prompt line's state query.
        row["turn_s"] = _median_seconds(lambda: open_one.step("```command\nls\n```"), 5)
    commands = patch_commands(task.patch)

    replies = [f"Fix.\n```command\n{c}\n```" for c in commands] + ["```command\nsubmit\n```"]
    tokenizer = load_tokenizer()
    # The episode alone: its grading is timed on its own below.
    env = EpisodeEnv(runtime, ScaffoldConfig(), l_thr=10, grader=_not_graded)

    start = time.perf_counter()
    ended = run_episode(task, ScriptedPolicy(replies, tokenizer), env, tokenizer).episode
    row["episode_s"] = time.perf_counter() - start
    row["episode_turns"] = ended.turns
    start = time.perf_counter()
    row["resolved"] = grade(task, ended.submission, runtime).resolved
    row["grade_s"] = time.perf_counter() - start
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", default="bwrap,docker")
    parser.add_argument("--task", default="swejax__b_roman_repeat")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--decode-tokens-per-s", type=float, default=173.0)
    parser.add_argument("--reply-tokens", type=int, default=300)
    parser.add_argument("--turns", type=int, default=40, help="episode length for the ratio")
    args = parser.parse_args(argv)

    (task,) = [t for t in builtin_tasks() if t.instance_id == args.task]
    result: dict = {"bench": "env", "task": task.instance_id, "runtimes": []}
    for runtime in args.runtimes.split(","):
        if runtime == "docker" and not _docker_ready():
            result["runtimes"].append({"runtime": "docker", "skipped": "no Docker engine"})
            continue
        row = bench_runtime(task, runtime, args.repeat)
        # A T_max-turn episode: start-up and every turn's environment time, against the time
        # to decode its replies.
        decode_s = args.reply_tokens / args.decode_tokens_per_s
        env_s = row["open_close_s"] + args.turns * row["turn_s"]
        row["decode_s_per_turn"] = decode_s
        row[f"env_s_per_{args.turns}_turn_episode"] = env_s
        row["env_over_decode"] = env_s / (args.turns * decode_s)
        result["runtimes"].append(row)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
