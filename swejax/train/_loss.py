"""What a train step minimises: token log-probabilities of packed rows, the RFT and DAPO
objectives over their action tokens, and gradients summed over micro-batches.

Every loss divides by the action tokens of the whole batch (passed in), so the summed gradient
over micro-batches is exactly the whole batch's and does not depend on the split.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from swejax.rl import dapo_loss

BATCH_FIELDS = ("tokens", "positions", "segment_ids", "loss_mask", "old_logprobs", "advantages")
OBJECTIVES = ("sft", "dapo")


@dataclasses.dataclass(frozen=True)
class Objective:
    """ "sft" (RFT: cross-entropy on the action tokens) or "dapo" (the clipped surrogate with
    ratios clipped to [1 - eps_low, 1 + eps_high]); both a token-level mean."""

    kind: str
    eps_low: float = 0.0
    eps_high: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.kind!r}; one of {', '.join(OBJECTIVES)}")
        if self.eps_low < 0 or self.eps_high < 0:
            raise ValueError(f"eps_low and eps_high must be >= 0, got {self}")

    @classmethod
    def of_phase(cls, phase: str, eps_low: float = 0.0, eps_high: float = 0.0) -> Objective:
        """The objective of a run's phase: "rft" trains by cross-entropy, "dapo" by the
        clipped surrogate with the given clip range."""
        if phase == "rft":
            return cls("sft")
        if phase == "dapo":
            return cls("dapo", eps_low, eps_high)
        raise ValueError(f"unknown phase {phase!r}; rft or dapo")


def token_logprobs(model, tokens, positions, segment_ids, chunk: int = 1024):
    """log p(tokens[:, t] | earlier tokens of its segment), aligned with tokens (column 0 and
    every segment's first token get 0), and the entropy of each predicting distribution.

    The output head runs over `chunk` positions at a time and is recomputed in the backward
    pass, so full-vocabulary logits never exist for a whole row: at 65k tokens and Qwen's
    152k-token vocabulary they would take 40 GB per row in float32.
    """
    hidden = model.hidden_states(tokens, positions, segment_ids)[:, :-1]
    targets = tokens[:, 1:]
    batch, length, width = hidden.shape
    chunk = min(chunk, length)
    pad = (-length) % chunk
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    chunks = (length + pad) // chunk
    hidden = hidden.reshape(batch, chunks, chunk, width).swapaxes(0, 1)
    targets = targets.reshape(batch, chunks, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def head(inputs):
        h, t = inputs
        log_probs = jax.nn.log_softmax(model.logits(h), axis=-1)  # float32
        picked = jnp.take_along_axis(log_probs, t[..., None], axis=-1)[..., 0]
        return picked, -(jnp.exp(log_probs) * log_probs).sum(-1)

    picked, entropy = jax.lax.map(head, (hidden, targets))
    picked = picked.swapaxes(0, 1).reshape(batch, -1)[:, :length]
    entropy = entropy.swapaxes(0, 1).reshape(batch, -1)[:, :length]
    # A token whose predecessor is in another segment (or padding) has no prediction here.
    predicted = (positions[:, 1:] > 0) & (segment_ids[:, 1:] > 0)
    picked, entropy = jnp.where(predicted, picked, 0.0), jnp.where(predicted, entropy, 0.0)
    pad = jnp.zeros_like(picked[:, :1])
    return jnp.concatenate([pad, picked], 1), jnp.concatenate([pad, entropy], 1)


def micro_batch_loss(model, batch: dict, num_tokens, objective: Objective):
    logprobs, entropy = token_logprobs(
        model, batch["tokens"], batch["positions"], batch["segment_ids"]
    )
    mask = batch["loss_mask"]
    if objective.kind == "dapo":
        loss, metrics = dapo_loss(
            logprobs,
            batch["old_logprobs"],
            batch["advantages"],
            mask,
            objective.eps_low,
            objective.eps_high,
            num_tokens,
        )
    else:  # RFT: cross-entropy on action tokens, token-level mean
        loss = -(jnp.where(mask, logprobs, 0.0)).sum() / num_tokens
        metrics = {"tokens": mask.sum().astype(jnp.float32)}
    metrics["entropy"] = jnp.where(mask, entropy, 0.0).sum()
    return loss, metrics


def _split(batch: dict, micro: int) -> dict:
    def reshape(x):
        if x.shape[0] % micro:
            raise ValueError(f"{x.shape[0]} rows do not split into {micro} micro-batches")
        return x.reshape(micro, x.shape[0] // micro, *x.shape[1:])

    return {k: reshape(batch[k]) for k in BATCH_FIELDS}


def accumulated_gradients(
    graphdef, objective: Objective, micro: int, params, batch: dict
) -> tuple[Any, Any, dict, Any]:
    """(gradient, loss, metric sums, action tokens) of the whole batch, summed over `micro`
    micro-batches run one after another."""
    num_tokens = jnp.maximum(batch["loss_mask"].sum().astype(jnp.float32), 1.0)

    def loss_fn(params, micro_batch):
        model = nnx.merge(graphdef, params)
        return micro_batch_loss(model, micro_batch, num_tokens, objective)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulate(carry, micro_batch):
        grads, loss, metrics = carry
        (step_loss, step_metrics), step_grads = grad_fn(params, micro_batch)
        grads = jax.tree.map(jnp.add, grads, step_grads)
        metrics = jax.tree.map(jnp.add, metrics, step_metrics)
        return (grads, loss + step_loss, metrics), None

    micro_batches = _split(batch, micro)
    first = jax.tree.map(lambda x: x[0], micro_batches)
    metric_shapes = jax.eval_shape(lambda: loss_fn(params, first)[1])
    init = (
        jax.tree.map(jnp.zeros_like, params),
        jnp.float32(0.0),
        jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes),
    )
    (grads, loss, metrics), _ = jax.lax.scan(accumulate, init, micro_batches)
    return grads, loss, metrics, num_tokens
