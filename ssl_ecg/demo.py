"""The demo: CMSC pretraining on LUDB -> per-patient label-efficiency curve.

Protocol (no transductive shortcut): LUDB patients are split 60/20/20 into
train/val/test (seeded, stratified on LVH and axis); the encoder is pretrained
only on the train+val patients (plus, when present, other databases); probes
use nested per-patient fractions of the train patients, choose their
hyper-parameters on val, and report test AUROC once.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from ssl_ecg.checkpoint import load_encoder
from ssl_ecg.data import load_index
from ssl_ecg.data.arrays import load_signals
from ssl_ecg.data.download import download_ludb, locate_dataset, user_data_dir
from ssl_ecg.data.preprocess import Normalization
from ssl_ecg.data.splits import check_no_leakage, patient_split
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate import CurveSpec, run_curve, write_outputs
from ssl_ecg.models import build_encoder
from ssl_ecg.paths import run_folder
from ssl_ecg.pretrain import pretrain
from ssl_ecg.recipe import Fractions, Names, NonNegativeInt, PositiveFloat, PositiveInt, RunName, Seeds, SplitFractions
from ssl_ecg.utils import seeded

__all__ = ["DemoConfig", "run_demo", "format_table"]

TASKS = {"lvh": "left ventricular hypertrophy", "lad": "left axis deviation vs normal axis"}


@dataclass
class DemoConfig:
    """The demo recipe (``experiments/demo.yaml``)."""

    name: RunName = "demo"
    fs: PositiveFloat = 100.0
    segment_len: PositiveFloat = 5.0
    n_segments: PositiveInt = 2
    per_lead: bool = True
    positives: Literal["patient", "patient_lead"] = "patient_lead"
    normalization: Normalization = "record"
    embed_dim: PositiveInt = 128
    temperature: PositiveFloat = 0.1
    lr: PositiveFloat = 1e-3
    batch_size: PositiveInt = 16
    epochs: PositiveInt = 40
    split: SplitFractions = field(default_factory=lambda: [0.6, 0.2, 0.2])
    split_seed: NonNegativeInt = 0
    pretrain_seed: NonNegativeInt = 0
    tasks: Names = field(default_factory=lambda: list(TASKS))
    fractions: Fractions = field(default_factory=lambda: [0.05, 0.1, 0.25, 0.5, 1.0])
    seeds: Seeds = field(default_factory=lambda: [0, 1, 2, 3, 4])
    supervised: bool = True
    supervised_epochs: PositiveInt = 60
    supervised_lr: PositiveFloat = 1e-3

    def __post_init__(self):
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ConfigError(f"tasks: {unknown} unknown; expected some of {list(TASKS)}")
        if len(self.seeds) < 2:
            raise ConfigError(f"seeds: need at least 2 seeds for a confidence interval, got {self.seeds}")


def run_demo(cfg: DemoConfig, data: str | None = None, runs: str | Path = "runs", progress: bool = True) -> dict:
    """Run the slice end to end; returns the curve summary and writes ``runs/<name>/``."""
    t0 = time.perf_counter()
    out = run_folder(runs, cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    root = locate_dataset("ludb", data)
    if root is None:
        print(f"LUDB not found under --data, $SSL_ECG_DATA or {user_data_dir()}; downloading from PhysioNet")
        root = download_ludb(user_data_dir())
    index = load_index("ludb", root)
    window = int(round(cfg.segment_len * cfg.fs))
    signals, table = load_signals(index, fs=cfg.fs, normalization=cfg.normalization,
                                  min_samples=cfg.n_segments * window)
    strata = dict(zip(table["patient_id"], table["lvh"].astype(str) + "/" + table["axis"]))
    splits = patient_split(table["patient_id"], cfg.split, labels=strata, seed=cfg.split_seed)
    check_no_leakage(splits)
    pool_patients = set(splits["train"]) | set(splits["val"])
    in_pool = table["patient_id"].isin(pool_patients).to_numpy()
    codes = pd.factorize(table["patient_id"])[0]
    pool = {"ludb": {"root": str(root), "records": int(in_pool.sum()), "splits": ["train", "val"]}}
    assert not (set(table.loc[in_pool, "patient_id"]) & set(splits["test"])), "test patients in the pretraining pool"

    result = pretrain(signals[in_pool], codes[in_pool], out / "pretrain", fs=cfg.fs, segment_len=cfg.segment_len,
                      n_segments=cfg.n_segments, per_lead=cfg.per_lead, positives=cfg.positives,
                      embed_dim=cfg.embed_dim,
                      temperature=cfg.temperature, lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs,
                      seed=cfg.pretrain_seed, progress_bar=progress)
    encoder_cfg = {"name": "clocs", "in_channels": 1 if cfg.per_lead else signals.shape[1], "input_len": window,
                   "embed_dim": cfg.embed_dim}
    with seeded(cfg.pretrain_seed):
        random_init = build_encoder(encoder_cfg).eval()
    encoders = {"cmsc": load_encoder(result.encoder_path), "random_init": random_init}
    spec = CurveSpec(tasks=cfg.tasks, fractions=cfg.fractions, seeds=cfg.seeds, window=window, per_lead=cfg.per_lead,
                     supervised=encoder_cfg if cfg.supervised else None, supervised_epochs=cfg.supervised_epochs,
                     supervised_lr=cfg.supervised_lr)
    curve = run_curve(signals, table, splits, encoders, spec, out, progress=progress)
    meta = {
        "config": asdict(cfg),
        "pretraining_pool": pool,
        "split_sizes": {k: len(v) for k, v in splits.items()},
        "pretrain_loss_first_last": [result.losses[0], result.losses[-1]] if result.losses else [],
        "pretrain_seconds": round(result.seconds, 1),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "tasks": {t: TASKS[t] for t in cfg.tasks},
    }
    summary = write_outputs(curve, out, meta)
    (out / "demo_meta.json").write_text(json.dumps(meta, indent=2))
    return {"summary": summary, "out": out, "meta": meta}


def format_table(summary: dict) -> str:
    """Plain-text table: one row per task/arm, one column per fraction (mean [95% CI])."""
    lines = []
    for task, arms in summary.items():
        fracs = sorted(next(iter(arms.values())), key=float)
        metric = "AUROC" if "[" not in task else task[task.index("[") + 1:-1] + " score"
        lines.append(f"{task}: test {metric}, mean [95% CI] over seeds")
        lines.append(f"{'arm':<12}" + "".join(f"{float(f) * 100:>20.0f}%" for f in fracs))
        for arm, cells in arms.items():
            lines.append(f"{arm:<12}" + "".join(
                f"{cells[f]['mean']:>8.3f} [{cells[f]['ci_low']:.2f},{cells[f]['ci_high']:.2f}]" for f in fracs))
        lines.append("")
    return "\n".join(lines)
