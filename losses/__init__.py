"""Patient-aware contrastive objectives on (N, views, dim) embeddings.

Depends only on torch and lightly; it never imports ``ssl_ecg``.

- :class:`PatientNTXentLoss`: CMSC / CMLC / CMSMLC (CLOCS), multi-view, multi-positive.
- :class:`ClocsLoss`: the original CLOCS view-pair loss, with its published bugs fixed.
- :class:`SupConLoss`: supervised contrastive (sCL-ST), single- or multi-label.
- :class:`ContrastivePairLoss`: margin loss for Siamese pairs.
- :class:`EmbeddingDistillLoss`, :class:`LogitDistillLoss`: knowledge distillation (embeddings, soft targets).
"""

from losses.clocs import ClocsLoss
from losses.distill import EmbeddingDistillLoss, LogitDistillLoss
from losses.pair import ContrastivePairLoss
from losses.patient_ntxent import PatientNTXentLoss
from losses.supcon import SupConLoss

__all__ = ["PatientNTXentLoss", "ClocsLoss", "SupConLoss", "ContrastivePairLoss", "EmbeddingDistillLoss",
           "LogitDistillLoss"]
