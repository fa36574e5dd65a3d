"""Per-device memory of a DAPO train step on a target mesh, planned on this CPU.

    python tools/plan_memory.py --preset qwen2.5-72b --seq 131072 \
        --mesh data=1,fsdp=4,tensor=8,context=4 --devices 128 --device-memory-gib 141 \
        --attention ring --rollout-slots 64 --rollout-capacity 131072 --rollout-pages 200000

Compiles the Trainer's step (`swejax.train.jit_train_step`) ahead of time for `--devices` fake
CPU devices, from abstract parameters and optimizer state (a 72B model is never allocated),
and prints XLA's per-device memory analysis next to an analytic breakdown (weights, AdamW
moments, gradients, activations under the remat policy, attention, output-head chunk, rollout KV
cache) and whether it fits the device with headroom. `--json` prints one JSON object instead.

Attention. `--attention` is the run's `ModelConfig.attention`, which the analytic model counts.
Kernels that only lower on GPU or TPU (flash, ring, cudnn) cannot be compiled by the CPU
compiler, so a CPU compile uses `--compile-attention` (default: the run's own when it runs on
CPU, else ring_reference, the same ring with jnp blocks) and the output says so: XLA's number
then holds T x S score blocks the kernel never materialises, and a projection swaps the analytic
attention line of one for the other. With 128 fake devices the 72B step compiles in about 15 s
and under 1 GiB of host memory (the layers are scanned).

With rollout slots, the engine's decode program is compiled too (`compile_decode_step`: the
trainer's weights, the KV pool, every page of a slot visible), and the rollout phase is its peak
plus the optimizer state, when the run's decode path compiles here (the Pallas decode kernel of
flash and ring only for a TPU slice).

`--topology v5p:4x4x8` compiles with the TPU compiler for that slice instead (deviceless
ahead-of-time compilation through libtpu, `swejax.tpu_compiler`; no TPU needed). Then the run's
own attention is compiled, Pallas kernels included (traced for TPU through
`swejax_kernels.platform.lowering_for`), and the numbers are the TPU's own layout, scheduling
and VMEM: no stand-in and no projection.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import sys
import time

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
# Largest share of XLA's peak that the stand-in attention may take for the projection to hold.
_RELIABLE_SHARE = 0.5


def parse_mesh(text: str) -> dict[str, int]:
    """ "data=1,fsdp=16,tensor=8,context=1" -> sizes; absent axes are 1, one axis may be -1."""
    sizes = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"mesh entry {part!r} is not axis=size")
        sizes[name.strip()] = int(value)
    return sizes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="qwen2.5-72b")
    parser.add_argument("--seq", type=int, default=65536, help="tokens per packed row")
    parser.add_argument("--mesh", type=parse_mesh, default="fsdp=-1,tensor=8")
    parser.add_argument("--devices", type=int, default=None, help="fake CPU devices (the mesh)")
    parser.add_argument(
        "--topology",
        default=None,
        help="compile with the TPU compiler for this slice instead, e.g. v5p:4x4x8 (needs "
        "libtpu, the jax[tpu] extra; no TPU is used)",
    )
    parser.add_argument("--device-memory-gib", type=float, default=141.0)
    parser.add_argument(
        "--headroom",
        type=float,
        default=0.10,
        help="fraction of device memory kept free (allocator fragmentation, collectives' "
        "buffers, runtime)",
    )
    parser.add_argument("--dtype", default="bfloat16", help="compute dtype")
    parser.add_argument("--param-dtype", default="float32")
    parser.add_argument("--remat", default="full")
    parser.add_argument("--attention", default="reference", help="ModelConfig.attention")
    parser.add_argument(
        "--compile-attention",
        default=None,
        help="attention for the CPU compile (default: --attention if it runs on CPU, else "
        "ring_reference)",
    )
    parser.add_argument(
        "--micro-batch-rows",
        type=int,
        default=1,
        help="rows per batch shard (data x fsdp) in one micro-batch",
    )
    parser.add_argument("--micro-batches", type=int, default=1)
    parser.add_argument("--rollout-slots", type=int, default=0)
    parser.add_argument("--rollout-capacity", type=int, default=0)
    parser.add_argument(
        "--rollout-pages", type=int, default=0, help="KV pool pages; 0: slots x capacity"
    )
    parser.add_argument("--page-size", type=int, default=64)
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


def _compile_attention(cfg, requested: str | None, platform: str) -> tuple[str, str | None]:
    """(implementation to compile for `platform`, why it differs from the run's), raising if
    asked for one that cannot run there."""
    from swejax.models.attention import check_attention

    if requested is not None:
        check_attention(cfg.replace(attention=requested), platform)
        return requested, None if requested == cfg.attention else "--compile-attention"
    try:
        check_attention(cfg, platform)
    except ValueError as error:
        return "ring_reference", str(error)
    return cfg.attention, None


def _xla_report(args, spec, devices, notes: list[str]) -> dict:
    """XLA's numbers for the step, and its peak projected to the run's own attention on the
    target: the attention compiled here (measured alone) swapped for the run's (analytic), and
    the CPU backend's float32 copy of the saved layer inputs taken out."""
    from swejax.memory_plan import (
        GIB,
        CompileOutOfMemory,
        analytic_breakdown,
        compile_attention,
        compile_train_step,
    )
    from swejax.sharding import make_mesh
    from swejax_kernels.platform import lowering_for

    cfg = spec.model
    platform = "tpu" if args.topology else "cpu"
    impl, reason = _compile_attention(cfg, args.compile_attention, platform)
    compiled_spec = dataclasses.replace(spec, model=cfg.replace(attention=impl))
    mesh = make_mesh(**spec.mesh, devices=devices)
    compiler = f"TPU ({args.topology})" if args.topology else "CPU"
    # For a TPU slice the Pallas kernels (flash, ring) are traced for TPU from this CPU process.
    target = lowering_for("tpu") if args.topology else contextlib.nullcontext()
    try:
        with target:
            result = compile_train_step(compiled_spec, mesh)
    except CompileOutOfMemory as error:
        notes.append(f"The {compiler} compiler refused the step: {error}")
        return {
            "compiler": compiler,
            "attention": impl,
            "error": str(error).splitlines()[0],
            "required_temp": error.required_temp,
        }
    xla = dataclasses.asdict(result.memory)
    xla.update(
        peak=result.memory.peak,
        compiler=compiler,
        attention=impl,
        lower_s=result.lower_s,
        compile_s=result.compile_s,
        float32_residual_copy=result.float32_residual_copy,
    )
    projected = result.memory.peak - result.float32_residual_copy
    if result.float32_residual_copy:
        notes.append(
            f"The CPU compile keeps a float32 copy of the saved layer inputs "
            f"({result.float32_residual_copy / GIB:.1f} GiB) around the layer scan's bfloat16 "
            "dynamic-update-slice; GPU and TPU store them in bfloat16 only, so the projection "
            "leaves it out."
        )
    if impl != cfg.attention:
        with target:
            alone = compile_attention(compiled_spec, mesh)
        target = analytic_breakdown(spec).get(f"attention ({cfg.attention})")
        projected += target - alone.temp
        xla["attention_alone_temp"] = alone.temp
        notes.append(
            f"XLA compiled attention={impl!r}, not the run's {cfg.attention!r} ({reason}). "
            f"One layer's {impl} attention, forward and backward, compiled alone takes "
            f"{alone.temp / GIB:.1f} GiB of temp; {cfg.attention!r} keeps {target / GIB:.2f} "
            "GiB (analytic); the projection swaps one for the other."
        )
        if alone.temp > _RELIABLE_SHARE * result.memory.peak:
            # XLA reuses buffers differently with and without the other layers around, so a
            # difference of two large numbers says little; the analytic count decides.
            notes.append(
                f"The stand-in's attention is {alone.temp / result.memory.peak:.0%} of XLA's "
                "peak, too much to subtract reliably: no XLA-based verdict for this plan."
            )
            projected = None
    xla["projected_peak"] = projected
    return xla


def _rollout_report(args, spec, devices, compiled_attention, analytic, notes) -> dict | None:
    """XLA's peak for the engine's decode program beside the state, when the train step
    compiled the run's own attention: the decode kernel of flash and ring only compiles for a
    TPU slice, and a stand-in's decode path would not be the run's."""
    from swejax.memory_plan import CompileOutOfMemory, compile_decode_step
    from swejax.sharding import make_mesh
    from swejax_kernels.platform import lowering_for

    if compiled_attention != spec.model.attention:
        notes.append(
            f"No XLA number for the rollout phase: the decode path of attention="
            f"{spec.model.attention!r} does not compile here."
        )
        return None
    target = lowering_for("tpu") if args.topology else contextlib.nullcontext()
    try:
        with target:
            memory = compile_decode_step(spec, make_mesh(**spec.mesh, devices=devices))
    except CompileOutOfMemory as error:
        return {"error": str(error).splitlines()[0], "required_temp": error.required_temp}
    # The optimizer state stays on the devices while they decode but is no argument of it.
    optimizer = analytic.get("optimizer")
    return {
        **dataclasses.asdict(memory),
        "peak": memory.peak,
        "optimizer": optimizer,
        "rollout_phase": memory.peak + optimizer,
    }


def plan(args: argparse.Namespace) -> dict:
    """Everything the tool reports, as plain data."""
    from swejax.memory_plan import GIB, PlanSpec, analytic_breakdown
    from swejax.models import ATTENTION_IMPLS, attention_impl, preset
    from swejax.sharding import resolve_mesh_shape
    from swejax.tpu_compiler import tpu_devices

    cfg = preset(
        args.preset,
        dtype=args.dtype,
        param_dtype=args.param_dtype,
        remat=args.remat,
        attention=args.attention,
    )
    devices = tpu_devices(args.topology) if args.topology else None
    if devices is not None and args.devices not in (None, len(devices)):
        raise SystemExit(f"--devices={args.devices} but {args.topology} has {len(devices)} chips")
    args.devices = len(devices) if devices is not None else args.devices
    sizes = resolve_mesh_shape(args.mesh, args.devices)
    try:  # a whole-sequence attention refuses a sequence split over context
        attention_impl(cfg.attention).check_context(sizes["context"])
    except ValueError as error:
        raise SystemExit(str(error)) from None
    spec = PlanSpec(
        model=cfg,
        mesh=sizes,
        seq=args.seq,
        micro_batch_rows=args.micro_batch_rows,
        micro_batches=args.micro_batches,
        rollout_slots=args.rollout_slots,
        rollout_capacity=args.rollout_capacity,
        rollout_pages=args.rollout_pages,
        page_size=args.page_size,
    )
    analytic = analytic_breakdown(spec)
    usable = args.device_memory_gib * (1 - args.headroom) * GIB
    kv_pool = analytic.get("rollout KV cache")
    report: dict = {
        "inputs": {
            **{k: v for k, v in vars(args).items() if k not in ("json", "mesh")},
            "mesh": sizes,
            "rows_per_micro_batch": spec.rows,
            "batch_rows": spec.batch_rows,
            "pool_pages": spec.pool_pages,
        },
        "analytic": {
            "attention": analytic.attention,
            "items": [dataclasses.asdict(item) for item in analytic.items],
            "train_step": analytic.train_step,
            "train_phase": analytic.train_phase,
            "rollout_phase": analytic.rollout_phase,
        },
        "usable_bytes": int(usable),
        "notes": [],
    }
    fits = {
        "train_phase_analytic": analytic.train_phase <= usable,
        "rollout_phase_analytic": analytic.rollout_phase <= usable,
    }
    if not args.no_compile:
        xla = report["xla"] = _xla_report(args, spec, devices, report["notes"])
        if "error" in xla:
            fits["train_phase_xla"] = False
        elif xla["projected_peak"] is not None:
            xla["train_phase"] = xla["projected_peak"]
            fits["train_phase_xla"] = xla["train_phase"] <= usable
        if kv_pool:
            impl = xla["attention"]
            rollout = _rollout_report(args, spec, devices, impl, analytic, report["notes"])
            if rollout is not None:
                report["xla_rollout"] = rollout
                fits["rollout_phase_xla"] = rollout.get("rollout_phase", usable + 1) <= usable
    attention = attention_impl(spec.model.attention)
    if attention.quadratic and not attention.ring and spec.seq >= 16384:
        # Quadratic in the whole row, not only in a ring's local blocks.
        *others, last = (
            repr(impl.name) for impl in ATTENTION_IMPLS.values() if impl.ring or not impl.quadratic
        )
        report["notes"].append(
            f"attention={attention.name!r} holds T x S buffers per row in every layer (all keys "
            f"on each device); long rows need {', '.join(others)} or {last}."
        )
    if kv_pool:
        report["notes"].append(
            "The KV pool is split over kv heads (tensor) and, like the slots, over the batch "
            "axes and context where they divide the slots (kv_cache.pool_page_axes). The "
            "loop releases it before each train step (Engine.release), so it counts in the "
            "rollout phase only."
        )
    if not args.topology:
        report["notes"].append(
            "CPU compile: XLA's CPU backend upcasts some bfloat16 work to float32 (it keeps a "
            "float32 copy of the saved layer inputs, for one) and schedules its own way; a GPU "
            "compile differs by some GiB either way."
        )
    report["fits"] = {**fits, "all": all(fits.values())}
    report["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return report


def _gib(n: float) -> str:
    return f"{n / 2**30:9.2f}"


def format_report(report: dict) -> str:
    i, a = report["inputs"], report["analytic"]
    mesh = " ".join(f"{k}={v}" for k, v in i["mesh"].items())
    lines = [
        f"{i['preset']}, {i['seq']:,} tokens per row, mesh {mesh} ({i['devices']} devices), "
        f"remat={i['remat']}, {i['dtype']} compute / {i['param_dtype']} params",
        f"batch: {i['rows_per_micro_batch']} rows per micro-batch ({i['micro_batch_rows']} per "
        f"batch shard) x {i['micro_batches']} micro-batches; attention {i['attention']}",
        "",
    ]
    xla = report.get("xla")
    if xla and "error" in xla:
        required = xla["required_temp"]
        lines += [
            f"XLA, {xla['compiler']} compile with attention={xla['attention']}: refused",
            f"  {xla['error']}",
            f"  {'temp required':34}{_gib(required) if required else '?':>9}",
            "",
        ]
    elif xla:
        lines += [
            f"XLA, {xla['compiler']} compile with attention={xla['attention']} (GiB per device)",
            f"  {'arguments':34}{_gib(xla['argument'])}",
            f"  {'outputs':34}{_gib(xla['output'])}",
            f"  {'aliased (donated)':34}{_gib(xla['alias'])}",
            f"  {'temp':34}{_gib(xla['temp'])}",
            f"  {'generated code':34}{_gib(xla['generated_code'])}",
            f"  {'peak = arg + out - alias + temp':34}{_gib(xla['peak'])}",
        ]
        if "attention_alone_temp" in xla:
            lines.append(
                f"  {'stand-in attention alone, temp':34}{_gib(xla['attention_alone_temp'])}"
            )
        if xla["float32_residual_copy"]:
            lines.append(f"  {'CPU float32 residual copy':34}{_gib(xla['float32_residual_copy'])}")
        if xla["projected_peak"] is None:
            lines.append(f"  {'projected, attention=' + i['attention']:34}{'n/a':>9}")
        else:
            lines += [
                f"  {'projected, attention=' + i['attention']:34}{_gib(xla['projected_peak'])}",
                f"  {'train phase':34}{_gib(xla['train_phase'])}",
            ]
        lines += [
            f"  lowered in {xla['lower_s']:.1f} s, compiled in {xla['compile_s']:.1f} s",
            "",
        ]
    rollout = report.get("xla_rollout")
    if rollout and "error" in rollout:
        lines += ["XLA, the engine's decode program: refused", f"  {rollout['error']}", ""]
    elif rollout:
        lines += [
            "XLA, the engine's decode program beside the state (GiB per device)",
            f"  {'arguments (weights, KV pool)':34}{_gib(rollout['argument'])}",
            f"  {'temp':34}{_gib(rollout['temp'])}",
            f"  {'peak':34}{_gib(rollout['peak'])}",
            f"  {'+ optimizer state':34}{_gib(rollout['optimizer'])}",
            f"  {'rollout phase':34}{_gib(rollout['rollout_phase'])}",
            "",
        ]
    lines.append(f"analytic, attention={a['attention']} (GiB per device)")
    for item in a["items"]:
        lines.append(f"  {item['name']:34}{_gib(item['bytes'])}  {item['phase']:8} {item['note']}")
    lines += [
        f"  {'train step':34}{_gib(a['train_step'])}",
        f"  {'train phase':34}{_gib(a['train_phase'])}",
        f"  {'rollout phase':34}{_gib(a['rollout_phase'])}",
        "",
        f"device {i['device_memory_gib']:g} GiB, usable {report['usable_bytes'] / 2**30:.1f} GiB "
        f"({i['headroom']:.0%} headroom)",
    ]
    for name, ok in report["fits"].items():
        lines.append(f"  {name:34}{'fits' if ok else 'DOES NOT FIT'}")
    lines += ["", *(f"note: {n}" for n in report["notes"])]
    lines.append(f"peak host RSS of this planner: {report['peak_rss_gib']:.2f} GiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.devices is None and args.topology is None:
        raise SystemExit("give --devices (fake CPU devices) or --topology (a TPU slice)")
    _use_fake_devices(args.devices or 1)
    started = time.perf_counter()
    report = plan(args)
    report["wall_s"] = time.perf_counter() - started
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0 if report["fits"]["all"] else 1


if __name__ == "__main__":
    sys.exit(main())
