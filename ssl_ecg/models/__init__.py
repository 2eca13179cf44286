"""Encoders: each maps (N, C, T) to (N, embed_dim), declares ``embed_dim`` and a ``config`` dict."""

from ssl_ecg.models.clocs import ClocsEncoder
from ssl_ecg.models.registry import ENCODERS, build_encoder
from ssl_ecg.models.resnet1d import ResNet1d
from ssl_ecg.models.transformer import PatchTransformer1d

__all__ = ["ClocsEncoder", "ResNet1d", "PatchTransformer1d", "build_encoder", "ENCODERS"]
