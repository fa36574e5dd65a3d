"""Prefill throughput: swejax's Qwen2 forward against transformers on the same weights and shapes.

    python tools/bench_forward.py                                   # CPU: 0.5B shapes, 4 layers
    python tools/bench_forward.py --preset qwen2.5-1.5b --layers 0 --seq 8192 --dtype bfloat16 \
        --no-hf                                                     # GPU: forward MFU at 8k tokens

Prints one JSON object: tokens per second for each, their ratio (swejax / transformers), and the
achieved model FLOP/s with MFU where the device's peak is known. `--layers 0` keeps the preset's
full depth.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from swejax.models import count_params, load_hf_checkpoint, preset, to_hf_config
from swejax.sharding import activation_mesh, make_mesh

# Dense bfloat16 peak FLOP/s by device kind (vendor data sheets), for MFU.
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "TPU v5p": 459e12,
    "TPU v5 lite": 197e12,
}


def forward_flops(cfg, batch: int, seq: int) -> float:
    """Model FLOPs of one causal forward: 2 per weight and token, plus attention."""
    weights = count_params(cfg) - cfg.vocab_size * cfg.hidden_size * (not cfg.tie_word_embeddings)
    matmul = 2 * weights * batch * seq  # lm_head included once via the embedding or the head
    attention = 2 * 2 * cfg.num_layers * batch * seq * seq * cfg.num_heads * cfg.head_dim / 2
    return matmul + attention


def _median_seconds(fns: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each function, calls interleaved so machine drift hits all alike."""
    for fn in fns.values():
        fn()  # warm-up (compilation for swejax)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _hf_model(cfg, directory: str):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    hf_config = Qwen2Config(**to_hf_config(cfg, torch_dtype=cfg.param_dtype))
    torch.manual_seed(0)
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    model = Qwen2ForCausalLM(hf_config).to(dtype).eval()
    model.save_pretrained(directory)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="qwen2.5-0.5b")
    parser.add_argument("--layers", type=int, default=4, help="0 = the preset's depth")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-hf", action="store_true", help="skip transformers (e.g. on a GPU)")
    args = parser.parse_args(argv)

    cfg = preset(args.preset, dtype=args.dtype, param_dtype=args.dtype)
    if args.layers:
        cfg = cfg.replace(num_layers=args.layers)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (args.batch, args.seq))
    tokens = args.batch * args.seq
    result: dict = {
        "bench": "forward",
        "device": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        "preset": args.preset,
        "layers": cfg.num_layers,
        "batch": args.batch,
        "seq": args.seq,
        "dtype": args.dtype,
    }
    with tempfile.TemporaryDirectory() as directory:
        if args.no_hf:
            from swejax.models import build_model, save_hf_checkpoint

            save_hf_checkpoint(build_model(cfg, seed=0), directory)
            hf = None
        else:
            hf = _hf_model(cfg, directory)
        mesh = make_mesh(fsdp=-1)
        model = load_hf_checkpoint(directory, dtype=args.dtype, mesh=mesh)

    input_ids = jnp.asarray(ids, jnp.int32)
    forward = jax.jit(lambda x: model(x))

    def run_swejax():
        with activation_mesh(mesh):
            jax.block_until_ready(forward(input_ids))

    runs = {"swejax": run_swejax}
    if hf is not None:
        import torch

        torch_ids = torch.from_numpy(ids)

        def run_hf():
            with torch.no_grad():
                hf(torch_ids)

        runs["hf"] = run_hf
        result["torch_threads"] = torch.get_num_threads()
    seconds = _median_seconds(runs, args.repeats)
    swejax_s = seconds["swejax"]
    result["swejax_tokens_per_s"] = tokens / swejax_s
    flops = forward_flops(cfg, args.batch, args.seq)
    result["swejax_tflops"] = flops / swejax_s / 1e12
    peak = PEAK_FLOPS.get(result["device"])
    if peak and args.dtype == "bfloat16":
        result["mfu"] = flops / swejax_s / (peak * jax.device_count())

    if hf is not None:
        result["hf_tokens_per_s"] = tokens / seconds["hf"]
        result["ratio_swejax_over_hf"] = result["swejax_tokens_per_s"] / result["hf_tokens_per_s"]
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
