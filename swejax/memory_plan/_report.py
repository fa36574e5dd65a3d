"""The planner's report on a run: the analytic breakdown, XLA's compile of the train step (and
of one layer's attention where a stand-in compiles in the kernel's place), the engine's decode
program beside the state, and a verdict per phase; `format_report` lays it out as text.

Attention. The analytic model counts the run's own `model.attention`. Kernels that only lower
on GPU or TPU (flash, ring, cudnn) cannot be compiled by the CPU compiler, so a CPU compile uses
`PlanOptions.compile_attention` (default: the run's own when it runs on CPU, else
ring_reference, the same ring with jnp blocks) and the report says so: XLA's number then holds
T x S score blocks the kernel never materialises, and a projection swaps the analytic attention
line of one for the other. For a TPU slice (`PlanOptions.topology`, compiled by libtpu through
`swejax.tpu_compiler`, no TPU needed) the run's own attention is compiled, Pallas kernels
included (traced for TPU through `swejax_kernels.platform.lowering_for`): no stand-in and no
projection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource

from swejax.config import Config
from swejax.errors import UserError
from swejax.memory_plan._analytic import GIB, analytic_breakdown
from swejax.memory_plan._compile import (
    CompileOutOfMemory,
    compile_attention,
    compile_decode_step,
    compile_train_step,
)
from swejax.memory_plan._spec import plan_spec
from swejax.models.attention import check_attention
from swejax.models.attention_impls import ATTENTION_IMPLS, attention_impl
from swejax.sharding import make_mesh
from swejax_kernels.platform import lowering_for

# Largest share of XLA's peak that the stand-in attention may take for the projection to hold.
_RELIABLE_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class PlanOptions:
    """How to plan (the run itself is the config)."""

    devices: int | None = None  # fake CPU devices for the mesh
    topology: str | None = None  # or a TPU slice compiled by the TPU compiler, e.g. v5p:4x4x8
    phase: str | None = None  # "rft" or "dapo"; None: DAPO, or RFT for a run without it
    device_memory_gib: float = 141.0
    headroom: float = 0.10  # kept free: allocator fragmentation, collectives' buffers, runtime
    compile_attention: str | None = None  # the CPU compile's stand-in (see the module docstring)
    compile: bool = True  # False: the analytic breakdown only


def _compile_attention(cfg, requested: str | None, platform: str) -> tuple[str, str | None]:
    """(implementation to compile for `platform`, why it differs from the run's), raising if
    asked for one that cannot run there."""
    if requested is not None:
        check_attention(cfg.replace(attention=requested), platform)
        return requested, None if requested == cfg.attention else "compile_attention was asked for"
    try:
        check_attention(cfg, platform)
    except ValueError as error:
        return "ring_reference", str(error)
    return cfg.attention, None


def _xla_report(options: PlanOptions, spec, devices, notes: list[str]) -> dict:
    """XLA's numbers for the step, and its peak projected to the run's own attention on the
    target: the attention compiled here (measured alone) swapped for the run's (analytic), and
    the CPU backend's float32 copy of the saved layer inputs taken out."""
    cfg = spec.model
    platform = "tpu" if options.topology else "cpu"
    impl, reason = _compile_attention(cfg, options.compile_attention, platform)
    compiled_spec = dataclasses.replace(spec, model=cfg.replace(attention=impl))
    mesh = make_mesh(**spec.mesh, devices=devices)
    compiler = f"TPU ({options.topology})" if options.topology else "CPU"
    # For a TPU slice the Pallas kernels (flash, ring) are traced for TPU from this CPU process.
    target = lowering_for("tpu") if options.topology else contextlib.nullcontext()
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


def _rollout_report(
    options: PlanOptions, spec, devices, compiled_attention, analytic, notes
) -> dict | None:
    """XLA's peak for the engine's decode program beside the state, when the train step
    compiled the run's own attention: the decode kernel of flash and ring only compiles for a
    TPU slice, and a stand-in's decode path would not be the run's."""
    if compiled_attention != spec.model.attention:
        notes.append(
            f"No XLA number for the rollout phase: the decode path of attention="
            f"{spec.model.attention!r} does not compile here."
        )
        return None
    target = lowering_for("tpu") if options.topology else contextlib.nullcontext()
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


def plan(config: Config, options: PlanOptions) -> dict:
    """Everything the planner reports on the run `config` trains, as plain data."""
    from swejax.tpu_compiler import tpu_devices

    devices = tpu_devices(options.topology) if options.topology else None
    if devices is not None and options.devices not in (None, len(devices)):
        raise UserError(
            f"--devices={options.devices} but {options.topology} has {len(devices)} chips"
        )
    count = len(devices) if devices is not None else options.devices
    spec = plan_spec(config, count, options.phase)
    try:  # a whole-sequence attention refuses a sequence split over context
        attention_impl(spec.model.attention).check_context(spec.mesh["context"])
    except ValueError as error:
        raise UserError(str(error)) from None
    analytic = analytic_breakdown(spec)
    usable = options.device_memory_gib * (1 - options.headroom) * GIB
    kv_pool = analytic.get("rollout KV cache")
    cfg = spec.model
    report: dict = {
        "inputs": {
            **dataclasses.asdict(options),
            "devices": count,
            "name": config.name,
            "preset": config.model.checkpoint or config.model.preset,
            "seq": spec.seq,
            "dtype": cfg.dtype,
            "param_dtype": cfg.param_dtype,
            "remat": cfg.remat,
            "attention": cfg.attention,
            "phase": spec.objective.kind,
            "mesh": spec.mesh,
            "micro_batch_rows": spec.micro_batch_rows,
            "micro_batches": spec.micro_batches,
            "rows_per_micro_batch": spec.rows,
            "batch_rows": spec.batch_rows,
            "rollout_slots": spec.engine.num_slots,
            "rollout_capacity": spec.engine.capacity,
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
    if options.compile:
        xla = report["xla"] = _xla_report(options, spec, devices, report["notes"])
        if "error" in xla:
            fits["train_phase_xla"] = False
        elif xla["projected_peak"] is not None:
            xla["train_phase"] = xla["projected_peak"]
            fits["train_phase_xla"] = xla["train_phase"] <= usable
        if kv_pool:
            impl = xla["attention"]
            rollout = _rollout_report(options, spec, devices, impl, analytic, report["notes"])
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
    if not options.topology:
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
        f"run {i['name']} ({i['phase']} step): {i['preset']}, {i['seq']:,} tokens per row, "
        f"mesh {mesh} ({i['devices']} devices), remat={i['remat']}, {i['dtype']} compute / "
        f"{i['param_dtype']} params",
        f"batch: {i['rows_per_micro_batch']} rows per micro-batch ({i['micro_batch_rows']} per "
        f"batch shard) x {i['micro_batches']} micro-batches; attention {i['attention']}; "
        f"rollout: {i['rollout_slots']} slots x {i['rollout_capacity']:,} tokens, "
        f"{i['pool_pages']:,} KV pages",
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
