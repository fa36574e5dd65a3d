"""The attention registry (`swejax.models.attention_impls`) against everything that reads it.

Every registered name runs on CPU, or raises the reason the registry gives, alone and on a
mesh that splits the sequence; the model's cached layers take the decode kernel exactly for
the entries that say so; the planner's attention line is O(T) exactly for the entries that are
not quadratic and refuses a split sequence for the whole-sequence ones, as does the planning
tool; unknown names list the registry's. The remat table is one table too.
"""

import contextlib
import functools
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from swejax.memory_plan import PlanSpec, analytic_breakdown
from swejax.models import ATTENTION_IMPLS, REMAT_POLICIES, AttentionImpl, preset, qwen2
from swejax.models.attention import (
    attend,
    attend_paged_decode,
    from_ring_order,
    in_ring_order,
    pallas_interpreter,
    to_ring_order,
)
from swejax.models.kv_cache import LayerCache
from swejax.models.rope import rotary_tables
from swejax.sharding import activation_mesh, make_mesh
from swejax_kernels.reference import attention as reference_attention

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = dict(rtol=1e-5, atol=1e-5)  # float32 over 16 keys, as in test_ring_attention.py
# What runs on CPU: plain XLA anywhere, and the Pallas kernels in Pallas's interpreter.
RUNS_ON_CPU = {"reference", "ring_reference"}
RUNS_IN_INTERPRETER = RUNS_ON_CPU | {"flash", "ring"}
# What runs on a sequence split over context: the rings, and plain XLA over gathered keys.
RUNS_SPLIT = {"reference", "ring", "ring_reference"}


def _qkv(batch=2, length=16, heads=4, kv_heads=2, head_dim=8):
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (batch, length, heads, head_dim))
    k = jax.random.normal(keys[1], (batch, length, kv_heads, head_dim))
    v = jax.random.normal(keys[2], (batch, length, kv_heads, head_dim))
    # Two packed segments per row, cut at different places.
    segments = jnp.asarray(np.arange(length)[None, :] >= np.array([[5], [11]])[:batch], jnp.int32)
    return q, k, v, segments


def _reason(entry: AttentionImpl, q, interpret: bool) -> str | None:
    try:
        entry.check("cpu", q.shape[-1], q.dtype, interpret=interpret)
    except ValueError as error:
        return str(error)
    return None


def test_entries_are_named_by_their_keys_and_frozen():
    assert ATTENTION_IMPLS and all(name == e.name for name, e in ATTENTION_IMPLS.items())
    entry = ATTENTION_IMPLS["reference"]
    with pytest.raises(AttributeError):
        entry.quadratic = False
    # Every Pallas entry decodes with the (Pallas) decode kernel, and only those.
    assert {n for n, e in ATTENTION_IMPLS.items() if e.decode_kernel} == {
        n for n, e in ATTENTION_IMPLS.items() if e.pallas
    }


@pytest.mark.parametrize("interpret", [False, True], ids=["plain", "interpreter"])
@pytest.mark.parametrize("name", list(ATTENTION_IMPLS))
def test_every_name_dispatches_or_raises_the_registry_reason_on_cpu(name, interpret):
    entry = ATTENTION_IMPLS[name]
    q, k, v, segments = _qkv()
    reason = _reason(entry, q, interpret)
    assert (reason is None) == (name in (RUNS_IN_INTERPRETER if interpret else RUNS_ON_CPU))
    run = jax.jit(functools.partial(attend, impl=name))
    with pallas_interpreter() if interpret else contextlib.nullcontext():
        if reason is not None:
            with pytest.raises(ValueError, match=re.escape(reason)):
                run(q, k, v, segments)
            return
        out = run(q, k, v, segments)
    want = reference_attention(q, k, v, causal=True, segment_ids=segments)
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), **TOL)


@pytest.mark.parametrize("name", sorted(RUNS_IN_INTERPRETER))
def test_a_split_sequence_runs_or_raises_the_registry_reason(name):
    """On context=2: ring entries take and return the zigzag order, the gathering one lets
    XLA lay it out, whole-sequence ones refuse with the registry's reason."""
    entry = ATTENTION_IMPLS[name]
    q, k, v, segments = _qkv()
    mesh = make_mesh(context=2, fsdp=2, tensor=2)

    @jax.jit
    def run(q, k, v, segments):
        q, k, v, segments = to_ring_order(name, q, k, v, segments)
        return from_ring_order(name, attend(q, k, v, segments, impl=name))

    assert entry.whole_sequence == (name not in RUNS_SPLIT)
    with activation_mesh(mesh), pallas_interpreter():
        assert in_ring_order(name) == entry.ring
        if entry.whole_sequence:
            with pytest.raises(ValueError) as refused:
                run(q, k, v, segments)
            with pytest.raises(ValueError) as registry:
                entry.check_context(2)
            assert str(refused.value) == str(registry.value)
            assert "needs the whole sequence" in str(refused.value)
            return
        out = run(q, k, v, segments)
    want = reference_attention(q, k, v, causal=True, segment_ids=segments)
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), **TOL)


@pytest.mark.parametrize("name", list(ATTENTION_IMPLS))
def test_one_token_steps_take_the_decode_kernel_exactly_when_registered(name, monkeypatch):
    calls = []

    def paged(q, *args, **kwargs):
        calls.append("paged")
        return jnp.zeros_like(q)

    def cached(q, *args):
        calls.append("cached")
        return jnp.zeros_like(q)

    monkeypatch.setattr(qwen2, "attend_paged_decode", paged)
    monkeypatch.setattr(qwen2, "attend_cached", cached)
    cfg = preset("tiny", attention=name)
    layer = qwen2.Attention(cfg, nnx.Rngs(0))
    pool = jnp.zeros((1, 2, 4, cfg.num_kv_heads, cfg.head_dim))
    cache, table = LayerCache(pool, pool), jnp.array([[0, 1]], jnp.int32)
    for length in (1, 3):  # a decode step, then an ingest chunk
        positions = jnp.arange(length, dtype=jnp.int32)[None] + 2
        x = jnp.ones((1, length, cfg.hidden_size))
        rotary = rotary_tables(positions, cfg.head_dim, cfg.rope_theta, None)
        layer.with_cache(x, rotary, cache, jnp.int32(0), table, positions)
    assert calls == ["paged" if ATTENTION_IMPLS[name].decode_kernel else "cached", "cached"]
    if not ATTENTION_IMPLS[name].decode_kernel:
        with pytest.raises(ValueError, match="has no decode kernel"):
            attend_paged_decode(None, cache, jnp.int32(0), table, positions[:, :1], impl=name)


def test_unknown_names_list_the_registry():
    q, k, v, segments = _qkv()
    with pytest.raises(ValueError) as config:
        preset("tiny", attention="sparse")
    with pytest.raises(ValueError) as dispatch:
        attend(q, k, v, segments, impl="sparse")
    spec = PlanSpec(model=preset("tiny"), mesh=_mesh(1), seq=64)
    with pytest.raises(ValueError) as planner:
        analytic_breakdown(spec, attention="sparse")
    for error in (config, dispatch, planner):
        assert all(repr(name) in str(error.value) for name in ATTENTION_IMPLS), error.value


def _mesh(context: int) -> dict[str, int]:
    return {"data": 1, "fsdp": 2, "tensor": 2, "context": context}


def _attention_line(name: str, seq: int, context: int = 1):
    spec = PlanSpec(model=preset("tiny", dtype="bfloat16"), mesh=_mesh(context), seq=seq)
    plan = analytic_breakdown(spec, attention=name)
    (item,) = [i for i in plan.items if i.name == f"attention ({name})"]
    return item


@pytest.mark.parametrize("name", list(ATTENTION_IMPLS))
def test_the_planner_counts_linear_memory_exactly_for_non_quadratic_entries(name):
    entry = ATTENTION_IMPLS[name]
    short, long = _attention_line(name, 256), _attention_line(name, 512)
    assert short.bytes > 0
    if entry.quadratic:
        assert 2 * short.bytes < long.bytes <= 4 * short.bytes
        assert "T x S" in short.note
    else:
        assert long.bytes == 2 * short.bytes
        assert short.note.startswith("O(T)")


@pytest.mark.parametrize("name", list(ATTENTION_IMPLS))
def test_the_planner_refuses_a_split_sequence_for_whole_sequence_entries(name):
    entry = ATTENTION_IMPLS[name]
    if not entry.whole_sequence:
        assert _attention_line(name, 256, context=2).bytes > 0
        return
    with pytest.raises(ValueError, match="needs the whole sequence"):
        _attention_line(name, 256, context=2)


def test_the_planning_tool_refuses_a_split_sequence_with_the_registry_reason():
    whole = [e for e in ATTENTION_IMPLS.values() if e.whole_sequence]
    assert whole
    with pytest.raises(ValueError) as registry:
        whole[0].check_context(2)
    run = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "plan_memory.py"),
            *("--devices", "8", "--no-compile", "--config.engine.capacity=256"),
            *("--config.mesh.fsdp=2", "--config.mesh.tensor=2", "--config.mesh.context=2"),
            f"--config.model.attention={whole[0].name}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    assert str(registry.value) in run.stderr


def test_the_registry_module_imports_no_jax():
    # Config validation reads the registry; it must stay light enough for that.
    path = os.path.join(ROOT, "swejax", "models", "attention_impls.py")
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('attention_impls', {path!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['attention_impls'] = module\n"
        "spec.loader.exec_module(module)\n"
        "assert 'jax' not in sys.modules, 'the registry imported jax'\n"
        "print(' '.join(module.ATTENTION_IMPLS))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == list(ATTENTION_IMPLS)


def test_remat_names_are_the_policy_table():
    assert qwen2.REMAT_POLICIES is REMAT_POLICIES
    for name in REMAT_POLICIES:
        assert preset("tiny", remat=name).remat == name
    with pytest.raises(ValueError) as error:
        preset("tiny", remat="some")
    assert all(repr(name) in str(error.value) for name in REMAT_POLICIES)
