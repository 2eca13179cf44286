"""Pretraining entry point: in-memory signals -> trained encoder on disk."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from ssl_ecg.checkpoint import save_encoder
from ssl_ecg.errors import ConfigError
from ssl_ecg.models import build_encoder
from ssl_ecg.pretrain.methods import MethodSpec, build_method
from ssl_ecg.pretrain.module import ContrastivePretrainer
from ssl_ecg.utils import seeded, wandb_settings

__all__ = ["pretrain", "PretrainResult", "fit", "default_precision", "SetEpoch"]


@dataclass
class PretrainResult:
    encoder_path: Path
    losses: list[float]
    seconds: float


def pretrain(
    signals: np.ndarray,
    patient_codes: np.ndarray,
    out_dir: str | Path,
    fs: float,
    segment_len: float = 4.0,
    n_segments: int = 2,
    per_lead: bool = True,
    positives: str = "patient",
    embed_dim: int = 128,
    temperature: float = 0.1,
    lr: float = 1e-4,
    batch_size: int = 32,
    epochs: int = 10,
    seed: int = 0,
    accelerator: str = "auto",
    progress_bar: bool = True,
    max_steps: int = -1,
) -> PretrainResult:
    """CMSC-pretrain a CLOCS encoder on ``signals`` (R, L, T) with patient codes (R,).

    Writes ``encoder.pt``/``encoder.json`` (see :func:`ssl_ecg.load_encoder`),
    Lightning checkpoints under ``checkpoints/`` and a CSV log under ``logs/``.

    Args:
        batch_size: records per batch; with per-lead views a batch holds
            ``batch_size * L`` instances.
    """
    if signals.ndim != 3 or len(signals) != len(patient_codes):
        raise ConfigError(f"signals: expected (R, L, T) with R = len(patient_codes), got {signals.shape}")
    if len(signals) < 2:
        raise ConfigError(f"signals: need at least 2 records to pretrain, got {len(signals)}")
    out_dir = Path(out_dir)
    if not per_lead:
        raise ConfigError("per_lead: CMSC in pretrain() uses per-lead views; use run_pretrain for other methods")
    n_leads = signals.shape[1]
    method = build_method("cmsc", MethodSpec(fs=fs, segment_len=segment_len, n_segments=n_segments,
                                             temperature=temperature, positives=positives))
    encoder_cfg = {"name": "clocs", "in_channels": method.in_channels(n_leads),
                   "input_len": method.segment_samples(), "embed_dim": embed_dim}
    with seeded(seed):
        encoder = build_encoder(encoder_cfg)
    module = ContrastivePretrainer(encoder, method, lr=lr, seed=seed)
    data = TensorDataset(torch.as_tensor(signals, dtype=torch.float32), torch.as_tensor(patient_codes).long())
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=len(data) > batch_size,
                        generator=torch.Generator().manual_seed(seed))
    losses, seconds = fit(module, loader, out_dir, epochs=epochs, max_steps=max_steps, accelerator=accelerator,
                          progress=progress_bar, seed=seed, keep_best=True)
    encoder.cpu().eval()
    path = save_encoder(encoder, out_dir / "encoder.pt", extra={
        "method": "cmsc", "fs": fs, "segment_len": segment_len, "n_segments": n_segments, "per_lead": per_lead,
        "positives": positives, "temperature": temperature, "lr": lr, "epochs": epochs, "seed": seed,
        "n_records": int(len(signals)),
    })
    (out_dir / "pretrain_losses.json").write_text(json.dumps(losses))
    return PretrainResult(path, losses, seconds)


def default_precision(accelerator: str) -> str:
    """bf16 mixed precision on a CUDA device that supports it, else full float32."""
    cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if cuda and torch.cuda.is_bf16_supported() else "32-true"


class _Loaders(pl.LightningDataModule):
    """Builds the training loader once the trainer knows its world size and rank (DDP-aware samplers)."""

    def __init__(self, factory: Callable[[int, int], DataLoader], val: Callable[[int, int], DataLoader] | None):
        super().__init__()
        self.factory, self.val = factory, val

    def train_dataloader(self) -> DataLoader:
        return self.factory(self.trainer.world_size, self.trainer.global_rank)

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val is None else self.val(self.trainer.world_size, self.trainer.global_rank)


class SetEpoch(Callback):
    """Calls ``set_epoch`` on the training loader's dataset and samplers at each epoch start."""

    def on_train_epoch_start(self, trainer, pl_module):
        loader = trainer.train_dataloader
        for t in (loader.dataset, loader.sampler, loader.batch_sampler):
            if hasattr(t, "set_epoch"):
                t.set_epoch(trainer.current_epoch)


def fit(module: pl.LightningModule, loader: DataLoader | Callable[[int, int], DataLoader], out_dir: Path, *,
        epochs: int, max_steps: int = -1, accelerator: str = "auto", devices: int | str = 1,
        strategy: str = "auto", precision: str | None = None, wandb: bool = False, run_name: str | None = None,
        progress: bool = True, seed: int = 0, callbacks=(), ckpt_path: str | None = None,
        keep_best: bool = False, val_loader: Callable[[int, int], DataLoader] | None = None,
        patience: int | None = None) -> tuple[list[float], float]:
    """Train ``module`` with Lightning inside a seeded RNG scope; return (per-epoch losses, seconds).

    Writes ``out_dir/checkpoints/last.ckpt`` every epoch, with ``keep_best`` also
    ``best.ckpt`` (lowest ``val_loss`` with a validation loader, else lowest training
    loss), a CSV log under ``out_dir/logs`` (loss, learning rate, positives, online
    monitor) and, with ``wandb``, a wandb run under ``out_dir/wandb``, offline
    unless ``WANDB_MODE=online``. ``ckpt_path`` resumes a run.

    Args:
        loader: a DataLoader, or ``factory(world_size, rank) -> DataLoader`` for
            samplers that split the data across DDP ranks themselves.
        devices, strategy: as in Lightning (``strategy="ddp"`` for multi-GPU or multi-process CPU).
        precision: Lightning precision; default :func:`default_precision`.
        val_loader: ``factory(world_size, rank)`` of a validation loader (needs a factory ``loader``).
        patience: stop after this many epochs without a lower ``val_loss``.
    """
    monitor = "val_loss" if val_loader is not None else "train_loss_epoch"
    if patience is not None and val_loader is None:
        raise ConfigError("patience: early stopping needs a validation loader")
    ckpt = ModelCheckpoint(dirpath=out_dir / "checkpoints", save_last=True, every_n_epochs=1,
                           **({"monitor": monitor, "mode": "min", "save_top_k": 1, "filename": "best"}
                              if keep_best else {}))
    if patience is not None:
        callbacks = [*callbacks, EarlyStopping(monitor="val_loss", mode="min", patience=patience)]
    loggers = [CSVLogger(out_dir, name="logs")]
    if wandb:
        loggers.append(_wandb_logger(out_dir, run_name or out_dir.name))
    factory = callable(loader) and not isinstance(loader, DataLoader)
    trainer = pl.Trainer(max_epochs=epochs, max_steps=max_steps, accelerator=accelerator, devices=devices,
                         strategy=strategy, precision=precision or default_precision(accelerator), logger=loggers,
                         callbacks=[ckpt, SetEpoch(), LearningRateMonitor(logging_interval="epoch"), *callbacks],
                         enable_progress_bar=progress, enable_model_summary=False, log_every_n_steps=1,
                         use_distributed_sampler=not factory, num_sanity_val_steps=0,
                         limit_val_batches=None if val_loader is not None else 0)
    t0 = time.perf_counter()
    with seeded(seed):
        if factory:
            trainer.fit(module, datamodule=_Loaders(loader, val_loader), ckpt_path=ckpt_path)
        else:
            trainer.fit(module, loader, ckpt_path=ckpt_path)
    return _epoch_losses(Path(loggers[0].log_dir) / "metrics.csv"), time.perf_counter() - t0


def _wandb_logger(out_dir: Path, name: str):
    from pytorch_lightning.loggers import WandbLogger

    # Not Lightning's offline=True: it sets WANDB_MODE, which an already set-up wandb does not re-read.
    (out_dir / "wandb").mkdir(parents=True, exist_ok=True)
    return WandbLogger(name=name, save_dir=str(out_dir), **wandb_settings())


def _epoch_losses(metrics_csv: Path) -> list[float]:
    import pandas as pd

    if not metrics_csv.is_file():
        return []
    df = pd.read_csv(metrics_csv)
    if "train_loss_epoch" not in df:
        return []
    return df["train_loss_epoch"].dropna().astype(float).tolist()
