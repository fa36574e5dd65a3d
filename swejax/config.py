"""The run configuration: one embedded default that holds the whole schema, config files, overrides.

A config file is a Python file whose `get_config()` starts from `default_config()` and changes
values; command-line overrides (`--config.a.b=value`) then change single fields. The default fixes
every key and its type, so a misspelt key or a value of the wrong type is an error, never a
silently ignored setting. Every such error is a `ConfigError` with a one-line message.
"""

from __future__ import annotations

import ast
import copy
import difflib
import importlib.util
import json
import os
from collections.abc import Sequence
from typing import Any

import ml_collections

# String fields that accept only a few values, by dotted key. Fields whose names are owned by
# another module (remat policies, attention kernels) are checked there, where the names live.
_CHOICES: dict[str, tuple[str, ...]] = {
    "model.dtype": ("float32", "bfloat16"),
    "model.param_dtype": ("float32", "bfloat16"),
    "tasks.runtime": ("bwrap", "docker"),
    "dapo.pi_old": ("sampler", "recompute"),
}

_TRUE_WORDS = ("true", "1")
_FALSE_WORDS = ("false", "0")


class ConfigError(ValueError):
    """A config that cannot be used as given; the message is one line meant for the user."""


def default_config() -> ml_collections.ConfigDict:
    """The embedded default: the demo. A tiny model on whatever devices are present (a CPU is
    enough) learns four built-in tasks: RFT from gold demonstrations, then DAPO iterations.
    Values that differ from the paper's say so; configs/qwen25_72b_*.py hold the paper's."""
    config = ml_collections.ConfigDict()
    config.name = "tiny"  # the run writes runs/<name>/
    config.seed = 0
    config.run_dir = "runs"
    config.tokenizer = ""  # tokenizer directory; "" = the built-in one

    config.model = ml_collections.ConfigDict()
    config.model.preset = "tiny"  # "tiny", "qwen2.5-0.5b", ..., "qwen2.5-72b"
    config.model.checkpoint = ""  # Hugging Face directory; its config.json wins over the preset
    config.model.dtype = "float32"  # compute dtype
    config.model.param_dtype = "float32"
    config.model.remat = "none"  # remat policy by name
    config.model.attention = "reference"

    # -1 on one axis = all devices the other axes leave over.
    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = 1
    config.mesh.fsdp = -1
    config.mesh.tensor = 1
    config.mesh.context = 1

    # Tasks: "builtin", a JSONL file of SWE-bench records, or "hf:NAME:SPLIT".
    config.tasks = ml_collections.ConfigDict()
    config.tasks.source = "builtin"
    # The demo learns four small built-in tasks (a tiny model cannot learn all twenty in minutes).
    config.tasks.train = (
        "swejax__b_mdtable_empty,swejax__b_paginator,"
        "swejax__a_median_even_length,swejax__b_roman_repeat"
    )  # comma-separated instance ids; "" = every task not held out
    config.tasks.eval = ""  # held-out instance ids for evaluation; "" = the training tasks
    config.tasks.runtime = "bwrap"  # sandbox runtime: bwrap or docker
    # A finished run (runs/<name>) whose DAPO attempts curate the training tasks, as between
    # the paper's stages: drop those solved in at least 2/3 of attempts and those never solved.
    config.tasks.curate_from = ""

    config.scaffold = ml_collections.ConfigDict()
    config.scaffold.max_turns = 4  # T_max (the paper: 40, then 80)
    config.scaffold.window = 8  # lines shown by open / goto / scroll (SWE-agent: 100)
    config.scaffold.max_observation_chars = 10_000
    config.scaffold.command_timeout = 120.0
    config.scaffold.prompts = "compact"  # "" (the full prompts), "compact", or a folder

    config.rollout = ml_collections.ConfigDict()
    config.rollout.slots = 8  # episodes decoding at once
    config.rollout.capacity = 1024  # tokens per trajectory (the context; paper: 65k, 131k)
    config.rollout.page_size = 64
    config.rollout.num_pages = 0  # KV pages in the pool; 0: every slot at full capacity
    config.rollout.max_reply_tokens = 160
    config.rollout.steps_per_call = 32
    config.rollout.workers = 8  # threads stepping sandboxes and grading
    config.rollout.temperature = 1.0  # RL rollouts sample the policy as it is: no filters

    # Phase 1: rejection fine-tuning. source: "" (skip), "demonstrations" (gold patches through
    # the scaffold), "policy" (the model's own successful rollouts), or a trajectories JSONL.
    config.rft = ml_collections.ConfigDict()
    config.rft.source = "demonstrations"
    config.rft.attempts = 10  # rollouts per task when the source is the policy
    config.rft.epochs = 200  # the paper: 1 (over 6,548 trajectories)
    config.rft.batch_size = 4  # trajectories per optimizer step (paper: 64)
    config.rft.learning_rate = 1e-2  # paper: 5e-6
    config.rft.warmup_steps = 5  # paper: 10
    config.rft.weight_decay = 0.0  # paper: 0.1
    config.rft.mask_format_errors = True

    # Phase 2: multi-turn DAPO.
    config.dapo = ml_collections.ConfigDict()
    config.dapo.iterations = 6
    config.dapo.tasks_per_iteration = 4  # paper: 300, then 100
    config.dapo.group_size = 4  # G rollouts per task (paper: 10)
    config.dapo.batch_size = 8  # trajectories per optimizer step (paper: 128, then 256)
    config.dapo.eps_low = 0.2
    config.dapo.eps_high = 0.3  # paper: 0.3, then 0.26
    config.dapo.learning_rate = 1e-4  # paper: 1e-6 (1e-3 undoes the tiny model's RFT)
    config.dapo.weight_decay = 0.0  # paper: 0.1
    config.dapo.l_thr = 3  # length penalty threshold in turns (paper: 10)
    config.dapo.pi_old = "sampler"  # "sampler" logprobs or "recompute" with a forward pass

    # Both phases.
    config.train = ml_collections.ConfigDict()
    config.train.row_length = 0  # tokens per packed row; 0: rollout.capacity
    config.train.micro_batches = 1  # gradient accumulation steps per optimizer step
    config.train.grad_clip = 1.0
    config.train.checkpoint_keep = 2
    # A run directory whose last parameters a new run starts from (stage 2 from stage 1);
    # ignored once this run has a checkpoint of its own.
    config.train.init_from = ""

    config.eval = ml_collections.ConfigDict()
    config.eval.every = 0  # iterations between evaluations; 0: only before and after
    config.eval.runs = 4  # k runs per task: Pass@1 is their mean, Pass@k the unbiased estimate
    config.eval.temperature = 1.0
    return config


def load_config(path: str | None, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The config from `path` (None = the default) with `a.b.c=value` overrides applied, checked.

    The result is locked: reading or setting a key the schema lacks raises instead of adding it.
    """
    config = default_config() if path is None else _config_from_file(path)
    config = apply_overrides(config, overrides)
    _check_choices(config)
    config.lock()
    return config


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """A copy of `config` with each `a.b.c=value` applied in order; values parse by field type."""
    config = copy.deepcopy(config)  # the caller's config is left alone
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator or not key:
            raise ConfigError(f"override {override!r} is not of the form a.b.c=value")
        parent, leaf = _walk_to_parent(config, key)
        current = parent[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise ConfigError(
                f"config key {key!r} is a section, not a value; "
                f"set one of its keys: {', '.join(sorted(current.keys()))}"
            )
        parent[leaf] = _parse_like(current, text, key)
    return config


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """The resolved config as indented JSON with sorted keys (tuples become lists)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def _config_from_file(path: str) -> ml_collections.ConfigDict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location("_swejax_config_file", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"config file {path} cannot be loaded as Python (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's file: report it by name, keep the cause chained
        raise ConfigError(f"config file {path} failed to run: {_one_line(error)}") from error
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"config file {path} does not define get_config()")
    try:
        config = get_config()
    except Exception as error:
        raise ConfigError(f"config file {path}: get_config() raised {_one_line(error)}") from error
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"config file {path}: get_config() returned {type(config).__name__}, "
            "expected an ml_collections.ConfigDict (start from swejax.config.default_config())"
        )
    _check_against_schema(config, default_config(), path, prefix="")
    return config


def _check_against_schema(
    config: ml_collections.ConfigDict,
    schema: ml_collections.ConfigDict,
    path: str,
    prefix: str,
) -> None:
    """Every key of `config` exists in `schema` with a compatible type, and none is missing."""
    for key in config:
        dotted = prefix + key
        if key not in schema:
            raise ConfigError(f"config file {path} sets {_unknown_key_message(dotted, schema)}")
        value, expected = config[key], schema[key]
        if isinstance(expected, ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict):
                raise ConfigError(
                    f"config file {path} sets section {dotted!r} to a {type(value).__name__}"
                )
            _check_against_schema(value, expected, path, prefix=dotted + ".")
        elif not _same_kind(value, expected):
            raise ConfigError(
                f"config file {path} sets {dotted!r} to {value!r}; "
                f"expected {type(expected).__name__}"
            )
    missing = [prefix + key for key in schema if key not in config]
    if missing:
        raise ConfigError(
            f"config file {path} lacks {', '.join(missing)} "
            "(start get_config() from swejax.config.default_config())"
        )


def _same_kind(value: Any, expected: Any) -> bool:
    # bool is an int to Python but never a sensible int or float setting, and vice versa.
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(expected, bool)
    if isinstance(expected, float):
        return isinstance(value, (int, float))
    if isinstance(expected, (tuple, list)):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(expected))


def _walk_to_parent(
    config: ml_collections.ConfigDict, key: str
) -> tuple[ml_collections.ConfigDict, str]:
    """The section holding the last part of dotted `key`, and that last part."""
    parts = key.split(".")
    section = config
    for depth, part in enumerate(parts):
        if part not in section:
            raise ConfigError(_unknown_key_message(".".join(parts[: depth + 1]), section))
        if depth == len(parts) - 1:
            return section, part
        section = section[part]
        if not isinstance(section, ml_collections.ConfigDict):
            raise ConfigError(
                f"config key {'.'.join(parts[: depth + 1])!r} is a value, not a section; "
                f"{key!r} does not exist"
            )
    raise AssertionError("unreachable: the loop returns on its last part")


def _unknown_key_message(dotted: str, section: ml_collections.ConfigDict) -> str:
    leaf = dotted.rpartition(".")[2]
    valid = sorted(section.keys())
    close = difflib.get_close_matches(leaf, valid, n=1)
    where = f"under {dotted.rpartition('.')[0]!r}" if "." in dotted else "at the top level"
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown config key {dotted!r}; {hint}valid keys {where}: {', '.join(valid)}"


def _parse_like(current: Any, text: str, key: str) -> Any:
    """`text` parsed as the type of the field's current value."""

    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"config key {key!r} expects {expected}, got {text!r}")

    if isinstance(current, bool):
        word = text.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise wrong("a bool (true/false/1/0)")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise wrong("an int") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise wrong("a float") from None
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise wrong(f"a {type(current).__name__} literal such as (1, 2)") from None
        if not isinstance(value, (tuple, list)):
            raise wrong(f"a {type(current).__name__} literal such as (1, 2)")
        return type(current)(value)
    raise ConfigError(
        f"config key {key!r} holds a {type(current).__name__}, which cannot be set from the "
        "command line"
    )


def _check_choices(config: ml_collections.ConfigDict) -> None:
    for dotted, allowed in _CHOICES.items():
        section, leaf = _walk_to_parent(config, dotted)
        if section[leaf] not in allowed:
            raise ConfigError(
                f"config key {dotted!r} must be one of {', '.join(allowed)}, got {section[leaf]!r}"
            )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
