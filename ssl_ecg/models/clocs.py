"""The CLOCS 1-D CNN encoder."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ClocsEncoder"]


class ClocsEncoder(nn.Module):
    """The encoder of CLOCS (Kiyasseh et al., ICML 2021, appendix: network architecture).

    Three blocks of Conv1d(kernel 7, stride 3) -> BatchNorm -> ReLU -> MaxPool(2)
    -> Dropout, with channels ``in -> 4 -> 16 -> 32``, then a linear layer to
    ``embed_dim``.

    The flatten size is computed from ``input_len`` (2500 samples gives the
    paper's 32 x 10 = 320). With ``input_len=None`` an adaptive average pool to
    ``pool_len`` steps replaces it, so any length works.

    Args:
        in_channels: leads per instance (1 for per-lead CLOCS views).
        input_len: samples per input, or ``None`` for any length.
        embed_dim: output dimension E.
        dropout: dropout probability after each block.
        pool_len: time steps kept by the adaptive pool when ``input_len`` is None.
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_len: int | None = 1000,
        embed_dim: int = 128,
        dropout: float = 0.1,
        pool_len: int = 10,
    ):
        super().__init__()
        if in_channels < 1 or embed_dim < 1:
            raise ValueError(f"in_channels/embed_dim: expected >= 1, got {in_channels}/{embed_dim}")
        blocks = []
        for c_in, c_out in zip((in_channels, 4, 16), (4, 16, 32)):
            blocks += [nn.Conv1d(c_in, c_out, 7, stride=3), nn.BatchNorm1d(c_out), nn.ReLU(),
                       nn.MaxPool1d(2), nn.Dropout(dropout)]
        self.features = nn.Sequential(*blocks)
        if input_len is None:
            self.pool: nn.Module = nn.AdaptiveAvgPool1d(pool_len)
            steps = pool_len
        else:
            steps = self.output_steps(input_len)
            if steps < 1:
                raise ValueError(f"input_len: {input_len} samples is too short for the CLOCS encoder "
                                 f"(needs >= {self.min_input_len()})")
            self.pool = nn.Identity()
        self.head = nn.Linear(32 * steps, embed_dim)
        self.config: dict[str, Any] = {"name": "clocs", "in_channels": in_channels, "input_len": input_len,
                                       "embed_dim": embed_dim, "dropout": dropout, "pool_len": pool_len}
        self.in_channels, self.input_len, self.embed_dim = in_channels, input_len, embed_dim

    @staticmethod
    def output_steps(n: int) -> int:
        """Time steps left after the three conv/pool blocks for an input of ``n`` samples."""
        for _ in range(3):
            n = ((n - 7) // 3 + 1) // 2 if n >= 7 else 0
        return n

    @classmethod
    def min_input_len(cls) -> int:
        """Shortest input that leaves at least one time step (388 samples)."""
        n = 1
        while cls.output_steps(n) < 1:
            n += 1
        return n

    def forward(self, x: Tensor) -> Tensor:
        """Embed ``x`` of shape (N, C, T) into (N, embed_dim)."""
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected (N, {self.in_channels}, T), got {tuple(x.shape)}")
        if self.input_len is not None and x.shape[2] != self.input_len:
            raise ValueError(f"x: encoder was built for {self.input_len} samples, got {x.shape[2]}")
        if x.shape[2] < self.min_input_len():
            raise ValueError(f"x: {x.shape[2]} samples is shorter than the {self.min_input_len()} the encoder needs")
        return self.head(torch.flatten(self.pool(self.features(x)), 1))
