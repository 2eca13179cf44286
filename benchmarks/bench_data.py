"""Benchmark the record cache against wfdb and a bare memmap, and the loader against the encoder.

Run: ``SSL_ECG_DATA=../shared/data .venv/bin/python benchmarks/bench_data.py``

1. Random 4 s segment reads (250 Hz, 12 leads) from LUDB: ``RecordCache.segment`` (copied to
   an array, as a Dataset returns it), ``wfdb.rdrecord`` of the record per item then a slice,
   and a bare ``np.memmap`` slice of the same file at the same offsets.
2. Cache build throughput (records/s), in a fresh folder.
3. DataLoader throughput with 2 workers (CacheWindows + SegmentViews per batch), against the
   CLOCS encoder's forward+backward throughput at 2500 samples x 1 lead, batch 256.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import wfdb
from torch.utils.data import DataLoader

from augmentations import SegmentViews
from ssl_ecg.data import load_index
from ssl_ecg.data.cache import CacheParams, open_cache
from ssl_ecg.data.dataset import CacheWindows
from ssl_ecg.models import ClocsEncoder


def rate(fn, n):
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def main():
    root = Path(os.environ.get("SSL_ECG_DATA", "../shared/data")) / "ludb"
    index = load_index("ludb", root)
    tmp = Path(tempfile.mkdtemp())
    try:
        t0 = time.perf_counter()
        cache = open_cache(index, tmp, CacheParams(fs=250.0))
        build = len(cache) / (time.perf_counter() - t0)
        rng = np.random.default_rng(0)
        n_items = 20000
        recs = rng.integers(0, len(cache), n_items)
        starts = rng.integers(0, 2500 - 1000 + 1, n_items)
        offsets = cache.table["offset"].to_numpy()
        raw = np.memmap(cache.folder / "signals.f32", dtype=np.float32, mode="r")

        def ours(i):
            return np.array(cache.segment(int(recs[i]), int(starts[i]), 1000))

        def bare(i):
            block = raw[offsets[recs[i]]:offsets[recs[i]] + 12 * 2500].reshape(12, 2500)
            return np.array(block[:, starts[i]:starts[i] + 1000])

        paths = index.table["path"].tolist()

        def wf(i):
            r = wfdb.rdrecord(paths[recs[i]], physical=False)
            return r.d_signal[2 * starts[i]:2 * starts[i] + 2000].T  # 500 Hz source

        r_wfdb = rate(wf, 300)
        r_ours, r_bare = [], []
        for _ in range(3):  # interleaved
            r_ours.append(rate(ours, n_items))
            r_bare.append(rate(bare, n_items))
        r_ours, r_bare = float(np.median(r_ours)), float(np.median(r_bare))
        print(f"cache build: {build:.0f} records/s ({len(cache)} LUDB records, 500 -> 250 Hz)")
        print(f"random 4 s segment reads, items/s: cache {r_ours:,.0f} | bare memmap {r_bare:,.0f} | "
              f"wfdb.rdrecord {r_wfdb:,.0f}")
        print(f"  cache vs wfdb: {r_ours / r_wfdb:.0f}x faster; cache vs bare memmap: {r_bare / r_ours:.2f}x slower")

        ds = CacheWindows(cache, window=2 * 1000, seed=0)
        views = SegmentViews(2, 4.0, 250.0)
        loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=2, persistent_workers=True,
                            generator=torch.Generator().manual_seed(0))
        for epoch in range(2):  # warm-up epoch, then measure
            ds.set_epoch(epoch)
            n, t0 = 0, time.perf_counter()
            for x, _ in loader:
                v = views(x, generator=torch.Generator().manual_seed(epoch))
                n += v.shape[0] * v.shape[1]
            load_rate = n / (time.perf_counter() - t0)
        enc = ClocsEncoder(in_channels=1, input_len=2500, embed_dim=128)
        opt = torch.optim.Adam(enc.parameters(), lr=1e-4)
        xb = torch.randn(256, 1, 2500)
        for _ in range(2):
            opt.zero_grad()
            enc(xb).sum().backward()
            opt.step()
        t0 = time.perf_counter()
        for _ in range(10):
            opt.zero_grad()
            enc(xb).sum().backward()
            opt.step()
        enc_rate = 2560 / (time.perf_counter() - t0)
        print(f"loader (2 workers, CacheWindows + SegmentViews, per-lead 1000-sample views): {load_rate:,.0f} views/s")
        print(f"CLOCS encoder forward+backward, 2500 x 1, batch 256: {enc_rate:,.0f} samples/s; "
              f"loader / encoder = {load_rate / enc_rate:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
