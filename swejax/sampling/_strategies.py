"""Sampling strategies: pure functions from logits to tokens and their log-probabilities."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How the next token is drawn. Hashable: it is a static argument of the jitted decode.

    temperature 0 is greedy. top_k, top_p and repetition_penalty exist for evaluation with a
    model's default decoding only: they bias the distribution, so RL rollouts refuse them
    (`require_unbiased`). The steps are transformers' `generate`'s, in its order: the
    repetition penalty on the raw logits (greedy too), then temperature, top-k, top-p.
    """

    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    # > 1 discourages every token already in the sequence, prompt included; 1.0: off
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(
                f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}"
            )

    @property
    def filtered(self) -> bool:
        return self.top_k > 0 or self.top_p < 1.0

    @property
    def penalizes_repetition(self) -> bool:
        """Whether sampling needs each sequence's presence mask (`seen` of `sample`)."""
        return self.repetition_penalty != 1.0


def require_unbiased(params: SamplingParams) -> None:
    """Refuse filters and penalties for training rollouts: the importance ratio needs the
    policy's own law."""
    if params.filtered or params.penalizes_repetition:
        raise ValueError(
            f"training rollouts must sample the policy's own distribution, but top_k="
            f"{params.top_k}, top_p={params.top_p}, repetition_penalty="
            f"{params.repetition_penalty:g} change it; sampling anything else biases the DAPO "
            "importance ratio pi_theta / pi_old (training degraded within 5-10 iterations in the "
            "paper when an inference upgrade enabled top-k and min-p). Use temperature only."
        )


def penalize_repetition(
    logits: Float[Array, "S V"], seen: Bool[Array, "S V"], penalty: float
) -> Float[Array, "S V"]:
    """transformers' `RepetitionPenaltyLogitsProcessor`: every token present in the sequence
    has its logit divided by `penalty` if positive, multiplied if negative (so > 1 always
    lowers it), however often it occurred."""
    penalized = jnp.where(logits < 0, logits * penalty, logits / penalty)
    return jnp.where(seen, penalized, logits)


def _filter(logits: Float[Array, "S V"], params: SamplingParams) -> Float[Array, "S V"]:
    """Logits with tokens outside top-k / the top-p nucleus set to -inf."""
    if params.top_k > 0:
        k = min(params.top_k, logits.shape[-1])  # as transformers: top-k over a smaller vocab
        kth = jax.lax.top_k(logits, k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if params.top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep a token if the mass before it is below top_p (the first token is always kept).
        keep_sorted = jnp.cumsum(probs, axis=-1) - probs < params.top_p
        keep = (
            jnp.zeros_like(keep_sorted)
            .at[jnp.arange(logits.shape[0])[:, None], order]
            .set(keep_sorted)
        )
        logits = jnp.where(keep, logits, -jnp.inf)
    return logits


def sampling_logits(
    logits: Float[Array, "S V"], params: SamplingParams, seen: Bool[Array, "S V"] | None = None
) -> Float[Array, "S V"]:
    """The logits the next token is drawn from (greedy: the argmax of), float32, processed as
    transformers' `generate` processes them: the repetition penalty on the raw logits, then
    (when sampling) temperature, top-k and top-p, filtered tokens at -inf.

    `seen[s, v]`: token v is in row s's sequence so far, prompt included (needed, and only
    read, when `params.penalizes_repetition`).
    """
    logits = logits.astype(jnp.float32)
    if params.penalizes_repetition:
        if seen is None:
            raise ValueError("repetition_penalty needs `seen`, the tokens of each sequence")
        logits = penalize_repetition(logits, seen, params.repetition_penalty)
    if params.temperature == 0.0:
        return logits
    return _filter(logits / params.temperature, params)


def sample(
    logits: Float[Array, "S V"],
    key: jax.Array,
    params: SamplingParams,
    seen: Bool[Array, "S V"] | None = None,
) -> tuple[Int[Array, " S"], Float[Array, " S"]]:
    """Next tokens and their log-probabilities under the distribution sampled from
    (`sampling_logits`; `seen` as there).

    `key`: one key for all rows, or one per row ([S] keys, each row drawn with its own).
    Greedy (temperature 0) reports the log-probability under the model's own distribution at
    temperature 1 (after the repetition penalty, which transformers applies to greedy decoding
    too), which is what evaluation of a greedy policy wants.
    """
    scores = sampling_logits(logits, params, seen)
    if params.temperature == 0.0:
        tokens = jnp.argmax(scores, axis=-1)
    elif key.shape:
        tokens = jax.vmap(lambda k, row: jax.random.categorical(k, row))(key, scores)
    else:
        tokens = jax.random.categorical(key, scores, axis=-1)
    logprobs = jax.nn.log_softmax(scores, axis=-1)
    chosen = jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]
    return tokens.astype(jnp.int32), chosen
