"""Small shared helpers: seeded RNG scopes and run folders."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["seeded"]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global RNGs seeded, restoring the caller's state after.

    Module initialisation and dropout draw from torch's global generator; this
    keeps them reproducible without leaving global state changed.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
