"""Tasks: label encoding of table columns, task kinds (binary, multiclass, multilabel) and the shared metric.

A task is a column of the record table. :func:`task_y` turns it into labels
for the probes: 0/1 columns stay binary, other columns become class codes, and
list-valued columns become multi-hot rows. Records without a label are NaN
and are left out of that task.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ssl_ecg.data.cinc import scored_classes
from ssl_ecg.errors import SplitError
from ssl_ecg.evaluate.metrics import macro_auroc

__all__ = ["task_kind", "check_task_labels", "check_task", "auroc", "task_labels", "labels_and_names", "task_y",
           "is_multilabel", "patient_labels", "is_challenge_task"]


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


def task_labels(column: pd.Series) -> np.ndarray:
    """0/1 columns as float (NaN: unlabelled); other columns as category codes (NaN/empty: unlabelled)."""
    return labels_and_names(column)[0]


def labels_and_names(column: pd.Series) -> tuple[np.ndarray, list | None]:
    """:func:`task_labels` and the class names; no names for binary tasks (0/1, or two numeric values)."""
    values = column.to_numpy()
    numeric = pd.api.types.is_numeric_dtype(column)
    if numeric and set(np.unique(values[~pd.isna(values)])) <= {0, 1}:
        return values.astype(float), None
    labelled = (~(pd.isna(column) | (column.astype(str).str.strip() == ""))).to_numpy()
    codes = np.full(len(column), np.nan)
    codes[labelled], names = pd.factorize(column[labelled])
    return codes, (None if numeric and len(names) <= 2 else list(names))


def task_y(column: pd.Series, record_split: np.ndarray, task: str,
           dropped: dict, challenge_year: int | None = None) -> tuple[np.ndarray, list | None]:
    """Labels of one task and its class names; classes missing from a split are dropped with a warning.

    Binary tasks give (n,) 0/1 with NaN for unlabelled records and no names; they
    stay strict (a split without positives is an error downstream). Categorical
    tasks give (n,) codes; list-valued (multi-label) tasks give (n, C) multi-hot
    rows, NaN where a record has no label. A class is dropped when a split has
    no positive of it (``dropped[task]`` lists the dropped classes). With
    ``challenge_year``, a multi-label task over that year's CinC scored classes
    keeps list-valued records with no (remaining) class as all-zero rows, as
    the challenge scores them.

    Args:
        column: the task's column of the record table.
        record_split: ``"train"``, ``"val"``, ``"test"`` (or anything else: unused) per record.
        task: the task's name, for warnings.
        dropped: filled with ``{task: [dropped class names]}``.
        challenge_year: 2020/2021 or None (see above).
    """
    if is_multilabel(column):
        return _multilabel_y(column, record_split, task, dropped, challenge_year)
    y, names = labels_and_names(column)
    if names is None:
        return y, None
    missing = [c for c in np.unique(y[~np.isnan(y)])
               if any(not ((y == c) & (record_split == s)).any() for s in ("train", "val", "test"))]
    if missing:
        y = y.copy()
        y[np.isin(y, missing)] = np.nan
        keep = ~np.isnan(y)
        kept = sorted(set(np.unique(y[keep]).tolist()))
        y[keep] = pd.factorize(y[keep], sort=True)[0]
        _warn_dropped(task, [str(names[int(c)]) for c in missing], dropped)
        names = [names[int(c)] for c in kept]
    return y, names


def is_multilabel(column: pd.Series) -> bool:
    """Whether a column holds lists (sets, tuples) of classes: a multi-label task."""
    return any(isinstance(v, (list, tuple, set, frozenset)) for v in column.head(100))


def _multilabel_y(column, record_split, task, dropped, challenge_year=None):
    listed = np.array([isinstance(v, (list, tuple, set, frozenset)) for v in column])
    rows = [tuple(v) if is_list else () for v, is_list in zip(column, listed)]
    names = sorted({c for r in rows for c in r}, key=str)
    pos = {c: k for k, c in enumerate(names)}
    y = np.zeros((len(rows), len(names)))
    for i, r in enumerate(rows):
        y[i, [pos[c] for c in r]] = 1.0
    keep = np.ones(len(names), bool)
    for s in ("train", "val", "test"):
        keep &= y[record_split == s].sum(0) > 0
    if not keep.all():
        _warn_dropped(task, [str(n) for n, k in zip(names, keep) if not k], dropped)
    scored = challenge_year is not None and set(map(str, names)) <= set(scored_classes(challenge_year))
    y, names = y[:, keep], [n for n, k in zip(names, keep) if k]
    unlabelled = ~listed if scored else y.sum(1) == 0  # challenge: no scored class is an all-zero row
    y[unlabelled] = np.nan  # no (remaining) label: left out of the task
    return y, names


def _warn_dropped(task: str, classes: list, dropped: dict) -> None:
    dropped[task] = classes
    warnings.warn(f"task {task!r}: classes {classes} are missing from the train, val or test split "
                  "and are left out of this task", stacklevel=4)


def patient_labels(patients: np.ndarray, y: np.ndarray, rows: np.ndarray) -> dict:
    """Per patient: the class (single-label) or the union of its records' classes (multi-label)."""
    if y.ndim == 1:
        return {patients[i]: int(y[i]) for i in rows}
    out: dict = {}
    for i in rows:
        out.setdefault(patients[i], set()).update(np.flatnonzero(y[i] > 0).tolist())
    return {p: tuple(sorted(c)) for p, c in out.items()}


def is_challenge_task(names: list | None, y: np.ndarray, year: int | None = None) -> bool:
    """A multi-label task over the PhysioNet/CinC scored classes (SNOMED codes) of ``year`` (None: 2020)."""
    return (y.ndim == 2 and names is not None and len(names) > 1
            and set(map(str, names)) <= set(scored_classes(year or 2020)))
