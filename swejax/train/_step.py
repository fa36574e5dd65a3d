"""The train step: token log-probabilities of packed rows, the RFT and DAPO losses, AdamW, and
gradient accumulation over micro-batches, jitted with the state donated.

A batch is `rows` packed rows split into `micro` micro-batches of `rows // micro` rows, run one
after another under `lax.scan` with their gradients summed. Every loss divides by the action
tokens of the whole batch (passed in), so the summed gradient is exactly the whole batch's and
does not depend on the split. A non-finite loss or gradient leaves parameters and optimizer state
as they were and is reported in the metrics (`skipped`), never applied.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from swejax.rl._dapo import dapo_loss
from swejax.sharding import activation_mesh, named_sharding

BATCH_FIELDS = ("tokens", "positions", "segment_ids", "loss_mask", "old_logprobs", "advantages")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    learning_rate: float = 1e-6
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    schedule: str = "constant"  # or "warmup_cosine": linear warm-up, then cosine to 0
    warmup_steps: int = 0
    total_steps: int = 0  # for warmup_cosine


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
    if config.schedule == "constant":
        return optax.constant_schedule(config.learning_rate)
    if config.schedule == "warmup_cosine":
        if config.total_steps <= config.warmup_steps:
            raise ValueError("warmup_cosine needs total_steps > warmup_steps")
        return optax.warmup_cosine_decay_schedule(
            0.0, config.learning_rate, config.warmup_steps, config.total_steps, end_value=0.0
        )
    raise ValueError(f"unknown schedule {config.schedule!r}; constant or warmup_cosine")


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW; weight decay on matrices only (not norms or biases)."""
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(
            learning_rate_schedule(config),
            b1=config.b1,
            b2=config.b2,
            eps=config.eps,
            weight_decay=config.weight_decay,
            mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params),
        ),
    )


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


def micro_batch_loss(model, batch: dict, num_tokens, objective: str, eps_low, eps_high):
    logprobs, entropy = token_logprobs(
        model, batch["tokens"], batch["positions"], batch["segment_ids"]
    )
    mask = batch["loss_mask"]
    if objective == "dapo":
        loss, metrics = dapo_loss(
            logprobs,
            batch["old_logprobs"],
            batch["advantages"],
            mask,
            eps_low,
            eps_high,
            num_tokens,
        )
    elif objective == "sft":  # RFT: cross-entropy on action tokens, token-level mean
        loss = -(jnp.where(mask, logprobs, 0.0)).sum() / num_tokens
        metrics = {"tokens": mask.sum().astype(jnp.float32)}
    else:
        raise ValueError(f"unknown objective {objective!r}; dapo or sft")
    metrics["entropy"] = jnp.where(mask, entropy, 0.0).sum()
    return loss, metrics


def _split(batch: dict, micro: int) -> dict:
    def reshape(x):
        if x.shape[0] % micro:
            raise ValueError(f"{x.shape[0]} rows do not split into {micro} micro-batches")
        return x.reshape(micro, x.shape[0] // micro, *x.shape[1:])

    return {k: reshape(batch[k]) for k in BATCH_FIELDS}


def accumulated_gradients(
    graphdef, objective: str, micro: int, eps_low: float, eps_high: float, params, batch: dict
) -> tuple[Any, Any, dict, Any]:
    """(gradient, loss, metric sums, action tokens) of the whole batch, summed over `micro`
    micro-batches run one after another."""
    num_tokens = jnp.maximum(batch["loss_mask"].sum().astype(jnp.float32), 1.0)

    def loss_fn(params, micro_batch):
        model = nnx.merge(graphdef, params)
        return micro_batch_loss(model, micro_batch, num_tokens, objective, eps_low, eps_high)

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


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """One optimizer step: its static configuration, and the step itself (calling it).

    Frozen and hashable, so `jax.jit` takes it as one static argument (`jit_train_step`): an
    equal step reuses the compiled program.
    """

    graphdef: nnx.GraphDef
    tx: optax.GradientTransformation
    objective: str = "dapo"  # or "sft"
    micro_batches: int = 1
    eps_low: float = 0.2
    eps_high: float = 0.28

    def __call__(self, params, opt_state, batch: dict) -> tuple[Any, Any, dict]:
        """(params, opt_state, metrics) after one optimizer step over `batch` (rows [R, L]);
        see the module docstring."""
        grads, loss, metrics, num_tokens = accumulated_gradients(
            self.graphdef,
            self.objective,
            self.micro_batches,
            self.eps_low,
            self.eps_high,
            params,
            batch,
        )
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def apply(_):
            updates, new_opt_state = self.tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), new_opt_state

        def skip(_):
            return params, opt_state

        params, opt_state = jax.lax.cond(finite, apply, skip, None)
        metrics = {k: v / num_tokens for k, v in metrics.items() if k != "tokens"}
        metrics.update(loss=loss, grad_norm=grad_norm, skipped=~finite, tokens=num_tokens)
        return params, opt_state, metrics


def state_shardings(tx: optax.GradientTransformation, params) -> tuple[Any, Any]:
    """(parameter, optimizer state) shardings: each moment like its parameter, counters
    replicated. `params` may be arrays or ShapeDtypeStructs that carry a sharding.

    Explicit, because `jit(tx.init)` alone depends on no parameter value, so it would return
    the whole AdamW state on one device.
    """
    param_sh = jax.tree.map(lambda p: p.sharding, params)
    first = jax.tree.leaves(param_sh)[0]
    replicated = (
        NamedSharding(first.mesh, PartitionSpec()) if isinstance(first, NamedSharding) else first
    )
    opt_sh = optax.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        jax.eval_shape(tx.init, params),
        param_sh,
        transform_non_params=lambda _: replicated,
    )
    return param_sh, opt_sh


def jit_train_step(param_shardings, opt_shardings):
    """The train step as the Trainer runs it: (step, params, opt_state, batch) -> (params,
    opt_state, metrics), the `TrainStep` static, parameters and optimizer state donated and
    handed back at the shardings they came in (so donation always aliases).
    `swejax.memory_plan.compile_train_step` compiles this same function ahead of time."""
    return jax.jit(
        TrainStep.__call__,
        static_argnums=0,
        donate_argnums=(1, 2),
        out_shardings=(param_shardings, opt_shardings, None),
    )


class Trainer:
    """The optimizer state and the jitted, donating train step over a model's parameters.

    The model is updated in place (its parameters replaced after each step), so a generation
    engine built on the same model samples from the new weights with no copy.
    """

    def __init__(
        self,
        model,
        optimizer: OptimizerConfig,
        objective: str = "dapo",
        micro_batches: int = 1,
        eps_low: float = 0.2,
        eps_high: float = 0.28,
        mesh=None,
    ):
        self.model, self.mesh = model, mesh
        self.tx = make_optimizer(optimizer)
        self.graphdef, params = nnx.split(model)
        param_sh, opt_sh = state_shardings(self.tx, params)
        self.opt_state = jax.jit(self.tx.init, out_shardings=opt_sh)(params)
        self.step_count = 0
        self._step = jit_train_step(param_sh, opt_sh)
        self._program = TrainStep(
            self.graphdef, self.tx, objective, micro_batches, eps_low, eps_high
        )

    def _place(self, batch: dict) -> dict:
        """Batch fields as device arrays, rows split over the mesh's batch axes."""
        fields = {k: batch[k] for k in BATCH_FIELDS}
        if self.mesh is None:
            return fields
        return {
            k: jax.device_put(v, named_sharding(self.mesh, ("batch", "seq"), v.shape))
            for k, v in fields.items()
        }

    def step(self, batch: dict) -> dict:
        """Apply one optimizer step on `batch` (a dict of BATCH_FIELDS arrays [R, L], or a
        PackedBatch's fields); returns host floats of the metrics."""
        params = nnx.state(self.model)
        with activation_mesh(self.mesh):
            params, self.opt_state, metrics = self._step(
                self._program, params, self.opt_state, self._place(batch)
            )
        nnx.update(self.model, params)
        self.step_count += 1
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        metrics["skipped"] = bool(metrics["skipped"])
        return metrics
