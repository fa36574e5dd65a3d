"""Decode throughput and multi-turn prefill cost of the generation engine.

    python tools/bench_decode.py                      # CPU: against transformers' generate
    python tools/bench_decode.py --no-hf --roofline --preset qwen2.5-1.5b --layers 0 \
        --dtype bfloat16 --batch 1,8,64,256 --prompt 128 --new 128 --turns 0
                                                      # GPU: tokens/s against the HBM roofline

Prints one JSON object:
- `decode`: per batch size, new tokens per second of swejax (prefill included, as transformers'
  `generate` includes it) and of transformers on the same weights, and their ratio;
- `multi_turn`: a synthetic episode of `--turns` turns (sample a reply, append an observation):
  tokens the model ran over divided by the trajectory length (1.0 means no token was ever
  recomputed), and the wall time against re-prefilling the whole context every turn;
- with `--roofline`, the memory-bandwidth roofline of a decode step, (weight bytes + K/V bytes
  of the tokens held) / measured HBM read bandwidth, next to the measured step time.

`--split-layers 1,0` times decode with and without EngineConfig.split_layer_weights.
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
from swejax.sampling import Engine, EngineConfig, SamplingParams, cache_bytes_per_token


def _swejax_generate(
    model, prompts: np.ndarray, new_tokens: int, page_size: int, split: bool
) -> tuple[float, float]:
    """Seconds to prefill `prompts` and greedily decode `new_tokens` for each (compiled first),
    and the seconds of the decode part alone."""
    batch, prompt_len = prompts.shape
    config = EngineConfig(
        num_slots=batch,
        capacity=prompt_len + new_tokens,
        page_size=page_size,
        chunk=min(512, prompt_len),
        ingest_rows=min(batch, 32),
        steps_per_call=new_tokens,
        split_layer_weights=split,
    )
    engine = Engine(model, config, SamplingParams(temperature=0.0))
    engine.warm_up()

    def run() -> tuple[float, float]:
        start = time.perf_counter()
        engine.prefill_many([(slot, prompts[slot].tolist()) for slot in range(batch)])
        for slot in range(batch):
            engine.start_turn(slot, new_tokens)
        jax.block_until_ready(engine.state)
        decode_start = time.perf_counter()
        while engine.decode().stopped.sum() < batch:
            pass
        end = time.perf_counter()
        return end - start, end - decode_start

    run()  # every program compiled and cached
    return min(run() for _ in range(2))


def measure_hbm_gbps(gib: float = 2.0) -> float:
    """Read bandwidth of the first device: a jitted sum over a `gib` GiB array, best of 5."""
    x = jax.device_put(np.ones(int(gib * 2**30) // 4, np.float32), jax.devices()[0])
    total = jax.jit(lambda a: a.sum())
    total(x).block_until_ready()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        total(x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return x.nbytes / best / 1e9


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
    parser.add_argument(
        "--roofline",
        action="store_true",
        help="measure HBM read bandwidth and compare each decode step with its roofline",
    )
    parser.add_argument(
        "--split-layers",
        default="1",
        help="comma-separated 1/0: decode with EngineConfig.split_layer_weights on (1) or off (0)",
    )
    args = parser.parse_args(argv)

    cfg = preset(args.preset, dtype=args.dtype, param_dtype=args.dtype)
    if args.layers:
        cfg = cfg.replace(num_layers=args.layers)
    hf = None
    if args.no_hf:
        model = build_model(cfg, seed=0)  # random weights made on the device
    else:
        import torch
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(0)
        hf = Qwen2ForCausalLM(Qwen2Config(**to_hf_config(cfg, cfg.param_dtype))).eval()
        with tempfile.TemporaryDirectory() as directory:
            hf.save_pretrained(directory)
            model = load_hf_checkpoint(directory, dtype=args.dtype)
    hbm_gbps = measure_hbm_gbps() if args.roofline else 0.0
    weight_bytes = count_params(cfg) * np.dtype(cfg.param_dtype).itemsize

    result: dict = {
        "bench": "decode",
        "device": jax.devices()[0].device_kind,
        "preset": args.preset,
        "layers": cfg.num_layers,
        "dtype": args.dtype,
        "prompt": args.prompt,
        "new_tokens": args.new,
        "weight_bytes": weight_bytes,
        "decode": [],
    }
    if hbm_gbps:
        result["measured_hbm_read_gbps"] = hbm_gbps
    rng = np.random.default_rng(0)
    for batch in (int(b) for b in args.batch.split(",")):
        prompts = rng.integers(0, cfg.vocab_size, (batch, args.prompt))
        hf_seconds = _hf_generate(hf, prompts, args.new) if hf is not None else None
        for split in (bool(int(u)) for u in args.split_layers.split(",")):
            seconds, decode_seconds = _swejax_generate(
                model, prompts, args.new, args.page_size, split
            )
            row = {
                "batch": batch,
                "split_layer_weights": split,
                "swejax_tokens_per_s": batch * args.new / seconds,
                "swejax_decode_tokens_per_s": batch * args.new / decode_seconds,
            }
            if hf_seconds is not None:
                row["hf_tokens_per_s"] = batch * args.new / hf_seconds
                row["ratio_swejax_over_hf"] = hf_seconds / seconds
            if hbm_gbps:
                # Ideal bytes per step: every weight once, and the K/V of the tokens held (on
                # average the prompt and half the new tokens).
                kv = batch * (args.prompt + args.new / 2) * cache_bytes_per_token(cfg)
                row["roofline_step_ms"] = 1e3 * (weight_bytes + kv) / (hbm_gbps * 1e9)
                row["measured_step_ms"] = 1e3 * decode_seconds / args.new
                row["fraction_of_roofline"] = row["roofline_step_ms"] / row["measured_step_ms"]
            result["decode"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    if args.turns:
        result["multi_turn"] = _multi_turn(model, args.turns, 16, 48, args.page_size)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
