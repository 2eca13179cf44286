"""Score detect_r_peaks on all 48 MIT-BIH Arrhythmia records against their .atr beat annotations.

Run: ``SSL_ECG_DATA=../shared/data .venv/bin/python benchmarks/mitdb_peaks.py [--peers]``

Each detector runs once per record; its detections are then scored under every combination of
``--tolerance-ms`` (default 150 and 50 ms) and ``--skip-s`` (default 0 and 300 s):

- A beat is found when a detection lies within the tolerance of an annotated beat, matched one-to-one.
  ANSI/AAMI EC57's comparator (``bxb``) uses a 150 ms window.
- ``--skip-s 300`` leaves out the first 5 minutes, EC57's learning period (``bxb``'s default start);
  a detection up to one tolerance before it may still match the first scored beat, but never counts as
  false. ``0`` scores whole records (30 min each).
- Ventricular flutter episodes ('[' to ']') are excluded, as in EC57: beats and detections inside them
  do not count.

``ours`` runs on lead 0 (MLII in 45 of 48 records, the lead the annotations follow), like the peers;
``ours_both_leads`` combines both leads. ``--peers`` also scores neurokit2's default detector and wfdb's
XQRS (with correct_peaks) on lead 0, which needs ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import wfdb

from augmentations.peaks import BEAT_SYMBOLS, detect_r_peaks
from augmentations.peaks_scoring import score_peaks_in_span


def load(root: Path, rec: str):
    r = wfdb.rdrecord(str(root / rec))
    ann = wfdb.rdann(str(root / rec), "atr")
    sym = np.asarray(ann.symbol)
    samp = np.asarray(ann.sample)
    # Ventricular flutter episodes: exclude detections and references inside them.
    excl = list(zip(samp[sym == "["].tolist(), samp[sym == "]"].tolist()))
    beats = samp[np.isin(sym, list(BEAT_SYMBOLS))]
    return r.p_signal.T.astype(np.float32), r.fs, beats, excl


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


def pct(a: int, b: int) -> str:
    return f"{100 * a / b:.2f}" if b else "-"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.environ.get("SSL_ECG_DATA", "../shared/data"))
    parser.add_argument("--peers", action="store_true")
    parser.add_argument("--records", nargs="*")
    parser.add_argument("--tolerance-ms", type=float, nargs="+", default=[150.0, 50.0],
                        help="matching windows to score (EC57: 150 ms)")
    parser.add_argument("--skip-s", type=float, nargs="+", default=[0.0, 300.0],
                        help="seconds left out at the start of each record (EC57's learning period: 300)")
    args = parser.parse_args()
    root = Path(args.data) / "mitdb"
    records = args.records or (root / "RECORDS").read_text().split()
    methods = {"ours": ours, "ours_both_leads": ours_both}
    if args.peers:
        methods.update({"neurokit2": neurokit, "xqrs": xqrs})
    settings = [(tol, skip) for tol in args.tolerance_ms for skip in args.skip_s]
    totals = {(s, m): np.zeros(3, int) for s in settings for m in methods}
    rows = {s: [] for s in settings}
    secs = {m: 0.0 for m in methods}
    for rec in records:
        sig, fs, beats, excl = load(root, rec)
        cells = {s: [] for s in settings}
        counted = {}
        for m, fn in methods.items():
            t0 = time.perf_counter()
            det = np.asarray(fn(sig, fs))
            secs[m] += time.perf_counter() - t0
            for tol, skip in settings:
                res = score_peaks_in_span(det, beats, int(round(tol * fs / 1000)), start=int(round(skip * fs)),
                                          exclude=excl)
                tp, fp, fn_ = res
                totals[(tol, skip), m] += res
                counted[tol, skip] = tp + fn_
                cells[tol, skip].append(f"{pct(tp, tp + fn_)} | {pct(tp, tp + fp)}")
        for s in settings:
            rows[s].append(f"| {rec} | {counted[s]} | " + " | ".join(cells[s]) + " |")
        print(f"{rec} done", flush=True)
    for tol, skip in settings:
        print(f"\n### tolerance {tol:g} ms, from {skip:g} s\n")
        print("| record | beats | " + " | ".join(f"{m} Se % | {m} PPV %" for m in methods) + " |")
        print("|---|---|" + "---|---|" * len(methods))
        print("\n".join(rows[tol, skip]))
    print("\n| detector | tolerance | from | Se % | +P % | TP | FP | FN |\n|---|---|---|---|---|---|---|---|")
    for m in methods:
        for tol, skip in settings:
            tp, fp, fn_ = totals[(tol, skip), m]
            print(f"| {m} | {tol:g} ms | {skip:g} s | {pct(tp, tp + fn_)} | {pct(tp, tp + fp)} | {tp:,} | {fp:,} "
                  f"| {fn_:,} |")
    print("\nseconds: " + ", ".join(f"{m} {s:.1f}" for m, s in secs.items()))


if __name__ == "__main__":
    main()
