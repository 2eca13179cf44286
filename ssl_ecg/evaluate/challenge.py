"""The PhysioNet/CinC Challenge 2020 and 2021 score (Perez Alday et al., Physiol. Meas. 2020; Reyna et al., CinC 2021).

A modified confusion matrix gives partial credit for clinically similar
mistakes: recording r with label set Y_r and output set O_r adds
``1 / max(1, |Y_r ∪ O_r|)`` to A[j, k] for every j in Y_r and k in O_r. The
score is ``sum(W * A)`` normalised so that the true labels score 1 and an
"inactive" classifier that outputs only sinus rhythm (426783006, the "normal"
class) for every recording scores 0; when the true labels score no better than
the inactive classifier the score is 0. Recordings with no scored label are
scored as all-zero rows (they add nothing to any of the three matrices but are
part of the scored set), exactly as ``evaluate_model.py`` of
github.com/physionetchallenges/evaluation-2021 (``compute_challenge_metric``)
and the final ``evaluate_12ECG_score.py`` of evaluation-2020 do.

``W`` is each year's published weight matrix (``weights.csv``, BSD 2-clause),
bundled as ``physionet2020_weights.csv`` and ``physionet2021_weights.csv``.
Codes joined by ``|`` in a row/column name are equivalent and scored as one
class named by the group's first code, as ``load_weights`` of the official code
does:

- 2020: 24 classes (27 codes): 713427006|59118001 (complete RBBB / RBBB),
  284470004|63593006 (PAC / SVPB), 427172004|17338001 (PVC / VEB);
- 2021: 26 classes (30 codes): adds 6374002 (BBB) and 365413008 (poor R wave
  progression) and merges 733534002|164909002 (complete LBBB / LBBB), keeping
  the three 2020 pairs.

The class orders are those of :data:`ssl_ecg.data.cinc.SCORED_CLASSES_2020` and
:data:`ssl_ecg.data.cinc.SCORED_CLASSES_2021`.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

from ssl_ecg.errors import ConfigError

__all__ = ["load_challenge_weights", "modified_confusion_matrix", "challenge_score", "challenge_year",
           "equivalent_codes", "NORMAL_CLASS", "CHALLENGE_YEARS"]

NORMAL_CLASS = "426783006"  # sinus rhythm
CHALLENGE_YEARS = (2020, 2021)
_DATASET_YEAR = {"cinc2020": 2020, "cinc2021": 2021, "chapman": 2021}  # Chapman-Shaoxing/Ningbo joined in 2021


def challenge_year(dataset: str) -> int | None:
    """The challenge whose class set and weights score ``dataset``: cinc2020 -> 2020, cinc2021 (and
    chapman, part of the 2021 training data) -> 2021; None for datasets outside the challenges."""
    return _DATASET_YEAR.get(str(dataset).lower())


def _check_year(year: int) -> int:
    if year not in CHALLENGE_YEARS:
        raise ConfigError(f"year: the challenge score exists for {list(CHALLENGE_YEARS)}, got {year!r}")
    return int(year)


@lru_cache(maxsize=None)
def _table(year: int) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...], np.ndarray]:
    name = f"physionet{year}_weights.csv"
    text = resources.files("ssl_ecg.evaluate").joinpath(name).read_text()
    lines = [[v.strip() for v in line.split(",")] for line in text.strip().splitlines()]
    cols, rows = lines[0][1:], [line[0] for line in lines[1:]]
    if rows != cols:
        raise ValueError(f"{name}: row and column classes differ")
    if any(len(line) != len(cols) + 1 for line in lines[1:]):
        raise ValueError(f"{name}: expected {len(cols)} weights on every row")
    groups = tuple(tuple(c.split("|")) for c in cols)
    weights = np.array([[float(v) for v in line[1:]] for line in lines[1:]], dtype=np.float64)
    weights.setflags(write=False)
    return tuple(g[0] for g in groups), groups, weights


def load_challenge_weights(year: int = 2020) -> tuple[list[str], np.ndarray]:
    """The bundled weights of ``year``.

    Args:
        year: 2020 or 2021.

    Returns:
        (class codes in order, each the first code of its ``|`` group), a (C, C) float64 copy.
    """
    classes, _, weights = _table(_check_year(year))
    return list(classes), weights.copy()


def equivalent_codes(year: int) -> dict[str, str]:
    """Every code of ``year``'s scored groups -> the group's first code (itself for single codes)."""
    _, groups, _ = _table(_check_year(year))
    return {code: group[0] for group in groups for code in group}


def modified_confusion_matrix(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """A[j, k] = sum over recordings with label j and output k of 1 / max(1, |labels ∪ outputs|)."""
    y, o = np.asarray(labels, dtype=bool), np.asarray(outputs, dtype=bool)
    if y.shape != o.shape or y.ndim != 2:
        raise ValueError(f"labels, outputs: expected equal (n, C) shapes, got {y.shape} and {o.shape}")
    norm = np.maximum((y | o).sum(1), 1).astype(np.float64)
    return y.T.astype(np.float64) @ (o / norm[:, None])


def challenge_score(labels: np.ndarray, outputs: np.ndarray, weights: np.ndarray | None = None,
                    classes: list[str] | None = None, normal_class: str = NORMAL_CLASS,
                    year: int | None = None) -> float:
    """The challenge metric of binary ``outputs`` (n, C) against multi-hot ``labels`` (n, C).

    Rows with no label are kept and scored (as all-zero rows); pass every
    recording of the evaluated set, not only those with a scored label.

    Args:
        labels: (n, C) multi-hot true labels in the weights' class order.
        outputs: (n, C) binary outputs, same order.
        weights: a (C, C) weight matrix with its ``classes``; default: the bundled
            matrix of ``year``.
        classes: class codes of ``weights``' rows/columns.
        normal_class: the inactive classifier's class (sinus rhythm).
        year: 2020 or 2021 when ``weights`` is None; None takes the year whose
            class count equals C (24: 2020, 26: 2021).

    Returns:
        The normalised score: 1 for the true labels, 0 for the inactive classifier;
        0.0 when those two coincide, as the official code does.
    """
    y = np.asarray(labels, dtype=bool)
    if weights is None:
        if year is None:
            by_size = {len(load_challenge_weights(yr)[0]): yr for yr in CHALLENGE_YEARS}
            if y.ndim != 2 or y.shape[1] not in by_size:
                raise ValueError(f"labels: expected (n, C) columns with C in {sorted(by_size)} "
                                 "(the 2020 or 2021 classes) "
                                 f"when no year or weights are given, got shape {y.shape}")
            year = by_size[y.shape[1]]
        classes, weights = load_challenge_weights(year)
    if classes is None or normal_class not in classes:
        raise ValueError(f"classes: must include the normal class {normal_class} (got {classes})")
    if y.ndim != 2 or y.shape[1] != len(weights) or weights.shape != (len(classes), len(classes)):
        raise ValueError(f"labels: expected (n, {len(weights)}) columns in the weights' class order, got {y.shape}")
    inactive = np.zeros_like(y)
    inactive[:, classes.index(normal_class)] = True
    observed = np.nansum(weights * modified_confusion_matrix(y, outputs))
    correct = np.nansum(weights * modified_confusion_matrix(y, y))
    base = np.nansum(weights * modified_confusion_matrix(y, inactive))
    return float((observed - base) / (correct - base)) if correct != base else 0.0
