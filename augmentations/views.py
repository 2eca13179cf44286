"""View makers for patient-aware contrastive learning (CLOCS).

All view makers take a batch ``x`` of shape (B, L, T) and return views of shape
(N, V, C, S):

- per-lead views (``per_lead=True``): N = B * L, C = 1, and instance n is lead
  ``n % L`` of sample ``n // L`` (sample-major). CLOCS' CMSC feeds single-lead
  batches (L = 1: each (record, lead) pair is its own, independently shuffled
  item), so N = B and the ids need no expansion. A multi-lead batch keeps every
  lead of a record in the batch; expand its sample ids with :func:`per_lead_ids`.
- multi-lead views (``per_lead=False``): N = B, C = L.

Order of V for :class:`SegmentViews`: segment 0 is the earliest in time, then
segment 1 immediately after it, and so on.
"""

from __future__ import annotations

import torch
from ecg_augmentations import Transform
from ecg_augmentations.base import randint
from einops import rearrange
from torch import Tensor

from augmentations._checks import check_batch

__all__ = ["SegmentViews", "LeadViews", "SegmentLeadViews", "MultiView", "per_lead_ids"]


def per_lead_ids(ids: Tensor, n_leads: int, same_lead: bool = False) -> Tensor:
    """Instance ids for per-lead views of a multi-lead batch (instance n is lead n % L of sample n // L).

    This batching puts all L leads of every record in the same batch with one
    shared crop. With patient-level ids each anchor then has 2L - 1 positives,
    2(L - 1) of them from other leads of its own record (22 with 12 leads and two
    segments): the positive set of CMSMLC, not of CLOCS' CMSC. In CLOCS each
    (record, lead) pair is a separate instance, shuffled independently, so an
    anchor meets another lead of its patient only by chance (at batch 256, about
    79% of anchors on LUDB's 1,920 train+val lead instances, with ~1.5 such
    partners on average, and 27% on the 10,308 of the bundled PTB-XL sample; see
    ``ssl_ecg.data.sampler.cross_lead_positive_rate``). The strong lead
    invariance, which removes lead polarity and with it the electrical axis,
    comes from this batching, not from CLOCS.

    Args:
        ids: (B,) integer patient ids of the samples.
        n_leads: L.
        same_lead: if False, every lead keeps its sample's id, so all leads of a
            patient are positives of each other. If True, the id is
            ``id * L + lead``: positives must also share the lead. With this
            all-leads batching, same_lead lifted LUDB left-axis-deviation AUROC at
            25% labels from 0.80 to 0.98 (the README's "positives" note, measured
            before CMSC used CLOCS' per-lead batching).
    """
    ids = torch.as_tensor(ids).long()
    out = ids.repeat_interleave(n_leads)
    if same_lead:
        out = out * n_leads + torch.arange(n_leads, device=ids.device).repeat(len(ids))
    return out


class SegmentViews(Transform):
    """CMSC views: adjacent, non-overlapping segments starting at a random time.

    Kiyasseh et al., "CLOCS", ICML 2021, section 3 (contrastive multi-segment coding).

    Args:
        n_segments: number of adjacent segments (views) V.
        segment_len: segment length in seconds.
        fs: sampling rate in Hz, to convert ``segment_len`` to samples.
        per_lead: one instance per lead (C = 1), or all leads as channels (C = L).
    """

    def __init__(self, n_segments: int = 2, segment_len: float = 4.0, fs: float = 250.0, per_lead: bool = True):
        super().__init__(p=1.0)
        if n_segments < 1:
            raise ValueError(f"n_segments: expected >= 1, got {n_segments}")
        if fs <= 0 or segment_len <= 0:
            raise ValueError(f"segment_len/fs: expected positive values, got {segment_len} s at {fs} Hz")
        self.n_segments = int(n_segments)
        self.segment_len = float(segment_len)
        self.fs = float(fs)
        self.per_lead = bool(per_lead)
        self.segment_samples = int(round(segment_len * fs))
        if self.segment_samples < 1:
            raise ValueError(f"segment_len: {segment_len} s at {fs} Hz is shorter than one sample")

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Cut views from ``x`` (B, L, T); returns (N, V, C, S)."""
        check_batch(x)
        b, n_leads, t = x.shape
        span = self.n_segments * self.segment_samples
        if span > t:
            raise ValueError(
                f"x: signal has {t} samples but {self.n_segments} segments of {self.segment_samples} samples "
                f"({self.segment_len} s at {self.fs} Hz) need {span}"
            )
        start = randint(0, t - span + 1, (b,), x, generator)
        idx = start[:, None] + torch.arange(span, device=x.device)[None, :]
        picked = torch.gather(x, 2, idx[:, None, :].expand(b, n_leads, span))
        if self.per_lead:
            return rearrange(picked, "b l (v s) -> (b l) v 1 s", v=self.n_segments)
        return rearrange(picked, "b l (v s) -> b v l s", v=self.n_segments)

    def apply(self, x, generator=None):  # gating does not apply to view makers
        return self.forward(x, generator)


class LeadViews(Transform):
    """CMLC views: each selected lead is a view of the same instance at the same time.

    Kiyasseh et al., "CLOCS", ICML 2021 (contrastive multi-lead coding).
    (B, L, T) -> (B, V, 1, T) with V = number of selected leads, in the order given.

    Args:
        leads: lead indices to use as views (``None``: all leads, in order).
    """

    def __init__(self, leads: list[int] | None = None):
        super().__init__(p=1.0)
        if leads is not None and len(leads) < 1:
            raise ValueError("leads: expected at least one lead index")
        self.leads = None if leads is None else [int(i) for i in leads]

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        check_batch(x)
        if self.leads is not None:
            bad = [i for i in self.leads if not -x.shape[1] <= i < x.shape[1]]
            if bad:
                raise ValueError(f"leads: indices {bad} out of range for {x.shape[1]} leads")
            x = x[:, self.leads]
        return rearrange(x, "b l t -> b l 1 t")

    def apply(self, x, generator=None):
        return self.forward(x, generator)


class SegmentLeadViews(Transform):
    """CMSMLC views: adjacent segments x selected leads.

    (B, L, T) -> (B, V, 1, S) with V = n_segments * n_leads, ordered segment-major:
    view ``v = s * n_leads + l`` is segment s (earliest first) of the l-th selected lead.

    Args:
        n_segments: adjacent, non-overlapping segments starting at a random time.
        segment_len: segment length in seconds.
        fs: sampling rate in Hz.
        leads: lead indices (``None``: all leads).
    """

    def __init__(self, n_segments: int = 2, segment_len: float = 4.0, fs: float = 250.0,
                 leads: list[int] | None = None):
        super().__init__(p=1.0)
        self.segments = SegmentViews(n_segments, segment_len, fs, per_lead=False)
        self.lead_views = LeadViews(leads)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        check_batch(x)
        if self.lead_views.leads is not None:
            x = self.lead_views(x)[:, :, 0]
        seg = self.segments(x, generator)  # (B, S, L, T)
        return rearrange(seg, "b s l t -> b (s l) 1 t")

    def apply(self, x, generator=None):
        return self.forward(x, generator)


class MultiView(Transform):
    """SimCLR / sCL-ST views: ``n_views`` independently augmented copies.

    (B, L, T) -> (B, V, L, T); view v is ``transform(x, generator)``, drawn in order.

    Args:
        transform: any callable ``transform(x, generator=None)`` on (B, L, T).
        n_views: V.
    """

    def __init__(self, transform, n_views: int = 2):
        super().__init__(p=1.0)
        if n_views < 1:
            raise ValueError(f"n_views: expected >= 1, got {n_views}")
        self.transform = transform
        self.n_views = int(n_views)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        check_batch(x)
        return torch.stack([self.transform(x, generator=generator) for _ in range(self.n_views)], dim=1)

    def apply(self, x, generator=None):
        return self.forward(x, generator)
