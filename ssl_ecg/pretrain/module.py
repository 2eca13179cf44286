"""Lightning module for contrastive pretraining with any registered method."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from lightly.utils.benchmarking import OnlineLinearClassifier
from torch import Tensor, nn

from ssl_ecg.pretrain.methods import Method

__all__ = ["ContrastivePretrainer", "count_positives"]


def count_positives(local_ids: Tensor, global_ids: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Positive partners per local instance: (in the whole global batch, on other ranks only).

    ``global_ids`` is (world, n) from ``all_gather``; an instance is not its own partner.
    """
    same = local_ids[:, None] == global_ids.reshape(-1)[None, :]  # (n, world * n)
    n = len(local_ids)
    own = torch.zeros_like(same)
    own[:, rank * n:(rank + 1) * n] = True
    total = same.sum(1) - 1
    other = (same & ~own).sum(1)
    return total, other


class ContrastivePretrainer(pl.LightningModule):
    """Pretrain an encoder with a :class:`~ssl_ecg.pretrain.methods.Method`.

    Each step draws views from a generator seeded with ``(seed, global_step)`` and
    re-seeds torch's global RNG (dropout) the same way, so a run is reproducible
    and a resumed run continues exactly as an uninterrupted one would. Callers
    run ``fit`` inside :func:`ssl_ecg.utils.seeded`, which restores their RNG state.

    Logged: ``train_loss``, ``positives_per_view`` (same-instance views plus
    same-id instances, over the whole distributed batch), ``cross_rank_positives``
    under DDP, and with ``monitor_classes`` the online linear monitor's
    ``train_online_cls_loss`` and ``train_online_cls_top1``: lightly's
    :class:`OnlineLinearClassifier` on detached record embeddings, trained
    alongside (it never changes the encoder).

    Args:
        encoder: maps (N, C, S) to (N, E).
        method: views, instance ids and loss.
        lr: Adam learning rate (CLOCS: 1e-4).
        seed: seed of the view draws.
        head: optional projection head applied to the embeddings for the loss.
        monitor_classes: number of classes of the online monitor (0: none).
        monitor_dim: its input size, ``embed_dim * method.instances_per_record(n_leads)``.
    """

    def __init__(self, encoder: nn.Module, method: Method, lr: float = 1e-4, seed: int = 0,
                 head: nn.Module | None = None, monitor_classes: int = 0, monitor_dim: int = 0):
        super().__init__()
        self.encoder, self.method, self.head = encoder, method, head
        self.lr, self.seed = lr, seed
        method.attach(encoder, head)
        self.monitor = OnlineLinearClassifier(monitor_dim, monitor_classes, topk=(1,)) if monitor_classes else None
        self.last_loss: Tensor | None = None

    def _generator(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + int(self.global_step))

    def on_train_batch_start(self, batch, batch_idx):
        torch.manual_seed(self.seed * 1_000_003 + int(self.global_step) + 7919)

    def _max_steps(self) -> int:
        trainer = getattr(self, "_trainer", None)
        return int(trainer.estimated_stepping_batches) if trainer is not None else 1

    def batch_loss(self, x: Tensor, targets: Tensor, generator: torch.Generator,
                   training: bool = True) -> tuple[Tensor, Tensor, Tensor, int, int]:
        """Views of a batch drawn with ``generator``, then the method's loss: (loss, z, ids, N, V)."""
        views = self.method.views(x, generator=generator)
        ids = self.method.instance_ids(targets, x)
        loss, z = self.method.forward_loss(self.encoder, self.head, views, ids, int(self.global_step),
                                           self._max_steps(), training=training)
        return loss, z, ids, views.shape[0], views.shape[1]

    def training_step(self, batch, batch_idx):
        x, targets = batch[0], batch[1]
        loss, z, ids, n, v = self.batch_loss(x, targets, self._generator(x.device))
        self.last_loss = loss.detach()  # the method's own loss, checked by TrainingGuard (stuck at 0?)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        if ids.dim() == 1:
            self._log_positives(ids, v, n)
        if self.monitor is not None and len(batch) > 2:
            loss = loss + self._monitor_step(z, batch[2], len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        """Loss on held-out patients, with views fixed per batch so epochs compare (CLOCS' early stopping)."""
        x, targets = batch[0], batch[1]
        gen = torch.Generator(device=x.device).manual_seed(self.seed * 1_000_003 + 104_729 + batch_idx)
        loss, _, _, n, _ = self.batch_loss(x, targets, gen, training=False)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def _log_positives(self, ids: Tensor, v: int, n: int) -> None:
        world = self.trainer.world_size if getattr(self, "_trainer", None) is not None else 1
        gathered = self.all_gather(ids).reshape(world, -1) if world > 1 else ids[None]
        total, other = count_positives(ids, gathered, self.global_rank if world > 1 else 0)
        self.log("positives_per_view", total.float().mean() * v + (v - 1), on_step=False, on_epoch=True,
                 batch_size=n, sync_dist=world > 1)
        if world > 1:
            self.log("cross_rank_positives", other.float().sum(), on_step=False, on_epoch=True,
                     reduce_fx="sum", batch_size=n, sync_dist=True)

    def _monitor_step(self, z: Tensor, labels: Tensor, b: int) -> Tensor:
        feats = z.detach().float().mean(1).reshape(b, -1)  # views averaged, instances concatenated per record
        keep = labels >= 0
        if not keep.any():
            return z.new_zeros(())
        mloss, logs = self.monitor.training_step((feats[keep], labels[keep]), 0)
        self.log_dict(logs, on_step=False, on_epoch=True, batch_size=int(keep.sum()))
        return mloss

    def configure_optimizers(self):
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.lr)
