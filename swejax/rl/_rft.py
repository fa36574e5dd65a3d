"""Training data from trajectories.

RFT (docs/method.md, Phase 1): successful trajectories, trained on their assistant tokens only,
with the turns that caused a format error kept in the context but masked out of the loss.
DAPO (Phase 2): an iteration's usable trajectories (harness failures left out before anything
is computed), their group advantages, and the sequences of those whose advantage is not zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from swejax.rl._advantages import group_advantages
from swejax.rl._packing import TrainSequence


def rft_sequences(trajectories: Iterable, mask_format_errors: bool = True) -> list[TrainSequence]:
    """Training sequences from the resolved trajectories (infrastructure failures excluded)."""
    sequences = []
    for t in trajectories:
        if not t.resolved or t.infrastructure_error:
            continue
        mask = list(t.loss_mask)
        if mask_format_errors:
            for turn in t.format_error_turns:
                start, end = t.turns[turn]
                mask[start:end] = [False] * (end - start)
        sequences.append(TrainSequence(list(t.tokens), mask, list(t.logprobs), 1.0))
    return sequences


def dapo_sequences(trajectories: Iterable, advantages: Iterable[float]) -> list[TrainSequence]:
    """Trajectories with a non-zero advantage, every sampled token in the loss (overlong ones
    included: dropping them would hide looping from the gradient)."""
    return [
        TrainSequence(list(t.tokens), list(t.loss_mask), list(t.logprobs), float(a))
        for t, a in zip(trajectories, advantages, strict=True)
        if a != 0.0 and not t.infrastructure_error
    ]


@dataclasses.dataclass(frozen=True)
class DapoSelection:
    """What one iteration's trajectories give DAPO (each list in the trajectories' order)."""

    usable: list  # without infrastructure errors: those never reach a reward or a group mean
    advantages: np.ndarray  # one per usable trajectory, within its task's group
    kept: list  # usable trajectories whose advantage is not zero
    sequences: list[TrainSequence]  # the kept ones' training sequences

    @classmethod
    def of(cls, trajectories: Sequence) -> DapoSelection:
        usable = [t for t in trajectories if not t.infrastructure_error]
        advantages = group_advantages([t.reward for t in usable], [t.task_id for t in usable])
        kept = [t for t, a in zip(usable, advantages, strict=True) if a != 0.0]
        return cls(usable, advantages, kept, dapo_sequences(usable, advantages))
