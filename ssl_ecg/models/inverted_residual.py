"""A 1-D inverted-residual encoder (MobileNetV2 style)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ssl_ecg.errors import ConfigError
from ssl_ecg.models.mobilenet import check_input, check_row, check_sizes, check_table, conv_bn, make_divisible

__all__ = ["InvertedResidual1d", "MobileNetV2_1d"]

#: Stem (channels, stride) at width_mult 1.0 (the paper's stem strides 2; see ``V1_STEM`` for why 6 here).
V2_STEM = (8, 6)
#: Bottleneck rows (expansion t, output channels c, repeats n, first stride s) at width_mult 1.0, as in the
#: paper's table 2, cut to three rows up to 32 channels with t = 2 and strides of 4 (the paper: seven rows,
#: t = 6, up to 320 channels, strides of 2), so that one-lead 10 s records cost fewer multiply-accumulates
#: than the CLOCS CNN. The last row's second repeat is a residual block.
V2_BLOCKS = ((1, 8, 1, 4), (2, 16, 1, 4), (2, 32, 2, 4))
#: Channels of the last 1x1 convolution (the paper's 1280), never scaled below width 1.0 (as in the paper).
V2_LAST = 96


class InvertedResidual1d(nn.Module):
    """MobileNetV2 bottleneck (Sandler et al., CVPR 2018, table 1) in 1-D.

    1x1 expansion to ``t * c_in`` channels -> BN -> ReLU6 (omitted when t = 1), depthwise Conv1d(kernel,
    stride) -> BN -> ReLU6, linear 1x1 projection to ``c_out`` -> BN (no activation: the linear bottleneck).
    The input is added back when ``stride == 1`` and ``c_in == c_out``.

    Shapes: (N, c_in, T) -> (N, c_out, ceil(T / stride)).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = [] if expansion == 1 else [conv_bn(c_in, hidden, 1, act=nn.ReLU6)]
        layers += [conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=nn.ReLU6),
                   conv_bn(hidden, c_out, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    @property
    def projection_bn(self) -> nn.BatchNorm1d:
        """The BatchNorm after the linear projection (zero its weight and bias and the block is the identity)."""
        return self.body[-1][1]

    def forward(self, x: Tensor) -> Tensor:
        """(N, c_in, T) -> (N, c_out, ceil(T / stride))."""
        y = self.body(x)
        return x + y if self.use_residual else y


class MobileNetV2_1d(nn.Module):
    """Inverted-residual 1-D CNN after MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and
    Linear Bottlenecks", CVPR 2018).

    A full Conv1d stem -> BN -> ReLU6, rows of :class:`InvertedResidual1d` blocks (t, c, n, s: expansion,
    channels, repeats, stride of the first repeat), a last 1x1 Conv1d -> BN -> ReLU6, global average pooling
    over time and a linear layer to ``embed_dim``: (N, C, T) -> (N, embed_dim). Channel counts are
    ``make_divisible(c * width_mult)``; the last conv keeps ``V2_LAST`` channels when ``width_mult < 1``, as the
    paper keeps 1280.

    Where the 1-D version differs from the 2-D paper: ``kernel``-sample depthwise kernels (default 7) instead of
    3 x 3; a stem stride of 6; three bottleneck rows up to 32 channels with expansion 2, strides of 4 and a
    96-channel last conv (the paper: seven rows up to 320, t = 6, strides of 2, 1280), so that one-lead 10 s
    records stay cheaper than the CLOCS CNN; a linear embedding instead of the classifier (no dropout).

    Any input length T >= 1 works (each stride-s layer maps T to ceil(T / s)); the receptive field of the
    default table is 3067 samples (12.3 s at 250 Hz).

    Args:
        in_channels: leads per instance (1 for per-lead CLOCS views, 12 for whole records).
        embed_dim: output dimension E.
        width_mult: width multiplier applied to every channel count (> 0).
        kernel: depthwise (and stem) kernel size, odd.
        stem: (channels, stride) of the stem convolution at width 1.0.
        blocks: (t, c, n, s) bottleneck rows at width 1.0.
        last_channels: channels of the last 1x1 convolution at width 1.0.
    """

    def __init__(self, in_channels: int = 1, embed_dim: int = 128, width_mult: float = 1.0, kernel: int = 7,
                 stem: Sequence[int] = V2_STEM, blocks: Sequence[Sequence[int]] = V2_BLOCKS,
                 last_channels: int = V2_LAST):
        super().__init__()
        name = "mobilenetv2_1d"
        check_sizes(name, in_channels, embed_dim, width_mult, kernel)
        stem = check_row(name, "stem", stem, ("channels", "stride"))
        blocks = check_table(name, "blocks", blocks, ("expansion t", "channels c", "repeats n", "stride s"))
        if isinstance(last_channels, bool) or not isinstance(last_channels, int) or last_channels < 1:
            raise ConfigError(f"{name}: last_channels must be an integer >= 1, got {last_channels!r}")
        c = make_divisible(stem[0] * width_mult)
        layers: list[nn.Module] = [conv_bn(in_channels, c, kernel, stem[1], act=nn.ReLU6)]
        for t, channels, repeats, stride in blocks:
            c_out = make_divisible(channels * width_mult)
            for i in range(repeats):
                layers.append(InvertedResidual1d(c, c_out, kernel, stride if i == 0 else 1, t))
                c = c_out
        last = make_divisible(last_channels * max(1.0, width_mult))
        layers.append(conv_bn(c, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(last, embed_dim)
        self.in_channels, self.embed_dim, self.out_channels = in_channels, embed_dim, last
        self.config: dict[str, Any] = {"name": name, "in_channels": in_channels, "embed_dim": embed_dim,
                                       "width_mult": width_mult, "kernel": kernel, "stem": list(stem),
                                       "blocks": [list(b) for b in blocks], "last_channels": last_channels}

    def forward(self, x: Tensor) -> Tensor:
        """Embed ``x`` of shape (N, C, T) into (N, embed_dim)."""
        check_input(x, self.in_channels)
        return self.head(torch.mean(self.features(x), dim=-1))
