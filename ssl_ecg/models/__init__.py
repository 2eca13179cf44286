"""Encoders."""

from ssl_ecg.models.clocs import ClocsEncoder
from ssl_ecg.models.registry import build_encoder

__all__ = ["ClocsEncoder", "build_encoder"]
