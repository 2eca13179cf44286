"""Metrics with the exclusions and threshold choices stated, never silently."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

__all__ = ["MacroAUROC", "macro_auroc", "tune_thresholds", "macro_f1", "accuracy", "as_multi_hot"]


def as_multi_hot(y: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """(n,) class indices -> (n, C) 0/1; (n, C) is returned as is."""
    y = np.asarray(y)
    if y.ndim == 2:
        return y.astype(int)
    c = int(n_classes or y.max() + 1)
    out = np.zeros((len(y), c), dtype=int)
    out[np.arange(len(y)), y.astype(int)] = 1
    return out


@dataclass
class MacroAUROC:
    value: float
    per_class: dict[int, float]
    excluded: list[int]  # classes without both positives and negatives in y_true


def macro_auroc(y_true: np.ndarray, scores: np.ndarray) -> MacroAUROC:
    """Mean one-vs-rest AUROC over the classes that have positives and negatives.

    Classes that cannot be scored are listed in ``excluded``, not silently dropped.
    """
    y = as_multi_hot(y_true, scores.shape[1])
    per, excluded = {}, []
    for c in range(y.shape[1]):
        if 0 < y[:, c].sum() < len(y):
            per[c] = float(roc_auc_score(y[:, c], scores[:, c]))
        else:
            excluded.append(c)
    if not per:
        raise ValueError("y_true: no class has both positives and negatives; AUROC is undefined")
    return MacroAUROC(float(np.mean(list(per.values()))), per, excluded)


def tune_thresholds(y_val: np.ndarray, scores_val: np.ndarray) -> np.ndarray:
    """Per-class threshold maximising F1 on validation (candidates: the validation scores; 0.5 if none)."""
    y = as_multi_hot(y_val, scores_val.shape[1])
    out = np.full(y.shape[1], 0.5)
    for c in range(y.shape[1]):
        if y[:, c].sum() == 0:
            continue
        best = -1.0
        for t in np.unique(scores_val[:, c]):
            f = f1_score(y[:, c], scores_val[:, c] >= t, zero_division=0)
            if f > best:
                best, out[c] = f, t
    return out


def macro_f1(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> float:
    """Macro F1 at given (validation-tuned) thresholds."""
    y = as_multi_hot(y_true, scores.shape[1])
    return float(f1_score(y, scores >= thresholds[None, :], average="macro", zero_division=0))


def accuracy(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Top-1 accuracy for single-label tasks."""
    return float((np.asarray(y_true) == scores.argmax(1)).mean())
