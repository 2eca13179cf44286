"""Recipes: YAML files mapped onto typed dataclasses, with ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from ssl_ecg.errors import ConfigError

__all__ = ["load_recipe", "parse_overrides"]

T = TypeVar("T")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["epochs=3", "seeds=[0,1]"]`` -> ``{"epochs": 3, "seeds": [0, 1]}`` (values parsed as YAML)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_recipe(cls: type[T], path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
                defaults: dict[str, Any] | None = None) -> T:
    """Build dataclass ``cls`` from ``defaults``, then a YAML file, then overrides; unknown keys are an error."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: recipe not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(values).__name__}")
    values = {**(defaults or {}), **values, **(overrides or {})}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{path or 'overrides'}: unknown keys {unknown}; expected some of {sorted(fields)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or 'overrides'}: {exc}") from exc
