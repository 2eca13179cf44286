"""Label-efficiency curves: arms x label fractions x seeds, with 95% CIs.

Fractions are drawn per patient, nested and seeded (see
:func:`ssl_ecg.data.splits.label_fraction_subsets`); validation and test
patients are fixed across the grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from torch import nn
from tqdm.auto import tqdm

from ssl_ecg.data.splits import check_no_leakage, label_fraction_subsets
from ssl_ecg.errors import SplitError
from ssl_ecg.evaluate.embed import embed_records
from ssl_ecg.evaluate.probe import logistic_probe
from ssl_ecg.evaluate.supervised import train_supervised

__all__ = ["CurveSpec", "run_curve", "summarize", "plot_curve", "CURVE_COLUMNS"]

CURVE_COLUMNS = [
    "task", "arm", "fraction", "seed", "metric", "value", "val_value", "n_train_patients", "n_train_records",
]


@dataclass
class CurveSpec:
    """What a label-efficiency curve evaluates.

    Attributes:
        tasks: binary label columns of the table (NaN rows are left out of that task).
        fractions: labelled fractions of the training patients, in (0, 1].
        seeds: one nested fraction draw (and supervised init) per seed.
        window: samples per evaluation window (the pretraining segment length).
        per_lead: encoders take one lead at a time.
        supervised: encoder config for the supervised-from-scratch arm, or None.
        supervised_epochs, supervised_lr: its training budget.
    """

    tasks: Sequence[str]
    fractions: Sequence[float] = (0.05, 0.1, 0.25, 0.5, 1.0)
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    window: int = 1000
    per_lead: bool = True
    supervised: dict | None = None
    supervised_epochs: int = 60
    supervised_lr: float = 1e-3
    extra: dict = field(default_factory=dict)


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
    done_keys = {(r.task, r.arm, float(r.fraction), int(r.seed)) for r in done.itertuples()}
    patients = table["patient_id"].astype(str).to_numpy()
    split_of = {str(p): name for name, members in splits.items() for p in members}
    record_split = np.array([split_of.get(p, "") for p in patients])
    feats = {arm: embed_records(enc, signals, spec.window, spec.per_lead) for arm, enc in encoders.items()}
    arms = list(encoders) + (["supervised"] if spec.supervised is not None else [])
    cells = [(t, a, f, s) for t in spec.tasks for s in spec.seeds for f in spec.fractions for a in arms]
    todo = [c for c in cells if (c[0], c[1], float(c[2]), int(c[3])) not in done_keys]
    rows = []
    bar = tqdm(total=len(todo), desc="label-efficiency curve", disable=not progress)
    subsets_cache: dict = {}
    for task, arm, frac, seed in todo:
        y_all = table[task].to_numpy(dtype=float)
        labelled = ~np.isnan(y_all)
        idx = {name: np.flatnonzero(labelled & (record_split == name)) for name in ("train", "val", "test")}
        for name, members in idx.items():
            if len(members) == 0:
                raise SplitError(f"task {task!r}: split {name!r} has no labelled records")
        key = (task, seed)
        if key not in subsets_cache:
            train_pat = {patients[i]: int(y_all[i]) for i in idx["train"]}
            subsets_cache[key] = label_fraction_subsets(list(train_pat), spec.fractions, labels=train_pat, seed=seed)
        chosen = set(subsets_cache[key][frac])
        tr = np.array([i for i in idx["train"] if patients[i] in chosen])
        check_no_leakage({"train": set(patients[tr]), "val": set(patients[idx["val"]]),
                          "test": set(patients[idx["test"]])})
        y = np.nan_to_num(y_all).astype(int)
        if arm == "supervised":
            res = train_supervised(spec.supervised, signals[tr], y[tr], signals[idx["val"]], y[idx["val"]],
                                   signals[idx["test"]], y[idx["test"]], window=spec.window, per_lead=spec.per_lead,
                                   lr=spec.supervised_lr, epochs=spec.supervised_epochs, seed=seed, task=task)
            value, val_value = res.test_auroc, res.val_auroc
        else:
            f = feats[arm]
            res = logistic_probe(f[tr], y[tr], f[idx["val"]], y[idx["val"]], f[idx["test"]], y[idx["test"]],
                                 task=task, seed=seed)
            value, val_value = res.test_auroc, res.val_auroc
        rows.append({"task": task, "arm": arm, "fraction": float(frac), "seed": int(seed), "metric": "auroc",
                     "value": value, "val_value": val_value, "n_train_patients": len(chosen),
                     "n_train_records": len(tr)})
        pd.DataFrame(rows[-1:], columns=CURVE_COLUMNS).to_csv(csv_path, mode="a", header=not csv_path.is_file(),
                                                              index=False)
        bar.update(1)
    bar.close()
    return pd.read_csv(csv_path)


def summarize(curve: pd.DataFrame, confidence: float = 0.95) -> dict:
    """Mean and t-based confidence interval over seeds for every task/arm/fraction."""
    out: dict = {}
    for (task, arm, frac), g in curve.groupby(["task", "arm", "fraction"]):
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
            ax.fill_between(x, np.clip(lo, 0, 1), np.clip(hi, 0, 1), alpha=0.2)  # AUROC is bounded
        ax.set_xscale("log")
        ax.set_xticks([float(f) * 100 for f in sorted(next(iter(summary[task].values())), key=float)])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("labelled training patients (%)")
        ax.set_ylabel(metric)
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(curve: pd.DataFrame, out_dir: str | Path, meta: dict) -> dict:
    """Write ``curve.json`` (summary + meta) and ``curve.png``; return the summary."""
    out_dir = Path(out_dir)
    summary = summarize(curve)
    (out_dir / "curve.json").write_text(json.dumps({"summary": summary, **meta}, indent=2, default=str))
    plot_curve(summary, out_dir / "curve.png")
    return summary
