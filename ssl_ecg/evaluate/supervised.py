"""Fine-tuning a (pretrained) encoder end to end, and the supervised-from-scratch arm.

The supervised arm is tuned like the probes: learning rate and batch size are
chosen on validation (macro) AUROC from a small grid, and the test set is scored
once, at the chosen setting. An epoch takes at least ``min_steps`` optimiser
steps: a training set smaller than ``min_steps`` batches is cycled through in
consecutive seeded permutations, so a 5% label fraction still trains.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from augmentations import SegmentViews
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.embed import tile_windows, window_embeddings
from ssl_ecg.evaluate.linear import loss_and_outputs, scores_of, targets, train_early_stopped
from ssl_ecg.evaluate.probe import ProbeData, ProbeResult
from ssl_ecg.evaluate.tasks import auroc
from ssl_ecg.models import build_encoder
from ssl_ecg.utils import seeded

__all__ = ["train_supervised", "finetune", "epoch_batches"]


def epoch_batches(n: int, batch_size: int, min_steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Index batches of one training epoch.

    With ``ceil(n / batch_size) >= min_steps``: one seeded permutation cut into
    batches of ``batch_size`` (the last may be smaller). Otherwise exactly
    ``min_steps`` batches of ``min(batch_size, n)`` indices taken in turn from
    consecutive seeded permutations, so every record is drawn equally often (up
    to one) and each step sees a full batch.

    Args:
        n: training records (> 0).
        batch_size: records per batch (> 0).
        min_steps: least number of optimiser steps per epoch (>= 1).
        generator: the permutations' generator.
    """
    if n <= 0 or batch_size <= 0 or min_steps < 1:
        raise ValueError(f"epoch_batches: expected n, batch_size > 0 and min_steps >= 1, "
                         f"got {n}, {batch_size}, {min_steps}")
    if math.ceil(n / batch_size) >= min_steps:
        return list(torch.randperm(n, generator=generator).split(batch_size))
    size = min(batch_size, n)
    needed = min_steps * size
    stream = torch.cat([torch.randperm(n, generator=generator) for _ in range(math.ceil(needed / n))])
    return list(stream[:needed].split(size))


class _Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, in_features: int, per_lead: bool, n_out: int):
        super().__init__()
        self.encoder, self.per_lead = encoder, per_lead
        self.head = nn.Linear(in_features, n_out)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(R, W, L, S) -> (R, n_out) logits, averaging window embeddings per record."""
        return self.head(window_embeddings(self.encoder, windows, self.per_lead).mean(1))


def finetune(
    encoder: nn.Module, data: ProbeData, window: int, per_lead: bool = True, lr: float = 1e-3,
    encoder_lr_factor: float = 0.1, epochs: int = 60, patience: int = 10, batch_size: int = 64, seed: int = 0,
    device: str | torch.device = "cpu",
) -> ProbeResult:
    """Fine-tune a copy of ``encoder`` (the caller's module is not modified) with a linear head.

    All weights train with Adam; the encoder's learning rate is ``lr *
    encoder_lr_factor``. Training draws one random window per record per epoch;
    validation and test average window embeddings over each record's tiled
    windows. The epoch is selected on validation (macro) AUROC with early
    stopping after ``patience`` epochs, and the test set is scored once, with
    the best validation epoch's weights (``setting["epoch"]``). ``data`` holds
    signals (n, L, T); labels as in :func:`~ssl_ecg.evaluate.probe.logistic_probe`.
    """
    kind, _ = data.check()
    with seeded(seed):
        model, val = _train(copy.deepcopy(encoder), data, window, per_lead, lr, encoder_lr_factor, epochs,
                            patience, batch_size, seed, device)
    scores = _scores(model, _tiles(data.x_test, window, device), kind)
    return ProbeResult(val_auroc=val.val_auroc, test_auroc=auroc(data.y_test, scores, kind), setting=val.setting,
                       test_scores=scores, val_scores=val.val_scores)


def train_supervised(
    encoder_config: dict, data: ProbeData, window: int, per_lead: bool = True,
    lr: float | Sequence[float] = (1e-3, 3e-4), epochs: int = 60, patience: int = 10,
    batch_size: int | Sequence[int] = (16, 64), seed: int = 0, device: str | torch.device = "cpu",
    min_steps: int = 10,
) -> ProbeResult:
    """The supervised baseline: a freshly initialised encoder (seeded) with a linear head, tuned on validation.

    Every (lr, batch size) of the grid ``lr x batch_size`` trains a fresh
    encoder from the same seed, with the epoch selected on validation AUROC and
    early stopping as in :func:`finetune`; each epoch takes at least
    ``min_steps`` optimiser steps (see :func:`epoch_batches`). The setting with
    the best validation AUROC wins (ties: the first in grid order) and the test
    set is scored once, with its weights.

    Args:
        encoder_config: architecture for :func:`ssl_ecg.models.build_encoder`.
        data: signals (n, L, T) and labels of the three splits.
        lr: learning rate(s) to try.
        batch_size: batch size(s) to try.
        min_steps: least optimiser steps per epoch.
        Others: as :func:`finetune`.

    Returns:
        Test and validation AUROC at the chosen ``setting`` (``lr``, ``batch_size``,
        ``epoch``), and the ``grid`` of validation results (``lr``, ``batch_size``,
        ``val_auroc``, ``best_epoch`` per setting).
    """
    lrs = [float(v) for v in np.atleast_1d(lr)]
    sizes = [int(v) for v in np.atleast_1d(batch_size)]
    if not lrs or not sizes or min(lrs) <= 0 or min(sizes) <= 0 or min_steps < 1:
        raise ConfigError(f"supervised grid: expected positive lr {lrs} and batch_size {sizes}, and min_steps >= 1 "
                          f"(got {min_steps})")
    kind, _ = data.check()
    grid, best = [], None
    for lr_i, bs_i in itertools.product(lrs, sizes):
        with seeded(seed):
            encoder = build_encoder(encoder_config)
            model, val = _train(encoder, data, window, per_lead, lr_i, 1.0, epochs, patience, bs_i, seed, device,
                                min_steps)
        grid.append({"lr": lr_i, "batch_size": bs_i, "val_auroc": val.val_auroc, "best_epoch": val.setting["epoch"]})
        if best is None or val.val_auroc > best[1].val_auroc:
            best = (model, val, lr_i, bs_i)
    model, val, lr_best, bs_best = best
    scores = _scores(model, _tiles(data.x_test, window, device), kind)
    return ProbeResult(val_auroc=val.val_auroc, test_auroc=auroc(data.y_test, scores, kind),
                       setting={"lr": lr_best, "batch_size": bs_best, "epoch": val.setting["epoch"]},
                       test_scores=scores, val_scores=val.val_scores, grid=grid)


def _tiles(x: np.ndarray, window: int, device) -> torch.Tensor:
    return tile_windows(torch.as_tensor(x, dtype=torch.float32), window).to(device)


def _train(encoder: nn.Module, data: ProbeData, window: int, per_lead: bool, lr: float, encoder_lr_factor: float,
           epochs: int, patience: int, batch_size: int, seed: int, device, min_steps: int = 1
           ) -> tuple[nn.Module, ProbeResult]:
    """Train ``encoder`` + head with validation-selected epoch; the model keeps the best epoch's weights.

    Only validation is scored here (the returned result's test fields repeat validation).
    """
    kind, n_classes = data.check()
    gen = torch.Generator().manual_seed(seed)
    crop = SegmentViews(n_segments=1, segment_len=window, fs=1.0, per_lead=False)
    xt = torch.as_tensor(data.x_train, dtype=torch.float32)
    yt = targets(data.y_train, kind, device)
    wv = _tiles(data.x_val, window, device)
    loss_fn, n_out = loss_and_outputs(kind, n_classes)
    feat = encoder.embed_dim * (xt.shape[1] if per_lead else 1)
    model = _Classifier(encoder, feat, per_lead, n_out).to(device)
    opt = torch.optim.Adam([{"params": model.encoder.parameters(), "lr": lr * encoder_lr_factor},
                            {"params": model.head.parameters(), "lr": lr}])

    def train_epoch() -> None:
        model.train()
        for idx in epoch_batches(len(xt), batch_size, min_steps, gen):
            batch = crop(xt[idx], generator=gen).to(device)  # (B, 1, L, window): one random window per record
            opt.zero_grad()
            out = model(batch)
            loss_fn(out.squeeze(-1) if kind == "binary" else out, yt[idx.to(device)]).backward()
            opt.step()

    def val_scores() -> np.ndarray:
        return _scores(model, wv, kind)

    res = train_early_stopped(model, train_epoch, val_scores, val_scores, data.y_val, data.y_val, kind, epochs,
                              patience)
    return model, res


@torch.no_grad()
def _scores(model: nn.Module, windows: torch.Tensor, kind: str) -> np.ndarray:
    model.eval()
    return scores_of(model(windows), kind)
