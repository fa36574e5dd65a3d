"""The generation engine against transformers' generate and against a training forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from hf_utils import random_hf_model, tiny_hf_config
from scipy import stats
from test_hf_parity import randomize

from swejax.models import abstract_model, build_model, load_hf_checkpoint, place_state, preset
from swejax.sampling import (
    ContextFull,
    Engine,
    EngineConfig,
    SamplingParams,
    StopReason,
    generate,
    require_unbiased,
    sample,
)
from swejax.sharding import make_mesh

TOL = 1e-4

# A program compiled, or loaded from the persistent compilation cache (tests/conftest.py).
_COMPILE_EVENTS = (
    "/jax/core/compile/backend_compile_duration",
    "/jax/compilation_cache/cache_retrieval_time_sec",
)
_COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda name, *_, **__: _COMPILES.append(name) if name in _COMPILE_EVENTS else None
)


@pytest.fixture(scope="module")
def hf_and_ours(tmp_path_factory):
    config = tiny_hf_config()
    hf = random_hf_model(config, seed=11)
    directory = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(directory)
    return hf, load_hf_checkpoint(str(directory))


@pytest.fixture(scope="module")
def model():
    return randomize(build_model(preset("tiny", vocab_size=160, num_layers=2), seed=0), seed=2)


def _log_softmax_of_forward(model, sequence):
    logits = np.asarray(model(jnp.asarray([sequence], jnp.int32)))[0]
    return np.asarray(jax.nn.log_softmax(logits, axis=-1))


@pytest.mark.slow
def test_greedy_matches_transformers_generate(hf_and_ours):
    hf, ours = hf_and_ours
    prompts = [[5, 7, 9, 11, 13], [1, 2, 3], [100, 50, 25, 12, 6, 3, 1, 0], list(range(40, 70))]
    outs = generate(ours, prompts, max_new_tokens=20)
    for prompt, out in zip(prompts, outs, strict=True):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            expected = hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=20,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=159,
            )[0, len(prompt) :].tolist()
        assert out.tokens == expected
        assert out.stop_reason == StopReason.BUDGET


@pytest.mark.slow
def test_multi_turn_extend_equals_one_forward_pass(model):
    """prefill, decode, extend, decode, over a slot that held a longer sequence before."""
    engine = Engine(
        model,
        EngineConfig(num_slots=3, capacity=96, chunk=8, steps_per_call=5),
        SamplingParams(temperature=1.0),
        seed=3,
    )
    # Fill slot 1 with a long unrelated sequence, then free it: its stale entries must be ignored.
    engine.prefill(1, list(range(60)))
    engine.start_turn(1, 6)
    engine.decode()
    engine.free(1)

    sequence, sampled = [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], {}
    engine.prefill(1, sequence)
    engine.prefill(0, [3, 4, 5])  # a neighbour decoding at the same time
    engine.start_turn(0, 30)
    for turn, observation in enumerate([[40, 41, 42], list(range(90, 110)), [5]]):
        engine.start_turn(1, 7)
        while True:
            result = engine.decode()
            for token, logprob in zip(result.tokens[1], result.logprobs[1], strict=True):
                sampled[len(sequence)] = (int(token), float(logprob))
                sequence.append(int(token))
            if result.stopped[1]:
                assert result.reasons[1] == StopReason.BUDGET
                break
        if turn < 2:
            engine.extend(1, observation)
            sequence += observation
    assert engine.length(1) == len(sequence)
    expected = _log_softmax_of_forward(model, sequence)
    for position, (token, logprob) in sampled.items():
        gap = abs(expected[position - 1, token] - logprob)
        assert gap <= TOL, f"position {position}: sampler vs forward logprob gap {gap:.2e}"
    assert len(sampled) == 21


@pytest.mark.slow
def test_sampler_logprobs_equal_training_forward_in_float32(model):
    prompts = [[1, 2, 3, 4], [9, 8, 7], [20] * 11]
    outs = generate(model, prompts, max_new_tokens=16, temperature=1.0, seed=5)
    for prompt, out in zip(prompts, outs, strict=True):
        expected = _log_softmax_of_forward(model, prompt + out.tokens)
        for i, (token, logprob) in enumerate(zip(out.tokens, out.logprobs, strict=True)):
            assert abs(expected[len(prompt) + i - 1, token] - logprob) <= TOL


@pytest.mark.slow
def test_bfloat16_sampler_logprob_gap_is_small(model, capsys):
    cfg = model.cfg.replace(dtype="bfloat16")
    bf16 = nnx.merge(nnx.graphdef(abstract_model(cfg)), nnx.state(model))
    prompt = [1, 2, 3, 4, 5, 6]
    out = generate(bf16, [prompt], max_new_tokens=24, temperature=1.0, seed=1)[0]
    expected = _log_softmax_of_forward(model, prompt + out.tokens)
    gaps = [
        abs(expected[len(prompt) + i - 1, t] - lp)
        for i, (t, lp) in enumerate(zip(out.tokens, out.logprobs, strict=True))
    ]
    with capsys.disabled():
        print(
            f"\nbfloat16 sampler vs float32 forward logprob gap: max {max(gaps):.4f}, "
            f"mean {np.mean(gaps):.4f}"
        )
    assert max(gaps) < 0.1  # bfloat16 has 8 bits of mantissa; float32 agrees to 1e-4 above


def test_temperature_sampling_draws_from_the_softmax():
    logits = jnp.asarray([[2.0, 1.0, 0.5, 0.0, -1.0, 3.0, -2.0, 0.3]])
    temperature = 0.8
    draws = 40_000
    keys = jax.random.split(jax.random.key(0), draws)
    params = SamplingParams(temperature=temperature)
    tokens, logprobs = jax.jit(jax.vmap(lambda k: sample(logits, k, params)))(keys)
    counts = np.bincount(np.asarray(tokens)[:, 0], minlength=8)
    probs = np.asarray(jax.nn.softmax(logits[0] / temperature), np.float64)
    probs /= probs.sum()
    p_value = stats.chisquare(counts, probs * draws).pvalue
    assert p_value > 1e-3, f"draws do not follow softmax(logits / T): p = {p_value:.2e}"
    np.testing.assert_allclose(
        np.asarray(logprobs)[:, 0], np.log(probs)[np.asarray(tokens)[:, 0]], atol=1e-5
    )


@pytest.mark.slow
def test_engine_first_tokens_follow_the_model_distribution():
    tiny = randomize(build_model(preset("tiny", vocab_size=8, num_layers=1), seed=0), seed=9)
    slots = 512
    engine = Engine(
        tiny,
        EngineConfig(num_slots=slots, capacity=8, chunk=4, steps_per_call=1),
        SamplingParams(temperature=1.0),
        seed=4,
    )
    prompt = [1, 5, 2]
    for slot in range(slots):
        engine.prefill(slot, prompt)
        engine.start_turn(slot, 1)
    first = np.array([t[0] for t in engine.decode().tokens])
    probs = np.exp(_log_softmax_of_forward(tiny, prompt)[-1].astype(np.float64))
    probs /= probs.sum()
    p_value = stats.chisquare(np.bincount(first, minlength=8), probs * slots).pvalue
    assert p_value > 1e-3, f"engine draws do not follow the model's softmax: p = {p_value:.2e}"


def test_filters_are_refused_for_training_and_restrict_support():
    with pytest.raises(ValueError, match="importance ratio"):
        require_unbiased(SamplingParams(top_k=5))
    with pytest.raises(ValueError, match="importance ratio"):
        require_unbiased(SamplingParams(top_p=0.9))
    require_unbiased(SamplingParams(temperature=0.7))
    logits = jnp.asarray([[0.0, 3.0, 1.0, 2.0]])
    keys = jax.random.split(jax.random.key(1), 2000)
    topk = jax.vmap(lambda k: sample(logits, k, SamplingParams(top_k=2))[0])(keys)
    assert set(np.asarray(topk)[:, 0].tolist()) == {1, 3}
    topp = jax.vmap(lambda k: sample(logits, k, SamplingParams(top_p=0.5))[0])(keys)
    assert set(np.asarray(topp)[:, 0].tolist()) == {1}


@pytest.mark.slow
def test_stop_tokens_budget_and_context_full(model):
    greedy = generate(model, [[1, 2, 3]], max_new_tokens=10)[0].tokens
    stop = greedy[4]
    out = generate(model, [[1, 2, 3]], max_new_tokens=10, stop_tokens=[stop])[0]
    assert out.tokens == greedy[: greedy.index(stop) + 1]
    assert out.stop_reason == StopReason.STOP_TOKEN

    engine = Engine(model, EngineConfig(num_slots=2, capacity=12, chunk=4))
    engine.prefill(0, list(range(8)))
    engine.start_turn(0, 100)
    result = engine.decode(20)
    assert result.stopped[0] and result.reasons[0] == StopReason.CONTEXT_FULL
    assert engine.length(0) == 12 and len(result.tokens[0]) == 4
    with pytest.raises(ContextFull, match="capacity of 12"):
        engine.extend(0, [1])
    with pytest.raises(ContextFull):
        engine.prefill(1, list(range(13)))


@pytest.mark.slow
def test_sharded_engine_equals_unsharded_without_recompiling(model):
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sharded = place_state(model, mesh)
    config = EngineConfig(num_slots=4, capacity=64, page_size=4, chunk=8, steps_per_call=4)
    results = {}
    for name, m, msh in (("plain", model, None), ("sharded", sharded, mesh)):
        engine = Engine(m, config, SamplingParams(temperature=1.0), mesh=msh, seed=7)
        if msh is not None:
            assert not engine.state.cache.k.sharding.is_fully_replicated
        engine.warm_up()  # every page bucket: 1, 2, 4, 8, 16 pages
        for slot, prompt in enumerate([[1, 2], [3, 4, 5, 6, 7, 8, 9, 10, 11], [12], [13, 14]]):
            engine.prefill(slot, prompt)
            engine.start_turn(slot, 6)
        compiled_during_warm_up = len(_COMPILES)
        first = engine.decode()
        engine.decode()
        engine.extend(1, [20, 21, 22])
        engine.start_turn(1, 5)
        engine.free(2)
        engine.prefill(2, list(range(30, 50)))
        engine.start_turn(2, 3)
        second = engine.decode()
        assert len(_COMPILES) == compiled_during_warm_up, "the engine recompiled after warm-up"
        results[name] = (first, second)
    for a, b in zip(results["plain"], results["sharded"], strict=True):
        for slot in range(4):
            assert a.tokens[slot].tolist() == b.tokens[slot].tolist()
            np.testing.assert_allclose(a.logprobs[slot], b.logprobs[slot], atol=TOL)


def _preempted_pair(model, num_pages: int):
    """Two sequences of 20 sampled tokens each (streams 5, 6) in a 2-slot engine whose pool
    holds one whole sequence (8 pages) or both; then slot 0 takes an observation and samples
    6 more. Tokens, log-probabilities, which slots were resident after each call, and the
    engine's preemption counts."""
    config = EngineConfig(
        num_slots=2, capacity=40, page_size=4, num_pages=num_pages, chunk=4, steps_per_call=8
    )
    engine = Engine(model, config, SamplingParams(temperature=1.0), seed=1)
    prompts = {0: list(range(1, 10)), 1: list(range(20, 29))}
    engine.prefill_many(list(prompts.items()), [5, 6])
    tokens, logprobs, resident = {0: [], 1: []}, {0: [], 1: []}, []

    def turn(slots, budget):
        for slot in slots:
            engine.start_turn(slot, budget)
        running = set(slots)
        while running:
            result = engine.decode()
            resident.append([engine.resident(s) for s in (0, 1)])
            for slot in (0, 1):
                tokens[slot] += result.tokens[slot].tolist()
                logprobs[slot] += result.logprobs[slot].tolist()
                if result.stopped[slot]:
                    assert result.reasons[slot] == StopReason.BUDGET
                    running.discard(slot)

    turn((0, 1), 20)
    engine.extend(0, [7, 8, 9])
    turn((0,), 6)
    sequences = {s: prompts[s] + tokens[s][:20] for s in (0, 1)}
    sequences[0] += [7, 8, 9] + tokens[0][20:]
    return sequences, logprobs, resident, engine.preemption


@pytest.mark.slow
def test_a_dry_pool_preempts_and_the_preempted_draw_what_they_would_have(model):
    """With room for one sequence, the older takes the pool and the younger waits swapped out
    (its turn neither ends nor truncates), then comes back bit for bit: the same tokens as with
    room for both, and log-probabilities that a forward pass over the whole sequence gives."""
    roomy, roomy_logprobs, roomy_resident, nothing = _preempted_pair(model, num_pages=20)
    tight, tight_logprobs, resident, moved = _preempted_pair(model, num_pages=10)
    assert nothing.preemptions == 0 and all(all(r) for r in roomy_resident)
    assert tight == roomy
    # Both fit the first call (17 tokens each); then slot 1 (younger) gave way to slot 0, which
    # finished its turn and gave way to slot 1; slot 0 came back for its observation, pushing
    # out slot 1, idle by then: three moves out (16, 28, 28 cached tokens), two back in.
    assert resident == [[True, True], [True, False], [True, False], [False, True]] + [
        [False, True],
        [True, False],
    ]
    assert moved.preemptions == 3
    assert moved.swapped_out_tokens == 16 + 28 + 28 and moved.swapped_in_tokens == 16 + 28
    for slot in (0, 1):
        np.testing.assert_allclose(tight_logprobs[slot], roomy_logprobs[slot], atol=1e-5)
        expected = _log_softmax_of_forward(model, tight[slot])
        sampled = [i for i in range(9, len(tight[slot])) if not (slot == 0 and 29 <= i < 32)]
        for position, logprob in zip(sampled, tight_logprobs[slot], strict=True):
            assert abs(expected[position - 1, tight[slot][position]] - logprob) <= TOL


def test_a_pool_smaller_than_one_sequence_is_refused_at_start(model):
    config = EngineConfig(num_slots=2, capacity=64, page_size=4, num_pages=15)
    with pytest.raises(ValueError, match="fewer than one sequence of capacity 64 needs"):
        Engine(model, config)


@pytest.mark.slow
def test_batched_prefill_and_extend_equal_forward_passes(model):
    """Several slots fed together, in groups of 2 rows and chunks of 4, over several rounds."""
    config = EngineConfig(
        num_slots=5, capacity=64, page_size=4, chunk=4, ingest_rows=2, steps_per_call=3
    )
    engine = Engine(model, config, SamplingParams(temperature=1.0), seed=2)
    rng = np.random.default_rng(3)
    sequences = {slot: rng.integers(0, 160, n).tolist() for slot, n in enumerate([1, 11, 4, 7, 2])}
    engine.prefill_many(list(sequences.items()))
    observations = {1: [5, 6, 7, 8, 9], 3: [1], 4: list(range(20, 33))}
    for round_ in range(2):
        for slot in sequences:
            engine.start_turn(slot, 3)
        result = engine.decode()
        for slot, sequence in sequences.items():
            expected = _log_softmax_of_forward(model, sequence + result.tokens[slot].tolist())
            for i, (token, logprob) in enumerate(
                zip(result.tokens[slot], result.logprobs[slot], strict=True)
            ):
                assert abs(expected[len(sequence) + i - 1, token] - logprob) <= TOL
            sequence += result.tokens[slot].tolist()
        if round_ == 0:
            engine.extend_many(list(observations.items()))
            for slot, observation in observations.items():
                sequences[slot] += observation
    assert all(engine.length(slot) == len(seq) for slot, seq in sequences.items())
    with pytest.raises(ValueError, match="same slot twice"):
        engine.extend_many([(1, [1]), (1, [2])])
    before = engine.length(2)
    with pytest.raises(ContextFull):
        engine.extend_many([(2, [1]), (3, list(range(80)))])
    assert engine.length(2) == before, "a refused batch must change no slot"


def test_a_released_cache_is_freed_and_comes_back_on_reseed(model):
    config = EngineConfig(num_slots=2, capacity=32, page_size=8, chunk=8)

    def sample(engine):
        engine.prefill(0, [1, 2, 3])
        engine.start_turn(0, 5)
        return engine.decode().tokens[0].tolist()

    engine = Engine(model, config, SamplingParams(temperature=1.0), seed=4)
    first = sample(engine)
    pools = engine.state.cache
    engine.release()
    assert all(pool.is_deleted() for pool in pools)
    with pytest.raises(RuntimeError, match="released"):
        engine.prefill(0, [1])
    with pytest.raises(RuntimeError, match="released"):
        engine.decode()
    engine.reseed(4)
    assert sample(engine) == first


def _sample_in(model, slots: int, slot: int, steps: int, others: dict[int, int]):
    """40 tokens sampled for one prompt in `slot` (stream 42) of a `slots`-slot engine that
    also serves `others` (slot -> prompt length), `steps` per decode call."""
    engine = Engine(
        model,
        EngineConfig(num_slots=slots, capacity=256, page_size=16, chunk=16, steps_per_call=steps),
        SamplingParams(temperature=1.0),
        seed=3,
    )
    requests = [(slot, list(range(1, 20)))]
    requests += [(s, list(range(5, 5 + n))) for s, n in others.items()]
    engine.prefill_many(requests, [42] + [100 + s for s in others])
    for s, _ in requests:
        engine.start_turn(s, 40)
    tokens, logprobs = [], []
    while len(tokens) < 40:
        result = engine.decode()
        tokens += result.tokens[slot].tolist()
        logprobs += result.logprobs[slot].tolist()
    return tokens, np.asarray(logprobs)


def test_a_sequence_draws_the_same_tokens_in_any_slot_batch_or_call_size(model):
    """Draws are keyed by (seed, stream, position): the slot, the other sequences in the batch
    and the steps per call change nothing but the float rounding of the log-probabilities
    (other shapes and page buckets reduce in another order)."""
    alone = _sample_in(model, slots=1, slot=0, steps=16, others={})
    for slots, slot, steps, others in [(3, 2, 4, {0: 55, 1: 62}), (4, 1, 7, {3: 90})]:
        tokens, logprobs = _sample_in(model, slots, slot, steps, others)
        assert tokens == alone[0]
        np.testing.assert_allclose(logprobs, alone[1], atol=1e-5)
    engine = Engine(model, EngineConfig(num_slots=2, capacity=64), SamplingParams(1.0), seed=3)
    engine.prefill_many([(0, list(range(1, 20))), (1, list(range(1, 20)))], [42, 43])
    for s in (0, 1):
        engine.start_turn(s, 16)
    result = engine.decode()
    assert result.tokens[0].tolist() == alone[0][:16]
    assert result.tokens[1].tolist() != alone[0][:16], "another stream must draw otherwise"
