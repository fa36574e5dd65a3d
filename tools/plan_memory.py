"""Per-device memory and rollout speed of the run a config trains, planned on this CPU.

    python tools/plan_memory.py --config=configs/qwen25_72b_stage1.py --devices 128   # 16 x 8 H200
    python tools/plan_memory.py --config=configs/qwen25_72b_stage2.py --topology v5p:4x4x4 \
        --config.mesh.fsdp=2 --config.mesh.context=8
    python tools/plan_memory.py --config=configs/qwen25_72b_stage1.py --devices 128 \
        --hardware h100 --rollout-only --json

The run is the config, as `python -m swejax.main` takes it (`--config=FILE`, `--config.KEY=VALUE`
overrides; without --config the embedded default): its model, mesh, row length, micro-batches,
optimizer step and engine (`swejax.memory_plan.plan_spec`). The tool compiles the Trainer's step
(`swejax.train.jit_train_step`) and the engine's decode programs ahead of time for `--devices`
fake CPU devices, or with the TPU compiler for a `--topology` slice, from abstract parameters and
optimizer state (a 72B model is never allocated), and prints XLA's per-device memory next to an
analytic breakdown and whether each phase fits the device with headroom (`swejax.memory_plan`).

The rollout is planned in both decoding layouts (`engine.layout`): the engine's slots and KV
pages that fit the device (where `engine.num_slots` or `engine.num_pages` is 0), the bytes a
decode step reads from device memory, the collective bytes of the compiled decode program
within a host and across hosts, and, from the hardware's figures (`--hardware`: h200, h100 or
v5p; the bandwidth flags override them) and an assumed episode (`--turns`, `--reply-tokens`,
`--observation-tokens`, `--prompt-tokens`), the estimated decode tokens/s and the time of one
iteration's rollout. Hosts are groups of `--devices-per-host` fake devices, or a TPU slice's
own. `--json` prints one JSON object instead. Exit code 0 when everything fits, 1 when
something does not, 2 for a bad command or config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from fake_devices import use_fake_devices


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="--config.KEY=VALUE sets one config key."
    )
    parser.add_argument("--config", metavar="FILE", default=None, help="the run's config file")
    parser.add_argument("--devices", type=int, default=None, help="fake CPU devices (the mesh)")
    parser.add_argument(
        "--topology",
        default=None,
        help="compile with the TPU compiler for this slice instead, e.g. v5p:4x4x8 (needs "
        "libtpu, from tools/setup.sh; no TPU is used)",
    )
    parser.add_argument(
        "--phase", choices=("rft", "dapo"), default=None, help="default: DAPO if the run has it"
    )
    parser.add_argument(
        "--device-memory-gib",
        type=float,
        default=None,
        help="default: the config's engine.memory_gib, else the hardware's",
    )
    parser.add_argument(
        "--hardware",
        default=None,
        help="h200, h100 or v5p (default: v5p for a v5p slice, else h200)",
    )
    parser.add_argument("--devices-per-host", type=int, default=None)
    parser.add_argument("--hbm-gbps", type=float, default=None, help="device memory, GB/s")
    parser.add_argument("--intra-host-gbps", type=float, default=None, help="per device, GB/s")
    parser.add_argument("--cross-host-gbps", type=float, default=None, help="per device, GB/s")
    parser.add_argument("--turns", type=int, default=None, help="default: 3/4 of the turn limit")
    parser.add_argument("--reply-tokens", type=int, default=300)
    parser.add_argument("--observation-tokens", type=int, default=1200)
    parser.add_argument("--prompt-tokens", type=int, default=1500)
    parser.add_argument(
        "--rollout-only", action="store_true", help="plan the rollout alone (no train step)"
    )
    parser.add_argument(
        "--run-layout-only",
        action="store_true",
        help="plan the config's engine.layout alone (no comparison with the other layout)",
    )
    parser.add_argument(
        "--headroom",
        type=float,
        default=0.10,
        help="fraction of device memory kept free (allocator fragmentation, collectives' "
        "buffers, runtime)",
    )
    parser.add_argument(
        "--compile-attention",
        default=None,
        help="attention for the CPU compile (default: the run's if it runs on CPU, else "
        "ring_reference)",
    )
    parser.add_argument("--no-compile", action="store_true", help="analytic breakdown only")
    parser.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, leftovers = _parser().parse_known_args(argv)
    unknown = [a for a in leftovers if not (a.startswith("--config.") and "=" in a)]
    if unknown:
        raise SystemExit(f"plan_memory: unrecognized arguments {' '.join(unknown)}")
    if args.devices is None and args.topology is None:
        raise SystemExit(
            "plan_memory: give --devices (fake CPU devices) or --topology (a TPU slice)"
        )
    use_fake_devices(args.devices or 1, "plan_memory")

    from swejax.config import load_config
    from swejax.errors import UserError
    from swejax.memory_plan import PlanOptions, format_report, plan

    started = time.perf_counter()
    # The flags named as the options are (the two negated ones aside) go across as they are.
    named = {f.name for f in dataclasses.fields(PlanOptions)} & vars(args).keys()
    options = PlanOptions(
        **{name: getattr(args, name) for name in named},
        compile=not args.no_compile,
        compare_layouts=not args.run_layout_only,
    )
    try:
        config = load_config(args.config, [a.removeprefix("--config.") for a in leftovers])
        report = plan(config, options)
    except UserError as error:
        print(f"plan_memory: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    report["inputs"]["config"] = args.config
    report["wall_s"] = time.perf_counter() - started
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0 if report["fits"]["all"] else 1


if __name__ == "__main__":
    sys.exit(main())
