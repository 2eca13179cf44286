"""Row-chunked multi-positive InfoNCE with an analytic backward.

This is the engine shared by :class:`~losses.PatientNTXentLoss` and
:class:`~losses.SupConLoss`. Given L2-normalised anchors ``a`` (M_a, D) and keys
``k`` (M_k, D), where anchor ``r`` is key ``offset + r``, and per-pair positive
weights ``w[r, c] >= 0`` (zero on the anchor's own key), the loss is

    L = 1/A * sum_{r valid} -sum_c (w[r, c] / W_r) * log softmax_{c != self}(a_r . k_c / tau)

with ``W_r = sum_c w[r, c]``, valid anchors those with ``W_r > 0`` and ``A`` their
count. The function returns the sum and ``A`` so the caller can divide by a
count taken over all ranks.

The (M_a, M_k) logit matrix is never held at once: rows are processed in
chunks, the forward keeps only the per-row log-sum-exp, and the backward
recomputes each chunk's logits. The gradient with respect to the logits is
``(softmax - w / W_r) / A``, so peak extra memory is O(chunk * M_k).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["multi_positive_infonce", "auto_chunk_size"]

# About 1M float32 logits per chunk keeps a chunk's working set in L2/L3 on CPU.
_TARGET_CHUNK_ELEMENTS = 1 << 20


def auto_chunk_size(n_rows: int, n_cols: int) -> int:
    """Rows per chunk so that a chunk holds about 1M logits (at least 64 rows)."""
    rows = max(64, _TARGET_CHUNK_ELEMENTS // max(n_cols, 1))
    return min(n_rows, rows)


def _pos_weights(spec_rows: Tensor, spec_cols: Tensor) -> Tensor:
    """Positive weights between two label specs.

    Integer 1-D specs are ids: weight 1 where equal. Floating 2-D specs are
    multi-hot labels: weight is the Jaccard overlap |a & b| / |a | b|.
    """
    if spec_rows.dim() == 1:
        return (spec_rows[:, None] == spec_cols[None, :]).to(torch.float32)
    inter = spec_rows @ spec_cols.T
    union = spec_rows.sum(1, keepdim=True) + spec_cols.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def _chunk_terms(a_c, keys, spec_c, spec_k, rows, inv_tau):
    """Logits, self mask and normalised positive weights for one row chunk."""
    logits = (a_c @ keys.T) * inv_tau
    cols = torch.arange(keys.shape[0], device=keys.device)
    self_mask = cols[None, :] == rows[:, None]
    logits = logits.masked_fill(self_mask, float("-inf"))
    w = _pos_weights(spec_c, spec_k).masked_fill(self_mask, 0.0)
    w_sum = w.sum(1)
    valid = w_sum > 0
    w = w / w_sum.clamp_min(1e-12)[:, None]
    return logits, w, valid


class _MultiPositiveInfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, anchors, keys, spec_a, spec_k, offset, inv_tau, chunk):
        m_a = anchors.shape[0]
        lse = anchors.new_empty(m_a)
        total = anchors.new_zeros(())
        n_valid = 0
        for r0 in range(0, m_a, chunk):
            r1 = min(r0 + chunk, m_a)
            rows = torch.arange(r0 + offset, r1 + offset, device=anchors.device)
            logits, w, valid = _chunk_terms(anchors[r0:r1], keys, spec_a[r0:r1], spec_k, rows, inv_tau)
            lse_c = torch.logsumexp(logits, dim=1)
            lse[r0:r1] = lse_c
            # sum_c w*logp with w summing to 1: sum_c w*logit - lse. -inf logits have w = 0.
            wl = (w * logits.masked_fill(torch.isinf(logits), 0.0)).sum(1)
            per_anchor = lse_c - wl
            total = total + per_anchor[valid].sum()
            n_valid += int(valid.sum())
        ctx.save_for_backward(anchors, keys, spec_a, spec_k, lse)
        ctx.offset, ctx.inv_tau, ctx.chunk = offset, inv_tau, chunk
        count = torch.tensor(n_valid, device=anchors.device)
        ctx.mark_non_differentiable(count)
        return total, count

    @staticmethod
    def backward(ctx, grad_out, _grad_count):
        anchors, keys, spec_a, spec_k, lse = ctx.saved_tensors
        offset, inv_tau, chunk = ctx.offset, ctx.inv_tau, ctx.chunk
        grad_a = torch.zeros_like(anchors) if ctx.needs_input_grad[0] else None
        grad_k = torch.zeros_like(keys) if ctx.needs_input_grad[1] else None
        scale = grad_out * inv_tau
        m_a = anchors.shape[0]
        for r0 in range(0, m_a, chunk):
            r1 = min(r0 + chunk, m_a)
            rows = torch.arange(r0 + offset, r1 + offset, device=anchors.device)
            logits, w, valid = _chunk_terms(anchors[r0:r1], keys, spec_a[r0:r1], spec_k, rows, inv_tau)
            g = torch.exp(logits - lse[r0:r1, None]).sub_(w)
            g.mul_((valid.to(g.dtype) * scale)[:, None])
            if grad_a is not None:
                grad_a[r0:r1] = g @ keys
            if grad_k is not None:
                grad_k.addmm_(g.T, anchors[r0:r1])
        return grad_a, grad_k, None, None, None, None, None


def multi_positive_infonce(
    anchors: Tensor,
    keys: Tensor,
    spec_anchors: Tensor,
    spec_keys: Tensor,
    temperature: float,
    offset: int = 0,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Multi-positive InfoNCE over normalised ``anchors`` against ``keys``.

    Args:
        anchors: (M_a, D) L2-normalised float32 embeddings.
        keys: (M_k, D) L2-normalised float32 embeddings; anchor ``r`` is key ``offset + r``.
        spec_anchors: (M_a,) integer ids or (M_a, C) float multi-hot labels.
        spec_keys: ids or labels of the keys, same kind as ``spec_anchors``.
        temperature: softmax temperature tau.
        offset: index of the first anchor among the keys.
        chunk_size: anchor rows per chunk; ``None`` picks a cache-sized chunk.

    Returns:
        ``(total, count)``: the summed loss over valid anchors (differentiable) and
        the number of valid anchors (an integer tensor). The caller divides, so
        that a distributed run can divide by the count over all ranks.
    """
    if chunk_size is None:
        chunk_size = auto_chunk_size(anchors.shape[0], keys.shape[0])
    chunk_size = max(1, int(chunk_size))
    return _MultiPositiveInfoNCE.apply(
        anchors, keys, spec_anchors, spec_keys, int(offset), 1.0 / float(temperature), chunk_size
    )
