"""Rollouts over the engine: trajectories are exactly what the sampler saw and produced."""

import dataclasses
import os
import re

import numpy as np
import pytest

from swejax.config import RolloutConfig, ScaffoldConfig
from swejax.env.sandbox import bwrap_available
from swejax.models import build_model, preset
from swejax.rl import length_penalty
from swejax.rollout import (
    EpisodeEnv,
    RolloutRunner,
    ScriptedPolicy,
    demonstrate,
    demonstration_env,
    demonstration_replies,
    read_trajectories,
    run_episode,
)
from swejax.sampling import Engine, EngineConfig, SamplingParams
from swejax.tasks import builtin_tasks
from swejax.tokenizer import im_end_id, load_tokenizer, render_conversation
from swejax.train import token_logprobs

if not bwrap_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install bubblewrap (see .ci/run)")
    pytest.skip("bubblewrap is not installed", allow_module_level=True)

TOKENIZER = load_tokenizer()
TASKS = {t.instance_id: t for t in builtin_tasks()}


@pytest.fixture(scope="module")
def model():
    return build_model(preset("tiny", dtype="float32", param_dtype="float32"), seed=0)


def _runner(model, slots=3, max_turns=3, max_reply=24, capacity=4096):
    engine = Engine(
        model,
        EngineConfig(
            num_slots=slots,
            capacity=capacity,
            page_size=64,
            chunk=256,
            steps_per_call=16,
            stop_tokens=(im_end_id(TOKENIZER),),
        ),
        SamplingParams(temperature=1.0),
        seed=0,
    )
    env = EpisodeEnv("bwrap", ScaffoldConfig(max_turns=max_turns), l_thr=min(10, max_turns - 1))
    return RolloutRunner(
        engine, TOKENIZER, RolloutConfig(max_reply_tokens=max_reply, workers=4), env
    )


@pytest.mark.slow
def test_rollout_trajectories_are_token_exact(model, tmp_path):
    jobs = [(TASKS["swejax__b_roman_repeat"], g) for g in range(2)]
    jobs += [(TASKS["swejax__a_duration_days"], g) for g in range(2)]
    path = str(tmp_path / "iter_00000.jsonl")
    trajectories, stats = _runner(model).run(jobs, output_path=path)  # 4 jobs on 3 slots
    assert sorted((t.task_id, t.group) for t in trajectories) == sorted(
        (task.instance_id, g) for task, g in jobs
    )
    on_disk = list(read_trajectories(path))
    assert [t.to_json() for t in on_disk] == [t.to_json() for t in trajectories]
    for t in trajectories:
        # A random tiny model never writes a command block: three format errors, turn limit.
        assert t.end_reason == "turn_limit" and t.num_turns == 3
        assert t.format_error_turns == [0, 1, 2]
        assert not t.resolved and not t.infrastructure_error
        assert t.reward == length_penalty(3, l_thr=2, t_max=3) == -1.0  # R_tests 0 + R_length
        task = TASKS[t.task_id]
        prompt = render_conversation(
            TOKENIZER,
            [{"role": "system", "content": ""}, {"role": "user", "content": ""}],
        )
        assert t.tokens[0] == prompt.ids[0]
        assert len(t.tokens) == len(t.loss_mask) == len(t.logprobs)
        mask = np.asarray(t.loss_mask)
        assert mask.sum() == sum(end - start for start, end in t.turns)
        assert all(mask[start:end].all() for start, end in t.turns)
        assert np.all(np.asarray(t.logprobs)[~mask] == 0.0)
        assert task.problem_statement.strip()[:40] in TOKENIZER.decode(t.tokens)
        # The sampler's log-probabilities are the training forward's on the same tokens.
        tokens = np.asarray(t.tokens, np.int32)[None]
        positions = np.arange(tokens.shape[1], dtype=np.int32)[None]
        trained, _ = token_logprobs(model, tokens, positions, np.ones_like(tokens))
        gap = np.abs(np.asarray(trained)[0][mask] - np.asarray(t.logprobs)[mask]).max()
        assert gap < 1e-4, gap
    # Linear prefill: every token but each trajectory's last went through the model once.
    assert stats.model_tokens == sum(len(t.tokens) - 1 for t in trajectories)
    assert stats.sampled_tokens == sum(sum(t.loss_mask) for t in trajectories)
    assert 0.0 <= stats.idle_fraction < 1.0 and stats.trajectories == 4


@pytest.mark.slow
def test_a_context_that_fills_up_ends_the_episode(model):
    runner = _runner(model, slots=1, max_turns=40, max_reply=64, capacity=1408)
    (t,), _ = runner.run([(TASKS["swejax__b_roman_repeat"], 0)])
    assert t.end_reason == "context_full" and len(t.tokens) <= 1408
    assert not t.infrastructure_error and t.reward == 0.0


def test_a_sandbox_that_cannot_start_is_an_infrastructure_error(model):
    broken = dataclasses.replace(TASKS["swejax__b_roman_repeat"], setup_commands=("false",))
    (t,), _ = _runner(model, slots=1).run([(broken, 0)])
    assert (
        t.end_reason == "sandbox_error" and "setup command 'false' failed" in t.infrastructure_error
    )
    assert t.tokens == []


def test_demonstrations_are_laid_out_as_chat_and_resolve():
    from swejax.rl import rft_sequences

    task = TASKS["swejax__b_confmerge_shared"]  # two files: two edits, then submit
    env = EpisodeEnv("bwrap", ScaffoldConfig(max_turns=40), l_thr=10)
    t = demonstrate(task, TOKENIZER, env)
    assert t.resolved and t.reward == 1.0 and t.end_reason == "submitted" and t.num_turns == 3
    # Token for token the ChatML conversation of the episode (less the last turn's "\n"), with
    # the loss on exactly the assistant content and its <|im_end|>.
    text = TOKENIZER.decode(t.tokens)
    assert text.count("<|im_start|>assistant\n") == 3 and text.endswith("submit\n```<|im_end|>")
    policy = ScriptedPolicy(demonstration_replies(task), TOKENIZER)
    episode = run_episode(task, policy, env, TOKENIZER).episode
    messages = [
        {"role": "system", "content": episode.system_prompt},
        {"role": "user", "content": episode.first_message},
    ]
    for step in episode.steps:
        messages.append({"role": "assistant", "content": step.reply})
        if step.observation:
            messages.append({"role": "observation", "content": step.observation})
    chat = render_conversation(TOKENIZER, messages)
    assert t.tokens == chat.ids[:-1] and t.loss_mask == chat.loss_mask[:-1]

    sequences = rft_sequences([t, dataclasses.replace(t, resolved=False)])
    assert len(sequences) == 1 and sequences[0].loss_mask == t.loss_mask
    t.format_error_turns = [0]
    (masked,) = rft_sequences([t])
    start, end = t.turns[0]
    assert not any(masked.loss_mask[start:end]) and all(
        masked.loss_mask[t.turns[1][0] : t.turns[1][1]]
    )


def test_a_detour_demonstration_looks_around_first_and_still_resolves():
    task = TASKS["swejax__b_paginator"]
    env = EpisodeEnv("bwrap", ScaffoldConfig(max_turns=3), l_thr=2)
    direct = demonstration_replies(task)
    replies = demonstration_replies(task, detour=4)
    assert replies[4:] == direct and len(direct) == 2
    commands = [r.split("```command\n")[1].split("\n```")[0] for r in replies[:4]]
    assert commands == ["ls", "wc -l pager/paginator.py", "ls pager", "ls"]
    # The agent's turn limit (3) is too short for the detour; demonstrations get 6 turns.
    long_env = demonstration_env(env, [task], detour=4)
    assert long_env.scaffold.max_turns == 6 and env.scaffold.max_turns == 3
    assert demonstration_env(env, [task], detour=0) is env  # no detour: the agent's limit
    t = demonstrate(task, TOKENIZER, long_env, group=1, detour=4)
    assert t.resolved and t.end_reason == "submitted" and t.num_turns == 6 and t.group == 1
    assert not t.format_error_turns
    steps = run_episode(task, ScriptedPolicy(replies, TOKENIZER), long_env, TOKENIZER).episode.steps
    assert steps[0].observation.startswith("pager\ntests\n")  # the tools' own outputs
    assert steps[2].observation.startswith("__init__.py\npaginator.py\n")
    assert re.search(r"\b\d+ pager/paginator\.py\b", steps[1].observation)
    # Under the agent's own limit the same replies run out of turns before the fix.
    cut = demonstrate(task, TOKENIZER, env, group=1, detour=4)
    assert not cut.resolved and cut.num_turns == 3 and cut.end_reason != "submitted"


def test_the_demo_leaves_dapo_one_choice_to_learn():
    """The embedded default's recipe (docs/stability.md): under the agent's turn limit every
    demo task's direct demonstration resolves at full reward and its detour runs out of turns,
    and the two ways part at the first reply, with the same opening in every task."""
    from swejax import builder
    from swejax.config import load_config

    config = load_config(None, [])
    detour = config.rft.detour_turns
    tasks = [TASKS[name] for name in config.tasks.train.split(",")]
    env = builder.episode_env(config)
    long_env = demonstration_env(env, tasks, detour)
    openings = set()
    for task in tasks:
        direct = demonstrate(task, TOKENIZER, env, group=0)
        assert direct.resolved and direct.reward == 1.0, task.instance_id
        cut = demonstrate(task, TOKENIZER, env, group=1, detour=detour)
        assert not cut.resolved and cut.end_reason == "turn_limit", task.instance_id
        assert demonstrate(task, TOKENIZER, long_env, group=1, detour=detour).resolved
        first = demonstration_replies(task, detour)[0]
        assert first.split()[0] != demonstration_replies(task)[0].split()[0]
        openings.add(first)
    assert len(openings) == 1
