"""What many processes cost on one machine: the reduced main job as 1 process x 8 CPU devices
and as 2 processes x 4 (tools/launch_local.py), rollout and train-step throughput of its DAPO
iterations from each run's metrics. Both share this machine's cores, so this measures the
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


def run(processes: int, run_dir: str, iterations: int) -> dict:
    job = [*JOB, f"--config.dapo.iterations={iterations}", f"--config.run_dir={run_dir}"]
    command = [sys.executable, "-m", "swejax.main", "train", *job]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if processes == 1:
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    else:
        launcher = [sys.executable, os.path.join(ROOT, "tools", "launch_local.py")]
        launcher += [f"--processes={processes}", f"--devices={8 // processes}"]
        command = [*launcher, f"--log-dir={run_dir}/launch", "--", *command]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(run_dir, "tiny", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    dapo = [r for r in rows if r["kind"] == "dapo"][1:]  # the first iteration compiles
    rollout_s = sum(r["rollout_s"] for r in dapo)
    train_s = sum(r["train_s"] for r in dapo)
    steps = sum(r["optimizer_steps"] for r in dapo)
    return {
        "processes": processes,
        "devices_per_process": 8 // processes,
        "wall_s": round(wall, 1),
        "iterations_timed": len(dapo),
        "rollout_tokens_per_s": round(sum(r["tokens"] for r in dapo) / rollout_s, 1),
        "rollout_s": round(rollout_s, 2),
        "train_s": round(train_s, 2),
        "optimizer_steps": steps,
        # None when the timed iterations filtered out every trajectory (no step to time).
        "train_s_per_step": round(train_s / steps, 3) if steps else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.iterations < 2:
        parser.error("--iterations must be at least 2 (the first one compiles and is not timed)")
    with tempfile.TemporaryDirectory() as scratch:
        results = [run(p, os.path.join(scratch, str(p)), args.iterations) for p in (1, 2)]
    one, two = results
    report = {
        "runs": results,
        "rollout_throughput_2_over_1": round(
            two["rollout_tokens_per_s"] / one["rollout_tokens_per_s"], 3
        ),
        "train_step_time_2_over_1": (
            round(two["train_s_per_step"] / one["train_s_per_step"], 3)
            if one["train_s_per_step"] and two["train_s_per_step"]
            else None
        ),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
