"""Lightning module for contrastive pretraining with any registered method."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from ssl_ecg.pretrain.methods import Method

__all__ = ["ContrastivePretrainer"]


class ContrastivePretrainer(pl.LightningModule):
    """Pretrain an encoder with a :class:`~ssl_ecg.pretrain.methods.Method`.

    Each step draws views from a generator seeded with ``(seed, global_step)`` and
    re-seeds torch's global RNG (dropout) the same way, so a run is reproducible
    and a resumed run continues exactly as an uninterrupted one would. Callers
    run ``fit`` inside :func:`ssl_ecg.utils.seeded`, which restores their RNG state.

    Args:
        encoder: maps (N, C, S) to (N, E).
        method: views, instance ids and loss.
        lr: Adam learning rate (CLOCS: 1e-4).
        seed: seed of the view draws.
        head: optional projection head applied to the embeddings for the loss.
    """

    def __init__(self, encoder: nn.Module, method: Method, lr: float = 1e-4, seed: int = 0,
                 head: nn.Module | None = None):
        super().__init__()
        self.encoder, self.method, self.head = encoder, method, head
        self.lr, self.seed = lr, seed

    def _generator(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + int(self.global_step))

    def on_train_batch_start(self, batch, batch_idx):
        torch.manual_seed(self.seed * 1_000_003 + int(self.global_step) + 7919)

    def training_step(self, batch, batch_idx):
        x, targets = batch
        views = self.method.views(x, generator=self._generator(x.device))
        n, v = views.shape[:2]
        z = self.encoder(views.flatten(0, 1))
        if self.head is not None:
            z = self.head(z)
        z = z.reshape(n, v, -1)
        ids = self.method.instance_ids(targets, x)
        loss = self.method.loss(z, ids)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        if ids.dim() == 1:
            same = ids[:, None] == ids[None, :]
            self.log("positives_per_view", (same.sum(1) - 1).float().mean() * v + (v - 1), on_step=False,
                     on_epoch=True, batch_size=n)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)
