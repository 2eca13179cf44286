"""Lightning module for patient-aware contrastive pretraining (CMSC)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from augmentations import SegmentViews, per_lead_ids
from losses import PatientNTXentLoss

__all__ = ["ContrastivePretrainer"]


class ContrastivePretrainer(pl.LightningModule):
    """Pretrain an encoder with CMSC views and :class:`losses.PatientNTXentLoss`.

    Each step draws views from a generator seeded with ``(seed, global_step)``,
    so a run is reproducible and a resumed run draws the same views.

    Args:
        encoder: maps (N, C, S) to (N, E).
        views: a view maker returning (N, V, C, S) from (B, L, T).
        temperature: NT-Xent temperature.
        lr: Adam learning rate (CLOCS: 1e-4).
        seed: seed of the view draws.
        positives: ``"patient"`` (CLOCS: any view of the same patient, across
            leads) or ``"patient_lead"`` (per-lead views: same patient and lead).
    """

    def __init__(self, encoder: nn.Module, views: SegmentViews, temperature: float = 0.1, lr: float = 1e-4,
                 seed: int = 0, positives: str = "patient"):
        super().__init__()
        if positives not in ("patient", "patient_lead"):
            raise ValueError(f"positives: expected 'patient' or 'patient_lead', got {positives!r}")
        if positives == "patient_lead" and not views.per_lead:
            raise ValueError("positives='patient_lead' needs per-lead views (per_lead=True)")
        self.positives = positives
        self.encoder = encoder
        self.views = views
        self.loss_fn = PatientNTXentLoss(temperature=temperature)
        self.lr = lr
        self.seed = seed

    def _generator(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + int(self.global_step))

    def embed_views(self, views: Tensor) -> Tensor:
        """(N, V, C, S) views -> (N, V, E) embeddings."""
        n, v = views.shape[:2]
        return self.encoder(views.flatten(0, 1)).reshape(n, v, -1)

    def training_step(self, batch, batch_idx):
        x, ids = batch
        views = self.views(x, generator=self._generator(x.device))
        if self.views.per_lead:
            ids = per_lead_ids(ids, x.shape[1], same_lead=self.positives == "patient_lead")
        z = self.embed_views(views)
        loss = self.loss_fn(z, ids)
        same = ids[:, None] == ids[None, :]
        positives_per_instance = (same.sum(1) - 1).float().mean() * z.shape[1] + (z.shape[1] - 1)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=z.shape[0])
        self.log("positives_per_view", positives_per_instance, on_step=False, on_epoch=True, batch_size=z.shape[0])
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)
