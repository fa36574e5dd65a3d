"""What many processes cost on one machine, as 1 process x 8 CPU devices and as 2 processes x 4
(tools/launch_local.py): rollout throughput of the reduced main job's DAPO iterations (from each
run's metrics), and the seconds of one train step on the same global batch (tools/bench_train.py:
the tiny model, 8 rows of 512 tokens). Both share this machine's cores, so this measures the
multi-controller overhead (lockstep rounds, all-gathers, gloo), not a speedup.

    python tools/bench_pods.py [--iterations 2] [--out bench_pods.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB = [
    "--config.tasks.train=swejax__b_mdtable_empty,swejax__b_paginator",
    "--config.rft.epochs=2",
    "--config.dapo.tasks_per_iteration=2",
    "--config.dapo.group_size=4",
    "--config.eval.runs=0",
]


TRAIN = ["--preset=tiny", "--seq=512", "--rows=8", "--attention=reference", "--dtype=float32"]


def _command(processes: int, command: list[str], log_dir: str) -> tuple[list[str], dict]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if processes == 1:
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        return command, env
    launcher = [sys.executable, os.path.join(ROOT, "tools", "launch_local.py")]
    launcher += [f"--processes={processes}", f"--devices={8 // processes}"]
    return [*launcher, f"--log-dir={log_dir}", "--", *command], env


def train_step(processes: int, scratch: str, steps: int) -> dict:
    out = os.path.join(scratch, f"train_{processes}.json")
    bench = [sys.executable, os.path.join(ROOT, "tools", "bench_train.py"), *TRAIN]
    command, env = _command(processes, [*bench, f"--steps={steps}", f"--out={out}"], scratch)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        failed = done.stderr[-3000:]
        raise SystemExit(f"the train step on {processes} process(es) failed:\n{failed}")
    with open(out) as f:
        result = json.load(f)
    return {k: result[k] for k in ("processes", "num_devices", "rows", "seq", "step_s", "loss")}


def run(processes: int, run_dir: str, iterations: int) -> dict:
    job = [*JOB, f"--config.dapo.iterations={iterations}", f"--config.run_dir={run_dir}"]
    command, env = _command(
        processes, [sys.executable, "-m", "swejax.main", "train", *job], f"{run_dir}/launch"
    )
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(run_dir, "tiny", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    dapo = [r for r in rows if r["kind"] == "dapo"][1:]  # the first iteration compiles
    rollout_s = sum(r["rollout_s"] for r in dapo)
    return {
        "processes": processes,
        "devices_per_process": 8 // processes,
        "wall_s": round(wall, 1),
        "iterations_timed": len(dapo),
        "rollout_tokens_per_s": round(sum(r["tokens"] for r in dapo) / rollout_s, 1),
        "rollout_s": round(rollout_s, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed train steps")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.iterations < 2:
        parser.error("--iterations must be at least 2 (the first one compiles and is not timed)")
    with tempfile.TemporaryDirectory() as scratch:
        results = [run(p, os.path.join(scratch, str(p)), args.iterations) for p in (1, 2)]
        steps = [train_step(p, scratch, args.steps) for p in (1, 2)]
    one, two = results
    report = {
        "machine": f"{os.cpu_count()} CPU cores",
        "runs": results,
        "rollout_throughput_2_over_1": round(
            two["rollout_tokens_per_s"] / one["rollout_tokens_per_s"], 3
        ),
        "train_steps": steps,
        "train_step_time_2_over_1": round(steps[1]["step_s"] / steps[0]["step_s"], 3),
        # The same global batch and weights: the loss agrees to float rounding.
        "train_loss_difference": abs(steps[1]["loss"] - steps[0]["loss"]),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
