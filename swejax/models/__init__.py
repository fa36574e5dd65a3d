"""Qwen2.5 in Flax NNX: configs and presets, building, sharding, and Hugging Face interop, with
the tables of what `ModelConfig.attention` and `ModelConfig.remat` can name."""

from swejax.models.attention_impls import ATTENTION_IMPLS, AttentionImpl, attention_impl
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
from swejax.models.hf_io import (
    ReadLog,
    copy_side_files,
    load_hf_checkpoint,
    save_hf_checkpoint,
)
from swejax.models.qwen2 import Qwen2
from swejax.models.remat import REMAT_POLICIES

__all__ = [
    "ATTENTION_IMPLS",
    "PRESETS",
    "ReadLog",
    "REMAT_POLICIES",
    "AttentionImpl",
    "ModelConfig",
    "Qwen2",
    "YarnScaling",
    "abstract_model",
    "attention_impl",
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
