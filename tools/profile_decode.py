"""Where a decode step's time goes: device time per operation, from a profiler trace.

    python tools/profile_decode.py --preset qwen2.5-7b --layers 0 --dtype bfloat16 --batch 1

Runs one decode call of `--steps` steps under `jax.profiler` (with a Perfetto trace), then sums
the device events by name and prints one JSON object: the top operations by total time per
step, and the total device time per step against the wall time per step (the rest is launch
overhead and idle device).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np

from swejax.models import build_model, preset
from swejax.sampling import Engine, EngineConfig, SamplingParams


def device_op_times(trace_file: str) -> tuple[dict[str, float], float]:
    """Total microseconds per event name on device lanes, and the device lanes' busy time."""
    with gzip.open(trace_file, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    process_names = {
        e["pid"]: e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    device_pids = {
        pid for pid, name in process_names.items() if "/device:" in name and "CPU" not in name
    }
    on_host = not device_pids
    if on_host:  # CPU: the ops run on host threads, beside Python's events (named "$...")
        device_pids = {pid for pid, name in process_names.items() if "host" in name.lower()}
    totals: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("ph") != "X" or e.get("pid") not in device_pids:
            continue
        if on_host and (e["name"].startswith("$") or "::" in e["name"]):
            continue
        totals[e["name"]] += float(e.get("dur", 0.0))
    return dict(totals), sum(totals.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--layers", type=int, default=0, help="0 = the preset's depth")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--split-layers", type=int, default=1, choices=[0, 1])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep-trace", default="", help="copy the trace file here")
    args = parser.parse_args(argv)

    cfg = preset(args.preset, dtype=args.dtype, param_dtype=args.dtype)
    if args.layers:
        cfg = cfg.replace(num_layers=args.layers)
    model = build_model(cfg, seed=0)
    capacity = args.prompt + 2 * args.steps + 1
    config = EngineConfig(
        num_slots=args.batch,
        capacity=capacity,
        page_size=capacity,
        chunk=args.prompt,
        ingest_rows=min(args.batch, 32),
        steps_per_call=args.steps,
        split_layer_weights=bool(args.split_layers),
    )
    engine = Engine(model, config, SamplingParams(temperature=0.0))
    engine.warm_up()
    prompts = np.random.default_rng(0).integers(0, cfg.vocab_size, (args.batch, args.prompt))
    engine.prefill_many([(slot, prompts[slot].tolist()) for slot in range(args.batch)])

    def one_call() -> float:
        for slot in range(args.batch):
            engine.start_turn(slot, args.steps)
        jax.block_until_ready(engine.state)
        start = time.perf_counter()
        engine.decode()
        return time.perf_counter() - start

    one_call()  # compiled and warm
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            wall = one_call()
        (trace_file,) = glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True)
        if args.keep_trace:
            os.makedirs(args.keep_trace, exist_ok=True)
            os.replace(trace_file, os.path.join(args.keep_trace, os.path.basename(trace_file)))
            trace_file = os.path.join(args.keep_trace, os.path.basename(trace_file))
        totals, busy = device_op_times(trace_file)
    us_to_ms_per_step = 1e-3 / args.steps  # trace durations are microseconds per call
    top = sorted(totals.items(), key=lambda kv: -kv[1])[: args.top]
    result = {
        "bench": "profile_decode",
        "device": jax.devices()[0].device_kind,
        "preset": args.preset,
        "layers": cfg.num_layers,
        "batch": args.batch,
        "split_layer_weights": bool(args.split_layers),
        "wall_ms_per_step": 1e3 * wall / args.steps,
        "device_busy_ms_per_step": busy * us_to_ms_per_step,
        "top_ops_ms_per_step": [
            {"name": name[:160], "ms": total * us_to_ms_per_step} for name, total in top
        ],
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
