"""The train step and the Trainer: one optimizer step over packed rows, jitted with the
parameters and optimizer state donated, and the state it carries between steps.

A batch is `rows` packed rows split into `micro_batches` micro-batches of `rows //
micro_batches` rows, run one after another under `lax.scan` with their gradients summed
(`swejax.train._loss`). A non-finite loss or gradient leaves parameters and optimizer state as
they were and is reported in the metrics (`skipped`), never applied.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from swejax.sharding import activation_mesh, named_sharding
from swejax.train._loss import BATCH_FIELDS, Objective, accumulated_gradients


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """One optimizer step: its static configuration, and the step itself (calling it).

    Frozen and hashable, so `jax.jit` takes it as one static argument (`jit_train_step`): an
    equal step reuses the compiled program.
    """

    graphdef: nnx.GraphDef
    tx: optax.GradientTransformation
    objective: Objective
    micro_batches: int = 1

    def __call__(self, params, opt_state, batch: dict) -> tuple[Any, Any, dict]:
        """(params, opt_state, metrics) after one optimizer step over `batch` (rows [R, L]);
        see the module docstring."""
        grads, loss, metrics, num_tokens = accumulated_gradients(
            self.graphdef, self.objective, self.micro_batches, params, batch
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
    `swejax.memory_plan.compile_train_step` compiles this same function ahead of time.

    One jitted function per layout, shared by every Trainer with that layout: jit caches its
    compiled programs per function object, so a new Trainer (the next phase's) reuses the
    step an earlier one compiled when the step is equal (same model, optimizer, objective)."""
    key = tuple(
        (jax.tree.structure(tree), tuple(jax.tree.leaves(tree)))
        for tree in (param_shardings, opt_shardings)
    )
    if key not in _JITTED_STEPS:
        _JITTED_STEPS[key] = jax.jit(
            TrainStep.__call__,
            static_argnums=0,
            donate_argnums=(1, 2),
            out_shardings=(param_shardings, opt_shardings, None),
        )
    return _JITTED_STEPS[key]


_JITTED_STEPS: dict = {}


def global_rows(mesh, local: np.ndarray):
    """A batch field [R, L] as a device array, rows split over the mesh's batch axes. With many
    processes `local` is this process's rows, and the global batch holds P x R rows, process
    p's being block p (each process feeds the batch shards on its own devices)."""
    if mesh is None:
        return local
    count = jax.process_count()
    shape = (local.shape[0] * count, *local.shape[1:])
    sharding = named_sharding(mesh, ("batch", "seq"), shape)
    if count == 1:
        return jax.device_put(local, sharding)
    return jax.make_array_from_process_local_data(sharding, local, shape)


def local_rows(array) -> np.ndarray:
    """This process's rows of a row-split device array (all of them with one process): the
    inverse of `global_rows`."""
    if jax.process_count() == 1:
        return np.asarray(array)
    shards = array.addressable_shards
    first = min(s.index[0].start or 0 for s in shards)
    last = max(array.shape[0] if s.index[0].stop is None else s.index[0].stop for s in shards)
    out = np.zeros((last - first, *array.shape[1:]), array.dtype)
    for shard in shards:
        rows = shard.index[0]
        start, stop = rows.start or 0, array.shape[0] if rows.stop is None else rows.stop
        out[(slice(start - first, stop - first), *shard.index[1:])] = np.asarray(shard.data)
    return out


class Trainer:
    """The optimizer state and the jitted, donating train step over a model's parameters.

    The model is updated in place (its parameters replaced after each step), so a generation
    engine built on the same model samples from the new weights with no copy.
    """

    def __init__(
        self,
        model,
        tx: optax.GradientTransformation,
        objective: Objective,
        micro_batches: int = 1,
        mesh=None,
    ):
        self.model, self.mesh, self.tx = model, mesh, tx
        self.graphdef, params = nnx.split(model)
        param_sh, opt_sh = state_shardings(self.tx, params)
        self.opt_state = jax.jit(self.tx.init, out_shardings=opt_sh)(params)
        self.step_count = 0
        self._step = jit_train_step(param_sh, opt_sh)
        self._program = TrainStep(self.graphdef, self.tx, objective, micro_batches)

    def _place(self, batch: dict) -> dict:
        """Batch fields as device arrays, rows split over the mesh's batch axes (this process's
        rows of them, with many processes)."""
        return {k: global_rows(self.mesh, batch[k]) for k in BATCH_FIELDS}

    def step(self, batch: dict) -> dict:
        """Apply one optimizer step on `batch` (a dict of BATCH_FIELDS arrays [R, L], or a
        PackedBatch's fields; with many processes, this process's R rows of the global batch,
        as many on each); returns host floats of the metrics. Collective."""
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
