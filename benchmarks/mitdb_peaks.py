"""Score detect_r_peaks on all 48 MIT-BIH Arrhythmia records against their .atr beat annotations.

Run: ``SSL_ECG_DATA=../shared/data .venv/bin/python benchmarks/mitdb_peaks.py [--peers]``

A beat is found when a detection lies within 50 ms of an annotated beat (one-to-one).
Ventricular flutter episodes ('[' to ']') are excluded, as in ANSI/AAMI EC57.
Whole records are scored (30 min each). ``ours`` runs on lead 0 (MLII in 45 of 48 records,
the lead the annotations follow), like the peers; ``ours_both_leads`` combines both leads.
``--peers`` also scores neurokit2's default detector and wfdb's XQRS (with correct_peaks)
on lead 0, which needs ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import wfdb

from augmentations.peaks import BEAT_SYMBOLS, detect_r_peaks, match_peaks


def load(root: Path, rec: str):
    r = wfdb.rdrecord(str(root / rec))
    ann = wfdb.rdann(str(root / rec), "atr")
    sym = np.asarray(ann.symbol)
    samp = np.asarray(ann.sample)
    # Ventricular flutter episodes: exclude detections and references inside them.
    starts, ends = samp[sym == "["], samp[sym == "]"]
    excl = [(s, e) for s, e in zip(starts, ends)]
    beats = samp[np.isin(sym, list(BEAT_SYMBOLS))]
    return r.p_signal.T.astype(np.float32), r.fs, beats, excl


def outside(idx, excl):
    keep = np.ones(len(idx), bool)
    for s, e in excl:
        keep &= ~((idx >= s) & (idx <= e))
    return idx[keep]


def score(det, beats, excl, fs):
    return match_peaks(outside(np.asarray(det), excl), outside(beats, excl), int(round(0.05 * fs)))


def ours(sig, fs):
    mask = detect_r_peaks(torch.from_numpy(sig)[None], fs, lead=0)
    return torch.nonzero(mask[0]).flatten().numpy()


def ours_both(sig, fs):
    mask = detect_r_peaks(torch.from_numpy(sig)[None], fs)
    return torch.nonzero(mask[0]).flatten().numpy()


def neurokit(sig, fs):
    import neurokit2 as nk

    _, info = nk.ecg_peaks(sig[0], sampling_rate=fs)
    return np.asarray(info["ECG_R_Peaks"])


def xqrs(sig, fs):
    from wfdb import processing

    q = processing.XQRS(sig=sig[0].astype(np.float64), fs=fs)
    q.detect(verbose=False)
    return processing.correct_peaks(sig[0].astype(np.float64), q.qrs_inds, search_radius=int(0.1 * fs),
                                    smooth_window_size=int(0.15 * fs), peak_dir="compare")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.environ.get("SSL_ECG_DATA", "../shared/data"))
    parser.add_argument("--peers", action="store_true")
    parser.add_argument("--records", nargs="*")
    args = parser.parse_args()
    root = Path(args.data) / "mitdb"
    records = args.records or (root / "RECORDS").read_text().split()
    methods = {"ours": ours, "ours_both_leads": ours_both}
    if args.peers:
        methods.update({"neurokit2": neurokit, "xqrs": xqrs})
    totals = {m: np.zeros(3, int) for m in methods}
    secs = {m: 0.0 for m in methods}
    print("| record | beats | " + " | ".join(f"{m} Se % | {m} PPV %" for m in methods) + " |")
    print("|---|---|" + "---|---|" * len(methods))
    for rec in records:
        sig, fs, beats, excl = load(root, rec)
        cells = []
        for m, fn in methods.items():
            t0 = time.perf_counter()
            det = fn(sig, fs)
            secs[m] += time.perf_counter() - t0
            tp, fp, fn_ = score(det, beats, excl, fs)
            totals[m] += (tp, fp, fn_)
            cells.append(f"{100 * tp / max(tp + fn_, 1):.2f} | {100 * tp / max(tp + fp, 1):.2f}")
        print(f"| {rec} | {len(outside(beats, excl))} | " + " | ".join(cells) + " |", flush=True)
    cells = []
    for m in methods:
        tp, fp, fn_ = totals[m]
        cells.append(f"**{100 * tp / (tp + fn_):.2f}** | **{100 * tp / (tp + fp):.2f}**")
    print("| **pooled** | | " + " | ".join(cells) + " |")
    print("seconds: " + ", ".join(f"{m} {s:.1f}" for m, s in secs.items()))
    for m in methods:
        print(f"{m}: TP {totals[m][0]} FP {totals[m][1]} FN {totals[m][2]}")


if __name__ == "__main__":
    main()
