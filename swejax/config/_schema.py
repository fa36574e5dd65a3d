"""Config files, `--config.a.b=value` overrides, and the typed `Config` they resolve to.

The typed sections (`swejax.config._sections`) are the schema: `to_config_dict` turns a `Config`
into an `ml_collections.ConfigDict` with the same keys, which is what a config file's
`get_config()` edits, and `from_config_dict` turns it back, each section checking its values.
A key the schema lacks, a value of the wrong type, or a value a section refuses is a
`ConfigError` with a one-line message, never a silently ignored setting.

Some keys moved to the section of the stage that uses them (`rollout.slots` is
`engine.num_slots`); `MOVED_KEYS` keeps the old names working as aliases of the new ones, in
config files and on the command line alike.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import importlib.util
import json
import os
import typing
from collections.abc import Sequence
from typing import Any

import ml_collections

from swejax.config._sections import Config
from swejax.errors import UserError

# old key -> the key it moved to. Both names read and write the same value.
MOVED_KEYS: dict[str, str] = {
    "rollout.slots": "engine.num_slots",
    "rollout.capacity": "engine.capacity",
    "rollout.page_size": "engine.page_size",
    "rollout.num_pages": "engine.num_pages",
    "rollout.steps_per_call": "engine.steps_per_call",
    "train.grad_clip": "optimizer.grad_clip",
}

_TRUE_WORDS = ("true", "1")
_FALSE_WORDS = ("false", "0")


class ConfigError(UserError):
    """A config that cannot be used as given; the message is one line meant for the user."""


# --- typed <-> ConfigDict ------------------------------------------------------------------


def is_key(field: dataclasses.Field) -> bool:
    """Whether a dataclass field is a config key (some are filled in by the builder)."""
    return field.metadata.get("config_key", True)


def _keys(section) -> dict[str, Any]:
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if is_key(f)}


def to_dict(config: Config) -> dict[str, Any]:
    """Every key of `config` as nested plain dicts (no aliases)."""
    return {
        name: _keys(value) if dataclasses.is_dataclass(value) else value
        for name, value in _keys(config).items()
    }


def to_config_dict(config: Config) -> ml_collections.ConfigDict:
    """`config` as the ConfigDict a config file edits, with the moved keys as aliases."""
    tree = ml_collections.ConfigDict(to_dict(config))
    for old, new in MOVED_KEYS.items():
        old_section, old_leaf = old.split(".")
        new_section, new_leaf = new.split(".")
        tree[old_section][old_leaf] = tree[new_section].get_ref(new_leaf)
    return tree


def from_config_dict(tree: ml_collections.ConfigDict) -> Config:
    """The typed `Config` of a ConfigDict (checked against the schema first, by the caller)."""
    hints = typing.get_type_hints(Config)
    values = {}
    for field in dataclasses.fields(Config):
        if dataclasses.is_dataclass(hints[field.name]):
            section = hints[field.name]
            fields = {f.name: f for f in dataclasses.fields(section) if is_key(f)}
            kwargs = {k: _as_field_type(v, section, k) for k, v in tree[field.name].items()}
            values[field.name] = _build(section, {k: v for k, v in kwargs.items() if k in fields})
        else:
            values[field.name] = tree[field.name]
    return _build(Config, values)


def _as_field_type(value: Any, section: type, name: str) -> Any:
    default = next((f.default for f in dataclasses.fields(section) if f.name == name), None)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def _build(cls: type, kwargs: dict[str, Any]):
    try:
        return cls(**kwargs)
    except ValueError as error:  # a section refusing a value: name it in one line
        raise ConfigError(" ".join(str(error).split())) from error


def base_config() -> ml_collections.ConfigDict:
    """Every section at its defaults (the paper's values where it gives one), as a ConfigDict:
    where a config file for a real run starts."""
    return to_config_dict(Config())


def default_config() -> ml_collections.ConfigDict:
    """The embedded default: the demo (`swejax.config.demo`), which `python -m swejax.main`
    runs without --config."""
    from swejax.config.demo import get_config

    return get_config()


def load_config(path: str | None, overrides: Sequence[str] = ()) -> Config:
    """The config from `path` (None = the embedded default) with `a.b.c=value` overrides."""
    tree = default_config() if path is None else _config_from_file(path)
    return from_config_dict(apply_overrides(tree, overrides))


def config_to_json(config: Config) -> str:
    """The resolved config as indented JSON with sorted keys (tuples become lists)."""
    return json.dumps(to_dict(config), indent=2, sort_keys=True)


# --- overrides and files ------------------------------------------------------------------


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
            "expected an ml_collections.ConfigDict (start from swejax.config.base_config())"
        )
    _check_against_schema(config, base_config(), path, prefix="")
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
            "(start get_config() from swejax.config.base_config())"
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


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
