"""Supervised contrastive loss, single- and multi-label."""

from __future__ import annotations

import torch
from torch import Tensor

from losses.patient_ntxent import _infonce_views, _InfoNCELoss, check_embeddings

__all__ = ["SupConLoss"]


class SupConLoss(_InfoNCELoss):
    """Supervised contrastive loss (Khosla et al., "Supervised Contrastive
    Learning", NeurIPS 2020, eq. 2, the "outside" form), the objective of sCL-ST
    (Le et al., "sCL-ST: Supervised Contrastive Learning With Semantic
    Transformations for Multiple Lead ECG Arrhythmia Classification", IEEE JBHI
    27(6), 2023, doi:10.1109/JBHI.2023.3246241).

    All N*V embeddings are L2-normalised. For anchor r the positive weights over
    the other embeddings c are w(r, c) = [labels equal] for single-label
    ``labels`` (N,), which is exactly :class:`~losses.PatientNTXentLoss` with
    labels as ids, or the Jaccard overlap |y_r & y_c| / |y_r | y_c| for multi-hot
    ``labels`` (N, C). The multi-label case is sCL-ST's setting (multiple-lead,
    multi-label PhysioNet 2020 records; its abstract: labels "pull the same class"
    together and push different classes apart). How the paper weights a pair
    that shares only some labels could not be checked here (only its abstract
    was readable): the Jaccard weighting is this library's choice of that
    generalisation (it reduces to [labels equal] on one-hot rows), not a
    formula quoted from the paper. The anchor loss is

        l(r) = -sum_c w(r, c) / W(r) * log( exp(s_rc / tau) / sum_{k != r} exp(s_rk / tau) )

    with W(r) = sum_c w(r, c); anchors with W(r) = 0 are excluded (a multi-hot
    row of zeros has no positive). With no positive anywhere the loss is 0,
    still attached to the graph, and a warning is issued once. One-hot
    ``labels`` (N, C) give the same value as their class indices (N,).

    Args:
        temperature: softmax temperature.
        gather_distributed: gather embeddings and labels from every rank.
        chunk_size: anchor rows per chunk (``None``: automatic).
    """

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        """Loss for embeddings ``z`` (N, V, D) and labels (N,) integer or (N, C) multi-hot."""
        n, v, _ = check_embeddings(z)
        labels = torch.as_tensor(labels, device=z.device)
        if labels.dim() == 1 and labels.shape[0] == n and not labels.is_floating_point():
            spec = labels.long().repeat_interleave(v)
        elif labels.dim() == 2 and labels.shape[0] == n:
            if ((labels != 0) & (labels != 1)).any():
                raise ValueError("labels: multi-hot labels (N, C) must hold only 0 and 1")
            spec = labels.float().repeat_interleave(v, dim=0)
        else:
            raise ValueError(f"labels: expected integer (N,) or multi-hot (N, C) with N = {n}, "
                             f"got {tuple(labels.shape)} of dtype {labels.dtype}")
        return _infonce_views(self, z, spec)
