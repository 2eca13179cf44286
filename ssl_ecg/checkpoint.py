"""Saving and loading encoders as weights + JSON config (no pickle, no Lightning)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_ecg.errors import ConfigError
from ssl_ecg.models.registry import build_encoder

__all__ = ["save_encoder", "load_encoder"]


def save_encoder(encoder: nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``path`` (state dict, ``.pt``) and ``path`` with ``.json`` (config).

    The encoder must carry a ``config`` dict understood by
    :func:`ssl_ecg.models.build_encoder`.
    """
    path = Path(path).with_suffix(".pt")
    config = getattr(encoder, "config", None)
    if not isinstance(config, dict):
        raise ConfigError(f"encoder {type(encoder).__name__}: has no config dict to save")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in encoder.state_dict().items()}, path)
    meta = {"encoder": config, **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str))
    return path


def load_encoder(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load an encoder saved by :func:`save_encoder`, ready in eval mode.

    Weights load with ``torch.load(..., weights_only=True)``, so a shared
    checkpoint cannot run code.

    Args:
        path: the ``.pt`` file, or a run folder holding ``encoder.pt``.
        map_location: device for the weights.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "encoder.pt"
    config_path = path.with_suffix(".json")
    if not path.is_file():
        raise ConfigError(f"{path}: encoder weights not found")
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: encoder config not found (expected beside {path.name})")
    try:
        meta = json.loads(config_path.read_text())
        config = meta["encoder"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{config_path}: expected JSON with an 'encoder' config ({exc})") from exc
    encoder = build_encoder(config)
    state = torch.load(path, map_location=map_location, weights_only=True)
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: weights do not match the config in {config_path.name}: {exc}") from exc
    return encoder.eval()
