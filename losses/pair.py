"""Siamese pair losses for the few-shot heads.

For relation-head logits (a head that scores a pair), use
``torch.nn.BCEWithLogitsLoss`` with target 1 for same-class pairs: it is the
numerically stable sigmoid cross-entropy and needs no wrapper here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ContrastivePairLoss"]


class ContrastivePairLoss(nn.Module):
    """Margin contrastive loss (Hadsell, Chopra & LeCun, "Dimensionality
    Reduction by Learning an Invariant Mapping", CVPR 2006, eq. 4).

    With d the Euclidean distance between paired embeddings and y = 1 for a
    same-class pair,

        L = mean_pairs( y * d^2 / 2 + (1 - y) * max(0, margin - d)^2 / 2 ).

    The positive term uses d^2 directly and the distance is computed as
    sqrt(max(d^2, 1e-12)), so identical embeddings give finite gradients.

    Args:
        margin: distance beyond which dissimilar pairs cost nothing.
    """

    def __init__(self, margin: float = 1.0):
        super().__init__()
        if not margin > 0:
            raise ValueError(f"margin: expected a positive float, got {margin!r}")
        self.margin = float(margin)

    def forward(self, e1: Tensor, e2: Tensor, same: Tensor) -> Tensor:
        """Loss for paired embeddings ``e1``, ``e2`` (B, D) and ``same`` (B,) in {0, 1}."""
        if e1.shape != e2.shape or e1.dim() != 2:
            raise ValueError(f"e1/e2: expected two (B, D) tensors of one shape, got {tuple(e1.shape)} "
                             f"and {tuple(e2.shape)}")
        same = torch.as_tensor(same, device=e1.device)
        if same.shape != (e1.shape[0],):
            raise ValueError(f"same: expected shape ({e1.shape[0]},), got {tuple(same.shape)}")
        if ((same != 0) & (same != 1)).any():
            raise ValueError("same: expected 0/1 (or bool) pair labels")
        y = same.to(torch.float32)
        d2 = (e1.float() - e2.float()).pow(2).sum(dim=1)
        d = d2.clamp_min(1e-12).sqrt()
        return (y * d2 + (1 - y) * (self.margin - d).clamp_min(0).pow(2)).mul(0.5).mean()
