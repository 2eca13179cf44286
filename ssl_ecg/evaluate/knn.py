"""k-nearest-neighbour probe on frozen embeddings."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["knn_scores"]


def knn_scores(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, k: int = 20,
               temperature: float = 0.1, n_classes: int | None = None) -> np.ndarray:
    """Temperature-weighted cosine kNN votes, as in lightly's ``knn_predict`` (Wu et al., CVPR 2018).

    Each test embedding takes its ``k`` most cosine-similar training embeddings;
    neighbour j votes with weight exp(s_j / temperature) for its label(s). Single
    labels (n,) vote for one class; multi-hot labels (n, C) vote for each of
    their classes (our extension). Scores are the votes divided by the total
    weight, so they lie in [0, 1] (and sum to 1 for single labels).

    Returns:
        (n_test, C) float scores, usable for AUROC.
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"k/temperature: expected k >= 1 and temperature > 0, got {k}/{temperature}")
    tr = F.normalize(torch.as_tensor(train, dtype=torch.float32), dim=1)
    te = F.normalize(torch.as_tensor(test, dtype=torch.float32), dim=1)
    labels = np.asarray(train_labels)
    if labels.ndim == 1:
        c = int(n_classes or labels.max() + 1)
        onehot = F.one_hot(torch.as_tensor(labels, dtype=torch.long), c).float()
    else:
        onehot = torch.as_tensor(labels, dtype=torch.float32)
    k = min(k, len(tr))
    sim, idx = (te @ tr.T).topk(k, dim=1)
    w = torch.exp(sim / temperature)
    votes = (w[..., None] * onehot[idx]).sum(1)
    return (votes / w.sum(1, keepdim=True)).numpy()
