"""Cost of the sharded record cache from 1k to 300k records: build, size, loader start, throughput, RAM, shuffle.

Records are synthesised from real LUDB and PTB-XL records (``$SSL_ECG_DATA``): a
pool of real 12-lead 10 s records at 100 Hz, each synthetic record one of them
rolled by a random time shift, with a random gain per lead (0.8-1.2) and
Gaussian noise (0.02 mV), under a new record id and one new patient id per
three records. They come from an in-memory :class:`DatasetIndex` whose reader
makes them, so a build runs the real path (read, fingerprint, preprocess at
100 Hz with record normalisation, quantise, write, merge) without writing 300k
source files; the build rate therefore leaves out the WFDB file reading (see
the memmap baseline row for a build from WFDB files on the same records).

Per size: the build with 1 and 2 worker processes (records/s), size on disk,
and, in a fresh subprocess per loader setting (0 and 2 DataLoader workers,
batch 256 of 2.5 s windows, :class:`~ssl_ecg.data.sampler.EpochShuffleSampler`
over a seeded permutation): the time to the first batch, the steady windows/s
over the next batches, and the resident memory (RSS and its private part, anon:
RSS counts the shared page cache of the memory-mapped shards) of the main
process and each worker; and the epoch-shuffle cost. Then log-log slopes and
an extrapolation to 10 M records.

Command (what benchmarks/README.md reports; nice: the machine is shared)::

    SSL_ECG_DATA=/work/shared/data nice -n 19 .venv/bin/python benchmarks/bench_shards.py \\
        --sizes 1000 10000 100000 300000 --out /tmp/bench_shards
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ssl_ecg.data import load_index
from ssl_ecg.data.cache import CacheParams, open_cache
from ssl_ecg.data.index import DatasetIndex
from ssl_ecg.data.preprocess import preprocess
from ssl_ecg.data.record import STANDARD_LEADS, Record
from ssl_ecg.data.sampler import EpochShuffleSampler
from ssl_ecg.data.shard_build import build_shards

PARAMS = CacheParams(fs=100.0)
WINDOW = 250  # 2.5 s at 100 Hz
BATCH = 256


def base_pool(data: Path, per_dataset: int) -> list[np.ndarray]:
    """Real 12-lead records at 100 Hz, 10 s: LUDB and PTB-XL, ``per_dataset`` of each."""
    pool = []
    for name, options in (("ludb", {}), ("ptbxl", {"fs": 100})):
        index = load_index(name, data / name, **options)
        for i in range(min(per_dataset, len(index))):
            rec = preprocess(index.read(i), fs=100.0, leads=STANDARD_LEADS, normalization="none")
            if rec is not None and rec.n_samples >= 1000:
                pool.append(np.ascontiguousarray(rec.signal[:, :1000], dtype=np.float32))
    return pool


def synthetic_index(pool: list[np.ndarray], n: int, root: Path) -> DatasetIndex:
    """n synthetic records (module docstring) read from memory; three records per patient."""
    ids = [f"syn{i:07d}" for i in range(n)]
    table = pd.DataFrame({"record_id": ids, "patient_id": [f"p{i // 3:07d}" for i in range(n)],
                          "patient_id_source": "dataset", "fs": 100.0, "n_samples": 1000,
                          "label": [f"c{i % 5}" for i in range(n)],
                          "path": [str(root / rid) for rid in ids]})  # no such files: nothing to hash

    def reader(row: pd.Series) -> Record:
        i = int(row["record_id"][3:])
        rng = np.random.default_rng([7, i])
        base = pool[int(rng.integers(len(pool)))]
        x = np.roll(base, int(rng.integers(base.shape[1])), axis=1) * rng.uniform(0.8, 1.2, (base.shape[0], 1))
        x = (x + 0.02 * rng.standard_normal(x.shape)).astype(np.float32)
        return Record(x, 100.0, list(STANDARD_LEADS), row["record_id"], row["patient_id"])

    root.mkdir(parents=True, exist_ok=True)
    return DatasetIndex("synthetic", root, table, reader, ("label",))


def du(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


LOADER = r"""
import json, os, sys, time
import numpy as np
from torch.utils.data import DataLoader
from ssl_ecg.data.sampler import EpochShuffleSampler
T0 = time.perf_counter()
folder, kind, workers, batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if kind == "shards":
    from ssl_ecg.data.shards import ShardCache, ShardWindows
    data = ShardWindows(ShardCache.load(folder), %(window)d, seed=0)
else:
    from ssl_ecg.data.cache import RecordCache
    from ssl_ecg.data.dataset import CacheWindows
    data = CacheWindows(RecordCache.load(folder), %(window)d, seed=0)
sampler = EpochShuffleSampler(len(data), seed=0)
loader = DataLoader(data, batch_size=%(batch)d, sampler=sampler, num_workers=workers, drop_last=True,
                    persistent_workers=workers > 0, multiprocessing_context="fork" if workers else None)

def mem(pid):
    # RssAnon: the process's own memory (heap, arrays); RssFile: mapped file pages (torch's libraries and the
    # touched cache pages: shared, reclaimable page cache, so not what grows per worker)
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[k] = int(v.split()[0]) / 1024
    return {"rss_mb": out["VmRSS"], "anon_mb": out["RssAnon"], "file_mb": out["RssFile"]}

t = time.perf_counter()
it = iter(loader)
next(it)
first = time.perf_counter() - t
startup = time.perf_counter() - T0
t = time.perf_counter()
n = 0
epoch = 0
for _ in range(batches):
    try:
        x = next(it)[0]
    except StopIteration:  # a small set: next epoch (persistent workers)
        epoch += 1
        sampler.set_epoch(epoch)
        it = iter(loader)
        x = next(it)[0]
    n += x.shape[0]
steady = n / (time.perf_counter() - t)
pids = [w.pid for w in getattr(it, "_workers", [])]
print(json.dumps({"first_batch_s": first, "startup_s": startup, "windows_per_s": steady, "main": mem(os.getpid()),
                  "workers": [mem(p) for p in pids]}))
""" % {"window": WINDOW, "batch": BATCH}


def loader_run(folder: Path, kind: str, workers: int, batches: int) -> dict:
    done = subprocess.run([sys.executable, "-c", LOADER, str(folder), kind, str(workers), str(batches)],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def shuffle_cost(n: int, repeats: int = 3) -> dict:
    """Seconds per epoch shuffle: the permutation alone, and the sampler's full index list."""
    s = EpochShuffleSampler(n, seed=0)
    perm, full = [], []
    for e in range(repeats):
        t = time.perf_counter()
        np.random.default_rng([0, e, 1]).permutation(n)
        perm.append(time.perf_counter() - t)
        s.set_epoch(e)
        t = time.perf_counter()
        list(s)
        full.append(time.perf_counter() - t)
    return {"permutation_s": float(np.median(perm)), "sampler_list_s": float(np.median(full))}


def slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0]) if len(xs) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--build-workers-max-size", type=int, default=100000,
                    help="above this size build only with the largest worker count (time)")
    ap.add_argument("--memmap-max-size", type=int, default=10000, help="memmap baseline up to this size")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_shards"))
    ap.add_argument("--keep", action="store_true", help="keep the caches (default: delete each after measuring)")
    args = ap.parse_args()
    data = Path(os.environ.get("SSL_ECG_DATA", ""))
    if not (data / "ludb").is_dir():
        sys.exit("set SSL_ECG_DATA to the folder holding ludb/ and ptbxl/")
    pool = base_pool(data, 64)
    print(f"pool: {len(pool)} real records; load average {os.getloadavg()}", flush=True)
    warm = synthetic_index(pool, 256, args.out / "src-warm-up")  # first-call costs (imports, scipy) out of n = 1k
    build_shards(warm, args.out / "warm-up", PARAMS, shard_records=128, workers=2)
    shutil.rmtree(args.out / "warm-up", ignore_errors=True)
    results = []
    for n in args.sizes:
        index = synthetic_index(pool, n, args.out / f"src-{n}")
        row: dict = {"n": n, "build": {}, "loadavg_start": os.getloadavg()}
        counts = args.workers if n <= args.build_workers_max_size else [max(args.workers)]
        folder = None
        for w in counts:
            root = args.out / f"shards-{n}"
            shutil.rmtree(root, ignore_errors=True)
            t = time.perf_counter()
            built = build_shards(index, root, PARAMS, shard_records=1024, workers=w)
            secs = time.perf_counter() - t
            row["build"][w] = {"seconds": secs, "records_per_s": n / secs}
            folder = built.folder
            print(f"n={n} build workers={w}: {secs:.1f} s, {n / secs:.0f} records/s", flush=True)
        row["bytes"] = du(folder)
        for lw in (0, 2):
            row[f"loader{lw}"] = loader_run(folder, "shards", lw, args.batches)
            print(f"n={n} loader workers={lw}: {row[f'loader{lw}']}", flush=True)
        row["shuffle"] = shuffle_cost(n)
        if n <= args.memmap_max_size:
            mroot = args.out / f"memmap-{n}"
            shutil.rmtree(mroot, ignore_errors=True)
            t = time.perf_counter()
            cache = open_cache(index, mroot, PARAMS)
            secs = time.perf_counter() - t
            row["memmap"] = {"build_s": secs, "records_per_s": n / secs, "bytes": du(cache.folder)}
            for lw in (0, 2):
                row["memmap"][f"loader{lw}"] = loader_run(cache.folder, "memmap", lw, args.batches)
            print(f"n={n} memmap: {row['memmap']}", flush=True)
            if not args.keep:
                shutil.rmtree(mroot, ignore_errors=True)
        row["loadavg_end"] = os.getloadavg()
        results.append(row)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        if not args.keep:
            shutil.rmtree(args.out / f"shards-{n}", ignore_errors=True)
    report(results)


def report(results: list[dict]) -> None:
    print("\n| records | build rec/s (1 w) | build rec/s (2 w) | MB on disk | first batch s (0 / 2 w) "
          "| windows/s (0 w) | windows/s (2 w) | worker RSS / anon MB | main anon MB (0 w) | shuffle s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        b = r["build"]
        w2 = r["loader2"]["workers"]
        rss = np.mean([w["rss_mb"] for w in w2]) if w2 else float("nan")
        uss = np.mean([w["anon_mb"] for w in w2]) if w2 else float("nan")
        one = f"{b[1]['records_per_s']:.0f}" if 1 in b else "-"
        two = f"{b[2]['records_per_s']:.0f}" if 2 in b else "-"
        print(f"| {r['n']:,} | {one} | {two} | {r['bytes'] / 2**20:.0f} | {r['loader0']['first_batch_s']:.2f} / "
              f"{r['loader2']['first_batch_s']:.2f} | {r['loader0']['windows_per_s']:.0f} | "
              f"{r['loader2']['windows_per_s']:.0f} | {rss:.0f} / {uss:.0f} | {r['loader0']['main']['anon_mb']:.0f} | "
              f"{r['shuffle']['sampler_list_s']:.3f} |")
    ns = [r["n"] for r in results]
    if len(ns) > 1:
        fits = {
            "windows/s (2 w)": [r["loader2"]["windows_per_s"] for r in results],
            "worker anon MB": [np.mean([w["anon_mb"] for w in r["loader2"]["workers"]]) for r in results],
            "main anon MB (0 w)": [r["loader0"]["main"]["anon_mb"] for r in results],
            "shuffle s": [r["shuffle"]["sampler_list_s"] for r in results],
            "MB on disk": [r["bytes"] / 2**20 for r in results],
        }
        print("\nlog-log slopes over", ns)
        for name, ys in fits.items():
            k = slope(ns, ys)
            at = ys[-1] * (1e7 / ns[-1]) ** k
            print(f"- {name}: slope {k:.3f}; at 10 M records (from {ns[-1]:,} along the slope): {at:,.3g}")
        big = max(results, key=lambda r: r["n"])
        rate = max(v["records_per_s"] for v in big["build"].values())
        print(f"- build: {1e7 / rate / 3600:.1f} h for 10 M records at {rate:.0f} records/s "
              f"({max(big['build'])} workers), linear in workers and nodes (shards are independent)")
    mm = [r for r in results if "memmap" in r]
    for r in mm:
        m = r["memmap"]
        print(f"memmap n={r['n']:,}: build {m['records_per_s']:.0f} rec/s, {m['bytes'] / 2**20:.0f} MB, "
              f"windows/s {m['loader0']['windows_per_s']:.0f} (0 w) / {m['loader2']['windows_per_s']:.0f} (2 w), "
              f"worker anon {np.mean([w['anon_mb'] for w in m['loader2']['workers']]):.0f} MB, "
              f"main anon {m['loader0']['main']['anon_mb']:.0f} MB")


if __name__ == "__main__":
    main()
