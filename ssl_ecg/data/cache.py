"""A memory-mapped record cache: preprocess once, then every segment read is a slice.

Layout of one cache folder ``<root>/<dataset>-<key16>/``:

- ``signals.f32``: all records' float32 samples, record after record, each
  record stored lead-major as (L, T_r);
- ``records.json``: the index table plus ``offset`` (in samples) and ``length``
  (T_r) per record;
- ``manifest.json``: the key, the preprocessing parameters, lead names, fs, and
  the counts of records dropped by the bad-lead policy.

The key hashes the dataset's source files (relative path, size, mtime) together
with the preprocessing parameters, so a changed file or parameter gives a new
folder. A build writes into a private temporary folder and renames it into
place; when two builds race, the loser discards its copy and opens the winner's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ssl_ecg.data.index import DatasetIndex
from ssl_ecg.data.preprocess import preprocess
from ssl_ecg.errors import DatasetError, RecordError

__all__ = ["CacheParams", "RecordCache", "open_cache", "cache_key"]

_SIGNALS, _RECORDS, _MANIFEST = "signals.f32", "records.json", "manifest.json"


@dataclass(frozen=True)
class CacheParams:
    """Preprocessing applied before caching (see :func:`ssl_ecg.data.preprocess.preprocess`)."""

    fs: float = 250.0
    leads: tuple[str, ...] | None = None
    normalization: str = "record"
    bad_lead_policy: str = "zero_lead"
    min_seconds: float = 0.0
    band: tuple[float | None, float | None] | None = None

    def as_dict(self) -> dict:
        return {"fs": self.fs, "leads": list(self.leads) if self.leads else None, "normalization": self.normalization,
                "bad_lead_policy": self.bad_lead_policy, "min_seconds": self.min_seconds,
                "band": list(self.band) if self.band else None}


def _source_files(index: DatasetIndex) -> list[Path]:
    files = []
    for path in index.table["path"]:
        for ext in (".hea", ".dat", ".mat", ".atr"):
            f = Path(str(path) + ext)
            if f.is_file():
                files.append(f)
    files += sorted(p for p in index.root.iterdir() if p.is_file() and (p.suffix == ".csv" or p.name == "RECORDS"))
    return files


def cache_key(index: DatasetIndex, params: CacheParams) -> str:
    """SHA-256 over the source files' (relative path, size, mtime) and the parameters."""
    h = hashlib.sha256()
    h.update(json.dumps({"dataset": index.name, "params": params.as_dict(), "version": 1}, sort_keys=True).encode())
    for f in _source_files(index):
        st = f.stat()
        h.update(f"{f.relative_to(index.root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(",".join(map(str, index.table["record_id"])).encode())
    return h.hexdigest()


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
        folder = Path(folder)
        for name in (_SIGNALS, _RECORDS, _MANIFEST):
            if not (folder / name).is_file():
                raise DatasetError(f"{folder}: not a complete record cache (missing {name})")
        manifest = json.loads((folder / _MANIFEST).read_text())
        table = pd.DataFrame(json.loads((folder / _RECORDS).read_text()))
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


def open_cache(index: DatasetIndex, root: str | os.PathLike, params: CacheParams = CacheParams(),
               rebuild: bool = False) -> RecordCache:
    """Open the cache of ``index`` under ``root`` for ``params``, building it if needed."""
    root = Path(root)
    key = cache_key(index, params)
    folder = root / f"{index.name}-{key[:16]}"
    if folder.is_dir() and not rebuild:
        cache = RecordCache.load(folder)
        if cache.manifest.get("key") == key:
            return cache
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _build(index, params, key, tmp)
        if rebuild and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / _MANIFEST).is_file():  # not a finished rival build: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return RecordCache.load(folder)


def _build(index: DatasetIndex, params: CacheParams, key: str, out: Path) -> None:
    out.mkdir(parents=True)
    rows, offset, short, leads = [], 0, 0, None
    stats: dict = {}
    min_len = int(round(params.min_seconds * params.fs))
    with open(out / _SIGNALS, "wb") as f:
        for i in range(len(index)):
            rec = preprocess(index.read(i), fs=params.fs, leads=params.leads, normalization=params.normalization,
                             bad_lead_policy=params.bad_lead_policy, band=params.band, stats=stats)
            if rec is None:
                continue
            if rec.n_samples < min_len:
                short += 1
                continue
            if leads is None:
                leads = rec.leads
            elif rec.leads != leads:
                raise DatasetError(f"{rec.path}: leads {rec.leads} differ from the first record's {leads}; "
                                   "pass leads= to select a common set")
            f.write(np.ascontiguousarray(rec.signal, dtype=np.float32).tobytes())
            row = index.table.iloc[i].to_dict()
            row.update(offset=offset, length=rec.n_samples)
            rows.append(row)
            offset += rec.signal.size
    dropped = stats.get("dropped_records", 0)
    if not rows:
        raise DatasetError(f"{index.name} at {index.root}: no records left after preprocessing "
                           f"({dropped} dropped by the bad-lead policy, {short} shorter than {params.min_seconds} s)")
    (out / _RECORDS).write_text(json.dumps(rows, default=_jsonable))
    manifest = {"key": key, "dataset": index.name, "root": str(index.root), "params": params.as_dict(),
                "leads": leads, "n_records": len(rows), "dropped_bad_leads": dropped,
                "zeroed_leads": stats.get("zeroed_leads", 0), "dropped_short": short}
    (out / _MANIFEST).write_text(json.dumps(manifest, indent=2))


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
