"""YAML run configurations: ``base:`` inheritance, ``--set`` overrides, type checks.

A config is a nested dict read from YAML. Every key an override or a derived config
sets must already exist in its base (a typo is an error, not a silent new key), and
its value must have the base value's kind: a number for a number (YAML writes a float
weight of 0 as the int 0), a bool for a bool, a string for a string, a list for a
list; a ``null`` key takes anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration error; the message names the key (``section.key``) or the file."""


def _type_ok(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, int | float):  # YAML writes a float weight of 0 as the int 0
        return isinstance(new, int | float)
    if isinstance(old, list | tuple):
        return isinstance(new, list | tuple)
    return isinstance(new, type(old))


def merge(base: dict, update: dict, prefix: str = "") -> dict:
    """Recursive merge of ``update`` into a copy of ``base``.

    Args:
        base: the config to start from.
        update: keys to change; each must exist in ``base`` with a value of the same
            kind (see the module docstring).
        prefix: dotted path of ``base`` in the whole config, for error messages.
    Returns:
        The merged dict (``base`` is not modified).
    Raises:
        ConfigError: on an unknown key or a value of the wrong type, naming the key.
    """
    out = dict(base)
    for key, value in update.items():
        name = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"unknown config key {name!r} (known: {sorted(base)})")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{name} is a section; got {value!r}")
            out[key] = merge(base[key], value, f"{name}.")
        elif not _type_ok(base[key], value):
            raise ConfigError(
                f"{name} must be of type {type(base[key]).__name__} "
                f"(like {base[key]!r}), got {value!r}"
            )
        else:
            out[key] = value
    return out


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(cfg).__name__}")
    if "base" in cfg:
        cfg = merge(load_config(path.parent / cfg.pop("base")), cfg)
    return cfg


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Read a YAML config and apply ``section.key=value`` overrides.

    A config may start from another with ``base: other.yaml`` (relative to it) and
    change only what differs. Override values are parsed as YAML (``3``, ``0.5``,
    ``[1.0, 1.5]``, ``null``, ``true``).

    Args:
        path: the YAML file.
        overrides: ``"section.key=value"`` strings, applied in order.
    Returns:
        The resolved config dict.
    Raises:
        ConfigError: if the file is missing or not a mapping, an override is not
            ``key=value``, or names an unknown key or a value of the wrong type.
    """
    return merge(_read(Path(path)), parse_overrides(overrides))


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """``"section.key=value"`` strings → a nested dict to :func:`merge` into a config
    (values parsed as YAML; a later string wins over an earlier one for the same key).

    Raises:
        ConfigError: if an item is not ``key=value``.
    """
    update: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        key, text = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = update
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(text)
    return update

