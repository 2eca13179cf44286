"""Pretraining throughput per method, and the share of step time spent waiting on the loader.

Run: ``SSL_ECG_DATA=../shared/data .venv/bin/python benchmarks/bench_pretrain.py [--steps 6]``

Setting: the 500 PTB-XL records of ``$SSL_ECG_DATA/ptbxl`` at 100 Hz (12 leads, 10 s), read
through the record cache by :class:`CacheWindows` in a DataLoader with 2 workers; the
``ptbxl_cmsc`` recipe's geometry (5 s segments, pairs of adjacent segments for CMSC-type
methods); the CLOCS encoder (E = 128); batch 256 records; Adam.

A step is what :class:`ContrastivePretrainer` does per batch: views on the batch, encoder
(+ heads), loss, backward and the optimiser step. ``wait`` is the time blocked in the
loader's ``next()``. Both are medians over ``--steps`` steps after two warm-up steps; the
peer is a loop reading the same items with ``wfdb.rdrecord`` (no cache) for the loader
side. PCLR needs patients with 2+ records (52 records here), so it runs at batch 32.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from ssl_ecg.data import load_index
from ssl_ecg.data.cache import CacheParams, open_cache
from ssl_ecg.data.dataset import CacheWindows
from ssl_ecg.data.sampler import PatientBatchSampler
from ssl_ecg.models import build_encoder
from ssl_ecg.pretrain import METHODS, ContrastivePretrainer, MethodSpec, build_method

FS, SEGMENT, BATCH = 100.0, 5.0, 256


def measure(name: str, cache, steps: int, workers: int) -> dict:
    method = build_method(name, MethodSpec(fs=FS, segment_len=SEGMENT))
    needs = method.data_needs(cache.n_leads)  # the window, encoder input and sampler run_pretrain uses
    window = needs.window_samples
    torch.manual_seed(0)
    encoder = build_encoder({"name": "clocs", "in_channels": needs.in_channels,
                             "input_len": needs.input_samples, "embed_dim": 128})
    module = ContrastivePretrainer(encoder, method, lr=1e-4, head=method.make_head(128))
    opt = module.configure_optimizers()
    data = CacheWindows(cache, window, seed=0)
    total = steps + 2
    if needs.sampler == "patient":
        batch = 32
        keep = data.patient_codes
        counts = np.bincount(keep)
        data = CacheWindows(cache, window, seed=0, records=np.flatnonzero(counts[keep] >= 2))
        batches = [b for e in range(total) for b in _epoch(data, batch, e)][:total]
        loader = DataLoader(data, batch_sampler=batches, num_workers=workers)
    else:
        batch = BATCH
        sampler = RandomSampler(data, replacement=True, num_samples=total * batch,
                                generator=torch.Generator().manual_seed(0))
        loader = DataLoader(data, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True)
    waits, computes = [], []
    it = iter(loader)
    for i in range(total):
        t0 = time.perf_counter()
        x, ids = next(it)
        t1 = time.perf_counter()
        opt.zero_grad()
        loss = module.batch_loss(x, ids, torch.Generator().manual_seed(i))[0]
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if i >= 2:
            waits.append(t1 - t0)
            computes.append(t2 - t1)
    wait, compute = statistics.median(waits), statistics.median(computes)
    return {"method": name, "batch": batch, "wait": wait, "compute": compute,
            "samples_s": batch / (wait + compute), "wait_share": wait / (wait + compute)}


def _epoch(data, batch, epoch):
    sampler = PatientBatchSampler(data.patient_codes, batch, k=2, seed=0)
    sampler.set_epoch(epoch)
    return list(sampler)


def wfdb_loader_rate(index, n: int) -> float:
    import wfdb

    t0 = time.perf_counter()
    for i in range(n):
        wfdb.rdrecord(str(Path(index.table["path"].iloc[i % len(index)])))
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", default=",".join(sorted(METHODS)))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    root = Path(os.environ.get("SSL_ECG_DATA", "../shared/data")) / "ptbxl"
    index = load_index("ptbxl", root, fs=100)
    with tempfile.TemporaryDirectory() as tmp:
        cache = open_cache(index, tmp, CacheParams(fs=FS))
        print(f"PTB-XL {len(cache)} records, {cache.n_leads} leads at {FS:g} Hz; "
              f"torch threads {torch.get_num_threads()}, loader workers {args.workers}\n")
        print("| method | batch | samples/s | step s | loader wait s | wait share |")
        print("|---|---|---|---|---|---|")
        for name in args.methods.split(","):
            r = measure(name, cache, args.steps, args.workers)
            print(f"| {r['method']} | {r['batch']} | {r['samples_s']:.0f} | {r['compute']:.3f} | {r['wait']:.4f} | "
                  f"{100 * r['wait_share']:.1f}% |", flush=True)
        rate = wfdb_loader_rate(index, 256)
        print(f"\npeer: wfdb.rdrecord per item, one process: {rate:.0f} records/s "
              f"({BATCH / rate:.2f} s per batch of {BATCH}, before any cropping)")


if __name__ == "__main__":
    main()
