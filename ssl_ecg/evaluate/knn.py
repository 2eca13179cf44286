"""k-nearest-neighbour probe on frozen embeddings."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ssl_ecg.evaluate.probe import ProbeData, ProbeResult
from ssl_ecg.evaluate.tasks import auroc

__all__ = ["knn_scores", "knn_probe", "KNN_KS"]

KNN_KS = (5, 10, 20, 50)


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


def knn_probe(data: ProbeData, ks: Sequence[int] = KNN_KS, temperature: float = 0.1, seed: int = 0) -> ProbeResult:
    """kNN probe (:func:`knn_scores`) with k chosen on validation AUROC; test scored once, at that k.

    Ties go to the smaller k. ``seed`` is accepted for the common probe
    interface; the probe is deterministic.
    """
    kind, n_classes = data.check()

    def score(x: np.ndarray, k: int) -> np.ndarray:
        s = knn_scores(data.x_train, data.y_train, x, k=k, temperature=temperature, n_classes=n_classes)
        return s[:, 1] if kind == "binary" else s

    grid = [{"k": k, "val_auroc": auroc(data.y_val, score(data.x_val, k), kind)} for k in ks]
    best = max((g["val_auroc"], -g["k"]) for g in grid)
    k = -best[1]
    test_scores = score(data.x_test, k)
    return ProbeResult(val_auroc=float(best[0]), test_auroc=auroc(data.y_test, test_scores, kind), setting={"k": k},
                       test_scores=test_scores, val_scores=score(data.x_val, k), grid=grid)
