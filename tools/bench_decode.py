"""Decode throughput and multi-turn prefill cost of the generation engine.

    python tools/bench_decode.py                      # CPU: against transformers' generate
    python tools/bench_decode.py --no-hf --preset qwen2.5-1.5b --layers 0 --dtype bfloat16 \
        --batch 1,8,64,256 --prompt 128 --new 128     # GPU: tokens/s against the HBM roofline

Prints one JSON object:
- `decode`: per batch size, new tokens per second of swejax (prefill included, as transformers'
  `generate` includes it) and of transformers on the same weights, and their ratio;
- `multi_turn`: a synthetic episode of `--turns` turns (sample a reply, append an observation):
  tokens the model ran over divided by the trajectory length (1.0 means no token was ever
  recomputed), and the wall time against re-prefilling the whole context every turn;
- with `--hbm-gbps`, the memory-bandwidth roofline of a decode step: (weight bytes + KV bytes
  read) / bandwidth, next to the measured step time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import jax
import numpy as np

from swejax.models import build_model, count_params, load_hf_checkpoint, preset, to_hf_config
from swejax.sampling import Engine, EngineConfig, SamplingParams
from swejax.sampling._engine import cache_bytes_per_token


def _swejax_generate(model, prompts: np.ndarray, new_tokens: int, page_size: int) -> float:
    """Seconds to prefill `prompts` and greedily decode `new_tokens` for each (compiled first)."""
    batch, prompt_len = prompts.shape
    config = EngineConfig(
        num_slots=batch,
        capacity=prompt_len + new_tokens,
        page_size=page_size,
        chunk=min(512, prompt_len),
        ingest_rows=min(batch, 32),
        steps_per_call=new_tokens,
    )
    engine = Engine(model, config, SamplingParams(temperature=0.0))
    engine.warm_up()

    def run() -> float:
        start = time.perf_counter()
        engine.prefill_many([(slot, prompts[slot].tolist()) for slot in range(batch)])
        for slot in range(batch):
            engine.start_turn(slot, new_tokens)
        while engine.decode().stopped.sum() < batch:
            pass
        return time.perf_counter() - start

    run()  # every program compiled and cached
    return min(run() for _ in range(2))


def _hf_generate(hf, prompts: np.ndarray, new_tokens: int) -> float:
    import torch

    ids = torch.from_numpy(prompts.astype(np.int64))

    def run() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )
        return time.perf_counter() - start

    run()
    return min(run() for _ in range(2))


def _multi_turn(model, turns: int, reply: int, observation: int, page_size: int) -> dict:
    """One slot, `turns` turns; linear (extend) against re-prefilling the context each turn."""
    capacity = 64 + turns * (reply + observation + 1)
    config = EngineConfig(
        num_slots=1, capacity=capacity, page_size=page_size, chunk=64, steps_per_call=reply
    )
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, model.cfg.vocab_size, 64).tolist()
    observations = [
        rng.integers(0, model.cfg.vocab_size, observation).tolist() for _ in range(turns)
    ]

    def episode(reprefill: bool) -> tuple[float, int, int]:
        engine = Engine(model, config, SamplingParams(temperature=1.0), seed=1)
        engine.warm_up()
        processed = len(prompt) - 1  # the last prompt token is fed by the first decode step
        sequence = list(prompt)
        engine.prefill(0, sequence)
        start = time.perf_counter()
        for turn in range(turns):
            engine.start_turn(0, reply)
            while True:
                result = engine.decode()
                sequence += result.tokens[0].tolist()
                processed += len(result.tokens[0])
                if result.stopped[0]:
                    break
            if turn == turns - 1:
                break
            if reprefill:
                sequence += observations[turn]
                engine.prefill(0, sequence)
                processed += len(sequence) - 1
            else:
                engine.extend(0, observations[turn])
                sequence += observations[turn]
                processed += len(observations[turn])
        return time.perf_counter() - start, processed, len(sequence)

    linear_s, linear_tokens, length = episode(reprefill=False)
    reprefill_s, reprefill_tokens, _ = episode(reprefill=True)
    return {
        "turns": turns,
        "trajectory_tokens": length,
        # Every token but the last goes through the model once: (length - 1) / (length - 1).
        "model_tokens_per_trajectory_token": linear_tokens / (length - 1),
        "reprefill_model_tokens_per_trajectory_token": reprefill_tokens / (length - 1),
        "linear_seconds": linear_s,
        "reprefill_seconds": reprefill_s,
        "speedup_over_reprefill": reprefill_s / linear_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="qwen2.5-0.5b")
    parser.add_argument("--layers", type=int, default=2, help="0 = the preset's depth")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--page-size", type=int, default=64)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--no-hf", action="store_true", help="skip transformers (e.g. on a GPU)")
    parser.add_argument("--hbm-gbps", type=float, default=0.0, help="for the roofline")
    args = parser.parse_args(argv)

    cfg = preset(args.preset, dtype=args.dtype, param_dtype=args.dtype)
    if args.layers:
        cfg = cfg.replace(num_layers=args.layers)
    hf = None
    with tempfile.TemporaryDirectory() as directory:
        if args.no_hf:
            from swejax.models import save_hf_checkpoint

            save_hf_checkpoint(build_model(cfg, seed=0), directory)
        else:
            import torch
            from transformers import Qwen2Config, Qwen2ForCausalLM

            torch.manual_seed(0)
            hf = Qwen2ForCausalLM(Qwen2Config(**to_hf_config(cfg, cfg.param_dtype))).eval()
            hf.save_pretrained(directory)
        model = load_hf_checkpoint(directory, dtype=args.dtype)

    result: dict = {
        "bench": "decode",
        "device": jax.devices()[0].device_kind,
        "preset": args.preset,
        "layers": cfg.num_layers,
        "dtype": args.dtype,
        "prompt": args.prompt,
        "new_tokens": args.new,
        "decode": [],
    }
    rng = np.random.default_rng(0)
    for batch in (int(b) for b in args.batch.split(",")):
        prompts = rng.integers(0, cfg.vocab_size, (batch, args.prompt))
        seconds = _swejax_generate(model, prompts, args.new, args.page_size)
        row = {"batch": batch, "swejax_tokens_per_s": batch * args.new / seconds}
        if hf is not None:
            hf_seconds = _hf_generate(hf, prompts, args.new)
            row["hf_tokens_per_s"] = batch * args.new / hf_seconds
            row["ratio_swejax_over_hf"] = hf_seconds / seconds
        if args.hbm_gbps:
            weights = (
                count_params(cfg)
                * np.dtype(np.float32 if args.dtype == "float32" else np.float16).itemsize
            )
            kv = batch * (args.prompt + args.new / 2) * cache_bytes_per_token(cfg)
            row["roofline_step_s"] = (weights + kv) / (args.hbm_gbps * 1e9)
            row["measured_step_s"] = seconds / args.new
        result["decode"].append(row)
    result["multi_turn"] = _multi_turn(model, args.turns, 16, 48, args.page_size)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
