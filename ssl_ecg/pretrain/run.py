"""Recipe-driven pretraining: dataset -> cache -> method -> encoder checkpoint (``ssl-ecg pretrain``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader

from ssl_ecg.checkpoint import save_encoder
from ssl_ecg.data import load_index
from ssl_ecg.data.cache import CacheParams, open_cache
from ssl_ecg.data.dataset import CacheLeadWindows, CacheWindows, contrast_targets
from ssl_ecg.data.download import dataset_root
from ssl_ecg.data.sampler import EpochShuffleSampler, PatientBatchSampler
from ssl_ecg.data.splits import table_splits
from ssl_ecg.errors import ConfigError, DatasetError
from ssl_ecg.models import build_encoder
from ssl_ecg.paths import run_folder
from ssl_ecg.pretrain.budget import EncoderPassCounter
from ssl_ecg.pretrain.methods import MethodSpec, build_method
from ssl_ecg.pretrain.module import ContrastivePretrainer
from ssl_ecg.pretrain.train import fit
from ssl_ecg.recipe import MaxSteps, Names, NonNegativeInt, PositiveFloat, PositiveInt, RunName, Split
from ssl_ecg.utils import seeded

__all__ = ["PretrainConfig", "run_pretrain"]


@dataclass
class PretrainConfig:
    """A pretraining recipe (``experiments/*.yaml``)."""

    name: RunName = "pretrain"
    dataset: str = "ludb"
    root: str | None = None  # the dataset folder; default: found under $SSL_ECG_DATA
    dataset_options: dict = field(default_factory=dict)  # adapter options, e.g. {fs: 100} for PTB-XL's 100 Hz files
    method: str = "cmsc"
    fs: PositiveFloat = 100.0
    segment_len: PositiveFloat = 5.0
    n_segments: PositiveInt = 2
    positives: str = "patient"
    temperature: PositiveFloat = 0.1
    embed_dim: PositiveInt = 128
    projector_dim: PositiveInt | None = None  # vicreg/barlowtwins projector width (default 4 x embed_dim)
    encoder: dict | None = None  # e.g. {name: resnet1d, widths: [64, 128], depth: [1, 1]}; default: the CLOCS CNN
    lr: PositiveFloat = 1e-4
    batch_size: PositiveInt = 32
    epochs: PositiveInt = 10
    max_steps: MaxSteps = -1
    seed: NonNegativeInt = 0
    pool: str = "train+val"  # patients pretraining sees: "train+val" of the split, "all", or a split value ("DS1")
    split: Split = field(default_factory=lambda: [0.6, 0.2, 0.2])  # or "official" (PTB-XL folds 1-8/9/10)
    split_seed: NonNegativeInt = 0
    label: str | None = None  # label column for supervised methods (sclst)
    leads: Names | None = None  # lead names to keep, in order (e.g. [II, V2, aVL, aVR]); default: all
    early_stopping_patience: PositiveInt | None = None  # train on train patients, stop on val patients' loss (CLOCS)
    monitor_label: str | None = None  # label column for the online linear monitor (None: no monitor)
    records_per_patient: PositiveInt = 2  # pclr: records of each patient per batch
    cache_dir: str = "cache"
    num_workers: NonNegativeInt = 0
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"  # "ddp" for several GPUs (or CPU processes, over gloo)
    precision: str | None = None  # default: bf16-mixed on CUDA, else 32-true
    wandb: bool = False  # also log to wandb (offline unless WANDB_MODE=online)
    resume: bool = False  # continue from runs/<name>/checkpoints/last.ckpt


def run_pretrain(cfg: PretrainConfig, runs: str | Path = "runs", progress: bool = True,
                 callbacks: list[Callback] | None = None) -> dict:
    """Pretrain per ``cfg``; writes ``runs/<name>/encoder.pt`` + ``encoder.json`` and returns a summary.

    Checkpoints: ``checkpoints/last.ckpt`` every epoch and ``best.ckpt`` (lowest validation loss with
    early stopping, else lowest training loss).

    With ``cfg.resume`` the run continues from ``runs/<name>/checkpoints/last.ckpt``
    (the end of the last finished epoch); the result equals an uninterrupted run's
    (tested to 1e-6 on CPU).
    """
    out = run_folder(runs, cfg.name)  # a bad name fails before anything is written
    # Gathering is a no-op in one process; under DDP the patient-aware losses see every rank's ids.
    method = build_method(cfg.method, MethodSpec(fs=cfg.fs, segment_len=cfg.segment_len,
                                                 n_segments=cfg.n_segments, temperature=cfg.temperature,
                                                 positives=cfg.positives, gather_distributed=True,
                                                 projector_dim=cfg.projector_dim))
    if method.needs_labels and not cfg.label:
        raise ConfigError(f"method {cfg.method!r} is supervised: set label=<column> in the recipe")
    if cfg.early_stopping_patience is not None and cfg.pool != "train+val":
        raise ConfigError("early_stopping_patience: validates on the val patients, so it needs pool='train+val'")
    root = dataset_root(cfg.dataset, cfg.root)
    index = load_index(cfg.dataset, root, **cfg.dataset_options)
    leads = tuple(cfg.leads) if cfg.leads else None
    cache = open_cache(index, cfg.cache_dir, CacheParams(fs=cfg.fs, leads=leads))
    n_leads = cache.n_leads
    patients = cache.table["patient_id"].astype(str)
    val_records = None
    if cfg.pool == "all":
        records, pool = np.arange(len(cache)), {"all": int(patients.nunique())}
    elif cfg.pool != "train+val":  # a named official subset, e.g. MIT-BIH's DS1
        named = cache.table["split"].astype(str) if "split" in cache.table.columns else pd.Series(dtype=str)
        if cfg.pool not in set(named):
            raise ConfigError(f"pool: expected 'train+val', 'all' or a value of the {cfg.dataset} split column "
                              f"({sorted(set(named) - {''})}), got {cfg.pool!r}")
        records = np.flatnonzero((named == cfg.pool).to_numpy())
        pool = {cfg.pool: int(patients.iloc[records].nunique())}
    else:
        splits = table_splits(cache.table, cfg.split, seed=cfg.split_seed, dataset=cfg.dataset)
        pool = {k: len(v) for k, v in splits.items()}
        if cfg.early_stopping_patience is None:
            records = np.flatnonzero(patients.isin(set(splits["train"]) | set(splits["val"])).to_numpy())
        else:  # CLOCS: train on the train patients, stop on the val patients' loss
            records = np.flatnonzero(patients.isin(set(splits["train"])).to_numpy())
            val_records = np.flatnonzero(patients.isin(set(splits["val"])).to_numpy())
    targets, label_info = None, None
    if method.needs_labels:
        if cfg.label not in cache.table.columns:
            raise ConfigError(f"label: column {cfg.label!r} is not in the {cfg.dataset} index "
                              f"(columns: {sorted(cache.table.columns)})")
        # list-valued columns: multi-hot (R, C) targets; empty label sets are dropped (see contrast_targets)
        targets, label_classes, labelled = contrast_targets(cache.table[cfg.label], cfg.label)
        label_info = {"column": cfg.label, "kind": "multi-label" if targets.ndim == 2 else "single-label",
                      "classes": len(label_classes), "unlabelled_dropped": int((~labelled[records]).sum())}

    def usable(rec: np.ndarray, what: str) -> np.ndarray:
        if method.needs_labels:
            rec = rec[labelled[rec]]
        if method.sampler == "patient":
            counts = patients.iloc[rec].value_counts()
            rec = rec[patients.iloc[rec].map(counts).to_numpy() >= 2]
            if len(rec) == 0:
                raise DatasetError(f"method {cfg.method!r}: positives are other records of the same patient, but "
                                   f"no patient among the {cfg.dataset} {what} records has 2 or more records")
        return rec

    records = usable(records, "pretraining")
    monitor, n_classes = None, 0
    if cfg.monitor_label:
        if cfg.monitor_label not in cache.table.columns:
            raise ConfigError(f"monitor_label: column {cfg.monitor_label!r} is not in the {cfg.dataset} index")
        col = cache.table[cfg.monitor_label]
        codes, classes = pd.factorize(col)  # NaN -> -1 (unlabelled)
        monitor, n_classes = codes, len(classes)
        if n_classes < 2:
            raise ConfigError(f"monitor_label: column {cfg.monitor_label!r} has {n_classes} class(es), need 2+")
    window = cfg.n_segments * method.segment_samples() if cfg.method in ("cmsc", "cmsmlc", "clocs") \
        else method.window_samples() if hasattr(method, "window_samples") else method.segment_samples()
    # CMSC: every (record, lead) is its own instance, shuffled independently (CLOCS batching)
    windows = (partial(CacheLeadWindows, same_lead=cfg.positives == "patient_lead")
               if getattr(method, "lead_instances", False) else CacheWindows)
    data = windows(cache, window, seed=cfg.seed, records=records, targets=targets, labels=monitor)
    val_data = None
    if val_records is not None:
        val_data = windows(cache, window, seed=cfg.seed + 1, records=usable(val_records, "validation"),
                           targets=targets)
    # expected share of anchors with a positive from another lead in their batch (CMSC: by chance only)
    cross_lead = (method.cross_lead_positive_rate(n_leads, cfg.batch_size, getattr(data, "instance_patients", None),
                                                  getattr(data, "instance_leads", None))
                  if hasattr(method, "cross_lead_positive_rate") else None)
    encoder_cfg = {"name": "clocs", "input_len": method.segment_samples()} if cfg.encoder is None else dict(cfg.encoder)
    encoder_cfg.update(in_channels=method.in_channels(n_leads), embed_dim=cfg.embed_dim)
    with seeded(cfg.seed):
        encoder = build_encoder(encoder_cfg)
        head = method.make_head(cfg.embed_dim)
        module = ContrastivePretrainer(encoder, method, lr=cfg.lr, seed=cfg.seed, head=head,
                                       monitor_classes=n_classes,
                                       monitor_dim=cfg.embed_dim * method.instances_per_record(n_leads))

    def loader(world_size: int, rank: int, dataset: CacheWindows = data) -> DataLoader:
        if method.sampler == "patient":
            batches = PatientBatchSampler(dataset.patient_codes, cfg.batch_size, k=cfg.records_per_patient,
                                          seed=cfg.seed, num_replicas=world_size, rank=rank)
            if len(batches) == 0:
                raise DatasetError(f"batch_size: {cfg.batch_size} is more than the {len(dataset)} records of patients "
                                   f"with 2+ records (per rank: {world_size} ranks); lower batch_size")
            return DataLoader(dataset, batch_sampler=batches, num_workers=cfg.num_workers)
        sampler = EpochShuffleSampler(len(dataset), seed=cfg.seed, num_replicas=world_size, rank=rank)
        per_rank = len(sampler)
        return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler,
                          drop_last=per_rank > cfg.batch_size, num_workers=cfg.num_workers)

    ckpt = out / "checkpoints" / "last.ckpt"
    if cfg.resume and not ckpt.is_file():
        raise ConfigError(f"resume: no checkpoint at {ckpt} to resume from")
    validate = val_data is not None
    passes = EncoderPassCounter()  # the budget in samples through the encoder (N x V per step)
    losses, seconds = fit(module, loader, out, epochs=cfg.epochs, max_steps=cfg.max_steps,
                          accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy,
                          precision=cfg.precision, wandb=cfg.wandb, run_name=cfg.name, progress=progress,
                          seed=cfg.seed, callbacks=[*(callbacks or []), passes],
                          ckpt_path=str(ckpt) if cfg.resume else None,
                          keep_best=True, patience=cfg.early_stopping_patience,
                          val_loader=(lambda w, r: loader(w, r, val_data)) if validate else None)
    if validate:  # CLOCS keeps the weights of the lowest validation loss
        best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
        module.load_state_dict(best["state_dict"])
    encoder.cpu().eval()
    summary = {"config": asdict(cfg), "dataset_root": str(root), "records": int(len(data.records)),
               "instances": int(len(data)), "split_sizes": pool, "cross_lead_positive_rate": cross_lead,
               "labels": label_info,
               "val_records": int(len(val_data.records)) if validate else 0,
               "losses": losses, "seconds": round(seconds, 1), "encoder_forward_passes": passes.total,
               "encoder_forward_passes_per_epoch": passes.per_epoch}
    path = save_encoder(encoder, out / "encoder.pt", extra={"method": cfg.method, "pretraining": summary})
    (out / "pretrain.json").write_text(json.dumps(summary, indent=2, default=str))
    return {"encoder": path, **summary}
