"""Task kinds (binary, multiclass, multilabel) and the validation metric shared by the probes."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from ssl_ecg.errors import SplitError
from ssl_ecg.evaluate.metrics import macro_auroc

__all__ = ["task_kind", "check_task_labels", "check_task", "auroc"]


def task_kind(y: np.ndarray) -> str:
    """``binary`` for (n,) 0/1, ``multiclass`` for (n,) class indices, ``multilabel`` for (n, C) 0/1."""
    y = np.asarray(y)
    if y.ndim == 2:
        return "multilabel"
    if y.ndim != 1:
        raise ValueError(f"labels: expected (n,) or (n, C), got shape {y.shape}")
    return "binary" if set(np.unique(y).astype(int).tolist()) <= {0, 1} else "multiclass"


def check_task_labels(y: np.ndarray, where: str, task: str, kind: str, n_classes: int | None = None) -> None:
    """Every class (column, for multilabel) needs positives in ``y``; binary tasks also negatives."""
    y = np.asarray(y)
    if len(y) == 0:
        raise SplitError(f"task {task!r}, {where}: no labelled records")
    if kind == "multilabel":
        missing = np.flatnonzero(y.sum(0) == 0).tolist()
    else:
        present = set(np.asarray(y).astype(int).tolist())
        missing = sorted(set(range(n_classes or 2)) - present)
    if missing:
        raise SplitError(f"task {task!r}, {where}: class(es) {missing} have no patients; "
                         "use a larger label fraction or another split seed")


def check_task(y_train: np.ndarray, y_val: np.ndarray, y_test: np.ndarray, task: str) -> tuple[str, int]:
    """Kind and class count of a train/val/test labelling, after checking each split holds every class.

    The count is the number of columns (multilabel), 2 (binary) or the largest
    class index + 1 (multiclass).
    """
    ys = [np.asarray(y) for y in (y_train, y_val, y_test)]
    kind = task_kind(np.concatenate(ys))
    if kind == "multilabel":
        n_classes = ys[0].shape[1]
    else:
        n_classes = 2 if kind == "binary" else int(max(y.max() for y in ys)) + 1
    for y, where in zip(ys, ("training labels", "validation split", "test split")):
        check_task_labels(y, where, task, kind, n_classes)
    return kind, n_classes


def auroc(y: np.ndarray, scores: np.ndarray, kind: str) -> float:
    """Binary AUROC, or macro one-vs-rest AUROC over the classes that can be scored."""
    if kind == "binary":
        s = scores if scores.ndim == 1 else scores[:, -1]
        return float(roc_auc_score(y, s))
    return macro_auroc(y, scores).value
