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
  ``1 / 65534`` of its lead's peak ``max|x|`` (1.5e-5 relative), e.g. 0.08 uV
  for a 5 mV peak.
- ``float16``: ``s = max|x|`` and ``q = float16(x / s)`` in [-1, 1], so
  ``|x_hat - x| <= (2**-11 + 2**-23) |x| + 2**-25 s`` (half a unit in the last
  place of float16's 11-bit significand, and half the subnormal spacing).

Both halve the size of float32. A lead that is all zero gets ``s = 1``.

Reading. :class:`ShardCache` keeps the shard boundaries (one int64 per shard)
and memory-maps ``lengths.npy``; a shard's data is memory-mapped on first use.
The reader is a hand-written memory-map reader of the safetensors layout (an
8-byte header length, a JSON header, then the raw tensors), not
:func:`safetensors.safe_open`: ``safe_open`` copies each tensor it returns,
whereas slicing one map per shard reads only the window (``safe_open`` itself
was not benchmarked; this reader is the safetensors row of
``benchmarks/README.md``, "Choosing the library"). A process keeps at most
:data:`OPEN_SHARDS` shards open, least recently used closed first: an open
shard costs one map, one file descriptor and about a kilobyte, whereas
reopening costs a header read, and uniform random access touches every shard.
Since each open shard holds a file descriptor, the cap is also at most half the
process's descriptor limit (``RLIMIT_NOFILE``; its soft limit is raised once
per process towards the hard limit as far as the cache needs, and never fewer
than :data:`MIN_OPEN_SHARDS` stay open); running out of descriptors anyway is a
:class:`~ssl_ecg.errors.DatasetError` that names the shard and suggests
``ulimit -n``.

Checks. :meth:`ShardCache.load` checks the manifest (each shard entry names
exactly ``shard-NNNNNN.safetensors`` in ``shards/``: no other path is ever
opened), the boundaries and each shard's size. Opening a shard checks its
header (a JSON object whose tensors lie inside the file), its metadata (the
manifest's content key and its own shard number), its row count (the
boundaries'), its lengths (``lengths.npy``'s slice), its offsets (the running
sum of ``L * length``) and its scales' lead count (the manifest's leads), so a
moved, swapped or stale shard is an error that names the file, never wrong
data. :attr:`ShardCache.table` checks that ``records.jsonl`` has one row per
record at the (shard, row) the boundaries imply. ``build_shards(verify=True)``
also compares each finished shard's blake2b with its marker.

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
records) of per-record items use :class:`~ssl_ecg.data.sampler.PatientBatchSampler`
over :attr:`ShardWindows.patient_codes` (one code per record), which batches
``k`` records of each sampled patient; its patient groups live in the main
process only. For per-lead items (``per_lead=True``) pass
:attr:`ShardWindows.instance_patients` (one code per item) instead.
"""

from __future__ import annotations

import errno
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

try:
    import resource
except ImportError:  # Windows: no descriptor limit to read or raise
    resource = None

__all__ = ["ShardCache", "ShardWindows", "quantize", "dequantize", "SHARD_FORMAT", "SHARD_BACKEND", "STORAGE_DTYPES",
           "OPEN_SHARDS", "MIN_OPEN_SHARDS", "shard_name"]

#: Version of this layout; part of the cache key.
SHARD_FORMAT = 1
#: The library the shards are written with; part of the cache key.
SHARD_BACKEND = "safetensors"
#: Storage dtypes of the samples.
STORAGE_DTYPES = ("int16", "float16")
#: Shards a process keeps memory-mapped at once (one map, one file descriptor and ~1 kB each; 16,384 shards of
#: 1,024 records cover 16 M records), and at most half the descriptor limit (module docstring). Uniform random
#: access over more shards than this reopens shards (a header read each).
OPEN_SHARDS = 16384
#: Shards kept open however low the descriptor limit is.
MIN_OPEN_SHARDS = 8

_MANIFEST, _RECORDS, _PATIENTS = "manifest.json", "records.jsonl", "patients.json"
_LENGTHS, _CODES, _STARTS = "lengths.npy", "patient_codes.npy", "shard_starts.npy"
_INT16_MAX = 32767
_ST_DTYPES = {"I16": np.int16, "F16": np.float16, "F32": np.float32, "I64": np.int64}
_TENSORS = ("signals", "scales", "offsets", "lengths")
_TENSOR_NDIM = {"signals": 1, "scales": 2, "offsets": 1, "lengths": 1}
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)
_FD_ASKED = {"pid": -1, "soft": 0}  # the soft limit this process last asked for (raised at most once per need)


def shard_name(k: int) -> str:
    """File name stem of shard ``k``: ``shard-000012``."""
    return f"shard-{int(k):06d}"


def _short(value: Any, n: int = 80) -> str:
    """``repr`` of a value read from a file, cut to ``n`` characters for a one-line message."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= n else text[:n] + "..."


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


def _open_shard_cap(n_shards: int) -> int:
    """How many shards this process may keep open: :data:`OPEN_SHARDS`, the cache's shard count and half the
    descriptor soft limit (each open shard holds a descriptor; the other half is left to the rest of the process),
    but at least :data:`MIN_OPEN_SHARDS`. A soft limit below twice the need is first raised towards the hard limit,
    once per process and need."""
    want = max(1, min(OPEN_SHARDS, int(n_shards)))
    if resource is None:
        return want
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    need = 2 * want
    if _FD_ASKED["pid"] != os.getpid():
        _FD_ASKED.update(pid=os.getpid(), soft=0)
    if soft != infinite and soft < need and _FD_ASKED["soft"] < need:
        _FD_ASKED["soft"] = need
        target = need if hard == infinite else min(hard, need)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):  # not allowed here: keep the limit, open fewer shards
                pass
    if soft == infinite:
        return want
    return max(MIN_OPEN_SHARDS, min(want, soft // 2))


def _out_of_fds(path: Path, exc: OSError) -> DatasetError:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if resource is not None else "unknown"
    return DatasetError(f"{path}: cannot open the shard, the process is out of file descriptors ({exc.strerror}; "
                        f"soft limit {limit}); each open shard holds one: raise the limit (ulimit -n) or open fewer "
                        "files elsewhere in the process")


def _corrupt(path: Path, what: str) -> DatasetError:
    return DatasetError(f"{path}: corrupt shard ({what}); rebuild it (delete the file and its .done.json, then "
                        "ssl-ecg cache build --format shards)")


def _read_header(path: Path) -> tuple[int, dict[str, tuple[Any, tuple[int, ...], int, int]], dict]:
    """The safetensors header of ``path``: (data start in bytes, {tensor: (dtype, shape, begin, end)}, metadata).

    Format: 8-byte little-endian header length, then that many bytes of a JSON object (tensor name ->
    ``{"dtype", "shape", "data_offsets"}``, and ``"__metadata__"``), then the data."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ValueError("shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > 100 * 2**20:
                raise ValueError(f"header length {n} bytes is implausible")
            header = json.loads(f.read(n))
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        if exc.errno in _OUT_OF_FDS:
            raise _out_of_fds(path, exc) from exc
        raise _corrupt(path, str(exc)) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise _corrupt(path, str(exc)) from exc
    if not isinstance(header, dict):
        raise _corrupt(path, f"its header is a JSON {type(header).__name__}, expected an object")
    missing = [t for t in _TENSORS if not isinstance(header.get(t), dict)]
    if missing:
        raise DatasetError(f"{path}: corrupt shard (no tensors {missing} in its header); expected a shard "
                           "written by ssl-ecg cache build --format shards")
    tensors = {}
    for name in _TENSORS:
        info = header[name]
        try:
            dtype = _ST_DTYPES[info["dtype"]]
            lo, hi = (int(v) for v in info["data_offsets"])
            shape = tuple(int(d) for d in info["shape"])
        except (KeyError, TypeError, ValueError):
            raise _corrupt(path, f"tensor {name!r} is {_short(info)}; expected a dtype of {list(_ST_DTYPES)}, a "
                                 "shape and two data_offsets") from None
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if (len(shape) != _TENSOR_NDIM[name] or min(shape) < 0 or not 0 <= lo <= hi
                or count * np.dtype(dtype).itemsize != hi - lo):
            raise _corrupt(path, f"tensor {name!r} of shape {list(shape)} in bytes {lo}:{hi}")
        tensors[name] = (dtype, shape, lo, hi)
    end = max(t[3] for t in tensors.values())
    if 8 + n + end != size:
        raise _corrupt(path, f"{size} bytes, its header describes {8 + n + end}")
    meta = header.get("__metadata__")
    return 8 + n, tensors, meta if isinstance(meta, dict) else {}


class _Shard:
    """One shard's arrays, memory-mapped: signals flat, scales (R, L), offsets and lengths (R,).

    Opening checks the shard's own structure; :meth:`expect` checks it against what the cache expects of shard
    ``k`` (module docstring, "Checks"). Benchmarks open shards with the first alone.
    """

    def __init__(self, path: Path):
        start, tensors, meta = _read_header(path)
        try:
            # one map per shard, and plain ndarray views of it (slicing np.memmap objects costs more than the
            # read): an open shard costs one descriptor and about a kilobyte of Python objects
            whole = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
        except OSError as exc:
            if exc.errno in _OUT_OF_FDS:
                raise _out_of_fds(path, exc) from exc
            raise _corrupt(path, str(exc)) from exc
        except ValueError as exc:  # e.g. an empty file
            raise _corrupt(path, str(exc)) from exc
        arrays = {name: whole[start + lo:start + hi].view(dtype).reshape(shape)
                  for name, (dtype, shape, lo, hi) in tensors.items()}
        self.path, self.meta = path, meta
        self.signals, self.scales = arrays["signals"], arrays["scales"]
        self.offsets, self.lengths = arrays["offsets"], arrays["lengths"]
        rows = len(self.lengths)
        if len(self.offsets) != rows or self.scales.shape[0] != rows:
            raise _corrupt(path, f"{rows} lengths, {len(self.offsets)} offsets and {self.scales.shape[0]} scale "
                                 "rows; expected one of each per record")
        n_leads = self.scales.shape[1]
        ends = np.cumsum(n_leads * self.lengths, dtype=np.int64)
        if (self.lengths < 0).any() or (rows and (self.offsets[0] != 0 or ends[-1] != len(self.signals)
                                                  or not np.array_equal(self.offsets[1:], ends[:-1]))):
            raise _corrupt(path, f"its offsets do not tile its {len(self.signals)} samples as {n_leads} leads "
                                 "times each record's length")

    def expect(self, key: str, k: int, lengths: np.ndarray, n_leads: int) -> _Shard:
        """Check that this is shard ``k`` of the cache with content ``key``, holding records of ``lengths`` samples
        and ``n_leads`` leads; returns the shard.

        Raises:
            DatasetError: naming the file, what it holds and what was expected (and from which file).
        """
        path, meta = self.path, self.meta
        if meta.get("key") != key or meta.get("shard") != str(k):
            raise DatasetError(f"{path}: holds shard {_short(meta.get('shard'))} of cache key "
                               f"{_short(meta.get('key'))}, expected shard {k} of key {key} (from {_MANIFEST}); "
                               "a moved, swapped or stale shard: delete it and its .done.json and build again "
                               "(ssl-ecg cache build --format shards)")
        if len(self.lengths) != len(lengths):
            raise DatasetError(f"{path}: holds {len(self.lengths)} records, expected {len(lengths)} (from "
                               f"{_STARTS}); rebuild it (ssl-ecg cache build --format shards)")
        if len(lengths) and self.scales.shape[1] != n_leads:
            raise DatasetError(f"{path}: scales for {self.scales.shape[1]} leads, expected {n_leads} (the leads "
                               f"of {_MANIFEST})")
        if not np.array_equal(self.lengths, lengths):
            bad = int(np.flatnonzero(self.lengths != lengths)[0])
            raise DatasetError(f"{path}: row {bad} has {int(self.lengths[bad])} samples, expected "
                               f"{int(lengths[bad])} (from {_LENGTHS})")
        return self


class ShardCache:
    """Read access to a finished sharded cache folder (layout and checks: module docstring). Safe to pickle into
    workers.

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
        self._cap: int | None = None
        self._maps: dict[str, np.ndarray] = {}
        self._pid = os.getpid()
        self._table: pd.DataFrame | None = None

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ShardCache:
        """Open a finished sharded cache, checking its manifest and each shard's size against its manifest entry.

        Raises:
            DatasetError: the manifest or an index array is missing or malformed, a shard entry names another
                file than ``shard-NNNNNN.safetensors``, or a shard is missing or has another size than the
                manifest says (the message names the shard).
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
        n_records, params = manifest["n_records"], manifest["params"]
        if (not isinstance(manifest["leads"], list) or not manifest["leads"] or not isinstance(manifest["key"], str)
                or not isinstance(manifest["shards"], list) or isinstance(n_records, bool)
                or not isinstance(n_records, int) or not isinstance(params, dict)
                or not isinstance(params.get("fs"), (int, float)) or isinstance(params.get("fs"), bool)):
            raise DatasetError(f"{path}: expected leads (a non-empty list), key (a string), shards (a list), "
                               "n_records (an integer) and params with fs (a number)")
        try:
            starts = np.load(folder / _STARTS, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{folder / _STARTS}: unreadable ({exc}); rebuild the cache") from exc
        shards = manifest["shards"]
        if (starts.ndim != 1 or starts.dtype.kind not in "iu" or len(starts) != len(shards) + 1 or starts[0] != 0
                or int(starts[-1]) != n_records or (np.diff(starts) < 0).any()):
            raise DatasetError(f"{folder / _STARTS}: {len(starts)} boundaries ending at "
                               f"{_short(starts[-1:].tolist())}, expected {len(shards) + 1} non-decreasing "
                               f"integers from 0 to {n_records} (from {_MANIFEST})")
        for k, entry in enumerate(shards):
            name = f"{shard_name(k)}.safetensors"
            size = entry.get("bytes") if isinstance(entry, dict) else None
            if not isinstance(entry, dict) or entry.get("file") != name or isinstance(size, bool) \
                    or not isinstance(size, int):
                raise DatasetError(f"{path}: shard entry {k} is {_short(entry)}, expected file {name!r} (in "
                                   "shards/) and its size in bytes")
            shard = folder / "shards" / name
            try:
                found = shard.stat().st_size
            except OSError:
                raise DatasetError(f"{shard}: shard {k} is missing; rebuild it (ssl-ecg cache build --format "
                                   "shards)") from None
            if found != size:
                raise DatasetError(f"{shard}: corrupt shard ({found} bytes, expected {size}); delete it "
                                   "and its .done.json and build again (ssl-ecg cache build --format shards)")
        cache = cls(folder, manifest, starts)
        if len(cache.lengths) != cache.n_records or len(cache.patient_codes) != cache.n_records:
            raise DatasetError(f"{folder}: {_LENGTHS} or {_CODES} does not hold {cache.n_records} records")
        return cache

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_open"], state["_maps"] = OrderedDict(), {}  # each worker maps its own
        state["_cap"] = None  # and reads its own descriptor limit
        state["_table"] = None  # the index rows stay in the main process
        return state

    def _own_process(self) -> None:
        if self._pid != os.getpid():  # a forked worker: maps and descriptors are per process
            self._open, self._maps, self._cap, self._pid = OrderedDict(), {}, None, os.getpid()

    def _array(self, name: str) -> np.ndarray:
        self._own_process()
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
        workers (it is not pickled with the cache).

        Raises:
            DatasetError: the file is unreadable, has another row count than the cache's records, or its
                ``shard`` and ``row`` columns are not the positions the shard boundaries imply.
        """
        if self._table is not None:
            return self._table
        path = self.folder / _RECORDS
        try:
            with open(path) as f:
                rows = [json.loads(line) for line in f if line.strip()]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: unreadable ({exc}); rebuild the cache") from exc
        if len(rows) != self.n_records or not all(isinstance(r, dict) for r in rows):
            raise DatasetError(f"{path}: {len(rows)} rows, expected one JSON object per record "
                               f"({self.n_records}, from {_MANIFEST}); rebuild the cache")
        table = pd.DataFrame(rows)
        if "shard" not in table.columns or "row" not in table.columns:
            raise DatasetError(f"{path}: no shard and row columns; expected rows written by ssl-ecg cache build "
                               "--format shards")
        shard = np.repeat(np.arange(self.n_shards), np.diff(self._starts))
        row = np.arange(self.n_records) - self._starts[shard]
        bad = np.flatnonzero((table["shard"].to_numpy() != shard) | (table["row"].to_numpy() != row))
        if len(bad):
            i = int(bad[0])
            raise DatasetError(f"{path}: line {i + 1} is at shard {_short(table['shard'].iloc[i])} row "
                               f"{_short(table['row'].iloc[i])}, expected shard {shard[i]} row {row[i]} (from "
                               f"{_STARTS}); rebuild the cache")
        self._table = table
        return self._table

    def patients(self) -> list[str]:
        """The patient id of each code (``patients.json``)."""
        path = self.folder / _PATIENTS
        try:
            return list(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: unreadable ({exc}); rebuild the cache") from exc

    def _shard(self, k: int) -> _Shard:
        self._own_process()
        shard = self._open.get(k)
        if shard is not None:
            self._open.move_to_end(k)
            return shard
        if self._cap is None:
            self._cap = _open_shard_cap(self.n_shards)
        while len(self._open) >= self._cap:  # close before opening: the descriptor is free for the new shard
            self._open.popitem(last=False)
        lo, hi = int(self._starts[k]), int(self._starts[k + 1])
        shard = _Shard(self.folder / "shards" / f"{shard_name(k)}.safetensors").expect(
            self.manifest["key"], k, self.lengths[lo:hi], self._n_leads)
        self._open[k] = shard
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
