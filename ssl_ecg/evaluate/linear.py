"""Linear probe in torch: a linear head on frozen embeddings, BCE or CE, early stopping on validation."""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from torch import nn

from ssl_ecg.evaluate.probe import ProbeData, ProbeResult
from ssl_ecg.evaluate.tasks import auroc
from ssl_ecg.utils import seeded

__all__ = ["torch_linear_probe", "loss_and_outputs"]


def loss_and_outputs(kind: str, n_classes: int) -> tuple[nn.Module, int]:
    """The training loss and number of logits of a task kind."""
    if kind == "binary":
        return nn.BCEWithLogitsLoss(), 1
    if kind == "multiclass":
        return nn.CrossEntropyLoss(), n_classes
    return nn.BCEWithLogitsLoss(), n_classes


def targets(y: np.ndarray, kind: str, device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(y), device=device)
    return t.long() if kind == "multiclass" else t.float()


def scores_of(logits: torch.Tensor, kind: str) -> np.ndarray:
    if kind == "binary":
        return logits.squeeze(-1).float().cpu().numpy()
    return (logits.softmax(-1) if kind == "multiclass" else logits.sigmoid()).float().cpu().numpy()


def torch_linear_probe(
    data: ProbeData, lr: float = 1e-2, weight_decay: float = 0.0, epochs: int = 200, patience: int = 20,
    batch_size: int = 256, seed: int = 0, device: str | torch.device = "cpu",
) -> ProbeResult:
    """Train a linear head with Adam on standardised embeddings; for large datasets or a GPU.

    Binary labels (n,) train one logit with BCE, class indices (n,) C logits with
    cross-entropy, multi-hot labels (n, C) C logits with BCE. After each epoch
    the validation (macro) AUROC is measured; training stops ``patience``
    epochs after the best one, and the test set is scored once, with the
    weights of the best validation epoch (``setting["epoch"]``).
    """
    kind, n_classes = data.check()
    xt = torch.as_tensor(np.asarray(data.x_train), dtype=torch.float32, device=device)
    mean, std = xt.mean(0), xt.std(0, unbiased=False).clamp_min(1e-8)
    norm = [(torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device) - mean) / std
            for x in (data.x_train, data.x_val, data.x_test)]
    yt = targets(data.y_train, kind, device)
    loss_fn, n_out = loss_and_outputs(kind, n_classes)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with seeded(seed):
        head = nn.Linear(xt.shape[1], n_out).to(device)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)

    def train_epoch() -> None:
        order = torch.randperm(len(xt), generator=gen).to(device)
        for b0 in range(0, len(xt), batch_size):
            idx = order[b0:b0 + batch_size]
            out = head(norm[0][idx])
            opt.zero_grad()
            loss_fn(out.squeeze(-1) if kind == "binary" else out, yt[idx]).backward()
            opt.step()

    @torch.no_grad()
    def score(split: int) -> np.ndarray:
        return scores_of(head(norm[split]), kind)

    return train_early_stopped(head, train_epoch, lambda: score(1), lambda: score(2), data.y_val, data.y_test, kind,
                               epochs, patience)


def train_early_stopped(
    module: nn.Module, train_epoch: Callable[[], None], val_scores: Callable[[], np.ndarray],
    test_scores: Callable[[], np.ndarray], y_val: np.ndarray, y_test: np.ndarray, kind: str, epochs: int,
    patience: int,
) -> ProbeResult:
    """Epochs of ``train_epoch()`` with selection on validation (macro) AUROC.

    Training stops ``patience`` epochs after the best epoch; ``module`` is left
    with that epoch's weights, and the test set is scored once, with them.
    """
    best = (-np.inf, -1, None, None)
    for epoch in range(epochs):
        train_epoch()
        scores = val_scores()
        val = auroc(y_val, scores, kind)
        if val > best[0]:
            best = (val, epoch, copy.deepcopy(module.state_dict()), scores)
        elif epoch - best[1] >= patience:
            break
    module.load_state_dict(best[2])
    scores = test_scores()
    return ProbeResult(val_auroc=float(best[0]), test_auroc=auroc(y_test, scores, kind), setting={"epoch": best[1]},
                       test_scores=scores, val_scores=best[3])
