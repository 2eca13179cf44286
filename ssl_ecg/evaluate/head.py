"""A frozen encoder and its linear probe as one ``nn.Module``: what export, quantisation, saliency and distillation
run.

The logistic probe of :func:`~ssl_ecg.evaluate.probe.logistic_probe` standardises record embeddings (training
statistics) and applies a linear map. A record's embedding is the mean of its window embeddings
(:func:`~ssl_ecg.evaluate.embed.embed_records`), and a linear map commutes with the mean, so

    decision(record) = W ((mean_w e_w - mu) / sigma) + b = mean_w [W ((e_w - mu) / sigma) + b]

:class:`ProbeModel` therefore maps one *window* (N, L, S) to the probe's logits (N, K), and
:meth:`ProbeModel.record_scores` averages window logits per record and applies the probe's output function
(identity for binary decision values, softmax for multiclass, sigmoid for one-vs-rest multi-label): the same
numbers as the probe's ``test_scores``, up to float32 rounding (tested).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ssl_ecg.data.splits import label_fraction_subsets
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.embed import LEAD_FEATURES, embed_records, tile_windows, window_embeddings
from ssl_ecg.evaluate.probe import DEFAULT_CS, ProbeData, ProbeResult, logistic_probe
from ssl_ecg.evaluate.tasks import patient_labels, task_kind, task_y

__all__ = ["WindowFeatures", "ProbeModel", "FittedProbe", "fit_probe_model", "probe_rows", "save_probe_head",
           "load_probe_head", "check_records", "HEAD_KINDS"]

HEAD_KINDS = ("binary", "multiclass", "multilabel")


def check_records(signals: np.ndarray | Tensor, window: int, name: str = "signals") -> None:
    """Refuse records that cannot be cut into at least one ``window``-sample window.

    Raises:
        ConfigError: ``signals`` is not (R, L, T), ``window`` < 1, or T < ``window``; names the record count,
            their length and the window.
    """
    shape = tuple(signals.shape)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ConfigError(f"window: expected a number of samples >= 1, got {window!r}")
    if len(shape) != 3:
        raise ConfigError(f"{name}: shape {shape}; expected records (R, L, T)")
    if shape[-1] < window:
        raise ConfigError(f"{name}: the {shape[0]} record(s) have {shape[-1]} samples, shorter than one "
                          f"{window}-sample window; expected records of at least {window} samples")


class WindowFeatures(nn.Module):
    """One evaluation window (N, L, S) -> the feature the probe sees (N, D).

    Per-lead encoders embed each lead alone and concatenate (D = L*E) or average (D = E) the lead embeddings, as
    :func:`~ssl_ecg.evaluate.embed.window_embeddings` does; multi-lead encoders take the window whole (D = E).
    """

    def __init__(self, encoder: nn.Module, per_lead: bool, lead_features: str = "concat"):
        super().__init__()
        if lead_features not in LEAD_FEATURES:
            raise ConfigError(f"lead_features: expected one of {list(LEAD_FEATURES)}, got {lead_features!r}")
        self.encoder = encoder
        self.per_lead = bool(per_lead)
        self.lead_features = lead_features

    def forward(self, x: Tensor) -> Tensor:
        return window_embeddings(self.encoder, x.unsqueeze(1), self.per_lead, self.lead_features).squeeze(1)


class ProbeModel(nn.Module):
    """Encoder features, the probe's standardisation and its linear map: (N, L, S) windows -> (N, K) logits.

    K is 1 for a binary task (the decision value), else the number of classes. Buffers ``mean`` and ``scale``
    are the training features' statistics (scikit-learn's ``StandardScaler``); ``linear`` holds the logistic
    coefficients.

    Args:
        features: the window feature module.
        mean, scale: (D,) standardisation.
        weight: (K, D) coefficients; bias: (K,).
        kind: ``binary``, ``multiclass`` or ``multilabel`` (decides :meth:`scores`).
        classes: class names, for the model card (optional).
    """

    def __init__(self, features: WindowFeatures, mean: Tensor, scale: Tensor, weight: Tensor, bias: Tensor,
                 kind: str, classes: Sequence[str] | None = None):
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ConfigError(f"kind: expected one of {list(HEAD_KINDS)}, got {kind!r}")
        weight, bias = torch.as_tensor(weight, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32)
        if weight.ndim != 2 or bias.shape != (weight.shape[0],) or tuple(mean.shape) != (weight.shape[1],) \
                or tuple(scale.shape) != (weight.shape[1],):
            raise ConfigError(f"probe head: weight {tuple(weight.shape)}, bias {tuple(bias.shape)}, mean "
                              f"{tuple(mean.shape)} and scale {tuple(scale.shape)} do not fit (K, D), (K,), (D,), (D,)")
        if kind == "binary" and weight.shape[0] != 1:
            raise ConfigError(f"probe head: a binary head has one output, got {weight.shape[0]}")
        self.features = features
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).clone())
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)
        self.kind = kind
        self.classes = [str(c) for c in classes] if classes is not None else None

    @property
    def n_outputs(self) -> int:
        return self.linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.linear((self.features(x) - self.mean) / self.scale)

    def scores(self, logits: Tensor | np.ndarray) -> np.ndarray:
        """The probe's score convention from logits (N, K): binary (N,) decision values, multiclass softmax
        probabilities (N, K), multi-label per-class sigmoid probabilities (N, K)."""
        logits = torch.as_tensor(logits, dtype=torch.float64)
        if self.kind == "binary":
            return logits[:, 0].numpy()
        if self.kind == "multiclass":
            return torch.softmax(logits, dim=1).numpy()
        return torch.sigmoid(logits).numpy()

    @torch.no_grad()
    def record_logits(self, signals: np.ndarray | Tensor, window: int, batch_records: int = 64) -> np.ndarray:
        """(R, L, T) records -> (R, K) logits: the mean of the logits of each record's non-overlapping windows.

        Raises:
            ConfigError: ``signals`` is not (R, L, T), or its records are shorter than one ``window`` (checked
                before any computation).
        """
        x = torch.as_tensor(signals, dtype=torch.float32)
        check_records(x, window)
        was_training = self.training
        self.eval()
        out = []
        try:
            for r0 in range(0, len(x), batch_records):
                w = tile_windows(x[r0:r0 + batch_records], window)  # (R, W, L, S)
                r, n_w = w.shape[:2]
                out.append(self(w.reshape(r * n_w, *w.shape[2:])).reshape(r, n_w, -1).mean(1))
        finally:
            self.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros((0, self.n_outputs), np.float32)

    def record_scores(self, signals: np.ndarray | Tensor, window: int, batch_records: int = 64) -> np.ndarray:
        """(R, L, T) records -> the probe's scores per record (see :meth:`scores`)."""
        return self.scores(self.record_logits(signals, window, batch_records))

    @classmethod
    def from_logistic(cls, features: WindowFeatures, scaler: Any, classifier: Any, kind: str,
                      classes: Sequence[str] | None = None) -> "ProbeModel":
        """From a fitted ``StandardScaler`` and ``LogisticRegression`` (binary, multinomial) or
        ``OneVsRestClassifier`` of them (multi-label), as :func:`~ssl_ecg.evaluate.probe.logistic_probe` fits."""
        if kind == "multilabel":
            weight = np.concatenate([e.coef_ for e in classifier.estimators_])
            bias = np.concatenate([e.intercept_ for e in classifier.estimators_])
        else:
            weight, bias = np.asarray(classifier.coef_), np.asarray(classifier.intercept_)
        return cls(features, torch.as_tensor(scaler.mean_), torch.as_tensor(scaler.scale_),
                   torch.as_tensor(weight), torch.as_tensor(bias), kind, classes)


@dataclass
class FittedProbe:
    """A fitted :class:`ProbeModel` with the probe's result and the records and patients behind it.

    Attributes:
        model: encoder + probe, (N, L, S) -> (N, K).
        result: the logistic probe's :class:`~ssl_ecg.evaluate.probe.ProbeResult` (C chosen on validation).
        rows: ``{"train", "val", "test"}`` -> row indices of the signals given to :func:`fit_probe_model`.
        label_patients: the patients whose labels fitted or selected the probe (train draw and validation), for
            provenance: a model that learns from these logits has seen their labels.
        y: labels of every row (NaN-free where the task labels the row).
    """

    model: ProbeModel
    result: ProbeResult
    rows: dict[str, np.ndarray]
    label_patients: list[str]
    y: np.ndarray


def probe_rows(table: pd.DataFrame, splits: dict[str, Sequence], task: str, fraction: float = 1.0, seed: int = 0,
               challenge_year: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, list | None]:
    """The labelled train (fraction ``fraction`` of its patients, seeded and nested as the curve draws them),
    validation and test rows of ``task``, with its labels and class names.

    Raises:
        ConfigError: ``task`` is not a column, or ``fraction`` is outside (0, 1].
    """
    if task not in table.columns:
        raise ConfigError(f"task: column {task!r} is not in the table (columns: {sorted(table.columns)})")
    if not 0 < float(fraction) <= 1:
        raise ConfigError(f"fraction: expected a number in (0, 1], got {fraction!r}")
    patients = table["patient_id"].astype(str).to_numpy()
    split_of = {str(p): name for name, members in splits.items() for p in members}
    record_split = np.array([split_of.get(p, "") for p in patients])
    y_all, names = task_y(table[task], record_split, task, {}, challenge_year=challenge_year)
    labelled = ~np.isnan(y_all if y_all.ndim == 1 else y_all[:, 0])
    rows = {name: np.flatnonzero(labelled & (record_split == name)) for name in ("train", "val", "test")}
    train_pat = patient_labels(patients, y_all, rows["train"])
    draw = label_fraction_subsets(list(train_pat), [float(fraction)], labels=train_pat, seed=seed)
    chosen = set(draw[float(fraction)])
    rows["train"] = np.array([i for i in rows["train"] if patients[i] in chosen], dtype=np.int64)
    return rows, np.nan_to_num(y_all).astype(int), names


def fit_probe_model(encoder: nn.Module, signals: np.ndarray, table: pd.DataFrame, splits: dict[str, Sequence],
                    task: str, window: int, per_lead: bool, fraction: float = 1.0, seed: int = 0,
                    lead_features: str = "concat", Cs: Sequence[float] = DEFAULT_CS,
                    challenge_year: int | None = None) -> FittedProbe:
    """Fit the logistic probe of ``task`` on a frozen encoder and wrap both as a :class:`ProbeModel`.

    The probe is the curve's logistic probe: features from :func:`~ssl_ecg.evaluate.embed.embed_records`,
    standardised on the training draw, C chosen on validation AUROC, test scored once.

    Args:
        encoder: the frozen encoder (left unchanged).
        signals: (R, L, T) records aligned with ``table`` (which has ``patient_id`` and ``task``).
        splits: ``{"train", "val", "test"}`` -> patient ids.
        task, fraction, seed: the task column and the seeded label draw of training patients.
        window, per_lead, lead_features: as the evaluation embeds records.
    """
    rows, y, names = probe_rows(table, splits, task, fraction, seed, challenge_year)
    patients = table["patient_id"].astype(str).to_numpy()
    feats = embed_records(encoder, signals, window, per_lead, lead_features=lead_features)
    data = ProbeData.from_rows(feats, y, rows["train"], rows["val"], rows["test"], patients=patients, task=task)
    result = logistic_probe(data, Cs=Cs, seed=seed)
    kind = "multilabel" if y.ndim == 2 else task_kind(y[np.concatenate(list(rows.values()))])
    scaler, clf = result.model
    model = ProbeModel.from_logistic(WindowFeatures(encoder, per_lead, lead_features), scaler, clf, kind,
                                     classes=names).eval()
    label_patients = sorted({patients[i] for i in np.concatenate([rows["train"], rows["val"]])})
    return FittedProbe(model=model, result=result, rows=rows, label_patients=label_patients, y=y)


def save_probe_head(model: ProbeModel, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write the head (standardisation and linear map, not the encoder) as ``path`` (safetensors) and a JSON
    beside it (``.json``: kind, classes, per_lead, lead_features and ``meta``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"mean": model.mean.contiguous(), "scale": model.scale.contiguous(),
               "weight": model.linear.weight.detach().contiguous(), "bias": model.linear.bias.detach().contiguous()},
              str(path))
    card = {"kind": model.kind, "classes": model.classes, "per_lead": model.features.per_lead,
            "lead_features": model.features.lead_features, **(meta or {})}
    path.with_suffix(".json").write_text(json.dumps(card, indent=2, default=str))
    return path


def load_probe_head(encoder: nn.Module, path: str | os.PathLike) -> tuple[ProbeModel, dict]:
    """Read a head written by :func:`save_probe_head` onto ``encoder``; returns the model and its JSON card.

    Raises:
        ConfigError: a file is missing or its contents do not fit.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    card_path = path.with_suffix(".json")
    for p in (path, card_path):
        if not p.is_file():
            raise ConfigError(f"{p}: probe head file not found")
    try:
        card = json.loads(card_path.read_text())
        tensors = load_file(str(path))
        model = ProbeModel(WindowFeatures(encoder, card["per_lead"], card.get("lead_features", "concat")),
                           tensors["mean"], tensors["scale"], tensors["weight"], tensors["bias"], card["kind"],
                           card.get("classes"))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, SafetensorError, OSError) as exc:
        raise ConfigError(f"{path}: expected a probe head (safetensors mean/scale/weight/bias and a JSON card with "
                          f"kind and per_lead) ({type(exc).__name__}: {exc})") from None
    return model.eval(), card
