"""DAPO learns: a toy multi-turn environment, driven through the real engine, trajectories,
group advantages, packing and DAPO train step, taken from chance to a mean reward of 0.9.

The environment shows one symbol per turn; the reply is scored right when it is the symbol's
partner token. The symbols are drawn per task, so the reward depends on the observations: a
policy that ignores them gets at most a quarter of the turns right. Every reply is one sampled
token from the whole vocabulary, so a random policy scores about 1/16 per turn.
"""

import time

import numpy as np
import pytest

from swejax.config import OptimizerConfig
from swejax.models import ModelConfig, build_model
from swejax.rl import dapo_sequences, group_advantages, pack
from swejax.rollout import Trajectory
from swejax.sampling import Engine, EngineConfig, SamplingParams
from swejax.train import BATCH_FIELDS, Objective, Trainer, make_optimizer

VOCAB = 16
BOS, TURN = 0, 1
SYMBOLS = np.arange(2, 6)  # what the environment shows
PARTNER_OFFSET = 8  # the right reply to symbol s is s + 8
TURNS = 3
TASKS, GROUP = 8, 8  # per iteration: 64 episodes, all at once in the engine's slots
ROW, ROWS = 64, 16  # packed rows: one shape for every optimizer step


def _toy_model():
    cfg = ModelConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return build_model(cfg, seed=0)


def _rollout(engine: Engine, tasks: np.ndarray) -> list[Trajectory]:
    """Every task GROUP times; observations are the task's symbols, one per turn."""
    jobs = [(task, g) for task in range(len(tasks)) for g in range(GROUP)]
    trajectories = [Trajectory(f"task{task}", g) for task, g in jobs]
    for turn in range(TURNS):
        requests = []
        for slot, (task, _) in enumerate(jobs):
            ids = ([BOS] if turn == 0 else []) + [TURN, int(tasks[task, turn])]
            trajectories[slot].add_context(ids)
            requests.append((slot, ids))
        if turn == 0:
            engine.prefill_many(requests)
        else:
            engine.extend_many(requests)
        for slot in range(len(jobs)):
            engine.start_turn(slot, 1)
        result = engine.decode(1)
        for slot, trajectory in enumerate(trajectories):
            trajectory.add_sampled(result.tokens[slot].tolist(), result.logprobs[slot].tolist())
    for (task, _), trajectory in zip(jobs, trajectories, strict=True):
        replies = [trajectory.tokens[end - 1] for _, end in trajectory.turns]
        trajectory.reward = float(np.mean(np.equal(replies, tasks[task] + PARTNER_OFFSET)))
    return trajectories


@pytest.mark.slow
def test_dapo_lifts_a_random_policy_on_a_multi_turn_task_to_a_reward_of_0_9():
    begun = time.perf_counter()
    model = _toy_model()
    engine = Engine(
        model,
        EngineConfig(num_slots=TASKS * GROUP, capacity=16, page_size=16, chunk=16),
        SamplingParams(temperature=1.0),
        seed=0,
    )
    tx = make_optimizer(OptimizerConfig(), learning_rate=3e-3, weight_decay=0.0)
    trainer = Trainer(model, tx, Objective("dapo", eps_low=0.2, eps_high=0.28))
    rng = np.random.default_rng(0)
    rewards = []
    for iteration in range(100):
        tasks = rng.choice(SYMBOLS, (TASKS, TURNS))
        engine.reseed(iteration)
        trajectories = _rollout(engine, tasks)
        # Token in, token out: every trajectory is the context the engine held, in order.
        for t in trajectories:
            assert len(t.tokens) == 1 + 3 * TURNS and sum(t.loss_mask) == TURNS
        rewards.append(np.mean([t.reward for t in trajectories]))
        if rewards[-1] >= 0.9:
            break
        advantages = group_advantages(
            [t.reward for t in trajectories], [t.task_id for t in trajectories]
        )
        sequences = dapo_sequences(trajectories, advantages)
        if sequences:
            packed = pack(sequences, ROW, ROWS)
            metrics = trainer.step({name: getattr(packed, name) for name in BATCH_FIELDS})
            assert not metrics["skipped"]
    seconds = time.perf_counter() - begun
    print("rewards", np.round(rewards, 2).tolist(), f"{seconds:.1f} s")
    assert rewards[0] < 0.3, rewards  # chance: about 1/16 per turn
    assert rewards[-1] >= 0.9, f"mean reward per iteration: {np.round(rewards, 2).tolist()}"
    assert seconds < 180, f"{seconds:.0f} s"
