"""The :class:`Record` model and the WFDB reader."""

from __future__ import annotations

import contextvars
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import wfdb
from scipy.signal import resample_poly

from ssl_ecg.errors import RecordError

__all__ = ["Record", "read_record", "read_tolerant", "check_signal_file_name", "canonical_lead", "STANDARD_LEADS",
           "MAX_HEADER_BYTES", "read_header_bytes"]

#: Largest WFDB header (.hea) read (bytes). Real headers are under 10 KiB (CinC 2021's longest are ~2 KiB).
MAX_HEADER_BYTES = 1 << 20

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
_CANON = {name.lower(): name for name in STANDARD_LEADS}

# Physical units in a WFDB header -> factor to millivolts.
# Storage formats wfdb reads, and their bytes per sample (FLAC-compressed formats have none).
_FORMATS = ("8", "16", "24", "32", "61", "80", "160", "212", "310", "311", "508", "516", "524")
_BYTES_PER_SAMPLE = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2, "212": 1.5, "310": 4 / 3,
                     "311": 4 / 3}
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

    The header is checked before any sample is read, so every damaged record
    fails with one :class:`RecordError` that names the file and what was
    expected: an empty, non-UTF-8 or non-ASCII header; a multi-segment record;
    no signals or a sample count of 0; an unknown storage format; a signal file
    named with a folder, ``..`` or an absolute path (it must be a plain file
    name in the record's folder); a missing or truncated signal file; an ADC
    gain of 0 (uncalibrated) when reading physical units; unknown units.

    Signals without a description (valid WFDB) are named ``"#k"`` (k-th
    channel), the name :func:`ssl_ecg.data.preprocess.select_leads` gives to
    positional selections.

    Multi-frequency records (a signal with more than one sample per frame) are
    read at their true rates, and every channel is resampled
    (``scipy.signal.resample_poly``) to the fastest channel's rate
    ``fs * max(samps_per_frame)``, which becomes ``Record.fs``; the fastest
    channels are returned unchanged.

    Args:
        path: record path without extension, as in ``wfdb.rdrecord``.
        record_id: identifier to store; defaults to the header's record name.
        patient_id: patient identifier; defaults to the record id.
        adc_unit_mv: if given, ignore the header gains and read the digital values
            as ``(adu - baseline) * adc_unit_mv`` millivolts. Needed for databases
            whose gains are not physical (LUDB stores each lead's peak-to-peak as
            its gain; its digital values are microvolts, ``adc_unit_mv=1e-3``).

    Raises:
        RecordError: the header or signal files are missing, unreadable or
            inconsistent (see above); the message starts with the file's path.
    """
    path = _strip_extension(str(path))
    header = path + ".hea"
    if not os.path.isfile(header):
        raise RecordError(f"{header}: record header not found (expected a WFDB .hea file)")
    zero_gain = _scan_header(header)
    try:
        head = wfdb.rdheader(path)
    except Exception as exc:  # wfdb raises many types for malformed headers
        raise RecordError(f"{header}: cannot parse WFDB header ({type(exc).__name__}: {exc})") from exc
    if isinstance(head, wfdb.MultiRecord) or getattr(head, "n_seg", None):
        raise RecordError(f"{header}: multi-segment record; expected a single-segment WFDB record")
    _check_signal_files(header, head)
    names = [str(n).strip() if n is not None and str(n).strip() else f"#{i}"
             for i, n in enumerate(head.sig_name or [None] * head.n_sig)]
    if adc_unit_mv is None and zero_gain:
        i = zero_gain[0]
        raise RecordError(f"{header}: signal {i} ({names[i]!r}) has ADC gain 0 (uncalibrated amplitudes); expected a "
                          "non-zero gain in ADC units per physical unit, or read it with adc_unit_mv")
    if not head.fs or head.fs <= 0:
        raise RecordError(f"{header}: sampling frequency {head.fs!r} is not positive")
    spf = [int(s or 1) for s in (head.samps_per_frame or [1] * head.n_sig)]
    multi = max(spf) > 1
    try:
        rec = wfdb.rdrecord(path, physical=adc_unit_mv is None, smooth_frames=not multi)
    except Exception as exc:  # wfdb raises many types for corrupt files
        raise RecordError(f"{header}: cannot read WFDB record ({type(exc).__name__}: {exc})") from exc

    if adc_unit_mv is None:
        scale = []
        for name, unit in zip(names, rec.units or [""] * rec.n_sig):
            key = (unit or "").strip().lower()
            if key not in _UNIT_TO_MV:
                raise RecordError(f"{header}: lead {name!r} has unit {unit!r}; expected mV, uV or V")
            scale.append(_UNIT_TO_MV[key])
        channels = rec.e_p_signal if multi else (None if rec.p_signal is None else list(rec.p_signal.T))
        if channels is None:
            raise RecordError(f"{header}: wfdb returned no physical signal")
        channels = [np.asarray(c, dtype=np.float64) * s for c, s in zip(channels, scale)]
    else:
        digital = rec.e_d_signal if multi else list(rec.d_signal.T)
        invalid = _invalid_adu(rec)[0]
        channels = []
        for d, base, bad in zip(digital, rec.baseline, invalid):
            d = np.asarray(d, dtype=np.float64)
            channels.append(np.where(d == bad, np.nan, (d - float(base)) * adc_unit_mv))

    if len(channels) != head.n_sig:
        raise RecordError(f"{header}: header declares {head.n_sig} signals, data holds {len(channels)}")
    for i, (c, k) in enumerate(zip(channels, spf)):
        if head.sig_len is not None and c.shape[0] != head.sig_len * k:
            raise RecordError(f"{header}: signal {i} ({names[i]!r}): header declares {head.sig_len * k} samples, "
                              f"data holds {c.shape[0]}")
    if channels[0].shape[0] == 0:
        raise RecordError(f"{header}: record has no samples; expected a positive sample count")
    fs = float(head.fs)
    if multi:
        top = max(spf)
        channels = [c if k == top else _resample_channel(c, k, top) for c, k in zip(channels, spf)]
        fs *= top
    sig = np.stack(channels, axis=0)

    rid = record_id if record_id is not None else str(rec.record_name)
    return Record(
        signal=np.ascontiguousarray(sig, dtype=np.float32),
        fs=fs,
        leads=[canonical_lead(n) for n in names],
        record_id=rid,
        patient_id=patient_id if patient_id is not None else rid,
        path=str(Path(path)),
    )


def _strip_extension(path: str) -> str:
    for ext in (".hea", ".dat", ".mat"):
        if path.endswith(ext):
            return path[: -len(ext)]
    return path


def _resample_channel(channel: np.ndarray, spf: int, top: int) -> np.ndarray:
    """Resample a channel stored at ``spf`` samples per frame to ``top`` samples per frame."""
    return resample_poly(channel, top, spf)


def read_header_bytes(header: str | os.PathLike, limit: int = MAX_HEADER_BYTES) -> bytes:
    """The bytes of a header file, refused before reading when it is larger than ``limit``.

    Raises:
        RecordError: naming the file, its size and the cap, when it holds more than ``limit`` bytes
            (checked on the open file's size and again while reading, for a file that grows).
    """
    with open(header, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise RecordError(f"{header}: header is {size} bytes; expected a WFDB header of at most {limit} bytes "
                              "(MAX_HEADER_BYTES)")
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise RecordError(f"{header}: header is over {limit} bytes; expected a WFDB header of at most {limit} bytes "
                          "(MAX_HEADER_BYTES)")
    return raw


def _scan_header(header: str) -> list[int]:
    """Check a header's bytes and signal lines before wfdb parses it.

    wfdb decodes headers as ASCII and silently drops other bytes (a unit
    ``µV`` would become ``V``), substitutes 200 for a gain of 0 and follows any
    signal-file path. Returns the indices of the signals whose ADC gain is 0.
    """
    raw = read_header_bytes(header)
    if not raw.strip():
        raise RecordError(f"{header}: header is empty ({len(raw)} bytes); expected a WFDB record line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"{header}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
                          "expected an ASCII WFDB header") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise RecordError(f"{header}: no record line (only comments); expected a WFDB record line")
    for n, line in lines:
        if not line.isascii():
            char = next(c for c in line if not c.isascii())
            raise RecordError(f"{header}: line {n} holds the non-ASCII character {char!r}; expected ASCII "
                              "header fields (units 'uV', not 'µV')")
    record_fields = lines[0][1].split()
    if "/" in record_fields[0]:
        raise RecordError(f"{header}: multi-segment record ({record_fields[0]}); expected a single-segment record")
    _check_record_line(header, lines[0][0], record_fields)
    zero_gain = []
    for i, (n, line) in enumerate(lines[1:]):
        fields = line.split()
        check_signal_file_name(header, fields[0])
        if len(fields) > 1:
            fmt = re.split(r"[x:+]", fields[1], maxsplit=1)[0]
            if fmt not in _FORMATS:
                raise RecordError(f"{header}: line {n}: signal {i} has storage format {fields[1]!r}; expected one "
                                  f"of {', '.join(_FORMATS)}")
        if len(fields) > 2:
            gain = re.match(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", fields[2])
            if gain is not None and not np.isfinite(float(gain.group(0))):
                raise RecordError(f"{header}: line {n}: signal {i} has ADC gain {gain.group(0)!r}; expected a finite "
                                  "number of ADC units per physical unit")
            if gain is not None and float(gain.group(0)) == 0.0:
                zero_gain.append(i)
    return zero_gain


_FS_FIELD = re.compile(r"^((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:/[\d.eE+-]+)?(?:\(\S*\))?$")


def _check_record_line(header: str, n: int, fields: list[str]) -> None:
    """Signal count, sampling frequency and sample count as WFDB writes them (wfdb silently defaults bad ones).

    wfdb reads ``-250``, ``nan`` or a missing frequency as 250 Hz, ``1e400`` as 1 Hz, and ignores a
    negative sample count; ssl-ecg never assumes a rate, so each is refused by name.
    """
    if len(fields) < 2 or not fields[1].isdigit():
        raise RecordError(f"{header}: line {n}: signal count {fields[1] if len(fields) > 1 else None!r}; expected "
                          "a non-negative integer after the record name")
    if int(fields[1]) == 0:
        return  # no signals: refused with its own message after parsing
    match = _FS_FIELD.match(fields[2]) if len(fields) > 2 else None
    fs = float(match.group(1)) if match else None
    if fs is None or not np.isfinite(fs) or fs <= 0:
        raise RecordError(f"{header}: line {n}: sampling frequency {fields[2] if len(fields) > 2 else None!r}; "
                          "expected a positive finite number of samples per second per signal")
    if len(fields) > 3 and not fields[3].isdigit():
        raise RecordError(f"{header}: line {n}: sample count {fields[3]!r}; expected a non-negative integer")


def check_signal_file_name(header: str | os.PathLike, name: str) -> str:
    """Check that a header's signal-file name is a plain file name in the record's folder.

    Raises:
        RecordError: the name holds a path separator, is ``.``/``..`` or absolute.
    """
    if name in ("", ".", "..") or "/" in name or "\\" in name or os.path.isabs(name) or "\0" in name:
        raise RecordError(f"{header}: signal file {name!r} is not a plain file name; expected a file in the "
                          "record's own folder (no folders, '..' or absolute paths)")
    return name


def _check_signal_files(header: str, head: wfdb.Record) -> None:
    """Signal count, sample count, and that every signal file exists and holds the declared samples."""
    if not head.n_sig:
        raise RecordError(f"{header}: header declares no signals; expected at least one signal line")
    if head.sig_len == 0:
        raise RecordError(f"{header}: header declares 0 samples; expected a positive sample count")
    if len(head.file_name or []) != head.n_sig:
        raise RecordError(f"{header}: header declares {head.n_sig} signals but has {len(head.file_name or [])} "
                          "signal lines")
    folder = Path(header).parent
    spf = [int(s or 1) for s in (head.samps_per_frame or [1] * head.n_sig)]
    files: dict[str, list[int]] = {}
    for i, name in enumerate(head.file_name):
        files.setdefault(check_signal_file_name(header, name), []).append(i)
    for name, sigs in files.items():
        data = folder / name
        if not data.is_file():
            raise RecordError(f"{data}: signal file not found (named by header {header}); expected it beside "
                              "the header")
        home = Path(header).resolve().parent  # a header linked from elsewhere may keep its files beside it
        if _LINKED_BY_US.get() != str(folder) and data.resolve().parent != home:
            raise RecordError(f"{data}: signal file is a link to {data.resolve()}, outside the header's folder "
                              f"{home}; expected the record's files side by side (link the folder, "
                              "not single files)")
        fmt = str(head.fmt[sigs[0]])
        if head.sig_len is None or fmt not in _BYTES_PER_SAMPLE:
            continue
        offset = int((head.byte_offset or [None] * head.n_sig)[sigs[0]] or 0)
        expected = offset + int(np.ceil(head.sig_len * sum(spf[i] for i in sigs) * _BYTES_PER_SAMPLE[fmt]))
        size = data.stat().st_size
        if size < expected:
            raise RecordError(f"{data}: signal file is truncated: {size} bytes, but header {header} declares "
                              f"{head.sig_len} samples x {len(sigs)} signals in format {fmt}; expected at least "
                              f"{expected} bytes")


def _invalid_adu(rec: wfdb.Record) -> np.ndarray:
    """The per-lead digital value WFDB uses to mark missing samples."""
    fmt_min = {"8": -128, "16": -32768, "61": -32768, "80": -128, "160": -32768, "212": -2048,
               "310": -512, "311": -512, "24": -(2**23), "32": -(2**31)}
    return np.asarray([fmt_min.get(str(f), np.iinfo(np.int64).min) for f in rec.fmt])[None, :]


# The temporary folder whose signal-file links read_tolerant made (after checking their targets).
_LINKED_BY_US: contextvars.ContextVar[str | None] = contextvars.ContextVar("_LINKED_BY_US", default=None)

# A WFDB record line: name, signal count, sampling frequency (optionally /counter and (base)), sample count.
_RECORD_LINE = re.compile(r"^(\S+)\s+(\d+)\s+([\d.]+)(?:/[\d.]+)?(?:\(\S+\))?\s+(\d+)")


def read_tolerant(path: str | os.PathLike, record_id: str | None = None, patient_id: str | None = None) -> Record:
    """Read a WFDB record, falling back to a sanitised header when wfdb rejects the record line.

    Some headers (e.g. PhysioNet/CinC 2017's) carry a base time or date that
    wfdb's parser rejects although the signal description is valid. The
    fallback keeps only the record name, signal count, sampling frequency and
    sample count of the first line, writes that header beside links to the
    signal files in a temporary folder (removed on return, whatever happens),
    and reads it there with :func:`read_record`. Signal lines and samples are
    untouched; the dropped base time/date is not used by ssl-ecg.

    Signal files must be plain file names in the record's folder: a header
    naming ``../x.mat``, ``sub/x.mat`` or an absolute path is refused.

    Raises:
        RecordError: the record cannot be read either way (the plain
            :func:`read_record` error when the record line cannot be
            sanitised, else the error of the sanitised read, naming the
            record's real files), or the header names a signal file outside
            the record's folder.
    """
    path = _strip_extension(str(path))
    try:
        return read_record(path, record_id=record_id, patient_id=patient_id)
    except RecordError as first:
        header = Path(path + ".hea")
        if not header.is_file():
            raise
        try:
            lines = read_header_bytes(header).decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise first from None
        data_lines = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
        match = _RECORD_LINE.match(lines[data_lines[0]]) if data_lines else None
        if match is None:
            raise
        lines[data_lines[0]] = " ".join(match.group(1, 2, 3, 4))
        folder = Path(path).parent
        names = {check_signal_file_name(header, lines[i].split()[0]) for i in data_lines[1:]}
        name = Path(path).name
        with tempfile.TemporaryDirectory(prefix="ssl_ecg_hea_") as tmp:
            (Path(tmp) / f"{name}.hea").write_text("\n".join(lines) + "\n")
            for fname in sorted(names):
                real = folder / fname
                if real.is_file() and real.resolve().parent != header.resolve().parent:
                    raise RecordError(f"{real}: signal file is a link to {real.resolve()}, outside the header's "
                                      f"folder {header.resolve().parent}; expected the record's files side by side")
                if real.is_file() and not (Path(tmp) / fname).exists():
                    os.symlink(real.resolve(), Path(tmp) / fname)
            token = _LINKED_BY_US.set(str(Path(tmp)))  # our own links, checked above
            try:
                rec = read_record(Path(tmp) / name, record_id=record_id, patient_id=patient_id)
            except RecordError as second:
                # the sanitised header parses, so this is the record's real damage: report it at the real paths
                raise RecordError(str(second).replace(str(Path(tmp)), str(folder))) from None
            finally:
                _LINKED_BY_US.reset(token)
        rec.path = str(Path(path))
        return rec
