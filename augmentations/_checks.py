"""Input checks shared by the transforms and view makers."""

from __future__ import annotations

from torch import Tensor


def check_batch(x, name: str = "x") -> None:
    """Raise ValueError unless ``x`` is a floating (B, L, T) tensor."""
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a (B, L, T) tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating point signal, got {x.dtype}")
