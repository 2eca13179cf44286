"""Benchmark our batched transforms against ecg-augmentations and neurokit2, in one process.

Run: ``SSL_ECG_DATA=../shared/data .venv/bin/python benchmarks/bench_augmentations.py``
(needs ``pip install -e .[bench]`` for neurokit2; ``--quick`` for fewer repeats; ``--threads 1`` as in a
DataLoader worker).

The batch is (256, 12, 2500) float32 at 250 Hz: real LUDB records (resampled from
500 Hz, in mV) when ``SSL_ECG_DATA`` holds LUDB, tiled to 256; otherwise a
synthetic ECG. Medians of interleaved repeats; ratios are taken within the run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from _timing import interleaved_medians
from scipy.signal import resample_poly

from augmentations import (
    GaussianNoise,
    LeadViews,
    PeakNoiseSmoothing,
    QRSMask,
    SegmentLeadViews,
    SegmentViews,
    SplitJoin,
    detect_r_peaks,
)

FS = 250.0


def load_batch(n=256):
    root = Path(os.environ.get("SSL_ECG_DATA", "")) / "ludb"
    if (root / "RECORDS").is_file():
        import wfdb

        recs = []
        for line in (root / "RECORDS").read_text().split()[:n]:
            r = wfdb.rdrecord(str(root / line), physical=False)
            sig = (r.d_signal.astype(np.float64) - np.asarray(r.baseline)) * 1e-3  # LUDB: microvolts
            recs.append(resample_poly(sig.T, 1, 2, axis=-1)[:, :2500])
        x = np.stack(recs)
        x = np.concatenate([x] * (n // len(x) + 1))[:n]
        return torch.from_numpy(x.astype(np.float32)), "LUDB (real)"
    from ecg_augmentations import synthetic_ecg

    x = np.stack([synthetic_ecg(duration=10.0, fs=FS, heart_rate=55.0 + i % 40, seed=i)[0].numpy() for i in range(n)])
    return torch.as_tensor(x, dtype=torch.float32), "synthetic (ecg_augmentations.synthetic_ecg)"


def neurokit_loop(x):
    import neurokit2 as nk

    return [nk.ecg_peaks(s, sampling_rate=FS)[1]["ECG_R_Peaks"] for s in x[:, 0].numpy()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 7
    x, source = load_batch()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    noise = torch.randn_like(x)
    cases = {
        "clone (memory floor)": lambda: x.clone(),
        "randn + add (noise floor)": lambda: x + torch.randn(x.shape, generator=g()),
        "ecg-aug GaussianNoise": lambda: GaussianNoise(p=1.0)(x, generator=g()),
        "ecg-aug QRSMask (neurokit2)": lambda: QRSMask(FS, p=1.0)(x, generator=g()),
        "neurokit2 ecg_peaks loop (lead 0)": lambda: neurokit_loop(x),
        "detect_r_peaks (12 leads)": lambda: detect_r_peaks(x, FS),
        "detect_r_peaks (lead 0)": lambda: detect_r_peaks(x, FS, lead=0),
        "SplitJoin (detect on all 12 leads)": lambda: SplitJoin(FS, p=1.0, lead=None)(x, generator=g()),
        "SplitJoin (detect on lead 0)": lambda: SplitJoin(FS, p=1.0, lead=0)(x, generator=g()),
        "PeakNoiseSmoothing (detect on all 12 leads)": lambda: PeakNoiseSmoothing(FS, p=1.0, lead=None)(
            x, generator=g()),
        "PeakNoiseSmoothing (detect on lead 0)": lambda: PeakNoiseSmoothing(FS, p=1.0, lead=0)(x, generator=g()),
        "SegmentViews 2 x 4 s, per lead": lambda: SegmentViews(2, 4.0, FS)(x, generator=g()),
        "LeadViews (12)": lambda: LeadViews()(x),
        "SegmentLeadViews 2 x 4 s x 12": lambda: SegmentLeadViews(2, 4.0, FS)(x, generator=g()),
    }
    del noise
    med = interleaved_medians(cases, repeats)
    qrs = med["ecg-aug QRSMask (neurokit2)"]
    nk = med["neurokit2 ecg_peaks loop (lead 0)"]
    floor = med["randn + add (noise floor)"]
    clone = med["clone (memory floor)"]
    print(f"batch {tuple(x.shape)} float32 at {FS:.0f} Hz, source: {source}, torch threads {torch.get_num_threads()}")
    print(f"{'case':<40} {'median s':>9} {'samples/s':>10} {'vs QRSMask':>10} {'vs nk loop':>10} "
          f"{'x noise floor':>13} {'x clone':>8}")
    for k, v in med.items():
        print(f"{k:<40} {v:>9.4f} {x.shape[0] / v:>10.0f} {qrs / v:>10.1f} {nk / v:>10.1f} {v / floor:>13.2f} "
              f"{v / clone:>8.1f}")


if __name__ == "__main__":
    main()
