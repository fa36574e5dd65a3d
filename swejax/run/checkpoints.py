"""Checkpoints: a model's weights in the swejax format, and a run's state as it trains.

- `save_checkpoint` / `load_checkpoint`: a model alone, as orbax arrays plus its config.json
  (what `python -m swejax.main convert` writes and reads), restored at any sharding.
- `RunCheckpoints`: a run's parameters, optimizer state and `Progress`, written asynchronously
  by orbax's CheckpointManager under runs/<name>/checkpoints, the latest restored on resume.
- `restore_params`: the latest parameters of a run, into a model (a new stage starting from
  the last one's weights, or `eval --run`).

Orbax writes each array from the processes that hold its shards and reads back only the
shards each process places, so a 72B model never sits on one host.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from swejax.errors import UserError
from swejax.models.build import abstract_model, is_variable, param_shardings
from swejax.models.config import from_hf_config, read_hf_config, to_hf_config
from swejax.models.qwen2 import Qwen2
from swejax.run._rows import Progress

_PARAMS = "params"


class CheckpointError(UserError):
    """A checkpoint that is missing or cannot be read as asked."""


# --- a model alone -------------------------------------------------------------------------
def save_checkpoint(model: Qwen2, directory: str) -> str:
    """Write the model's parameters (orbax, each host its own shards) and config.json."""
    directory = os.path.abspath(directory)
    params_dir = os.path.join(directory, _PARAMS)
    if os.path.exists(params_dir):
        raise FileExistsError(f"a checkpoint already exists at {params_dir!r}")
    if jax.process_index() == 0:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(to_hf_config(model.cfg, torch_dtype=model.cfg.param_dtype), f, indent=2)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(params_dir, nnx.to_pure_dict(nnx.state(model)))
    checkpointer.wait_until_finished()
    return directory


def load_checkpoint(
    directory: str, mesh: Mesh | None = None, dtype: str | None = None, **runtime
) -> Qwen2:
    """Restore a checkpoint written by `save_checkpoint`, placing each array at its sharding."""
    directory = os.path.abspath(directory)
    params_dir = os.path.join(directory, _PARAMS)
    if not os.path.isdir(params_dir):
        raise FileNotFoundError(f"no swejax checkpoint at {directory!r} (missing {_PARAMS}/)")
    hf = read_hf_config(directory)
    param_dtype = hf.get("torch_dtype", "float32")
    cfg = from_hf_config(hf, dtype=dtype or param_dtype, param_dtype=param_dtype, **runtime)
    abstract = abstract_model(cfg)
    graphdef, state = nnx.split(abstract)
    shardings = param_shardings(abstract, mesh)
    target = jax.tree.map(
        lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s),
        state,
        shardings,
        is_leaf=is_variable,
    )
    restored = ocp.StandardCheckpointer().restore(params_dir, nnx.to_pure_dict(target))
    nnx.replace_by_pure_dict(state, restored)
    return nnx.merge(graphdef, state)


# --- a run ---------------------------------------------------------------------------------


def _abstract_params(model: Qwen2):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(nnx.state(model)))


def _load_params(model: Qwen2, params) -> None:
    """Replace the model's parameters in place by a restored pure dict."""
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)


class RunCheckpoints:
    """A run's checkpoints: every save is asynchronous (the arrays are copied at once and
    written while the run goes on); `wait` blocks until the writes have landed."""

    def __init__(self, directory: str, keep: int):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True)
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def save(self, step: int, model: Qwen2, opt_state, progress: Progress) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(model))),
                opt_state=ocp.args.StandardSave(opt_state),
                progress=ocp.args.JsonSave(dataclasses.asdict(progress)),
            ),
        )

    def restore(self, model: Qwen2, opt_state) -> tuple[Progress, object, int] | None:
        """(progress, optimizer state, step) of the latest checkpoint, the model updated in
        place; None when there is none yet."""
        step = self._manager.latest_step()
        if step is None:
            return None
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(_abstract_params(model)),
                opt_state=ocp.args.StandardRestore(
                    jax.tree.map(ocp.utils.to_shape_dtype_struct, opt_state)
                ),
                progress=ocp.args.JsonRestore(),
            ),
        )
        _load_params(model, restored["params"])
        return Progress(**restored["progress"]), restored["opt_state"], step

    def wait(self) -> None:
        self._manager.wait_until_finished()


def restore_params(checkpoint_dir: str, model: Qwen2) -> int:
    """Load the latest parameters a run saved (runs/<name>/checkpoints) into `model`."""
    if not os.path.isdir(checkpoint_dir):
        raise CheckpointError(f"no checkpoint in {checkpoint_dir} (no such directory)")
    manager = ocp.CheckpointManager(os.path.abspath(checkpoint_dir))
    step = manager.latest_step()
    if step is None:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir}")
    restored = manager.restore(
        step, args=ocp.args.Composite(params=ocp.args.StandardRestore(_abstract_params(model)))
    )
    _load_params(model, restored["params"])
    return step
