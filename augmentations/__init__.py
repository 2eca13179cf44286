"""Batched ECG transforms and view makers on (batch, leads, time) tensors.

Depends only on torch, numpy, einops and ecg-augmentations; never imports ``ssl_ecg``.
The standard transforms of ecg-augmentations are re-exported, so one namespace
holds everything.
"""

from ecg_augmentations import (
    AmplitudeScale,
    BaselineShift,
    BaselineWander,
    Compose,
    FrequencyMask,
    GaussianNoise,
    HighPassFilter,
    Invert,
    LeadMask,
    LowPassFilter,
    MuscleNoise,
    OneOf,
    Permute,
    PowerlineNoise,
    PRMask,
    QRSMask,
    QTMask,
    RandomApply,
    RandomCrop,
    RandomResizedCrop,
    RandomTimeWarp,
    Reverse,
    TimeMask,
    TimeShift,
    TimeStretch,
    Transform,
    VCGRotation,
)

from augmentations.peaks import detect_r_peaks, match_peaks, peak_indices, r_peak_positions
from augmentations.peaks_scoring import matched_peak_pairs, score_peaks_in_span
from augmentations.presets import default_ecg_augmentation
from augmentations.semantic import PeakNoiseSmoothing, SplitJoin
from augmentations.views import LeadViews, MultiView, SegmentLeadViews, SegmentViews, per_lead_ids

__all__ = [
    "detect_r_peaks", "r_peak_positions", "peak_indices", "match_peaks", "matched_peak_pairs", "score_peaks_in_span",
    "SplitJoin", "PeakNoiseSmoothing",
    "SegmentViews", "LeadViews", "SegmentLeadViews", "MultiView", "per_lead_ids",
    "default_ecg_augmentation",
    "Transform", "Compose", "RandomApply", "OneOf",
    "AmplitudeScale", "BaselineShift", "BaselineWander", "FrequencyMask", "GaussianNoise", "HighPassFilter",
    "Invert", "LeadMask", "LowPassFilter", "MuscleNoise", "Permute", "PowerlineNoise", "PRMask", "QRSMask",
    "QTMask", "RandomCrop", "RandomResizedCrop", "RandomTimeWarp", "Reverse", "TimeMask", "TimeShift",
    "TimeStretch", "VCGRotation",
]
