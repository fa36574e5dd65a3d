"""The run configuration: typed sections, config files and `--config.a.b=value` overrides.

    config = load_config("configs/qwen25_72b_stage1.py", ["mesh.fsdp=16"])   # a Config
    config.engine.num_slots, config.dapo.eps_high, config.row_length

A config file is a Python file whose `get_config()` returns an `ml_collections.ConfigDict`,
started from `base_config()` (every section at its defaults) or `default_config()` (the demo,
which runs without --config) and changed in place. The sections in `_sections.py` are the one
place where a key and its default live.
"""

from swejax.config._schema import (
    MOVED_KEYS,
    ConfigError,
    apply_overrides,
    base_config,
    config_to_json,
    default_config,
    from_config_dict,
    load_config,
    to_config_dict,
    to_dict,
)
from swejax.config._sections import (
    Config,
    DapoConfig,
    DistributedConfig,
    EngineConfig,
    EvalConfig,
    MeshConfig,
    ModelOptions,
    OptimizerConfig,
    RftConfig,
    RolloutConfig,
    ScaffoldConfig,
    TasksConfig,
    TrainConfig,
)

__all__ = [
    "MOVED_KEYS",
    "Config",
    "ConfigError",
    "DapoConfig",
    "EngineConfig",
    "EvalConfig",
    "DistributedConfig",
    "MeshConfig",
    "ModelOptions",
    "OptimizerConfig",
    "RftConfig",
    "RolloutConfig",
    "ScaffoldConfig",
    "TasksConfig",
    "TrainConfig",
    "apply_overrides",
    "base_config",
    "config_to_json",
    "default_config",
    "from_config_dict",
    "load_config",
    "to_config_dict",
    "to_dict",
]
