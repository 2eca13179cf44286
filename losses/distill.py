"""Knowledge-distillation objectives: a student matches a frozen teacher's embeddings and logits.

Both losses compare paired tensors of one shape and average over every leading position; the caller computes the
teacher's side without gradients. Like the contrastive losses, both compute in float32 with autocast disabled, so a
bf16-mixed run (whose linear layers hand over bf16 tensors) gets the float32 loss of those values.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EmbeddingDistillLoss", "LogitDistillLoss", "EMBEDDING_KINDS", "LOGIT_KINDS"]

EMBEDDING_KINDS = ("cosine", "mse")
LOGIT_KINDS = ("binary", "multiclass", "multilabel")


def _float32(x: Tensor) -> Tensor:
    """Half-precision inputs (bf16/fp16 from autocast) in float32; float64 is kept, for exact references."""
    return x if x.dtype == torch.float64 else x.float()


def _paired(student: Tensor, teacher: Tensor, what: str) -> None:
    if student.shape != teacher.shape or student.dim() < 2 or student.shape[-1] == 0:
        raise ValueError(f"{what}: expected student and teacher tensors of one shape (..., D) with D >= 1, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")


class EmbeddingDistillLoss(nn.Module):
    """Feature distillation on L2-normalised embeddings (Romero et al., "FitNets: Hints for Thin Deep Nets",
    ICLR 2015, with the hint compared after normalisation as in Grill et al., "Bootstrap Your Own Latent",
    NeurIPS 2020, eq. 2).

    With s_i and t_i the student's and teacher's embeddings of pair i (rows of (N, D), or any (..., D)),
    ŝ = s / ||s||, t̂ = t / ||t|| (``F.normalize``, eps 1e-12) and cos_i = <ŝ_i, t̂_i>:

        cosine: L = mean_i (1 - cos_i)
        mse:    L = mean_{i, d} (ŝ_id - t̂_id)^2          (``F.mse_loss``: the mean over the N*D elements)

    Since ||ŝ - t̂||^2 = 2 - 2 cos for unit vectors, mse = (2 / D) * cosine exactly (non-zero rows): the two
    kinds have the same minimiser and gradients up to that constant, which only matters beside another loss
    term (e.g. :class:`LogitDistillLoss` with a weight). Both are 0 when each student row points where its
    teacher row points, whatever the lengths (scale invariance), and lie in [0, 2] (cosine) and [0, 4 / D] (mse).

    Args:
        kind: ``"cosine"`` or ``"mse"``.
    """

    def __init__(self, kind: Literal["cosine", "mse"] = "cosine"):
        super().__init__()
        if kind not in EMBEDDING_KINDS:
            raise ValueError(f"kind: expected one of {list(EMBEDDING_KINDS)}, got {kind!r}")
        self.kind = kind

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """Loss for student and teacher embeddings of one shape (..., D); a scalar."""
        _paired(student, teacher, "embeddings")
        with torch.autocast(device_type=student.device.type, enabled=False):
            s, t = F.normalize(_float32(student), dim=-1), F.normalize(_float32(teacher), dim=-1)
            if self.kind == "cosine":
                return (1 - (s * t).sum(-1)).mean()
            return F.mse_loss(s, t)


class LogitDistillLoss(nn.Module):
    """Soft-target distillation of a classifier's logits (Hinton, Vinyals & Dean, "Distilling the Knowledge in a
    Neural Network", NIPS Deep Learning Workshop 2015, section 2), scaled by T^2.

    Student logits z_s and teacher logits z_t are (N, K); T is the temperature.

    - ``multiclass`` (a softmax head): p = softmax(z_t / T), q = softmax(z_s / T) over the K classes and

          L = T^2 * mean_n sum_k p_nk (log p_nk - log q_nk)          (KL(p || q), "batchmean")

    - ``multilabel`` (K independent sigmoid outputs) and ``binary`` (K = 1, one decision value): per class a
      Bernoulli p = sigmoid(z_t / T), q = sigmoid(z_s / T) and

          L = T^2 * mean_{n, k} [ p log(p / q) + (1 - p) log((1 - p) / (1 - q)) ]

      computed from ``logsigmoid`` so saturated logits stay finite.

    The T^2 factor keeps the gradients' size independent of T (they scale as 1/T^2, Hinton et al.); at T = 1 the
    loss is the plain KL divergence. It is 0 exactly when the student's logits give the teacher's
    probabilities, and never negative.

    Args:
        temperature: T > 0.
        kind: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
    """

    def __init__(self, temperature: float = 1.0, kind: Literal["binary", "multiclass", "multilabel"] = "multiclass"):
        super().__init__()
        if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature > 0
                and temperature < float("inf")):
            raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
        if kind not in LOGIT_KINDS:
            raise ValueError(f"kind: expected one of {list(LOGIT_KINDS)}, got {kind!r}")
        self.temperature = float(temperature)
        self.kind = kind

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """Loss for student and teacher logits (N, K) (K = 1 for ``binary``); a scalar."""
        if student.shape != teacher.shape or student.dim() != 2 or student.shape[1] == 0:
            raise ValueError(f"logits: expected student and teacher logits of one shape (N, K), got "
                             f"{tuple(student.shape)} and {tuple(teacher.shape)}")
        if self.kind == "binary" and student.shape[1] != 1:
            raise ValueError(f"logits: a binary head has one decision value (N, 1), got {tuple(student.shape)}")
        if self.kind == "multiclass" and student.shape[1] < 2:
            raise ValueError(f"logits: a multiclass head needs K >= 2 classes, got {tuple(student.shape)}")
        t2 = self.temperature ** 2
        with torch.autocast(device_type=student.device.type, enabled=False):
            a, b = _float32(teacher) / self.temperature, _float32(student) / self.temperature
            if self.kind == "multiclass":
                log_p, log_q = F.log_softmax(a, dim=1), F.log_softmax(b, dim=1)
                return t2 * (log_p.exp() * (log_p - log_q)).sum(1).mean()
            p = torch.sigmoid(a)
            kl = p * (F.logsigmoid(a) - F.logsigmoid(b)) + (1 - p) * (F.logsigmoid(-a) - F.logsigmoid(-b))
            return t2 * kl.mean()
