"""A sharded record cache: int16/float16 records with per-lead scales in safetensors shards, read by memory map.

The single-file memmap (:mod:`ssl_ecg.data.cache`) holds float32 samples and a
pandas index that every DataLoader worker and rank unpickles; past ~1 M records
both the file and the per-worker index grow too large. This format stores the
same preprocessed records in shards of a fixed number of index rows, built in
parallel and resumably (:mod:`ssl_ecg.data.shard_build`), and reads them with
memory per worker that does not grow with the number of records.

Layout of one cache folder ``<root>/<dataset>-<key16>/``:

- ``shards/shard-NNNNNN.safetensors``: the records of index rows
  ``[N * shard_records, (N + 1) * shard_records)`` that survived preprocessing,
  as tensors ``signals`` (all samples, each record lead-major (L, T_r)
  flattened, in the storage dtype), ``scales`` (R, L) float32, ``offsets`` (R,)
  and ``lengths`` (R,) int64. A shard holds at most ``shard_records`` records,
  so it is at most ``shard_records * L * max T_r * 2`` bytes plus a header.
- ``shards/shard-NNNNNN.done.json``: written after its shard (atomically):
  the shard's byte size and blake2b, its record rows, skipped records and
  bad-lead counts. A shard without its marker is unfinished and is rebuilt.
- ``records.jsonl``: one index row per record (record and patient ids,
  labels, fingerprint, ``length``, ``shard``, ``row``), read only on request
  (:attr:`ShardCache.table`).
- ``lengths.npy``, ``patient_codes.npy`` (int64, one per record) and
  ``shard_starts.npy`` (the first record of each shard, then the total):
  memory-mapped by readers, so a DataLoader worker holds no per-record Python
  objects. Patient codes number the patient ids (as strings) by first
  appearance, as :func:`pandas.factorize` does for
  :class:`~ssl_ecg.data.dataset.CacheWindows`.
- ``patients.json``: the patient id of each code.
- ``manifest.json``: written last; its presence marks a finished cache. It
  holds the content key, the parameters, the storage (backend, dtype,
  ``shard_records``), leads, fs, counts, and each shard's size and hash.

Storage. Each (record, lead) row ``x`` is stored as ``q = x / s`` with a
per-lead scale ``s`` (float32) and read back as ``float32(q) * s``:

- ``int16``: ``s = max|x| / 32767`` and ``q = round(x / s)``, so
  ``|x_hat - x| <= s / 2 + 2**-23 |x|``: a sample is off by at most
  ``max|x| / 65534`` of its lead's peak (7.6e-6 relative), e.g. 0.08 uV for a
  5 mV peak.
- ``float16``: ``s = max|x|`` and ``q = float16(x / s)`` in [-1, 1], so
  ``|x_hat - x| <= (2**-11 + 2**-23) |x| + 2**-25 s`` (half a unit in the last
  place of float16's 11-bit significand, and half the subnormal spacing).

Both halve the size of float32. A lead that is all zero gets ``s = 1``.

Reading. :class:`ShardCache` keeps the shard boundaries (one int64 per shard)
and memory-maps ``lengths.npy``; a shard's data is memory-mapped on first use
(at most :data:`OPEN_SHARDS` per process, least recently used closed first:
an open shard is one map and about a kilobyte, whereas reopening costs a header read, and uniform random
access touches every shard).
A window read is a strided view of one record, dequantised to float32.
:class:`ShardWindows` gives the items of
:class:`~ssl_ecg.data.dataset.CacheWindows` (one per record) or
:class:`~ssl_ecg.data.dataset.CacheLeadWindows` (one per (record, lead), CLOCS'
CMSC instances) with the same window starts for the same seed, epoch and item.

Distributed sampling. Use :class:`~ssl_ecg.data.sampler.EpochShuffleSampler`
with ``num_replicas`` / ``rank``: every rank draws the same seeded permutation
of the items, drops its tail to a multiple of the world size and takes every
``num_replicas``-th item, so the ranks' shares are disjoint and equal. Its cost
is one permutation of the item count per epoch in the main process (the
workers receive indices only). Patient-aware batches (PCLR, CMSC across
records) use :class:`~ssl_ecg.data.sampler.PatientBatchSampler` over
:attr:`ShardWindows.patient_codes`, which still batches ``k`` records of each
sampled patient; its patient groups live in the main process only.
"""

from __future__ import annotations

import json
import os
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ssl_ecg.errors import DatasetError, RecordError

__all__ = ["ShardCache", "ShardWindows", "quantize", "dequantize", "SHARD_FORMAT", "SHARD_BACKEND", "STORAGE_DTYPES",
           "OPEN_SHARDS", "shard_name"]

#: Version of this layout; part of the cache key.
SHARD_FORMAT = 1
#: The library the shards are written with; part of the cache key.
SHARD_BACKEND = "safetensors"
#: Storage dtypes of the samples.
STORAGE_DTYPES = ("int16", "float16")
#: Shards a process keeps memory-mapped at once (one map and ~1 kB each; 16,384 shards of 1,024 records cover
#: 16 M records). Uniform random access over more shards than this reopens shards (a header read each).
OPEN_SHARDS = 16384

_MANIFEST, _RECORDS, _PATIENTS = "manifest.json", "records.jsonl", "patients.json"
_LENGTHS, _CODES, _STARTS = "lengths.npy", "patient_codes.npy", "shard_starts.npy"
_INT16_MAX = 32767
_ST_DTYPES = {"I16": np.int16, "F16": np.float16, "F32": np.float32, "I64": np.int64}
_TENSORS = ("signals", "scales", "offsets", "lengths")


def shard_name(k: int) -> str:
    """File name stem of shard ``k``: ``shard-000012``."""
    return f"shard-{int(k):06d}"


def quantize(signal: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Store one record's (L, T) millivolts in ``dtype`` with a per-lead scale (module docstring: the error bounds).

    Args:
        signal: (L, T) finite samples.
        dtype: ``"int16"`` or ``"float16"``.

    Returns:
        (q (L, T) in ``dtype``, scales (L,) float32) with ``signal ~ q * scales[:, None]``.

    Raises:
        DatasetError: an unknown dtype or non-finite samples.
    """
    if dtype not in STORAGE_DTYPES:
        raise DatasetError(f"dtype: expected one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 2:
        raise DatasetError(f"signal: expected (leads, time), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DatasetError("signal: non-finite samples cannot be stored; expected a preprocessed record")
    peak = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0])
    if dtype == "int16":
        scale = (peak / _INT16_MAX).astype(np.float32)
        scale[scale == 0] = 1.0
        q = np.clip(np.round(x / scale.astype(np.float64)[:, None]), -_INT16_MAX, _INT16_MAX).astype(np.int16)
    else:
        scale = peak.astype(np.float32)
        scale[scale == 0] = 1.0
        q = np.clip(x / scale.astype(np.float64)[:, None], -1.0, 1.0).astype(np.float16)
    return q, scale


def dequantize(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(L, T) stored values times their (L,) scales, as float32 millivolts."""
    return np.asarray(q, dtype=np.float32) * np.asarray(scales, dtype=np.float32)[:, None]


def _read_header(path: Path) -> tuple[int, dict]:
    """The safetensors header of ``path``: (data start in bytes, tensor table). Format: 8-byte little-endian
    header length, then that many bytes of JSON, then the data."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ValueError("shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > 100 * 2**20:
                raise ValueError(f"header length {n} bytes is implausible")
            header = json.loads(f.read(n))
        size = path.stat().st_size
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: corrupt shard ({exc}); rebuild it (delete the file and its .done.json, "
                           "then ssl-ecg cache build --format shards)") from exc
    missing = [t for t in _TENSORS if not isinstance(header.get(t), dict)]
    if missing:
        raise DatasetError(f"{path}: corrupt shard (no tensors {missing} in its header); expected a shard "
                           "written by ssl-ecg cache build --format shards")
    end = max(int(header[t]["data_offsets"][1]) for t in _TENSORS)
    if 8 + n + end != size:
        raise DatasetError(f"{path}: corrupt shard ({size} bytes, its header describes {8 + n + end}); rebuild it")
    return 8 + n, header


class _Shard:
    """One shard's arrays, memory-mapped: signals flat, scales (R, L), offsets and lengths (R,)."""

    def __init__(self, path: Path):
        start, header = _read_header(path)
        # one map per shard, and plain ndarray views of it (slicing np.memmap objects costs more than the read):
        # an open shard costs about a kilobyte of Python objects, so thousands can stay open
        whole = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
        arrays = {}
        for name in _TENSORS:
            info = header[name]
            dtype = _ST_DTYPES.get(info.get("dtype"))
            lo, hi = (int(v) for v in info["data_offsets"])
            if dtype is None or hi < lo:
                raise DatasetError(f"{path}: corrupt shard (tensor {name!r}: dtype {info.get('dtype')!r}, "
                                   f"offsets {lo}:{hi})")
            shape = tuple(int(d) for d in info["shape"])
            count = int(np.prod(shape)) if shape else 1
            if count * np.dtype(dtype).itemsize != hi - lo:
                raise DatasetError(f"{path}: corrupt shard (tensor {name!r} of shape {shape} in {hi - lo} bytes)")
            arrays[name] = whole[start + lo:start + hi].view(dtype).reshape(shape)
        self.path = path
        self.signals, self.scales = arrays["signals"], arrays["scales"]
        self.offsets, self.lengths = arrays["offsets"], arrays["lengths"]
        n_leads = self.scales.shape[1] if self.scales.ndim == 2 else 0
        if len(self.offsets) and int(self.offsets[-1] + n_leads * self.lengths[-1]) != len(self.signals):
            raise DatasetError(f"{path}: corrupt shard (its offsets do not match its {len(self.signals)} samples)")


class ShardCache:
    """Read access to a finished sharded cache folder (layout: module docstring). Safe to pickle into workers.

    Attributes:
        folder: the cache folder.
        manifest: ``manifest.json``.
        lengths: (R,) int64 samples per record, memory-mapped.
        patient_codes: (R,) int64 patient code per record, memory-mapped.
    """

    def __init__(self, folder: Path, manifest: dict, starts: np.ndarray):
        self.folder = Path(folder)
        self.manifest = manifest
        self._starts = starts
        self._n_leads = len(manifest["leads"])
        self._open: OrderedDict[int, _Shard] = OrderedDict()
        self._maps: dict[str, np.ndarray] = {}
        self._pid = os.getpid()
        self._table: pd.DataFrame | None = None

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ShardCache:
        """Open a finished sharded cache, checking each shard's size against its manifest entry.

        Raises:
            DatasetError: the manifest or an index array is missing or malformed, or a shard is
                missing or has another size than the manifest says (the message names the shard).
        """
        folder = Path(folder)
        path = folder / _MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: not a finished sharded cache ({exc}); build it with "
                               "ssl-ecg cache build --format shards") from exc
        need = ("leads", "params", "shards", "n_records", "dtype", "key")
        if not isinstance(manifest, dict) or any(k not in manifest for k in need):
            raise DatasetError(f"{path}: expected a sharded cache manifest with {list(need)}")
        try:
            starts = np.load(folder / _STARTS, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{folder / _STARTS}: unreadable ({exc}); rebuild the cache") from exc
        shards = manifest["shards"]
        if len(starts) != len(shards) + 1 or int(starts[-1]) != int(manifest["n_records"]):
            raise DatasetError(f"{folder / _STARTS}: {len(starts)} boundaries ending at {int(starts[-1])}, expected "
                               f"{len(shards) + 1} ending at {manifest['n_records']} (from {_MANIFEST})")
        for k, entry in enumerate(shards):
            shard = folder / "shards" / entry["file"]
            try:
                size = shard.stat().st_size
            except OSError:
                raise DatasetError(f"{shard}: shard {k} is missing; rebuild it (ssl-ecg cache build --format shards)")
            if size != int(entry["bytes"]):
                raise DatasetError(f"{shard}: corrupt shard ({size} bytes, expected {entry['bytes']}); delete it "
                                   "and its .done.json and build again (ssl-ecg cache build --format shards)")
        cache = cls(folder, manifest, starts)
        if len(cache.lengths) != cache.n_records or len(cache.patient_codes) != cache.n_records:
            raise DatasetError(f"{folder}: {_LENGTHS} or {_CODES} does not hold {cache.n_records} records")
        return cache

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_open"], state["_maps"] = OrderedDict(), {}  # each worker maps its own
        state["_table"] = None  # the index rows stay in the main process
        return state

    def _array(self, name: str) -> np.ndarray:
        if self._pid != os.getpid():
            self._open, self._maps, self._pid = OrderedDict(), {}, os.getpid()
        if name not in self._maps:
            try:
                self._maps[name] = np.load(self.folder / name, mmap_mode="r", allow_pickle=False).view(np.ndarray)
            except (OSError, ValueError) as exc:
                raise DatasetError(f"{self.folder / name}: unreadable ({exc}); rebuild the cache") from exc
        return self._maps[name]

    @property
    def lengths(self) -> np.ndarray:
        return self._array(_LENGTHS)

    @property
    def patient_codes(self) -> np.ndarray:
        return self._array(_CODES)

    @property
    def n_records(self) -> int:
        return int(self.manifest["n_records"])

    @property
    def n_leads(self) -> int:
        return self._n_leads

    @property
    def fs(self) -> float:
        return float(self.manifest["params"]["fs"])

    @property
    def n_shards(self) -> int:
        return len(self.manifest["shards"])

    def __len__(self) -> int:
        return self.n_records

    @property
    def table(self) -> pd.DataFrame:
        """The index rows of all records (``records.jsonl``), read on first use: for splits and reports, not for
        workers (it is not pickled with the cache)."""
        if self._table is not None:
            return self._table
        path = self.folder / _RECORDS
        try:
            with open(path) as f:
                rows = [json.loads(line) for line in f if line.strip()]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: unreadable ({exc}); rebuild the cache") from exc
        self._table = pd.DataFrame(rows)
        return self._table

    def patients(self) -> list[str]:
        """The patient id of each code (``patients.json``)."""
        path = self.folder / _PATIENTS
        try:
            return list(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: unreadable ({exc}); rebuild the cache") from exc

    def _shard(self, k: int) -> _Shard:
        if self._pid != os.getpid():
            self._open, self._maps, self._pid = OrderedDict(), {}, os.getpid()
        shard = self._open.get(k)
        if shard is None:
            shard = _Shard(self.folder / "shards" / self.manifest["shards"][k]["file"])
            self._open[k] = shard
            while len(self._open) > OPEN_SHARDS:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(k)
        return shard

    def locate(self, i: int) -> tuple[int, int]:
        """(shard, row in the shard) of record ``i``."""
        if not 0 <= i < self.n_records:
            raise IndexError(f"record {i} is outside the {self.n_records} records of {self.folder}")
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return k, int(i - self._starts[k])

    def record(self, i: int) -> np.ndarray:
        """Record ``i`` as (L, T) float32 millivolts."""
        return self.segment(i, 0, int(self.lengths[i]))

    def segment(self, i: int, start: int, length: int, lead: int | None = None) -> np.ndarray:
        """Samples ``start:start + length`` of record ``i`` as (L, length) float32, or (1, length) of one ``lead``."""
        k, row = self.locate(int(i))
        shard = self._shard(k)
        n = int(shard.lengths[row])
        if start < 0 or start + length > n:
            raise RecordError(f"record {i} ({shard.path.name} row {row}): segment {start}:{start + length} is "
                              f"outside its {n} samples")
        off = int(shard.offsets[row])
        rec = shard.signals[off:off + self._n_leads * n].reshape(self._n_leads, n)
        leads = slice(None) if lead is None else slice(lead, lead + 1)
        return dequantize(rec[leads, start:start + length], shard.scales[row, leads])


class ShardWindows(Dataset):
    """Random windows of a :class:`ShardCache`: ``CacheWindows``' items, or ``CacheLeadWindows``' with ``per_lead``.

    Item i (``per_lead=False``): a (L, window) crop of record ``records[i]`` and
    its target, ``(x, target)``, or ``(x, target, label)`` with ``labels``. With
    ``per_lead`` (CLOCS' CMSC instances, Kiyasseh et al., ICML 2021): item i is
    lead ``i % L`` of record ``records[i // L]`` as a (1, window) crop, returned
    as ``(x, target, lead)`` or ``(x, target, label, lead)``; ``same_lead``
    makes the target ``target * L + lead``. The target is the record's patient
    code (memory-mapped, :attr:`ShardCache.patient_codes`) or, with ``targets``,
    any per-record code or multi-hot row, as in
    :class:`~ssl_ecg.data.dataset.CacheWindows`. Starts are drawn from a
    generator seeded with (seed, epoch, i), as in
    :class:`~ssl_ecg.data.dataset.CacheWindows`, so the same seed, epoch and
    records give the same windows as the memmap path (up to the storage error).
    Call :meth:`set_epoch` each epoch.

    Memory: with ``records``, ``targets`` and ``labels`` left ``None`` the
    dataset holds no per-record array (lengths and patient codes are
    memory-mapped from the cache folder), so a worker's memory does not grow
    with the dataset; each given array costs 8 bytes per record (``targets``
    as multi-hot rows: 4 bytes per class) in every worker.

    Args:
        cache: an opened sharded cache.
        window: samples per item.
        seed: base seed.
        records: record positions to use (default: all, without an array).
        targets: integer code, or (C,) multi-hot row, per cache record (default: patient codes).
        labels: integer class per cache record (-1: unlabelled), for an online monitor.
        per_lead: one item per (record, lead).
        same_lead: lead-specific targets (``per_lead`` only).

    Raises:
        RecordError: a used record is shorter than the window.
        DatasetError: an empty ``records``, ``targets`` or ``labels`` not one per cache record, or
            ``same_lead`` without ``per_lead`` or with multi-hot targets.
    """

    def __init__(self, cache: ShardCache, window: int, seed: int = 0, records: Sequence[int] | None = None,
                 per_lead: bool = False, same_lead: bool = False, targets: Any = None, labels: Any = None):
        self.cache, self.window, self.seed, self.epoch = cache, int(window), int(seed), 0
        self.records = None if records is None else np.asarray(records, dtype=np.int64)
        if self.records is not None and len(self.records) == 0:
            raise DatasetError("records: the dataset is empty")
        if same_lead and not per_lead:
            raise DatasetError("same_lead: lead-specific targets need per_lead=True")
        self.per_lead, self.same_lead = bool(per_lead), bool(same_lead)
        self.n_leads = cache.n_leads
        self.targets = None if targets is None else np.asarray(targets)
        if self.targets is not None and len(self.targets) != cache.n_records:
            raise DatasetError(f"targets: expected one code per cache record ({cache.n_records}), "
                               f"got {len(self.targets)}")
        if self.same_lead and self.targets is not None and self.targets.ndim != 1:
            raise DatasetError("same_lead: lead-specific targets need integer codes, not multi-hot rows")
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and len(self.labels) != cache.n_records:
            raise DatasetError(f"labels: expected one per cache record ({cache.n_records}), got {len(self.labels)}")
        shortest = int(cache.manifest.get("min_length", 0))
        if self.records is not None or shortest < self.window:
            lengths = cache.lengths if self.records is None else cache.lengths[self.records]
            short = np.flatnonzero(lengths < self.window)
            if len(short):
                where = short[:5] if self.records is None else self.records[short[:5]]
                raise RecordError(f"records {where.tolist()} of {cache.folder} are shorter than the "
                                  f"{self.window}-sample window ({self.window / cache.fs:.2f} s at {cache.fs:g} Hz)")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _n_records(self) -> int:
        return self.cache.n_records if self.records is None else len(self.records)

    def __len__(self) -> int:
        return self._n_records() * (self.n_leads if self.per_lead else 1)

    @property
    def patient_codes(self) -> np.ndarray:
        """Patient code of each used record (for :class:`~ssl_ecg.data.sampler.PatientBatchSampler`)."""
        codes = self.cache.patient_codes
        return codes if self.records is None else codes[self.records]

    @property
    def instance_patients(self) -> np.ndarray:
        """Patient code of each item (computed on request: for
        :func:`~ssl_ecg.data.sampler.cross_lead_positive_rate`, not held by the dataset)."""
        return np.repeat(np.asarray(self.patient_codes), self.n_leads if self.per_lead else 1)

    @property
    def instance_leads(self) -> np.ndarray:
        """Lead index of each item (``per_lead``), or -1 per item (computed on request)."""
        if not self.per_lead:
            return np.full(self._n_records(), -1, dtype=np.int64)
        return np.tile(np.arange(self.n_leads, dtype=np.int64), self._n_records())

    def start(self, i: int) -> int:
        """The window start of item ``i`` this epoch."""
        pos = divmod(int(i), self.n_leads)[0] if self.per_lead else int(i)
        rec = pos if self.records is None else int(self.records[pos])
        return self._start(i, int(self.cache.lengths[rec]))

    def _start(self, i: int, length: int) -> int:
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        return int(rng.integers(0, length - self.window + 1))

    def _target(self, rec: int):
        if self.targets is None:
            return int(self.cache.patient_codes[rec])
        code = self.targets[rec]
        if np.ndim(code) == 1:  # a multi-hot row
            return torch.as_tensor(code, dtype=torch.float32)
        return int(code)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        if not 0 <= int(i) < len(self):
            raise IndexError(f"i: {i} is outside the {len(self)} items")
        pos, lead = divmod(int(i), self.n_leads) if self.per_lead else (int(i), None)
        rec = pos if self.records is None else int(self.records[pos])
        start = self._start(i, int(self.cache.lengths[rec]))
        x = torch.from_numpy(self.cache.segment(rec, start, self.window, lead=lead))
        target = self._target(rec)
        label = () if self.labels is None else (int(self.labels[rec]),)
        if not self.per_lead:
            return (x, target, *label)
        return (x, target * self.n_leads + lead if self.same_lead else target, *label, lead)
