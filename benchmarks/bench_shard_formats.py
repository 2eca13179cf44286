"""Which library to store the sharded cache with: write rate, random-window reads, size and memory per format.

One set of int16 records with per-lead scales (synthesised from real LUDB and
PTB-XL records as in ``bench_shards.py``: 12 leads, 10 s at 100 Hz) is written
in each candidate format with about 1,024 records per shard, then read back in
a fresh subprocess per format: random 2.5 s windows of random records, each
dequantised to float32 (what a DataLoader worker does). Candidates:

- ``safetensors``: one file per shard with tensors signals/scales/offsets/lengths,
  read through a memory map (:class:`ssl_ecg.data.shards.ShardCache`'s reader);
- ``npy``: one folder per shard of ``.npy`` files, ``np.load(mmap_mode="r")``;
- ``zarr``: one zarr v3 array of all samples, chunks of 4,096 samples inside
  shards of 1,024 chunks, with zarr's default compression (zstd), and the same
  without compression;
- ``webdataset``: tar shards of one ``.npy`` per record; webdataset streams
  them in order (random access is not what it is for), so its row is a
  sequential read;
- ``litdata``: ``litdata.optimize`` chunks of 64 MB, read with
  ``StreamingDataset.__getitem__`` from the local folder;
- ``mosaicml`` (mosaicml-streaming's MDS format): ``MDSWriter`` writes one sample per
  record with columns signal (``ndarray:int16``, its shape stored per sample), scale
  (``ndarray:float32``) and length (``int64``), with a shard size limit of about 1,024
  records, uncompressed (``mosaicml``) or zstd-compressed (``mosaicml_zstd``). Read with
  ``StreamingDataset(local=folder, shuffle=False, batch_size=256)[i]``, which opens the
  shard file, reads the sample's offset pair and bytes (no memory map) and decodes the
  columns (a compressed shard is first decompressed whole into the folder). Its named
  shared memory is cleaned before and after each read process.

mosaicml-streaming 0.13.0 pins ``numpy<2.2`` and ``xxhash<4`` and imports ``transformers``
at import time, so it is not installed in the project venv; for its rows install it apart
(``pip install --no-deps --target DIR mosaicml-streaming==0.13.0 brotli python-snappy
cramjam zstd catalogue transformers huggingface_hub tokenizers regex``) and run with
``PYTHONPATH=DIR``.

Command::

    SSL_ECG_DATA=/work/shared/data nice -n 19 .venv/bin/python benchmarks/bench_shard_formats.py \\
        --records 4096 --out /tmp/bench_formats
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_shards import base_pool, synthetic_index  # noqa: E402

from ssl_ecg.data.shards import quantize  # noqa: E402

WINDOW, SHARD = 250, 1024
FORMATS = ("safetensors", "npy", "zarr", "zarr_raw", "webdataset", "litdata", "mosaicml", "mosaicml_zstd")
# The library each writer imports; imported before the write is timed (streaming imports transformers, seconds).
LIBRARY = {"safetensors": "safetensors.numpy", "zarr": "zarr", "zarr_raw": "zarr", "webdataset": "webdataset",
           "litdata": "litdata", "mosaicml": "streaming", "mosaicml_zstd": "streaming"}


def records(n: int, data: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    index = synthetic_index(base_pool(data, 64), n, Path("/tmp/bench_formats_src"))
    return [quantize(index.read(i).signal, "int16") for i in range(n)]


def _shards(recs):
    for k in range(0, len(recs), SHARD):
        yield k // SHARD, recs[k:k + SHARD]


def _tensors(part):
    lengths = np.array([q.shape[1] for q, _ in part], dtype=np.int64)
    sizes = np.array([q.size for q, _ in part], dtype=np.int64)
    return {"signals": np.concatenate([q.reshape(-1) for q, _ in part]), "scales": np.stack([s for _, s in part]),
            "offsets": np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64), "lengths": lengths}


def write(fmt: str, recs, out: Path) -> None:
    out.mkdir(parents=True)
    if fmt == "safetensors":
        from safetensors.numpy import save_file
        for k, part in _shards(recs):
            save_file(_tensors(part), str(out / f"shard-{k:06d}.safetensors"))
    elif fmt == "npy":
        for k, part in _shards(recs):
            (out / f"{k:06d}").mkdir()
            for name, arr in _tensors(part).items():
                np.save(out / f"{k:06d}" / f"{name}.npy", arr)
    elif fmt in ("zarr", "zarr_raw"):
        import zarr
        t = _tensors(recs)
        kw = {} if fmt == "zarr" else {"compressors": None}
        arr = zarr.create_array(str(out / "signals.zarr"), shape=t["signals"].shape, dtype="int16",
                                chunks=(4096,), shards=(4096 * 1024,), **kw)
        arr[:] = t["signals"]
        for name in ("scales", "offsets", "lengths"):
            np.save(out / f"{name}.npy", t[name])
    elif fmt == "webdataset":
        import webdataset as wds
        with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=SHARD, verbose=0) as sink:
            for i, (q, s) in enumerate(recs):
                sink.write({"__key__": f"r{i:07d}", "signal.npy": q, "scale.npy": s})
    elif fmt == "litdata":
        from litdata import optimize
        optimize(fn=_litdata_item, inputs=list(recs), output_dir=str(out), chunk_bytes="64MB", num_workers=1)
    elif fmt in ("mosaicml", "mosaicml_zstd"):
        from streaming import MDSWriter
        # size_limit counts encoded sample bytes; 64 bytes a record covers the shape, scale and offset overhead,
        # so a shard holds about SHARD records like the other formats.
        limit = SHARD * (int(np.mean([q.nbytes + s.nbytes for q, s in recs])) + 64)
        columns = {"signal": "ndarray:int16", "scale": "ndarray:float32", "length": "int64"}
        with MDSWriter(out=str(out), columns=columns, size_limit=limit,
                       compression="zstd" if fmt == "mosaicml_zstd" else None, progress_bar=False) as sink:
            for q, s in recs:
                sink.write({"signal": q, "scale": s, "length": q.shape[1]})
    else:
        raise SystemExit(f"unknown format {fmt!r}")


def _litdata_item(rec: tuple[np.ndarray, np.ndarray]) -> dict:
    return {"signal": rec[0], "scale": rec[1]}


def du(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


# ----------------------------------------------------------------------------------------------------------------
# Reading (in a fresh subprocess: --read FORMAT FOLDER N)


def mem() -> dict:
    out = {}
    with open("/proc/self/status") as f:  # RssAnon: own memory; RssFile: mapped file pages (page cache)
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon"):
                out[k] = int(v.split()[0]) / 1024
    return {"rss_mb": out["VmRSS"], "anon_mb": out["RssAnon"]}


def reader(fmt: str, folder: Path, n: int):
    """A function (record, start) -> (L, WINDOW) float32 for the random-access formats."""
    if fmt == "safetensors":
        from ssl_ecg.data.shards import _Shard
        shards = {}

        def read(i, start):
            k, row = divmod(i, SHARD)
            if k not in shards:
                shards[k] = _Shard(folder / f"shard-{k:06d}.safetensors")
            sh = shards[k]
            t, off = int(sh.lengths[row]), int(sh.offsets[row])
            rec = sh.signals[off:off + 12 * t].reshape(12, t)
            return rec[:, start:start + WINDOW].astype(np.float32) * sh.scales[row][:, None]
        return read
    if fmt == "npy":
        shards = {}

        def read(i, start):
            k, row = divmod(i, SHARD)
            if k not in shards:
                shards[k] = {name: np.load(folder / f"{k:06d}" / f"{name}.npy", mmap_mode="r").view(np.ndarray)
                             for name in ("signals", "scales", "offsets", "lengths")}
            sh = shards[k]
            t, off = int(sh["lengths"][row]), int(sh["offsets"][row])
            rec = sh["signals"][off:off + 12 * t].reshape(12, t)
            return rec[:, start:start + WINDOW].astype(np.float32) * sh["scales"][row][:, None]
        return read
    if fmt in ("zarr", "zarr_raw"):
        import zarr
        arr = zarr.open_array(str(folder / "signals.zarr"), mode="r")
        scales, offsets, lengths = (np.load(folder / f"{m}.npy") for m in ("scales", "offsets", "lengths"))

        def read(i, start):
            t, off = int(lengths[i]), int(offsets[i])
            span = arr[off + start:off + 11 * t + start + WINDOW]
            x = np.lib.stride_tricks.as_strided(span, (12, WINDOW), (t * span.itemsize, span.itemsize))
            return x.astype(np.float32) * scales[i][:, None]
        return read
    if fmt == "litdata":
        from litdata import StreamingDataset
        ds = StreamingDataset(str(folder))

        def read(i, start):
            item = ds[i]
            return item["signal"][:, start:start + WINDOW].astype(np.float32) * item["scale"][:, None]
        return read
    if fmt in ("mosaicml", "mosaicml_zstd"):
        import atexit

        from streaming import StreamingDataset
        from streaming.base.util import clean_stale_shared_memory
        # StreamingDataset registers its local folder in named shared memory; a killed earlier run leaves that
        # behind and the next one would refuse the folder as "in use".
        clean_stale_shared_memory()
        atexit.register(clean_stale_shared_memory)
        ds = StreamingDataset(local=str(folder), shuffle=False, batch_size=256)

        def read(i, start):
            item = ds[i]
            return item["signal"][:, start:start + WINDOW].astype(np.float32) * item["scale"][:, None]
        return read
    raise SystemExit(f"no random reader for {fmt!r}")


def read_main(fmt: str, folder: Path, n: int, reads: int) -> None:
    rng = np.random.default_rng(0)
    before = mem()
    t0 = time.perf_counter()
    if fmt == "webdataset":
        import webdataset as wds
        urls = sorted(str(p) for p in folder.glob("*.tar"))
        ds = wds.WebDataset(urls, shardshuffle=False).decode()
        count = 0
        for sample in ds:
            q, s = sample["signal.npy"], sample["scale.npy"]
            start = int(rng.integers(0, q.shape[1] - WINDOW + 1))
            q[:, start:start + WINDOW].astype(np.float32) * s[:, None]
            count += 1
            if count == reads:
                break
        first = float("nan")
    else:
        read = reader(fmt, folder, n)
        t = time.perf_counter()
        read(0, 0)
        first = time.perf_counter() - t
        items = rng.integers(0, n, reads)
        starts = rng.integers(0, 1000 - WINDOW + 1, reads)
        t0 = time.perf_counter()
        for i, s in zip(items.tolist(), starts.tolist()):
            read(i, s)
        count = reads
    secs = time.perf_counter() - t0
    after = mem()
    print(json.dumps({"windows_per_s": count / secs, "first_read_s": first, "rss_mb": after["rss_mb"],
                      "anon_growth_mb": after["anon_mb"] - before["anon_mb"], "random": fmt != "webdataset"}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=4096)
    ap.add_argument("--reads", type=int, default=5000)
    ap.add_argument("--formats", nargs="+", default=list(FORMATS))
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_formats"))
    ap.add_argument("--read", nargs=3, metavar=("FORMAT", "FOLDER", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.read:
        read_main(args.read[0], Path(args.read[1]), int(args.read[2]), args.reads)
        return
    data = Path(os.environ.get("SSL_ECG_DATA", ""))
    if not (data / "ludb").is_dir():
        sys.exit("set SSL_ECG_DATA to the folder holding ludb/ and ptbxl/")
    recs = records(args.records, data)
    raw = sum(q.nbytes for q, _ in recs)
    print(f"{len(recs)} records, {raw / 2**20:.0f} MB of int16 samples; load average {os.getloadavg()}", flush=True)
    rows = []
    for fmt in args.formats:
        folder = args.out / fmt
        shutil.rmtree(folder, ignore_errors=True)
        if fmt in LIBRARY:
            importlib.import_module(LIBRARY[fmt])
        t = time.perf_counter()
        write(fmt, recs, folder)
        secs = time.perf_counter() - t
        size = du(folder)  # as written: mosaicml_zstd's reader adds the decompressed shards beside the compressed ones
        done = subprocess.run([sys.executable, __file__, "--read", fmt, str(folder), str(len(recs)),
                               "--reads", str(args.reads)], capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            print(f"{fmt}: read failed: {done.stderr[-1500:]}", flush=True)
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append({"format": fmt, "write_records_per_s": len(recs) / secs, "mb": size / 2**20, **r})
        print(json.dumps(rows[-1]), flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree("/tmp/bench_formats_src", ignore_errors=True)
    print(f"\nload average at the end {os.getloadavg()}")
    print("| format | write records/s | MB on disk | windows/s | access | first read s | RSS MB | anon growth MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} | {r['write_records_per_s']:.0f} | {r['mb']:.1f} | {r['windows_per_s']:.0f} | "
              f"{'random' if r['random'] else 'sequential'} | {r['first_read_s']:.3f} | {r['rss_mb']:.0f} | "
              f"{r['anon_growth_mb']:.1f} |")


if __name__ == "__main__":
    main()
