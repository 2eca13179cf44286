"""Recipe-driven pretraining: data spec -> prepared cache + split -> method -> encoder with provenance.

``ssl-ecg pretrain`` runs :func:`run_pretrain`. The data goes through the one data
path (:func:`ssl_ecg.data.prepare.prepare` on :meth:`DataSpec.from_config` of the
recipe), the run folder keeps the patient split (``split.json``) and ``encoder.json``
records the encoder's provenance (the patients and record fingerprints it saw,
the patients whose labels it used, the split), which evaluation checks.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader

from ssl_ecg.checkpoint import PROVENANCE_VERSION, save_encoder
from ssl_ecg.data.dataset import CacheLeadWindows, CacheWindows, contrast_targets
from ssl_ecg.data.prepare import SPLIT_FILE, DataSpec, Prepared, prepare
from ssl_ecg.data.prepare import Split as PatientSplit
from ssl_ecg.data.sampler import EpochShuffleSampler, PatientBatchSampler
from ssl_ecg.data.shards import ShardCache, ShardWindows
from ssl_ecg.data.splits import record_level_ids
from ssl_ecg.errors import ConfigError, DatasetError
from ssl_ecg.models import build_encoder
from ssl_ecg.paths import run_folder
from ssl_ecg.pretrain.budget import EncoderPassCounter
from ssl_ecg.pretrain.methods import DataNeeds, MethodSpec, build_method
from ssl_ecg.pretrain.module import ContrastivePretrainer
from ssl_ecg.pretrain.train import check_budget, fit, remove_checkpoints
from ssl_ecg.recipe import Devices, MaxSteps, Names, NonNegativeInt, PositiveFloat, PositiveInt, RunName, Split
from ssl_ecg.utils import seeded

__all__ = ["PretrainConfig", "run_pretrain", "run_fingerprint", "prepare_pool", "pool_rows", "RUN_SCHEMA",
           "SPLIT_FILE"]

RUN_SCHEMA = 2  # bump when what a run folder holds, or how its result is computed, changes (2: split.json, provenance)
RUN_FILE = "run.json"  # the run's fingerprint and status, beside encoder.pt
# Settings that do not change the trained weights (where things are, logging, how to start).
_NOT_RESULT_AFFECTING = ("name", "root", "cache_dir", "num_workers", "wandb", "resume", "overwrite")


@dataclass
class PretrainConfig:
    """A pretraining recipe (``experiments/*.yaml``).

    The data fields (``dataset root dataset_options fs leads normalization bad_leads
    split split_seed cache_dir``) are the shared data specification
    (:meth:`ssl_ecg.data.prepare.DataSpec.from_config`); ``dataset`` may be a pool:
    a list of ``{dataset, root, dataset_options}`` mappings read at one rate and lead set.
    """

    name: RunName = "pretrain"
    dataset: str | list[dict] = "ludb"  # a dataset name, or a pool of {dataset, root, dataset_options} mappings
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
    pool: str = "train+val"  # patients pretraining sees: "train+val" of the split, "all", or an official subset ("DS1")
    split: Split = field(default_factory=lambda: [0.6, 0.2, 0.2])  # or "official" (PTB-XL folds 1-8/9/10)
    split_seed: NonNegativeInt = 0
    label: str | None = None  # label column for supervised methods (sclst)
    leads: Names | None = None  # lead names to keep, in order (e.g. [II, V2, aVL, aVR]); default: all
    normalization: Literal["record", "lead", "none"] = "record"  # per-record or per-lead z-scoring of the cache
    bad_leads: Literal["zero_lead", "drop_record", "error"] = "zero_lead"  # flat/non-finite leads (counts printed)
    early_stopping_patience: PositiveInt | None = None  # train on train patients, stop on val patients' loss (CLOCS)
    monitor_label: str | None = None  # label column for the online linear monitor (None: no monitor)
    records_per_patient: PositiveInt = 2  # pclr: records of each patient per batch
    cache_dir: str = "cache"
    cache_backend: Literal["memmap", "shards"] = "memmap"  # shards: int16/float16 safetensors shards (large sets)
    cache_dtype: Literal["int16", "float16"] = "int16"  # the shards' storage dtype
    num_workers: NonNegativeInt = 0
    accelerator: str = "auto"
    devices: Devices = 1  # a count >= 1 or "auto"
    strategy: str = "auto"  # "ddp" for several GPUs (or CPU processes, over gloo)
    precision: str | None = None  # default: bf16-mixed on CUDA, else 32-true
    wandb: bool = False  # also log to wandb (offline unless WANDB_MODE=online)
    resume: bool = False  # continue from runs/<name>/checkpoints/last.ckpt
    overwrite: bool = False  # replace an existing run folder of this name (its checkpoints are removed first)


def loss_batch_size(batch_size: int, devices: int | str | list, accelerator: str = "auto") -> int:
    """Instances the loss sees per step: ``batch_size`` x ranks, since the patient-aware losses gather every
    rank's embeddings and ids (``gather_distributed``). Ranks: ``devices`` (an int, a list of device ids, or
    "-1"/"auto": every visible CUDA device where CUDA is used, else 1)."""
    if isinstance(devices, (list, tuple)):
        return int(batch_size) * max(len(devices), 1)
    text = str(devices).strip()
    if text.lstrip("-").isdigit() and int(text) > 0:
        return int(batch_size) * int(text)
    import torch

    cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return int(batch_size) * (max(torch.cuda.device_count(), 1) if cuda else 1)


def _data_name(cfg: PretrainConfig) -> str:
    if isinstance(cfg.dataset, str):
        return cfg.dataset
    return "+".join(str(m.get("dataset", "?")) if isinstance(m, dict) else str(m) for m in cfg.dataset)


def prepare_pool(cfg: PretrainConfig, progress: bool = False) -> Prepared:
    """The recipe's data through the one data path, with the split pretraining draws its pool from.

    ``pool`` ``"train+val"`` or ``"all"``: :func:`~ssl_ecg.data.prepare.prepare` on
    :meth:`DataSpec.from_config` of the recipe (the split from ``split`` and
    ``split_seed``). A pool that names one of the dataset's official subsets (MIT-BIH's
    ``DS1``) takes the index's own subsets as the split (rule ``"official"`` with
    ``"pool"``): the pool's subset holds the patients of its records, and a patient
    whose records also lie in another subset belongs to the pool's only (MIT-BIH
    record 202 is patient 201 of DS1, so DS2 lists 21 patients); the other subsets
    keep the rest, each patient in the first by name.

    Raises:
        ConfigError: the pool names no subset of the index's ``split`` column.
    """
    spec = DataSpec.from_config(cfg)
    if cfg.pool in ("train+val", "all"):
        return prepare(spec, progress=progress)
    pending = PatientSplit({}, {"split": "pending"}, "")  # replaced below: the subsets come from the index
    prepared = prepare(spec, split=pending)
    table = prepared.table
    subsets = (table["index_split"].fillna("").astype(str) if "index_split" in table.columns
               else pd.Series("", index=table.index))
    names = sorted(set(subsets) - {""})
    if cfg.pool not in names:
        raise ConfigError(f"pool: expected 'train+val', 'all' or a subset of the {_data_name(cfg)} split "
                          f"column ({names}), got {cfg.pool!r}")
    keys = table["patient_key"].astype(str)
    taken = set(keys[subsets == cfg.pool])
    parts = {cfg.pool: sorted(taken)}
    for name in names:
        if name != cfg.pool:
            parts[name] = sorted(set(keys[subsets == name]) - taken)
            taken |= set(parts[name])
    split = PatientSplit(parts, {"split": "official", "seed": None, "datasets": spec.datasets, "pool": cfg.pool},
                  str(prepared.cache.manifest.get("key", "")))
    table = table.copy()
    table["split"] = keys.map(lambda k: split.of(k) or "").to_numpy()
    prepared = replace(prepared, table=table, split=split)
    if progress:
        print(prepared.describe(), flush=True)
    return prepared


def pool_rows(cfg: PretrainConfig, prepared: Prepared) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Rows of ``prepared`` that pretraining trains on, those it validates on (early stopping) and the split sizes.

    ``pool``: ``"train+val"`` (with ``early_stopping_patience``: train on ``train``,
    validate on ``val``), ``"all"``, or an official subset (MIT-BIH's ``DS1``: its
    records, see :func:`prepare_pool`).

    Raises:
        ConfigError: the pool names no subset of the split, or ``train+val`` on a split without them.
    """
    split = prepared.split
    names = sorted(split.patients)
    if cfg.pool == "all":
        rows = np.arange(len(prepared.table))
        return rows, None, {"all": len(prepared.patients(rows))}
    if cfg.pool == "train+val":
        if not {"train", "val"} <= set(names):
            raise ConfigError(f"pool: 'train+val' needs a split with train and val patients, but the "
                              f"{_data_name(cfg)} split has {names}; set pool to one of them or 'all'")
        sizes = {k: len(v) for k, v in split.patients.items()}
        if cfg.early_stopping_patience is None:
            return prepared.rows("train", "val"), None, sizes
        return prepared.rows("train"), prepared.rows("val"), sizes  # CLOCS: stop on the val patients' loss
    if cfg.pool not in split.patients:
        raise ConfigError(f"pool: expected 'train+val', 'all' or a subset of the {_data_name(cfg)} split "
                          f"({names}), got {cfg.pool!r}")
    rows = np.flatnonzero((prepared.table["index_split"].fillna("").astype(str) == cfg.pool).to_numpy())
    return rows, None, {cfg.pool: len(split.patients[cfg.pool])}


def run_pretrain(cfg: PretrainConfig, runs: str | Path = "runs", progress: bool = True,
                 callbacks: list[Callback] | None = None) -> dict:
    """Pretrain per ``cfg``; writes ``runs/<name>/encoder.pt`` + ``encoder.json`` and returns a summary.

    Data: ``prepare(DataSpec.from_config(cfg))`` (one data path with evaluation),
    the pool of patients from the split (:func:`pool_rows`), and the loader the
    method declares (:meth:`~ssl_ecg.pretrain.methods.Method.data_needs`: window,
    record or (record, lead) instances, sampler, labels, leads, channels).

    Checkpoints: ``checkpoints/last.ckpt`` every epoch and ``best.ckpt`` (lowest validation loss with
    early stopping, else lowest training loss).

    With ``cfg.resume`` the run continues from ``runs/<name>/checkpoints/last.ckpt``
    (the end of the last finished epoch); the result equals an uninterrupted run's
    (tested to 1e-6 on CPU).

    Run folder: ``split.json`` (the patient split, :class:`ssl_ecg.data.prepare.Split`);
    ``encoder.json`` holds ``provenance`` (read it with
    :func:`ssl_ecg.checkpoint.load_provenance`): ``pool_patients`` (the patient keys of
    every record trained or validated on), their ``pool_fingerprints``,
    ``label_patients`` (patients whose labels were used: the ``label`` column of a
    supervised method, and ``monitor_label``), ``datasets``, ``cache_keys`` and the
    full ``split``. ``run.json`` records the run's fingerprint (:func:`run_fingerprint`:
    the result-affecting settings, the data cache key, the split hash and the
    code/schema version) and, once finished, the SHA-256 of ``encoder.pt``. Running
    a name whose folder already holds a run:

    - same fingerprint, finished, ``encoder.pt`` unchanged: returns the stored
      result (``"reused": True``) without training;
    - ``cfg.resume``: continues only a run of the same fingerprint;
    - ``cfg.overwrite``: removes the old checkpoints, logs, split and encoder, then trains;
    - otherwise: :class:`ConfigError`.

    The summary (returned, and ``pretrain.json``) carries the bad-lead counts of the
    cache (``bad_leads``: policy, zeroed leads, dropped records), the split hash and
    the pool's patient count.

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
    try:
        method = build_method(cfg.method, MethodSpec(fs=cfg.fs, segment_len=cfg.segment_len,
                                                     n_segments=cfg.n_segments, temperature=cfg.temperature,
                                                     positives=cfg.positives, gather_distributed=True,
                                                     projector_dim=cfg.projector_dim))
    except ConfigError:
        raise
    except (ValueError, OverflowError) as exc:  # the view maker's own checks (e.g. a segment under one sample)
        raise ConfigError(f"segment_len={cfg.segment_len!r}, fs={cfg.fs!r}, n_segments={cfg.n_segments}: "
                          f"{' '.join(str(exc).split())}; expected segments of at least one sample") from exc
    # whether labels are needed does not depend on the lead count: refuse before any data is read
    _check_labels(cfg, method.data_needs(len(cfg.leads) if cfg.leads else 1))
    if cfg.early_stopping_patience is not None and cfg.pool != "train+val":
        raise ConfigError("early_stopping_patience: validates on the val patients, so it needs pool='train+val'")
    prepared = prepare_pool(cfg, progress=progress)
    cache, table = prepared.cache, prepared.table
    n_leads = int(cache.n_leads)
    needs = method.data_needs(n_leads)  # everything the loader does below comes from here
    _check_labels(cfg, needs)
    if n_leads < needs.min_leads:
        raise ConfigError(f"method {cfg.method!r}: its positives are other leads of the record, so it needs >= "
                          f"{needs.min_leads} leads, but the {_data_name(cfg)} data has {n_leads} (leads: "
                          f"{list(_leads_of(cache))}); choose more leads or a method such as cmsc")
    patients = table["patient_key"].astype(str)
    records, val_records, pool = pool_rows(cfg, prepared)
    targets, label_info, labelled = pd.factorize(patients)[0], None, None  # patient codes: (dataset, patient) keys
    if needs.needs_labels:
        if cfg.label not in table.columns:
            raise ConfigError(f"label: column {cfg.label!r} is not in the {_data_name(cfg)} index "
                              f"(columns: {sorted(table.columns)})")
        # list-valued columns: multi-hot (R, C) targets; empty label sets are dropped (see contrast_targets)
        targets, label_classes, labelled = contrast_targets(table[cfg.label], cfg.label)
        label_info = {"column": cfg.label, "kind": "multi-label" if targets.ndim == 2 else "single-label",
                      "classes": len(label_classes), "unlabelled_dropped": int((~labelled[records]).sum())}

    def usable(rec: np.ndarray, what: str) -> np.ndarray:
        if labelled is not None:
            rec = rec[labelled[rec]]
        if needs.sampler == "patient":
            counts = patients.iloc[rec].value_counts()
            rec = rec[patients.iloc[rec].map(counts).to_numpy() >= 2]
            if len(rec) == 0:
                raise DatasetError(f"method {cfg.method!r}: positives are other records of the same patient, but "
                                   f"no patient among the {_data_name(cfg)} {what} records has 2 or more records")
        if len(rec) == 0:
            labels = f", labelled in {cfg.label!r}" if labelled is not None else ""
            raise DatasetError(f"pool: no {_data_name(cfg)} {what} records left for method {cfg.method!r} "
                               f"(pool {cfg.pool!r}{labels})")
        return rec

    records = usable(records, "pretraining")
    monitor, n_classes = None, 0
    if cfg.monitor_label:
        if cfg.monitor_label not in table.columns:
            raise ConfigError(f"monitor_label: column {cfg.monitor_label!r} is not in the {_data_name(cfg)} index")
        codes, classes = pd.factorize(table[cfg.monitor_label])  # NaN -> -1 (unlabelled)
        monitor, n_classes = codes, len(classes)
        if n_classes < 2:
            raise ConfigError(f"monitor_label: column {cfg.monitor_label!r} has {n_classes} class(es), need 2+")
    # record_lead (CMSC): every (record, lead) is its own instance, shuffled independently (CLOCS batching)
    # per-lead instances count patients by patient key (a pool's ids are keyed by dataset)
    if isinstance(cache, ShardCache):
        # the shards' own patient codes number the same patients (one dataset: patient id <-> patient key), so
        # only labels need a per-record array in the workers; the whole cache needs no record list either
        windows = partial(_shard_windows, per_lead=needs.instances == "record_lead",
                          same_lead=needs.lead_specific_ids)
        if not needs.needs_labels:
            targets = None
    else:
        windows = (partial(CacheLeadWindows, same_lead=needs.lead_specific_ids, patients=patients.to_numpy())
                   if needs.instances == "record_lead" else CacheWindows)
    data = windows(cache, needs.window_samples, seed=cfg.seed, records=records, targets=targets, labels=monitor)
    val_data = None
    if val_records is not None:
        val_records = usable(val_records, "validation")
        val_data = windows(cache, needs.window_samples, seed=cfg.seed + 1, records=val_records, targets=targets)
    # expected share of anchors with a positive from another lead in their batch (CMSC: by chance only), at the
    # batch the loss sees (batch_size x ranks: the losses gather across ranks)
    loss_batch = loss_batch_size(cfg.batch_size, cfg.devices, cfg.accelerator)
    cross_lead = (method.cross_lead_positive_rate(n_leads, loss_batch, getattr(data, "instance_patients", None),
                                                  getattr(data, "instance_leads", None))
                  if hasattr(method, "cross_lead_positive_rate") else None)
    encoder_cfg = {"name": "clocs", "input_len": needs.input_samples} if cfg.encoder is None else dict(cfg.encoder)
    encoder_cfg.update(in_channels=needs.in_channels, embed_dim=cfg.embed_dim)
    with seeded(cfg.seed):
        encoder = build_encoder(encoder_cfg)
        head = method.make_head(cfg.embed_dim)
        module = ContrastivePretrainer(encoder, method, lr=cfg.lr, seed=cfg.seed, head=head,
                                       monitor_classes=n_classes,
                                       monitor_dim=cfg.embed_dim * needs.instances_per_record)

    # A sharded cache is for pools too large for the memmap's per-worker index: its workers start by spawn, so
    # they do not inherit this process's index table (forked workers would copy its pages as Python touches them)
    context = "spawn" if isinstance(cache, ShardCache) and cfg.num_workers > 0 else None

    def loader(world_size: int, rank: int, dataset: CacheWindows = data) -> DataLoader:
        if needs.sampler == "patient":
            batches = PatientBatchSampler(dataset.patient_codes, cfg.batch_size, k=cfg.records_per_patient,
                                          seed=cfg.seed, num_replicas=world_size, rank=rank)
            if len(batches) == 0:
                raise DatasetError(f"batch_size: {cfg.batch_size} is more than the {len(dataset)} records of patients "
                                   f"with 2+ records (per rank: {world_size} ranks); lower batch_size")
            return DataLoader(dataset, batch_sampler=batches, num_workers=cfg.num_workers,
                              multiprocessing_context=context)
        sampler = EpochShuffleSampler(len(dataset), seed=cfg.seed, num_replicas=world_size, rank=rank)
        per_rank = len(sampler)
        return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler,
                          drop_last=per_rank > cfg.batch_size, num_workers=cfg.num_workers,
                          multiprocessing_context=context)

    validate = val_data is not None
    seen = np.concatenate([records, val_records]) if validate else records
    label_rows = np.empty(0, dtype=np.int64)
    if needs.needs_labels:  # the label column's values drove the loss (train and validation records)
        label_rows = seen
    if monitor is not None:  # the online monitor trains on the training records' labels
        label_rows = np.union1d(label_rows, records[monitor[records] >= 0])
    provenance = _provenance(prepared, seen, label_rows)
    split_hash = prepared.split.hash
    ckpt = out / "checkpoints" / "last.ckpt"
    fingerprint = run_fingerprint(cfg, "+".join(provenance["cache_keys"]), split_hash)
    rank0 = (rank_zero_only.rank or 0) == 0  # under DDP the other ranks re-run this; rank 0 owns the folder
    if rank0:
        existing = _claim_run_folder(out, cfg, fingerprint)
        if existing is not None:
            return existing
        _write_state(out, {"fingerprint": fingerprint, "status": "running"})
        prepared.split.save(out / SPLIT_FILE)
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
    summary = {"config": asdict(cfg), "dataset_root": _roots(prepared), "records": int(len(records)),
               "instances": int(len(data)), "split_sizes": pool, "cross_lead_positive_rate": cross_lead,
               "loss_batch_size": loss_batch, "record_level_patient_ids": record_level_ids(table, _data_name(cfg)),
               "labels": label_info,
               "val_records": int(len(val_records)) if validate else 0,
               "data_needs": asdict(needs), "split": str(out / SPLIT_FILE), "split_hash": split_hash,
               "pool_patients": len(provenance["pool_patients"]),
               "label_patients": len(provenance["label_patients"]),
               "bad_leads": _jsonable(prepared.bad_leads),
               "losses": losses, "seconds": round(seconds, 1), "encoder_forward_passes": passes.total,
               "encoder_forward_passes_per_epoch": passes.per_epoch}
    path = save_encoder(encoder, out / "encoder.pt", extra={"method": cfg.method, "pretraining": summary,
                                                            "provenance": provenance})
    (out / "pretrain.json").write_text(json.dumps(summary, indent=2, default=str))
    if rank0:
        _write_state(out, {"fingerprint": fingerprint, "status": "complete", "encoder_sha256": _sha256(path)})
    return {"encoder": path, **summary, "reused": False}


def _shard_windows(cache: ShardCache, window: int, seed: int, records: np.ndarray, targets=None, labels=None,
                   per_lead: bool = False, same_lead: bool = False) -> ShardWindows:
    """:class:`ShardWindows` with the items of ``CacheWindows``/``CacheLeadWindows``. When ``records`` is every
    record of the cache in order (``pool: all``), the dataset holds no record list, so its memory per worker
    does not grow with the cache."""
    records = np.asarray(records, dtype=np.int64)
    whole = len(records) == cache.n_records and bool((records == np.arange(cache.n_records)).all())
    return ShardWindows(cache, window, seed=seed, records=None if whole else records, targets=targets,
                        labels=labels, per_lead=per_lead, same_lead=same_lead)


def _check_labels(cfg: PretrainConfig, needs: DataNeeds) -> None:
    if needs.needs_labels and not cfg.label:
        raise ConfigError(f"method {cfg.method!r} is supervised: set label=<column> in the recipe")


def _leads_of(cache) -> list:
    manifest = getattr(cache, "manifest", None)
    if isinstance(manifest, dict) and manifest.get("leads"):
        return list(manifest["leads"])
    return list(getattr(cache, "leads", []) or [])


def _roots(prepared: Prepared) -> str:
    spec = prepared.spec
    if isinstance(spec.dataset, str):
        manifest = getattr(prepared.cache, "manifest", None)
        return str(manifest.get("root", spec.root)) if isinstance(manifest, dict) else str(spec.root)
    return ", ".join(str(m.get("root")) for m in spec.dataset)


def _cache_keys(prepared: Prepared) -> list[str]:
    """Keys of the record cache(s) behind ``prepared`` (one per pool member)."""
    cache = prepared.cache
    members = getattr(cache, "caches", None) or getattr(cache, "members", None) or [cache]
    keys = [str(c.manifest.get("key", "")) for c in members if isinstance(getattr(c, "manifest", None), dict)]
    return [k for k in keys if k] or [str(prepared.split.cache_key)]


def _provenance(prepared: Prepared, rows: np.ndarray, label_rows: np.ndarray) -> dict:
    """The ``provenance`` block of ``encoder.json`` (see :func:`ssl_ecg.checkpoint.load_provenance`)."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    datasets = prepared.table["dataset"].astype(str).to_numpy()[rows]
    return {"version": PROVENANCE_VERSION, "datasets": sorted(set(datasets.tolist())),
            "cache_keys": _cache_keys(prepared),
            "pool_patients": sorted(prepared.patients(rows)),
            "pool_fingerprints": sorted(prepared.fingerprints(rows)),
            "label_patients": sorted(prepared.patients(np.unique(label_rows))) if len(label_rows) else [],
            "split": prepared.split.to_dict()}


def _jsonable(value):
    """Plain JSON values (numpy scalars and arrays, tuples) for the summary."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def run_fingerprint(cfg: PretrainConfig, cache_key: str, split_hash: str = "") -> str:
    """SHA-256 of what decides a run's result: the recipe's result-affecting settings, the data, the split and
    the code.

    Leaves out where things live and how the run is started or logged
    (``name root cache_dir num_workers wandb resume overwrite``).

    Args:
        cfg: the recipe.
        cache_key: the record cache's key (source files, preprocessing parameters); for a pool, the
            members' keys joined.
        split_hash: :attr:`ssl_ecg.data.prepare.Split.hash` of the run's patient split.
    """
    from ssl_ecg import __version__

    settings = {k: v for k, v in asdict(cfg).items() if k not in _NOT_RESULT_AFFECTING}
    if settings.get("cache_backend", "memmap") == "memmap":
        # the memmap default leaves runs fingerprinted before these fields existed valid (their cache key names
        # the backend; the dtype is the shards' only)
        settings.pop("cache_backend", None)
        settings.pop("cache_dtype", None)
    payload = {"settings": settings, "cache_key": cache_key, "split": split_hash, "schema": RUN_SCHEMA,
               "version": __version__}
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


_RUN_FILES = ("checkpoints", "logs", "encoder.pt", "encoder.json", "pretrain.json", SPLIT_FILE, RUN_FILE)


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
