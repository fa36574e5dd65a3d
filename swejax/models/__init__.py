"""Qwen2.5 in Flax NNX: configs and presets, building, sharding, and Hugging Face interop."""

from swejax.models.build import (
    abstract_model,
    build_model,
    count_params,
    model_config_from,
    param_shardings,
    place_state,
)
from swejax.models.config import (
    PRESETS,
    ModelConfig,
    YarnScaling,
    from_hf_config,
    preset,
    to_hf_config,
)
from swejax.models.hf_io import copy_side_files, load_hf_checkpoint, save_hf_checkpoint
from swejax.models.qwen2 import Qwen2

__all__ = [
    "PRESETS",
    "ModelConfig",
    "Qwen2",
    "YarnScaling",
    "abstract_model",
    "build_model",
    "copy_side_files",
    "count_params",
    "from_hf_config",
    "load_hf_checkpoint",
    "model_config_from",
    "param_shardings",
    "place_state",
    "preset",
    "save_hf_checkpoint",
    "to_hf_config",
]
