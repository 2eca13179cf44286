"""An xresnet1d-style 1-D ResNet encoder."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

__all__ = ["ResNet1d"]


class _Block(nn.Module):
    """Basic residual block: two conv-BN layers, a 1x1 (average-pooled) shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        pad = kernel // 2
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(),
            nn.Conv1d(c_out, c_out, kernel, padding=pad, bias=False), nn.BatchNorm1d(c_out),
        )
        short = []
        if stride > 1:
            short.append(nn.AvgPool1d(stride, ceil_mode=True))  # xresnet "ResNet-D" shortcut
        if c_in != c_out:
            short += [nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out)]
        self.shortcut = nn.Sequential(*short)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        s = self.shortcut(x)
        return self.act(y + s[..., : y.shape[-1]])


class ResNet1d(nn.Module):
    """1-D ResNet in the style of xresnet1d (He et al., CVPR 2019 "bag of tricks"; Strodthoff et al.,
    IEEE JBHI 2021 for ECG): a three-conv stem, residual stages, global average pooling, a linear
    layer to ``embed_dim``. Any input length and lead count.

    Args:
        in_channels: leads per instance (1 for per-lead views).
        embed_dim: output dimension E.
        widths: channels per stage (default 64, 128, 256, 512).
        depth: residual blocks per stage (default 1, 1, 1, 1; xresnet1d18 is 2, 2, 2, 2).
        kernel: convolution kernel size (odd).
    """

    def __init__(self, in_channels: int = 1, embed_dim: int = 128, widths: Sequence[int] = (64, 128, 256, 512),
                 depth: Sequence[int] = (1, 1, 1, 1), kernel: int = 5):
        super().__init__()
        if len(widths) != len(depth) or not widths:
            raise ValueError(f"widths/depth: expected equal, non-empty lengths, got {list(widths)} / {list(depth)}")
        if kernel % 2 == 0:
            raise ValueError(f"kernel: expected an odd size, got {kernel}")
        stem_w = max(widths[0] // 2, 8)
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, stem_w, kernel, stride=2, padding=kernel // 2, bias=False), nn.BatchNorm1d(stem_w),
            nn.ReLU(),
            nn.Conv1d(stem_w, widths[0], kernel, padding=kernel // 2, bias=False), nn.BatchNorm1d(widths[0]),
            nn.ReLU(), nn.MaxPool1d(3, stride=2, padding=1),
        )
        blocks, c = [], widths[0]
        for i, (w, d) in enumerate(zip(widths, depth)):
            for j in range(d):
                blocks.append(_Block(c, w, kernel, stride=2 if (j == 0 and i > 0) else 1))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, embed_dim)
        self.in_channels, self.embed_dim = in_channels, embed_dim
        self.config: dict[str, Any] = {"name": "resnet1d", "in_channels": in_channels, "embed_dim": embed_dim,
                                       "widths": list(widths), "depth": list(depth), "kernel": kernel}

    def forward(self, x: Tensor) -> Tensor:
        """Embed (N, C, T) into (N, embed_dim)."""
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected (N, {self.in_channels}, T), got {tuple(x.shape)}")
        return self.head(torch.mean(self.blocks(self.stem(x)), dim=-1))
