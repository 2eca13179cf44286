"""Label-efficiency curves: arms x label fractions x seeds, with 95% CIs.

Fractions are drawn per patient, nested and seeded (see
:func:`ssl_ecg.data.splits.label_fraction_subsets`); validation and test
patients are fixed across the grid.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from torch import nn
from tqdm.auto import tqdm

from ssl_ecg.data.cinc import scored_classes
from ssl_ecg.data.splits import check_no_leakage, label_fraction_subsets
from ssl_ecg.errors import ConfigError, SplitError
from ssl_ecg.evaluate.challenge import challenge_score, load_challenge_weights
from ssl_ecg.evaluate.embed import embed_records
from ssl_ecg.evaluate.knn import knn_scores
from ssl_ecg.evaluate.linear import torch_linear_probe
from ssl_ecg.evaluate.metrics import tune_thresholds
from ssl_ecg.evaluate.probe import logistic_probe
from ssl_ecg.evaluate.supervised import finetune, train_supervised
from ssl_ecg.evaluate.tasks import auroc, check_task

__all__ = ["CurveSpec", "run_curve", "summarize", "plot_curve", "write_outputs", "labels_needed",
           "plot_labels_needed", "knn_probe", "task_labels", "line_name", "CURVE_COLUMNS", "PROBES"]

CURVE_COLUMNS = [
    "task", "arm", "probe", "fraction", "seed", "metric", "value", "val_value", "n_train_patients",
    "n_train_records",
]
PROBES = ("logistic", "torch", "knn", "finetune")
KNN_KS = (5, 10, 20, 50)


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

    def __post_init__(self):
        bad = [f for f in self.fractions if not 0 < float(f) <= 1]
        if bad:
            raise ConfigError(f"fractions: {bad} are outside (0, 1]")
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown or not self.probes:
            raise ConfigError(f"probes: {list(self.probes)} invalid; expected some of {list(PROBES)}")

    def lead_mode(self, arm: str) -> bool:
        """Whether ``arm``'s encoder takes one lead at a time."""
        if isinstance(self.per_lead, dict):
            return bool(self.per_lead.get(arm, next(iter(self.per_lead.values()), True)))
        return bool(self.per_lead)


def line_name(arm: str, probe: str) -> str:
    """The curve line of an arm/probe cell: the arm alone for the logistic probe and the supervised arm."""
    return arm if probe in ("logistic", "supervised") else f"{arm}+{probe}"


def task_labels(column: pd.Series) -> np.ndarray:
    """0/1 columns as float (NaN: unlabelled); other columns as category codes (NaN/empty: unlabelled)."""
    return _labels_and_names(column)[0]


def _labels_and_names(column: pd.Series) -> tuple[np.ndarray, list | None]:
    """:func:`task_labels` and the class names; no names for binary tasks (0/1, or two numeric values)."""
    values = column.to_numpy()
    numeric = pd.api.types.is_numeric_dtype(column)
    if numeric and set(np.unique(values[~pd.isna(values)])) <= {0, 1}:
        return values.astype(float), None
    labelled = (~(pd.isna(column) | (column.astype(str).str.strip() == ""))).to_numpy()
    codes = np.full(len(column), np.nan)
    codes[labelled], names = pd.factorize(column[labelled])
    return codes, (None if numeric and len(names) <= 2 else list(names))


def run_curve(
    signals: np.ndarray,
    table: pd.DataFrame,
    splits: dict[str, Sequence],
    encoders: dict[str, nn.Module],
    spec: CurveSpec,
    out_dir: str | Path,
    progress: bool = True,
) -> pd.DataFrame:
    """Evaluate every (task, arm, fraction, seed) cell and write ``curve.csv``.

    Cells already in ``out_dir/curve.csv`` are skipped, so an interrupted run resumes.

    Args:
        signals: (R, L, T) preprocessed records, aligned with ``table`` rows.
        table: has ``patient_id`` and the task columns.
        splits: ``{"train", "val", "test"}`` -> patient ids.
        encoders: frozen arms, e.g. ``{"cmsc": enc, "random_init": enc0}``.
    """
    check_no_leakage(splits)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "curve.csv"
    done = pd.read_csv(csv_path) if csv_path.is_file() else pd.DataFrame(columns=CURVE_COLUMNS)
    if "probe" not in done.columns:  # a curve.csv from before probe types: all logistic / supervised
        done["probe"] = np.where(done["arm"] == "supervised", "supervised", "logistic")
    done_keys = {(r.task, r.arm, r.probe, float(r.fraction), int(r.seed)) for r in done.itertuples()}
    patients = table["patient_id"].astype(str).to_numpy()
    split_of = {str(p): name for name, members in splits.items() for p in members}
    record_split = np.array([split_of.get(p, "") for p in patients])
    frozen = [p for p in spec.probes if p != "finetune"]
    feats = ({arm: embed_records(enc, signals, spec.window, spec.lead_mode(arm)) for arm, enc in encoders.items()}
             if frozen else {})
    arms = [(a, p) for a in encoders for p in spec.probes]
    arms += [("supervised", "supervised")] if spec.supervised is not None else []
    cells = [(t, a, p, f, s) for t in spec.tasks for s in spec.seeds for f in spec.fractions for a, p in arms]
    todo = [c for c in cells if (c[0], c[1], c[2], float(c[3]), int(c[4])) not in done_keys]
    rows = []
    bar = tqdm(total=len(todo), desc="label-efficiency curve", disable=not progress)
    subsets_cache: dict = {}
    dropped: dict = {}
    tasks: dict = {}
    for task, arm, probe, frac, seed in todo:
        if task not in table.columns:
            raise ConfigError(f"tasks: column {task!r} is not in the table (columns: {sorted(table.columns)})")
        if task not in tasks:
            tasks[task] = _task_y(table[task], record_split, task, dropped, challenge_year=spec.challenge_year)
        y_all, names = tasks[task]
        labelled = ~np.isnan(y_all if y_all.ndim == 1 else y_all[:, 0])
        idx = {name: np.flatnonzero(labelled & (record_split == name)) for name in ("train", "val", "test")}
        for name, members in idx.items():
            if len(members) == 0:
                raise SplitError(f"task {task!r}: split {name!r} has no labelled records")
        key = (task, seed)
        if key not in subsets_cache:
            train_pat = _patient_labels(patients, y_all, idx["train"])
            subsets_cache[key] = label_fraction_subsets(list(train_pat), spec.fractions, labels=train_pat, seed=seed)
        chosen = set(subsets_cache[key][frac])
        tr = np.array([i for i in idx["train"] if patients[i] in chosen])
        check_no_leakage({"train": set(patients[tr]), "val": set(patients[idx["val"]]),
                          "test": set(patients[idx["test"]])})
        y = np.nan_to_num(y_all).astype(int)
        va, te = idx["val"], idx["test"]
        if probe == "supervised":
            res = train_supervised(spec.supervised, signals[tr], y[tr], signals[va], y[va], signals[te], y[te],
                                   window=spec.window, per_lead=spec.lead_mode("supervised"),
                                   lr=spec.supervised_lrs or (spec.supervised_lr,),
                                   batch_size=spec.supervised_batch_sizes, min_steps=spec.supervised_min_steps,
                                   epochs=spec.supervised_epochs, seed=seed, task=task)
            grid_path = out_dir / "supervised_grid.csv"
            pd.DataFrame([{"task": task, "fraction": float(frac), "seed": int(seed), **g,
                           "chosen": g["lr"] == res.lr and g["batch_size"] == res.batch_size} for g in res.grid]
                         ).to_csv(grid_path, mode="a", header=not grid_path.is_file(), index=False)
        elif probe == "finetune":
            res = finetune(encoders[arm], signals[tr], y[tr], signals[va], y[va], signals[te], y[te],
                           window=spec.window, per_lead=spec.lead_mode(arm), lr=spec.supervised_lr,
                           encoder_lr_factor=spec.encoder_lr_factor, epochs=spec.supervised_epochs, seed=seed,
                           task=task)
        else:
            f = feats[arm]
            probe_fn = {"logistic": logistic_probe, "torch": torch_linear_probe, "knn": knn_probe}[probe]
            res = probe_fn(f[tr], y[tr], f[va], y[va], f[te], y[te], task=task, seed=seed)
        base = {"task": task, "arm": arm, "probe": probe, "fraction": float(frac), "seed": int(seed),
                "n_train_patients": len(chosen), "n_train_records": len(tr)}
        new_rows = [{**base, "metric": "auroc", "value": res.test_auroc, "val_value": res.val_auroc}]
        if _is_challenge_task(names, y_all, spec.challenge_year):
            new_rows.append({**base, "metric": "challenge",
                             **_challenge_row(names, y[va], res.val_scores, y[te], res.test_scores,
                                              year=spec.challenge_year)})
        rows.extend(new_rows)
        pd.DataFrame(new_rows, columns=CURVE_COLUMNS).to_csv(csv_path, mode="a", header=not csv_path.is_file(),
                                                             index=False)
        bar.update(1)
    bar.close()
    if dropped:
        (out_dir / "dropped_classes.json").write_text(json.dumps(dropped, indent=2, default=str))
    return pd.read_csv(csv_path)


def _task_y(column: pd.Series, record_split: np.ndarray, task: str,
            dropped: dict, challenge_year: int | None = None) -> tuple[np.ndarray, list | None]:
    """Labels of one task and its class names; classes missing from a split are dropped with a warning.

    Binary tasks give (n,) 0/1 with NaN for unlabelled records and no names; they
    stay strict (a split without positives is an error downstream). Categorical
    tasks give (n,) codes; list-valued (multi-label) tasks give (n, C) multi-hot
    rows, NaN where a record has no label. A class is dropped when a split has
    no positive of it. With ``challenge_year``, a multi-label task over that
    year's CinC scored classes keeps list-valued records with no (remaining)
    class as all-zero rows, as the challenge scores them.
    """
    if _is_multilabel(column):
        return _multilabel_y(column, record_split, task, dropped, challenge_year)
    y, names = _labels_and_names(column)
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


def _is_multilabel(column: pd.Series) -> bool:
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


def _patient_labels(patients: np.ndarray, y: np.ndarray, rows: np.ndarray) -> dict:
    """Per patient: the class (single-label) or the union of its records' classes (multi-label)."""
    if y.ndim == 1:
        return {patients[i]: int(y[i]) for i in rows}
    out: dict = {}
    for i in rows:
        out.setdefault(patients[i], set()).update(np.flatnonzero(y[i] > 0).tolist())
    return {p: tuple(sorted(c)) for p, c in out.items()}


def _is_challenge_task(names: list | None, y: np.ndarray, year: int | None = None) -> bool:
    """A multi-label task over the PhysioNet/CinC scored classes (SNOMED codes) of ``year`` (None: 2020)."""
    return (y.ndim == 2 and names is not None and len(names) > 1
            and set(map(str, names)) <= set(scored_classes(year or 2020)))


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


def summarize(curve: pd.DataFrame, confidence: float = 0.95) -> dict:
    """Mean and t-based confidence interval over seeds for every task/arm/fraction."""
    out: dict = {}
    curve = curve.copy()
    if "probe" in curve.columns:
        curve["arm"] = [line_name(a, p) for a, p in zip(curve["arm"], curve["probe"])]
    if "metric" in curve.columns:  # one panel per task and metric: "task" (AUROC), "task [challenge]"
        curve["task"] = [t if m == "auroc" else f"{t} [{m}]" for t, m in zip(curve["task"], curve["metric"])]
    for (task, arm, frac), g in curve.groupby(["task", "arm", "fraction"], sort=False):
        v = g["value"].to_numpy(dtype=float)
        mean = float(v.mean())
        half = float("nan")
        if len(v) > 1:
            half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
        out.setdefault(task, {}).setdefault(arm, {})[f"{frac:g}"] = {
            "mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n_seeds": int(len(v))}
    return out


def plot_curve(summary: dict, path: str | Path, metric: str = "test AUROC") -> Path:
    """One panel per task: x = labelled fraction (log scale), a line per arm with a shaded 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for arm, cells in summary[task].items():
            fr = sorted(cells, key=float)
            x = np.array([float(f) * 100 for f in fr])
            m = np.array([cells[f]["mean"] for f in fr])
            lo = np.array([cells[f]["ci_low"] for f in fr])
            hi = np.array([cells[f]["ci_high"] for f in fr])
            ax.plot(x, m, marker="o", label=arm)
            bounded = "[" not in task  # AUROC lies in [0, 1]; the challenge score can be negative
            ax.fill_between(x, np.clip(lo, 0, 1) if bounded else lo, np.clip(hi, 0, 1) if bounded else hi, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xticks([float(f) * 100 for f in sorted(next(iter(summary[task].values())), key=float)])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("labelled training patients (%)")
        ax.set_ylabel(metric if "[" not in task else task[task.index("[") + 1:-1] + " score")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def labels_needed(summary: dict, reference: str = "random_init", skip=("supervised",)) -> dict:
    """Per task and line: the smallest labelled fraction whose mean reaches ``reference`` at 100%.

    ``None`` where the line never reaches it (or no reference at 100% exists).
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


def plot_labels_needed(needed: dict, path: str | Path) -> Path:
    """Bar chart: the labelled fraction each encoder needs to match the reference at 100% (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(needed) or ["(none)"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        entry = needed.get(task, {"fractions": {}, "reference": "", "target": float("nan")})
        names = list(entry["fractions"])
        vals = [entry["fractions"][n] for n in names]
        heights = [100 * v if v is not None else 100 for v in vals]
        bars = ax.bar(names, heights, color=["C0" if v is not None else "0.8" for v in vals])
        for bar, v in zip(bars, vals):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{100 * v:g}%" if v is not None
                    else "not reached", ha="center", va="bottom", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("labelled patients needed (%)")
        ax.set_title(f"{task}: to match {entry['reference']} ({entry['target']:.3f})", fontsize=9)
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(curve: pd.DataFrame, out_dir: str | Path, meta: dict, wandb_run=None) -> dict:
    """Write ``curve.json`` (summary, labels needed, meta), ``curve.png`` and ``labels_needed.png``.

    With a wandb run, also log the table, both figures and the summary to it.
    """
    out_dir = Path(out_dir)
    summary = summarize(curve)
    needed = labels_needed(summary)
    (out_dir / "curve.json").write_text(json.dumps({"summary": summary, "labels_needed": needed, **meta}, indent=2,
                                                   default=str))
    plot_curve(summary, out_dir / "curve.png")
    plot_labels_needed(needed, out_dir / "labels_needed.png")
    if wandb_run is not None:
        import wandb

        wandb_run.log({"curve": wandb.Table(dataframe=curve), "curve_plot": wandb.Image(str(out_dir / "curve.png")),
                       "labels_needed": wandb.Image(str(out_dir / "labels_needed.png"))})
        wandb_run.summary.update({"labels_needed": needed})
    return summary


@dataclass
class _KnnResult:
    test_auroc: float
    val_auroc: float
    k: int
    test_scores: np.ndarray
    val_scores: np.ndarray


def knn_probe(x_train, y_train, x_val, y_val, x_test, y_test, task: str = "task", seed: int = 0,
              ks=KNN_KS, temperature: float = 0.1) -> _KnnResult:
    """kNN probe (:func:`knn_scores`) with k chosen on validation AUROC; test scored at that k."""
    kind, n_classes = check_task(y_train, y_val, y_test, task)

    def score(x, k):
        s = knn_scores(x_train, y_train, x, k=k, temperature=temperature, n_classes=n_classes)
        return s[:, 1] if kind == "binary" else s

    best = max((auroc(y_val, score(x_val, k), kind), -k) for k in ks)
    k = -best[1]
    test_scores = score(x_test, k)
    return _KnnResult(test_auroc=auroc(y_test, test_scores, kind), val_auroc=float(best[0]), k=k,
                      test_scores=test_scores, val_scores=score(x_val, k))
