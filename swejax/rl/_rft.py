"""Rejection fine-tuning data (docs/method.md, Phase 1): successful trajectories, trained on their
assistant tokens only, with the turns that caused a format error kept in the context but masked
out of the loss."""

from __future__ import annotations

from collections.abc import Iterable

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
