"""Attention throughput: the Pallas flash kernel against cuDNN and the XLA reference.

    python tools/bench_attention.py --out attention.json     # GPU: 4k, 16k, 32k, 128k tokens
    python tools/bench_attention.py --smoke                  # CPU: tiny shapes, interpret mode

Causal self-attention, batch 1, bfloat16, head dim 128, and Qwen2.5-72B's grouping unless told
otherwise: 64 query heads reading 8 key/value heads (8:1). Prints one JSON object: forward and
forward+backward TFLOP/s of each implementation at each length, with the GPU model and JAX
version. Causal FLOPs are half of full attention's 4*T*S*Nq*H; forward+backward counts 3.5x the
forward (the backward's five matmuls against the forward's two). The XLA reference holds the
whole [Nq, T, S] logit matrix, so where that would not fit it is skipped and the reason kept.
Before timing, the flash output and gradients are compared with the reference at the first
length (`flash_vs_reference_max_abs_diff`; bf16 against bf16, so ~1e-2 is agreement).
A good run: the agreement check at ~1e-2, flash's TFLOP/s steady from 16k to 128k (nothing of
size T x S is stored), and the reference present only at 4k. `--blocks`, `--warps` and
`--stages` override the flash tiles for tuning.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from swejax_kernels.flash import BlockSizes, flash_attention, reference

IMPLEMENTATIONS = ("flash", "cudnn", "reference")
# Bytes the reference keeps per logit through forward and backward: float32 logits, their
# float32 softmax, and the bfloat16 weights saved for the backward.
_REFERENCE_BYTES_PER_LOGIT = 10
# Headroom for q, k, v, their gradients and XLA's scratch when judging whether logits fit.
_USABLE_MEMORY = 0.8


def attention_flops(batch: int, seq: int, num_q_heads: int, head_dim: int, causal: bool) -> float:
    """Forward FLOPs of self-attention: two matmuls of 2*T*S*H each per query head."""
    full = 4 * batch * seq * seq * num_q_heads * head_dim
    return full / 2 if causal else full


def _attend(impl: str, interpret: bool, block_sizes: BlockSizes | None):
    if impl == "flash":
        return lambda q, k, v: flash_attention(
            q, k, v, causal=True, interpret=interpret, block_sizes=block_sizes
        )
    if impl == "cudnn":
        return lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, is_causal=True, implementation="cudnn"
        )
    return lambda q, k, v: reference(q, k, v, causal=True)


def _programs(attend, dout):
    """Jitted forward, and forward+backward returning (dq, dk, dv) for a fixed cotangent."""

    def forward_backward(q, k, v):
        _, vjp = jax.vjp(attend, q, k, v)
        return vjp(dout)

    return jax.jit(attend), jax.jit(forward_backward)


def _agreement(attend, other, qkv, dout) -> dict[str, float]:
    """Largest |difference| of the output and of (dq, dk, dv) between two implementations."""

    def run(attend):
        out, vjp = jax.vjp(attend, *qkv)
        return out, *vjp(dout)

    results = [jax.jit(functools.partial(run, fn))() for fn in (attend, other)]
    return {
        name: float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
        for name, a, b in zip(("out", "dq", "dk", "dv"), *results, strict=True)
    }


def _median_seconds(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _device_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return None if stats is None else stats.get("bytes_limit")


def _skip_reason(impl: str, seq: int, num_q_heads: int, batch: int) -> str | None:
    if impl == "cudnn" and jax.default_backend() != "gpu":
        return "cuDNN attention needs an NVIDIA GPU"
    if impl == "reference":
        need = batch * num_q_heads * seq * seq * _REFERENCE_BYTES_PER_LOGIT
        have = _device_bytes()
        if have is not None and need > _USABLE_MEMORY * have:
            return (
                f"the reference materialises {batch * num_q_heads} x {seq} x {seq} logits, "
                f"~{need / 2**30:.0f} GiB against {have / 2**30:.0f} GiB of device memory"
            )
    return None


def _measure(programs, args, flops: float, repeats: int) -> dict:
    forward, forward_backward = programs
    try:
        fwd_s = _median_seconds(forward, args, repeats)
        fwd_bwd_s = _median_seconds(forward_backward, args, repeats)
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        return {"skipped": f"out of memory: {str(error).splitlines()[0]}"}
    return {
        "fwd_seconds": fwd_s,
        "fwd_tflops": flops / fwd_s / 1e12,
        "fwd_bwd_seconds": fwd_bwd_s,
        "fwd_bwd_tflops": 3.5 * flops / fwd_bwd_s / 1e12,
    }


def _ratios(rows: list[dict], numerator: str, denominator: str) -> list[dict]:
    """Throughput ratio of two implementations at each length where both ran."""
    by_key = {(row["impl"], row["seq"]): row for row in rows if "skipped" not in row}
    ratios = []
    for (impl, seq), row in by_key.items():
        other = by_key.get((denominator, seq))
        if impl == numerator and other is not None:
            ratios.append(
                {
                    "seq": seq,
                    "fwd": row["fwd_tflops"] / other["fwd_tflops"],
                    "fwd_bwd": row["fwd_bwd_tflops"] / other["fwd_bwd_tflops"],
                }
            )
    return ratios


def _inputs(batch, seq, num_q_heads, num_kv_heads, head_dim, dtype):
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (batch, seq, num_q_heads, head_dim), dtype)
    k = jax.random.normal(keys[1], (batch, seq, num_kv_heads, head_dim), dtype)
    v = jax.random.normal(keys[2], (batch, seq, num_kv_heads, head_dim), dtype)
    dout = jax.random.normal(keys[3], q.shape, dtype)
    return (q, k, v), dout


def _parse_ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", default="4096,16384,32768,131072", help="comma-separated")
    parser.add_argument("--heads", default="64,8", help="query heads,key/value heads")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--blocks", help="flash tiles: block_q,block_kv,block_q_bwd,block_kv_bwd")
    parser.add_argument("--warps", type=int, help="Triton num_warps for the flash kernels")
    parser.add_argument("--stages", type=int, help="Triton num_stages for the flash kernels")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny shapes in interpret mode: checks it runs on CPU"
    )
    args = parser.parse_args(argv)

    block_sizes = BlockSizes.for_backend()
    if args.smoke:
        args.seqs, args.heads, args.head_dim, args.repeats = "40,72", "8,1", 32, 1
        block_sizes = BlockSizes(block_q=32, block_kv=16, block_q_bwd=16, block_kv_bwd=32)
    if args.blocks:
        block_q, block_kv, block_q_bwd, block_kv_bwd = _parse_ints(args.blocks)
        block_sizes = dataclasses.replace(
            block_sizes,
            block_q=block_q,
            block_kv=block_kv,
            block_q_bwd=block_q_bwd,
            block_kv_bwd=block_kv_bwd,
        )
    if args.warps:
        block_sizes = dataclasses.replace(block_sizes, num_warps=args.warps)
    if args.stages:
        block_sizes = dataclasses.replace(block_sizes, num_stages=args.stages)
    num_q_heads, num_kv_heads = _parse_ints(args.heads)
    interpret = jax.default_backend() == "cpu"

    report: dict = {
        "bench": "attention",
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "jax_version": jax.__version__,
        "interpret": interpret,
        "dtype": "bfloat16",
        "causal": True,
        "batch": args.batch,
        "num_q_heads": num_q_heads,
        "num_kv_heads": num_kv_heads,
        "head_dim": args.head_dim,
        "flash_block_sizes": dataclasses.asdict(block_sizes),
        "flop_model": "fwd = 4*B*T*S*Nq*H/2 (causal); fwd+bwd = 3.5*fwd",
        "results": [],
    }
    for index, seq in enumerate(_parse_ints(args.seqs)):
        qkv, dout = _inputs(args.batch, seq, num_q_heads, num_kv_heads, args.head_dim, jnp.bfloat16)
        flops = attention_flops(args.batch, seq, num_q_heads, args.head_dim, causal=True)
        if index == 0:
            # Timings of a wrong kernel mean nothing: first compare it with the reference.
            flash = _attend("flash", interpret, block_sizes)
            diffs = _agreement(flash, _attend("reference", interpret, None), qkv, dout)
            report["flash_vs_reference_max_abs_diff"] = {"seq": seq} | diffs
        for impl in IMPLEMENTATIONS:
            row = {"impl": impl, "seq": seq}
            reason = _skip_reason(impl, seq, num_q_heads, args.batch)
            if reason is None:
                programs = _programs(_attend(impl, interpret, block_sizes), dout)
                row |= _measure(programs, qkv, flops, args.repeats)
            else:
                row["skipped"] = reason
            print(json.dumps(row), file=sys.stderr)  # progress, in case a later length fails
            report["results"].append(row)

    report["flash_over_cudnn"] = _ratios(report["results"], "flash", "cudnn")
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as file:
            file.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
