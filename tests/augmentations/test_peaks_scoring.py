"""Span-restricted R-peak scoring, and the LUDB lead-annotation reader of benchmarks/ludb_peaks.py."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import wfdb

from augmentations.peaks import match_peaks
from augmentations.peaks_scoring import matched_peak_pairs, score_peaks_in_span


def _reference_score(det, ref, tol, start, stop, exclude):
    """Slow, literal version of the rule: filter, each beat's nearest detection on either side, greedy by distance."""
    def counts(i):
        return all(not (lo <= i <= hi) for lo, hi in exclude)

    ref = sorted(r for r in ref if start <= r <= stop and counts(r))
    det = sorted(d for d in det if start - tol <= d <= stop + tol and counts(d))
    cand = set()
    for ri, r in enumerate(ref):
        before = [di for di, d in enumerate(det) if d < r]
        after = [di for di, d in enumerate(det) if d >= r]
        for di in ([before[-1]] if before else []) + ([after[0]] if after else []):
            if abs(det[di] - r) <= tol:
                cand.add((abs(det[di] - r), ri, di))
    used_r, used_d = set(), set()
    for _, ri, di in sorted(cand):
        if ri not in used_r and di not in used_d:
            used_r.add(ri)
            used_d.add(di)
    fp = sum(1 for di, d in enumerate(det) if start <= d <= stop and di not in used_d)
    return len(used_d), fp, len(ref) - len(used_d)


def test_hand_counted_margin_and_span():
    ref = [50, 100, 200, 300, 700]
    det = [52, 85, 90, 205, 250, 312, 400]
    # span [95, 305], tol 10: beat 50 and 700 are outside; 52 and 400 are beyond the margin [85, 315];
    # 90 (margin) matches 100, 85 (margin, 15 from 100) is unmatched but not false; 205 matches 200;
    # 250 is inside and unmatched (FP); 312 (margin) is 12 from 300 (no match, not false), so 300 is missed.
    assert score_peaks_in_span(det, ref, 10, start=95, stop=305) == (2, 1, 1)
    # Without a span: 50, 100 and 200 are found, 300 and 700 missed, and 4 detections are false.
    assert score_peaks_in_span(det, ref, 10) == match_peaks(det, ref, 10) == (3, 4, 2)


def test_excluded_intervals_drop_beats_and_detections():
    # Beat 500 and detection 505 lie in the excluded (490, 510); 512 lies just after it, in the span, next to
    # no counted beat, so it is a false positive; 800 is matched by 803.
    assert score_peaks_in_span([505, 512, 803], [500, 800], 15, exclude=[(490, 510)]) == (1, 1, 0)
    assert score_peaks_in_span([505, 512, 803], [500, 800], 15) == (2, 1, 0)


def test_margin_detection_cannot_steal_an_inside_match_twice():
    # One beat at the span start, two detections: 96 in the margin (4 away) and 103 inside (3 away).
    # The nearer one (103) takes the beat; 96 is unmatched but in the margin, so no FP.
    assert score_peaks_in_span([96, 103], [100], 5, start=100, stop=200) == (1, 0, 0)
    # If 103 becomes 106 (6 away, beyond tol), 96 takes the beat and 106 is a false positive.
    assert score_peaks_in_span([96, 106], [100], 5, start=100, stop=200) == (1, 1, 0)


@pytest.mark.parametrize("seed", range(6))
def test_random_against_slow_reference(seed):
    rng = np.random.default_rng(seed)
    ref = np.unique(rng.integers(0, 3000, 40))
    det = np.unique(np.concatenate([ref + rng.integers(-25, 26, len(ref)), rng.integers(0, 3000, 15)]))
    det = det[rng.random(len(det)) > 0.1]
    start, stop = sorted(rng.integers(0, 3000, 2).tolist())
    exclude = [(int(a), int(a) + 120) for a in rng.integers(0, 3000, 2)]
    for tol in (0, 8, 20):
        want = _reference_score(det.tolist(), ref.tolist(), tol, start, stop, exclude)
        assert score_peaks_in_span(det, ref, tol, start=start, stop=stop, exclude=exclude) == want
        # Unbounded, nothing excluded: the counts of match_peaks, the rule the whole project scores with.
        assert score_peaks_in_span(det, ref, tol) == match_peaks(det, ref, tol)


def test_matched_pairs_are_one_to_one_and_nearest():
    det, ref = matched_peak_pairs([50, 11, 10], [200, 48, 10], tolerance=5)
    assert det.tolist() == [10, 50] and ref.tolist() == [10, 48]
    det, ref = matched_peak_pairs([], [1, 2], 3)
    assert det.size == ref.size == 0


@pytest.mark.parametrize("call, message", [
    (lambda: score_peaks_in_span([[1, 2]], [1], 3), "detected: expected a 1-D"),
    (lambda: score_peaks_in_span([1], [1.5], 3), "reference: expected integer"),
    (lambda: score_peaks_in_span([1], [1], -1), "tolerance: expected >= 0"),
    (lambda: score_peaks_in_span([1], [1], 3, start=10, stop=5), "stop: expected >= start"),
    (lambda: score_peaks_in_span([1], [1], 3, exclude=[(9, 2)]), r"exclude: interval \(9, 2\)"),
])
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _ludb_peaks_module():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "ludb_peaks.py"
    spec = importlib.util.spec_from_file_location("ludb_peaks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ludb_lead_reader_on_written_annotations(tmp_path):
    ludb = _ludb_peaks_module()
    # Lead II: a T wave end first (the delineation starts mid-beat), two QRS triplets, a P wave, one QRS whose
    # onset is missing (as in LUDB record 104); lead I is annotated elsewhere and must not be read for lead II.
    samples = [300, 410, 420, 440, 900, 920, 935, 960, 980, 1010, 1400, 1440]
    symbols = [")", "(", "N", ")", "(", "p", ")", "(", "N", ")", "N", ")"]
    wfdb.wrann("7", "ii", np.asarray(samples), symbol=symbols, fs=500, write_dir=str(tmp_path))
    wfdb.wrann("7", "i", np.asarray([5, 10, 20]), symbol=["(", "N", ")"], fs=500, write_dir=str(tmp_path))
    peaks, span = ludb.lead_r_peaks(tmp_path / "7")
    assert peaks.tolist() == [420, 980, 1400]
    assert span == (300, 1440)
    peaks, span = ludb.lead_r_peaks(tmp_path / "7", "i")
    assert peaks.tolist() == [10] and span == (5, 20)
    with pytest.raises(FileNotFoundError, match=r"7\.v1: no LUDB annotation file for lead 'v1'"):
        ludb.lead_r_peaks(tmp_path / "7", "v1")
