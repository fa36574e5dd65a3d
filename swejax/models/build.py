"""Building models: abstract shapes, parameter shardings, sharded random init, parameter counts."""

from __future__ import annotations

import math
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, SingleDeviceSharding

from swejax.models.attention import check_attention
from swejax.models.config import ModelConfig, from_hf_config, preset, read_hf_config
from swejax.models.qwen2 import Qwen2
from swejax.sharding import named_sharding


def is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def abstract_model(cfg: ModelConfig, seed: int = 0) -> Qwen2:
    """The model with ShapeDtypeStructs in place of arrays: nothing is allocated."""
    return nnx.eval_shape(lambda: Qwen2(cfg, rngs=nnx.Rngs(seed)))


def param_shardings(model: nnx.Module, mesh: Mesh | None) -> nnx.State:
    """Sharding of every parameter (a State shaped like the model's) by the logical rules.

    Without a mesh, everything goes on the first device.
    """
    if mesh is None:
        device = SingleDeviceSharding(jax.devices()[0])
        return jax.tree.map(lambda _: device, nnx.state(model), is_leaf=is_variable)
    return jax.tree.map(
        lambda v: named_sharding(mesh, v.get_metadata()["axes"], v.shape),
        nnx.state(model),
        is_leaf=is_variable,
    )


def count_params(cfg: ModelConfig) -> int:
    state = nnx.state(abstract_model(cfg))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state))


def build_model(cfg: ModelConfig, mesh: Mesh | None = None, seed: int = 0) -> Qwen2:
    """A randomly initialised model, each weight created directly at its sharding on `mesh`."""
    check_attention(cfg)
    abstract = abstract_model(cfg, seed)
    graphdef, _ = nnx.split(abstract)
    out_shardings = None if mesh is None else param_shardings(abstract, mesh)

    @jax.jit
    def init() -> nnx.State:
        state = nnx.state(Qwen2(cfg, rngs=nnx.Rngs(seed)))
        if out_shardings is None:
            return state
        return jax.lax.with_sharding_constraint(state, out_shardings)

    return nnx.merge(graphdef, init())


def place_state(model: nnx.Module, mesh: Mesh | None) -> nnx.Module:
    """The same model with every parameter moved to its sharding on `mesh` (or left alone)."""
    if mesh is None:
        return model
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.device_put(state, param_shardings(model, mesh)))


def model_config_from(options: Any, check_backend: bool = True) -> ModelConfig:
    """ModelConfig from a run config's `model` section (`swejax.config.ModelOptions`): the
    checkpoint's config.json if it names one, else the preset, with the section's dtypes,
    remat policy and attention. With `check_backend`, an attention that cannot run on this
    backend raises here, before any weights load (the memory planner plans for another)."""
    runtime = {
        "dtype": options.dtype,
        "param_dtype": options.param_dtype,
        "remat": options.remat,
        "attention": options.attention,
    }
    if options.checkpoint:
        cfg = from_hf_config(read_hf_config(options.checkpoint), **runtime)
    else:
        cfg = preset(options.preset, **runtime)
    if check_backend:
        check_attention(cfg)
    return cfg
