"""One interface for every probe: a train/val/test bundle in, one result type out.

:class:`ProbeData` holds the three splits (embeddings for the frozen probes,
signals for fine-tuning and the supervised arm) with their labels and
patients; :func:`fit_probe` runs a probe by name on it and returns a
:class:`ProbeResult`. Every probe chooses its setting (C, k, epoch, lr x batch
size) on validation (macro) AUROC and scores the test split once, at that
setting. This module also holds the scikit-learn logistic probe.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from torch import nn

from ssl_ecg.data.splits import check_no_leakage
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.tasks import auroc, check_task

__all__ = ["ProbeData", "ProbeResult", "fit_probe", "logistic_probe", "PROBE_KINDS", "DEFAULT_CS"]

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
PROBE_KINDS = ("logistic", "torch", "knn", "finetune", "supervised")
_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ProbeData:
    """The train/validation/test bundle a probe fits, selects and scores on.

    Attributes:
        x_train, x_val, x_test: inputs, one row per record: embeddings (n, D) for
            the frozen probes, signals (n, L, T) for ``finetune`` and ``supervised``.
        y_train, y_val, y_test: labels: (n,) 0/1 (binary), (n,) class indices
            (multiclass) or (n, C) 0/1 (multi-label).
        patients_train, patients_val, patients_test: patient id of each record, or
            None; when given, no patient may be in two splits.
        task: the task's name, for error messages.

    Raises:
        ConfigError: inputs and labels of a split differ in length.
        SplitError: a patient is in two splits.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    patients_train: np.ndarray | None = None
    patients_val: np.ndarray | None = None
    patients_test: np.ndarray | None = None
    task: str = "task"

    def __post_init__(self) -> None:
        for split in _SPLITS:
            x, y, p = (getattr(self, f"{a}_{split}") for a in ("x", "y", "patients"))
            if len(x) != len(y) or (p is not None and len(p) != len(y)):
                raise ConfigError(f"task {self.task!r}, {split} split: {len(x)} inputs, {len(y)} labels and "
                                  f"{'no' if p is None else len(p)} patient ids; expected one per record")
        if all(getattr(self, f"patients_{s}") is not None for s in _SPLITS):
            check_no_leakage({s: set(map(str, getattr(self, f"patients_{s}"))) for s in _SPLITS})

    @classmethod
    def from_rows(cls, x: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, test: np.ndarray,
                  patients: np.ndarray | None = None, task: str = "task") -> "ProbeData":
        """The bundle of rows ``train``, ``val`` and ``test`` (index arrays) of ``x``, ``y`` and ``patients``."""
        rows = dict(zip(_SPLITS, (train, val, test)))
        kw: dict[str, Any] = {f"x_{s}": x[r] for s, r in rows.items()}
        kw.update({f"y_{s}": y[r] for s, r in rows.items()})
        if patients is not None:
            kw.update({f"patients_{s}": np.asarray(patients)[r] for s, r in rows.items()})
        return cls(task=task, **kw)

    def check(self) -> tuple[str, int]:
        """Task kind and class count, after checking every split holds every class (see :func:`check_task`)."""
        return check_task(self.y_train, self.y_val, self.y_test, self.task)


@dataclass
class ProbeResult:
    """What every probe returns: scores at the setting chosen on validation.

    Attributes:
        val_auroc: validation (macro) AUROC at the chosen setting.
        test_auroc: test (macro) AUROC at that setting, measured once.
        setting: the chosen setting, e.g. ``{"C": 0.1}`` (logistic), ``{"k": 20}``
            (kNN), ``{"epoch": 7}`` (torch probe, fine-tuning) or ``{"lr": 1e-3,
            "batch_size": 16, "epoch": 7}`` (supervised arm).
        test_scores: test predictions at that setting: (n,) binary decision values
            or (n, C) class scores.
        val_scores: validation predictions at that setting (e.g. to tune thresholds).
        grid: every tried setting with its validation AUROC (empty where the
            setting is an epoch of one training run).
        model: the fitted probe at the chosen setting, where the probe keeps one: for
            ``logistic``, ``(scaler, classifier)`` (scikit-learn); None otherwise.
    """

    val_auroc: float
    test_auroc: float
    setting: dict
    test_scores: np.ndarray
    val_scores: np.ndarray
    grid: list[dict] = field(default_factory=list)
    model: Any = field(default=None, repr=False, compare=False)


def fit_probe(kind: str, data: ProbeData, encoder: nn.Module | dict | None = None, **options: Any) -> ProbeResult:
    """Fit probe ``kind`` on ``data`` and score it.

    Args:
        kind: ``logistic`` (:func:`logistic_probe`), ``torch``
            (:func:`~ssl_ecg.evaluate.linear.torch_linear_probe`), ``knn``
            (:func:`~ssl_ecg.evaluate.knn.knn_probe`), ``finetune``
            (:func:`~ssl_ecg.evaluate.supervised.finetune`, ``encoder`` a module) or
            ``supervised`` (:func:`~ssl_ecg.evaluate.supervised.train_supervised`,
            ``encoder`` an architecture config).
        data: the bundle; embeddings for the frozen probes, signals for the others.
        encoder: the encoder to fine-tune, or the supervised arm's config.
        **options: the probe's own keyword arguments (``seed``, ``window``, ...).

    Raises:
        ConfigError: unknown ``kind``, or ``encoder`` missing or given where it is not used.
    """
    from ssl_ecg.evaluate.knn import knn_probe  # these modules import this one
    from ssl_ecg.evaluate.linear import torch_linear_probe
    from ssl_ecg.evaluate.supervised import finetune, train_supervised

    if kind not in PROBE_KINDS:
        raise ConfigError(f"probe: {kind!r} is unknown; expected one of {list(PROBE_KINDS)}")
    needs = {"finetune": nn.Module, "supervised": dict}.get(kind)
    if needs is None and encoder is not None:
        raise ConfigError(f"probe {kind!r}: takes no encoder (it probes the embeddings in data)")
    if needs is not None and not isinstance(encoder, needs):
        raise ConfigError(f"probe {kind!r}: encoder must be {'an nn.Module' if needs is nn.Module else 'a config dict'}"
                          f", got {type(encoder).__name__}")
    if kind == "finetune":
        return finetune(encoder, data, **options)
    if kind == "supervised":
        return train_supervised(encoder, data, **options)
    return {"logistic": logistic_probe, "torch": torch_linear_probe, "knn": knn_probe}[kind](data, **options)


def logistic_probe(data: ProbeData, Cs=DEFAULT_CS, seed: int = 0) -> ProbeResult:
    """Logistic-regression probe on standardised embeddings (statistics from the training set).

    Binary labels (n,) fit one model; class indices (n,) a multinomial model;
    multi-hot labels (n, C) one-vs-rest models. C is chosen by validation
    (macro) AUROC, ties going to the smaller C; the test AUROC is reported at
    that C only, never maximised over C.
    """
    kind, _ = data.check()
    scaler = StandardScaler().fit(data.x_train)
    xt, xv, xs = (scaler.transform(x) for x in (data.x_train, data.x_val, data.x_test))
    best, grid = None, []
    for c in sorted(Cs):
        clf = _fit(xt, data.y_train, c, seed, kind)
        val_scores = _scores(clf, xv, kind)
        val = auroc(data.y_val, val_scores, kind)
        grid.append({"C": c, "val_auroc": val})
        if best is None or val > best[0]:
            best = (val, c, clf, val_scores)
    val, c, clf, val_scores = best
    scores = _scores(clf, xs, kind)
    return ProbeResult(val_auroc=float(val), test_auroc=auroc(data.y_test, scores, kind), setting={"C": c},
                       test_scores=scores, val_scores=val_scores, grid=grid, model=(scaler, clf))


def _fit(x, y, c, seed, kind):
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    if kind == "multilabel":
        model = OneVsRestClassifier(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def _scores(clf, x, kind):
    return clf.decision_function(x) if kind == "binary" else clf.predict_proba(x)
