"""AdamW as the paper runs it: global-norm clipping, then AdamW with its (b1, b2, eps) from the
`optimizer` section and each phase's learning rate and weight decay."""

from __future__ import annotations

import functools

import jax
import optax

from swejax.config import OptimizerConfig


def warmup_cosine(peak: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to `peak`, then cosine to 0 at `total_steps` (RFT's schedule)."""
    if total_steps <= warmup_steps:
        raise ValueError(
            f"a warm-up of {warmup_steps} steps needs more steps in all, got {total_steps}"
        )
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, total_steps, end_value=0.0)


@functools.cache
def make_optimizer(
    config: OptimizerConfig, learning_rate: float | optax.Schedule, weight_decay: float
) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW; weight decay on matrices only (not norms or biases:
    the paper does not say which parameters decay).

    The same arguments give the same transformation object (it holds no state), so a train
    step built on it again is equal to the last one and jit reuses its compiled program."""
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(
            learning_rate,
            b1=config.b1,
            b2=config.b2,
            eps=config.eps,
            weight_decay=weight_decay,
            mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params),
        ),
    )
