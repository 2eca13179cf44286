"""Recipe-driven pretraining: dataset -> cache -> method -> encoder checkpoint (``ssl-ecg pretrain``)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only
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
from ssl_ecg.pretrain.train import check_budget, fit, remove_checkpoints
from ssl_ecg.recipe import MaxSteps, Names, NonNegativeInt, PositiveFloat, PositiveInt, RunName, Split
from ssl_ecg.utils import seeded

__all__ = ["PretrainConfig", "run_pretrain", "run_fingerprint", "RUN_SCHEMA", "MIN_LEADS"]

RUN_SCHEMA = 1  # bump when what a run folder holds, or how its result is computed, changes
RUN_FILE = "run.json"  # the run's fingerprint and status, beside encoder.pt
# Fewest leads a method's views can form positives from (its views ARE other leads).
MIN_LEADS = {"cmlc": 2, "cmsmlc": 2, "clocs": 2}
# Settings that do not change the trained weights (where things are, logging, how to start).
_NOT_RESULT_AFFECTING = ("name", "root", "cache_dir", "num_workers", "wandb", "resume", "overwrite")


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
    overwrite: bool = False  # replace an existing run folder of this name (its checkpoints are removed first)


def run_pretrain(cfg: PretrainConfig, runs: str | Path = "runs", progress: bool = True,
                 callbacks: list[Callback] | None = None) -> dict:
    """Pretrain per ``cfg``; writes ``runs/<name>/encoder.pt`` + ``encoder.json`` and returns a summary.

    Checkpoints: ``checkpoints/last.ckpt`` every epoch and ``best.ckpt`` (lowest validation loss with
    early stopping, else lowest training loss).

    With ``cfg.resume`` the run continues from ``runs/<name>/checkpoints/last.ckpt``
    (the end of the last finished epoch); the result equals an uninterrupted run's
    (tested to 1e-6 on CPU).

    Run folder: ``run.json`` records the run's fingerprint (:func:`run_fingerprint`:
    the result-affecting settings, the data cache key and the code/schema version)
    and, once finished, the SHA-256 of ``encoder.pt``. Running a name whose folder
    already holds a run:

    - same fingerprint, finished, ``encoder.pt`` unchanged: returns the stored
      result (``"reused": True``) without training;
    - ``cfg.resume``: continues only a run of the same fingerprint;
    - ``cfg.overwrite``: removes the old checkpoints, logs and encoder, then trains;
    - otherwise: :class:`ConfigError`.

    Trust: checkpoints are read with ``weights_only=True`` (the resume and the
    best weights too, see :func:`ssl_ecg.pretrain.train.load_checkpoint`), and
    the best weights come from the path this run's own callback wrote; a resume
    also needs the matching fingerprint, so a foreign ``last.ckpt`` cannot
    continue under another recipe.

    Raises:
        ConfigError: a bad recipe (e.g. ``epochs`` 0, a multi-lead method on one
            lead), or a run folder that is taken (see above).
        TrainingError: the run diverged (non-finite loss or weights) or its loss
            stayed exactly 0 for an epoch; no encoder is written.
    """
    check_budget(cfg.epochs, cfg.max_steps)
    if cfg.resume and cfg.overwrite:
        raise ConfigError("resume, overwrite: expected at most one (resume continues the run, overwrite replaces it)")
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
    need = getattr(method, "min_leads", MIN_LEADS.get(cfg.method, 1))
    if n_leads < need:
        raise ConfigError(f"method {cfg.method!r}: its positives are other leads of the record, so it needs >= {need} "
                          f"leads, but the {cfg.dataset} data has {n_leads} (leads: {list(cache.manifest['leads'])}); "
                          "choose more leads or a method such as cmsc")
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
    fingerprint = run_fingerprint(cfg, str(cache.manifest.get("key", "")))
    rank0 = (rank_zero_only.rank or 0) == 0  # under DDP the other ranks re-run this; rank 0 owns the folder
    if rank0:
        existing = _claim_run_folder(out, cfg, fingerprint)
        if existing is not None:
            return existing
        _write_state(out, {"fingerprint": fingerprint, "status": "running"})
    validate = val_data is not None
    passes = EncoderPassCounter()  # the budget in samples through the encoder (N x V per step)
    losses, seconds = fit(module, loader, out, epochs=cfg.epochs, max_steps=cfg.max_steps,
                          accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy,
                          precision=cfg.precision, wandb=cfg.wandb, run_name=cfg.name, progress=progress,
                          seed=cfg.seed, callbacks=[*(callbacks or []), passes],
                          ckpt_path=str(ckpt) if cfg.resume else None,
                          keep_best=True, patience=cfg.early_stopping_patience,
                          val_loader=(lambda w, r: loader(w, r, val_data)) if validate else None)
    # with validation, fit() left the module with this run's best.ckpt weights (CLOCS: lowest val_loss)
    encoder.cpu().eval()
    summary = {"config": asdict(cfg), "dataset_root": str(root), "records": int(len(data.records)),
               "instances": int(len(data)), "split_sizes": pool, "cross_lead_positive_rate": cross_lead,
               "labels": label_info,
               "val_records": int(len(val_data.records)) if validate else 0,
               "losses": losses, "seconds": round(seconds, 1), "encoder_forward_passes": passes.total,
               "encoder_forward_passes_per_epoch": passes.per_epoch}
    path = save_encoder(encoder, out / "encoder.pt", extra={"method": cfg.method, "pretraining": summary})
    (out / "pretrain.json").write_text(json.dumps(summary, indent=2, default=str))
    if rank0:
        _write_state(out, {"fingerprint": fingerprint, "status": "complete", "encoder_sha256": _sha256(path)})
    return {"encoder": path, **summary, "reused": False}


def run_fingerprint(cfg: PretrainConfig, cache_key: str) -> str:
    """SHA-256 of what decides a run's result: the recipe's result-affecting settings, the data and the code.

    Leaves out where things live and how the run is started or logged
    (``name root cache_dir num_workers wandb resume overwrite``).

    Args:
        cfg: the recipe.
        cache_key: the record cache's key (source files, preprocessing parameters).
    """
    from ssl_ecg import __version__

    settings = {k: v for k, v in asdict(cfg).items() if k not in _NOT_RESULT_AFFECTING}
    payload = {"settings": settings, "cache_key": cache_key, "schema": RUN_SCHEMA, "version": __version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_state(out: Path) -> dict | None:
    try:
        state = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _write_state(out: Path, state: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps({"schema": RUN_SCHEMA, **state}, indent=2))
    tmp.replace(out / RUN_FILE)


_RUN_FILES = ("checkpoints", "logs", "encoder.pt", "encoder.json", "pretrain.json", RUN_FILE)


def _claim_run_folder(out: Path, cfg: PretrainConfig, fingerprint: str) -> dict | None:
    """Apply the re-run policy of :func:`run_pretrain` to ``out``; the stored result when it is reused."""
    state = _read_state(out)
    found = state.get("fingerprint") if state else None
    ckpt = out / "checkpoints" / "last.ckpt"
    if cfg.resume:
        if not ckpt.is_file():
            raise ConfigError(f"resume: no checkpoint at {ckpt} to resume from")
        if found != fingerprint:
            raise ConfigError(f"resume: {out} was not started by this recipe on this data and code (fingerprint "
                              f"{(found or 'none')[:12]} in {RUN_FILE}, expected {fingerprint[:12]}); "
                              "set overwrite=true (--overwrite) to start it again")
        return None
    present = [name for name in _RUN_FILES if (out / name).exists() or (out / name).is_symlink()]
    if not present:
        return None
    if cfg.overwrite:
        for name in present:
            target = out / name
            if name == "checkpoints":
                remove_checkpoints(target)
            elif target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        return None
    encoder = out / "encoder.pt"
    if found == fingerprint and state.get("status") == "complete" and (out / "pretrain.json").is_file():
        if encoder.is_file() and _sha256(encoder) == state.get("encoder_sha256"):
            return {"encoder": encoder, **json.loads((out / "pretrain.json").read_text()), "reused": True}
        why = "a finished run of this recipe whose encoder.pt no longer matches the hash in run.json"
    elif found == fingerprint:
        why = "an unfinished run of this recipe"
    elif found is None:
        why = f"files of a run without a readable {RUN_FILE} ({', '.join(present)})"
    else:
        why = (f"a run of a different recipe, data or code version (fingerprint {found[:12]} in {RUN_FILE}, "
               f"this recipe {fingerprint[:12]})")
    raise ConfigError(f"name: run folder {out} already holds {why}; set resume=true (--resume) to continue it "
                      "or overwrite=true (--overwrite) to replace it")
