"""The training loop shared by pretraining runs: ``fit``, its guards and checkpoint helpers."""

from __future__ import annotations

import pickle
import shutil
import time
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from ssl_ecg.errors import ConfigError, TrainingError
from ssl_ecg.utils import seeded, wandb_settings

__all__ = ["fit", "default_precision", "SetEpoch", "TrainingGuard", "check_budget",
           "load_checkpoint"]


def check_budget(epochs: int, max_steps: int) -> None:
    """Refuse a training budget that would write an untrained encoder.

    Raises:
        ConfigError: ``epochs`` is not an int >= 1, or ``max_steps`` is neither -1 (no limit) nor >= 1.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs: expected an integer >= 1 (an untrained encoder is not a result), got {epochs!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or not (max_steps == -1 or max_steps >= 1):
        raise ConfigError(f"max_steps: expected -1 (no limit) or an integer >= 1, got {max_steps!r}")


def remove_checkpoints(folder: Path) -> None:
    """Delete a checkpoint folder left by an earlier run (a symlink is unlinked, never followed)."""
    folder = Path(folder)
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.is_dir():
        shutil.rmtree(folder)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a Lightning checkpoint with ``torch.load(..., weights_only=True)``.

    Lightning's own checkpoints (state dicts, optimizer and loop states,
    callback states) are plain tensors, numbers, strings and containers, so
    they load weights-only; a file that needs arbitrary unpickling (and could
    run code) is refused.

    Raises:
        ConfigError: ``path`` is missing, damaged, or not loadable weights-only.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: refused, expected a checkpoint that loads with weights_only=True "
                          f"(tensors and plain data; this file would need arbitrary unpickling or is damaged): "
                          f"{first}") from exc
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ConfigError(f"{path}: expected a Lightning checkpoint (a dict with 'state_dict'), "
                          f"got {type(state).__name__}")
    return state


class TrainingGuard(Callback):
    """Fails a run that diverges or learns nothing, naming the run, step and epoch.

    - a non-finite training loss stops the run before its backward pass (so
      the weights are never updated with it), and a non-finite validation loss
      stops it at that batch;
    - a training loss exactly 0 at every step of an epoch (the method's views
      formed no positive pairs, so nothing trains) fails at the end of that epoch;
    - non-finite weights fail at the end of each training epoch.

    The loss checked for 0 is the module's ``last_loss`` (the method's loss,
    without the online monitor's) when it has one, else the loss passed to backward.

    Args:
        run: the run's name, for the messages.
    """

    def __init__(self, run: str):
        self.run = run
        self._steps = 0
        self._nonzero = False

    def on_train_epoch_start(self, trainer, pl_module):
        self._steps, self._nonzero = 0, False

    def on_before_backward(self, trainer, pl_module, loss):
        if not bool(torch.isfinite(loss.detach()).all()):
            raise TrainingError(f"run {self.run!r}: training loss is {float(loss.detach().float().mean())} at step "
                                f"{trainer.global_step} (epoch {trainer.current_epoch}); expected a finite loss: "
                                "check the data for NaN/inf samples, or lower lr")
        own = getattr(pl_module, "last_loss", None)
        own = loss if own is None else own
        self._steps += 1
        if not self._nonzero and bool((own.detach() != 0).any()):
            self._nonzero = True

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if isinstance(outputs, torch.Tensor) and not bool(torch.isfinite(outputs.detach()).all()):
            raise TrainingError(f"run {self.run!r}: validation loss is {float(outputs.detach().float().mean())} at "
                                f"batch {batch_idx} after step {trainer.global_step} (epoch {trainer.current_epoch}); "
                                "expected a finite loss: check the validation data for NaN/inf samples")

    def on_train_epoch_end(self, trainer, pl_module):
        if self._steps and not self._nonzero:
            raise TrainingError(f"run {self.run!r}: the training loss was exactly 0 at all {self._steps} steps of "
                                f"epoch {trainer.current_epoch} (up to step {trainer.global_step}); expected a loss "
                                "that trains: the method's views formed no positive pairs on this data")
        check_finite_weights(pl_module, f"run {self.run!r}: after step {trainer.global_step} "
                                        f"(epoch {trainer.current_epoch})")


def check_finite_weights(module: torch.nn.Module, where: str) -> None:
    """Raise :class:`TrainingError` naming the first parameter or buffer with a NaN or inf, if any."""
    tensors = [(n, t) for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_floating_point()]
    if not tensors or bool(torch.stack([torch.isfinite(t.detach()).all() for _, t in tensors]).all()):
        return
    bad = [n for n, t in tensors if not bool(torch.isfinite(t.detach()).all())]
    raise TrainingError(f"{where}: weights are not finite ({len(bad)} tensors, first {bad[0]!r}); "
                        "expected finite weights: the run diverged")


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
    unless ``WANDB_MODE=online``. ``ckpt_path`` resumes a run. Checkpoint names are
    fixed (no ``-v1`` copies): the folder belongs to this run.

    With ``keep_best`` and a validation loader, ``module`` ends with the weights of
    the best checkpoint that THIS run's callback wrote (``best_model_path``).
    Every checkpoint is read with ``weights_only=True``, the resume too
    (Lightning's ``trainer.fit(ckpt_path=...)`` otherwise unpickles whatever
    the file holds): see :func:`load_checkpoint`. A :class:`TrainingGuard`
    fails the run on a non-finite loss or weights or a loss stuck at exactly 0.

    Args:
        loader: a DataLoader, or ``factory(world_size, rank) -> DataLoader`` for
            samplers that split the data across DDP ranks themselves.
        devices, strategy: as in Lightning (``strategy="ddp"`` for multi-GPU or multi-process CPU).
        precision: Lightning precision; default :func:`default_precision`.
        val_loader: ``factory(world_size, rank)`` of a validation loader (needs a factory ``loader``).
        patience: stop after this many epochs without a lower ``val_loss``.
        run_name: the run's name in logs and error messages (default: ``out_dir``'s name).

    Raises:
        ConfigError: a bad budget (:func:`check_budget`) or a ``ckpt_path`` that
            does not load weights-only.
        TrainingError: from :class:`TrainingGuard`, or non-finite final weights.
    """
    check_budget(epochs, max_steps)
    out_dir = Path(out_dir)
    run = run_name or out_dir.name
    if ckpt_path is not None:
        load_checkpoint(ckpt_path)  # refuse a pickle that could run code before Lightning opens it
    monitor = "val_loss" if val_loader is not None else "train_loss_epoch"
    if patience is not None and val_loader is None:
        raise ConfigError("patience: early stopping needs a validation loader")
    ckpt = ModelCheckpoint(dirpath=out_dir / "checkpoints", save_last=True, every_n_epochs=1,
                           enable_version_counter=False,
                           **({"monitor": monitor, "mode": "min", "save_top_k": 1, "filename": "best"}
                              if keep_best else {}))
    if patience is not None:
        # strict=False: a run that ends before its first validation epoch (max_steps) gets the one-line
        # TrainingError below ("no best checkpoint"), not Lightning's missing-metric RuntimeError
        callbacks = [*callbacks, EarlyStopping(monitor="val_loss", mode="min", patience=patience, strict=False)]
    loggers = [CSVLogger(out_dir, name="logs")]
    if wandb:
        loggers.append(_wandb_logger(out_dir, run))
    factory = callable(loader) and not isinstance(loader, DataLoader)
    trainer = pl.Trainer(max_epochs=epochs, max_steps=max_steps, accelerator=accelerator, devices=devices,
                         strategy=strategy, precision=precision or default_precision(accelerator), logger=loggers,
                         callbacks=[ckpt, SetEpoch(), LearningRateMonitor(logging_interval="epoch"),
                                    TrainingGuard(run), *callbacks],
                         enable_progress_bar=progress, enable_model_summary=False, log_every_n_steps=1,
                         use_distributed_sampler=not factory, num_sanity_val_steps=0,
                         limit_val_batches=None if val_loader is not None else 0)
    t0 = time.perf_counter()
    with seeded(seed):
        if factory:
            trainer.fit(module, datamodule=_Loaders(loader, val_loader), ckpt_path=ckpt_path, weights_only=True)
        else:
            trainer.fit(module, loader, ckpt_path=ckpt_path, weights_only=True)
    if keep_best and val_loader is not None:  # the lowest validation loss, from this run's own callback
        if not ckpt.best_model_path:
            raise TrainingError(f"run {run!r}: no best checkpoint was written (no validation epoch finished); "
                                "expected at least one epoch with a val_loss")
        module.load_state_dict(load_checkpoint(ckpt.best_model_path)["state_dict"])
    check_finite_weights(module, f"run {run!r}: at the end of training (step {trainer.global_step})")
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
