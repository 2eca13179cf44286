"""Cost of the record cache's staleness checks: the open check (one stat per source file) and --verify (hash all).

Run: ``SSL_ECG_DATA=../shared/data .venv/bin/python benchmarks/bench_cache_keys.py``

For MIT-BIH and LUDB, after one build into a fresh folder:

1. ``walk``: listing the source files (:func:`ssl_ecg.data.cache.source_files`: record files and the
   label files at any depth under the root);
2. ``stat``: one ``os.stat`` per source file and the stat key;
3. ``open``: a whole ``open_cache`` of the built cache (walk, stat, key, then ``RecordCache.load``
   with its size checks), the path every training run takes;
4. ``verify``: ``open_cache(..., verify=True)``, which re-hashes every source file (blake2b) with the
   files in the page cache (a cold read adds the disk's read time for the dataset's bytes).

Then a synthetic flat dataset of ``--synthetic`` records (two empty files each, plus 2 %% extra files
per folder) measures how the open check scales, per record and per file, to extrapolate to millions.
Medians over ``--repeats`` interleaved runs (``benchmarks/_timing.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved_medians  # noqa: E402

from ssl_ecg.data import cache as cache_mod  # noqa: E402
from ssl_ecg.data import load_index  # noqa: E402
from ssl_ecg.data.cache import CacheParams, open_cache, source_files  # noqa: E402
from ssl_ecg.data.index import DatasetIndex  # noqa: E402


def open_check(index: DatasetIndex, params: CacheParams, exclude: Path) -> str:
    """The open check alone: walk, stat every source file, stat key."""
    files = source_files(index, exclude=exclude)
    return cache_mod._stat_key(cache_mod._params_key(index, params), cache_mod._stat_all(files))


def bench_dataset(name: str, root: Path, repeats: int) -> dict:
    index = load_index(name, root)
    # MIT-BIH's second lead is V1, V2, V4 or V5 depending on the record: cache the two channels by position.
    params = CacheParams(fs=250.0, leads=("#0", "#1") if name == "mitdb" else None)
    tmp = Path(tempfile.mkdtemp(prefix="bench_cache_keys_"))
    try:
        t0 = time.perf_counter()
        cache = open_cache(index, tmp, params)
        build = time.perf_counter() - t0
        files = source_files(index, exclude=tmp)
        n_bytes = sum(os.stat(p).st_size for p in files.values())
        times = interleaved_medians({
            "walk": lambda: source_files(index, exclude=tmp),
            "stat": lambda: cache_mod._stat_all(files),
            "open": lambda: open_cache(index, tmp, params),
            "verify": lambda: open_cache(index, tmp, params, verify=True),
        }, repeats)
        assert open_cache(index, tmp, params).folder == cache.folder
        return {"dataset": name, "records": len(index), "files": len(files), "MB": n_bytes / 1e6, "build_s": build,
                **{k: v for k, v in times.items()}}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_synthetic(n_records: int, per_folder: int, repeats: int) -> dict:
    """A flat dataset of ``n_records`` (empty .hea + .dat) in folders of ``per_folder``, plus a labels CSV."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_cache_keys_syn_"))
    try:
        root = tmp / "data"
        paths = []
        for k in range(n_records):
            folder = root / f"{k // per_folder:05d}"
            if k % per_folder == 0:
                folder.mkdir(parents=True)
            stem = folder / f"{k:08d}"
            for ext in (".hea", ".dat"):
                with open(str(stem) + ext, "wb"):
                    pass
            if k % 50 == 0:  # files the check must list but skip (annotations, notes)
                with open(str(stem) + ".txt", "wb"):
                    pass
            paths.append(str(stem))
        pd.DataFrame({"record_id": range(n_records)}).to_csv(root / "labels.csv", index=False)
        table = pd.DataFrame({"record_id": [str(i) for i in range(n_records)], "patient_id": range(n_records),
                              "patient_id_source": "record", "fs": 500.0, "n_samples": 5000, "path": paths})
        index = DatasetIndex("synthetic", root, table, reader=lambda row: None)
        params = CacheParams()
        n_files = len(source_files(index))
        times = interleaved_medians({
            "walk": lambda: source_files(index),
            "open_check": lambda: open_check(index, params, tmp / "cache"),
        }, repeats)
        one = list(source_files(index).values())
        t0 = time.perf_counter()
        for p in one:
            os.stat(p)
        bare_stat = (time.perf_counter() - t0) / len(one)
        return {"records": n_records, "files": n_files, "bare_stat_us": bare_stat * 1e6, **times}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--synthetic", type=int, default=50000, help="records in the synthetic dataset (0: skip)")
    parser.add_argument("--per-folder", type=int, default=1000, help="records per synthetic folder")
    args = parser.parse_args()
    base = Path(os.environ.get("SSL_ECG_DATA", "../shared/data"))

    print("| dataset | records | source files | MB | build s | walk ms | stat ms | open ms | verify ms | "
          "verify MB/s | open µs/file |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ("mitdb", "ludb"):
        r = bench_dataset(name, base / name, args.repeats)
        print(f"| {name} | {r['records']} | {r['files']} | {r['MB']:.1f} | {r['build_s']:.1f} | "
              f"{r['walk'] * 1e3:.2f} | {r['stat'] * 1e3:.2f} | {r['open'] * 1e3:.1f} | {r['verify'] * 1e3:.0f} | "
              f"{r['MB'] / r['verify']:.0f} | {r['open'] / r['files'] * 1e6:.1f} |")
    if args.synthetic:
        s = bench_synthetic(args.synthetic, args.per_folder, max(3, args.repeats // 2))
        per_record = s["open_check"] / s["records"]
        print()
        print(f"synthetic: {s['records']} records, {s['files']} source files (+{s['records'] // 50} skipped .txt)")
        print(f"  walk {s['walk'] * 1e3:.0f} ms, open check (walk + stat + key) {s['open_check'] * 1e3:.0f} ms")
        print(f"  per record {per_record * 1e6:.2f} µs, per source file {s['open_check'] / s['files'] * 1e6:.2f} µs "
              f"(bare os.stat {s['bare_stat_us']:.2f} µs)")
        for n in (1_000_000, 10_000_000):
            print(f"  extrapolated open check at {n:,} records (2 files each): {per_record * n:.1f} s")


if __name__ == "__main__":
    main()
