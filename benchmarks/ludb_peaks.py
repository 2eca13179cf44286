"""Score detect_r_peaks on LUDB's 200 records against LUDB's lead-II QRS annotations.

Run: ``SSL_ECG_DATA=../shared/data .venv/bin/python benchmarks/ludb_peaks.py [--peers]``

LUDB (Kalyakulina et al., IEEE Access 2020) delineates every lead separately, one annotation file per
lead (``data/1.ii`` ...), each QRS as '(' onset, 'N' peak, ')' offset. The reference R peaks are the
lead-II 'N' annotations. The detector was never tuned on them (its defaults were chosen on MIT-BIH).

- **Span.** LUDB leaves the first and last 1-2 s of many records unannotated, so each record is scored
  from its first lead-II annotation to its last (any symbol). A detection up to one tolerance outside
  that span may match a beat inside it but never counts as false.
- **Tolerances.** 150 ms (ANSI/AAMI EC57's window) and 50 ms (``--tolerance-ms``).
- **Detectors.** ``ours_12_leads``: ``detect_r_peaks`` on all 12 leads combined (its default);
  ``ours_lead_ii``: on lead II alone. ``--peers`` adds neurokit2's default ``ecg_peaks`` and wfdb's XQRS
  with ``correct_peaks`` (as in ``mitdb_peaks.py``), both on lead II.

Signals are read as digital values (LUDB's header gains equal each lead's peak-to-peak, see the data
README) and divided by 1000, i.e. read as microvolts and given in millivolts.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import wfdb

from augmentations.peaks import r_peak_positions
from augmentations.peaks_scoring import score_peaks_in_span

REFERENCE_LEAD = "ii"
FAIL_BELOW = 90.0  # per-record Se or +P (%) under which a record is listed as a failure


def lead_r_peaks(record: Path, lead: str = REFERENCE_LEAD) -> tuple[np.ndarray, tuple[int, int]]:
    """A LUDB lead's annotated QRS peaks and the span its annotations cover.

    Args:
        record: record path without extension (e.g. ``ludb/data/1``); the annotations are ``<record>.<lead>``.
        lead: annotation file extension, LUDB's lower-case lead name.

    Returns:
        The (K,) sample indices of the 'N' (QRS peak) annotations, sorted, and ``(first, last)``, the samples
        of the file's first and last annotation of any kind.
    """
    path = Path(f"{record}.{lead}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no LUDB annotation file for lead {lead!r}")
    ann = wfdb.rdann(str(record), lead)
    samples = np.asarray(ann.sample, np.int64)
    if samples.size == 0:
        raise ValueError(f"{path}: no annotations; expected '(' 'N' ')' QRS triplets")
    peaks = np.sort(samples[np.asarray(ann.symbol) == "N"])
    return peaks, (int(samples.min()), int(samples.max()))


def load(root: Path, rec: str):
    r = wfdb.rdrecord(str(root / rec), physical=False)
    names = [n.lower() for n in r.sig_name]
    if REFERENCE_LEAD not in names:
        raise ValueError(f"{root / rec}.hea: no lead {REFERENCE_LEAD!r} among {r.sig_name}")
    sig = r.d_signal.T.astype(np.float32) / 1000.0
    return sig, float(r.fs), names.index(REFERENCE_LEAD)


def neurokit(lead_sig, fs):
    import neurokit2 as nk

    _, info = nk.ecg_peaks(lead_sig, sampling_rate=fs)
    return np.asarray(info["ECG_R_Peaks"])


def xqrs(lead_sig, fs):
    from wfdb import processing

    x = lead_sig.astype(np.float64)
    q = processing.XQRS(sig=x, fs=fs)
    q.detect(verbose=False)
    if len(q.qrs_inds) == 0:
        return np.zeros(0, np.int64)
    return processing.correct_peaks(x, q.qrs_inds, search_radius=int(0.1 * fs), smooth_window_size=int(0.15 * fs),
                                    peak_dir="compare")


def pct(a: int, b: int) -> float:
    return 100.0 * a / b if b else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.environ.get("SSL_ECG_DATA", "../shared/data"))
    parser.add_argument("--peers", action="store_true")
    parser.add_argument("--records", nargs="*")
    parser.add_argument("--tolerance-ms", type=float, nargs="+", default=[150.0, 50.0])
    args = parser.parse_args()
    root = Path(args.data) / "ludb"
    records = args.records or (root / "RECORDS").read_text().split()
    sigs, refs, spans, lead_ii, fs_all = [], [], [], [], set()
    for rec in records:
        sig, fs, ii = load(root, rec)
        peaks, span = lead_r_peaks(root / rec)
        sigs.append(sig)
        refs.append(peaks)
        spans.append(span)
        lead_ii.append(ii)
        fs_all.add(fs)
    if len(fs_all) != 1 or len({s.shape for s in sigs}) != 1:
        raise ValueError(f"{root}: expected one rate and shape for every record, got {fs_all}")
    fs = fs_all.pop()

    detections: dict[str, list[np.ndarray]] = {}
    secs: dict[str, float] = {}
    batch = torch.from_numpy(np.stack(sigs))  # (200, 12, 5000): ours runs on the whole batch at once
    t0 = time.perf_counter()
    pos, counts = r_peak_positions(batch, fs)
    secs["ours_12_leads"] = time.perf_counter() - t0
    detections["ours_12_leads"] = [p[:c].numpy() for p, c in zip(pos, counts.tolist())]
    if len(set(lead_ii)) != 1:
        raise ValueError(f"{root}: lead II is not at the same position in every record")
    t0 = time.perf_counter()
    pos, counts = r_peak_positions(batch, fs, lead=lead_ii[0])
    secs["ours_lead_ii"] = time.perf_counter() - t0
    detections["ours_lead_ii"] = [p[:c].numpy() for p, c in zip(pos, counts.tolist())]
    if args.peers:
        for name, fn in (("neurokit2", neurokit), ("xqrs", xqrs)):
            t0 = time.perf_counter()
            detections[name] = [np.asarray(fn(s[ii], fs)) for s, ii in zip(sigs, lead_ii)]
            secs[name] = time.perf_counter() - t0

    n_beats = sum(len(r) for r in refs)
    print(f"{len(records)} records, {n_beats} lead-II QRS peaks in the annotated spans, {fs:g} Hz\n")
    print("| detector | tolerance | Se % | +P % | TP | FP | FN | records with Se or +P < 90% |")
    print("|---|---|---|---|---|---|---|---|")
    failures = {}
    for name, dets in detections.items():
        for tol in args.tolerance_ms:
            total = np.zeros(3, int)
            bad = []
            for rec, det, ref, (first, last) in zip(records, dets, refs, spans):
                tp, fp, fn = score_peaks_in_span(det, ref, int(round(tol * fs / 1000)), start=first, stop=last)
                total += (tp, fp, fn)
                se, ppv = pct(tp, tp + fn), pct(tp, tp + fp)
                if not (se >= FAIL_BELOW and ppv >= FAIL_BELOW):  # nan (no detections in span) fails too
                    bad.append(f"{Path(rec).name} ({se:.0f}/{ppv:.0f}; TP {tp} FP {fp} FN {fn})")
            failures[name, tol] = bad
            tp, fp, fn = total
            print(f"| {name} | {tol:g} ms | {pct(tp, tp + fn):.2f} | {pct(tp, tp + fp):.2f} | {tp:,} | {fp:,} | {fn:,} "
                  f"| {len(bad)} |")
    print("\nPer-record failures (record (Se/+P %; counts)):")
    for (name, tol), bad in failures.items():
        print(f"- {name}, {tol:g} ms: " + (", ".join(bad) if bad else "none"))
    print("\nseconds: " + ", ".join(f"{m} {s:.2f}" for m, s in secs.items()))


if __name__ == "__main__":
    main()
