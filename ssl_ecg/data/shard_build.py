"""Building a sharded record cache (:mod:`ssl_ecg.data.shards`) in parallel, resumably, across nodes.

The index rows are cut into shards of ``shard_records`` consecutive rows. A
process pool (``workers``) builds whole shards: each worker reads its rows with
the dataset's adapter, takes each record's fingerprint and preprocesses it
exactly as :func:`ssl_ecg.data.cache.open_cache` does, quantises it
(:func:`~ssl_ecg.data.shards.quantize`), writes the shard to a temporary file,
renames it into place and then writes the shard's ``.done.json`` marker
atomically. A shard with its marker (and the size the marker names) is never
rebuilt, so a killed build resumes where it stopped. With ``num_nodes > 1``,
node r builds the shards ``k`` with ``k % num_nodes == r`` into one shared
folder; whichever node finds every marker present merges the shard markers
into the manifest and the memory-mapped index arrays (a later
``build_shards`` call on any node does it too).

Keys. The content key is :mod:`ssl_ecg.data.cache`'s (format, dataset, record
ids, preprocessing parameters, source-file hashes), with the storage
(:data:`~ssl_ecg.data.shards.SHARD_BACKEND`, ``dtype``, ``shard_records``,
:data:`~ssl_ecg.data.shards.SHARD_FORMAT`) hashed into its parameters part, so
an int16 and a float16 cache of one dataset, and the float32 memmap, have three
keys and three folders. Reopening compares the stat key first, as the memmap
cache does, and hashes the source files only when it changed; when the content
key still matches, the new stat key is stored in the manifest, so the next open
compares stats again instead of hashing.

Repair. A finished cache that does not load (a shard deleted or cut short, an
index array lost) is repaired by the next :func:`build_shards`: its manifest is
dropped, the shards without a valid marker (or whose file is missing or of
another size than the marker says; with ``verify``, of another blake2b) are
rebuilt, and the markers are merged again.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import save_file

from ssl_ecg.data.cache import (
    CacheParams,
    _candidates,
    _content_key,
    _digest,
    _hash_sources,
    _jsonable,
    _params_key,
    _stat_key,
    _stat_matches,
    _unclaim,
    _write_json_atomic,
    record_fingerprint,
    source_files,
)
from ssl_ecg.data.index import DatasetIndex
from ssl_ecg.data.preprocess import preprocess
from ssl_ecg.data.shards import (
    _CODES,
    _LENGTHS,
    _MANIFEST,
    _PATIENTS,
    _RECORDS,
    _STARTS,
    SHARD_BACKEND,
    SHARD_FORMAT,
    STORAGE_DTYPES,
    ShardCache,
    quantize,
    shard_name,
)
from ssl_ecg.errors import ConfigError, DatasetError, RecordError, check_choice

__all__ = ["build_shards", "built_shard_sizes", "shard_key", "ShardBuild", "DEFAULT_SHARD_RECORDS"]

#: Index rows per shard: 1,024 twelve-lead 10 s records at 100 Hz are 24 MB in int16.
DEFAULT_SHARD_RECORDS = 1024
_BUILD = "build.json"


def _storage(dtype: str, shard_records: int) -> dict:
    check_choice("dtype", dtype, STORAGE_DTYPES)
    if isinstance(shard_records, bool) or not isinstance(shard_records, (int, np.integer)) or shard_records < 1:
        raise ConfigError(f"shard_records: expected a positive integer, got {shard_records!r}")
    return {"backend": SHARD_BACKEND, "dtype": dtype, "shard_records": int(shard_records), "format": SHARD_FORMAT}


def _shard_params_key(index: DatasetIndex, params: CacheParams, storage: dict) -> str:
    return _digest(_params_key(index, params), "\n", json.dumps(storage, sort_keys=True))


def shard_key(index: DatasetIndex, params: CacheParams, dtype: str = "int16",
              shard_records: int = DEFAULT_SHARD_RECORDS, exclude: str | os.PathLike | None = None) -> str:
    """The content key of a sharded cache: the memmap cache's key with the storage in its parameters.

    Reads and hashes every source file (see :func:`ssl_ecg.data.cache.source_files`).
    """
    pkey = _shard_params_key(index, params, _storage(dtype, shard_records))
    return _content_key(pkey, _hash_sources(index, source_files(index, exclude), {}, {}).hashes)


@dataclass
class ShardBuild:
    """What one :func:`build_shards` call did.

    Attributes:
        folder: the cache folder.
        key: its content key.
        n_shards: shards of the whole cache.
        built: shards this call built.
        reused: shards of this node found finished.
        pending: shards still unfinished (other nodes' share), 0 when merged.
        seconds: wall time of the shard building.
        cache: the opened cache once merged, else ``None``.
    """

    folder: Path
    key: str
    n_shards: int
    built: list[int]
    reused: int
    pending: int
    seconds: float
    cache: ShardCache | None


# ----------------------------------------------------------------------------------------------------------------
# One shard (runs in a pool worker)

_WORKER: dict = {}


def _init_worker(ctx: dict | None) -> None:
    if ctx is not None:  # spawn: the context comes pickled; fork: it is inherited
        _WORKER.update(ctx)


def _file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _build_one(k: int) -> dict:
    """Build shard ``k`` from the worker context; returns its done-marker."""
    index: DatasetIndex = _WORKER["index"]
    params: CacheParams = _WORKER["params"]
    dtype, size, folder, key = _WORKER["dtype"], _WORKER["shard_records"], _WORKER["folder"], _WORKER["key"]
    lo, hi = k * size, min((k + 1) * size, len(index))
    min_len = int(round(params.min_seconds * params.fs))
    paths = index.table["path"] if "path" in index.table.columns else index.table["record_id"]
    parts, scales, offsets, lengths, rows, skipped = [], [], [], [], [], []
    stats: dict = {}
    leads, short, offset = None, 0, 0
    for i in range(lo, hi):
        where = str(paths.iloc[i])
        try:
            raw = index.read(i)
            fingerprint = record_fingerprint(raw)
            rec = preprocess(raw, fs=params.fs, leads=params.leads, normalization=params.normalization,
                             bad_lead_policy=params.bad_lead_policy, band=params.band, stats=stats)
            if rec is not None and leads is not None and rec.leads != leads:
                raise RecordError(f"{rec.path or where}: leads {rec.leads} differ from the shard's first record's "
                                  f"{leads}; pass leads= to select a common set")
        except (RecordError, OSError, ValueError, EOFError) as exc:
            if isinstance(exc, DatasetError):
                raise
            rid = index.table["record_id"].iloc[i]
            reason = str(exc) if isinstance(exc, RecordError) else f"{type(exc).__name__}: {exc}"
            if not params.skip_bad_records:
                raise RecordError(f"{index.name} shard build stopped at record {rid} ({where}): {reason}; pass "
                                  "--skip-bad-records to skip unreadable records") from exc
            skipped.append({"record_id": str(rid), "file": where, "reason": reason})
            continue
        if rec is None:
            continue
        if rec.n_samples < min_len:
            short += 1
            continue
        leads = leads or rec.leads
        q, s = quantize(rec.signal, dtype)
        parts.append(q.reshape(-1))
        scales.append(s)
        offsets.append(offset)
        lengths.append(rec.n_samples)
        offset += q.size
        row = index.table.iloc[i].to_dict()
        row.update(length=rec.n_samples, fingerprint=fingerprint)
        rows.append(row)
    n_leads = len(leads) if leads else 0
    tensors = {"signals": np.concatenate(parts) if parts else np.zeros(0, dtype=dtype),
               "scales": np.stack(scales) if scales else np.zeros((0, 0), dtype=np.float32),
               "offsets": np.asarray(offsets, dtype=np.int64), "lengths": np.asarray(lengths, dtype=np.int64)}
    shards = folder / "shards"
    final = shards / f"{shard_name(k)}.safetensors"
    part = shards / f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part"
    save_file(tensors, str(part), metadata={"key": key, "shard": str(k), "n_leads": str(n_leads)})
    os.replace(part, final)
    marker = {"key": key, "shard": k, "file": final.name, "bytes": final.stat().st_size, "blake2b": _file_hash(final),
              "n_records": len(rows), "leads": leads, "rows": rows, "skipped": skipped, "dropped_short": short,
              "dropped_bad_leads": stats.get("dropped_records", 0), "zeroed_leads": stats.get("zeroed_leads", 0),
              "nonfinite_samples": stats.get("nonfinite_samples", 0)}
    _write_json_atomic(shards / f"{shard_name(k)}.done.json", marker)
    return marker


# ----------------------------------------------------------------------------------------------------------------
# Markers, merge


def _marker(folder: Path, k: int, key: str, verify: bool = False) -> dict | None:
    """Shard ``k``'s done-marker if the shard is finished: the marker is readable, has this key, names shard ``k``
    and its own file ``shard-NNNNNN.safetensors`` (no other path is ever looked at), and the shard has the size the
    marker names (with ``verify``, also its blake2b)."""
    shards = folder / "shards"
    name = f"{shard_name(k)}.safetensors"
    try:
        marker = json.loads((shards / f"{shard_name(k)}.done.json").read_text())
        ok = (isinstance(marker, dict) and marker.get("key") == key and marker.get("shard") == k
              and marker.get("file") == name and isinstance(marker.get("rows"), list)
              and marker.get("n_records") == len(marker["rows"])
              and (shards / name).stat().st_size == marker["bytes"])
        if ok and verify:
            ok = _file_hash(shards / name) == marker.get("blake2b")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return marker if ok else None


def _merge(folder: Path, n_shards: int, head: dict) -> None:
    """Merge the done-markers into the index arrays, ``records.jsonl`` and, last, ``manifest.json``."""
    key = head["key"]
    markers = []
    leads = None
    for k in range(n_shards):
        m = _marker(folder, k, key)
        if m is None:
            raise DatasetError(f"{folder / 'shards' / shard_name(k)}.done.json: shard {k} is unfinished; "
                               "build it before merging")
        if m["n_records"] and leads is not None and m["leads"] != leads:
            raise RecordError(f"{folder / 'shards' / m['file']}: leads {m['leads']} differ from the earlier shards' "
                              f"{leads}; pass leads= to select a common set")
        leads = leads or (m["leads"] if m["n_records"] else None)
        markers.append(m)
    counts = np.array([m["n_records"] for m in markers], dtype=np.int64)
    skipped = [s for m in markers for s in m["skipped"]]
    if counts.sum() == 0:
        raise DatasetError(f"{head['dataset']} at {head['root']}: no records left after preprocessing "
                           f"({len(skipped)} skipped as unreadable"
                           + (f", first: {skipped[0]['file']}: {skipped[0]['reason']}" if skipped else "") + ")")
    codes_of: dict[str, int] = {}
    lengths = np.empty(int(counts.sum()), dtype=np.int64)
    codes = np.empty(len(lengths), dtype=np.int64)
    # temporary names unique across nodes sharing the folder (equal pids on two hosts are common)
    part = folder / f".{_RECORDS}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part"
    i = 0
    with open(part, "w") as f:
        for k, m in enumerate(markers):
            for r, row in enumerate(m["rows"]):
                pid = str(row["patient_id"])
                codes[i] = codes_of.setdefault(pid, len(codes_of))
                lengths[i] = int(row["length"])
                f.write(json.dumps({**row, "shard": k, "row": r}, default=_jsonable) + "\n")
                i += 1
    os.replace(part, folder / _RECORDS)
    for name, array in ((_LENGTHS, lengths), (_CODES, codes),
                        (_STARTS, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))):
        tmp = folder / f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part.npy"
        np.save(tmp, array)
        os.replace(tmp, folder / name)
    _write_json_atomic(folder / _PATIENTS, list(codes_of))
    manifest = {**head, "leads": leads, "n_records": int(counts.sum()), "min_length": int(lengths.min()),
                "n_patients": len(codes_of),
                "dropped_bad_leads": sum(m["dropped_bad_leads"] for m in markers),
                "zeroed_leads": sum(m["zeroed_leads"] for m in markers),
                "nonfinite_samples": sum(m["nonfinite_samples"] for m in markers),
                "dropped_short": sum(m["dropped_short"] for m in markers), "n_skipped": len(skipped),
                "skipped": skipped,
                "shards": [{k: m[k] for k in ("file", "n_records", "bytes", "blake2b")} for m in markers]}
    _write_json_atomic(folder / _MANIFEST, manifest)


# ----------------------------------------------------------------------------------------------------------------
# The build


def _finished(root: Path, index: DatasetIndex, pkey: str, base: dict[str, str]) -> Path | None:
    """A finished cache folder whose stat key matches the source files now (as :func:`open_cache` checks)."""
    match = next(_stat_matches(index, pkey, base, _candidates(root, index.name, pkey)), None)
    return None if match is None else match[0]


def _unclaim_elsewhere(root: Path, index: DatasetIndex, pkey: str, folder: Path, stat_key: str) -> None:
    """Clear ``stat_key`` from every other cache folder of these parameters that claims it (as
    :func:`ssl_ecg.data.cache.open_cache` does; best effort: unwritable ones stay)."""
    _unclaim(_candidates(root, index.name, pkey), folder, stat_key)


def _open_merged(root: Path, index: DatasetIndex, folder: Path, n_shards: int, head: dict) -> ShardCache:
    """Open the cache once every shard is finished: reuse its manifest, storing the current stat key and header
    files in it if they changed (so the next open need not hash the sources again), or merge the markers anew when
    there is no manifest or the cache does not load."""
    manifest = folder / _MANIFEST
    if manifest.is_file():
        try:
            cache: ShardCache | None = ShardCache.load(folder)
        except DatasetError:
            cache = None
        if cache is not None and cache.manifest["key"] == head["key"]:
            fresh = {"stat_key": head["stat_key"], "header_files": head["header_files"]}
            if any(cache.manifest.get(k) != v for k, v in fresh.items()):
                _write_json_atomic(manifest, {**cache.manifest, **fresh})
                _unclaim_elsewhere(root, index, head["params_key"], folder, head["stat_key"])
                cache = ShardCache.load(folder)
            return cache
        manifest.unlink(missing_ok=True)  # stale (e.g. an index array lost): merged again below
    _merge(folder, n_shards, head)
    _unclaim_elsewhere(root, index, head["params_key"], folder, head["stat_key"])
    return ShardCache.load(folder)


def built_shard_sizes(index: DatasetIndex, root: str | os.PathLike, params: CacheParams = CacheParams(),
                      dtype: str = "int16") -> list[int]:
    """The ``shard_records`` of the sharded caches of ``index`` with these parameters and dtype under ``root``
    (newest first), read from their manifests: so a reader that did not choose the shard size (``prepare``)
    opens the cache that ``ssl-ecg cache build --shard-records N`` built instead of building another."""
    found = []
    for folder in Path(root).glob(f"{index.name}-*"):
        try:
            manifest = json.loads((folder / _MANIFEST).read_text())
            size = int(manifest["shard_records"])
            if manifest.get("params_key") == _shard_params_key(index, params, _storage(dtype, size)):
                found.append((folder.stat().st_mtime, size))
        except (OSError, ValueError, KeyError, TypeError, ConfigError, AttributeError):
            continue
    return [size for _, size in sorted(found, reverse=True)]


def build_shards(index: DatasetIndex, root: str | os.PathLike, params: CacheParams = CacheParams(),
                 dtype: str = "int16", shard_records: int = DEFAULT_SHARD_RECORDS, workers: int = 1,
                 node_rank: int = 0, num_nodes: int = 1, rebuild: bool = False, verify: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> ShardBuild:
    """Build (or resume, or reopen) the sharded cache of ``index`` under ``root``.

    Args:
        index: the dataset index.
        root: the cache root folder (created if missing).
        params: preprocessing parameters (as for :func:`ssl_ecg.data.cache.open_cache`).
        dtype: storage dtype, ``"int16"`` or ``"float16"`` (error bounds: :mod:`ssl_ecg.data.shards`).
        shard_records: index rows per shard.
        workers: processes building shards (1: in this process).
        node_rank, num_nodes: this node's share of the shards (``k % num_nodes == node_rank``).
        rebuild: delete the folder of this key and build anew (single node only).
        verify: re-hash every source file instead of trusting unchanged stats, and every finished shard of this
            node against its marker's blake2b (a mismatching shard is rebuilt).
        progress: called as ``progress(done, total)`` after each shard this call builds.

    Returns:
        A :class:`ShardBuild`; its ``cache`` is the opened cache once every shard is built and merged.

    Raises:
        ConfigError: a bad dtype, shard size, worker count or node share.
        RecordError: a record cannot be read (without ``params.skip_bad_records``), or shards disagree on leads.
        DatasetError: no record left, or a source file cannot be read.
    """
    storage = _storage(dtype, shard_records)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: expected a positive integer, got {workers!r}")
    if not (isinstance(num_nodes, int) and isinstance(node_rank, int) and 0 <= node_rank < num_nodes):
        raise ConfigError(f"node_rank, num_nodes: expected 0 <= node_rank < num_nodes, got {node_rank!r}, "
                          f"{num_nodes!r}")
    if rebuild and num_nodes > 1:
        raise ConfigError("rebuild: a multi-node build cannot rebuild (other nodes share the folder); delete the "
                          "cache folder once, then build on every node")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    pkey = _shard_params_key(index, params, storage)
    base = source_files(index, exclude=root)
    if not rebuild and not verify:
        done = _finished(root, index, pkey, base)
        if done is not None:
            try:
                cache = ShardCache.load(done)
            except DatasetError:
                pass  # e.g. a shard lost: hash, rebuild what is unfinished and merge again below
            else:
                n = len(cache.manifest["shards"])
                return ShardBuild(done, cache.manifest["key"], n, [], n, 0, 0.0, cache)
    src = _hash_sources(index, base, {}, {})
    key = _content_key(pkey, src.hashes)
    folder = root / f"{index.name}-{key[:16]}"
    if rebuild and folder.exists():
        shutil.rmtree(folder)
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    n_shards = -(-len(index) // shard_records)
    head = {"key": key, "params_key": pkey, "stat_key": _stat_key(pkey, src.stats), **storage,
            "dataset": index.name, "root": str(index.root), "params": params.as_dict(), "n_index_rows": len(index),
            "n_shards": n_shards, "n_source_files": len(src.stats),
            "header_files": sorted({r for v in src.refs.values() for r in v})}
    _write_json_atomic(folder / _BUILD, head)
    mine = [k for k in range(n_shards) if k % num_nodes == node_rank]
    todo = [k for k in mine if _marker(folder, k, key, verify=verify) is None]
    for stale in (folder / "shards").glob(".*.part"):  # a killed worker's file (only this node's shards)
        try:
            if int(stale.name.split("shard-")[1][:6]) % num_nodes == node_rank:
                stale.unlink()
        except (ValueError, IndexError, OSError):
            continue
    if todo and (folder / _MANIFEST).exists():
        (folder / _MANIFEST).unlink()  # the merged view is stale until every shard is finished again
    ctx = {"index": index, "params": params, "dtype": dtype, "shard_records": shard_records, "folder": folder,
           "key": key}
    t0 = time.perf_counter()
    if workers == 1 or len(todo) <= 1:
        _WORKER.clear()
        _WORKER.update(ctx)
        for n, k in enumerate(todo, 1):
            _build_one(k)
            if progress:
                progress(n, len(todo))
    elif todo:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        _WORKER.clear()
        _WORKER.update(ctx)  # inherited under fork
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=multiprocessing.get_context(method),
                                 initializer=_init_worker, initargs=(None if method == "fork" else ctx,)) as pool:
            for n, _ in enumerate(pool.map(_build_one, todo), 1):
                if progress:
                    progress(n, len(todo))
    seconds = time.perf_counter() - t0
    pending = sum(_marker(folder, k, key) is None for k in range(n_shards))
    cache = None
    if pending == 0:
        cache = _open_merged(root, index, folder, n_shards, head)
    return ShardBuild(folder, key, n_shards, todo, len(mine) - len(todo), pending, seconds, cache)
