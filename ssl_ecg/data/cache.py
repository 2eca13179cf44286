"""A memory-mapped record cache: preprocess once, then every segment read is a slice.

Layout of one cache folder ``<root>/<dataset>-<key16>/``:

- ``signals.f32``: all records' float32 samples, record after record, each
  record stored lead-major as (L, T_r);
- ``records.json``: the index table plus ``offset`` (in samples), ``length``
  (T_r) and ``fingerprint`` (see :func:`record_fingerprint`) per record;
- ``files.json``: every source file the build read, as ``[relative path, size,
  mtime_ns, ctime_ns, inode, blake2b]``, and the signal files named by headers;
- ``manifest.json``: the content key, the stat key, the preprocessing
  parameters, lead names, fs, the bad-lead policy's counts (leads zeroed,
  records dropped, non-finite samples), and the records skipped as unreadable
  (with their reasons).

Source files. The build reads, and the key covers:

- each record's ``.hea``, ``.dat``, ``.mat`` and ``.atr`` file next to the
  index's ``path``, and any other signal file a WFDB header names;
- every label or metadata file under the dataset root at any depth:
  ``*.csv``, ``*.tsv``, ``*.json`` and ``RECORDS``. The index does not list
  the label files its adapter read, so the root is walked for them (hidden
  folders and a cache root inside the dataset root are skipped).

Keys. The content key (the folder name) is a SHA-256 over the cache format
version, the dataset name, the record ids, the canonical preprocessing
parameters (``fs=100`` and ``fs=100.0`` give one key) and each source file's
relative path and blake2b hash. Hashing a whole dataset costs a full read, so
:func:`open_cache` first compares a stat key: a hash of ``(size, mtime_ns,
ctime_ns, inode)`` of every source file. ``cp -p`` and ``rsync -a`` restore a
file's size and mtime but cannot restore its ctime (nor keep its inode when
they replace it), so any rewrite changes the stat key. Then only the files
whose stat changed are re-hashed: if the content key is unchanged the cache is
reused and its stat record refreshed, else a new cache is built.
``verify=True`` (``ssl-ecg cache build --verify``) re-hashes every file
whatever the stat says.

Builds. A build writes into a temporary folder ``.<final name>.tmp-<host>-<pid>-<random>``
next to the final one and renames it into place; when two builds race, the
loser discards its copy and opens the winner's. A killed build cannot be
resumed, so :func:`open_cache` removes the temporary folders of this host whose
process is no longer alive (:func:`remove_orphaned_builds`). A folder found
corrupt on open (a truncated ``signals.f32``, unparsable JSON) is rebuilt with
a warning; :meth:`RecordCache.load` on its own raises a :class:`DatasetError`
naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from numbers import Real
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from ssl_ecg.data.index import _BUILDERS, DATASETS, DatasetIndex
from ssl_ecg.data.preprocess import preprocess
from ssl_ecg.data.record import Record, canonical_lead
from ssl_ecg.errors import ConfigError, DatasetError, RecordError, check_choice

__all__ = ["CacheParams", "RecordCache", "CachePool", "open_cache", "cache_key", "source_files",
           "remove_orphaned_builds", "record_fingerprint", "CACHE_FORMAT", "keyed_patient_id", "patient_prefixes"]

# 3: records.json carries each record's signal fingerprint; the manifest counts non-finite samples.
CACHE_FORMAT = 3
_SIGNALS, _RECORDS, _MANIFEST, _FILES = "signals.f32", "records.json", "manifest.json", "files.json"
_RECORD_EXTS = (".hea", ".dat", ".mat", ".atr")
_LABEL_SUFFIXES = (".csv", ".tsv", ".json")
_LABEL_NAMES = ("RECORDS",)
_NORMALIZATIONS = ("record", "lead", "none")
_BAD_LEAD_POLICIES = ("error", "zero_lead", "drop_record")
_TMP_RE = re.compile(r"^\.(?P<final>.+)\.tmp-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-[0-9a-f]{8}$")
_HASH_CHUNK = 1 << 20

# (relative path, size, mtime_ns, ctime_ns, inode)
_Stat = tuple[str, int, int, int, int]


def _finite(key: str, value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ConfigError(f"CacheParams.{key}: expected {what}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class CacheParams:
    """Preprocessing applied before caching (see :func:`ssl_ecg.data.preprocess.preprocess`).

    Attributes:
        fs: target sampling rate in Hz (> 0, finite); stored as a float, so
            ``100`` and ``100.0`` share one cache.
        leads: lead names to keep, in order (non-empty, no case-insensitive
            duplicates), or ``None`` for all.
        normalization: ``"record"``, ``"lead"`` or ``"none"``.
        bad_lead_policy: ``"error"``, ``"zero_lead"`` or ``"drop_record"``.
        min_seconds: records shorter than this are left out (>= 0).
        band: ``(low, high)`` cut-offs in Hz, either ``None``, applied after
            resampling, so each must lie in (0, fs / 2) and low < high.
        skip_bad_records: skip records that cannot be read or preprocessed
            (each listed with its file and reason in the manifest's
            ``skipped``) instead of stopping the build at the first. This
            includes bad leads under ``bad_lead_policy="error"`` and records
            whose leads differ from the first record's. Part of the key, since
            it changes which records are stored.

    Raises:
        ConfigError: a field is invalid; the message names it.
    """

    fs: float = 250.0
    leads: tuple[str, ...] | None = None
    normalization: str = "record"
    bad_lead_policy: str = "zero_lead"
    min_seconds: float = 0.0
    band: tuple[float | None, float | None] | None = None
    skip_bad_records: bool = False

    def __post_init__(self) -> None:
        fs = _finite("fs", self.fs, "a positive finite sampling rate in Hz")
        if fs <= 0:
            raise ConfigError(f"CacheParams.fs: expected a positive finite sampling rate in Hz, got {self.fs!r}")
        object.__setattr__(self, "fs", fs)
        check_choice("CacheParams.normalization", self.normalization, _NORMALIZATIONS)
        check_choice("CacheParams.bad_lead_policy", self.bad_lead_policy, _BAD_LEAD_POLICIES)
        min_seconds = _finite("min_seconds", self.min_seconds, "a finite number of seconds >= 0")
        if min_seconds < 0:
            raise ConfigError(f"CacheParams.min_seconds: expected a finite number of seconds >= 0, "
                              f"got {self.min_seconds!r}")
        object.__setattr__(self, "min_seconds", min_seconds)
        object.__setattr__(self, "leads", self._checked_leads())
        object.__setattr__(self, "band", self._checked_band(fs))
        if not isinstance(self.skip_bad_records, (bool, np.bool_)):
            raise ConfigError(f"CacheParams.skip_bad_records: expected true or false, got {self.skip_bad_records!r}")
        object.__setattr__(self, "skip_bad_records", bool(self.skip_bad_records))

    def _checked_leads(self) -> tuple[str, ...] | None:
        leads = self.leads
        if leads is None:
            return None
        if isinstance(leads, str) or not isinstance(leads, Sequence):
            raise ConfigError(f"CacheParams.leads: expected a list of lead names, got {leads!r}")
        if len(leads) == 0:
            raise ConfigError("CacheParams.leads: expected at least one lead name (or None for all), got []")
        bad = [name for name in leads if not isinstance(name, str) or not name.strip()]
        if bad:
            raise ConfigError(f"CacheParams.leads: expected non-empty strings, got {bad!r} in {list(leads)!r}")
        seen: dict[str, str] = {}
        for name in leads:
            low = name.strip().lower()
            if low in seen:
                raise ConfigError(f"CacheParams.leads: {name!r} duplicates {seen[low]!r} (names are matched "
                                  f"case-insensitively) in {list(leads)!r}")
            seen[low] = name
        return tuple(leads)

    def _checked_band(self, fs: float) -> tuple[float | None, float | None] | None:
        band = self.band
        if band is None:
            return None
        if isinstance(band, str) or not isinstance(band, Sequence) or len(band) != 2:
            raise ConfigError(f"CacheParams.band: expected (low, high) in Hz, either None, got {band!r}")
        nyq = fs / 2
        cut: list[float | None] = []
        for side, value in zip(("low", "high"), band):
            if value is None:
                cut.append(None)
                continue
            hz = _finite("band", value, f"{side} cut-off in (0, {nyq:g}) Hz")
            if not 0 < hz < nyq:
                raise ConfigError(f"CacheParams.band: {side} cut-off {value!r} Hz must lie in (0, {nyq:g}) "
                                  f"at fs = {fs:g} Hz")
            cut.append(hz)
        if cut[0] is None and cut[1] is None:
            return None  # no filter: the same arrays as band=None
        if cut[0] is not None and cut[1] is not None and cut[0] >= cut[1]:
            raise ConfigError(f"CacheParams.band: low cut-off {cut[0]:g} Hz must be below high {cut[1]:g} Hz")
        return (cut[0], cut[1])

    def as_dict(self) -> dict:
        return {"fs": self.fs, "leads": list(self.leads) if self.leads else None, "normalization": self.normalization,
                "bad_lead_policy": self.bad_lead_policy, "min_seconds": self.min_seconds,
                "band": list(self.band) if self.band else None, "skip_bad_records": self.skip_bad_records}

    def key_dict(self) -> dict:
        """:meth:`as_dict` with lead names in the spelling :func:`select_leads` matches them by."""
        d = self.as_dict()
        if self.leads:
            d["leads"] = [name if name.startswith("#") else canonical_lead(name) for name in self.leads]
        return d


# ----------------------------------------------------------------------------------------------------------------
# Record fingerprints

_I32 = np.iinfo(np.int32)


def record_fingerprint(record: Record) -> str:
    """A hash of a record's signal as read, to find one recording stored under two ids or in two datasets.

    blake2b (16-byte digest, hex) over the record's shape, sampling rate and
    lead names (standard spelling, in the record's own order), then its samples
    quantised to integer microvolts: ``np.round(mV * 1000)`` as little-endian
    int32 (non-finite samples become the int32 minimum, values beyond the
    int32 range are clipped). Record id, patient id, path and labels are not
    part of it, so PTB-XL 145 and 463 (one signal under two patient ids) share a
    fingerprint, and so does a CinC copy of a PTB-XL record read at the same
    rate. The preprocessing (resampling, lead selection, normalisation) does not
    enter: the fingerprint is taken before it, so caches of one dataset at
    different parameters agree.

    Args:
        record: the record as its dataset's reader returns it (mV, (leads, time)).

    Returns:
        32 hex characters.
    """
    sig = np.asarray(record.signal, dtype=np.float64)
    finite = np.isfinite(sig)
    uv = np.where(finite, np.round(np.where(finite, sig, 0.0) * 1000.0), float(_I32.min))
    quantised = np.clip(uv, _I32.min, _I32.max).astype("<i4")
    head = {"shape": list(sig.shape), "fs": float(record.fs), "leads": [canonical_lead(str(n)) for n in record.leads]}
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(head, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    h.update(b"\0")
    h.update(np.ascontiguousarray(quantised).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Source files, stats and hashes


def _rel(path: str, root: str) -> str:
    prefix = root.rstrip(os.sep) + os.sep
    if path.startswith(prefix):  # the common case, ten times cheaper than relpath
        rel = path[len(prefix):]
    else:
        rel = os.path.relpath(path, root)
    return rel.replace(os.sep, "/") if os.sep != "/" else rel


def source_files(index: DatasetIndex, exclude: str | os.PathLike | None = None) -> dict[str, str]:
    """The files a cache build of ``index`` reads, by path relative to ``index.root``.

    Record files: ``<path>.hea/.dat/.mat/.atr`` for each row's ``path``. Label
    and metadata files: ``*.csv``, ``*.tsv``, ``*.json`` and ``RECORDS`` at
    any depth under the root (hidden folders skipped, linked folders followed
    once). Signal files named in
    headers under other names are added by :func:`open_cache` from the hashes.

    Args:
        index: the dataset index.
        exclude: a folder to leave out of the walk (the cache root, when it lies
            inside the dataset root).

    Returns:
        Relative path (``/``-separated) -> absolute path, as strings.
    """
    root = os.path.abspath(index.root)
    skip = os.path.realpath(exclude) if exclude is not None else None
    # A cache root that is the dataset root itself: skip its cache folders instead.
    cache_dir = re.compile(rf"{re.escape(index.name)}-[0-9a-f]{{16}}") if skip == os.path.realpath(root) else None
    listing: dict[str, set[str]] = {}
    found: dict[str, str] = {}
    visited = {os.path.realpath(root)}
    stack = [root]
    while stack:
        folder = stack.pop()
        names = set()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise DatasetError(f"{folder}: cannot list the dataset folder ({exc})") from exc
        for entry in entries:
            names.add(entry.name)
            if entry.is_dir():
                if entry.name.startswith("."):
                    continue
                if skip is not None and entry.name == os.path.basename(skip) and os.path.realpath(entry.path) == skip:
                    continue
                if cache_dir is not None and folder == root and cache_dir.fullmatch(entry.name):
                    continue
                if entry.is_symlink():  # follow linked folders once (no loops)
                    real = os.path.realpath(entry.path)
                    if real in visited:
                        continue
                    visited.add(real)
                stack.append(entry.path)
            elif entry.name in _LABEL_NAMES or entry.name.lower().endswith(_LABEL_SUFFIXES):
                found[_rel(entry.path, root)] = entry.path
        listing[folder] = names
    prefixes: dict[str, str] = {}  # folder -> its relative path + "/"
    for path in index.table["path"].tolist():
        path = str(path)
        if not os.path.isabs(path):
            path = os.path.abspath(path)
        if path.endswith((".hea", ".dat", ".mat")):
            path = path[:-4]
        folder, stem = os.path.split(path)
        if folder not in listing:
            try:
                listing[folder] = set(os.listdir(folder))
            except OSError:
                listing[folder] = set()
        if folder not in prefixes:
            prefixes[folder] = "" if folder == root else _rel(folder, root) + "/"
        names, prefix = listing[folder], prefixes[folder]
        for ext in _RECORD_EXTS:
            name = stem + ext
            if name in names:
                found[prefix + name] = folder + os.sep + name
    return found


def _stat_all(files: dict[str, str]) -> list[_Stat]:
    out = []
    for rel in sorted(files):
        try:
            st = os.stat(files[rel])
        except OSError as exc:
            raise DatasetError(f"{files[rel]}: source file vanished or unreadable while checking the cache "
                               f"({exc})") from exc
        out.append((rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return out


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _stat_key(params_key: str, stats: Iterable[_Stat]) -> str:
    return _digest(params_key, "\n", "\n".join(f"{r}\0{s}\0{m}\0{c}\0{i}" for r, s, m, c, i in stats))


def _content_key(params_key: str, hashes: dict[str, str]) -> str:
    return _digest(params_key, "\n", "\n".join(f"{r}\0{hashes[r]}" for r in sorted(hashes)))


def _params_key(index: DatasetIndex, params: CacheParams) -> str:
    ids = _digest("\n".join(map(str, index.table["record_id"].tolist())))
    head = {"format": CACHE_FORMAT, "dataset": index.name, "params": params.key_dict(), "records": ids}
    return _digest(json.dumps(head, sort_keys=True, separators=(",", ":")))


def _hash_file(path: str) -> str:
    h = hashlib.blake2b(digest_size=32)
    buf = bytearray(_HASH_CHUNK)
    view = memoryview(buf)
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the source file to hash it ({exc})") from exc
    return h.hexdigest()


def _header_signal_files(header: str) -> list[str]:
    """Signal file names in a single-segment WFDB header (other than ``~``)."""
    try:
        with open(header, errors="replace") as f:
            lines = [ln.strip() for ln in f.read().splitlines()]
    except OSError:
        return []
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        return []
    head = lines[0].split()
    if len(head) < 2 or "/" in head[0] or not head[1].isdigit():
        return []  # malformed or multi-segment: wfdb reports it when the record is read
    names = []
    for line in lines[1:1 + int(head[1])]:
        name = line.split()[0]
        if name != "~" and name not in names:
            names.append(name)
    return names


@dataclass
class _Sources:
    """The source files of one open: stats, content hashes and header-named signal files."""

    paths: dict[str, str]
    stats: list[_Stat]
    hashes: dict[str, str]
    refs: dict[str, list[str]]  # header rel path -> rel paths of its signal files not found by extension
    rehashed: int = 0


def _hash_sources(index: DatasetIndex, files: dict[str, str], known: dict[_Stat, str],
                  known_refs: dict[_Stat, list[str]], workers: int = 4) -> _Sources:
    """Hash every file whose (path, stat) is not in ``known``; follow header-named signal files."""
    root = os.path.abspath(index.root)
    files = dict(files)
    hashes: dict[str, str] = {}
    refs: dict[str, list[str]] = {}
    stats_by_rel: dict[str, _Stat] = {}
    rehashed = 0
    todo = files
    with ThreadPoolExecutor(max_workers=max(1, min(workers, os.cpu_count() or 1))) as pool:
        while todo:
            stats = _stat_all(todo)
            fresh = [s for s in stats if s not in known]
            for s, h in zip(fresh, pool.map(lambda s: _hash_file(files[s[0]]), fresh)):
                hashes[s[0]] = h
            rehashed += len(fresh)
            new: dict[str, str] = {}
            for s in stats:
                stats_by_rel[s[0]] = s
                if s in known:
                    hashes[s[0]] = known[s]
                if not s[0].endswith(".hea"):
                    continue
                if s in known:
                    named = known_refs.get(s, [])
                else:
                    folder = os.path.dirname(files[s[0]])
                    named = [_rel(os.path.join(folder, n), root) for n in _header_signal_files(files[s[0]])]
                    named = [r for r in named if r not in files]
                    named = [r for r in named if os.path.isfile(os.path.join(root, r))]
                if named:
                    refs[s[0]] = named
                    for r in named:
                        if r not in files:
                            new[r] = os.path.join(root, r)
            files.update(new)
            todo = new
    return _Sources(files, [stats_by_rel[r] for r in sorted(stats_by_rel)], hashes, refs, rehashed)


def cache_key(index: DatasetIndex, params: CacheParams, exclude: str | os.PathLike | None = None) -> str:
    """The content key: SHA-256 over the format version, dataset, record ids, parameters and file hashes.

    Reads and hashes every source file (see :func:`source_files`).
    """
    src = _hash_sources(index, source_files(index, exclude), {}, {})
    return _content_key(_params_key(index, params), src.hashes)


# ----------------------------------------------------------------------------------------------------------------
# Reading a cache folder


def _read_json(path: Path, kind: type):
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable or not valid JSON ({exc}); delete the cache folder or rebuild it "
                           "(open_cache(..., rebuild=True), ssl-ecg cache build --rebuild)") from exc
    if not isinstance(value, kind):
        raise DatasetError(f"{path}: expected a JSON {kind.__name__}, found a {type(value).__name__}; delete the "
                           "cache folder or rebuild it")
    return value


@dataclass
class RecordCache:
    """Read access to a built cache folder. Safe to pickle into DataLoader workers."""

    folder: Path
    table: pd.DataFrame
    manifest: dict
    _memmap: np.memmap | None = field(default=None, repr=False)
    _pid: int = field(default=-1, repr=False)

    def __post_init__(self):
        # Plain arrays: a pandas lookup per read would cost more than the read itself.
        self._offsets = self.table["offset"].to_numpy(dtype=np.int64)
        self._lengths = self.table["length"].to_numpy(dtype=np.int64)
        self._n_leads = len(self.manifest["leads"])

    @classmethod
    def load(cls, folder: str | os.PathLike) -> RecordCache:
        """Open a built cache folder, checking that its files agree with each other.

        Raises:
            DatasetError: a file is missing, is not valid JSON, lacks a field, or
                ``signals.f32`` does not hold exactly the bytes that ``records.json``
                describes (a truncated copy); the message names the file.
        """
        folder = Path(folder)
        for name in (_SIGNALS, _RECORDS, _MANIFEST):
            if not (folder / name).is_file():
                raise DatasetError(f"{folder}: not a complete record cache (missing {name})")
        manifest = _read_json(folder / _MANIFEST, dict)
        missing = [k for k in ("leads", "params") if k not in manifest]
        if missing or not isinstance(manifest.get("leads"), list) or not manifest["leads"]:
            raise DatasetError(f"{folder / _MANIFEST}: missing or malformed fields {missing or ['leads']}; "
                               "expected a manifest written by open_cache")
        rows = _read_json(folder / _RECORDS, list)
        try:
            table = pd.DataFrame(rows)
            offsets = table["offset"].to_numpy(dtype=np.int64)
            lengths = table["length"].to_numpy(dtype=np.int64)
        except (KeyError, ValueError, TypeError) as exc:
            raise DatasetError(f"{folder / _RECORDS}: expected a list of records with integer 'offset' and "
                               f"'length' ({type(exc).__name__}: {exc})") from exc
        n_leads = len(manifest["leads"])
        expected_n = manifest.get("n_records", len(table))
        if len(table) != expected_n or len(table) == 0:
            raise DatasetError(f"{folder / _RECORDS}: {len(table)} records, expected {expected_n} "
                               f"(from {_MANIFEST})")
        sizes = n_leads * lengths
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        if (lengths <= 0).any() or not np.array_equal(offsets, starts):
            bad = int(np.flatnonzero((offsets != starts) | (lengths <= 0))[0])
            raise DatasetError(f"{folder / _RECORDS}: record {bad} has offset {offsets[bad]} and length "
                               f"{lengths[bad]}, expected offset {starts[bad]} and a positive length")
        expected = 4 * int(sizes.sum())
        actual = (folder / _SIGNALS).stat().st_size
        if actual != expected:
            raise DatasetError(f"{folder / _SIGNALS}: {actual} bytes, expected {expected} bytes ({len(table)} records "
                               f"x {n_leads} leads of float32 per {_RECORDS}); the file is truncated or corrupt: "
                               "delete the cache folder or rebuild it (ssl-ecg cache build --rebuild)")
        return cls(folder, table, manifest)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_memmap"], state["_pid"] = None, -1  # each worker reopens its own map
        return state

    @property
    def signals(self) -> np.memmap:
        if self._memmap is None or self._pid != os.getpid():
            self._memmap = np.memmap(self.folder / _SIGNALS, dtype=np.float32, mode="r")
            self._pid = os.getpid()
        return self._memmap

    @property
    def n_leads(self) -> int:
        return self._n_leads

    @property
    def fs(self) -> float:
        return float(self.manifest["params"]["fs"])

    def __len__(self) -> int:
        return len(self.table)

    def record(self, i: int) -> np.ndarray:
        """Record ``i`` as a read-only (L, T) view."""
        off, length = self._offsets[i], self._lengths[i]
        return self.signals[off:off + self._n_leads * length].reshape(self._n_leads, length)

    def segment(self, i: int, start: int, length: int) -> np.ndarray:
        """Samples ``start:start + length`` of record ``i`` as an (L, length) view."""
        rec_len = self._lengths[i]
        if start < 0 or start + length > rec_len:
            raise RecordError(f"record {self.table.at[i, 'record_id']}: segment {start}:{start + length} is outside "
                              f"its {rec_len} samples")
        return self.record(i)[:, start:start + length]


#: Dataset prefixes a patient id may already carry besides the registered adapters' names: PTB (the PTB
#: Diagnostic database, whose patients CinC 2020/2021 hold as ``ptb:patientNNN``).
EXTRA_PATIENT_PREFIXES = ("ptb",)


def patient_prefixes() -> frozenset[str]:
    """The dataset names a patient key may start with: the registered adapters' and :data:`EXTRA_PATIENT_PREFIXES`."""
    return frozenset(DATASETS) | frozenset(_BUILDERS) | frozenset(EXTRA_PATIENT_PREFIXES)


def keyed_patient_id(dataset: str, patient_id: str) -> str:
    """``"<dataset>:<patient id>"``, unless the id already carries a dataset prefix.

    An id such as CinC's ``"ptbxl:123"``, ``"incart:7"`` or ``"ptb:patient001"`` names its source dataset's patient
    and is kept as it is, so the same patient has one key in every dataset that holds its records (CinC 2021's copy
    of a PTB-XL patient and PTB-XL's own records both key as ``"ptbxl:123"``).
    """
    pid = str(patient_id).strip()
    head, sep, _ = pid.partition(":")
    if sep and head.lower() in patient_prefixes():
        return pid
    return f"{str(dataset).strip().lower()}:{pid}"


class CachePool:
    """Several record caches read as one: the :class:`RecordCache` read interface over their concatenation.

    Rows follow the members in order, each member's rows in its own order. The
    members must hold the same leads (names and order) at the same rate: build
    them with one :class:`CacheParams` whose ``leads`` names a common set.
    Safe to pickle into DataLoader workers (each member reopens its own map).

    Attributes:
        members: the member caches.
        names: their dataset names (unique).
        table: the members' tables concatenated, with a ``dataset`` column, the
            member's own patient id in ``source_patient_id``, and ``patient_id``
            set to the patient key ``"<dataset>:<patient id>"``, so that code
            grouping records by ``patient_id`` (samplers, patient-aware losses)
            never merges LUDB "100" with MIT-BIH "100".
        manifest: ``key`` (a hash of the member keys, in order), ``dataset``
            (the names joined by ``+``), ``leads``, ``params``, ``n_records`` and
            ``members`` (each member's dataset, folder and key).

    Raises:
        ConfigError: no member, a dataset name given twice, or members whose
            leads or rates differ (the message names them).
    """

    def __init__(self, members: Sequence[RecordCache], names: Sequence[str] | None = None):
        members = list(members)
        if not members:
            raise ConfigError("CachePool: expected at least one member cache, got none")
        names = [str(m.manifest.get("dataset", f"member{k}")) for k, m in enumerate(members)] if names is None \
            else [str(n) for n in names]
        if len(names) != len(members):
            raise ConfigError(f"CachePool: {len(names)} names {names} for {len(members)} member caches")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"CachePool: dataset {dup[0]!r} is given twice; expected each dataset once in a pool")
        leads = [list(m.manifest["leads"]) for m in members]
        if any(lead != leads[0] for lead in leads):
            shown = "; ".join(f"{n}: {lead}" for n, lead in zip(names, leads))
            raise ConfigError(f"CachePool: the member caches hold different leads ({shown}); expected one lead set: "
                              "set leads= to a set every dataset has")
        rates = [m.fs for m in members]
        if any(r != rates[0] for r in rates):
            shown = ", ".join(f"{n}: {r:g} Hz" for n, r in zip(names, rates))
            raise ConfigError(f"CachePool: the member caches have different rates ({shown}); expected one fs")
        self.members, self.names = members, names
        tables = []
        for k, (name, m) in enumerate(zip(names, members)):
            t = m.table.copy()
            source = t["patient_id"].astype(str)
            t.insert(0, "dataset", name)
            t["source_patient_id"] = source
            t["patient_id"] = [keyed_patient_id(name, p) for p in source]
            tables.append(t)
        self.table = pd.concat(tables, ignore_index=True, sort=False)
        self._member = np.concatenate([np.full(len(m), k, dtype=np.int64) for k, m in enumerate(members)])
        self._row = np.concatenate([np.arange(len(m), dtype=np.int64) for m in members])
        keys = [str(m.manifest.get("key", "")) for m in members]
        self.manifest = {"key": _digest("\n".join(f"{n}\0{k}" for n, k in zip(names, keys))),
                         "dataset": "+".join(names), "leads": leads[0], "params": dict(members[0].manifest["params"]),
                         "n_records": len(self.table),
                         "members": [{"dataset": n, "folder": str(m.folder), "key": k}
                                     for n, m, k in zip(names, members, keys)]}

    @property
    def n_leads(self) -> int:
        return self.members[0].n_leads

    @property
    def fs(self) -> float:
        return self.members[0].fs

    def __len__(self) -> int:
        return len(self._row)

    def record(self, i: int) -> np.ndarray:
        """Record ``i`` (row of :attr:`table`) as a read-only (L, T) view."""
        return self.members[self._member[i]].record(int(self._row[i]))

    def segment(self, i: int, start: int, length: int) -> np.ndarray:
        """Samples ``start:start + length`` of record ``i`` as an (L, length) view."""
        return self.members[self._member[i]].segment(int(self._row[i]), start, length)


# ----------------------------------------------------------------------------------------------------------------
# Temporary folders


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname() or "host")


def _temp_folder(root: Path, final_name: str) -> Path:
    return root / f".{final_name}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there: never judge, keep the folder
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else (or cannot be asked): keep its folder
    return True


def remove_orphaned_builds(root: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders of killed builds under a cache root.

    A build writes ``.<name>.tmp-<host>-<pid>-<random>`` and renames it into
    place when complete; builds cannot be resumed, so a temporary folder whose
    process has ended is garbage. Only folders of this host whose pid is not
    alive (``os.kill(pid, 0)`` finds no process) are removed: those of a running
    build, of this process, or of another host (on a shared file system) are
    kept. A pid reused by an unrelated process keeps its folder until that
    process ends too.

    Returns:
        The folders removed.
    """
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    host, me = _host(), os.getpid()
    for entry in os.scandir(root):
        match = _TMP_RE.match(entry.name)
        if not match or not entry.is_dir(follow_symlinks=False) or match["host"] != host:
            continue
        pid = int(match["pid"])
        if pid == me or _pid_alive(pid):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            removed.append(Path(entry.path))
    return removed


def _discard(folder: Path) -> None:
    """Move a folder out of the way atomically, then delete it."""
    trash = _temp_folder(folder.parent, folder.name)
    try:
        os.rename(folder, trash)
    except OSError:
        return  # already gone (a rival discarded it)
    shutil.rmtree(trash, ignore_errors=True)


def _write_json_atomic(path: Path, value) -> None:
    part = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    part.write_text(json.dumps(value, indent=1 if path.name == _MANIFEST else None, default=_jsonable))
    os.replace(part, path)


# ----------------------------------------------------------------------------------------------------------------
# Opening


def _candidates(root: Path, dataset: str, params_key: str) -> list[tuple[Path, dict]]:
    """Finished cache folders under ``root`` for this dataset and parameters, with their manifests."""
    out = []
    for folder in sorted(root.glob(f"{dataset}-*")):
        try:
            manifest = json.loads((folder / _MANIFEST).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # corrupt: rebuilt when its content key comes up
        if isinstance(manifest, dict) and manifest.get("params_key") == params_key:
            out.append((folder, manifest))
    return out


def _stat_matches(index: DatasetIndex, params_key: str, base: dict[str, str],
                  found: Iterable[tuple[Path, dict]]) -> Iterator[tuple[Path, dict]]:
    """The candidates (of :func:`_candidates`) whose stored stat key equals the source files' stats now: the base
    files plus the header-named files each manifest lists (one ``stat`` per file, no hashing), in order."""
    base_key = None
    for folder, manifest in found:
        extra = {r: os.path.join(index.root, r) for r in manifest.get("header_files") or [] if r not in base}
        extra = {r: p for r, p in extra.items() if os.path.isfile(p)}
        if extra:
            key = _stat_key(params_key, _stat_all({**base, **extra}))
        else:
            base_key = base_key or _stat_key(params_key, _stat_all(base))
            key = base_key
        if manifest.get("stat_key") == key:
            yield folder, manifest


def _known_hashes(folders: Iterable[Path]) -> tuple[dict[_Stat, str], dict[_Stat, list[str]]]:
    known: dict[_Stat, str] = {}
    refs: dict[_Stat, list[str]] = {}
    for folder in folders:
        try:
            data = json.loads((folder / _FILES).read_text())
            stored_refs = data.get("refs", {})
            for rel, size, mtime, ctime, ino, digest in data["files"]:
                stat = (rel, size, mtime, ctime, ino)
                known[stat] = digest
                if rel in stored_refs:
                    refs[stat] = list(stored_refs[rel])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # unreadable record of hashes: those files are hashed again
    return known, refs


def _files_record(src: _Sources) -> dict:
    return {"files": [[*s, src.hashes[s[0]]] for s in src.stats], "refs": src.refs}


def _refresh(folder: Path, manifest: dict, src: _Sources, stat_key: str, others: list[tuple[Path, dict]]) -> None:
    """Store the current stats in a cache whose content matched, and unclaim the stat key elsewhere."""
    _write_json_atomic(folder / _FILES, _files_record(src))
    _write_json_atomic(folder / _MANIFEST, {**manifest, "stat_key": stat_key,
                                            "header_files": sorted({r for v in src.refs.values() for r in v})})
    _unclaim(others, folder, stat_key)


def _unclaim(others: list[tuple[Path, dict]], folder: Path, stat_key: str) -> None:
    """Clear ``stat_key`` from every other cache folder that claims it (best effort: unwritable ones stay)."""
    for other, m in others:
        if other != folder and m.get("stat_key") == stat_key:
            try:
                _write_json_atomic(other / _MANIFEST, {**m, "stat_key": None})
            except OSError:
                pass


def open_cache(index: DatasetIndex, root: str | os.PathLike, params: CacheParams = CacheParams(),
               rebuild: bool = False, verify: bool = False, skip_bad_records: bool | None = None) -> RecordCache:
    """Open the cache of ``index`` under ``root`` for ``params``, building it if needed.

    Open check: the stat key of the source files against each matching cache's
    manifest (one ``stat`` per file). On a mismatch the changed files are
    re-hashed: an unchanged content key reuses the cache and refreshes its stat
    record, else a new cache is built. See the module docstring.

    Args:
        index: the dataset index.
        root: the cache root folder (created if missing).
        params: preprocessing parameters.
        rebuild: build anew even if a matching cache exists (the old folder is
            replaced).
        verify: re-hash every source file instead of trusting unchanged stats.
        skip_bad_records: overrides ``params.skip_bad_records`` when given.

    Raises:
        RecordError: a record cannot be read or preprocessed (without
            ``skip_bad_records``); the message names its file.
        DatasetError: no record left, a source file changed during the build,
            or a source file cannot be read.
    """
    if skip_bad_records is not None:
        params = replace(params, skip_bad_records=bool(skip_bad_records))
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    remove_orphaned_builds(root)
    pkey = _params_key(index, params)
    base = source_files(index, exclude=root)
    found = _candidates(root, index.name, pkey)

    corrupt = None
    if not rebuild and not verify:
        for folder, _ in _stat_matches(index, pkey, base, found):
            try:
                return RecordCache.load(folder)
            except DatasetError as exc:
                warnings.warn(f"record cache {folder} is corrupt, rebuilding it: {exc}", stacklevel=2)
                corrupt = folder
                break

    known, known_refs = ({}, {}) if verify else _known_hashes(f for f, _ in found)
    src = _hash_sources(index, base, known, known_refs)
    key = _content_key(pkey, src.hashes)
    skey = _stat_key(pkey, src.stats)
    folder = root / f"{index.name}-{key[:16]}"

    replace_old = folder.is_dir()  # rebuild=True or a corrupt folder; a rival's later folder is kept
    if replace_old and not rebuild:
        try:
            cache = RecordCache.load(folder)
        except DatasetError as exc:
            if folder != corrupt:  # not warned about yet
                warnings.warn(f"record cache {folder} is corrupt, rebuilding it: {exc}", stacklevel=2)
        else:
            if cache.manifest.get("key") == key:
                _refresh(folder, cache.manifest, src, skey, found)
                return RecordCache.load(folder)
            warnings.warn(f"record cache {folder} has key {cache.manifest.get('key')!r}, expected {key!r} "
                          "(another format version); rebuilding it", stacklevel=2)
    tmp = _temp_folder(root, folder.name)
    try:
        _build(index, params, tmp, {"key": key, "params_key": pkey, "stat_key": skey, "format": CACHE_FORMAT}, src)
        before = set(src.stats)
        changed = [s[0] for s in _stat_all(src.paths) if s not in before]
        if changed:
            raise DatasetError(f"{src.paths[changed[0]]}: changed while the cache was being built "
                               f"({len(changed)} source files changed); build again")
        if replace_old:
            _discard(folder)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / _MANIFEST).is_file():  # not a finished rival build: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _unclaim(found, folder, skey)
    cache = RecordCache.load(folder)
    if cache.manifest.get("n_skipped"):
        first = cache.manifest["skipped"][0]
        warnings.warn(f"{index.name}: skipped {cache.manifest['n_skipped']} unreadable records (listed with their "
                      f"reasons in {folder / _MANIFEST}); first: {first['file']}: {first['reason']}", stacklevel=2)
    return cache


def _build(index: DatasetIndex, params: CacheParams, out: Path, keys: dict, src: _Sources) -> None:
    out.mkdir(parents=True)
    rows, offset, short, leads = [], 0, 0, None
    skipped: list[dict] = []
    stats: dict = {}
    min_len = int(round(params.min_seconds * params.fs))
    paths = index.table["path"] if "path" in index.table.columns else index.table["record_id"]
    with open(out / _SIGNALS, "wb") as f:
        for i in range(len(index)):
            where = str(paths.iloc[i])
            try:
                raw = index.read(i)
                fingerprint = record_fingerprint(raw)
                rec = preprocess(raw, fs=params.fs, leads=params.leads, normalization=params.normalization,
                                 bad_lead_policy=params.bad_lead_policy, band=params.band, stats=stats)
                if rec is not None and leads is not None and rec.leads != leads:
                    raise RecordError(f"{rec.path or where}: leads {rec.leads} differ from the first record's "
                                      f"{leads}; pass leads= to select a common set")
            except (RecordError, OSError, ValueError, EOFError) as exc:
                if isinstance(exc, DatasetError):
                    raise
                rid = index.table["record_id"].iloc[i]
                reason = str(exc) if isinstance(exc, RecordError) else f"{type(exc).__name__}: {exc}"
                if not params.skip_bad_records:
                    raise RecordError(f"{index.name} cache build stopped at record {rid} ({where}): {reason}; "
                                      f"pass skip_bad_records=True (ssl-ecg cache build --skip-bad-records) to "
                                      f"skip unreadable records") from exc
                skipped.append({"record_id": str(rid), "file": where, "reason": reason})
                continue
            if rec is None:
                continue
            if rec.n_samples < min_len:
                short += 1
                continue
            if leads is None:
                leads = rec.leads
            f.write(np.ascontiguousarray(rec.signal, dtype=np.float32).tobytes())
            row = index.table.iloc[i].to_dict()
            row.update(offset=offset, length=rec.n_samples, fingerprint=fingerprint)
            rows.append(row)
            offset += rec.signal.size
    dropped = stats.get("dropped_records", 0)
    if not rows:
        raise DatasetError(f"{index.name} at {index.root}: no records left after preprocessing "
                           f"({dropped} dropped by the bad-lead policy, {short} shorter than {params.min_seconds} s, "
                           f"{len(skipped)} skipped as unreadable"
                           + (f", first: {skipped[0]['file']}: {skipped[0]['reason']}" if skipped else "") + ")")
    (out / _RECORDS).write_text(json.dumps(rows, default=_jsonable))
    (out / _FILES).write_text(json.dumps(_files_record(src)))
    manifest = {**keys, "dataset": index.name, "root": str(index.root), "params": params.as_dict(),
                "leads": leads, "n_records": len(rows), "dropped_bad_leads": dropped,
                "zeroed_leads": stats.get("zeroed_leads", 0), "nonfinite_samples": stats.get("nonfinite_samples", 0),
                "dropped_short": short,
                "n_skipped": len(skipped), "skipped": skipped, "n_source_files": len(src.stats),
                "header_files": sorted({r for v in src.refs.values() for r in v})}
    (out / _MANIFEST).write_text(json.dumps(manifest, indent=1))


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def segment_starts(lengths: Sequence[int], window: int, generator: np.random.Generator) -> np.ndarray:
    """Uniform random window starts for records of the given lengths."""
    lengths = np.asarray(lengths)
    if (lengths < window).any():
        raise RecordError(f"window of {window} samples is longer than records of {int(lengths.min())} samples")
    return (generator.random(len(lengths)) * (lengths - window + 1)).astype(np.int64)
