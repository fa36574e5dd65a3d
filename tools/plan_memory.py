"""Per-device memory of the run a config trains, planned on this CPU.

    python tools/plan_memory.py --config=configs/qwen25_72b_stage2.py --devices 128
    python tools/plan_memory.py --config=configs/qwen25_72b_stage2.py --topology v5p:4x4x8 \
        --device-memory-gib 95 --config.mesh.fsdp=2 --config.mesh.context=8

The run is the config, as `python -m swejax.main` takes it (`--config=FILE`, `--config.KEY=VALUE`
overrides; without --config the embedded default): its model, mesh, row length, micro-batches,
optimizer step and engine (`swejax.memory_plan.plan_spec`). The tool compiles the Trainer's step
(`swejax.train.jit_train_step`) and the engine's decode program ahead of time for `--devices`
fake CPU devices, or with the TPU compiler for a `--topology` slice, from abstract parameters and
optimizer state (a 72B model is never allocated), and prints XLA's per-device memory next to an
analytic breakdown and whether each phase fits the device with headroom (`swejax.memory_plan`).
`--json` prints one JSON object instead. Exit code 0 when everything fits, 1 when something
does not, 2 for a bad command or config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


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
    parser.add_argument("--device-memory-gib", type=float, default=141.0)
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


def _use_fake_devices(devices: int) -> None:
    """Point JAX at `devices` CPU devices; must run before jax is first imported.

    JAX_PLATFORMS=cpu also keeps a GPU or TPU on this machine out of it, and lets a TPU
    topology be compiled for without initialising a TPU.
    """
    if "jax" in sys.modules:
        raise RuntimeError(
            "plan_memory needs its own process: jax is already imported, so the fake device "
            "count cannot change (run tools/plan_memory.py as a script)"
        )
    flags = os.environ.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if not f.startswith(_DEVICE_COUNT_FLAG)]
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"{_DEVICE_COUNT_FLAG}={devices}"])
    os.environ["JAX_PLATFORMS"] = "cpu"


def main(argv: list[str] | None = None) -> int:
    args, leftovers = _parser().parse_known_args(argv)
    unknown = [a for a in leftovers if not (a.startswith("--config.") and "=" in a)]
    if unknown:
        raise SystemExit(f"plan_memory: unrecognized arguments {' '.join(unknown)}")
    if args.devices is None and args.topology is None:
        raise SystemExit(
            "plan_memory: give --devices (fake CPU devices) or --topology (a TPU slice)"
        )
    _use_fake_devices(args.devices or 1)

    from swejax.config import load_config
    from swejax.errors import UserError
    from swejax.memory_plan import PlanOptions, format_report, plan

    started = time.perf_counter()
    options = PlanOptions(
        devices=args.devices,
        topology=args.topology,
        phase=args.phase,
        device_memory_gib=args.device_memory_gib,
        headroom=args.headroom,
        compile_attention=args.compile_attention,
        compile=not args.no_compile,
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
