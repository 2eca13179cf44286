"""Cross-rank gathering shared by the contrastive losses."""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightly.utils import dist as lightly_dist
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, world_size), or (0, 1) outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_keys(e: Tensor, spec: Tensor) -> tuple[Tensor, Tensor, int, int]:
    """Gather embeddings (with gradients) and labels from every rank.

    Returns:
        ``(keys, key_spec, offset, world_size)`` where ``offset`` is the position
        of this rank's first row among the keys. Ranks must hold equal batch sizes.
    """
    rank, world_size = world()
    if world_size == 1:
        return e, spec, 0, 1
    keys = torch.cat(lightly_dist.gather(e), dim=0)
    specs = [torch.empty_like(spec) for _ in range(world_size)]
    dist.all_gather(specs, spec.contiguous())
    return keys, torch.cat(specs, dim=0), rank * e.shape[0], world_size


def global_mean(total: Tensor, count: Tensor, world_size: int) -> Tensor:
    """Turn a rank's summed loss into its share of the global mean.

    Each rank returns ``world_size * total / count_all``: the ranks' values average
    to the loss over all anchors, and after DDP averages the gradients (and the
    gather sums the key gradients) every parameter gets the exact global gradient.
    """
    if world_size > 1:
        count = count.clone()
        dist.all_reduce(count)
    if int(count) == 0:
        return total * 0.0
    return total * (world_size / count.to(total.dtype))
