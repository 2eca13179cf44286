"""Encoders: each maps (N, C, T) to (N, embed_dim), declares ``embed_dim`` and a ``config`` dict."""

from ssl_ecg.models.clocs import ClocsEncoder
from ssl_ecg.models.inverted_residual import InvertedResidual1d, MobileNetV2_1d
from ssl_ecg.models.mobilenet import MobileNet1d, make_divisible
from ssl_ecg.models.registry import ENCODERS, build_encoder
from ssl_ecg.models.resnet1d import ResNet1d
from ssl_ecg.models.summary import count_macs, encoder_summary, summarize_registry
from ssl_ecg.models.transformer import PatchTransformer1d

__all__ = ["ClocsEncoder", "ResNet1d", "PatchTransformer1d", "build_encoder", "ENCODERS", "MobileNet1d",
           "MobileNetV2_1d", "InvertedResidual1d", "make_divisible", "encoder_summary", "summarize_registry",
           "count_macs"]
