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
from swejax.memory_plan._analytic import GIB, Item, analytic_breakdown
from swejax.memory_plan._compile import (
    CompileOutOfMemory,
    compile_attention,
    compile_train_step,
)
from swejax.memory_plan._decode_plan import (
    HARDWARE,
    Assumptions,
    Hardware,
    default_assumptions,
    plan_layouts,
)
from swejax.memory_plan._rollout import HEADROOM
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
    # None: the hardware's where named (or a TPU slice's), else engine.memory_gib, else h200's
    device_memory_gib: float | None = None
    headroom: float = HEADROOM  # kept free: allocator fragmentation, collectives, runtime
    compile_attention: str | None = None  # the CPU compile's stand-in (see the module docstring)
    compile: bool = True  # False: the analytic breakdown only
    rollout_only: bool = False  # the rollout phase alone: no train step compiled
    compare_layouts: bool = True  # False: the run's `engine.layout` alone
    # The hardware of the estimates (`HARDWARE`; None: v5p for a v5p topology, else h200) and
    # its figures where given.
    hardware: str | None = None
    devices_per_host: int | None = None
    hbm_gbps: float | None = None
    intra_host_gbps: float | None = None
    cross_host_gbps: float | None = None
    # What an episode is assumed to be (`Assumptions`; turns None: 3/4 of the turn limit).
    turns: int | None = None
    reply_tokens: int = Assumptions.reply_tokens
    observation_tokens: int = Assumptions.observation_tokens
    prompt_tokens: int = Assumptions.prompt_tokens

    def hardware_spec(self) -> Hardware:
        name = self.hardware or ("v5p" if (self.topology or "").startswith("v5p") else "h200")
        if name not in HARDWARE:
            raise UserError(f"unknown hardware {name!r}; one of {', '.join(HARDWARE)}")
        given = {
            field: getattr(self, field)
            for field in ("devices_per_host", "hbm_gbps", "intra_host_gbps", "cross_host_gbps")
            if getattr(self, field) is not None
        }
        return dataclasses.replace(HARDWARE[name], **given)

    def assumptions(self, config: Config) -> Assumptions:
        turns = self.turns or default_assumptions(config).turns
        return Assumptions(turns, self.reply_tokens, self.observation_tokens, self.prompt_tokens)


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


def plan(config: Config, options: PlanOptions) -> dict:
    """Everything the planner reports on the run `config` trains, as plain data."""
    from swejax.tpu_compiler import tpu_devices

    devices = tpu_devices(options.topology) if options.topology else None
    if devices is not None and options.devices not in (None, len(devices)):
        raise UserError(
            f"--devices={options.devices} but {options.topology} has {len(devices)} chips"
        )
    count = len(devices) if devices is not None else options.devices
    hardware = options.hardware_spec()
    # An explicit memory, else the hardware named (or a TPU slice's), else the config's.
    memory_gib = options.device_memory_gib
    if not memory_gib and (options.hardware or options.topology):
        memory_gib = hardware.memory_gib
    memory_gib = memory_gib or config.engine.memory_gib or hardware.memory_gib
    spec = plan_spec(config, count, options.phase)
    try:  # a whole-sequence attention refuses a sequence split over context
        attention_impl(spec.model.attention).check_context(spec.mesh["context"])
    except ValueError as error:
        raise UserError(str(error)) from None
    if count % hardware.devices_per_host:
        raise UserError(f"{count} devices are not whole hosts of {hardware.devices_per_host}")
    per_host = hardware.devices_per_host
    layouts = plan_layouts(
        spec,
        config,
        hardware,
        options.assumptions(config),
        memory_gib,
        options.headroom,
        options.compile,
        devices,
        (lambda d: d.process_index) if options.topology else (lambda d: d.id // per_host),
        (lambda: lowering_for("tpu")) if options.topology else contextlib.nullcontext,
        "tpu" if options.topology else "cpu",
        ("rollout", "training") if options.compare_layouts else (config.engine.layout,),
    )
    chosen = layouts[config.engine.layout]
    if "error" in chosen:
        raise UserError(f"the rollout does not fit: {chosen['error']}")
    spec = dataclasses.replace(
        spec,
        engine=dataclasses.replace(
            spec.engine, num_slots=chosen["num_slots"], num_pages=chosen["num_pages"]
        ),
    )
    rollout = [Item(**item) for item in chosen["items"]]
    analytic = analytic_breakdown(spec, rollout=rollout)
    usable = memory_gib * (1 - options.headroom) * GIB
    cfg = spec.model
    report: dict = {
        "inputs": {
            **dataclasses.asdict(options),
            "device_memory_gib": memory_gib,
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
            "rollout_layout": config.engine.layout,
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
        "rollout": {
            "hardware": dataclasses.asdict(hardware),
            "assumptions": {
                **dataclasses.asdict(options.assumptions(config)),
                "episode_tokens": options.assumptions(config).episode_tokens,
                "mean_context": options.assumptions(config).mean_context,
            },
            "layouts": layouts,
        },
        "usable_bytes": int(usable),
        "notes": [],
    }
    fits = {"rollout_phase_analytic": analytic.rollout_phase <= usable}
    if not options.rollout_only:
        fits["train_phase_analytic"] = analytic.train_phase <= usable
    if options.compile and not options.rollout_only:
        xla = report["xla"] = _xla_report(options, spec, devices, report["notes"])
        if "error" in xla:
            fits["train_phase_xla"] = False
        elif xla["projected_peak"] is not None:
            xla["train_phase"] = xla["projected_peak"]
            fits["train_phase_xla"] = xla["train_phase"] <= usable
    compiled = chosen.get("compiled")
    if "xla" in chosen and compiled["attention"] == cfg.attention:
        report["xla_rollout"] = {**compiled["memory"], **chosen["xla"]}
        fits["rollout_phase_xla"] = chosen["xla"]["rollout_phase"] <= usable
    elif compiled and "error" in compiled:
        fits["rollout_phase_xla"] = False
    _notes(report, spec, options, compiled)
    report["fits"] = {**fits, "all": all(fits.values())}
    report["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return report


def _notes(report: dict, spec, options: PlanOptions, compiled: dict | None) -> None:
    notes = report["notes"]
    attention = attention_impl(spec.model.attention)
    if attention.quadratic and not attention.ring and spec.seq >= 16384:
        # Quadratic in the whole row, not only in a ring's local blocks.
        *others, last = (
            repr(impl.name) for impl in ATTENTION_IMPLS.values() if impl.ring or not impl.quadratic
        )
        notes.append(
            f"attention={attention.name!r} holds T x S buffers per row in every layer (all keys "
            f"on each device); long rows need {', '.join(others)} or {last}."
        )
    if compiled and compiled.get("attention") not in (None, spec.model.attention):
        notes.append(
            f"The decode programs were compiled with attention={compiled['attention']!r} in "
            f"place of {spec.model.attention!r}, whose decode kernel does not compile here: "
            "their collectives are the run's (attention runs on each device's own slots and "
            "heads), their memory is not, and no XLA verdict is given for the rollout phase."
        )
    notes.append(
        "The rollout phase: the training state stays where it is; the rollout layout adds the "
        "decode copy, the training layout the gathered weights; both add the KV pool (pages "
        "split like the slots, KV heads over tensor), released before each train step."
    )
    notes.append(
        "Decode speed and rollout time are estimates from the hardware's figures and the "
        "assumed episode, not measurements; collective bytes are read from the compiled "
        "decode programs."
    )
    if not options.topology:
        notes.append(
            "CPU compile: XLA's CPU backend upcasts some bfloat16 work to float32 (it keeps a "
            "float32 copy of the saved layer inputs, for one), hoists the training layout's "
            "weight gathers out of the decode loop, and schedules its own way; a GPU compile "
            "differs by some GiB either way."
        )
