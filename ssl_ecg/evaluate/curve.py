"""Label-efficiency curves: arms x label fractions x seeds, with bootstrap 95% intervals and paired comparisons.

Fractions are drawn per patient, nested and seeded (see
:func:`ssl_ecg.data.splits.label_fraction_subsets`); validation and test
patients are fixed across the grid. Label encoding lives in
:mod:`ssl_ecg.evaluate.tasks`, the probes behind :func:`ssl_ecg.evaluate.probe.fit_probe`
and the figures in :mod:`ssl_ecg.evaluate.plots`.

Every ``curve.csv`` row carries a ``fingerprint`` (see :func:`cell_fingerprint`)
of what decides its value, and the software and hardware it was computed on
(:data:`PROVENANCE_COLUMNS`, not part of the fingerprint); a resumed run reuses
only rows whose fingerprint matches and whose cell's test predictions are stored
(``predictions/<fingerprint>.npz``, see :func:`run_curve`). :func:`summarize_runs`
turns rows and predictions of one or several splits into estimates, intervals,
paired comparisons, AULC and labels needed (maths in :mod:`ssl_ecg.evaluate.stats`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from torch import nn
from tqdm.auto import tqdm

from ssl_ecg.data.splits import check_no_leakage, label_fraction_subsets
from ssl_ecg.errors import ConfigError, SplitError
from ssl_ecg.evaluate.challenge import challenge_score, load_challenge_weights
from ssl_ecg.evaluate.embed import LEAD_FEATURES, embed_records, state_dict_hash
from ssl_ecg.evaluate.knn import KNN_KS, knn_probe  # noqa: F401 (knn_probe: re-export)
from ssl_ecg.evaluate.metrics import tune_thresholds
from ssl_ecg.evaluate.plots import plot_curve, plot_differences, plot_labels_needed
from ssl_ecg.evaluate.probe import DEFAULT_CS, ProbeData, fit_probe
from ssl_ecg.evaluate.stats import (
    FEW_POSITIVES,
    HIERARCHICAL_BOOTSTRAP,
    MIN_CLASS_PATIENTS,
    BootstrapInfeasible,
    SplitPredictions,
    aulc,
    bootstrap_p_value,
    hierarchical_replicates,
    holm,
    labels_needed_distribution,
    min_bootstrap_p,
    split_contrast,
    task_rng,
    verdict,
)
from ssl_ecg.evaluate.tasks import is_challenge_task, patient_labels, task_kind, task_labels, task_y

__all__ = ["CurveSpec", "run_curve", "summarize", "summarize_runs", "save_predictions", "load_predictions",
           "PREDICTIONS", "plot_differences", "plot_curve", "write_outputs", "labels_needed",
           "plot_labels_needed", "knn_probe", "task_labels", "line_name", "CURVE_COLUMNS", "PROBES",
           "RESULTS_SCHEMA", "PROVENANCE_COLUMNS", "cell_fingerprint", "result_fingerprint", "environment",
           "array_digest", "REFERENCE_ARMS", "is_reference_arm", "reference_line"]

RESULTS_SCHEMA = 2
"""Version of how results are computed. Bump it in any change that alters a curve or few-shot value (a probe's
defaults, label encoding, scoring): stored rows of an older schema are then recomputed, never reused.
2: every cell stores its test predictions (``predictions/<fingerprint>.npz``) and rows carry ``real_fraction``."""

PROVENANCE_COLUMNS = ["git_commit", "ssl_ecg_version", "torch_version", "sklearn_version", "numpy_version",
                      "platform", "cpu_count", "cuda_device"]
CURVE_COLUMNS = [
    "task", "arm", "probe", "fraction", "real_fraction", "seed", "metric", "value", "val_value", "n_train_patients",
    "n_train_records", "setting", "fingerprint", *PROVENANCE_COLUMNS, "reference",
]
"""``reference`` (last, so older files only lack a trailing column) names the arm's reference group: ``""`` for the
plain ``random_init`` / ``supervised`` arms (the baseline architecture, and rows of files written before the
column), ``"@simclr"`` for arms compared with ``random_init@simclr`` / ``supervised@simclr``. It is the run's grouping,
not the cell's value, so it is left out of the fingerprint and rewritten on resume."""
PROBES = ("logistic", "torch", "knn", "finetune")
_TEXT_COLUMNS = {c: str for c in ("fingerprint", "setting", "git_commit", "ssl_ecg_version", "torch_version",
                                  "sklearn_version", "numpy_version", "platform", "cuda_device", "reference")}
#: The curve's own reference arms. With matched references (``EvalConfig.matched_references``) an architecture
#: group named after its first arm gets copies named ``<reference>@<group>``, e.g. ``supervised@simclr``.
REFERENCE_ARMS = ("random_init", "supervised")


def is_reference_arm(arm: str) -> bool:
    """Whether ``arm`` is a reference arm (``random_init``, ``supervised`` or a group's ``...@group`` copy), which
    the summaries compare methods against but never compare as a method."""
    return any(arm == r or arm.startswith(f"{r}@") for r in REFERENCE_ARMS)


def reference_line(reference: str, group: str, probe: str) -> str:
    """The line a method of reference ``group`` (``""`` or ``"@simclr"``) is compared with: the group's copy of
    ``reference`` (``random_init`` or ``supervised``) with ``probe`` (:func:`line_name`), which may be absent (then
    the method has no such comparison: never one against another architecture's reference); the plain one for
    group ``""`` (rows without matched references compare as before)."""
    return line_name(f"{reference}{group}", probe)


@dataclass
class CurveSpec:
    """What a label-efficiency curve evaluates.

    Attributes:
        tasks: label columns of the table: 0/1 (binary) or categorical (multiclass, macro
            AUROC); NaN or empty rows are left out of that task.
        fractions: labelled fractions of the training patients, in (0, 1].
        seeds: one nested fraction draw (and supervised init) per seed.
        window: samples per evaluation window (the pretraining segment length).
        per_lead: encoders take one lead at a time; a dict gives it per arm (the
            ``supervised`` key, or else the first value, for the supervised arm).
        supervised: encoder config for the supervised-from-scratch arm, or None.
        supervised_epochs, supervised_lr: its training budget (and fine-tuning's).
        probes: evaluation of each encoder arm: ``logistic`` (scikit-learn, C on
            validation), ``torch`` (linear head, early stopping), ``knn`` (k on
            validation) and/or ``finetune`` (all weights, encoder lr x
            ``encoder_lr_factor``).
        supervised_lrs, supervised_batch_sizes: the supervised arm's grid, chosen on
            validation AUROC (default: ``supervised_lr`` and batch 64); the choice per
            cell goes to ``supervised_grid.csv``.
        supervised_min_steps: least optimiser steps per supervised epoch.
        challenge_year: 2020 or 2021 scores multi-label tasks over that year's CinC
            scored classes with its weights, keeping records with no scored class as
            all-zero rows (as the official scoring does); None: the 2020 classes,
            records without a label left out.
        split_hash: the hash of the run's ``split.json`` (patients per split, rule,
            seed, cache key); part of every row's fingerprint. Empty when the caller
            has no split artefact: the fingerprint then still covers the patient
            lists given to :func:`run_curve` and the signals' bytes.
        lead_features: how a per-lead encoder's lead embeddings feed the frozen probes
            (logistic, torch, knn): ``"concat"`` (L*E, default: keeps lead identity) or
            ``"mean"`` (E, mean-pooled over leads: the matched-dimension comparison with
            multi-lead encoders). Part of the fingerprint of those cells when it changes
            their features (per-lead arm, ``"mean"``); the supervised and fine-tune arms
            and multi-lead arms are unaffected.
        extra: free-form notes; not used, and not part of the fingerprint.
        extra_supervised: further supervised-from-scratch arms, ``{"supervised@<group>": encoder config}``
            (matched references: one per architecture group other than the first), trained like ``supervised``
            (same grid, epochs and validation choice) with their own config in their cells' fingerprints; their
            lead mode is ``per_lead[arm]``.
        references: arm -> its reference group (``""``, or ``"@<group>"`` for an arm compared with
            ``random_init@<group>`` / ``supervised@<group>``), written to each row's ``reference`` column; arms
            not named are ``""``. Not part of the fingerprint.
    """

    tasks: Sequence[str]
    fractions: Sequence[float] = (0.05, 0.1, 0.25, 0.5, 1.0)
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    window: int = 1000
    per_lead: bool | dict = True
    supervised: dict | None = None
    supervised_epochs: int = 60
    supervised_lr: float = 1e-3
    probes: Sequence[str] = ("logistic",)
    encoder_lr_factor: float = 0.1
    extra: dict = field(default_factory=dict)
    supervised_lrs: Sequence[float] | None = None
    supervised_batch_sizes: Sequence[int] = (64,)
    supervised_min_steps: int = 10
    challenge_year: int | None = None
    split_hash: str = ""
    lead_features: str = "concat"
    extra_supervised: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)

    def __post_init__(self):
        bad = [f for f in self.fractions if not 0 < float(f) <= 1]
        if bad:
            raise ConfigError(f"fractions: {bad} are outside (0, 1]")
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown or not self.probes:
            raise ConfigError(f"probes: {list(self.probes)} invalid; expected some of {list(PROBES)}")
        if not isinstance(self.split_hash, str):
            raise ConfigError(f"split_hash: expected a string (the split.json hash), got {self.split_hash!r}")
        if self.lead_features not in LEAD_FEATURES:
            raise ConfigError(f"lead_features: expected one of {list(LEAD_FEATURES)}, got {self.lead_features!r}")
        for arm, config in self.extra_supervised.items():
            if not (isinstance(arm, str) and arm.startswith("supervised@") and len(arm) > len("supervised@")):
                raise ConfigError(f"extra_supervised: arm {arm!r} must be named 'supervised@<group>'")
            if not isinstance(config, dict):
                raise ConfigError(f"extra_supervised.{arm}: expected an encoder config dict, got {config!r}")
        bad = {a: g for a, g in self.references.items() if not (g == "" or (isinstance(g, str) and g[:1] == "@"))}
        if bad:
            raise ConfigError(f"references: {bad} invalid; expected '' or '@<group>' per arm")

    @property
    def supervised_arms(self) -> dict[str, dict]:
        """Every supervised-from-scratch arm and its encoder config: ``supervised`` (when set), then
        :attr:`extra_supervised`."""
        return {**({"supervised": self.supervised} if self.supervised is not None else {}), **self.extra_supervised}

    def reference_of(self, arm: str) -> str:
        """``arm``'s reference group (``""`` or ``"@<group>"``; see :attr:`references`)."""
        return str(self.references.get(arm, ""))

    def lead_features_of(self, arm: str, probe: str) -> str:
        """The lead features ``probe`` sees for ``arm``: ``spec.lead_features`` for frozen probes on a per-lead
        arm, else ``"concat"`` (the supervised and fine-tune arms, and multi-lead encoders, are unaffected)."""
        if probe in ("supervised", "finetune") or not self.lead_mode(arm):
            return "concat"
        return self.lead_features

    def lead_mode(self, arm: str) -> bool:
        """Whether ``arm``'s encoder takes one lead at a time."""
        if isinstance(self.per_lead, dict):
            return bool(self.per_lead.get(arm, next(iter(self.per_lead.values()), True)))
        return bool(self.per_lead)

    def probe_settings(self, probe: str, arm: str = "supervised") -> dict:
        """The settings of ``probe`` that decide its results (the rest of the spec does not touch it); for the
        supervised probe, those of the supervised ``arm`` (its own config)."""
        if probe == "logistic":
            return {"Cs": list(DEFAULT_CS)}
        if probe == "knn":
            return {"ks": list(KNN_KS), "temperature": 0.1}
        if probe == "finetune":
            return {"lr": float(self.supervised_lr), "encoder_lr_factor": float(self.encoder_lr_factor),
                    "epochs": int(self.supervised_epochs)}
        if probe == "supervised":
            return {"config": self.supervised_arms.get(arm), "epochs": int(self.supervised_epochs),
                    "lrs": [float(v) for v in (self.supervised_lrs or (self.supervised_lr,))],
                    "batch_sizes": [int(v) for v in self.supervised_batch_sizes],
                    "min_steps": int(self.supervised_min_steps)}
        return {}  # torch: the probe's defaults, covered by RESULTS_SCHEMA


def line_name(arm: str, probe: str) -> str:
    """The curve line of an arm/probe cell: the arm alone for the logistic probe and the supervised arm."""
    return arm if probe in ("logistic", "supervised") else f"{arm}+{probe}"


def result_fingerprint(payload: Mapping[str, Any]) -> str:
    """SHA-256 of ``payload`` (canonical JSON, sorted keys) together with :data:`RESULTS_SCHEMA`."""
    text = json.dumps({"results_schema": RESULTS_SCHEMA, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def array_digest(x: np.ndarray, chunk_rows: int = 256) -> str:
    """SHA-256 of an array's dtype, shape and bytes (read in chunks of rows, so memmaps stay on disk)."""
    x = np.asarray(x)
    h = hashlib.sha256(f"{x.dtype.str}|{x.shape}|".encode())
    for r0 in range(0, len(x) if x.ndim else 0, chunk_rows):
        h.update(np.ascontiguousarray(x[r0:r0 + chunk_rows]).tobytes())
    if x.ndim == 0:
        h.update(x.tobytes())
    return h.hexdigest()


def _text_digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def cell_fingerprint(spec: CurveSpec, task: str, arm: str, probe: str, fraction: float, seed: int,
                     encoder_key: Mapping[str, Any], data_key: Mapping[str, Any]) -> str:
    """The fingerprint of one curve cell: what decides its rows' values, and nothing else.

    Covers the arm's encoder (``encoder_key``: its weights hash and config; the
    supervised arm's config), the cell's result-affecting settings (task,
    probe and :meth:`CurveSpec.probe_settings`, fraction, seed, window, per-lead
    mode, challenge year, lead features), the data (``data_key``: ``split_hash``, the patient
    lists, the signals and the task's labels) and :data:`RESULTS_SCHEMA`. The git
    commit, library versions and hardware are left out. Lead features enter only
    where they change the cell's features (:meth:`CurveSpec.lead_features_of` is
    ``"mean"``), so rows computed with the default concatenation keep their fingerprint.
    """
    payload = {
        "task": task, "arm": arm, "probe": probe, "fraction": float(fraction), "seed": int(seed),
        "window": int(spec.window), "per_lead": spec.lead_mode(arm), "challenge_year": spec.challenge_year,
        "probe_settings": spec.probe_settings(probe, arm), "encoder": dict(encoder_key), "data": dict(data_key),
    }
    if spec.lead_features_of(arm, probe) != "concat":
        payload["lead_features"] = spec.lead_features_of(arm, probe)
    return result_fingerprint(payload)


@functools.lru_cache(maxsize=1)
def environment() -> dict:
    """Where results were computed (the :data:`PROVENANCE_COLUMNS`): recorded beside each row, never keyed on.

    ``git_commit`` is the checkout's HEAD (empty outside a git checkout),
    ``cuda_device`` the first CUDA device's name (``none`` without CUDA).
    """
    import sklearn
    import torch

    from ssl_ecg import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, text=True,
                                capture_output=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"git_commit": commit, "ssl_ecg_version": __version__, "torch_version": torch.__version__,
            "sklearn_version": sklearn.__version__, "numpy_version": np.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count() or 0,
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}


def _encoder_key(encoder: nn.Module) -> dict:
    return {"weights_sha256": state_dict_hash(encoder), "config": getattr(encoder, "config", None)}


def _read_done(csv_path: Path) -> pd.DataFrame:
    if not csv_path.is_file():
        return pd.DataFrame(columns=CURVE_COLUMNS)
    done = pd.read_csv(csv_path, dtype=_TEXT_COLUMNS, keep_default_na=True)
    if "fingerprint" not in done.columns:  # written before keyed resume: nothing in it can be verified
        done["fingerprint"] = ""
    return done


def _row_keys(done: pd.DataFrame) -> list[tuple]:
    if done.empty or not {"task", "arm", "probe", "fraction", "seed"} <= set(done.columns):
        return [None] * len(done)
    return [(str(t), str(a), str(p), float(f), int(s))
            for t, a, p, f, s in zip(done["task"], done["arm"], done["probe"], done["fraction"], done["seed"])]


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


PREDICTIONS = "predictions"
"""Folder (beside ``curve.csv``) of each cell's test predictions: ``<fingerprint>.npz``."""
STALE_PREDICTIONS = "predictions.stale"
"""Where the predictions of rows moved to ``curve.stale.csv`` go."""


def save_predictions(path: str | Path, test_scores: np.ndarray, y_test: np.ndarray, patients: np.ndarray,
                     rows: np.ndarray, kind: str) -> Path:
    """Write one cell's test predictions atomically as a compressed npz (no pickled objects).

    Keys: ``test_scores`` (n,) or (n, C), ``y_test`` (n,) or (n, C), ``patients`` (n,)
    test patient ids (text), ``rows`` (n,) the records' row numbers in the curve's
    table, ``kind`` (``binary``, ``multiclass`` or ``multilabel``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, test_scores=np.asarray(test_scores), y_test=np.asarray(y_test),
                            patients=np.asarray(patients).astype(str), rows=np.asarray(rows, dtype=np.int64),
                            kind=np.array(kind))
    os.replace(tmp, path)
    return path


def load_predictions(path: str | Path) -> dict:
    """One cell's predictions written by :func:`save_predictions` (read with ``allow_pickle=False``)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in ("test_scores", "y_test", "patients", "rows", "kind")}
    except (OSError, KeyError, ValueError) as err:
        raise ConfigError(f"{path}: not a predictions file of ssl-ecg curve ({err}); expected an npz with "
                          "test_scores, y_test, patients, rows and kind") from err
    out["kind"] = str(out["kind"])
    return out


def _move_predictions(fingerprints: set, src: Path, dst: Path) -> None:
    for fp in fingerprints:
        f = src / f"{fp}.npz"
        if f.is_file():
            dst.mkdir(parents=True, exist_ok=True)
            os.replace(f, dst / f.name)


def run_curve(
    signals: np.ndarray,
    table: pd.DataFrame,
    splits: dict[str, Sequence],
    encoders: dict[str, nn.Module],
    spec: CurveSpec,
    out_dir: str | Path,
    progress: bool = True,
) -> pd.DataFrame:
    """Evaluate every (task, arm, probe, fraction, seed) cell and write ``curve.csv``.

    Resume: each row of ``curve.csv`` carries its cell's fingerprint
    (:func:`cell_fingerprint`: encoder weights and config, the cell's
    result-affecting settings, the split hash, patient lists, signals and
    labels, :data:`RESULTS_SCHEMA`) and the :func:`environment` it was computed
    in. A run reuses a stored cell only when its fingerprint equals the one
    this call computes; a cell of this grid whose stored fingerprint differs
    (another encoder, recipe setting, split, data or results schema), or a file
    written before fingerprints, is dropped from ``curve.csv`` (and
    ``supervised_grid.csv``) with a warning and recomputed. A different git
    commit, library version or machine does not invalidate a row. Rows of cells
    outside this grid stay in the file (not returned) only when their fingerprint
    is what this call would compute for them (same encoders, settings and data);
    every row whose fingerprint differs, in the grid or not, is moved to
    ``curve.stale.csv`` beside it (their predictions to ``predictions.stale/``), so
    ``curve.csv`` never mixes encoders. Each computed cell writes its test predictions
    (:func:`save_predictions`) before its row; a matching row whose predictions file
    is missing is dropped with a warning and recomputed. So
    an interrupted run resumes, and a re-run after any result-affecting change
    recomputes exactly the affected cells.

    Args:
        signals: (R, L, T) preprocessed records, aligned with ``table`` rows.
        table: has ``patient_id`` and the task columns.
        splits: ``{"train", "val", "test"}`` -> patient ids.
        encoders: frozen arms, e.g. ``{"cmsc": enc, "random_init": enc0}``.
        spec: the grid and its settings.
        out_dir: folder of ``curve.csv`` (and ``supervised_grid.csv``, ``dropped_classes.json``).
        progress: show a progress bar.

    Returns:
        This grid's rows of ``curve.csv`` (reused and new), in file order.

    Raises:
        ConfigError: a task is not a column of ``table``.
        SplitError: splits share patients, or a split has no labelled records of a task.
    """
    check_no_leakage(splits)
    missing = [t for t in spec.tasks if t not in table.columns]
    if missing:
        raise ConfigError(f"tasks: column {missing[0]!r} is not in the table (columns: {sorted(table.columns)})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, grid_path = out_dir / "curve.csv", out_dir / "supervised_grid.csv"
    patients = table["patient_id"].astype(str).to_numpy()
    split_of = {str(p): name for name, members in splits.items() for p in members}
    record_split = np.array([split_of.get(p, "") for p in patients])
    arms = [(a, p) for a in encoders for p in spec.probes]
    arms += [(a, "supervised") for a in spec.supervised_arms]
    cells = [(t, a, p, float(f), int(s)) for t in spec.tasks for s in spec.seeds for f in spec.fractions
             for a, p in arms]
    encoder_keys = {arm: _encoder_key(enc) for arm, enc in encoders.items()}
    encoder_keys["supervised"] = {"config": spec.supervised}
    encoder_keys.update({arm: {"config": config} for arm, config in spec.extra_supervised.items()})
    shared = {"split_hash": spec.split_hash, "signals": array_digest(signals),
              "splits": _text_digest({k: sorted(map(str, v)) for k, v in splits.items()})}
    labels = {t: _text_digest(table[["patient_id", t]].astype(str).to_numpy().tolist()) for t in spec.tasks}
    fingerprints = {c: cell_fingerprint(spec, *c, encoder_key=encoder_keys[c[1]],
                                        data_key={**shared, "labels": labels[c[0]]}) for c in cells}

    done = _read_done(csv_path)
    keys = _row_keys(done)

    def current(key):  # the fingerprint this call gives a stored row's cell; None when it cannot say
        if key in fingerprints:
            return fingerprints[key]
        if key is None or key[0] not in labels or key[1] not in encoder_keys:
            return None
        return cell_fingerprint(spec, *key, encoder_key=encoder_keys[key[1]], data_key={**shared,
                                                                                       "labels": labels[key[0]]})

    in_grid = np.array([k in fingerprints for k in keys], dtype=bool)
    matches = np.array([k in fingerprints and fp == fingerprints[k] for k, fp in zip(keys, done["fingerprint"])],
                       dtype=bool)
    stale = np.array([fp != current(k) for k, fp in zip(keys, done["fingerprint"])], dtype=bool)
    pred_dir = out_dir / PREDICTIONS
    unanalysable = np.array([not st and not (pred_dir / f"{fp}.npz").is_file()
                             for st, fp in zip(stale, done["fingerprint"])], dtype=bool)
    matches &= ~unanalysable
    if unanalysable.any():  # a value without its predictions gets no interval: recomputed, never half-used
        warnings.warn(f"{csv_path}: {int(unanalysable.sum())} row(s) have no stored predictions in "
                      f"{pred_dir.name}/ (<fingerprint>.npz); dropped and recomputed", stacklevel=2)
    if stale.any() or unanalysable.any() or (len(done) and list(done.columns) != CURVE_COLUMNS):
        if stale.any():
            n_cells = len({k for k, s in zip(keys, stale) if s})
            stale_path = out_dir / "curve.stale.csv"
            moved = done.loc[stale]
            if stale_path.is_file():
                moved = pd.concat([pd.read_csv(stale_path, dtype=_TEXT_COLUMNS), moved], ignore_index=True,
                                  sort=False)
            _write_atomic(moved, stale_path)
            _move_predictions(set(moved["fingerprint"].dropna().astype(str)), pred_dir,
                              out_dir / STALE_PREDICTIONS)
            warnings.warn(f"{csv_path}: {int(stale.sum())} row(s) of {n_cells} cell(s) were computed with another "
                          "encoder, setting, split, data or results schema (fingerprint differs); moved to "
                          f"{stale_path.name}, and those of this grid ({int((stale & in_grid).sum())}) are "
                          "recomputed", stacklevel=2)
        done = done.loc[~stale & ~unanalysable].reindex(columns=CURVE_COLUMNS)
        _write_atomic(done, csv_path)
    if grid_path.is_file():
        grid = pd.read_csv(grid_path, dtype={"fingerprint": str})
        keep = (grid["fingerprint"].isin(set(done["fingerprint"])).to_numpy() if "fingerprint" in grid
                else np.zeros(len(grid), bool))
        if not keep.all():
            _write_atomic(grid.loc[keep], grid_path)
    done_keys = {k for k, m in zip(keys, matches) if m}
    todo = [c for c in cells if c not in done_keys]

    frozen = [p for p in spec.probes if p != "finetune"]
    needs_feats = {a for _, a, p, _, _ in todo if p in frozen}
    feats = {arm: embed_records(encoders[arm], signals, spec.window, spec.lead_mode(arm),
                                lead_features=spec.lead_features) for arm in encoders if arm in needs_feats}
    bar = tqdm(total=len(todo), desc="label-efficiency curve", disable=not progress)
    subsets_cache: dict = {}
    dropped: dict = {}
    tasks: dict = {}
    env = environment()
    for cell in todo:
        task, arm, probe, frac, seed = cell
        if task not in tasks:
            tasks[task] = task_y(table[task], record_split, task, dropped, challenge_year=spec.challenge_year)
        y_all, names = tasks[task]
        labelled = ~np.isnan(y_all if y_all.ndim == 1 else y_all[:, 0])
        idx = {name: np.flatnonzero(labelled & (record_split == name)) for name in ("train", "val", "test")}
        for name, members in idx.items():
            if len(members) == 0:
                raise SplitError(f"task {task!r}: split {name!r} has no labelled records")
        key = (task, seed)
        if key not in subsets_cache:
            train_pat = patient_labels(patients, y_all, idx["train"])
            subsets_cache[key] = (label_fraction_subsets(list(train_pat), spec.fractions, labels=train_pat,
                                                         seed=seed), len(train_pat))
        subsets, n_train_pat = subsets_cache[key]
        chosen = set(subsets[frac])
        tr = np.array([i for i in idx["train"] if patients[i] in chosen])
        y = np.nan_to_num(y_all).astype(int)
        va, te = idx["val"], idx["test"]
        x = signals if probe in ("supervised", "finetune") else feats[arm]
        data = ProbeData.from_rows(x, y, tr, va, te, patients=patients, task=task)
        fp = fingerprints[cell]
        if probe == "supervised":
            res = fit_probe("supervised", data, encoder=spec.supervised_arms[arm], window=spec.window,
                            per_lead=spec.lead_mode(arm), lr=spec.supervised_lrs or (spec.supervised_lr,),
                            batch_size=spec.supervised_batch_sizes, min_steps=spec.supervised_min_steps,
                            epochs=spec.supervised_epochs, seed=seed)
            chosen_setting = (res.setting["lr"], res.setting["batch_size"])
            pd.DataFrame([{"task": task, "fraction": float(frac), "seed": int(seed), **g,
                           "chosen": (g["lr"], g["batch_size"]) == chosen_setting, "fingerprint": fp}
                          for g in res.grid]).to_csv(grid_path, mode="a", header=not grid_path.is_file(), index=False)
        elif probe == "finetune":
            res = fit_probe("finetune", data, encoder=encoders[arm], window=spec.window, per_lead=spec.lead_mode(arm),
                            lr=spec.supervised_lr, encoder_lr_factor=spec.encoder_lr_factor,
                            epochs=spec.supervised_epochs, seed=seed)
        else:
            res = fit_probe(probe, data, seed=seed)
        te_kind = task_kind(y[np.concatenate([tr, va, te])])
        save_predictions(pred_dir / f"{fp}.npz", test_scores=res.test_scores, y_test=y[te], patients=patients[te],
                         rows=te, kind=te_kind)  # before the row, so every row has its predictions
        base = {"task": task, "arm": arm, "probe": probe, "fraction": float(frac),
                "real_fraction": len(chosen) / n_train_pat, "seed": int(seed),
                "n_train_patients": len(chosen), "n_train_records": len(tr),
                "setting": json.dumps(res.setting, sort_keys=True), "fingerprint": fp, **env,
                "reference": spec.reference_of(arm)}
        new_rows = [{**base, "metric": "auroc", "value": res.test_auroc, "val_value": res.val_auroc}]
        if is_challenge_task(names, y_all, spec.challenge_year):
            new_rows.append({**base, "metric": "challenge",
                             **_challenge_row(names, y[va], res.val_scores, y[te], res.test_scores,
                                              year=spec.challenge_year)})
        pd.DataFrame(new_rows, columns=CURVE_COLUMNS).to_csv(csv_path, mode="a", header=not csv_path.is_file(),
                                                             index=False)
        bar.update(1)
    bar.close()
    if dropped:
        (out_dir / "dropped_classes.json").write_text(json.dumps(dropped, indent=2, default=str))
    final = pd.read_csv(csv_path, dtype=_TEXT_COLUMNS)
    mine = np.array([k in fingerprints and fp == fingerprints[k]
                     for k, fp in zip(_row_keys(final), final["fingerprint"])], dtype=bool)
    # reused rows take this run's grouping (a finished run, rerun with matched references, keeps its values)
    groups = np.array([spec.reference_of(a) for a in final["arm"].astype(str)], dtype=object)
    regroup = mine & (final["reference"].fillna("").to_numpy(dtype=object) != groups)
    if regroup.any():
        final.loc[regroup, "reference"] = groups[regroup]
        _write_atomic(final, csv_path)
    final = final.loc[mine].reset_index(drop=True)
    final["reference"] = final["reference"].fillna("")
    return final


def _challenge_row(names, y_val, val_scores, y_test, test_scores, year: int | None = None) -> dict:
    """Challenge score of ``year`` (None: 2020) on test, with per-class thresholds tuned for F1 on validation."""
    thr = tune_thresholds(y_val, val_scores)
    classes, weights = load_challenge_weights(year or 2020)
    col = [classes.index(str(n)) for n in names]

    def full(y):
        out = np.zeros((len(y), len(classes)), dtype=bool)
        out[:, col] = y
        return out

    return {"value": challenge_score(full(y_test), full(test_scores >= thr), weights, classes),
            "val_value": challenge_score(full(y_val), full(val_scores >= thr), weights, classes)}


NO_PREDICTIONS = "t over seeds (no stored predictions: the test set's variance is not covered)"
NOT_BOOTSTRAPPED = "t over seeds (this metric has no patient bootstrap: the test set's variance is not covered)"


def _panels(curve: pd.DataFrame) -> pd.DataFrame:
    """Adds ``line`` (:func:`line_name`), ``panel`` (the task; ``"task [metric]"`` for metrics other than AUROC) and
    ``reference`` (``""`` where rows lack it: files written before matched references)."""
    curve = curve.copy()
    curve["reference"] = curve["reference"].fillna("").astype(str) if "reference" in curve.columns else ""
    curve["line"] = ([line_name(a, p) for a, p in zip(curve["arm"], curve["probe"])] if "probe" in curve.columns
                     else curve["arm"])
    curve["base_arm"] = curve["arm"]
    curve["panel"] = ([t if m == "auroc" else f"{t} [{m}]" for t, m in zip(curve["task"], curve["metric"])]
                      if "metric" in curve.columns else curve["task"])
    return curve


def _t_interval(v: np.ndarray, confidence: float) -> tuple[float, float]:
    mean, half = float(v.mean()), float("nan")
    if len(v) > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean - half, mean + half


def _prediction_file(pdirs: Sequence[Path] | None, fingerprint: Any) -> Path | None:
    """The stored predictions of a row's cell: ``<fingerprint>.npz`` in the first of ``pdirs`` that has it."""
    if not pdirs or not isinstance(fingerprint, str):
        return None
    for pdir in pdirs:
        if (Path(pdir) / f"{fingerprint}.npz").is_file():
            return Path(pdir) / f"{fingerprint}.npz"
    return None


def _test_sets(panel_rows: list[pd.DataFrame], pred_dirs: list[list[Path] | None]) -> tuple[list, set]:
    """Per run: a :class:`~ssl_ecg.evaluate.stats.SplitPredictions` of the panel's cells with predictions, and the cells
    (line, fraction) that lack predictions in some run (those fall back to the t interval)."""
    sets, missing = [], set()
    for rows, pdir in zip(panel_rows, pred_dirs):
        scores: dict = {}
        ref = None
        for line, frac, seed, fp, metric in zip(rows["line"], rows["fraction"], rows["seed"],
                                                rows.get("fingerprint", pd.Series([None] * len(rows))),
                                                rows.get("metric", pd.Series(["auroc"] * len(rows)))):
            cell = (str(line), float(frac))
            path = _prediction_file(pdir, fp)
            if metric != "auroc" or path is None or not path.is_file():
                missing.add(cell)
                continue
            pred = load_predictions(path)
            if ref is None:
                ref = (path, pred)
            elif not np.array_equal(pred["rows"], ref[1]["rows"]) or not np.array_equal(pred["y_test"],
                                                                                         ref[1]["y_test"]):
                raise ConfigError(f"{path}: its test records differ from those of {ref[0].name}; expected one "
                                  "test set per task and split")
            scores.setdefault(cell, {})[int(seed)] = pred["test_scores"]
        sets.append((ref, scores))
    out = []
    for ref, scores in sets:
        kept = {c: v for c, v in scores.items() if c not in missing}
        if ref is not None and kept:
            pred = ref[1]
            out.append(SplitPredictions(pred["y_test"], pred["patients"], pred["kind"], kept))
    return out, missing


def _pct(f: float) -> str:
    return f"{100 * float(f):g}%"


#: The pre-specified comparison families of a task, each Holm-corrected on its own (see :func:`summarize_runs`).
FAMILIES = ("headline", "vs random_init", "vs supervised", "vs features")
#: The hand-crafted feature arm (``ssl_ecg.evaluate.runner.FEATURE_ARM``; runner imports this module).
_FEATURES = "features"


def _comparisons(lines: dict, cells: dict, boot: dict, low_fraction: float, confidence: float,
                 groups: Mapping[str, str] | None = None) -> list[dict]:
    """Paired differences of the panel's bootstrapped cells (:func:`~ssl_ecg.evaluate.stats.split_contrast` over
    the splits holding both cells), Holm-adjusted within each of :data:`FAMILIES`. A line of reference group
    ``groups[line]`` (e.g. ``"@simclr"``) is compared with that group's references (:func:`reference_line`),
    and with none of another architecture where the panel lacks them; reference arms (:func:`is_reference_arm`)
    are not compared as methods."""
    groups = groups or {}
    pairs = []
    for line, (arm, probe) in lines.items():
        if is_reference_arm(arm):
            continue
        group = groups.get(line, "")
        fracs = sorted(f for (ln, f) in cells if ln == line)
        supervised = reference_line("supervised", group, "supervised")
        refs = [("vs random_init", reference_line("random_init", group, probe)),
                ("vs supervised", supervised)]
        if arm != _FEATURES:
            refs.append(("vs features", line_name(_FEATURES, probe)))
        for family, ref in refs:
            pairs += [(family, (line, f), (ref, f)) for f in fracs if (ref, f) in cells]
        low = low_fraction if low_fraction in fracs else min(fracs)
        if low < 1.0 and (line, low) in cells and (supervised, 1.0) in cells:
            pairs.append(("headline", (line, low), (supervised, 1.0)))
    out = []
    n_boot = len(next(iter(boot["replicates"].values()))) if boot["replicates"] else 0
    for family, a, b in pairs:
        if a not in boot["replicates"] or b not in boot["replicates"]:
            continue
        res = split_contrast(boot, {a: 1.0, b: -1.0}, confidence)
        if res.n_splits == 0:  # no split holds both cells: nothing is paired
            continue
        name = (f"{a[0]} - {b[0]} at {_pct(a[1])}" if a[1] == b[1]
                else f"{a[0]} - {b[0]} at {_pct(a[1])} vs {_pct(b[1])}")
        out.append({"name": name, "a": [a[0], a[1]], "b": [b[0], b[1]], "family": family,
                    "estimate": res.estimate, "ci_low": res.low, "ci_high": res.high,
                    "p": bootstrap_p_value(res.replicates), "n_splits": res.n_splits,
                    "sigma_between": res.sigma_between, "p_min": min_bootstrap_p(n_boot)})
    for family in FAMILIES:
        members = [c for c in out if c["family"] == family]
        for c, p in zip(members, holm([c["p"] for c in members])):
            c["family_size"] = len(members)
            c["p_holm"] = float(p)
            c["p_holm_min"] = float(min(1.0, len(members) * c["p_min"]))
            c["verdict"] = verdict(c["name"], c["estimate"], c["ci_low"], c["ci_high"], c["p_holm"], "Holm")
    return out


def _needed(lines: dict, estimates: dict, boot: dict | None, reference: str, skip: tuple,
            confidence: float, groups: Mapping[str, str] | None = None) -> dict | None:
    """Labels needed to reach ``reference`` at 100%: point (from the estimates) and, when bootstrapped, per
    replicate (:func:`~ssl_ecg.evaluate.stats.labels_needed_distribution`).

    A line of reference group ``groups[line]`` (e.g. ``"@simclr"``) is measured against that group's copy
    (``random_init@simclr``), and is then listed under ``references`` with its own reference and target; where
    that copy has no cell at 100% the line is left out, never measured against another architecture's reference.
    ``target`` and ``reference`` name the plain one. Lines of the reference arms named in ``skip`` (any group's
    copy too) and each reference itself are left out. None without the plain reference.
    """
    groups = groups or {}
    if (reference, 1.0) not in estimates:
        return None
    out: dict = {"target": estimates[(reference, 1.0)], "reference": f"{reference} at 100%", "fractions": {},
                 "bootstrap": {}}
    own: dict = {}
    for line, (arm, _) in lines.items():
        ref = f"{reference}{groups.get(line, '')}"
        if line == ref or (is_reference_arm(arm) and arm.split("@")[0] in skip) or (ref, 1.0) not in estimates:
            continue  # a line whose own architecture's reference is missing is not measured against another's
        target = estimates[(ref, 1.0)]
        if ref != reference:
            own[line] = {"reference": f"{ref} at 100%", "target": target}
        fracs = sorted(f for (ln, f) in estimates if ln == line)
        reached = [f for f in fracs if estimates[(line, f)] >= target]
        out["fractions"][line] = reached[0] if reached else None
        reps = boot["replicates"] if boot else {}
        if (ref, 1.0) in reps and all((line, f) in reps for f in fracs):
            if "split_estimates" in boot:
                # paired: per fraction the contrast line - reference at 100% over the same splits, draws and
                # patients (split_contrast), reached where it is >= 0; comparing the two cells' separately
                # widened replicates would lose the pairing
                diffs = np.stack([split_contrast(boot, {(line, f): 1.0, (ref, 1.0): -1.0},
                                                 confidence).replicates for f in fracs], axis=1)
                goal = np.zeros(len(diffs))
            else:
                diffs = np.stack([reps[(line, f)] for f in fracs], axis=1)
                goal = reps[(ref, 1.0)]
            out["bootstrap"][line] = labels_needed_distribution(fracs, diffs, goal, confidence)
    if own:  # only with matched references, so other summaries keep their keys
        out["references"] = own
    return out


def summarize_runs(runs: Sequence[tuple[pd.DataFrame, str | Path | Sequence[str | Path] | None]], n_boot: int = 1000,
                   seed: int = 0,
                   confidence: float = 0.95, low_fraction: float = 0.1,
                   min_class_patients: int = MIN_CLASS_PATIENTS) -> dict:
    """Estimates, intervals, paired comparisons, AULC and labels needed of one or several curve runs.

    Each run is one split (its ``curve.csv`` rows and its ``predictions/`` folder,
    or None); several runs of the same grid on different split seeds combine into
    one summary. Intervals come from :func:`~ssl_ecg.evaluate.stats.hierarchical_replicates`:
    every replicate resamples the test patients (once per patient id across the
    splits' test sets) and the label draws (seeds); the estimate is the mean over
    splits and draws of the full-test-set AUROC. A cell with a row
    lacking stored predictions (or a metric other than AUROC, e.g. the challenge
    score) falls back to a t interval over its rows, and its ``interval`` says so.

    The splits are fixed: the between-split (run-to-run) variance is added by the
    method of moments (:func:`~ssl_ecg.evaluate.stats.split_contrast`; each cell
    and comparison records ``sigma_between``, the between-split SD, and
    ``n_splits``). A cell missing from some splits averages the splits it has
    (its ``n_splits`` says how many), and a comparison uses only the splits
    holding both cells.

    Every line of a task shares the replicates, so differences are paired. The
    comparisons fall in pre-specified families (:data:`FAMILIES`), each
    Holm-adjusted on its own within a task: ``headline`` (each encoder or
    feature line at ``low_fraction``, 10% or else its smallest fraction, vs
    ``supervised`` at 100%), ``vs random_init`` (same probe, each fraction),
    ``vs supervised`` (each fraction) and ``vs features`` (each encoder line vs
    the hand-crafted feature arm with the same probe, where it exists). p-values
    are two-sided bootstrap p-values; B replicates cannot give p below
    ``p_min`` = 2 / (B + 1), so a family of k comparisons needs
    B > 2 k / alpha - 1 (alpha = 1 - ``confidence``) for any Holm-adjusted p to
    reach alpha; a warning says when ``n_boot`` is too small. With matched references (rows whose ``reference``
    column names a group, e.g. ``"@simclr"``), a line's random_init, supervised, headline and labels-needed
    references are its group's copies (``random_init@simclr``, ``supervised@simclr``) where the rows hold them;
    reference arms (:func:`is_reference_arm`) are never compared as methods.

    A bootstrapped cell's macro AUROC averages the classes with at least
    ``min_class_patients`` test patients on each side in its split
    (:func:`~ssl_ecg.evaluate.stats.kept_classes`; default
    :data:`~ssl_ecg.evaluate.stats.MIN_CLASS_PATIENTS`, adopted after the first
    report from test-set class counts only, no arm's score: a class with one or
    two patients on a side is lost by a large share of patient replicates, which
    then no longer describe the test set; each split keeps its own classes); the
    ``bootstrap["classes"]`` entry counts the classes scored and dropped per task
    and split, and its estimate can differ from the t interval's mean over all
    scorable classes. A task whose test sets cannot be bootstrapped (no class
    passes the rule, or replicates keep losing a class) gets t intervals, each
    cell's ``interval`` and ``bootstrap["failed"][task]`` say why, and no
    comparison. Cells whose test set (in any split) has fewer than
    :data:`~ssl_ecg.evaluate.stats.FEW_POSITIVES` patients on one side of a class
    are marked ``few_positives`` (their percentile interval under-covers), and
    zero-width intervals (e.g. [1, 1] of a perfect score) ``degenerate``.

    Args:
        runs: ``[(curve rows, predictions folder or None), ...]``, one per split; a list of folders is searched
            in order (e.g. a run's ``predictions/`` and its feature arm's ``features/predictions/``).
        n_boot: bootstrap replicates.
        seed: seed of the replicates (each task draws from its own stream, :func:`~ssl_ecg.evaluate.stats.task_rng`).
        confidence: interval coverage.
        low_fraction: the fraction compared with supervised at 100%.
        min_class_patients: the fewest test patients on each side of a class for it to be scored (1: every
            class with a positive and a negative patient).

    Returns:
        ``{"summary": {task: {line: {fraction: cell}}}, "aulc": {task: {line: {...}}}, "comparisons": {task:
        [...]}, "labels_needed": {task: ...} (vs random_init at 100%), "labels_needed_vs_supervised": {task: ...},
        "bootstrap": settings}``; a cell holds ``mean`` (= ``estimate``), ``ci_low``, ``ci_high``,
        ``interval`` (the method), ``n_seeds``, ``n_splits``, ``n_test_patients``, ``real_fraction``,
        ``t_ci_low``/``t_ci_high`` (the t interval over its rows), ``few_positives``, ``degenerate`` and,
        bootstrapped, ``sigma_between``, ``class_patients`` (fewest patients on one side of a class),
        ``n_redrawn``, ``patient_se`` (and ``delong_se`` for binary tasks: the cross-check of the patient
        bootstrap's standard error). A comparison holds ``name``, ``a``, ``b``, ``family``, ``family_size``,
        ``estimate``, ``ci_low``, ``ci_high``, ``p``, ``p_holm``, ``p_min``, ``p_holm_min`` (the smallest
        attainable adjusted p), ``n_splits``, ``sigma_between`` and ``verdict``.
    """
    if not runs:
        raise ConfigError("runs: expected at least one (curve rows, predictions folder) pair, got none")
    needed_columns = ("task", "arm", "fraction", "seed", "value")
    for i, (df, _) in enumerate(runs):
        lacking = [c for c in needed_columns if c not in getattr(df, "columns", ())]
        if lacking:
            raise ConfigError(f"runs[{i}]: curve rows lack column(s) {lacking}; expected curve.csv rows with "
                              f"{list(needed_columns)}")
    frames = [_panels(df) for df, _ in runs]
    dirs = [None if d is None else [Path(d)] if isinstance(d, (str, os.PathLike)) else [Path(x) for x in d]
            for _, d in runs]
    result: dict = {"summary": {}, "aulc": {}, "comparisons": {}, "labels_needed": {},
                    "labels_needed_vs_supervised": {},
                    "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "confidence": float(confidence),
                                  "method": HIERARCHICAL_BOOTSTRAP, "n_splits": len(runs), "n_redrawn": {},
                                  "p_value": "two-sided bootstrap p-value of the paired difference",
                                  "p_min": min_bootstrap_p(n_boot),
                                  "correction": "Holm (statsmodels multipletests) within each pre-specified family "
                                                f"of a task's comparisons: {', '.join(FAMILIES)}",
                                  "between_split": "method of moments: sigma_b^2 = max(0, s^2 of the split "
                                                   "estimates - its draw/patient part); replicates scaled to "
                                                   "variance V_within + sigma_b^2 / M",
                                  "few_positives": f"fewer than {FEW_POSITIVES} patients on one side of a class",
                                  "aulc": "trapezoid on log10(fraction), divided by the axis range",
                                  "redraw": "replicates missing a class are redrawn (n_redrawn)",
                                  "min_class_patients": int(min_class_patients),
                                  "class_rule": f"a class is scored only with >= {int(min_class_patients)} test "
                                                "patients on each side in the split (classes: per task and split, "
                                                "classes scored and dropped)",
                                  "classes": {}, "failed": {}}}
    panels = list(dict.fromkeys(p for f in frames for p in f["panel"]))
    largest = 0  # the largest comparison family, for the n_boot warning
    for panel in panels:
        rows = [f.loc[f["panel"] == panel] for f in frames]
        allrows = pd.concat(rows, ignore_index=True)
        probes = allrows["probe"] if "probe" in allrows else ["logistic"] * len(allrows)
        lines = {ln: (a, p) for ln, a, p in zip(allrows["line"], allrows["base_arm"], probes)}
        groups = dict(zip(allrows["line"], allrows["reference"]))  # line -> its reference group ("" or "@simclr")
        mixed = allrows.groupby("line")["reference"].nunique()
        if (mixed > 1).any():  # runs that disagree would make a line's references depend on the order of the runs
            line = mixed.index[mixed > 1][0]
            raise ConfigError(f"runs: line {line!r} has reference groups "
                              f"{sorted(set(allrows.loc[allrows['line'] == line, 'reference']))} in different runs; "
                              "expected one (evaluate every split with the same matched_references)")
        sets, missing = _test_sets(rows, dirs)
        empty = {"estimate": {}, "replicates": {}, "n_redrawn": 0, "patient_se": {}, "delong_se": {}}
        try:
            boot = (hierarchical_replicates(sets, n_boot=n_boot, rng=task_rng(seed, panel), confidence=confidence,
                                            min_class_patients=min_class_patients) if sets else empty)
        except BootstrapInfeasible as exc:  # a test set too small for the patient bootstrap: t intervals, saying why
            boot, sets = empty, []
            result["bootstrap"]["failed"][panel] = str(exc)
        if sets:
            result["bootstrap"]["classes"][panel] = [
                {"scored": len(k), "dropped": len(d)} for k, d in zip(boot["classes"], boot["dropped"])]
        boot["replicates"] = {c: r for c, r in boot["replicates"].items() if c not in missing}
        result["bootstrap"]["n_redrawn"][panel] = int(boot["n_redrawn"])
        n_test = [len(np.unique(ts.patients)) for ts in sets]
        estimates: dict = {}
        summary = result["summary"].setdefault(panel, {})
        for (line, frac), g in allrows.groupby(["line", "fraction"], sort=False):
            cell = (str(line), float(frac))
            v = g["value"].to_numpy(dtype=float)
            t_lo, t_hi = _t_interval(v, confidence)
            entry = {"n_seeds": int(len(v)), "n_splits": int(sum(len(r.loc[(r["line"] == line)
                                                                           & (r["fraction"] == frac)]) > 0
                                                                for r in rows)),
                     "real_fraction": (float(g["real_fraction"].mean()) if "real_fraction" in g
                                       and g["real_fraction"].notna().all() else None),
                     "t_ci_low": t_lo, "t_ci_high": t_hi}
            if cell in boot["replicates"]:
                est, lo, hi = boot["estimate"][cell], boot["low"][cell], boot["high"][cell]
                entry.update(interval=HIERARCHICAL_BOOTSTRAP, n_test_patients=n_test[0] if len(n_test) == 1
                             else n_test, patient_se=boot["patient_se"][cell],
                             sigma_between=boot["sigma_between"][cell], class_patients=boot["class_patients"][cell],
                             few_positives=bool(boot["class_patients"][cell] < FEW_POSITIVES),
                             degenerate=bool(boot["degenerate"][cell]), n_redrawn=int(boot["n_redrawn"]))
                if cell in boot["delong_se"]:
                    entry["delong_se"] = boot["delong_se"][cell]
            else:
                est, (lo, hi) = float(v.mean()), (t_lo, t_hi)
                if "[" not in panel and np.isfinite(lo):  # an AUROC's interval stays in its range
                    lo, hi = max(0.0, lo), min(1.0, hi)
                failed = result["bootstrap"]["failed"].get(panel)
                entry.update(interval=(f"t over seeds (no patient bootstrap: {failed})" if failed
                                       else NO_PREDICTIONS if "[" not in panel else NOT_BOOTSTRAPPED),
                             n_test_patients=None, few_positives=None, degenerate=False)
            estimates[cell] = est
            summary.setdefault(str(line), {})[f"{frac:g}"] = {"mean": est, "estimate": est, "ci_low": lo,
                                                               "ci_high": hi, **entry}
        aulcs = result["aulc"].setdefault(panel, {})
        for line in lines:
            fracs = sorted(f for (ln, f) in estimates if ln == line)
            if len(fracs) < 2:
                continue
            entry = {"estimate": aulc(fracs, [estimates[(line, f)] for f in fracs]), "ci_low": None,
                     "ci_high": None, "fractions": fracs}
            if all((line, f) in boot["replicates"] for f in fracs):  # AULC is linear in the cells
                res = split_contrast(boot, dict(zip([(line, f) for f in fracs], aulc(fracs, np.eye(len(fracs))))),
                                     confidence)
                entry.update(estimate=res.estimate, ci_low=res.low, ci_high=res.high, sigma_between=res.sigma_between,
                             n_splits=res.n_splits)
            aulcs[line] = entry
        result["comparisons"][panel] = comps = _comparisons(lines, estimates, boot, low_fraction, confidence,
                                                            groups)
        largest = max([largest, *(c["family_size"] for c in comps)])
        for key, ref, skip in (("labels_needed", "random_init", ("supervised",)),
                               ("labels_needed_vs_supervised", "supervised", ())):
            needed = _needed(lines, estimates, boot, ref, skip, confidence, groups)
            if needed is not None:
                result[key][panel] = needed
    alpha = 1 - confidence
    if largest and largest * min_bootstrap_p(n_boot) > alpha:
        warnings.warn(f"n_boot: {n_boot} replicates give bootstrap p >= {min_bootstrap_p(n_boot):.2g}, so no "
                      f"Holm-adjusted p of a family of {largest} comparisons can reach {alpha:g}; expected n_boot >= "
                      f"{int(np.ceil(2 * largest / alpha))}", stacklevel=2)
    return result


def summarize(curve: pd.DataFrame, predictions: str | Path | None = None, confidence: float = 0.95,
              n_boot: int = 1000, seed: int = 0) -> dict:
    """Per task, line and fraction: the estimate and its interval (:func:`summarize_runs` of one run).

    With ``predictions`` (the run's ``predictions/`` folder) the interval is the
    hierarchical bootstrap over label draws and test patients; without, a t
    interval over seeds (named in each cell's ``interval``).
    """
    return summarize_runs([(curve, predictions)], n_boot=n_boot, seed=seed, confidence=confidence)["summary"]


def labels_needed(summary: dict, reference: str = "random_init", skip=("supervised",)) -> dict:
    """Per task and line: the smallest labelled fraction whose mean reaches ``reference`` at 100%.

    ``None`` where the line never reaches it (or no reference at 100% exists).
    Point estimates only; :func:`summarize_runs` adds the bootstrap distribution.
    """
    out: dict = {}
    for task, lines in summary.items():
        ref = lines.get(reference, {}).get("1")
        if ref is None:
            continue
        target = ref["mean"]
        out[task] = {"target": target, "reference": f"{reference} at 100%", "fractions": {}}
        for name, cells in lines.items():
            if name == reference or name in skip:
                continue
            reached = [float(f) for f in sorted(cells, key=float) if cells[f]["mean"] >= target]
            out[task]["fractions"][name] = reached[0] if reached else None
    return out


def write_outputs(curve: pd.DataFrame, out_dir: str | Path, meta: dict, wandb_run=None, n_boot: int = 1000,
                  boot_seed: int = 0, predictions: Sequence[str | Path] | None = None) -> dict:
    """Write ``curve.json``, ``curve.png`` (bootstrap bands), ``differences.png`` and ``labels_needed.png``.

    ``curve.json`` holds :func:`summarize_runs` of this run (intervals from the
    stored ``predictions/``; ``n_boot`` replicates seeded with ``boot_seed``, both
    recorded under ``bootstrap``), every comparison's one-line verdict, and ``meta``.
    With a wandb run, also log the table, the figures and the labels needed to it.

    Returns:
        The per-cell summary (``summary`` of :func:`summarize_runs`).
    """
    out_dir = Path(out_dir)
    res = summarize_runs([(curve, predictions or [out_dir / PREDICTIONS])], n_boot=n_boot, seed=boot_seed)
    res["verdicts"] = {task: [c["verdict"] for c in comps] for task, comps in res["comparisons"].items()}
    (out_dir / "curve.json").write_text(json.dumps({**res, **meta}, indent=2, default=str))
    plot_curve(res["summary"], out_dir / "curve.png")
    plot_differences(res["comparisons"], out_dir / "differences.png")
    plot_labels_needed(res["labels_needed"], out_dir / "labels_needed.png")
    if wandb_run is not None:
        import wandb

        wandb_run.log({"curve": wandb.Table(dataframe=curve), "curve_plot": wandb.Image(str(out_dir / "curve.png")),
                       "differences": wandb.Image(str(out_dir / "differences.png")),
                       "labels_needed": wandb.Image(str(out_dir / "labels_needed.png"))})
        wandb_run.summary.update({"labels_needed": res["labels_needed"]})
    return res["summary"]
