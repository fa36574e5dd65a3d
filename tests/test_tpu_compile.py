"""The TPU kernels compiled by the TPU compiler itself, on this CPU machine (`swejax.tpu_compiler`).

libtpu compiles for a slice it does not have from the slice's topology: Mosaic compiles each
kernel, XLA assigns HBM and VMEM. So these check what the lowering tests cannot: that the
default tiles fit every generation's VMEM, that too large a tile is refused, and that the ring
step of a real model compiles for a sharded slice. Nothing runs; what a kernel computes is the
interpret-mode tests' part.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from test_plan_memory import plan_memory_report

from swejax.tpu_compiler import libtpu_path, tpu_devices
from swejax_kernels import flash
from swejax_kernels.decode import paged_decode_attention
from swejax_kernels.platform import lowering_for

GIB = 2**30
pytestmark = pytest.mark.tpu  # the TPU compiler, from tools/setup.sh; no TPU

if libtpu_path() is None:
    # tools/setup.sh installs it; CI must not pass by skipping.
    if os.environ.get("CI"):
        raise RuntimeError("CI has no TPU compiler: tools/setup.sh should have installed libtpu")
    pytest.skip("no TPU compiler (libtpu): run tools/setup.sh", allow_module_level=True)

# One small slice per TPU generation the kernels target.
GENERATIONS = ["v4:2x2x1", "v5e:2x2", "v5p:2x2x1", "v6e:2x2"]


def _on_one_chip(topology: str, shape, dtype=jnp.bfloat16) -> jax.ShapeDtypeStruct:
    chip = Mesh(tpu_devices(topology)[:1], ("chip",))
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(chip, P()))


def _compile_flash_gradient(topology, q_len, block_sizes=None, segmented=False, heads=(8, 1)):
    """The flash forward and backward of a 64:8-head layer sharded 8 ways over tensor
    (8 query heads on 1 KV head per chip, by default), head dim 128, bf16."""
    q = _on_one_chip(topology, (1, q_len, heads[0], 128))
    kv = _on_one_chip(topology, (1, q_len, heads[1], 128))
    segment_ids = _on_one_chip(topology, (1, q_len), jnp.int32) if segmented else None

    def loss(q, k, v, segment_ids):
        out = flash.flash_attention(q, k, v, segment_ids=segment_ids, block_sizes=block_sizes)
        return jnp.sum(out.astype(jnp.float32))

    with lowering_for("tpu"):
        lowered = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, kv, kv, segment_ids).lower()
        return lowered.compile()


@pytest.mark.parametrize("topology", GENERATIONS)
@pytest.mark.slow
def test_flash_at_32k_compiles_on_each_generation(topology):
    compiled = _compile_flash_gradient(topology, 32768)
    # The forward, dq and dk/dv kernels; nothing T x S in HBM (the float32 scores of 8 heads
    # at 32k would be 32 GiB). What temp holds is mostly the lane-replicated lse and delta
    # rows, 8 heads x 32k x 128 lanes x f32 = 128 MiB each.
    assert compiled.as_text().count('custom_call_target="tpu_custom_call"') == 3
    assert compiled.memory_analysis().temp_size_in_bytes < 1 * GIB


def test_packed_rows_of_odd_length_compile():
    _compile_flash_gradient("v5p:2x2x1", 5000, segmented=True)


def test_several_kv_heads_per_chip_compile():
    # Qwen2.5-7B on one chip: 28 query heads on 4 KV heads.
    _compile_flash_gradient("v6e:2x2", 16384, heads=(28, 4))


@pytest.mark.slow
def test_tiles_too_big_for_vmem_are_refused_by_the_compiler():
    """The check is real: a 1024 x 4096 float32 logit tile (16 MiB) and its exponentials do
    not fit a TensorCore's scoped VMEM, and the compiler says so."""
    q = _on_one_chip("v5p:2x2x1", (1, 4096, 8, 128))
    kv = _on_one_chip("v5p:2x2x1", (1, 4096, 1, 128))
    huge = flash.BlockSizes(block_q=1024, block_kv=4096)

    def forward(q, k, v):
        return flash.flash_forward(q, k, v, causal=True, block_sizes=huge)

    with lowering_for("tpu"), pytest.raises(jax.errors.JaxRuntimeError, match="(?i)vmem"):
        jax.jit(forward).trace(q, kv, kv).lower().compile()


@pytest.mark.parametrize(
    ("topology", "kv_heads", "num_splits"),
    [("v5e:2x2", 1, 1), ("v5p:2x2x1", 1, 4), ("v6e:2x2", 2, 1), ("v5p:2x2x1", 8, 2)],
)
def test_paged_decode_kernel_compiles(topology, kv_heads, num_splits):
    # 72B per chip at tensor=8 (1 KV head), 4 and 1: 8 query heads per KV head; 64 slots over
    # 2048-page tables into an 80-layer pool.
    pool = _on_one_chip(topology, (80, 4096 // kv_heads, 64, kv_heads, 128))
    args = (
        _on_one_chip(topology, (64, 8 * kv_heads, 128)),
        pool,
        pool,
        _on_one_chip(topology, (), jnp.int32),
        _on_one_chip(topology, (64, 2048), jnp.int32),
        _on_one_chip(topology, (64,), jnp.int32),
    )

    def decode(*args):
        return paged_decode_attention(*args, num_splits=num_splits)

    with lowering_for("tpu"):
        compiled = jax.jit(decode).trace(*args).lower().compile()
    # The kernel reads pages in place: no gathered [64, 2048 x 64, 128] copy of the cache, and
    # no relaid copy of the pools (5 GiB each), which a unit KV-head axis used to cost.
    assert compiled.memory_analysis().temp_size_in_bytes < 64 * 2**20


@pytest.mark.slow
def test_the_ring_train_step_and_decode_compile_for_a_slice():
    """plan_memory on an 8-chip v5p slice: the Trainer's DAPO step with ring attention (flash
    blocks, zigzag over context=4, fsdp=2) and the engine's decode program (the paged decode
    kernel, 16 slots over fsdp x context), both compiled by the TPU compiler, and the analytic
    breakdown of each phase within a factor of 1.5 of the compiler's peak."""
    report = plan_memory_report(
        *("--topology", "v5p:2x2x2", "--device-memory-gib", "95"),
        *("--config.model.preset=qwen2.5-0.5b", "--config.model.attention=ring"),
        *("--config.model.dtype=bfloat16", "--config.model.remat=full"),
        *("--config.mesh.fsdp=2", "--config.mesh.context=4", "--config.dapo.batch_size=2"),
        *("--config.engine.num_slots=16", "--config.engine.capacity=8192"),
        "--config.engine.num_pages=2048",  # every slot at full context
        timeout=900,
    )
    assert report["inputs"]["micro_batch_rows"] == 1
    xla = report["xla"]
    assert (xla["compiler"], xla["attention"]) == ("TPU (v5p:2x2x2)", "ring")
    assert xla["projected_peak"] == xla["peak"], "nothing stood in for the kernels"
    assert report["fits"]["all"]
    assert 1 / 1.5 < report["analytic"]["train_step"] / xla["peak"] < 1.5
    rollout = report["xla_rollout"]
    # The decode program's arguments are the decode copy and the KV pool, at their shardings.
    analytic = {item["name"]: item["bytes"] for item in report["analytic"]["items"]}
    state = analytic["decode copy"] + analytic["rollout KV cache"]
    assert state <= rollout["argument"] <= 1.01 * state + 2**20
    assert 1 / 1.5 < report["analytic"]["rollout_phase"] / rollout["rollout_phase"] < 1.5


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_the_paper_stages_decode_with_no_collective_across_hosts(stage):
    """tools/plan_memory.py on the paper's configs for v5p-128 (64 chips, 4 a host), the
    decode programs compiled by the TPU compiler: in the rollout layout (tensor=4 inside each
    host, 16 replicas) a decode step moves nothing across hosts; over the training layout
    (fsdp across hosts) stage 1's gathers its whole tensor shard of the weights at every step.
    The slots: as many as each replica's KV pool holds at half the context."""
    config = os.path.join(os.path.dirname(__file__), "..", "configs", f"qwen25_72b_{stage}.py")
    compare = () if stage == "stage1" else ("--run-layout-only",)
    report = plan_memory_report(
        f"--config={config}", "--topology", "v5p:4x4x4", "--rollout-only", *compare, timeout=900
    )
    layouts = report["rollout"]["layouts"]
    rollout = layouts["rollout"]
    assert (rollout["tensor"], rollout["replicas"]) == (4, 16)
    moved = rollout["compiled"]["collectives"]
    assert rollout["compiled"]["hosts"] == 1 and rollout["compiled"]["devices"] == 4
    assert moved["per_step_across_hosts"] == moved["per_call_across_hosts"] == 0
    assert 0 < moved["per_step_within_host"] < GIB  # the tensor all-reduces of activations
    capacity = 65_536 if stage == "stage1" else 131_072
    per_replica = rollout["num_pages"] // 16
    assert rollout["num_slots"] == 16 * (per_replica * 64 // (capacity // 2)) >= 64
    assert report["inputs"]["rollout_slots"] == rollout["num_slots"]
    assert report["fits"]["all"]
    if stage == "stage1":
        gathered = layouts["training"]["compiled"]["collectives"]["per_step_across_hosts"]
        assert gathered > 16 * GIB  # 72.7B bfloat16 weights / tensor=8 = 16.9 GiB a step
