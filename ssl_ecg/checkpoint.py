"""Saving and loading encoders as weights + JSON config (no pickle, no Lightning)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_ecg.errors import ConfigError, DatasetError
from ssl_ecg.models.registry import build_encoder

__all__ = ["save_encoder", "load_encoder", "load_provenance", "PROVENANCE_VERSION", "SAFETENSORS_FILE",
           "MODEL_CARD_FILE"]

#: Version of the ``provenance`` block in ``encoder.json`` (bumped when its meaning changes).
PROVENANCE_VERSION = 1
#: Keys of the provenance block that hold lists of strings.
_PROVENANCE_LISTS = ("datasets", "cache_keys", "pool_patients", "pool_fingerprints", "label_patients")
#: The safetensors form of an encoder (``ssl_ecg.deploy.export_safetensors``): weights with the config in the header,
#: and the model card beside them.
SAFETENSORS_FILE = "encoder.safetensors"
MODEL_CARD_FILE = "model_card.json"


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
        path: the ``.pt`` file, or a run folder holding ``encoder.pt``; or the safetensors form (an
            ``encoder.safetensors`` file, or a folder holding it and ``model_card.json``).
        map_location: device for the weights.
    """
    path = Path(path)
    if path.is_dir() and not (path / "encoder.pt").is_file() and (path / SAFETENSORS_FILE).is_file():
        if not (path / MODEL_CARD_FILE).is_file():
            raise ConfigError(f"{path / MODEL_CARD_FILE}: model card not found (expected beside {SAFETENSORS_FILE})")
        path = path / SAFETENSORS_FILE
    if path.suffix == ".safetensors":
        return _load_safetensors(path, map_location)
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
        if not isinstance(config, dict):
            raise TypeError(f"'encoder' is a {type(config).__name__}, not a mapping")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{config_path}: expected JSON with an 'encoder' config ({exc})") from exc
    try:
        encoder = build_encoder(config)
    except (ValueError, RuntimeError) as exc:  # e.g. a negative or huge size in the config
        raise ConfigError(f"{config_path}: encoder config {config} cannot be built ({exc})") from None
    try:  # weights_only: a pickle that would run code (or any non-tensor object) is refused, never executed
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (not a zip), EOFError: torch raises many types
        raise ConfigError(f"{path}: not a weights-only PyTorch state dict ({type(exc).__name__}); expected the "
                          "encoder.pt written by ssl-ecg (files that would run code are refused)") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: holds a {type(state).__name__}; expected a state dict (name -> tensor)")
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: weights do not match the config in {config_path.name}: {exc}") from exc
    return encoder.eval()


def _load_safetensors(path: Path, map_location: str | torch.device) -> nn.Module:
    """An encoder from ``encoder.safetensors`` (config in its header; a ``model_card.json`` beside it must agree)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ConfigError(f"{path}: encoder weights not found")
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            config = json.loads((f.metadata() or {})["encoder"])
            state = {k: f.get_tensor(k) for k in f.keys()}
        if not isinstance(config, dict):
            raise TypeError(f"'encoder' is a {type(config).__name__}, not a mapping")
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: expected safetensors weights with an 'encoder' config in the header, as "
                          f"ssl-ecg export writes ({type(exc).__name__}: {exc})") from None
    card_path = path.with_name(MODEL_CARD_FILE)
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{card_path}: expected a JSON model card ({exc})") from None
        if not isinstance(card, dict) or card.get("encoder") != config:
            raise ConfigError(f"{card_path}: its 'encoder' config differs from the one in {path.name}; expected the "
                              "card written with these weights")
    try:
        encoder = build_encoder(config)
        encoder.load_state_dict(state)
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"{path}: weights do not fit the encoder config {config} ({exc})") from None
    return encoder.to(map_location).eval()


def _config_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        return path / "encoder.json"
    return path if path.suffix == ".json" else path.with_suffix(".json")


def load_provenance(path: str | os.PathLike) -> dict | None:
    """The pretraining provenance stored in an encoder's ``encoder.json``, or None when it has none.

    The block (written by :func:`ssl_ecg.pretrain.run_pretrain`) is::

        {"version": 1, "datasets": [...], "cache_keys": [...],
         "pool_patients": ["ludb:1", ...],      # patient keys whose records it trained or validated on
         "pool_fingerprints": ["ab12...", ...],  # signal fingerprints of those records
         "label_patients": [...],                # patients whose labels pretraining used ([] for none)
         "split": {...}}                         # the full split (Split.to_dict(): patients, rule, cache_key, hash)

    Encoders without it (third-party weights, checkpoints written before
    provenance existed) give None; the caller decides whether to accept them.

    Args:
        path: the ``encoder.pt`` file, its ``encoder.json``, or the run folder holding them.

    Returns:
        The block as stored (plain JSON values; the split is checked against its hash), or None.

    Raises:
        ConfigError: the JSON file is missing or not a JSON object, or the block was
            written by a newer provenance version.
        DatasetError: the block is malformed (a key missing or of the wrong type, a
            split whose hash does not match); the message names the file and the key.
    """
    config_path = _config_path(path)
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: encoder config not found (expected encoder.json beside encoder.pt)")
    try:
        meta = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{config_path}: expected a JSON encoder config ({exc})") from exc
    if not isinstance(meta, dict):
        raise ConfigError(f"{config_path}: expected a JSON object, got {type(meta).__name__}")
    if "provenance" not in meta or meta["provenance"] is None:
        return None
    prov = meta["provenance"]
    where = f"{config_path}: provenance"
    if not isinstance(prov, dict):
        raise DatasetError(f"{where}: expected an object, got {type(prov).__name__}")
    version = prov.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DatasetError(f"{where}.version: expected a positive integer, got {version!r}")
    if version > PROVENANCE_VERSION:
        raise ConfigError(f"{where}.version: {version} was written by a newer ssl-ecg (this one reads up to "
                          f"{PROVENANCE_VERSION}); upgrade ssl-ecg")
    for key in _PROVENANCE_LISTS:
        value = prov.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            found = "missing" if key not in prov else f"{type(value).__name__} {str(value)[:60]}"
            raise DatasetError(f"{where}.{key}: expected a list of strings, got {found}")
    if not prov["pool_patients"]:
        raise DatasetError(f"{where}.pool_patients: expected the patients pretraining saw, got an empty list")
    split = prov.get("split")
    if not isinstance(split, dict):
        raise DatasetError(f"{where}.split: expected the split object (patients, rule, cache_key, hash), "
                           f"got {type(split).__name__ if 'split' in prov else 'missing'}")
    from ssl_ecg.data.prepare import Split  # lazy: the data layer is not needed to load weights

    Split.from_dict(split, source=f"{where}.split")  # checks the patients against the stored hash
    return prov
