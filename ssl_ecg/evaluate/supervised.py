"""Fine-tuning a (pretrained) encoder end to end, and the supervised-from-scratch arm."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from augmentations import SegmentViews
from ssl_ecg.evaluate.embed import tile_windows, window_embeddings
from ssl_ecg.evaluate.linear import loss_and_outputs, scores_of, targets, train_early_stopped
from ssl_ecg.evaluate.probe import ProbeResult
from ssl_ecg.evaluate.tasks import check_task
from ssl_ecg.models import build_encoder
from ssl_ecg.utils import seeded

__all__ = ["SupervisedResult", "train_supervised", "finetune"]

SupervisedResult = ProbeResult


class _Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, in_features: int, per_lead: bool, n_out: int):
        super().__init__()
        self.encoder, self.per_lead = encoder, per_lead
        self.head = nn.Linear(in_features, n_out)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(R, W, L, S) -> (R, n_out) logits, averaging window embeddings per record."""
        return self.head(window_embeddings(self.encoder, windows, self.per_lead).mean(1))


def finetune(
    encoder: nn.Module,
    x_train: np.ndarray, y_train: np.ndarray,
    x_val: np.ndarray, y_val: np.ndarray,
    x_test: np.ndarray, y_test: np.ndarray,
    window: int, per_lead: bool = True, lr: float = 1e-3, encoder_lr_factor: float = 0.1, epochs: int = 60,
    patience: int = 10, batch_size: int = 64, seed: int = 0, task: str = "task",
    device: str | torch.device = "cpu",
) -> ProbeResult:
    """Fine-tune a copy of ``encoder`` (the caller's module is not modified) with a linear head.

    All weights train with Adam; the encoder's learning rate is ``lr *
    encoder_lr_factor``. Training draws one random window per record per epoch;
    validation and test average window embeddings over each record's tiled
    windows. The epoch is selected on validation (macro) AUROC with early
    stopping after ``patience`` epochs, and the test set is scored once, with
    the best validation epoch's weights. Labels as in :func:`logistic_probe`.
    """
    with seeded(seed):
        return _train(copy.deepcopy(encoder), x_train, y_train, x_val, y_val, x_test, y_test, window, per_lead,
                      lr, encoder_lr_factor, epochs, patience, batch_size, seed, task, device)


def train_supervised(
    encoder_config: dict,
    x_train: np.ndarray, y_train: np.ndarray,
    x_val: np.ndarray, y_val: np.ndarray,
    x_test: np.ndarray, y_test: np.ndarray,
    window: int, per_lead: bool = True, lr: float = 1e-3, epochs: int = 60, patience: int = 10,
    batch_size: int = 64, seed: int = 0, task: str = "task", device: str | torch.device = "cpu",
) -> ProbeResult:
    """The supervised baseline: a freshly initialised encoder (seeded) trained as in :func:`finetune`."""
    with seeded(seed):
        encoder = build_encoder(encoder_config)
        return _train(encoder, x_train, y_train, x_val, y_val, x_test, y_test, window, per_lead, lr, 1.0, epochs,
                      patience, batch_size, seed, task, device)


def _train(encoder, x_train, y_train, x_val, y_val, x_test, y_test, window, per_lead, lr, encoder_lr_factor,
           epochs, patience, batch_size, seed, task, device) -> ProbeResult:
    kind, n_classes = check_task(y_train, y_val, y_test, task)
    gen = torch.Generator().manual_seed(seed)
    crop = SegmentViews(n_segments=1, segment_len=window, fs=1.0, per_lead=False)
    xt = torch.as_tensor(x_train, dtype=torch.float32)
    yt = targets(y_train, kind, device)
    wv = tile_windows(torch.as_tensor(x_val, dtype=torch.float32), window).to(device)
    ws = tile_windows(torch.as_tensor(x_test, dtype=torch.float32), window).to(device)
    loss_fn, n_out = loss_and_outputs(kind, n_classes)
    feat = encoder.embed_dim * (xt.shape[1] if per_lead else 1)
    model = _Classifier(encoder, feat, per_lead, n_out).to(device)
    opt = torch.optim.Adam([{"params": model.encoder.parameters(), "lr": lr * encoder_lr_factor},
                            {"params": model.head.parameters(), "lr": lr}])

    def train_epoch() -> None:
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        for b0 in range(0, len(xt), batch_size):
            idx = order[b0:b0 + batch_size]
            batch = crop(xt[idx], generator=gen).to(device)  # (B, 1, L, window): one random window per record
            opt.zero_grad()
            out = model(batch)
            loss_fn(out.squeeze(-1) if kind == "binary" else out, yt[idx.to(device)]).backward()
            opt.step()

    return train_early_stopped(model, train_epoch, lambda: _scores(model, wv, kind), lambda: _scores(model, ws, kind),
                               y_val, y_test, kind, epochs, patience)


@torch.no_grad()
def _scores(model: nn.Module, windows: torch.Tensor, kind: str) -> np.ndarray:
    model.eval()
    return scores_of(model(windows), kind)
