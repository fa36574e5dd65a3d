"""The engine's page pool split over the batch axes: each shard's slots use only its own pages,
reads and writes stay on the shard, and the results equal the unsharded engine's."""

import re

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from test_hf_parity import randomize

from swejax.models import build_model, place_state, preset
from swejax.sampling import (
    Engine,
    EngineConfig,
    SamplingParams,
    StopReason,
)
from swejax.sharding import make_mesh

TOL = 1e-4
# 8 slots, 2 per shard on 4 batch shards; 64 pages of 4 tokens, 16 per shard.
CONFIG = EngineConfig(
    num_slots=8, capacity=64, page_size=4, num_pages=64, chunk=8, ingest_rows=3, steps_per_call=4
)
# mesh -> (the axes the pages are split over, pages on each device)
MESHES = {
    "fsdp=4,tensor=2": (dict(data=1, fsdp=4, tensor=2), ("fsdp",), 16),
    "data=2,fsdp=2,tensor=2": (dict(data=2, fsdp=2, tensor=2), ("data", "fsdp"), 16),
    # The rollout on a long-context training mesh: context takes slots and pages of its own.
    "fsdp=2,tensor=2,context=2": (
        dict(data=1, fsdp=2, tensor=2, context=2),
        ("fsdp", "context"),
        16,
    ),
}


@pytest.fixture(scope="module")
def model():
    return randomize(build_model(preset("tiny", vocab_size=160, num_layers=2), seed=0), seed=2)


def _episodes(engine):
    """Prompts of different lengths, a turn, observations for some slots, a slot freed and
    refilled, two more turns: every DecodeResult."""
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 160, n).tolist() for n in (1, 11, 3, 6, 2, 9, 4, 13)]
    engine.prefill_many(list(enumerate(prompts)))
    for slot in range(8):
        engine.start_turn(slot, 5)
    results = [engine.decode(), engine.decode()]
    engine.extend_many([(1, [5, 6, 7]), (4, list(range(20, 27))), (6, [9])])
    engine.free(2)
    engine.prefill(2, list(range(30, 40)))
    for slot in (1, 2, 4, 6):
        engine.start_turn(slot, 4)
    results += [engine.decode(), engine.decode()]
    return results


def _kv_collectives(hlo: str, head_dim: int) -> list[str]:
    """Collective ops of compiled HLO that move keys or values: a result of 4 or more dims
    ending in the head dim (the pool or a layer of it, new tokens' K/V, gathered pages)."""
    collective = re.compile(
        r"=\s*f32\[([\d,]+)\]\S* "
        r"(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)(-start)?\("
    )
    found = []
    for line in hlo.splitlines():
        match = collective.search(line)
        if match:
            dims = [int(d) for d in match.group(1).split(",")]
            if len(dims) >= 4 and dims[-1] == head_dim:
                found.append(line.strip())
    return found


def _lowered_decode(engine, mesh):
    """The engine's decode program lowered for 4 visible pages (not run)."""
    return engine.trace_decode(4).lower()


@pytest.mark.parametrize("mesh_name", list(MESHES))
@pytest.mark.slow
def test_sharded_pool_engine_equals_unsharded(model, mesh_name):
    shape, axes, local_pages = MESHES[mesh_name]
    mesh = make_mesh(**shape)
    plain = Engine(model, CONFIG, SamplingParams(temperature=1.0), seed=5)
    sharded = Engine(place_state(model, mesh), CONFIG, SamplingParams(temperature=1.0), mesh, 5)
    spec = P(None, axes if len(axes) > 1 else axes[0], None, "tensor", None)
    assert sharded.state.cache.k.sharding.spec == spec
    assert sharded.state.cache.k.addressable_shards[0].data.shape == (2, local_pages, 4, 1, 16)
    want, got = _episodes(plain), _episodes(sharded)
    for a, b in zip(want, got, strict=True):
        for slot in range(8):
            assert a.tokens[slot].tolist() == b.tokens[slot].tolist(), slot
            np.testing.assert_allclose(a.logprobs[slot], b.logprobs[slot], atol=TOL)
        np.testing.assert_array_equal(a.reasons, b.reasons)
    assert sum(len(r.tokens[2]) for r in got[2:]) == 4, "the refilled slot decoded its turn"
    assert sharded.state.cache.k.sharding.spec == spec, "the pool kept its layout"
    # Every slot holds pages of its own shard only.
    for slot in range(CONFIG.num_slots):
        shard, pages = slot // (8 * local_pages // 64), sharded._pages.pages(slot)
        assert pages and {page // local_pages for page in pages} == {shard}, slot
    assert sharded.free_pages() == plain.free_pages()


def test_decode_and_ingest_move_no_keys_or_values(model):
    """The compiled decode and ingest programs read and write each device's own pages: no
    collective carries the pool, a layer of it, or any keys and values. (Without the
    shard_map, GSPMD moves each step's new K/V to every batch shard, or gathers the pool.)
    Resharding the pool to replicated shows the detector sees such a collective."""
    mesh = make_mesh(data=1, fsdp=4, tensor=2)
    sharded = place_state(model, mesh)
    engine = Engine(sharded, CONFIG, SamplingParams(temperature=1.0), mesh, 0)
    decode = _lowered_decode(engine, mesh)
    ingest = engine.trace_ingest(4).lower()  # ingest_rows=3 over 4 shards: one row each
    head_dim = model.cfg.head_dim
    for program in (decode, ingest):
        assert _kv_collectives(program.compile().as_text(), head_dim) == []
    replicate = jax.jit(lambda pool: pool * 1, out_shardings=NamedSharding(mesh, P()))
    gathered = replicate.lower(engine.state.cache.k).compile().as_text()
    assert _kv_collectives(gathered, head_dim), "the detector missed a gathered pool"


def test_decode_on_a_context_mesh_moves_no_pages(model):
    """With the pool split over fsdp x context, a decode step's new K/V are sliced to their
    shard where they are (one token per slot: nothing to move); what the context devices
    exchange is each layer's attention output for their slots, [S / fsdp, 1, N / tensor, H]
    gathered over context, never the pool or keys and values."""
    mesh = make_mesh(data=1, fsdp=2, tensor=2, context=2)
    sharded = place_state(model, mesh)
    engine = Engine(sharded, CONFIG, SamplingParams(temperature=1.0), mesh, 0)
    decode = _lowered_decode(engine, mesh)
    cfg = model.cfg
    attention_out = f"f32[{CONFIG.num_slots // 2},1,{cfg.num_heads // 2},{cfg.head_dim}]"
    moved = _kv_collectives(decode.compile().as_text(), cfg.head_dim)
    assert moved, "each layer's attention output is gathered over context"
    for line in moved:
        assert f"= {attention_out}" in line and " all-gather(" in line, line


def _two_shards_busy(model, mesh, num_pages: int):
    """Slots 0 and 1 (shard 0) and 2 (shard 1) sample 10, 10 and 6 tokens; with 4 pages per
    shard, shard 0 holds one of its two sequences at a time. Tokens per slot, the residency of
    slots 0 and 1 after the first call, and free pages after it."""
    config = EngineConfig(
        num_slots=8, capacity=16, page_size=4, num_pages=num_pages, chunk=4, steps_per_call=8
    )
    engine = Engine(place_state(model, mesh), config, SamplingParams(temperature=1.0), mesh, 1)
    engine.prefill_many([(0, [1, 2, 3, 4, 5]), (1, [6, 7, 8, 9, 10]), (2, [4, 5])], [0, 1, 2])
    for slot, budget in ((0, 10), (1, 10), (2, 6)):
        engine.start_turn(slot, budget)
    tokens: dict[int, list[int]] = {0: [], 1: [], 2: []}
    first = None
    while len(tokens[0]) < 10 or len(tokens[1]) < 10 or len(tokens[2]) < 6:
        result = engine.decode()
        for slot in tokens:
            tokens[slot] += result.tokens[slot].tolist()
            assert not result.stopped[slot] or result.reasons[slot] == StopReason.BUDGET
        if first is None:
            first = ([engine.resident(s) for s in (0, 1)], engine.free_pages())
    return tokens, first, engine.preemption


@pytest.mark.slow
def test_a_shard_out_of_pages_preempts_only_its_own_slots(model):
    """Shard 0's pool holds one of its two sequences: the younger waits swapped out (its keys
    and values split over tensor=2 on the way out and back) and samples what it samples with
    room; shard 1 never notices."""
    mesh = make_mesh(data=1, fsdp=4, tensor=2)
    roomy, (resident, _), nothing = _two_shards_busy(model, mesh, num_pages=32)
    tight, (resident_tight, free), moved = _two_shards_busy(model, mesh, num_pages=16)
    assert nothing.preemptions == 0 and resident == [True, True]
    assert tight == roomy
    assert resident_tight == [True, False] and moved.preemptions >= 1
    # Shard 0 is full (slot 0's 13 tokens: 4 pages), shard 1 holds slot 2's 10 (3 pages),
    # shards 2 and 3 are untouched: 0 + 1 + 4 + 4 free.
    assert free == 9
    assert moved.swapped_in_tokens == 4  # slot 1 came back with its prompt's cached tokens


def test_a_pool_that_does_not_split_evenly_is_refused(model):
    mesh = make_mesh(data=1, fsdp=4, tensor=2)
    config = EngineConfig(num_slots=8, capacity=64, page_size=4, num_pages=10)
    with pytest.raises(ValueError, match="multiple of the 4 batch shards"):
        Engine(place_state(model, mesh), config, mesh=mesh)
