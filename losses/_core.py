"""Row-chunked multi-positive InfoNCE with an analytic backward.

This is the engine shared by :class:`~losses.PatientNTXentLoss` and
:class:`~losses.SupConLoss`. Given L2-normalised anchors ``a`` (M_a, D) and keys
``k`` (M_k, D), where anchor ``r`` is key ``offset + r``, and per-pair positive
weights ``w[r, c] >= 0`` (zero on the anchor's own key), the loss is

    L = sum_{r valid} [ lse_r - sum_c (w[r, c] / W_r) * a_r . k_c / tau ],
    lse_r = log sum_{c != self} exp(a_r . k_c / tau),

with ``W_r = sum_c w[r, c]`` and valid anchors those with ``W_r > 0``. The
function returns this sum and the number of valid anchors, so the caller can
divide by a count taken over all ranks.

The (M_a, M_k) logit matrix is never held at once: rows are processed in
chunks, the forward keeps only the per-row log-sum-exp, and the backward
recomputes each chunk's logits. The gradient with respect to the logits is
``softmax - w / W_r`` (times 1/tau), so peak extra memory is O(chunk * M_k).

For integer ids the positive weights never become a dense matrix: the
positive term and its gradients are per-id sums of keys and anchors
(``segment sums``), so the only dense work per chunk is one matmul, a
log-sum-exp and, in the backward, one exp and two matmuls. Multi-hot labels
(Jaccard weights) use a dense weight block per chunk.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["multi_positive_infonce", "auto_chunk_size"]

# About 1M float32 logits (4 MB) per chunk keeps a chunk's working set near the cache.
_TARGET_CHUNK_ELEMENTS = 1 << 20


def auto_chunk_size(n_rows: int, n_cols: int) -> int:
    """Rows per chunk so that a chunk holds about 1M logits (at least 64 rows)."""
    rows = max(64, _TARGET_CHUNK_ELEMENTS // max(n_cols, 1))
    return min(n_rows, rows)


def _jaccard(rows: Tensor, cols: Tensor) -> Tensor:
    inter = rows @ cols.T
    union = rows.sum(1, keepdim=True) + cols.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def _jaccard_weights(spec_a, spec_k, r0, r1, offset):
    """Jaccard positive weights of anchor rows r0:r1, zero on each anchor's own key."""
    w = _jaccard(spec_a[r0:r1], spec_k)
    rows = torch.arange(r1 - r0, device=spec_k.device)
    w[rows, rows + r0 + offset] = 0.0
    return w


def _chunk_logits(anchors, keys, r0, r1, offset, inv_tau):
    """Logits of anchor rows r0:r1 with each anchor's own key set to -inf."""
    logits = torch.mm(anchors[r0:r1], keys.T).mul_(inv_tau)
    rows = torch.arange(r1 - r0, device=keys.device)
    logits[rows, rows + r0 + offset] = float("-inf")
    return logits


class _IdStats:
    """Per-id sums that give the positive term without a dense weight matrix."""

    def __init__(self, anchors: Tensor, keys: Tensor, ids_a: Tensor, ids_k: Tensor, offset: int):
        uniq, inv_k = torch.unique(ids_k, return_inverse=True)
        self.inv_k = inv_k
        self.inv_a = inv_k[offset:offset + anchors.shape[0]]
        counts = torch.bincount(inv_k, minlength=len(uniq))
        self.n_pos = (counts[self.inv_a] - 1).to(anchors.dtype)  # own key excluded
        self.valid = self.n_pos > 0
        self.inv_pos = torch.where(self.valid, 1.0 / self.n_pos.clamp_min(1), torch.zeros_like(self.n_pos))
        key_sums = torch.zeros(len(uniq), keys.shape[1], dtype=keys.dtype, device=keys.device)
        key_sums.index_add_(0, inv_k, keys)
        own = keys[offset:offset + anchors.shape[0]]
        self.pos_keys = (key_sums[self.inv_a] - own) * self.inv_pos[:, None]  # mean positive key per anchor
        self.n_uniq = len(uniq)


class _MultiPositiveInfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, anchors, keys, spec_a, spec_k, offset, inv_tau, chunk):
        m_a = anchors.shape[0]
        by_id = spec_a.dim() == 1
        single = chunk >= m_a  # small problem: keep the softmax for the backward
        lse = anchors.new_empty(m_a)
        stats = None
        if by_id:
            stats = _IdStats(anchors, keys, spec_a, spec_k, offset)
            valid = stats.valid
            pos_logit = (anchors * stats.pos_keys).sum(1) * inv_tau
        else:
            valid = anchors.new_zeros(m_a, dtype=torch.bool)
            pos_logit = anchors.new_zeros(m_a)
        probs = None
        for r0 in range(0, m_a, chunk):
            r1 = min(r0 + chunk, m_a)
            logits = _chunk_logits(anchors, keys, r0, r1, offset, inv_tau)
            lse[r0:r1] = torch.logsumexp(logits, dim=1)
            if not by_id:
                w = _jaccard_weights(spec_a, spec_k, r0, r1, offset)
                w_sum = w.sum(1)
                valid[r0:r1] = w_sum > 0
                finite = logits.masked_fill(torch.isinf(logits), 0.0)
                pos_logit[r0:r1] = (w * finite).sum(1) / w_sum.clamp_min(1e-12)
            if single:
                probs = logits.sub_(lse[:, None]).exp_()
        per_anchor = torch.where(valid, lse - pos_logit, torch.zeros_like(lse))
        ctx.save_for_backward(anchors, keys, spec_a, spec_k, lse, valid, probs)
        ctx.offset, ctx.inv_tau, ctx.chunk, ctx.stats = offset, inv_tau, chunk, stats
        count = valid.sum()
        ctx.mark_non_differentiable(count)
        return per_anchor.sum(), count

    @staticmethod
    def backward(ctx, grad_out, _grad_count):
        anchors, keys, spec_a, spec_k, lse, valid, probs = ctx.saved_tensors
        offset, inv_tau, chunk, stats = ctx.offset, ctx.inv_tau, ctx.chunk, ctx.stats
        need_a, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_a = torch.zeros_like(anchors) if need_a else None
        grad_k = torch.zeros_like(keys) if need_k else None
        if not bool(valid.any()):  # nothing to learn; also avoids -inf - -inf when there is one key
            return grad_a, grad_k, None, None, None, None, None
        # Row scale of d loss / d logits: grad_out / tau on valid anchors.
        scale = valid.to(anchors.dtype) * (grad_out * inv_tau)
        m_a = anchors.shape[0]
        for r0 in range(0, m_a, chunk):
            r1 = min(r0 + chunk, m_a)
            if probs is not None:
                p = probs if stats is not None else probs.clone()
            else:
                p = _chunk_logits(anchors, keys, r0, r1, offset, inv_tau)
                p.sub_(lse[r0:r1, None]).exp_()  # softmax over keys, 0 on the own key
            s = scale[r0:r1, None]
            if stats is None:
                w = _jaccard_weights(spec_a, spec_k, r0, r1, offset)
                p.sub_(w / w.sum(1, keepdim=True).clamp_min(1e-12))
            if need_a:
                grad_a[r0:r1] = torch.mm(p, keys).mul_(s)
            if need_k:
                grad_k.addmm_(p.T, anchors[r0:r1] * s)
        if stats is not None:
            # The -w / W part of the logit gradient, as per-id sums.
            if need_a:
                grad_a.sub_(stats.pos_keys * scale[:, None])
            if need_k:
                weighted = anchors * (scale * stats.inv_pos)[:, None]
                sums = torch.zeros(stats.n_uniq, anchors.shape[1], dtype=anchors.dtype, device=anchors.device)
                sums.index_add_(0, stats.inv_a, weighted)
                grad_k.sub_(sums[stats.inv_k])
                grad_k[offset:offset + m_a].add_(weighted)  # an anchor is not its own positive
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
        anchors: (M_a, D) L2-normalised embeddings.
        keys: (M_k, D) L2-normalised embeddings; anchor ``r`` is key ``offset + r``.
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
