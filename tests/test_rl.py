"""Group advantages, the DAPO loss, and packing (against direct references)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swejax.rl import TrainSequence, dapo_loss, first_fit, group_advantages, keep_nonzero, pack


def test_group_advantages():
    rewards = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 1.0]
    groups = ["a", "a", "a", "a", "b", "b", "b", "c"]
    adv = group_advantages(rewards, groups)
    # group a: mean 0.5, population std 0.5
    np.testing.assert_allclose(adv[:4], np.array([1, -1, -1, 1]) * 0.5 / (0.5 + 1e-6))
    assert np.all(adv[4:] == 0.0)  # equal rewards and a group of one: exactly zero
    assert keep_nonzero(adv).tolist() == [True] * 4 + [False] * 4
    # Length-penalised rewards (1 - 0.5 and 0) keep their order.
    adv = group_advantages([0.5, 0.0, 1.0], [0, 0, 0])
    assert adv[2] > adv[0] > adv[1]
    with pytest.raises(ValueError, match="3 rewards for 2 group ids"):
        group_advantages([1, 2, 3], [0, 0])
    with pytest.raises(ValueError, match="finite"):
        group_advantages([np.nan], [0])


def _reference_loss(logp, old, adv, mask, eps_low, eps_high):
    ratio = np.exp(logp - old)
    surrogate = np.minimum(
        ratio * adv[:, None], np.clip(ratio, 1 - eps_low, 1 + eps_high) * adv[:, None]
    )
    return -(surrogate * mask).sum() / mask.sum()


def test_dapo_loss_matches_the_formula_and_counts_clipping():
    rng = np.random.default_rng(0)
    logp = rng.normal(-2, 0.5, (4, 9)).astype(np.float32)
    old = (logp + rng.normal(0, 0.3, (4, 9))).astype(np.float32)
    adv = np.array([1.0, -1.0, 0.5, -0.2], np.float32)
    mask = rng.random((4, 9)) < 0.7
    loss, metrics = dapo_loss(logp, old, adv, mask, 0.2, 0.28)
    np.testing.assert_allclose(loss, _reference_loss(logp, old, adv, mask, 0.2, 0.28), rtol=1e-5)
    ratio = np.exp(logp - old)
    high = ((ratio > 1.28) & (adv[:, None] > 0) & mask).sum()
    low = ((ratio < 0.8) & (adv[:, None] < 0) & mask).sum()
    assert metrics["clip_high"] == high and metrics["clip_low"] == low and high + low > 0
    assert metrics["tokens"] == mask.sum()


def test_token_mean_is_the_same_however_the_batch_is_split():
    rng = np.random.default_rng(1)
    logp = rng.normal(-2, 0.5, (6, 7)).astype(np.float32)
    old = (logp + rng.normal(0, 0.2, (6, 7))).astype(np.float32)
    adv = rng.normal(size=6).astype(np.float32)
    mask = rng.random((6, 7)) < 0.6
    whole, _ = dapo_loss(logp, old, adv, mask, 0.2, 0.28)
    total = mask.sum()
    parts = [
        dapo_loss(logp[s], old[s], adv[s], mask[s], 0.2, 0.28, num_tokens=total)[0]
        for s in (slice(0, 1), slice(1, 6))
    ]
    np.testing.assert_allclose(whole, sum(parts), rtol=1e-6)


def test_clipped_tokens_carry_no_gradient_and_on_policy_is_the_policy_gradient():
    adv = jnp.array([1.0, -1.0])
    mask = jnp.ones((2, 3), bool)
    old = jnp.zeros((2, 3))
    # ratio e^0.5 > 1.28 with A > 0: clipped, no gradient; ratio e^-0.5 < 0.8 with A < 0: clipped.
    logp = jnp.array([[0.5, 0.0, 0.1], [-0.5, 0.0, -0.1]])
    grad = jax.grad(lambda lp: dapo_loss(lp, old, adv, mask, 0.2, 0.28)[0])(logp)
    assert grad[0, 0] == 0 and grad[1, 0] == 0
    # On policy (ratio 1): d loss / d logp = -A / N for every action token.
    grad = jax.grad(lambda lp: dapo_loss(lp, old, adv, mask, 0.2, 0.28)[0])(jnp.zeros((2, 3)))
    np.testing.assert_allclose(grad, -np.array([[1.0] * 3, [-1.0] * 3]) / 6, rtol=1e-6)


def _sequence(n, start, advantage=1.0):
    tokens = list(range(start, start + n))
    return TrainSequence(tokens, [i % 2 == 1 for i in range(n)], [-0.5] * n, advantage)


def test_pack_places_each_sequence_as_a_segment():
    sequences = [_sequence(n, 10 * i) for i, n in enumerate([5, 3, 8, 2, 6])]
    batch = pack(sequences, row_length=8)
    assert batch.tokens.shape == (3, 8) and batch.fill_ratio == 24 / 24
    for s, (row, start, length) in zip(sequences, batch.placement, strict=True):
        assert batch.tokens[row, start : start + length].tolist() == list(s.tokens)
        assert batch.positions[row, start : start + length].tolist() == list(range(length))
        segment = batch.segment_ids[row, start]
        assert segment > 0 and np.all(batch.segment_ids[row, start : start + length] == segment)
        assert not batch.loss_mask[row, start]  # nothing predicts a segment's first token
        assert batch.loss_mask[row, start + 1 : start + length].tolist() == list(s.loss_mask[1:])
    padded = pack(sequences[:2], row_length=8, num_rows=2)
    assert padded.tokens.shape == (2, 8) and padded.fill_ratio == 8 / 16
    assert np.all(padded.segment_ids[1] == 0)
    with pytest.raises(ValueError, match="more than a row"):
        pack([_sequence(9, 0)], row_length=8)
    with pytest.raises(ValueError, match="need 3 rows"):
        pack(sequences, row_length=8, num_rows=2)
    assert first_fit([4, 4, 4], 8) == [[0, 1], [2]]


def test_pass_at_k_and_pass_at_1_with_its_standard_error():
    from math import comb

    from swejax.rl import curate_pool, pass_at_k, pass_metrics

    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - comb(7, 5) / comb(10, 5))
    assert pass_at_k(10, 6, 5) == 1.0  # fewer than k failures: some draw must succeed
    outcomes = {"a": [True, False, True, True], "b": [False, False, False, True]}
    metrics = pass_metrics(outcomes)
    per_run = [0.5, 0.0, 0.5, 1.0]
    assert metrics["pass@1"] == pytest.approx(np.mean(per_run))
    assert metrics["pass@1_stderr"] == pytest.approx(np.std(per_run, ddof=1) / 2)
    assert metrics["pass@4"] == 1.0 and metrics["runs"] == 4
    with pytest.raises(ValueError, match="same number of runs"):
        pass_metrics({"a": [True], "b": [True, False]})
    attempts = {"easy": [True, True, True], "never": [False] * 3, "mid": [True, False, False]}
    assert curate_pool(attempts) == ["mid"]


def test_dapo_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    old = rng.normal(-2, 0.5, (3, 5)).astype(np.float32)
    # Ratios spread over clipped and unclipped regions, none within 0.02 of a clip boundary.
    log_ratio = rng.choice([-0.4, -0.1, 0.05, 0.15, 0.45], size=(3, 5)).astype(np.float32)
    logp = old + log_ratio
    adv = np.array([0.8, -1.2, 0.3], np.float32)
    mask = rng.random((3, 5)) < 0.8
    loss = lambda lp: dapo_loss(lp, old, adv, mask, 0.2, 0.28)[0]  # noqa: E731
    grad = np.asarray(jax.grad(loss)(jnp.asarray(logp)))
    eps = 1e-3
    numeric = np.zeros_like(grad)
    for index in np.ndindex(logp.shape):
        step = np.zeros_like(logp)
        step[index] = eps
        numeric[index] = (float(loss(logp + step)) - float(loss(logp - step))) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-4)
    assert np.all(grad[~mask] == 0)  # observation tokens carry no gradient


def test_dapo_leaves_harness_failures_out_of_the_group_before_anything_is_computed():
    from swejax.rl import DapoSelection
    from swejax.rollout import Trajectory

    def made(task, group, reward, error=""):
        t = Trajectory(task, group, [1, 2, 3], [False, True, True], [0.0, -0.5, -0.7])
        t.reward, t.infrastructure_error = reward, error
        return t

    trajectories = [
        made("a", 0, 1.0),
        made("a", 1, -1.0),
        made("a", 2, 1.0, error="the sandbox did not start"),  # its reward must not count
        made("a", 3, -1.0),
        made("b", 0, 1.0),
        made("b", 1, 0.0, error="the test patch does not apply"),  # b's usable rewards are equal
    ]
    selection = DapoSelection.of(trajectories)
    assert [(t.task_id, t.group) for t in selection.usable] == [
        ("a", 0),
        ("a", 1),
        ("a", 3),
        ("b", 0),
    ]
    expected = group_advantages([1.0, -1.0, -1.0], ["a"] * 3)  # not over a's four rewards
    np.testing.assert_allclose(selection.advantages, [*expected, 0.0])
    assert [(t.task_id, t.group) for t in selection.kept] == [("a", 0), ("a", 1), ("a", 3)]
    assert [s.advantage for s in selection.sequences] == pytest.approx(expected)


def test_advantage_statistics_weigh_each_trained_trajectory_by_its_action_tokens():
    from swejax.rl import DapoSelection
    from swejax.rollout import Trajectory
    from swejax.run._phases import _advantage_sums

    def episode(task, group, reward, sampled):
        t = Trajectory(task, group, reward=reward)
        t.add_context([1, 2])
        t.add_sampled([3] * sampled, [0.0] * sampled)
        return t

    # Task a: a short success and a long failure (advantages +1 and -1); task b: all equal
    # rewards, filtered out, so neither its trajectories nor their tokens count.
    trajectories = [
        episode("a", 0, 1.0, 2),
        episode("a", 1, 0.0, 6),
        episode("b", 0, 1.0, 5),
        episode("b", 1, 1.0, 5),
    ]
    positive, weighted, tokens = _advantage_sums(DapoSelection.of(trajectories))
    assert positive == 1 and tokens == 8
    assert weighted == pytest.approx(1.0 * 2 - 1.0 * 6, abs=1e-5)  # the failure's tokens win
