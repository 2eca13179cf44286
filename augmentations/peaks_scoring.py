"""Scoring R-peak detections against annotated beats inside a scored span (ANSI/AAMI EC57-style)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["matched_peak_pairs", "score_peaks_in_span"]


def _indices(values, name: str) -> np.ndarray:
    """A 1-D int64 array of sample indices, or a ValueError naming ``name``."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of sample indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected integer sample indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def matched_peak_pairs(detected, reference, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of detections to reference beats within ``tolerance`` samples.

    The rule of :func:`augmentations.peaks.match_peaks`: candidate pairs are each
    reference beat with its two nearest detections (one on each side) within the
    tolerance; pairs are taken greedily in order of distance (ties by reference,
    then detection position), each beat and each detection used at most once.

    Args:
        detected: (K,) detected peak sample indices, any order.
        reference: (M,) reference beat sample indices, any order.
        tolerance: largest |detection - beat| that counts as a match, in samples (>= 0).

    Returns:
        ``(det, ref)``: the matched sample indices, two (P,) int64 arrays sorted by
        reference position, so ``det[i]`` was matched to ``ref[i]``.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance: expected >= 0 samples, got {tolerance}")
    det = np.sort(_indices(detected, "detected"))
    ref = np.sort(_indices(reference, "reference"))
    empty = np.zeros(0, np.int64)
    if len(det) == 0 or len(ref) == 0:
        return empty, empty
    right = np.searchsorted(det, ref)  # nearest detection at or after each beat, and the one before it
    cand = []
    for j in (right - 1, right):
        inside = (j >= 0) & (j < len(det))
        r = np.flatnonzero(inside)
        d = j[inside]
        dist = np.abs(det[d] - ref[r])
        ok = dist <= tolerance
        cand.append(np.stack([dist[ok], r[ok], d[ok]], 1))
    cand = np.concatenate(cand)
    cand = cand[np.lexsort((cand[:, 2], cand[:, 1], cand[:, 0]))]
    used_r = np.zeros(len(ref), bool)
    used_d = np.zeros(len(det), bool)
    pairs = []
    for _, r, d in cand.tolist():  # greedy: a Python loop over at most 2 candidates per beat
        if not used_r[r] and not used_d[d]:
            used_r[r] = used_d[d] = True
            pairs.append((r, d))
    if not pairs:
        return empty, empty
    r_idx, d_idx = np.asarray(sorted(pairs), np.int64).T
    return det[d_idx], ref[r_idx]


def _outside(idx: np.ndarray, exclude: Sequence[tuple[int, int]]) -> np.ndarray:
    """Whether each index lies outside every closed interval in ``exclude``."""
    keep = np.ones(len(idx), bool)
    for lo, hi in exclude:
        keep &= ~((idx >= lo) & (idx <= hi))
    return keep


def score_peaks_in_span(
    detected,
    reference,
    tolerance: int,
    start: int = 0,
    stop: int | None = None,
    exclude: Iterable[tuple[int, int]] = (),
) -> tuple[int, int, int]:
    """TP, FP and FN of detections against reference beats, scored only on ``[start, stop]``.

    The scored span holds the reference beats and the detections that count.
    Detections within ``tolerance`` outside it (the margin) may still match a beat
    inside, so a beat near an edge is not missed because its detection fell just
    outside; they never count as false positives, since the reference says nothing
    there. This is how ANSI/AAMI EC57's comparator (``bxb``) treats the end of its
    5-minute learning period, and how a partly annotated record (LUDB) is scored
    on its annotated span.

    ``exclude`` holds closed intervals ``(first, last)`` (e.g. ventricular flutter
    episodes, which EC57 leaves out of QRS detection) where neither beats nor
    detections count and nothing matches.

    Args:
        detected: (K,) detected peak sample indices.
        reference: (M,) reference beat sample indices.
        tolerance: matching window in samples (EC57: 150 ms).
        start: first sample of the scored span.
        stop: last sample of the scored span (inclusive); ``None`` means no end.
        exclude: closed intervals of samples left out of scoring.

    Returns:
        ``(tp, fp, fn)``: matched beats, unmatched detections inside the span,
        unmatched beats inside the span.
    """
    det = _indices(detected, "detected")
    ref = _indices(reference, "reference")
    stop_ = np.iinfo(np.int64).max // 4 if stop is None else int(stop)
    if stop_ < start:
        raise ValueError(f"stop: expected >= start ({start}), got {stop}")
    exclude = [(int(lo), int(hi)) for lo, hi in exclude]
    for lo, hi in exclude:
        if hi < lo:
            raise ValueError(f"exclude: interval ({lo}, {hi}) ends before it starts")
    ref = ref[(ref >= start) & (ref <= stop_) & _outside(ref, exclude)]
    det = det[(det >= start - tolerance) & (det <= stop_ + tolerance) & _outside(det, exclude)]
    matched_det, _ = matched_peak_pairs(det, ref, tolerance)
    inside = int(((det >= start) & (det <= stop_)).sum())
    matched_inside = int(((matched_det >= start) & (matched_det <= stop_)).sum())
    tp = len(matched_det)
    return tp, inside - matched_inside, len(ref) - tp
