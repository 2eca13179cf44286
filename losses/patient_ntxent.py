"""Patient-aware NT-Xent: the CMSC / CMLC / CMSMLC objective of CLOCS."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losses._core import multi_positive_infonce
from losses._gather import gather_keys, global_mean

__all__ = ["PatientNTXentLoss"]


def check_embeddings(z: Tensor, name: str = "z") -> tuple[int, int, int]:
    """Validate an (N, V, D) embedding tensor and return its shape."""
    if not isinstance(z, Tensor) or z.dim() != 3:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"{name}: expected a tensor of shape (N, V, D), got {shape}")
    if not z.is_floating_point():
        raise ValueError(f"{name}: expected floating point embeddings, got dtype {z.dtype}")
    n, v, d = z.shape
    if n == 0 or v == 0 or d == 0:
        raise ValueError(f"{name}: expected non-empty (N, V, D), got {tuple(z.shape)}")
    return n, v, d


def check_ids(ids: Tensor, n: int, name: str = "patient_ids") -> Tensor:
    """Validate (N,) integer ids."""
    ids = torch.as_tensor(ids)
    if ids.dim() != 1 or ids.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) to match z's N, got {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"{name}: expected integer ids, got dtype {ids.dtype}")
    return ids.long()


class _WarnOnce:
    """Emit a warning once per loss instance."""

    def __init__(self) -> None:
        self._warned = False

    def __call__(self, message: str) -> None:
        if not self._warned:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            self._warned = True


class _InfoNCELoss(nn.Module):
    """Shared constructor of the id/label InfoNCE losses."""

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = False, chunk_size: int | None = None):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature: expected a positive float, got {temperature!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive integer or None, got {chunk_size!r}")
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)
        self.chunk_size = chunk_size
        self._warn_no_positive = _WarnOnce()


class PatientNTXentLoss(_InfoNCELoss):
    """Multi-view, multi-positive NT-Xent with patients as positives.

    The objective of CLOCS (Kiyasseh, Zhu & Clifton, "CLOCS: Contrastive
    Learning of Cardiac Signals Across Space, Time, and Patients", ICML 2021),
    written in the SupCon "outside" form (Khosla et al., NeurIPS 2020, eq. 2).

    All N*V embeddings are L2-normalised. Anchor (i, a) has positives
    P(i, a) = {(j, b) != (i, a) : ids[j] == ids[i]} and loss

        l(i, a) = -1/|P(i, a)| * sum_{p in P(i, a)} log( exp(s_ap / tau) / sum_{k != (i, a)} exp(s_ak / tau) )

    where s is the cosine similarity. The loss is the mean of l over anchors
    with at least one positive.

    The view axis V is the data side's business:

    - CMSC (contrastive multi-segment coding): V = adjacent segments in time;
    - CMLC (multi-lead coding): V = leads at the same time;
    - CMSMLC: V = segments x leads.

    With unique ids and V = 2 this equals SimCLR's NT-Xent
    (``lightly.loss.NTXentLoss``). The core is a row-chunked autograd function
    with an analytic backward (gradient w.r.t. logits is softmax minus the
    positive weights), so memory grows as O(chunk * N * V), not O((N * V)^2).

    Args:
        temperature: softmax temperature tau > 0.
        gather_distributed: gather embeddings and ids from every rank (with
            gradients) so that positives and negatives span the global batch.
            Each rank returns its share of the global mean; see
            ``losses._gather.global_mean``.
        chunk_size: anchor rows per chunk; ``None`` chooses about 1M logits per chunk.

    Examples:
        >>> loss_fn = PatientNTXentLoss(temperature=0.1)
        >>> z = torch.randn(8, 2, 16)            # 8 instances, 2 segments each
        >>> ids = torch.tensor([0, 0, 1, 1, 2, 3, 4, 5])
        >>> loss = loss_fn(z, ids)
    """

    def forward(self, z: Tensor, patient_ids: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            z: embeddings of shape (N, V, D).
            patient_ids: integer ids of shape (N,); views of one instance share its id.

        Returns:
            Scalar loss (float32). Zero, still attached to the graph, when no anchor
            has a positive (a warning is issued once).
        """
        n, v, d = check_embeddings(z)
        ids = check_ids(patient_ids, n).to(z.device)
        return _infonce_views(self, z, ids.repeat_interleave(v))


def _infonce_views(loss: nn.Module, z: Tensor, spec: Tensor) -> Tensor:
    """Shared body of the id/label InfoNCE losses on (N, V, D) embeddings."""
    with torch.autocast(device_type=z.device.type, enabled=False):
        e = F.normalize(z.reshape(-1, z.shape[-1]).float(), dim=1)
        if loss.gather_distributed:
            keys, key_spec, offset, world_size = gather_keys(e, spec)
        else:
            keys, key_spec, offset, world_size = e, spec, 0, 1
        total, count = multi_positive_infonce(e, keys, spec, key_spec, loss.temperature, offset, loss.chunk_size)
        out = global_mean(total, count, world_size)
    if int(count) == 0 and world_size == 1:
        loss._warn_no_positive(
            f"{type(loss).__name__}: no anchor in the batch has a positive "
            "(every id/label is unique and V = 1); returning 0"
        )
    return out
