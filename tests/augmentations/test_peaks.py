import numpy as np
import pytest
import torch
import wfdb

from augmentations import detect_r_peaks, match_peaks, peak_indices, r_peak_positions
from augmentations.peaks import BEAT_SYMBOLS, _moving_average, _squared_derivative_average


def test_synthetic_beats_found(synthetic_beats):
    x, r = synthetic_beats()
    mask = detect_r_peaks(torch.from_numpy(x), 250.0)
    found = peak_indices(mask)[0].numpy()
    tp, fp, fn = match_peaks(found, r, tolerance=int(0.05 * 250))
    assert (tp, fp, fn) == (len(r), 0, 0)
    assert np.abs(np.sort(found) - r).max() <= 5  # within 20 ms


def test_batch_equals_per_sample_and_keeps_input(synthetic_beats):
    xs = [torch.from_numpy(synthetic_beats(seed=s, n_leads=3)[0]) for s in range(3)]
    xs[1] = xs[1] * 5.0 + 0.3  # different scale and offset in one sample
    batch = torch.cat(xs).float()
    before = batch.clone()
    together = detect_r_peaks(batch, 250.0)
    assert torch.equal(batch, before)
    for i, x in enumerate(xs):
        assert torch.equal(together[i], detect_r_peaks(x.float(), 250.0)[0])


def test_flat_and_bad_input(synthetic_beats):
    flat = torch.zeros(2, 1, 2500)
    flat[1] += 0.7
    assert not detect_r_peaks(flat, 250.0).any()
    x = torch.from_numpy(synthetic_beats()[0]).float()
    x[0, 0, 100] = float("nan")
    with pytest.raises(ValueError, match="NaN in sample 0, lead 0"):
        detect_r_peaks(x, 250.0)
    assert detect_r_peaks(x, 250.0, nan_policy="zero").sum() > 5
    with pytest.raises(ValueError, match="below the 50 Hz"):
        detect_r_peaks(x, 40.0)
    with pytest.raises(ValueError, match="lead: 5"):
        detect_r_peaks(x, 250.0, lead=5, nan_policy="zero")


def test_flat_lead_does_not_break_the_others(synthetic_beats):
    x, r = synthetic_beats(n_leads=2)
    x = torch.from_numpy(x).float()
    x[:, 1] = 0.0
    found = peak_indices(detect_r_peaks(x, 250.0))[0].numpy()
    assert match_peaks(found, r, 12) == (len(r), 0, 0)


def test_positions_agree_with_the_mask(synthetic_beats):
    x = torch.cat([torch.from_numpy(synthetic_beats(seed=s)[0]).float() for s in range(3)] + [torch.zeros(1, 2, 2500)])
    pos, counts = r_peak_positions(x, 250.0)
    mask = detect_r_peaks(x, 250.0)
    assert counts.tolist() == mask.sum(-1).tolist() and counts[-1] == 0
    for row, idx in zip(pos, peak_indices(mask)):
        assert torch.equal(row[:len(idx)], idx) and (row[len(idx):] == 2500).all()
    assert detect_r_peaks(torch.zeros(0, 2, 500), 250.0).shape == (0, 500)


@pytest.mark.parametrize("t", [1, 2, 5, 40, 300])
@pytest.mark.parametrize("width", [1, 3, 37, 99])
def test_moving_averages_match_loops(t, width):
    g = torch.Generator().manual_seed(t * 100 + width)
    y = torch.randn(2, t, generator=g, dtype=torch.float64)
    half = width // 2

    def loop(v):
        return np.array([[v[r, max(0, i - half):i + half + 1].mean() for i in range(t)] for r in range(len(v))])

    np.testing.assert_allclose(_moving_average(y, width).numpy(), loop(y.numpy()), atol=1e-12)
    energy = np.zeros((2, t))
    energy[:, 1:-1] = (y[:, 2:] - y[:, :-2]).numpy() ** 2
    np.testing.assert_allclose(_squared_derivative_average(y, width).numpy(), loop(energy), atol=1e-12)


def test_match_peaks_is_one_to_one():
    assert match_peaks([10, 11, 50], [10, 48, 200], tolerance=5) == (2, 1, 1)
    assert match_peaks([], [1, 2], 3) == (0, 0, 2)


@pytest.mark.realdata
def test_mitdb_record_100_accuracy(mitdb_root):
    rec = wfdb.rdrecord(str(mitdb_root / "100"))
    ann = wfdb.rdann(str(mitdb_root / "100"), "atr")
    beats = np.asarray(ann.sample)[np.isin(ann.symbol, list(BEAT_SYMBOLS))]
    x = torch.from_numpy(rec.p_signal.T.astype(np.float32))[None]
    for lead in (0, None):
        found = peak_indices(detect_r_peaks(x, rec.fs, lead=lead))[0].numpy()
        tp, fp, fn = match_peaks(found, beats, int(round(0.05 * rec.fs)))
        assert tp / (tp + fn) >= 0.99 and tp / (tp + fp) >= 0.99, (lead, tp, fp, fn)
