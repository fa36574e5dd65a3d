"""What an episode asks of a policy, and a scripted policy for demonstrations and tests.

A policy holds one episode's context as token ids: it is started with the prompt, asked for
replies, and shown each observation, always as the exact ids that go after what it already
holds (token in, token out). The engine-backed policy of a rollout lives with the scheduler
(`swejax.rollout._scheduler`), which serves many episodes from one engine's slots.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Protocol

from swejax.tokenizer import im_end_id


@dataclasses.dataclass(frozen=True)
class Reply:
    """One assistant turn as the policy produced it."""

    ids: list[int]  # the turn's tokens, `<|im_end|>` included when the policy ended the turn
    logprobs: list[float]  # of each id under the sampling distribution (0 for scripted text)
    text: str  # the reply the scaffold parses: the ids decoded, without `<|im_end|>`
    context_full: bool = False  # the context ran out during (or before) the reply


class Policy(Protocol):
    """One episode's policy (see the module docstring)."""

    def start(self, prompt: Sequence[int]) -> bool:
        """Begin the context with `prompt`; False if it does not fit."""
        ...

    def reply(self) -> Reply:
        """The next reply after everything the context holds."""
        ...

    def observe(self, ids: Sequence[int]) -> bool:
        """Append `ids` (an observation turn) to the context; False if they do not fit, and
        then nothing was appended."""
        ...


class ScriptedPolicy:
    """Replies fixed in advance, whatever the observations: encoded by the tokenizer and
    closed with `<|im_end|>`, log-probability 0 (demonstrations and tests; never sampled)."""

    def __init__(self, replies: Iterable[str], tokenizer):
        self._replies = iter(replies)
        self._tokenizer = tokenizer

    def start(self, prompt: Sequence[int]) -> bool:
        return True

    def reply(self) -> Reply:
        try:
            text = next(self._replies)
        except StopIteration:
            raise RuntimeError("the scripted policy ran out of replies") from None
        ids = self._tokenizer.encode(text, add_special_tokens=False)
        ids = [*ids, im_end_id(self._tokenizer)]
        return Reply(ids, [0.0] * len(ids), text)

    def observe(self, ids: Sequence[int]) -> bool:
        return True
