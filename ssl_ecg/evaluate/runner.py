"""Recipe-driven evaluation: ``ssl-ecg probe``, ``ssl-ecg finetune``, ``ssl-ecg curve`` and ``ssl-ecg fewshot``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch
from annotated_types import Ge, MinLen
from torch import nn

from ssl_ecg.checkpoint import load_encoder
from ssl_ecg.data import load_index
from ssl_ecg.data.arrays import load_signals
from ssl_ecg.data.download import dataset_root
from ssl_ecg.data.preprocess import BadLeadPolicy
from ssl_ecg.data.splits import patient_split, record_level_ids, table_splits
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.challenge import challenge_year
from ssl_ecg.evaluate.curve import CurveSpec, run_curve, write_outputs
from ssl_ecg.evaluate.embed import embed_records
from ssl_ecg.evaluate.fewshot import run_fewshot
from ssl_ecg.models import build_encoder
from ssl_ecg.paths import run_folder
from ssl_ecg.recipe import Fractions, Names, NonNegativeInt, PositiveFloat, PositiveInt, RunName, Seeds, Split
from ssl_ecg.utils import seeded, wandb_settings

__all__ = ["EvalConfig", "run_evaluation", "FewShotConfig", "run_fewshot_recipe", "check_encoder", "load_arms"]


@dataclass
class EvalConfig:
    """An evaluation recipe: encoders x tasks x label fractions x seeds x probes."""

    name: RunName = "eval"
    dataset: str = "ludb"
    root: str | None = None  # default: found under $SSL_ECG_DATA
    dataset_options: dict = field(default_factory=dict)
    fs: PositiveFloat = 100.0
    leads: Names | None = None
    bad_leads: BadLeadPolicy = "zero_lead"  # NaN or flat leads: "zero_lead", "drop_record" or "error"
    window: PositiveFloat = 5.0  # seconds per evaluation window: the encoders' input length
    per_lead: bool | None = None  # default: from each checkpoint (in_channels == 1: one lead at a time)
    encoders: dict[str, str] = field(default_factory=dict)  # arm name -> encoder checkpoint (.pt or run folder)
    random_init: bool = True  # add a random-init arm with the first checkpoint's architecture
    supervised: bool = True  # add the supervised-from-scratch arm
    tasks: Names = field(default_factory=lambda: ["lad"])
    fractions: Fractions = field(default_factory=lambda: [0.01, 0.05, 0.1, 0.25, 0.5, 1.0])
    seeds: Seeds = field(default_factory=lambda: [0, 1, 2, 3, 4])
    probes: Names = field(default_factory=lambda: ["logistic"])
    split: Split = field(default_factory=lambda: [0.6, 0.2, 0.2])  # or "official"
    split_seed: NonNegativeInt = 0
    epochs: PositiveInt = 60  # supervised arm and fine-tuning
    lr: PositiveFloat = 1e-3
    encoder_lr_factor: Annotated[float, Ge(0)] = 0.1
    wandb: bool = False  # log the table and plots to wandb (offline unless WANDB_MODE=online)
    # supervised arm: lr x batch size chosen on validation AUROC; each epoch takes at least min_steps steps
    supervised_lrs: Annotated[list[PositiveFloat], MinLen(1)] = field(default_factory=lambda: [1e-3, 3e-4])
    supervised_batch_sizes: Annotated[list[PositiveInt], MinLen(1)] = field(default_factory=lambda: [16, 64])
    supervised_min_steps: PositiveInt = 10


def check_encoder(encoder: nn.Module, per_lead: bool, n_leads: int, window: int, source: str = "encoder") -> None:
    """Raise :class:`ConfigError` (naming ``source``) unless the encoder fits the evaluation data."""
    cfg = getattr(encoder, "config", {}) or {}
    want = 1 if per_lead else n_leads
    if cfg.get("in_channels") not in (None, want):
        raise ConfigError(f"{source}: encoder takes {cfg['in_channels']} channel(s), but the evaluation gives {want} "
                          f"({'one lead at a time' if per_lead else f'{n_leads} leads'}); check leads= and per_lead=")
    if cfg.get("input_len") not in (None, window):
        raise ConfigError(f"{source}: encoder was built for {cfg['input_len']} samples, but the evaluation window is "
                          f"{window} samples; set window= (seconds) and fs= to match its pretraining")


def load_arms(paths: dict, per_lead: bool | None, n_leads: int, window: int, random_init: bool,
              seed: int = 0) -> tuple[dict[str, nn.Module], dict[str, bool], dict]:
    """Load and check the checkpoints.

    Returns (arms, per-arm per_lead, the architecture config for the baselines:
    the first checkpoint's, else a per-lead CLOCS encoder). With ``per_lead``
    None each checkpoint's mode follows its config (1 input channel: per lead).
    """
    arms, modes, config = {}, {}, None
    for arm, path in paths.items():
        enc = load_encoder(path)
        mode = enc.config.get("in_channels") == 1 if per_lead is None else per_lead
        check_encoder(enc, mode, n_leads, window, source=f"encoders.{arm} ({path})")
        arms[arm], modes[arm] = enc, mode
        config = config or dict(enc.config)
    if config is None:
        mode = True if per_lead is None else per_lead
        config = {"name": "clocs", "in_channels": 1 if mode else n_leads, "input_len": window, "embed_dim": 128}
    base_mode = config["in_channels"] == 1 if per_lead is None else per_lead
    modes["supervised"] = base_mode
    if random_init:
        with seeded(seed):
            arms["random_init"] = build_encoder(config).eval()
        modes["random_init"] = base_mode
    if not arms:
        raise ConfigError("encoders: nothing to evaluate; give checkpoints or set random_init=true")
    return arms, modes, config


def _dataset(cfg) -> tuple[np.ndarray, pd.DataFrame, Path]:
    root = dataset_root(cfg.dataset, cfg.root)
    index = load_index(cfg.dataset, root, **cfg.dataset_options)
    window = int(round(cfg.window * cfg.fs))
    signals, table = load_signals(index, fs=cfg.fs, leads=cfg.leads, min_samples=window,
                                  bad_lead_policy=cfg.bad_leads)
    return signals, table, root


def run_evaluation(cfg: EvalConfig, runs: str | Path = "runs", progress: bool = True) -> dict:
    """Run the grid of ``cfg``; writes ``curve.csv``, ``curve.json``, ``curve.png`` and
    ``labels_needed.png`` under ``runs/<name>/``."""
    t0 = time.perf_counter()
    out = run_folder(runs, cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    signals, table, root = _dataset(cfg)
    window = int(round(cfg.window * cfg.fs))
    arms, per_lead, config = load_arms(cfg.encoders, cfg.per_lead, signals.shape[1], window, cfg.random_init)
    missing = [t for t in cfg.tasks if t not in table.columns]
    if missing:
        raise ConfigError(f"tasks: {missing} are not columns of {cfg.dataset} (columns: {sorted(table.columns)})")
    splits = table_splits(table, cfg.split, seed=cfg.split_seed, dataset=cfg.dataset)
    spec = CurveSpec(tasks=cfg.tasks, fractions=cfg.fractions, seeds=cfg.seeds, window=window, per_lead=per_lead,
                     supervised=config if cfg.supervised else None, supervised_epochs=cfg.epochs,
                     supervised_lr=cfg.lr, probes=cfg.probes, encoder_lr_factor=cfg.encoder_lr_factor,
                     supervised_lrs=cfg.supervised_lrs, supervised_batch_sizes=cfg.supervised_batch_sizes,
                     supervised_min_steps=cfg.supervised_min_steps, challenge_year=challenge_year(cfg.dataset))
    curve = run_curve(signals, table, splits, arms, spec, out, progress=progress)
    meta = {"config": asdict(cfg), "dataset_root": str(root), "records": int(len(table)),
            "split_sizes": {k: len(v) for k, v in splits.items()}, "per_lead": per_lead,
            "record_level_patient_ids": record_level_ids(table, cfg.dataset),
            "wall_seconds": round(time.perf_counter() - t0, 1)}
    run = _wandb_run(cfg, out) if cfg.wandb else None
    try:
        summary = write_outputs(curve, out, meta, wandb_run=run)
    finally:
        if run is not None:
            run.finish()
    return {"summary": summary, "out": out, "curve": curve,
            "record_level_patient_ids": meta["record_level_patient_ids"]}


def _wandb_run(cfg, out: Path):
    import wandb

    return wandb.init(name=cfg.name, dir=str(out), config=asdict(cfg), reinit=True, **wandb_settings())


@dataclass
class FewShotConfig:
    """A few-shot recipe: N-way K-shot episodes on frozen embeddings with a Siamese head."""

    name: RunName = "fewshot"
    dataset: str = "mitdb"  # mitdb: AAMI beat classes; other datasets: records labelled by `label`
    root: str | None = None
    dataset_options: dict = field(default_factory=dict)
    label: str | None = None  # label column (not for mitdb)
    fs: PositiveFloat = 360.0
    leads: Names | None = None  # mitdb: lead positions are kept; default lead 0 only (MLII in 45 of 48 records)
    bad_leads: BadLeadPolicy = "zero_lead"  # NaN or flat leads (not mitdb): "zero_lead", "drop_record" or "error"
    window: PositiveFloat = 1.2  # seconds: beat window centred on the R peak (mitdb) or a record crop from the start
    encoder: str | None = None  # checkpoint; None: a random-init CLOCS encoder
    ways: Annotated[int, Ge(2)] = 3
    shots: Annotated[list[PositiveInt], MinLen(1)] = field(default_factory=lambda: [1, 5, 10])
    queries: PositiveInt = 5
    episodes: PositiveInt = 200
    train_classes: list | None = None  # head classes (default all); the others are held out
    episode_classes: list | None = None  # default: every class with K+1 patients
    head: Literal["bce", "contrastive"] = "bce"  # or "contrastive" (margin loss from losses)
    head_steps: PositiveInt = 1000
    max_items_per_patient_class: PositiveInt = 20
    split_seed: NonNegativeInt = 0
    seed: NonNegativeInt = 0


def _fewshot_items(cfg: FewShotConfig):
    root = dataset_root(cfg.dataset, cfg.root)
    index = load_index(cfg.dataset, root, **cfg.dataset_options)
    rng = np.random.default_rng(cfg.seed)
    if cfg.dataset == "mitdb":
        from scipy.signal import resample_poly

        from ssl_ecg.data.mitdb import AAMI_CLASSES, DS1, DS2, MITDB_FS, beat_windows

        beats = beat_windows(index, before_s=cfg.window / 2, after_s=cfg.window / 2)
        x = beats.x[:, [int(str(lead).lstrip("#")) for lead in (cfg.leads or ["#0"])]]
        labels = np.asarray(AAMI_CLASSES)[beats.label]
        patients = np.asarray(beats.patient_id, dtype=str)
        keep = _cap(labels, patients, cfg.max_items_per_patient_class, rng)
        records = np.asarray(beats.record_id, dtype=str)[keep]
        x, labels, patients = x[keep], labels[keep], patients[keep]
        if cfg.fs != MITDB_FS:
            up, down = int(round(cfg.fs)), int(round(MITDB_FS))
            x = resample_poly(x, up, down, axis=-1).astype(np.float32)
        # DS1 trains the head, DS2 gives the episodes (de Chazal et al. 2004); 202 is patient 201 of DS1.
        head_p = set(patients[np.isin(records, DS1)])
        episode_p = set(patients[np.isin(records, DS2)]) - head_p
        return x, labels, patients, head_p, episode_p
    if not cfg.label:
        raise ConfigError(f"label: set the label column for few-shot episodes on {cfg.dataset}")
    window = int(round(cfg.window * cfg.fs))
    signals, table = load_signals(index, fs=cfg.fs, leads=cfg.leads, min_samples=window,
                                  bad_lead_policy=cfg.bad_leads)
    if cfg.label not in table.columns:
        raise ConfigError(f"label: {cfg.label!r} is not a column of {cfg.dataset} (columns: {sorted(table.columns)})")
    col = table[cfg.label]
    ok = ~(col.isna() | (col.astype(str).str.strip() == "")).to_numpy()
    labels, patients = col.astype(str).to_numpy()[ok], table["patient_id"].astype(str).to_numpy()[ok]
    halves = patient_split(np.unique(patients), [0.5, 0.5], seed=cfg.split_seed, names=("head", "episodes"))
    return signals[ok][..., :window], labels, patients, set(halves["head"]), set(halves["episodes"])


def _cap(labels, patients, cap, rng) -> np.ndarray:
    """At most ``cap`` random items per (patient, class), so no patient dominates a class."""
    keys = pd.factorize(pd.Series(patients) + "\x00" + pd.Series(labels))[0]
    order = rng.permutation(len(keys))
    rank = pd.Series(keys[order]).groupby(keys[order]).cumcount().to_numpy()
    return np.sort(order[rank < cap])


def run_fewshot_recipe(cfg: FewShotConfig, runs: str | Path = "runs") -> dict:
    """Embed the items with the (frozen) encoder, then run every K in ``cfg.shots``; writes ``fewshot.json``."""
    out = run_folder(runs, cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    x, labels, patients, head_p, episode_p = _fewshot_items(cfg)
    n_leads, window = x.shape[1], x.shape[2]
    if cfg.encoder:
        encoder = load_encoder(cfg.encoder)
        per_lead = encoder.config.get("in_channels") == 1
        check_encoder(encoder, per_lead, n_leads, window, source=f"encoder ({cfg.encoder})")
    else:
        with seeded(cfg.seed):
            encoder = build_encoder({"name": "clocs", "in_channels": 1, "input_len": window, "embed_dim": 128})
        per_lead = True
    feats = embed_records(encoder, torch.as_tensor(x), window, per_lead)
    results = {}
    for k in cfg.shots:
        res = run_fewshot(feats, labels, patients, head_p, episode_p, cfg.ways, k, cfg.queries, cfg.episodes,
                          train_classes=cfg.train_classes, episode_classes=cfg.episode_classes, mode=cfg.head,
                          head_steps=cfg.head_steps, seed=cfg.seed)
        results[f"{k}-shot"] = res.summary
    counts = pd.crosstab(pd.Series(labels, name="class"), pd.Series(np.isin(patients, list(episode_p)),
                                                                      name="episode_pool"))
    payload = {"config": asdict(cfg), "items": int(len(labels)), "head_patients": len(head_p),
               "episode_patients": len(episode_p), "items_per_class": counts.to_dict(), "results": results}
    (out / "fewshot.json").write_text(json.dumps(payload, indent=2, default=str))
    return {"out": out, **payload}
