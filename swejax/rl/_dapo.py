"""The multi-turn DAPO objective (docs/method.md, Phase 2, step 6).

Per action token t of a trajectory with advantage A: the ratio r_t = exp(logp_t - old_logp_t)
and the clipped surrogate min(r_t A, clip(r_t, 1 - eps_low, 1 + eps_high) A). The loss is minus
its sum over every action token of the optimizer step's batch divided by their total count: a
token-level mean. The count is passed in (`num_tokens`), so a batch split into micro-batches
sums to exactly the same loss and gradient as the whole batch. No KL term, no entropy bonus.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


def dapo_loss(
    logprobs: Float[Array, "B T"],
    old_logprobs: Float[Array, "B T"],
    advantages: Float[Array, "B T"] | Float[Array, " B"],
    loss_mask: Bool[Array, "B T"],
    eps_low: float,
    eps_high: float,
    num_tokens: Float[Array, ""] | int | None = None,
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """(loss, metrics) summed over these tokens and divided by `num_tokens` (default: the
    number of action tokens here). Metrics are sums over these tokens (divide by `num_tokens`
    for the batch's means): clip_low (ratio clipped at 1 - eps_low with A < 0), clip_high
    (clipped at 1 + eps_high with A > 0), ratio, and the sampler gap old - new logprob."""
    mask = loss_mask.astype(jnp.float32)
    if advantages.ndim == 1:
        advantages = advantages[:, None]
    advantages = jnp.broadcast_to(advantages.astype(jnp.float32), logprobs.shape)
    log_ratio = jnp.where(loss_mask, logprobs - old_logprobs, 0.0)
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    surrogate = jnp.minimum(ratio * advantages, clipped * advantages)
    count = mask.sum() if num_tokens is None else jnp.asarray(num_tokens, jnp.float32)
    loss = -(surrogate * mask).sum() / jnp.maximum(count, 1.0)
    metrics = {
        "clip_low": ((ratio < 1.0 - eps_low) & (advantages < 0) & loss_mask).sum(),
        "clip_high": ((ratio > 1.0 + eps_high) & (advantages > 0) & loss_mask).sum(),
        "ratio": (ratio * mask).sum(),
        "old_minus_new_logprob": (-log_ratio * mask).sum(),
        "tokens": mask.sum(),
    }
    return loss, metrics
