"""The :class:`Record` model and the WFDB reader."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import wfdb

from ssl_ecg.errors import RecordError

__all__ = ["Record", "read_record", "canonical_lead", "STANDARD_LEADS"]

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
_CANON = {name.lower(): name for name in STANDARD_LEADS}

# Physical units in a WFDB header -> factor to millivolts.
_UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "": 1.0, "nu": 1.0}


def canonical_lead(name: str) -> str:
    """Standard spelling of a 12-lead name (case-insensitive); other names unchanged."""
    return _CANON.get(name.strip().lower(), name.strip())


@dataclass
class Record:
    """One ECG record.

    Attributes:
        signal: float32 array (leads, time) in millivolts.
        fs: sampling rate in Hz.
        leads: lead names, standard spelling where known.
        record_id: the dataset's record identifier.
        patient_id: patient identifier; equals ``record_id`` where the dataset gives none.
        labels: label name -> value.
        demographics: e.g. ``{"age": 51, "sex": "F"}`` when present.
        path: the path the record was read from (without extension).
    """

    signal: np.ndarray
    fs: float
    leads: list[str]
    record_id: str
    patient_id: str
    labels: dict[str, Any] = field(default_factory=dict)
    demographics: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs


def read_record(
    path: str | os.PathLike,
    *,
    record_id: str | None = None,
    patient_id: str | None = None,
    adc_unit_mv: float | None = None,
) -> Record:
    """Read a WFDB record into a :class:`Record` (float32, mV, (leads, time)).

    Args:
        path: record path without extension, as in ``wfdb.rdrecord``.
        record_id: identifier to store; defaults to the header's record name.
        patient_id: patient identifier; defaults to the record id.
        adc_unit_mv: if given, ignore the header gains and read the digital values
            as ``(adu - baseline) * adc_unit_mv`` millivolts. Needed for databases
            whose gains are not physical (LUDB stores each lead's peak-to-peak as
            its gain; its digital values are microvolts, ``adc_unit_mv=1e-3``).

    Raises:
        RecordError: the header is missing or unreadable, the data is shorter than
            the header says, or the units are unknown.
    """
    path = str(path)
    for ext in (".hea", ".dat", ".mat"):
        if path.endswith(ext):
            path = path[: -len(ext)]
    header = path + ".hea"
    if not os.path.isfile(header):
        raise RecordError(f"{header}: record header not found (expected a WFDB .hea file)")
    try:
        rec = wfdb.rdrecord(path, physical=adc_unit_mv is None)
    except Exception as exc:  # wfdb raises many types for corrupt files
        raise RecordError(f"{header}: cannot read WFDB record ({type(exc).__name__}: {exc})") from exc

    if adc_unit_mv is None:
        sig = rec.p_signal
        if sig is None:
            raise RecordError(f"{header}: wfdb returned no physical signal")
        scale = []
        for name, unit in zip(rec.sig_name, rec.units or [""] * rec.n_sig):
            key = (unit or "").strip().lower()
            if key not in _UNIT_TO_MV:
                raise RecordError(f"{header}: lead {name!r} has unit {unit!r}; expected mV, uV or V")
            scale.append(_UNIT_TO_MV[key])
        sig = sig * np.asarray(scale)[None, :]
    else:
        d = rec.d_signal.astype(np.float64)
        invalid = d == _invalid_adu(rec)
        d = (d - np.asarray(rec.baseline, dtype=np.float64)[None, :]) * adc_unit_mv
        sig = np.where(invalid, np.nan, d)

    if sig.ndim != 2 or sig.shape[1] != rec.n_sig:
        raise RecordError(f"{header}: header declares {rec.n_sig} signals, data holds shape {sig.shape}")
    if rec.sig_len is not None and sig.shape[0] != rec.sig_len:
        raise RecordError(f"{header}: header declares {rec.sig_len} samples, data holds {sig.shape[0]}")
    if sig.shape[0] == 0:
        raise RecordError(f"{header}: record has no samples")
    if not rec.fs or rec.fs <= 0:
        raise RecordError(f"{header}: sampling frequency {rec.fs!r} is not positive")

    rid = record_id if record_id is not None else str(rec.record_name)
    return Record(
        signal=np.ascontiguousarray(sig.T, dtype=np.float32),
        fs=float(rec.fs),
        leads=[canonical_lead(n) for n in rec.sig_name],
        record_id=rid,
        patient_id=patient_id if patient_id is not None else rid,
        path=str(Path(path)),
    )


def _invalid_adu(rec: wfdb.Record) -> np.ndarray:
    """The per-lead digital value WFDB uses to mark missing samples."""
    fmt_min = {"8": -128, "16": -32768, "61": -32768, "80": -128, "160": -32768, "212": -2048,
               "310": -512, "311": -512, "24": -(2**23), "32": -(2**31)}
    return np.asarray([fmt_min.get(str(f), np.iinfo(np.int64).min) for f in rec.fmt])[None, :]
