"""A small 1-D transformer encoder with patch embedding."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["PatchTransformer1d"]


class PatchTransformer1d(nn.Module):
    """Patch embedding (a strided Conv1d, as in ViT, Dosovitskiy et al., ICLR 2021) of ``patch``
    samples, sinusoidal positions, a [CLS] token and a pre-norm ``nn.TransformerEncoder``; the
    [CLS] output is projected to ``embed_dim``. Any length: the last partial patch is zero-padded.

    Args:
        in_channels: leads per instance.
        embed_dim: output dimension E.
        patch: samples per patch (e.g. 0.2 s at 250 Hz = 50).
        width: transformer width (d_model); depth: layers; heads: attention heads.
    """

    def __init__(self, in_channels: int = 1, embed_dim: int = 128, patch: int = 50, width: int = 128,
                 depth: int = 4, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        if width % heads:
            raise ValueError(f"width: {width} must be divisible by heads = {heads}")
        self.patch = patch
        self.embed = nn.Conv1d(in_channels, width, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, embed_dim)
        self.width, self.in_channels, self.embed_dim = width, in_channels, embed_dim
        self.config: dict[str, Any] = {"name": "transformer", "in_channels": in_channels, "embed_dim": embed_dim,
                                       "patch": patch, "width": width, "depth": depth, "heads": heads,
                                       "dropout": dropout}

    def _positions(self, n: int, device) -> Tensor:
        pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, self.width, 2, device=device) * (-math.log(10000.0) / self.width))
        pe = torch.zeros(n, self.width, device=device)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
        return pe

    def forward(self, x: Tensor) -> Tensor:
        """Embed (N, C, T) into (N, embed_dim)."""
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected (N, {self.in_channels}, T), got {tuple(x.shape)}")
        pad = (-x.shape[-1]) % self.patch
        tokens = self.embed(nn.functional.pad(x, (0, pad))).transpose(1, 2)  # (N, P, W)
        tokens = tokens + self._positions(tokens.shape[1], x.device).to(tokens.dtype)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        return self.head(self.norm(self.encoder(tokens)[:, 0]))
