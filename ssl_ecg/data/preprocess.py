"""Resampling, lead selection, non-finite/flat-lead policy and per-record normalisation."""

from __future__ import annotations

from fractions import Fraction
from typing import Literal, Sequence

import numpy as np
from scipy.signal import butter, resample_poly, sosfiltfilt

from ssl_ecg.data.record import Record, canonical_lead
from ssl_ecg.errors import RecordError

__all__ = ["resample", "select_leads", "resolve_lead_names", "check_signal", "bandpass", "normalize", "preprocess",
           "Normalization", "BadLeadPolicy"]

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
    """Reorder/select leads by name (case-insensitive). ``None`` keeps all.

    A name ``"#k"`` selects the k-th channel whatever its name, and keeps the
    name ``"#k"``: for datasets whose lead sets differ between records (MIT-BIH:
    MLII with V1, V2, V4 or V5), with per-lead methods that ignore lead identity.

    Raises:
        RecordError: the selection is empty, a name is asked for twice (case-insensitively, or by name
            and position), is not in the record, or matches more than one of
            the record's channels.
    """
    if leads is None:
        return record
    want = resolve_lead_names(leads)
    where = record.path or record.record_id
    if not want:
        raise RecordError(f"{where}: leads: an empty selection; expected at least one lead name (or None for all)")
    by_name: dict[str, list[int]] = {}
    for i, name in enumerate(record.leads):
        by_name.setdefault(name.casefold(), []).append(i)
    idx, missing = [], []
    for name in want:
        if name.startswith("#") and name[1:].isdigit() and int(name[1:]) < len(record.leads):
            idx.append(int(name[1:]))
        elif name.casefold() in by_name:
            hits = by_name[name.casefold()]
            if len(hits) > 1:
                raise RecordError(f"{where}: lead {name!r} matches channels {hits} of {record.leads}; expected "
                                  "one channel per name (select them by position, '#k')")
            idx.append(hits[0])
        else:
            missing.append(name)
    if missing:
        raise RecordError(f"{where}: leads {missing} not found; record has {record.leads}")
    seen: dict[int, str] = {}
    for name, i in zip(want, idx):
        if i in seen:
            raise RecordError(f"{where}: leads {seen[i]!r} and {name!r} both select channel {i} "
                              f"({record.leads[i]!r}); expected each channel once")
        seen[i] = name
    return _replace(record, signal=record.signal[idx], leads=want)


def resolve_lead_names(leads: Sequence[str]) -> list[str]:
    """Standard spelling of a requested lead list, refusing duplicates.

    Names are stripped and standard 12-lead names take their standard spelling
    (``"avr"`` -> ``"aVR"``); ``"#k"`` positions are kept as given.

    Raises:
        RecordError: an empty name, or a name given twice (case-insensitively).
    """
    if isinstance(leads, str):
        raise RecordError(f"leads: expected a sequence of lead names, got the string {leads!r} "
                          "(split a comma-separated list first)")
    want, seen = [], {}
    for name in leads:
        name = str(name).strip()
        if not name:
            raise RecordError(f"leads: empty lead name in {list(leads)}; expected names such as 'II' or '#0'")
        name = name if name.startswith("#") else canonical_lead(name)
        key = name.casefold()
        if key in seen:
            raise RecordError(f"leads: {name!r} is given twice in {list(leads)} (as {seen[key]!r} and "
                              f"{name!r}); expected each lead once")
        seen[key] = name
        want.append(name)
    return want


def check_signal(record: Record, policy: BadLeadPolicy = "error", stats: dict | None = None) -> Record | None:
    """Apply the non-finite / flat-lead policy.

    A lead is bad when any sample is non-finite (NaN, +inf or -inf) or when its
    finite samples have a standard deviation below :data:`FLAT_STD_MV`.
    Returns the record (possibly with bad leads zeroed), or ``None`` when the
    policy is ``drop_record`` and a lead is bad. ``stats``, if given, counts the
    actions: ``zeroed_leads``, ``dropped_records`` and, once any occur,
    ``nonfinite_samples`` (the non-finite samples in the leads zeroed or records
    dropped).

    Raises:
        RecordError: a lead is bad and the policy is ``"error"``; the message
            names each bad lead with its count of non-finite samples.
        ValueError: an unknown policy.
    """
    if policy not in ("error", "zero_lead", "drop_record"):
        raise ValueError(f"policy: expected 'error', 'zero_lead' or 'drop_record', got {policy!r}")
    sig = record.signal
    finite = np.isfinite(sig)
    n_nonfinite = (~finite).sum(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        flat_leads = np.where(finite, sig, 0.0).std(axis=1) < FLAT_STD_MV
    bad = (n_nonfinite > 0) | flat_leads
    if not bad.any():
        return record
    where = record.path or record.record_id
    names, counts = [], {}
    for i in np.flatnonzero(bad):
        if n_nonfinite[i]:
            row = sig[i]
            kinds = [k for k, hit in (("NaN", np.isnan(row).any()), ("+inf", np.isposinf(row).any()),
                                      ("-inf", np.isneginf(row).any())) if hit]
            names.append(f"{record.leads[i]} ({', '.join(kinds)})")
            counts[record.leads[i]] = int(n_nonfinite[i])
        else:
            names.append(f"{record.leads[i]} (flat)")
    if policy == "error":
        detail = f", non-finite samples per lead {counts}" if counts else ""
        raise RecordError(f"{where}: bad leads {names}{detail}; expected finite, non-flat leads, or set the "
                          "bad-lead policy to 'zero_lead' or 'drop_record'")
    if stats is not None and counts:
        stats["nonfinite_samples"] = stats.get("nonfinite_samples", 0) + sum(counts.values())
    if policy == "drop_record":
        if stats is not None:
            stats["dropped_records"] = stats.get("dropped_records", 0) + 1
        return None
    sig = sig.copy()
    sig[bad] = 0.0
    if stats is not None:
        stats["zeroed_leads"] = stats.get("zeroed_leads", 0) + int(bad.sum())
    return _replace(record, signal=sig)


def bandpass(signal: np.ndarray, fs: float, low: float | None = 0.5, high: float | None = None,
             order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth filter along the last axis (``scipy.signal.sosfiltfilt``).

    ``low`` alone is a high-pass (baseline-wander removal, e.g. 0.5 Hz); ``high``
    alone a low-pass; both a band-pass. Frequencies are in Hz.
    """
    nyq = fs / 2
    if low is not None and not 0 < low < nyq:
        raise ValueError(f"bandpass: low cut-off {low} Hz must lie in (0, {nyq}) at fs = {fs} Hz")
    if high is not None and not 0 < high < nyq:
        raise ValueError(f"bandpass: high cut-off {high} Hz must lie in (0, {nyq}) at fs = {fs} Hz")
    if low is None and high is None:
        return signal
    if low is not None and high is not None:
        if low >= high:
            raise ValueError(f"bandpass: low cut-off {low} Hz must be below high {high} Hz")
        sos = butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    elif low is not None:
        sos = butter(order, low, btype="highpass", fs=fs, output="sos")
    else:
        sos = butter(order, high, btype="lowpass", fs=fs, output="sos")
    return sosfiltfilt(sos, signal, axis=-1).astype(np.float32)


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
    band: tuple[float | None, float | None] | None = None,
    stats: dict | None = None,
) -> Record | None:
    """Select leads, apply the NaN/flat-lead policy, resample to ``fs``, filter, normalise.

    Args:
        band: optional ``(low, high)`` Hz for :func:`bandpass` after resampling
            (``(0.5, None)`` removes baseline wander); ``None`` skips filtering.
        stats: counts the bad-lead policy's actions (see :func:`check_signal`).
    """
    record = select_leads(record, leads)
    record = check_signal(record, bad_lead_policy, stats)
    if record is None:
        return None
    sig = record.signal if fs is None else resample(record.signal, record.fs, fs)
    rate = float(fs or record.fs)
    if band is not None:
        sig = bandpass(sig, rate, band[0], band[1])
    return _replace(record, signal=normalize(sig, normalization), fs=rate)


def _replace(record: Record, **changes) -> Record:
    from dataclasses import replace

    return replace(record, **changes)
