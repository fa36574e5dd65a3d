"""The train step: packed log-probabilities, gradient accumulation, skipped non-finite steps,
sharding, and that the losses actually train."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from swejax.config import OptimizerConfig
from swejax.models import build_model, place_state, preset
from swejax.rl import TrainSequence, pack
from swejax.sharding import activation_mesh, make_mesh, named_sharding
from swejax.train import (
    Objective,
    Trainer,
    accumulated_gradients,
    make_optimizer,
    token_logprobs,
    warmup_cosine,
)

CFG = preset("tiny", dtype="float32", param_dtype="float32")
DAPO = Objective("dapo", eps_low=0.2, eps_high=0.28)


def _adamw(learning_rate, weight_decay=0.1):
    return make_optimizer(OptimizerConfig(), learning_rate, weight_decay)


def _batch(seed=0, rows=4, row_length=32, sequences=6):
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(sequences):
        n = int(rng.integers(6, 16))
        items.append(
            TrainSequence(
                rng.integers(0, CFG.vocab_size, n).tolist(),
                (rng.random(n) < 0.6).tolist(),
                rng.normal(-8.3, 0.1, n).tolist(),  # about log(1/4096): near the tiny model's
                float(rng.normal()),
            )
        )
    return items, pack(items, row_length, num_rows=rows)


def _fields(packed):
    return {
        f.name: getattr(packed, f.name) for f in dataclasses.fields(packed) if f.name != "placement"
    }


@pytest.mark.parametrize("chunk", [1024, 5])  # one chunk; chunks that do not divide the row
@pytest.mark.slow
def test_packed_logprobs_equal_each_sequence_alone(chunk):
    model = build_model(CFG, seed=0)
    items, packed = _batch()
    logprobs, entropy = token_logprobs(
        model, packed.tokens, packed.positions, packed.segment_ids, chunk
    )
    for item, (row, start, length) in zip(items, packed.placement, strict=True):
        tokens = np.asarray(item.tokens)[None]
        alone = jax.nn.log_softmax(model(tokens)[0, :-1], -1)
        expected = np.take_along_axis(np.asarray(alone), tokens[0, 1:, None], -1)[:, 0]
        np.testing.assert_allclose(logprobs[row, start + 1 : start + length], expected, atol=1e-5)
        assert logprobs[row, start] == 0.0 and entropy[row, start] == 0.0
    whole = token_logprobs(model, packed.tokens, packed.positions, packed.segment_ids, 1024)
    np.testing.assert_allclose(entropy, whole[1], atol=1e-5)


def _params(model):
    return jax.tree.map(np.asarray, nnx.state(model))


def _gradient(micro, fields, mesh=None):
    """The whole batch's gradient, accumulated over `micro` micro-batches (on `mesh`)."""
    model = build_model(CFG, seed=0)
    if mesh is not None:
        model = place_state(model, mesh)
        fields = {
            k: jax.device_put(v, named_sharding(mesh, ("batch", "seq"), v.shape))
            for k, v in fields.items()
        }
    graphdef, params = nnx.split(model)
    gradients = jax.jit(accumulated_gradients, static_argnums=(0, 1, 2))
    with activation_mesh(mesh):
        grads, loss, metrics, tokens = gradients(graphdef, DAPO, micro, params, fields)
    return jax.tree.map(np.asarray, grads), {"loss": float(loss), "tokens": float(tokens)}


def _assert_close(a, b):
    """Equal up to float32 reordering: relative to each tensor's largest entry (sums of many
    cancelling terms, as in the embedding's gradient, lose digits relative to themselves)."""
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


@pytest.mark.slow
def test_gradient_accumulation_equals_the_whole_batch():
    fields = _fields(_batch()[1])
    whole, m1 = _gradient(1, fields)
    split, m4 = _gradient(4, fields)
    jax.tree.map(_assert_close, whole, split)
    assert abs(m1["loss"] - m4["loss"]) < 1e-6 and m1["tokens"] == m4["tokens"]
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(whole)) > 0


@pytest.mark.slow
def test_sharded_step_equals_unsharded():
    fields = _fields(_batch()[1])
    plain, m_plain = _gradient(2, fields)
    sharded, m_sharded = _gradient(2, fields, make_mesh(data=2, fsdp=2, tensor=2))
    jax.tree.map(_assert_close, plain, sharded)
    assert abs(m_plain["loss"] - m_sharded["loss"]) < 1e-6
    model = place_state(build_model(CFG, seed=0), make_mesh(data=2, fsdp=2, tensor=2))
    trainer = Trainer(model, _adamw(1e-6), DAPO, mesh=make_mesh(data=2, fsdp=2, tensor=2))
    assert not trainer.step(fields)["skipped"]  # the Trainer places rows on the mesh itself


@pytest.mark.slow
def test_a_non_finite_step_is_skipped_not_applied():
    fields = _fields(_batch()[1])
    fields["advantages"] = np.where(fields["loss_mask"], np.nan, 0.0).astype(np.float32)
    model = build_model(CFG, seed=0)
    before = _params(model)
    trainer = Trainer(model, _adamw(1e-3), DAPO)
    metrics = trainer.step(fields)
    assert metrics["skipped"] and not np.isfinite(metrics["loss"])
    jax.tree.map(np.testing.assert_array_equal, before, _params(model))
    assert not trainer.step(_fields(_batch()[1]))["skipped"]  # the next good step applies


@pytest.mark.parametrize("objective", ["sft", "dapo"])
@pytest.mark.slow
def test_the_objectives_train(objective):
    model = build_model(CFG, seed=0)
    _, packed = _batch(seed=3)
    fields = _fields(packed)
    fields["advantages"] = np.where(packed.segment_ids > 0, 1.0, 0.0).astype(np.float32)
    trainer = Trainer(model, _adamw(3e-3, weight_decay=0.0), Objective(objective, 0.2, 0.28))
    first = token_logprobs(model, packed.tokens, packed.positions, packed.segment_ids)[0]
    for _ in range(8):
        metrics = trainer.step(fields)
        fields["old_logprobs"] = np.asarray(  # on-policy each step, as a fresh rollout would be
            token_logprobs(model, packed.tokens, packed.positions, packed.segment_ids)[0]
        )
    last = token_logprobs(model, packed.tokens, packed.positions, packed.segment_ids)[0]
    mask = packed.loss_mask
    assert float(last[mask].mean()) > float(first[mask].mean()) + 0.5  # positive advantage: up
    assert not metrics["skipped"] and trainer.step_count == 8


def test_learning_rate_schedules():
    cosine = warmup_cosine(5e-6, warmup_steps=10, total_steps=110)
    assert float(cosine(0)) == 0.0 and abs(float(cosine(10)) - 5e-6) < 1e-12
    assert abs(float(cosine(60)) - 2.5e-6) < 1e-9 and float(cosine(110)) == 0.0
    with pytest.raises(ValueError, match="needs more steps in all"):
        warmup_cosine(1e-3, warmup_steps=10, total_steps=10)
    with pytest.raises(ValueError, match="unknown objective 'ppo'"):
        Objective("ppo")


def test_weight_decay_applies_to_matrices_only():
    params = {"matrix": np.ones((2, 2), np.float32), "bias": np.ones((2,), np.float32)}
    tx = make_optimizer(OptimizerConfig(), learning_rate=0.1, weight_decay=0.5)
    zeros = jax.tree.map(np.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    assert float(np.abs(updates["bias"]).max()) == 0.0  # no gradient, no decay
    np.testing.assert_allclose(updates["matrix"], -0.1 * 0.5 * params["matrix"], rtol=1e-6)


@pytest.mark.slow
def test_chunked_output_head_has_the_same_gradient():
    model = build_model(CFG, seed=0)
    _, packed = _batch()
    graphdef, params = nnx.split(model)

    def total(params, chunk):
        logprobs, entropy = token_logprobs(
            nnx.merge(graphdef, params), packed.tokens, packed.positions, packed.segment_ids, chunk
        )
        return logprobs.sum() + 0.1 * entropy.sum()

    whole = jax.grad(total)(params, 1024)
    chunked = jax.grad(total)(params, 7)
    jax.tree.map(_assert_close, jax.tree.map(np.asarray, chunked), jax.tree.map(np.asarray, whole))


@pytest.mark.slow
def test_the_train_step_benchmark_runs_and_reports_throughput(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).parents[1] / "tools" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench_train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_train)
    out = tmp_path / "train.json"
    assert bench_train.main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["rows"] == 8 and result["seq"] == 128  # one row per (fake) device
    assert result["tokens_per_s"] > 0 and result["model_tflops"] > 0
    assert not result["skipped"] and result["loss"] == result["loss"]  # finite, applied
