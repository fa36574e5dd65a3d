"""Training-step throughput and MFU: the Trainer's DAPO step on packed rows of one length.

    python tools/bench_train.py --preset qwen2.5-1.5b --seq 32768 --attention flash   # one GPU
    python tools/bench_train.py --smoke                                               # CPU check
    python tools/launch_local.py --processes 2 --devices 4 -- \
        python tools/bench_train.py --smoke                                 # 2 processes, CPU

Runs `swejax.train.Trainer` (the jitted, donating step the loop uses) on `--rows` rows of `--seq`
random tokens, every token an action, over all devices (fsdp), and prints one JSON object:
seconds per step (median after a warm-up), tokens per second, model TFLOP/s and MFU. Model FLOPs
are three causal forwards (forward plus backward), whatever the remat policy recomputes, so MFU
is comparable across policies. The attention choice and remat policy are recorded with them.
With many processes (the `--config.distributed.*` flags tools/launch_local.py appends), each
feeds its block of the same global batch, and process 0 prints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_forward import PEAK_FLOPS, forward_flops  # noqa: E402

from swejax import distributed  # noqa: E402
from swejax.config import DistributedConfig, OptimizerConfig  # noqa: E402
from swejax.models import build_model, preset  # noqa: E402
from swejax.sharding import make_mesh  # noqa: E402
from swejax.train import BATCH_FIELDS, Objective, Trainer, make_optimizer  # noqa: E402


def random_batch(rows: int, seq: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One sequence per row, every token but the first in the loss, advantages of both signs."""
    rng = np.random.default_rng(seed)
    shape = (rows, seq)
    batch = {
        "tokens": rng.integers(0, vocab, shape, dtype=np.int32),
        "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), shape).copy(),
        "segment_ids": np.ones(shape, np.int32),
        "loss_mask": np.ones(shape, bool),
        "old_logprobs": np.full(shape, -np.log(vocab), np.float32),
        "advantages": np.repeat(rng.choice([-1.0, 1.0], (rows, 1)), seq, 1).astype(np.float32),
    }
    batch["loss_mask"][:, 0] = False
    assert set(batch) == set(BATCH_FIELDS)
    return batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="qwen2.5-1.5b")
    parser.add_argument("--layers", type=int, default=0, help="0 = the preset's depth")
    parser.add_argument("--seq", type=int, default=32768)
    parser.add_argument("--rows", type=int, default=0, help="0 = one per device")
    parser.add_argument("--attention", default="flash")
    parser.add_argument("--remat", default="full")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny model, 128 tokens, CPU")
    parser.add_argument("--out", help="also write the JSON here")
    # The keys tools/launch_local.py appends, as `python -m swejax.main` takes them.
    parser.add_argument("--config.distributed.coordinator", dest="coordinator", default="")
    parser.add_argument(
        "--config.distributed.num_processes", dest="num_processes", type=int, default=0
    )
    parser.add_argument("--config.distributed.process_id", dest="process_id", type=int, default=-1)
    args = parser.parse_args(argv)
    distributed.start(DistributedConfig(args.coordinator, args.num_processes, args.process_id))
    if args.smoke:
        args.preset, args.seq, args.attention, args.steps = "tiny", 128, "reference", 2

    cfg = preset(args.preset, dtype=args.dtype, param_dtype="float32", remat=args.remat)
    cfg = cfg.replace(attention=args.attention)
    if args.layers:
        cfg = cfg.replace(num_layers=args.layers)
    mesh = make_mesh(fsdp=-1)
    rows = args.rows or jax.device_count()
    model = build_model(cfg, mesh, seed=0)
    tx = make_optimizer(OptimizerConfig(), learning_rate=1e-6, weight_decay=0.1)
    trainer = Trainer(model, tx, Objective("dapo", eps_low=0.2, eps_high=0.3), mesh=mesh)
    batch = random_batch(rows, args.seq, cfg.vocab_size)
    share = rows // jax.process_count()  # this process's block of the global batch
    batch = {k: v[jax.process_index() * share :][:share] for k, v in batch.items()}
    trainer.step(batch)  # compile
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        metrics = trainer.step(batch)  # returns host floats: the step has finished
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    flops = 3 * forward_flops(cfg, rows, args.seq)
    result = {
        "bench": "train_step",
        "device": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        "processes": jax.process_count(),
        "jax": jax.__version__,
        "preset": args.preset,
        "layers": cfg.num_layers,
        "rows": rows,
        "seq": args.seq,
        "attention": args.attention,
        "remat": args.remat,
        "dtype": args.dtype,
        "step_s": seconds,
        "tokens_per_s": rows * args.seq / seconds,
        "model_tflops": flops / seconds / 1e12,
        "loss": metrics["loss"],
        "skipped": metrics["skipped"],
    }
    peak = PEAK_FLOPS.get(result["device"])
    if peak and args.dtype == "bfloat16":
        result["mfu"] = flops / seconds / (peak * jax.device_count())
    if not distributed.is_leader():
        return 0
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
