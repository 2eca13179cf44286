"""The original CLOCS view-pair loss, with its published bugs fixed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losses._gather import gather_keys
from losses.patient_ntxent import check_embeddings, check_ids

__all__ = ["ClocsLoss"]


class ClocsLoss(nn.Module):
    """View-pair contrastive loss of CLOCS, for faithful reproduction.

    Kiyasseh, Zhu & Clifton, "CLOCS: Contrastive Learning of Cardiac Signals
    Across Space, Time, and Patients", ICML 2021, eq. 1-3; code
    ``prepare_miscellaneous.obtain_contrastive_loss``.

    Unlike :class:`~losses.PatientNTXentLoss`, similarities are only taken
    between *different* views. For an ordered view pair (a, b), a != b, let
    ``S = cos(z[:, a], z[:, b]) / tau`` (N x N) and ``p(i, j) = softmax_j S[i, :]``
    (the denominator is row i of that view-pair matrix). Then

        D_ab = mean_i -log p(i, i)                               (same instance)
        O_ab = mean_{i != j, ids[i] == ids[j]} -log p(i, j)      (same patient)
        L_ab = (D_ab + O_ab) / 2, or D_ab when no off-diagonal positive exists

    and the loss is the mean of L_ab over all V(V-1) ordered pairs. Ordered pairs
    make it symmetric: the column softmax of S^ab is the row softmax of S^ba.

    Fixes relative to the published code:

    1. **Overwrite bug.** Inside the loop over view pairs the code assigns
       ``loss = loss_diag1 + loss_diag2`` instead of accumulating, then divides by
       the number of pairs. For V > 2 only the last pair survives: CMLC contrasts
       only the last two leads and CMSMLC collapses to CMSC on one lead. We
       average over all pairs.
    2. **Missing symmetric terms.** The code takes the upper-triangle patient
       positives with row denominators and the lower-triangle ones with column
       denominators only ("technically need to add 1 more term for symmetry").
       We take every off-diagonal positive in both directions.

    With V = 2 and unique ids it equals the published value, the symmetric
    InfoNCE ``(D_12 + D_21) / 2``.

    Args:
        temperature: softmax temperature (CLOCS uses 0.1).
        gather_distributed: gather embeddings and ids from every rank, so the
            N x N view-pair matrices span the global batch. Each rank returns its
            share (world size x its rows' terms over global counts): the ranks'
            mean is the global loss, and DDP's gradient average gives its gradient.
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = False):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature: expected a positive float, got {temperature!r}")
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)

    def forward(self, z: Tensor, patient_ids: Tensor) -> Tensor:
        """Loss for embeddings ``z`` (N, V, D), V >= 2, and integer ids (N,)."""
        n, v, _ = check_embeddings(z)
        if v < 2:
            raise ValueError(f"z: ClocsLoss contrasts different views and needs V >= 2, got V = {v}")
        ids = check_ids(patient_ids, n).to(z.device)
        with torch.autocast(device_type=z.device.type, enabled=False):
            local = F.normalize(z.float(), dim=-1)  # (N, V, D)
            if self.gather_distributed:
                flat, all_ids, offset, world_size = gather_keys(local.reshape(n, -1), ids)
                keys = flat.reshape(-1, v, local.shape[-1]).transpose(0, 1)  # (V, N_all, D)
            else:
                keys, all_ids, offset, world_size = local.transpose(0, 1), ids, 0, 1
            n_all = keys.shape[1]
            rows = torch.arange(n, device=z.device) + offset
            same = ids[:, None] == all_ids[None, :]  # (N, N_all)
            off = same.clone()
            off[torch.arange(n, device=z.device), rows] = False
            n_off = int((all_ids[:, None] == all_ids[None, :]).sum()) - n_all  # global off-diagonal positives
            total = local.new_zeros(())
            for a in range(v):  # one anchor view at a time bounds memory to N x V x N_all
                logits = torch.einsum("nd,bmd->nbm", local[:, a], keys) / self.temperature  # (N, V, N_all)
                logp = logits.log_softmax(dim=-1)
                logp = torch.cat([logp[:, :a], logp[:, a + 1:]], dim=1)  # drop b == a
                diag = -logp[torch.arange(n, device=z.device), :, rows].sum(dim=0) / n_all  # (V-1,)
                if n_off:
                    offd = -(logp * off[:, None, :]).sum(dim=(0, 2)) / n_off
                    total = total + ((diag + offd) / 2).sum()
                else:
                    total = total + diag.sum()
            return total * world_size / (v * (v - 1))
