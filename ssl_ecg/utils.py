"""Small shared helpers: seeded RNG scopes and run folders."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

__all__ = ["seeded", "wandb_settings"]


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


def wandb_settings() -> dict[str, str]:
    """wandb ``project`` and ``mode``: offline unless ``WANDB_MODE=online`` (project from ``WANDB_PROJECT``).

    The mode goes to ``wandb.init`` directly: a wandb already set up in the same
    process does not re-read ``WANDB_MODE``.
    """
    return {"project": os.environ.get("WANDB_PROJECT", "ssl-ecg"),
            "mode": "online" if os.environ.get("WANDB_MODE") == "online" else "offline"}
