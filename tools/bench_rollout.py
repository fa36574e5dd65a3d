"""Rollout throughput with sandboxes stepped beside decoding, against strict alternation.

    python tools/bench_rollout.py                       # tiny model, built-in tasks, bwrap
    python tools/bench_rollout.py --preset small --slots 16 --episodes 32

Both runs take the same jobs, seed and engine (compiled once, before timing). The overlapped run
steps a slot's sandbox in a thread pool while the other slots keep decoding; the alternating run
waits for every pending sandbox step before each decode call. Prints one JSON object: wall time,
episodes and sampled tokens per second, and the accelerator's idle fraction (time no slot was
sampling) for each, and the speedup.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax

from swejax.config import RolloutConfig
from swejax.env.scaffold import ScaffoldConfig
from swejax.models import build_model, preset
from swejax.rollout import EpisodeEnv, RolloutRunner
from swejax.sampling import Engine, EngineConfig, SamplingParams
from swejax.tasks import builtin_tasks
from swejax.tokenizer import im_end_id, load_tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--reply-tokens", type=int, default=64)
    parser.add_argument("--runtime", default="bwrap")
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer()
    model = build_model(preset(args.preset, dtype="float32", param_dtype="float32"), seed=0)
    engine = Engine(
        model,
        EngineConfig(
            num_slots=args.slots,
            capacity=2048,
            page_size=64,
            chunk=512,
            steps_per_call=16,
            stop_tokens=(im_end_id(tokenizer),),
        ),
        SamplingParams(temperature=1.0),
    )
    engine.warm_up()
    tasks = builtin_tasks()
    jobs = [(tasks[i % len(tasks)], i // len(tasks)) for i in range(args.episodes)]
    rollout = RolloutConfig(max_reply_tokens=args.reply_tokens, workers=args.slots)
    scaffold = ScaffoldConfig(max_turns=args.turns, prompts="compact", window=20)
    env = EpisodeEnv(args.runtime, scaffold, l_thr=1)
    result: dict = {"bench": "rollout", "device": jax.devices()[0].device_kind, **vars(args)}
    # Warm: every shape compiled.
    RolloutRunner(engine, tokenizer, rollout, env).run(jobs[: args.slots])
    for name, overlap in (("overlapped", True), ("alternating", False)):
        engine.reseed(0)
        runner = RolloutRunner(engine, tokenizer, rollout, env, overlap=overlap)
        trajectories, stats = runner.run(jobs)
        result[name] = {
            "wall_s": stats.wall_s,
            "episodes_per_s": len(trajectories) / stats.wall_s,
            "sampled_tokens_per_s": stats.sampled_tokens / stats.wall_s,
            "idle_fraction": stats.idle_fraction,
        }
    result["speedup"] = result["alternating"]["wall_s"] / result["overlapped"]["wall_s"]
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
