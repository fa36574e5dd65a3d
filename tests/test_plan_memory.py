"""Memory planning: the analytic breakdown against hand-counted bytes, the Trainer's state at the
shardings the planner assumes, and an ahead-of-time compile of the 7B step on 64 fake devices."""

import dataclasses
import json
import os
import subprocess
import sys
import time

import jax
import pytest
from flax import nnx

from swejax.config import EngineConfig, OptimizerConfig
from swejax.errors import UserError
from swejax.memory_plan import (
    PlanSpec,
    abstract_mesh,
    analytic_breakdown,
    decode_shape,
    fit_engine,
    local_elements,
    page_bytes,
    rollout_items,
    state_bytes,
)
from swejax.models import build_model, place_state, preset
from swejax.sharding import make_mesh
from swejax.train import Objective, Trainer, make_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESH = {"data": 1, "fsdp": 2, "tensor": 2, "context": 1}


def _tiny_spec(**changes) -> PlanSpec:
    model = preset("tiny", dtype="bfloat16", param_dtype="float32", remat="full")
    engine = EngineConfig(num_slots=2, capacity=256)
    fields = dict(model=model, mesh=MESH, seq=256, engine=engine)
    return PlanSpec(**{**fields, **changes})


def test_tiny_breakdown_by_hand():
    # tiny: vocab 4096, hidden 64, 2 layers, 4 heads and 2 kv heads of 16, MLP 128, tied.
    # fsdp=2 splits "embed", tensor=2 splits heads, kv heads, MLP and vocabulary.
    embed = (4096 // 2) * (64 // 2)
    per_layer = (
        32 * 2 * 16  # q [D_fsdp, N_tp, H]
        + 2 * 32 * 1 * 16  # k, v
        + 2 * 16
        + 2 * 1 * 16  # q bias [N_tp, H]; k, v biases
        + 2 * 16 * 32  # o [N_tp, H, D_fsdp]
        + 2 * 64  # two RMSNorm scales, replicated
        + 3 * 32 * 64  # gate, up [D_fsdp, F_tp]; down [F_tp, D_fsdp]
    )
    weights = 4 * (embed + 2 * per_layer + 64)  # float32; + the final norm
    plan = analytic_breakdown(_tiny_spec(model=_tiny_spec().model.replace(attention="flash")))
    assert plan.get("weights") == weights
    assert plan.get("optimizer") == 2 * weights
    assert plan.get("gradients") == weights
    # 2 rows (1 per fsdp shard) x 256 tokens x 64 hidden x bf16, saved for each of 2 layers.
    assert plan.get("saved activations (remat=full)") == 2 * 256 * 64 * 2
    # flash: float32 lse and output accumulator of 1 row x 2 local heads x 256 tokens.
    assert plan.get("attention (flash)") == 1 * 2 * 256 * (4 + 4 * 16)
    step = sum(i.bytes for i in plan.items if i.phase == "step")
    assert plan.train_step == 3 * weights + max(step, 2 * weights)
    assert plan.train_phase == plan.train_step  # the loop releases the KV cache first
    assert plan.get("rollout KV cache") == 0  # no rollout items given


def test_tiny_rollout_by_hand():
    # The rollout layout on 2 hosts of 2 devices: tensor=2 inside each, 2 replicas. The copy
    # holds every weight in bfloat16, heads, MLP and vocabulary split over tensor only.
    spec = _tiny_spec()
    shape = decode_shape(spec, devices_per_host=2)
    assert (shape.layout, shape.tensor, shape.shards) == ("rollout", 2, 2)
    per_layer = (
        64 * 2 * 16  # q [D, N_tp, H]
        + 2 * 64 * 1 * 16  # k, v [D, K_tp, H]
        + 2 * 16
        + 2 * 1 * 16  # q bias [N_tp, H]; k, v biases
        + 2 * 16 * 64  # o [N_tp, H, D]
        + 2 * 64  # two RMSNorm scales
        + 3 * 64 * 64  # gate, up [D, F_tp]; down [F_tp, D]
    )
    copy = 2 * (4096 // 2 * 64 + 2 * per_layer + 64)
    plan = analytic_breakdown(spec, rollout=rollout_items(spec, shape))
    assert plan.get("decode copy") == copy
    # KV pool: 2 slots x 4 pages of 64 over 2 replicas, [L, P_replica, page, K_tp, H] bf16,
    # for k and v: each replica holds its slot's 4 pages.
    assert plan.get("rollout KV cache") == 2 * (2 * 4 * 64 * 1 * 16) * 2
    assert plan.get("decode logits") == 3 * (4096 // 2) * 4  # 1 slot per replica, float32
    assert plan.rollout_phase == plan.total(("state",)) + plan.total(("rollout",))
    # Decoding over the training layout gathers a layer and the tables instead, and (with
    # split_layer_weights) copies the stacked layers out once per call.
    training = dataclasses.replace(spec, engine=dataclasses.replace(spec.engine, layout="training"))
    items = {i.name: i.bytes for i in rollout_items(training, decode_shape(training, 2))}
    assert "decode copy" not in items and items["decode gathered weights"] > 0
    assert items["decode layer-weight copy"] > 0


def test_the_pool_fits_what_memory_leaves():
    """`fit_engine` with 0 slots and pages: the KV pool takes what the training state and the
    copy leave of 1 GiB less 10%, the slots fill it at half the capacity each, and one more slot
    would not fit."""
    spec = _tiny_spec(engine=EngineConfig(num_slots=0, num_pages=0, capacity=4096))
    shape = decode_shape(spec, devices_per_host=2)
    state = state_bytes(spec)
    fitted = fit_engine(spec, shape, state, 2**30)
    sized = dataclasses.replace(spec, engine=fitted)
    used = state + sum(i.bytes for i in rollout_items(sized, shape))
    per_page, usable = page_bytes(spec, shape), int(0.9 * 2**30)
    assert used <= usable < used + per_page + 3 * (4096 // 2) * 4
    slots_per_replica = fitted.num_slots // 2
    assert slots_per_replica == (fitted.pool_pages // 2) * 64 // 2048
    with pytest.raises(UserError, match="less than one sequence"):
        fit_engine(spec, shape, state, state)
    # Without a memory figure (a CPU), num_pages=0 keeps its meaning: every slot at capacity.
    cpu = dataclasses.replace(spec, engine=dataclasses.replace(spec.engine, num_slots=4))
    assert fit_engine(cpu, shape, state, None).pool_pages == 4 * 4096 // 64
    with pytest.raises(UserError, match="set engine.memory_gib"):
        fit_engine(spec, shape, state, None)


def test_reference_attention_is_quadratic():
    spec = _tiny_spec()
    scores = 1 * 2 * 256 * 256  # 1 row x 2 local heads x T x S
    mask = 256 * 256 * (4 + 1)  # float32 bias and boolean mask, shared by heads
    assert analytic_breakdown(spec).get("attention (reference)") == 2 * 4 * scores + mask
    longer = analytic_breakdown(_tiny_spec(seq=512)).get("attention (reference)")
    assert longer == 4 * (2 * 4 * scores + mask)


def test_undivided_axes_are_replicated():
    mesh = abstract_mesh({"data": 1, "fsdp": 16, "tensor": 8, "context": 1})
    # Qwen2.5-7B's 28 query heads do not split 8 ways: each device holds all of them.
    assert local_elements(("embed", "heads", "head_dim"), (3584, 28, 128), mesh) == 224 * 28 * 128
    assert local_elements(("embed", "heads", "head_dim"), (8192, 64, 128), mesh) == 512 * 8 * 128


@pytest.mark.slow
def test_trainer_state_has_the_planned_shardings():
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    model = place_state(build_model(preset("tiny")), mesh)
    tx = make_optimizer(OptimizerConfig(), learning_rate=1e-6, weight_decay=0.1)
    trainer = Trainer(model, tx, Objective("dapo", 0.2, 0.3), mesh=mesh)
    params = nnx.state(model)
    mu = trainer.opt_state[1][0].mu
    for param, moment in zip(jax.tree.leaves(params), jax.tree.leaves(mu), strict=True):
        assert moment.sharding == param.sharding
    assert all(x.sharding.mesh == mesh for x in jax.tree.leaves(trainer.opt_state))


def plan_memory_report(*args: str, timeout: int = 600) -> dict:
    """tools/plan_memory.py --json in its own process (it sets the fake device count), on the
    embedded default config with `--config.KEY=VALUE` overrides among `args`."""
    script = os.path.join(ROOT, "tools", "plan_memory.py")
    run = subprocess.run(
        [sys.executable, script, *args, "--json"], capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


@pytest.mark.slow
def test_compile_7b_step_at_32k_on_64_devices():
    started = time.perf_counter()
    report = plan_memory_report(
        *("--devices", "64", "--device-memory-gib", "1000"),
        *("--config.model.preset=qwen2.5-7b", "--config.engine.capacity=32768"),
        *("--config.model.dtype=bfloat16", "--config.model.remat=full"),
        *("--config.mesh.fsdp=16", "--config.mesh.tensor=4", "--config.engine.num_slots=16"),
        "--config.engine.num_pages=8192",  # every slot at full context
    )
    inputs = report["inputs"]
    assert (inputs["seq"], inputs["rows_per_micro_batch"], inputs["phase"]) == (32768, 16, "dapo")
    xla, analytic = report["xla"], {i["name"]: i["bytes"] for i in report["analytic"]["items"]}
    state = analytic["weights"] + analytic["optimizer"]
    batch = analytic["batch"]
    # Arguments are the sharded parameters, AdamW state and batch: what the rules say, exactly
    # (the CPU backend does not pad), and donation aliases all of the state.
    assert state <= xla["argument"] <= 1.01 * state + batch
    assert xla["alias"] >= 0.99 * state
    assert xla["temp"] > 0 and xla["peak"] > xla["argument"]
    # 16 rows of 32k over fsdp=16: one row per device; the reference attention's float32
    # scores (7 local heads x 32k x 32k) dominate XLA's temp as they do the analytic count.
    scores = analytic["attention (reference)"]
    assert 0.8 * scores < xla["temp"] < xla["peak"]
    assert 0.5 < report["analytic"]["train_step"] / xla["projected_peak"] < 2.0
    # The engine's decode program beside the state: its arguments are the decode copy and the
    # pool; the training state stays beside it.
    rollout = report["xla_rollout"]
    assert analytic["decode copy"] + analytic["rollout KV cache"] <= rollout["argument"]
    assert rollout["beside"] == analytic["weights"] + analytic["optimizer"]
    assert rollout["rollout_phase"] == rollout["peak"] + rollout["beside"]
    print(f"7B at 32k on 64 devices: {time.perf_counter() - started:.0f} s")


@pytest.mark.slow
def test_the_planner_plans_the_run_a_config_trains():
    """The paper's stage 1 as its config file sets it: 128 devices as fsdp=8 x tensor=8 x
    context=2, one 65k row per batch shard in each of 16 micro-batches of the 128-trajectory
    step; beside it, decoding from a bfloat16 copy at tensor=8 on each of 16 nodes, with as
    many slots at 32k tokens as the KV pool an H200 holds beside the state and copy."""
    config = os.path.join(ROOT, "configs", "qwen25_72b_stage1.py")
    report = plan_memory_report(f"--config={config}", "--devices", "128", "--no-compile")
    i = report["inputs"]
    assert i["mesh"] == {"data": 1, "fsdp": 8, "tensor": 8, "context": 2}
    assert (i["seq"], i["micro_batch_rows"], i["micro_batches"]) == (65536, 1, 16)
    assert (i["batch_rows"], i["attention"], i["phase"]) == (128, "ring", "dapo")
    analytic = {item["name"]: item["bytes"] for item in report["analytic"]["items"]}
    assert analytic["gradients"] == 2 * analytic["weights"]  # the accumulator and one more
    # 72.7B weights in bfloat16 over tensor=8; float32 weights and two moments over 128.
    assert 16.5 * 2**30 < analytic["decode copy"] < 17.5 * 2**30
    assert report["analytic"]["rollout_phase"] <= report["usable_bytes"]
    rollout = report["rollout"]["layouts"]["rollout"]
    assert (rollout["tensor"], rollout["replicas"]) == (8, 16)
    # A page of the 80 layers' k and v: 64 tokens x 80 x 2 x 1 KV head x 128 x 2 bytes.
    page = 64 * 80 * 2 * 128 * 2
    per_replica = i["pool_pages"] // 16
    free = report["usable_bytes"] - report["analytic"]["rollout_phase"]
    assert analytic["rollout KV cache"] == per_replica * page and free < page + 2**20
    assert i["rollout_slots"] == 16 * (per_replica * 64 // 32768) > 1000
    assert report["fits"]["all"]
    overridden = plan_memory_report(
        f"--config={config}", "--devices", "128", "--no-compile", "--config.mesh.context=1"
    )
    assert overridden["inputs"]["mesh"]["fsdp"] == 16


def test_the_planner_refuses_a_bad_config_in_one_line():
    script = os.path.join(ROOT, "tools", "plan_memory.py")
    run = subprocess.run(
        [sys.executable, script, "--devices", "8", "--config.engine.num_slots=-1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "'engine.num_slots' must be at least 0" in run.stderr


def test_the_rollout_estimates_follow_the_hardware_and_the_episode_given():
    """The estimates by hand from the flags: the demo's tiny model (float32) on 8 fake devices
    as 2 hosts of 4, no compile (so no collective bytes), one slot a replica."""
    report = plan_memory_report(
        *("--devices", "8", "--no-compile", "--rollout-only", "--hardware", "h100"),
        *("--hbm-gbps", "1000", "--devices-per-host", "4", "--turns", "2"),
        *("--reply-tokens", "10", "--observation-tokens", "20", "--prompt-tokens", "30"),
        *("--config.engine.num_slots=8", "--config.engine.num_pages=128"),
    )
    rollout = report["rollout"]
    hardware = rollout["hardware"]
    assert (hardware["name"], hardware["memory_gib"], hardware["devices_per_host"]) == (
        "h100",
        80.0,
        4,
    )
    assert hardware["hbm_gbps"] == 1000 and report["inputs"]["device_memory_gib"] == 80.0
    assumed = rollout["assumptions"]
    assert (assumed["episode_tokens"], assumed["mean_context"]) == (30 + 2 * 30, 30 + 30)
    plan = rollout["layouts"]["rollout"]
    assert (plan["tensor"], plan["replicas"], plan["num_slots"], plan["num_pages"]) == (
        1,
        8,
        8,
        128,
    )
    read = plan["hbm_bytes_per_step"]
    # Every weight in float32 on every replica; one slot's keys and values at 60 tokens:
    # 2 layers x 2 KV heads x 16 x 4 bytes, k and v.
    assert read == {
        "weights": 4 * 336_448,
        "kv": 60 * 2 * 2 * 16 * 4 * 2,
        "total": 4 * 336_448 + 60 * 512,
    }
    estimate = plan["estimate"]
    step = read["total"] / 1e12
    assert estimate["step_s"] == pytest.approx(step)
    assert estimate["tokens_per_s"] == pytest.approx(8 / step)
    # The demo's iteration: 4 tasks x 4 samples in 2 waves of 8 slots, 2 turns of 10 tokens.
    assert (estimate["episodes"], estimate["waves"]) == (16, 2)
    assert estimate["decode_s"] == pytest.approx(2 * 2 * 10 * step)
    prefill = 2 * 336_448 * 16 * (30 + 2 * 20) / (8 * 989e12 * 0.5)
    assert estimate["prefill_s"] == pytest.approx(prefill)
    script = os.path.join(ROOT, "tools", "plan_memory.py")
    run = subprocess.run(
        [sys.executable, script, "--devices", "8", "--hardware", "a100", "--no-compile"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "unknown hardware 'a100'; one of h200, h100, v5p" in run.stderr
