"""The rollout planned: per decoding layout, the engine that fits, what one decode step reads
from device memory and moves between devices (read from the compiled program), and from those
and a hardware description the decode speed and the time of one iteration's rollout.

For each layout (`engine.layout`: "rollout", the run's by default, and "training"):

- the engine sized as the run sizes it (`fit_engine`, from the hardware's memory);
- the decode program compiled for one host's devices (the rollout layout: each host decodes
  alone) or for the whole training mesh, and its collectives split into bytes within a host
  and across hosts, per decode call and per step (`collective_bytes`; the CPU compiler was seen
  to hoist the training layout's weight gathers out of the step loop, which the TPU compiler
  does not: per step, a call's bytes are spread over its `steps_per_call` steps);
- device-memory bytes per step: the weights a device reads (its tensor shard of every weight,
  in the compute dtype) and its slots' keys and values at the mean context of an episode;
- estimates, stated as such: a step takes its device-memory bytes at the hardware's bandwidth
  plus its collective bytes at the interconnect's (no overlap assumed); tokens/s is the slots
  of every replica over that; an iteration's rollout is the waves of episodes its slots take,
  each of `turns` x `reply_tokens` steps, plus prefill of the prompts and observations at
  `prefill_utilization` of the chips' peak. Sandboxes, stragglers and preemption are left out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable

import jax.numpy as jnp

from swejax.config import Config
from swejax.errors import UserError
from swejax.memory_plan._analytic import GIB, PlanSpec
from swejax.memory_plan._collectives import collective_bytes
from swejax.memory_plan._compile import (
    CompileOutOfMemory,
    abstract_decode_copy,
    abstract_train_state,
    compile_decode,
)
from swejax.memory_plan._rollout import (
    DecodeShape,
    _weights_on,
    copies_weights,
    decode_shape,
    fit_engine,
    page_bytes,
    rollout_items,
    state_bytes,
)
from swejax.models.build import count_params


@dataclasses.dataclass(frozen=True)
class Hardware:
    """One accelerator as the estimates see it (bandwidths in GB/s, one direction)."""

    name: str
    memory_gib: float
    hbm_gbps: float  # device memory bandwidth
    intra_host_gbps: float  # to a device of the same host (NVLink; ICI on a TPU)
    cross_host_gbps: float  # to a device of another host (InfiniBand per GPU; ICI on a TPU)
    devices_per_host: int
    bf16_tflops: float  # dense peak


# Vendors' published figures: H200 141 GB HBM3e at 4.8 TB/s, H100 SXM 80 GB at 3.35 TB/s,
# NVLink 4 900 GB/s both ways (450 each), a 400 Gb/s NIC per GPU (50 GB/s), 989 dense bf16
# TFLOPs; TPU v5p 95 GB HBM2e at 2,765 GB/s, 4,800 Gb/s of ICI per chip (600 GB/s, the same
# network within and across hosts of a slice; half each way), 459 bf16 TFLOPs, 4 chips a host.
HARDWARE = {
    "h200": Hardware("h200", 141.0, 4800.0, 450.0, 50.0, 8, 989.0),
    "h100": Hardware("h100", 80.0, 3350.0, 450.0, 50.0, 8, 989.0),
    "v5p": Hardware("v5p", 95.0, 2765.0, 300.0, 300.0, 4, 459.0),
}


@dataclasses.dataclass(frozen=True)
class Assumptions:
    """What an episode is assumed to look like (the estimates' inputs, stated in the report)."""

    turns: int  # replies per episode, on average
    reply_tokens: int = 300  # sampled per reply
    observation_tokens: int = 1200  # per observation
    prompt_tokens: int = 1500  # system prompt and issue
    prefill_utilization: float = 0.5  # of the chips' peak, for the prompts and observations

    @property
    def episode_tokens(self) -> int:
        return self.prompt_tokens + self.turns * (self.reply_tokens + self.observation_tokens)

    @property
    def mean_context(self) -> int:
        """The context a decode step attends over, averaged over an episode's steps."""
        return self.prompt_tokens + self.turns * (self.reply_tokens + self.observation_tokens) // 2


def default_assumptions(config: Config) -> Assumptions:
    """Three quarters of the turn limit (the paper's episodes run 40-80 turns to 65k-131k)."""
    return Assumptions(turns=max(1, 3 * config.scaffold.max_turns // 4))


def _hbm_bytes_per_step(spec: PlanSpec, shape: DecodeShape, assume: Assumptions) -> dict:
    """Device-memory bytes one device reads per decode step: its tensor shard of every weight
    (in the compute dtype: a gathered training layout reads what it gathered) and its slots'
    keys and values at the mean context."""
    cfg, engine = spec.model, spec.engine
    tensor_only = {"data": 1, "fsdp": 1, "tensor": shape.tensor, "context": 1}
    weights = _weights_on(cfg, tensor_only).total * jnp.dtype(cfg.dtype).itemsize
    slots = math.ceil(engine.num_slots / shape.shards)
    context = min(assume.mean_context, engine.capacity)
    kv = slots * context * page_bytes(spec, shape) // engine.page_size
    return {"weights": weights, "kv": kv, "total": weights + kv}


def _compile_for(spec: PlanSpec, shape: DecodeShape, devices, host_of, target, platform) -> dict:
    """XLA's memory and the collective bytes of the decode program each host runs. Where the
    run's attention does not compile for `platform` (a Pallas kernel on the CPU), its
    jnp reference stands in: the same collectives (attention runs on each device's own slots
    and heads), other buffers."""
    from swejax.models.attention import check_attention
    from swejax.models.attention_impls import attention_impl
    from swejax.sampling import rollout_layout
    from swejax.sharding import make_mesh

    attention = spec.model.attention
    try:
        check_attention(spec.model, platform)
    except ValueError:
        attention = "ring_reference" if attention_impl(attention).ring else "reference"
        spec = dataclasses.replace(spec, model=spec.model.replace(attention=attention))

    train_mesh = make_mesh(**spec.mesh, devices=devices)
    if shape.layout == "rollout":
        layout = rollout_layout(train_mesh, shape.tensor, host_of)
        mesh, share = layout.mesh, layout.local_replicas / layout.replicas
        engine = dataclasses.replace(
            spec.engine,
            num_slots=max(1, round(spec.engine.num_slots * share)),
            num_pages=round(spec.engine.pool_pages * share),
        )
        if copies_weights(spec, shape):
            params = abstract_decode_copy(spec.model, mesh)
        else:
            params = abstract_train_state(spec.model, mesh)[1]
    else:
        mesh, engine = train_mesh, spec.engine
        params = abstract_train_state(spec.model, mesh)[1]
    try:
        with target():
            memory, text = compile_decode(spec.model, engine, mesh, params)
    except CompileOutOfMemory as error:
        return {"error": str(error).splitlines()[0], "required_temp": error.required_temp}
    hosts = [host_of(d) for d in mesh.devices.flat]
    moved = collective_bytes(text, hosts)
    return {
        "attention": attention,
        "devices": len(hosts),
        "hosts": len(set(hosts)),
        "slots": engine.num_slots,
        "pages": engine.pool_pages,
        "memory": {**dataclasses.asdict(memory), "peak": memory.peak},
        "collectives": dataclasses.asdict(moved),
    }


def _estimate(spec, config, shape, hbm, compiled, hardware: Hardware, assume) -> dict:
    """Step time, tokens/s and one iteration's rollout time (see the module docstring)."""
    engine, steps = spec.engine, spec.engine.steps_per_call
    moved = (compiled or {}).get("collectives")
    within = across = 0.0
    if moved:
        within = moved["per_step_within_host"] + moved["per_call_within_host"] / steps
        across = moved["per_step_across_hosts"] + moved["per_call_across_hosts"] / steps
    hbm_s = hbm["total"] / (hardware.hbm_gbps * 1e9)
    comm_s = within / (hardware.intra_host_gbps * 1e9) + across / (hardware.cross_host_gbps * 1e9)
    step_s = hbm_s + comm_s
    tokens_per_s = engine.num_slots / step_s
    episodes = config.dapo.tasks_per_iteration * config.dapo.group_size
    waves = math.ceil(episodes / engine.num_slots)
    decode_s = waves * assume.turns * assume.reply_tokens * step_s
    prefill = episodes * (assume.prompt_tokens + assume.turns * assume.observation_tokens)
    flops = 2 * count_params(spec.model) * prefill
    peak = spec.devices * hardware.bf16_tflops * 1e12 * assume.prefill_utilization
    prefill_s = flops / peak
    return {
        "step_s": step_s,
        "hbm_s": hbm_s,
        "collective_s": comm_s,
        "collective_bytes_per_step": {"within_host": within, "across_hosts": across},
        "tokens_per_s": tokens_per_s,
        "episodes": episodes,
        "waves": waves,
        "decode_s": decode_s,
        "prefill_s": prefill_s,
        "rollout_s": decode_s + prefill_s,
    }


def plan_layouts(
    spec: PlanSpec,
    config: Config,
    hardware: Hardware,
    assume: Assumptions,
    memory_gib: float,
    headroom: float,
    compile: bool,
    devices=None,
    host_of=None,
    target: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    platform: str = "cpu",
    layouts: tuple[str, ...] = ("rollout", "training"),
) -> dict[str, dict]:
    """layout -> its plan: the engine that fits `memory_gib` per device, the rollout phase's
    items, device-memory bytes per step, the compiled decode (with `compile`: for `devices`,
    hosts as `host_of` says, under `target` (a lowering context)) and the estimates. A pool
    sized to fit (`engine.num_pages` 0) gives up the pages XLA's decode temporaries need
    beyond the analytic count (`xla.pages_cut`: 3.2 GiB a chip for the 72B on a TPU, apparently
    its MLP weights relaid, their local width being no multiple of 128; the run itself leaves
    them the headroom)."""
    state, weights = state_bytes(spec), state_bytes(spec, with_optimizer=False)
    out = {}
    for layout in layouts:
        sized = dataclasses.replace(spec, engine=dataclasses.replace(spec.engine, layout=layout))
        shape = decode_shape(sized, hardware.devices_per_host)
        try:
            engine = fit_engine(sized, shape, state, int(memory_gib * GIB), headroom)
        except UserError as error:
            out[layout] = {"error": str(error)}
            continue
        sized = dataclasses.replace(sized, engine=engine)
        compiled = None
        if compile:
            compiled = _compile_for(sized, shape, devices, host_of, target, platform)
        usable = compiled if compiled and "error" not in compiled else None
        plan: dict = {"tensor": shape.tensor, "replicas": shape.shards, "compiled": compiled}
        if usable and usable["attention"] == spec.model.attention:  # a stand-in's memory
            # is not the run's. The training state stays beside the decode program; over the
            # training layout
            # its weights are among the program's arguments already.
            beside = state if layout == "rollout" else state - weights
            xla = usable["memory"]["peak"] + beside
            cut = 0
            if not spec.engine.num_pages:  # a pool sized to fit: XLA's temporaries come first
                per_page = page_bytes(sized, shape)
                cut = max(0, math.ceil((xla - memory_gib * GIB * (1 - headroom)) / per_page))
                if engine.pool_pages // shape.shards - cut < engine.pages_per_slot:
                    out[layout] = {
                        "error": "XLA's decode temporaries leave no room for one sequence's pages",
                        "compiled": compiled,
                    }
                    continue
                engine = dataclasses.replace(
                    engine, num_pages=engine.pool_pages - cut * shape.shards
                )
                if not spec.engine.num_slots:  # slots for the smaller pool
                    unsized = dataclasses.replace(engine, num_slots=0)
                    engine = fit_engine(dataclasses.replace(sized, engine=unsized), shape, 0, None)
                sized = dataclasses.replace(sized, engine=engine)
                xla -= cut * per_page
            plan["xla"] = {"beside": beside, "rollout_phase": xla, "pages_cut": cut * shape.shards}
        items = rollout_items(sized, shape)
        hbm = _hbm_bytes_per_step(sized, shape, assume)
        out[layout] = {
            **plan,
            "num_slots": engine.num_slots,
            "num_pages": engine.pool_pages,
            "slots_per_replica": math.ceil(engine.num_slots / shape.shards),
            "items": [dataclasses.asdict(item) for item in items],
            "rollout_phase": state + sum(item.bytes for item in items),
            "hbm_bytes_per_step": hbm,
            "estimate": _estimate(sized, config, shape, hbm, usable, hardware, assume),
        }
    return out
