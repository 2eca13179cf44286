"""Build encoders from config dicts (the config saved beside every checkpoint)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ssl_ecg.errors import ConfigError
from ssl_ecg.models.clocs import ClocsEncoder
from ssl_ecg.models.inverted_residual import MobileNetV2_1d
from ssl_ecg.models.mobilenet import MobileNet1d
from ssl_ecg.models.resnet1d import ResNet1d
from ssl_ecg.models.transformer import PatchTransformer1d

__all__ = ["build_encoder", "ENCODERS"]

ENCODERS = {"clocs": ClocsEncoder, "resnet1d": ResNet1d, "transformer": PatchTransformer1d,
            "mobilenet1d": MobileNet1d, "mobilenetv2_1d": MobileNetV2_1d}


def build_encoder(config: dict[str, Any]) -> nn.Module:
    """Build an encoder from ``{"name": ..., **kwargs}``."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in ENCODERS:
        raise ConfigError(f"encoder config: name {name!r} is unknown; expected one of {sorted(ENCODERS)}")
    try:
        return ENCODERS[name](**config)
    except TypeError as exc:
        raise ConfigError(f"encoder config for {name!r}: {exc}") from exc
