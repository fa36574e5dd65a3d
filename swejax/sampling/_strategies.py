"""Sampling strategies: pure functions from logits to tokens and their log-probabilities."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How the next token is drawn. Hashable: it is a static argument of the jitted decode.

    temperature 0 is greedy. top_k and top_p exist for evaluation with a model's default
    decoding only: they bias the distribution, so RL rollouts refuse them (`require_unbiased`).
    """

    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")

    @property
    def filtered(self) -> bool:
        return self.top_k > 0 or self.top_p < 1.0


def require_unbiased(params: SamplingParams) -> None:
    """Refuse filters for training rollouts: the importance ratio needs the policy's own law."""
    if params.filtered:
        raise ValueError(
            f"training rollouts must sample the policy's own distribution, but top_k="
            f"{params.top_k}, top_p={params.top_p} filter it; a filtered sampler biases the DAPO "
            "importance ratio pi_theta / pi_old (training degraded within 5-10 iterations in the "
            "paper when an inference upgrade enabled top-k and min-p). Use temperature only."
        )


def _filter(logits: Float[Array, "S V"], params: SamplingParams) -> Float[Array, "S V"]:
    """Logits with tokens outside top-k / the top-p nucleus set to -inf."""
    if params.top_k > 0:
        kth = jax.lax.top_k(logits, params.top_k)[0][:, -1:]
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


def sample(
    logits: Float[Array, "S V"], key: jax.Array, params: SamplingParams
) -> tuple[Int[Array, " S"], Float[Array, " S"]]:
    """Next tokens and their log-probabilities under the distribution sampled from.

    `key`: one key for all rows, or one per row ([S] keys, each row drawn with its own).
    Greedy (temperature 0) reports the log-probability under the model's own distribution at
    temperature 1, which is what evaluation of a greedy policy wants.
    """
    logits = logits.astype(jnp.float32)
    if params.temperature == 0.0:
        tokens = jnp.argmax(logits, axis=-1)
        logprobs = jax.nn.log_softmax(logits, axis=-1)
    else:
        scaled = _filter(logits / params.temperature, params)
        if key.shape:
            tokens = jax.vmap(lambda k, row: jax.random.categorical(k, row))(key, scaled)
        else:
            tokens = jax.random.categorical(key, scaled, axis=-1)
        logprobs = jax.nn.log_softmax(scaled, axis=-1)
    chosen = jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]
    return tokens.astype(jnp.int32), chosen
