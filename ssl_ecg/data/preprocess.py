"""Resampling, lead selection, NaN/flat-lead policy and per-record normalisation."""

from __future__ import annotations

from fractions import Fraction
from typing import Literal, Sequence

import numpy as np
from scipy.signal import resample_poly

from ssl_ecg.data.record import Record, canonical_lead
from ssl_ecg.errors import RecordError

__all__ = ["resample", "select_leads", "check_signal", "normalize", "preprocess", "Normalization", "BadLeadPolicy"]

Normalization = Literal["record", "lead", "none"]
BadLeadPolicy = Literal["error", "zero_lead", "drop_record"]

# A lead whose standard deviation is below 1 uV carries no ECG.
FLAT_STD_MV = 1e-3


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling along the last axis (``scipy.signal.resample_poly``).

    The rate ratio is approximated by a fraction with denominator at most 1000
    (257 Hz -> 250 Hz is exact: 250/257).
    """
    if fs_in <= 0 or fs_out <= 0:
        raise ValueError(f"fs_in/fs_out: expected positive rates, got {fs_in} -> {fs_out}")
    if fs_in == fs_out:
        return signal.astype(np.float32, copy=False)
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    out = resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1)
    return out.astype(np.float32)


def select_leads(record: Record, leads: Sequence[str] | None) -> Record:
    """Reorder/select leads by name (case-insensitive). ``None`` keeps all."""
    if leads is None:
        return record
    want = [canonical_lead(name) for name in leads]
    have = {name: i for i, name in enumerate(record.leads)}
    missing = [name for name in want if name not in have]
    if missing:
        raise RecordError(f"{record.path or record.record_id}: leads {missing} not found; record has {record.leads}")
    idx = [have[name] for name in want]
    return _replace(record, signal=record.signal[idx], leads=want)


def check_signal(record: Record, policy: BadLeadPolicy = "error") -> Record | None:
    """Apply the NaN / flat-lead policy.

    Returns the record (possibly with bad leads zeroed), or ``None`` when the
    policy is ``drop_record`` and a lead is bad.
    """
    sig = record.signal
    nan_leads = np.isnan(sig).any(axis=1)
    with np.errstate(invalid="ignore"):
        flat_leads = np.nan_to_num(sig).std(axis=1) < FLAT_STD_MV
    bad = nan_leads | flat_leads
    if not bad.any():
        return record
    where = record.path or record.record_id
    names = [f"{record.leads[i]} ({'NaN' if nan_leads[i] else 'flat'})" for i in np.flatnonzero(bad)]
    if policy == "error":
        raise RecordError(f"{where}: bad leads {names}; set the bad-lead policy to 'zero_lead' or 'drop_record'")
    if policy == "drop_record":
        return None
    if policy == "zero_lead":
        sig = sig.copy()
        sig[bad] = 0.0
        return _replace(record, signal=sig)
    raise ValueError(f"policy: expected 'error', 'zero_lead' or 'drop_record', got {policy!r}")


def normalize(signal: np.ndarray, mode: Normalization = "record") -> np.ndarray:
    """Per-record normalisation.

    - ``"record"``: remove each lead's mean, divide all leads by the record's
      overall standard deviation (keeps the amplitude ratios between leads,
      which carry the electrical axis);
    - ``"lead"``: z-score each lead on its own;
    - ``"none"``: leave millivolts.

    Zeroed (flat) leads stay zero.
    """
    if mode == "none":
        return signal
    centred = signal - signal.mean(axis=-1, keepdims=True)
    if mode == "record":
        std = centred.std()
        return (centred / std).astype(np.float32) if std > 0 else centred.astype(np.float32)
    if mode == "lead":
        std = centred.std(axis=-1, keepdims=True)
        return (centred / np.where(std > 0, std, 1.0)).astype(np.float32)
    raise ValueError(f"normalize: expected 'record', 'lead' or 'none', got {mode!r}")


def preprocess(
    record: Record,
    fs: float | None = 250.0,
    leads: Sequence[str] | None = None,
    normalization: Normalization = "record",
    bad_lead_policy: BadLeadPolicy = "error",
) -> Record | None:
    """Select leads, check for NaN/flat leads, resample to ``fs`` and normalise."""
    record = select_leads(record, leads)
    record = check_signal(record, bad_lead_policy)
    if record is None:
        return None
    sig = record.signal if fs is None else resample(record.signal, record.fs, fs)
    return _replace(record, signal=normalize(sig, normalization), fs=float(fs or record.fs))


def _replace(record: Record, **changes) -> Record:
    from dataclasses import replace

    return replace(record, **changes)
