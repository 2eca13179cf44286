"""A depthwise-separable 1-D CNN encoder (MobileNet v1 style) and the width rounding both MobileNets share."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ssl_ecg.errors import ConfigError

__all__ = ["MobileNet1d", "make_divisible"]

#: Stem (channels, stride) at width_mult 1.0. The stem strides 6, not the paper's 2: a 10 s record at 250 Hz
#: is 2500 samples, against 224 pixels a side, so the time axis is shortened at once, by as much as the CLOCS
#: CNN's first block (conv stride 3, max-pool 2).
V1_STEM = (8, 6)
#: Depthwise-separable layers as (pointwise output channels, depthwise stride) at width_mult 1.0. The paper's
#: table 1 has 13 layers up to 1024 channels, which for one-lead ECG would cost far more than the CLOCS CNN;
#: these four give a total stride of 384 (6-7 steps left of a 10 s record at 250 Hz).
V1_LAYERS = ((16, 4), (32, 4), (64, 2), (96, 2))


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never below 90% of ``value``.

    The ``_make_divisible`` rule of the MobileNetV2 reference code (Sandler et al., CVPR 2018), applied to
    every ``width_mult``-scaled channel count of both MobileNets here.

    Args:
        value: the scaled channel count, e.g. ``32 * width_mult``.
        divisor: channels come in multiples of this.
        min_value: smallest count returned (default ``divisor``).

    Returns:
        A multiple of ``divisor``, at least ``min_value`` and at least ``0.9 * value``.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:  # rounding down must not remove more than 10% of the channels
        rounded += divisor
    return rounded


def check_sizes(name: str, in_channels: int, embed_dim: int, width_mult: float, kernel: int) -> None:
    """Raise :class:`ConfigError` naming ``name``'s bad size argument and what was expected."""
    for arg, value in (("in_channels", in_channels), ("embed_dim", embed_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: {arg} must be an integer >= 1, got {value!r}")
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0:
        raise ConfigError(f"{name}: width_mult must be a number > 0, got {width_mult!r}")
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ConfigError(f"{name}: kernel must be an odd integer >= 1 (same padding), got {kernel!r}")


def check_row(name: str, where: str, row: Any, fields: Sequence[str]) -> tuple[int, ...]:
    """``row`` (a list from JSON or a tuple) as a tuple of positive ints, one per ``fields``.

    Raises:
        ConfigError: naming the encoder, the argument (``where``) and the expected fields.
    """
    if (not isinstance(row, (list, tuple)) or len(row) != len(fields)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in row)):
        raise ConfigError(f"{name}: {where} must be {len(fields)} integers >= 1 ({', '.join(fields)}), got {row!r}")
    return tuple(row)


def check_table(name: str, where: str, rows: Any, fields: Sequence[str]) -> list[tuple[int, ...]]:
    """A non-empty list of :func:`check_row` rows, named ``where[i]`` in errors."""
    if not isinstance(rows, (list, tuple)) or not rows:
        raise ConfigError(f"{name}: {where} must be a non-empty list of ({', '.join(fields)}) rows, got {rows!r}")
    return [check_row(name, f"{where}[{i}]", row, fields) for i, row in enumerate(rows)]


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
            act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Conv1d (same padding, no bias: BN follows) -> BatchNorm1d -> optional activation."""
    layers: list[nn.Module] = [nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups,
                                         bias=False), nn.BatchNorm1d(c_out)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def check_input(x: Tensor, in_channels: int) -> None:
    """Raise :class:`ConfigError` unless ``x`` is (N, in_channels, T) with T >= 1."""
    if x.dim() != 3 or x.shape[1] != in_channels or x.shape[2] < 1:
        raise ConfigError(f"x: expected (N, {in_channels}, T) with T >= 1, got {tuple(x.shape)}")


class DepthwiseSeparable1d(nn.Sequential):
    """One MobileNet v1 layer: depthwise Conv1d(k, stride) -> BN -> ReLU, pointwise Conv1d(1) -> BN -> ReLU.

    Shapes: (N, c_in, T) -> (N, c_out, ceil(T / stride)).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__(conv_bn(c_in, c_in, kernel, stride, groups=c_in), conv_bn(c_in, c_out, 1))


class MobileNet1d(nn.Module):
    """Depthwise-separable 1-D CNN after MobileNets (Howard et al., arXiv:1704.04861, 2017).

    A full Conv1d stem, then depthwise-separable layers (depthwise Conv1d + BN + ReLU, pointwise 1x1 Conv1d +
    BN + ReLU), strided stages, global average pooling over time and a linear layer to ``embed_dim``:
    (N, C, T) -> (N, embed_dim). Every channel count is ``make_divisible(channels * width_mult)`` (the
    paper's width multiplier alpha, rounded to a multiple of 8 as in the MobileNetV2 code).

    Where the 1-D version differs from the 2-D paper: kernels are ``kernel`` samples (default 7, about
    28 ms at 250 Hz) instead of 3 x 3; the stem strides 6 and the layer table (``V1_LAYERS``) is four layers
    up to 96 channels with strides 4, 4, 2, 2 instead of 13 up to 1024, because a 10 s record is 2500 samples
    long and the encoder must stay cheaper than the CLOCS CNN; the classifier is replaced by a linear
    embedding; there is no resolution multiplier (the input length is the data's).

    Any input length T >= 1 works (each stride-s layer maps T to ceil(T / s)); the receptive field of the
    default table is 1915 samples (7.7 s at 250 Hz), so records of a few seconds are the meaningful minimum.

    Args:
        in_channels: leads per instance (1 for per-lead CLOCS views, 12 for whole records).
        embed_dim: output dimension E.
        width_mult: width multiplier alpha applied to every channel count (> 0).
        kernel: depthwise (and stem) kernel size, odd.
        stem: (channels, stride) of the stem convolution at width 1.0.
        layers: (channels, stride) per depthwise-separable layer at width 1.0.
    """

    def __init__(self, in_channels: int = 1, embed_dim: int = 128, width_mult: float = 1.0, kernel: int = 7,
                 stem: Sequence[int] = V1_STEM, layers: Sequence[Sequence[int]] = V1_LAYERS):
        super().__init__()
        check_sizes("mobilenet1d", in_channels, embed_dim, width_mult, kernel)
        stem = check_row("mobilenet1d", "stem", stem, ("channels", "stride"))
        layers = check_table("mobilenet1d", "layers", layers, ("channels", "stride"))
        c = make_divisible(stem[0] * width_mult)
        blocks: list[nn.Module] = [conv_bn(in_channels, c, kernel, stem[1])]
        for channels, stride in layers:
            c_out = make_divisible(channels * width_mult)
            blocks.append(DepthwiseSeparable1d(c, c_out, kernel, stride))
            c = c_out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(c, embed_dim)
        self.in_channels, self.embed_dim, self.out_channels = in_channels, embed_dim, c
        self.config: dict[str, Any] = {"name": "mobilenet1d", "in_channels": in_channels, "embed_dim": embed_dim,
                                       "width_mult": width_mult, "kernel": kernel, "stem": list(stem),
                                       "layers": [list(p) for p in layers]}

    def forward(self, x: Tensor) -> Tensor:
        """Embed ``x`` of shape (N, C, T) into (N, embed_dim)."""
        check_input(x, self.in_channels)
        return self.head(torch.mean(self.features(x), dim=-1))
