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
}

_TRUE_WORDS = ("true", "1")
_FALSE_WORDS = ("false", "0")


class ConfigError(ValueError):
    """A config that cannot be used as given; the message is one line meant for the user."""


def default_config() -> ml_collections.ConfigDict:
    """The embedded default: a tiny model on whatever devices are present (a CPU is enough)."""
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
