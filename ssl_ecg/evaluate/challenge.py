"""The PhysioNet/CinC Challenge 2020-2021 score (Perez Alday et al., Physiol. Meas. 2020; Reyna et al., CinC 2021).

A modified confusion matrix gives partial credit for clinically similar
mistakes: recording r with label set Y_r and output set O_r adds
``1 / |Y_r ∪ O_r|`` (at least 1) to A[j, k] for every j in Y_r and k in O_r.
The score is ``sum(W * A)`` normalised so that the true labels score 1 and an
"inactive" classifier that always outputs only sinus rhythm (426783006) scores 0.

``W`` is the challenge's published weight matrix, bundled as
``physionet2021_weights.csv`` (``weights.csv`` of github.com/physionetchallenges/
evaluation-2021, BSD 2-clause). Its 24 classes are those of
:data:`ssl_ecg.data.cinc.SCORED_CLASSES`, in the same order; codes joined by
``|`` are equivalent and scored as one class.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

__all__ = ["load_challenge_weights", "modified_confusion_matrix", "challenge_score", "NORMAL_CLASS"]

NORMAL_CLASS = "426783006"  # sinus rhythm


def load_challenge_weights() -> tuple[list[str], np.ndarray]:
    """The bundled weights: (class codes in order, the first of each ``|`` group), (C, C) float64."""
    text = resources.files("ssl_ecg.evaluate").joinpath("physionet2021_weights.csv").read_text()
    lines = [line.split(",") for line in text.strip().splitlines()]
    classes = [c.split("|")[0] for c in lines[0][1:]]
    rows = [line[0].split("|")[0] for line in lines[1:]]
    if rows != classes:
        raise ValueError("physionet2021_weights.csv: row and column classes differ")
    return classes, np.array([[float(v) for v in line[1:]] for line in lines[1:]])


def modified_confusion_matrix(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """A[j, k] = sum over recordings with label j and output k of 1 / max(1, |labels ∪ outputs|)."""
    y, o = np.asarray(labels, dtype=bool), np.asarray(outputs, dtype=bool)
    if y.shape != o.shape or y.ndim != 2:
        raise ValueError(f"labels, outputs: expected equal (n, C) shapes, got {y.shape} and {o.shape}")
    norm = np.maximum((y | o).sum(1), 1).astype(np.float64)
    return y.T.astype(np.float64) @ (o / norm[:, None])


def challenge_score(labels: np.ndarray, outputs: np.ndarray, weights: np.ndarray | None = None,
                    classes: list[str] | None = None, normal_class: str = NORMAL_CLASS) -> float:
    """The challenge metric of binary ``outputs`` (n, C) against multi-hot ``labels`` (n, C).

    Columns follow ``classes`` (default: the bundled weights' order, which is
    :data:`ssl_ecg.data.cinc.SCORED_CLASSES`). Returns 0.0 when the true labels
    score no better than the inactive classifier, as the official code does.
    """
    if weights is None:
        classes, weights = load_challenge_weights()
    if classes is None or normal_class not in classes:
        raise ValueError(f"classes: must include the normal class {normal_class} (got {classes})")
    y = np.asarray(labels, dtype=bool)
    if y.ndim != 2 or y.shape[1] != len(weights) or weights.shape != (len(classes), len(classes)):
        raise ValueError(f"labels: expected (n, {len(weights)}) columns in the weights' class order, got {y.shape}")
    inactive = np.zeros_like(y)
    inactive[:, classes.index(normal_class)] = True
    observed = np.nansum(weights * modified_confusion_matrix(y, outputs))
    correct = np.nansum(weights * modified_confusion_matrix(y, y))
    base = np.nansum(weights * modified_confusion_matrix(y, inactive))
    return float((observed - base) / (correct - base)) if correct != base else 0.0
