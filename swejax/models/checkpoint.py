"""swejax model checkpoints: orbax arrays plus the model's config.json, restored at any sharding."""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from swejax.models.build import abstract_model, is_variable, param_shardings
from swejax.models.config import from_hf_config, read_hf_config, to_hf_config
from swejax.models.qwen2 import Qwen2

_PARAMS = "params"


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
