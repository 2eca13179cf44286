"""The supervised-from-scratch arm: the same encoder trained end to end on the labels."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from augmentations import SegmentViews
from ssl_ecg.data.splits import check_classes_present
from ssl_ecg.evaluate.embed import tile_windows, window_embeddings
from ssl_ecg.models import build_encoder
from ssl_ecg.utils import seeded

__all__ = ["SupervisedResult", "train_supervised"]


@dataclass
class SupervisedResult:
    test_auroc: float
    val_auroc: float
    best_epoch: int


class _Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, in_features: int, per_lead: bool):
        super().__init__()
        self.encoder, self.per_lead = encoder, per_lead
        self.head = nn.Linear(in_features, 1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(R, W, L, S) -> (R,) logits, averaging window embeddings per record."""
        return self.head(window_embeddings(self.encoder, windows, self.per_lead).mean(1)).squeeze(-1)


def train_supervised(
    encoder_config: dict,
    x_train: np.ndarray, y_train: np.ndarray,
    x_val: np.ndarray, y_val: np.ndarray,
    x_test: np.ndarray, y_test: np.ndarray,
    window: int, per_lead: bool = True, lr: float = 1e-3, epochs: int = 60, patience: int = 10,
    batch_size: int = 64, seed: int = 0, task: str = "task",
) -> SupervisedResult:
    """Train encoder + linear head with BCE from scratch; select the epoch on validation AUROC.

    Training draws one random window per record per epoch; validation and test
    average the logits' inputs over the record's tiled windows. The test AUROC is
    measured once, with the weights of the best validation epoch.
    """
    check_classes_present(y_train, "training labels", task)
    check_classes_present(y_val, "validation split", task)
    check_classes_present(y_test, "test split", task)
    gen = torch.Generator().manual_seed(seed)
    crop = SegmentViews(n_segments=1, segment_len=window, fs=1.0, per_lead=False)
    xt = torch.as_tensor(x_train, dtype=torch.float32)
    yt = torch.as_tensor(y_train, dtype=torch.float32)
    wv = tile_windows(torch.as_tensor(x_val, dtype=torch.float32), window)
    ws = tile_windows(torch.as_tensor(x_test, dtype=torch.float32), window)
    with seeded(seed):
        encoder = build_encoder(encoder_config)
        n_leads = xt.shape[1]
        feat = encoder.embed_dim * (n_leads if per_lead else 1)
        model = _Classifier(encoder, feat, per_lead)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = nn.BCEWithLogitsLoss()
        best = (-1.0, -1, None)
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(xt), generator=gen)
            for b0 in range(0, len(xt), batch_size):
                idx = order[b0:b0 + batch_size]
                batch = crop(xt[idx], generator=gen)  # (B, 1, L, window): one random window per record
                opt.zero_grad()
                loss_fn(model(batch), yt[idx]).backward()
                opt.step()
            val = _auroc(model, wv, y_val)
            if val > best[0]:
                best = (val, epoch, copy.deepcopy(model.state_dict()))
            elif epoch - best[1] >= patience:
                break
        model.load_state_dict(best[2])
        test = _auroc(model, ws, y_test)
    return SupervisedResult(test_auroc=test, val_auroc=best[0], best_epoch=best[1])


@torch.no_grad()
def _auroc(model: nn.Module, windows: torch.Tensor, y: np.ndarray) -> float:
    model.eval()
    return float(roc_auc_score(y, model(windows).numpy()))
