"""Decoding over the training layout against the rollout layout, on fake CPU devices.

    python tools/bench_layout.py                      # small preset, 8 devices, fsdp=8, 16 slots
    python tools/bench_layout.py --devices 8 --fsdp 4 --tensor 2 --slots 32

The same model (weights split fsdp x tensor for training) and the same slots, decoded twice: by
an engine over the training mesh, reading the training state in place, and by an engine over
the rollout layout (this process's devices as replicas of `tensor` devices) reading a copy of
the weights made for it (`swejax.sampling.decode_weights`). For each: decode steps per second
(every slot sampling, the median of `--repeats` timed runs of `--calls` calls) and the bytes
the compiled decode program's collectives move per call and per step (`swejax.memory_plan.
collective_bytes`). Also the copy's bytes per device and seconds, and, for preemption, the
seconds to move a sequence's keys and values out of the pool and back (what the engine does)
beside the seconds to compute them anew from its tokens (an ingest of the whole sequence, what
a recomputing engine would do). Prints one JSON object.

One process on one CPU: the devices share the host's cores, so what the numbers show is what
each layout makes the devices do (the gathers of the weights, once per call here: the CPU
compiler hoists them out of the step loop), not what a pod's interconnect would cost;
tools/plan_memory.py estimates that.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from fake_devices import use_fake_devices


def _decode_rate(engine, prompts, calls: int, repeats: int) -> float:
    """Decode steps per second with every slot sampling, median of `repeats` runs."""
    steps = engine.config.steps_per_call
    rates = []
    for _ in range(repeats + 1):  # the first run warms the page buckets it reaches
        engine.reset()
        engine.prefill_many(list(enumerate(prompts)), list(range(len(prompts))))
        for slot in range(len(prompts)):
            engine.start_turn(slot, calls * steps)
        started = time.perf_counter()
        for _ in range(calls):
            result = engine.decode()
        result.tokens[0].tolist()  # the last call's outputs are on the host
        rates.append(calls * steps / (time.perf_counter() - started))
    return statistics.median(rates[1:])


def _collectives(engine) -> dict:
    from swejax.memory_plan import collective_bytes

    text = engine.trace_decode().lower().compile().as_text()
    hosts = [0] * engine.mesh.devices.size  # one process: one host
    moved = collective_bytes(text, hosts)
    per_call = moved.per_call_within_host + moved.per_call_across_hosts
    per_step = moved.per_step_within_host + moved.per_step_across_hosts
    return {
        "collective_bytes_per_call": per_call,
        "collective_bytes_per_step": per_step,
        "bytes_per_step_amortized": per_step + per_call / engine.config.steps_per_call,
        "ops": moved.ops,
    }


def _swap_against_recompute(engine, lengths: list[int], repeats: int) -> list[dict]:
    """Seconds to move one sequence's keys and values to the host and back, and to ingest it
    anew, per length."""
    import numpy as np

    rows = []
    rng = np.random.default_rng(0)
    for tokens in lengths:
        sequence = rng.integers(0, engine.model.cfg.vocab_size, tokens).tolist()
        ingest, out, back = [], [], []
        for _ in range(repeats + 1):
            engine.reset()
            started = time.perf_counter()
            engine.prefill(0, sequence)
            engine.state.cache.k.block_until_ready()
            ingest.append(time.perf_counter() - started)
            started = time.perf_counter()
            engine.preempt(0)
            out.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert engine.restore(0)
            engine.state.cache.k.block_until_ready()
            back.append(time.perf_counter() - started)
        rows.append(
            {
                "tokens": tokens,
                "swap_out_s": statistics.median(out[1:]),
                "swap_in_s": statistics.median(back[1:]),
                "recompute_s": statistics.median(ingest[1:]),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--fsdp", type=int, default=8)
    parser.add_argument("--tensor", type=int, default=1)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens per slot")
    parser.add_argument("--calls", type=int, default=8, help="decode calls per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--swap-lengths", default="256,1024,2048")
    args = parser.parse_args(argv)
    use_fake_devices(args.devices, "bench_layout")

    import jax
    import numpy as np

    from swejax.models import build_model, preset
    from swejax.sampling import Engine, EngineConfig, SamplingParams, decode_weights, rollout_layout
    from swejax.sharding import make_mesh

    mesh = make_mesh(fsdp=args.fsdp, tensor=args.tensor)
    cfg = preset(args.preset, dtype=args.dtype, param_dtype="float32")
    model = build_model(cfg, mesh, seed=0)
    config = EngineConfig(
        num_slots=args.slots, capacity=2048, page_size=64, chunk=256, steps_per_call=16
    )
    prompts = np.random.default_rng(1).integers(0, cfg.vocab_size, (args.slots, args.prompt))
    prompts = prompts.tolist()
    layout = rollout_layout(mesh)
    result: dict = {
        "bench": "rollout_layout",
        "device": jax.devices()[0].device_kind,
        **vars(args),
        "weights_bytes": sum(x.nbytes for x in jax.tree.leaves(model)),
        "rollout_tensor": layout.tensor,
        "rollout_replicas": layout.replicas,
    }
    sampling = SamplingParams(temperature=1.0)
    training = Engine(model, config, sampling, mesh, seed=3)
    training.warm_up()
    result["training_layout"] = {
        "decode_steps_per_s": _decode_rate(training, prompts, args.calls, args.repeats),
        **_collectives(training),
    }
    del training
    copies = []
    for _ in range(args.repeats):
        weights = decode_weights(model, layout)
        copies.append((weights.seconds, weights.bytes_per_device))
        weights.drop()
    weights = decode_weights(model, layout)
    result["copy"] = {
        "bytes_per_device": copies[-1][1],
        "seconds": statistics.median(s for s, _ in copies),
    }
    rollout = Engine(model, config, sampling, layout.mesh, seed=3)
    rollout.use_weights(weights.params)
    rollout.warm_up()
    result["rollout_layout"] = {
        "decode_steps_per_s": _decode_rate(rollout, prompts, args.calls, args.repeats),
        **_collectives(rollout),
    }
    lengths = [int(n) for n in args.swap_lengths.split(",") if n]
    result["preemption"] = _swap_against_recompute(rollout, lengths, args.repeats)
    result["speedup"] = (
        result["rollout_layout"]["decode_steps_per_s"]
        / result["training_layout"]["decode_steps_per_s"]
    )
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
