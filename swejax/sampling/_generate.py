"""`generate`: prompts in, new tokens and their log-probabilities out, over the engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from jax.sharding import Mesh

from swejax.config import EngineConfig
from swejax.models.qwen2 import Qwen2
from swejax.sampling._engine import Engine
from swejax.sampling._programs import StopReason
from swejax.sampling._strategies import SamplingParams


@dataclasses.dataclass(frozen=True)
class Generation:
    tokens: list[int]  # new tokens only
    logprobs: list[float]  # log-probability of each under the distribution sampled from
    stop_reason: StopReason


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def generate(
    model: Qwen2,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    seed: int = 0,
    *,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    stop_tokens: Sequence[int] = (),
    mesh: Mesh | None = None,
) -> list[Generation]:
    """Sample up to `max_new_tokens` after each prompt (all prompts decoded together).

    temperature 0 is greedy. `stop_tokens` end a sequence (the stop token is included).
    `repetition_penalty` counts each prompt's tokens as well as the new ones (transformers').
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and no prompt may be empty")
    longest = max(len(p) for p in prompts)
    config = EngineConfig(
        num_slots=len(prompts),
        capacity=_round_up(longest + max_new_tokens, 16),
        chunk=min(256, _round_up(longest, 16)),
        steps_per_call=min(max_new_tokens, 64),
        stop_tokens=tuple(int(t) for t in stop_tokens),
    )
    sampling = SamplingParams(temperature, top_k, top_p, repetition_penalty)
    engine = Engine(model, config, sampling, mesh=mesh, seed=seed)
    engine.prefill_many(list(enumerate(prompts)))
    for slot in range(len(prompts)):
        engine.start_turn(slot, max_new_tokens)
    tokens: list[list[int]] = [[] for _ in prompts]
    logprobs: list[list[float]] = [[] for _ in prompts]
    reasons = np.zeros(len(prompts), np.int64)
    running = np.ones(len(prompts), bool)
    while running.any():
        result = engine.decode()
        for slot in range(len(prompts)):
            tokens[slot] += result.tokens[slot].tolist()
            logprobs[slot] += result.logprobs[slot].tolist()
        reasons = np.where(result.stopped, result.reasons, reasons)
        running &= ~result.stopped
    return [
        Generation(t, lp, StopReason(int(r)))
        for t, lp, r in zip(tokens, logprobs, reasons, strict=True)
    ]
