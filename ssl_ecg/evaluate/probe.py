"""Linear probe: scikit-learn logistic regression with C chosen on validation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from ssl_ecg.evaluate.tasks import auroc, check_task

__all__ = ["ProbeResult", "logistic_probe", "DEFAULT_CS"]

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass
class ProbeResult:
    """Test and validation (macro) AUROC at the validation-selected setting.

    ``C`` is the chosen inverse regularisation (logistic probe) and ``best_epoch``
    the chosen epoch (torch probe, fine-tuning); ``val_scores`` and
    ``test_scores`` are the scores at that setting (e.g. to tune thresholds on
    validation).
    """

    test_auroc: float
    val_auroc: float
    C: float = float("nan")
    best_epoch: int = -1
    test_scores: np.ndarray | None = None
    val_scores: np.ndarray | None = None


def logistic_probe(
    x_train: np.ndarray, y_train: np.ndarray,
    x_val: np.ndarray, y_val: np.ndarray,
    x_test: np.ndarray, y_test: np.ndarray,
    Cs=DEFAULT_CS, task: str = "task", seed: int = 0,
) -> ProbeResult:
    """Logistic-regression probe on standardised embeddings (statistics from the training set).

    Binary labels (n,) fit one model; class indices (n,) a multinomial model;
    multi-hot labels (n, C) one-vs-rest models. C is chosen by validation
    (macro) AUROC, ties going to the smaller C; the test AUROC is reported at
    that C only, never maximised over C.
    """
    kind, _ = check_task(y_train, y_val, y_test, task)
    scaler = StandardScaler().fit(x_train)
    xt, xv, xs = scaler.transform(x_train), scaler.transform(x_val), scaler.transform(x_test)
    best = None
    for c in sorted(Cs):
        clf = _fit(xt, y_train, c, seed, kind)
        val_scores = _scores(clf, xv, kind)
        val = auroc(y_val, val_scores, kind)
        if best is None or val > best[0]:
            best = (val, c, clf, val_scores)
    val, c, clf, val_scores = best
    scores = _scores(clf, xs, kind)
    return ProbeResult(test_auroc=auroc(y_test, scores, kind), val_auroc=float(val), C=c, test_scores=scores,
                       val_scores=val_scores)


def _fit(x, y, c, seed, kind):
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    if kind == "multilabel":
        model = OneVsRestClassifier(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def _scores(clf, x, kind):
    return clf.decision_function(x) if kind == "binary" else clf.predict_proba(x)
