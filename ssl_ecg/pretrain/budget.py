"""Training budget in method-independent units: samples through the encoder."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

__all__ = ["EncoderPassCounter"]


class EncoderPassCounter(Callback):
    """Counts the samples the trained encoder embeds in training steps: N x V per step, summed.

    Per-lead methods feed every lead as its own sample (N = B x L), multi-lead
    ones one sample per record and view, so this count (with epochs and wall
    time) puts every method's budget in the same units. A forward hook on
    ``pl_module.encoder`` adds the rows of each input while the encoder is in
    training mode; validation passes (eval mode) and momentum copies (other
    modules, e.g. BYOL's target) are not counted.

    The counts are checkpointed, so a resumed run continues them. Under DDP each
    rank counts its own samples and :attr:`total` / :attr:`per_epoch` are summed
    over ranks at the end of training.

    Attributes:
        total: samples through the encoder in all training steps.
        per_epoch: the same per epoch (index = epoch).
    """

    def __init__(self):
        self.per_epoch: list[int] = []
        self._epoch = 0
        self._handle = None

    @property
    def total(self) -> int:
        return int(sum(self.per_epoch))

    def _count(self, module: torch.nn.Module, inputs: tuple, output) -> None:
        if module.training and inputs:
            while len(self.per_epoch) <= self._epoch:
                self.per_epoch.append(0)
            self.per_epoch[self._epoch] += int(inputs[0].shape[0])

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._handle = pl_module.encoder.register_forward_hook(self._count)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch = int(trainer.current_epoch)
        del self.per_epoch[self._epoch:]  # a resumed epoch starts its count afresh

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            counts = torch.tensor(self.per_epoch, dtype=torch.int64, device=pl_module.device)
            self.per_epoch = [int(v) for v in trainer.strategy.reduce(counts, reduce_op="sum").tolist()]

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def state_dict(self) -> dict:
        return {"per_epoch": list(self.per_epoch)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.per_epoch = [int(v) for v in state_dict.get("per_epoch", [])]
