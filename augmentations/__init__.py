"""Batched ECG transforms and view makers on (batch, leads, time) tensors.

Depends only on torch, numpy, einops and ecg-augmentations; never imports ``ssl_ecg``.
"""

from augmentations.views import SegmentViews, per_lead_ids

__all__ = ["SegmentViews", "per_lead_ids"]
