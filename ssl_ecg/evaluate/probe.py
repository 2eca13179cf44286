"""Linear probe: scikit-learn logistic regression with C chosen on validation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from ssl_ecg.data.splits import check_classes_present

__all__ = ["ProbeResult", "logistic_probe", "DEFAULT_CS"]

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass
class ProbeResult:
    test_auroc: float
    val_auroc: float
    C: float


def logistic_probe(
    x_train: np.ndarray, y_train: np.ndarray,
    x_val: np.ndarray, y_val: np.ndarray,
    x_test: np.ndarray, y_test: np.ndarray,
    Cs=DEFAULT_CS, task: str = "task", seed: int = 0,
) -> ProbeResult:
    """Binary logistic-regression probe on standardised embeddings.

    C is chosen by validation AUROC (ties: the smaller C); the test AUROC is
    reported at that C only, never maximised over C.
    """
    check_classes_present(y_train, "training labels", task)
    check_classes_present(y_val, "validation split", task)
    check_classes_present(y_test, "test split", task)
    scaler = StandardScaler().fit(x_train)
    xt, xv, xs = scaler.transform(x_train), scaler.transform(x_val), scaler.transform(x_test)
    best = None
    for c in sorted(Cs):
        clf = _fit(xt, y_train, c, seed)
        val = roc_auc_score(y_val, clf.decision_function(xv))
        if best is None or val > best[0]:
            best = (val, c, clf)
    val, c, clf = best
    return ProbeResult(test_auroc=float(roc_auc_score(y_test, clf.decision_function(xs))), val_auroc=float(val), C=c)


def _fit(x, y, c, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, y)
