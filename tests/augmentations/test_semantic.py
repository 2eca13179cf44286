import math

import numpy as np
import pytest
import torch

from augmentations import PeakNoiseSmoothing, SplitJoin, _random, detect_r_peaks, peak_indices, semantic


def pieces(x, peaks):
    """Loop reference: cut (L, T) at midpoints between consecutive peaks."""
    cuts = [0] + [(a + b) // 2 for a, b in zip(peaks[:-1], peaks[1:])] + [x.shape[-1]]
    return [x[:, a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def test_split_join_hard_joins_permute_whole_beats(synthetic_beats):
    x = torch.from_numpy(synthetic_beats(n_leads=3)[0])  # float64
    peaks = peak_indices(detect_r_peaks(x, 250.0, lead=0))[0].tolist()
    src = pieces(x[0], peaks)
    out = SplitJoin(250.0, crossfade_ms=0, p=1.0)(x, generator=torch.Generator().manual_seed(3))
    assert out.dtype == torch.float64 and out.shape == x.shape
    # Walk the output: first and last pieces in place, the inner ones each used once.
    pos, used = 0, []
    for k in range(len(src)):
        seg = None
        for j, piece in enumerate(src):
            n = piece.shape[-1]
            if j not in used and torch.equal(out[0, :, pos:pos + n], piece):
                seg = j
                break
        assert seg is not None, f"output piece {k} at {pos} is not an input beat"
        used.append(seg)
        pos += src[seg].shape[-1]
    assert pos == x.shape[-1]
    assert used[0] == 0 and used[-1] == len(src) - 1 and sorted(used) == list(range(len(src)))
    assert used != list(range(len(src)))  # this seed does permute
    # Beat-cycle lengths (half-RR before + half-RR after each R) are preserved as a multiset.
    assert sorted(p.shape[-1] for p in src) == sorted(src[j].shape[-1] for j in used)


def test_split_join_crossfade_only_touches_the_joins(synthetic_beats):
    x = torch.from_numpy(synthetic_beats()[0]).float()
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    hard = SplitJoin(250.0, crossfade_ms=0, p=1.0)(x, generator=g())
    soft = SplitJoin(250.0, crossfade_ms=20, p=1.0)(x, generator=g())
    differ = torch.nonzero((hard != soft).any(1)[0]).flatten()
    peaks = peak_indices(detect_r_peaks(x, 250.0, lead=0))[0]
    # Joins lie at the output pieces' starts; every changed sample is within 10 ms (2.5 samples) of one.
    src = pieces(x[0], peaks.tolist())
    assert len(differ) > 0
    lengths = [p.shape[-1] for p in src]
    diff = (hard[0] != x[0]).any(0)
    assert diff.any()
    joins = []
    pos = 0
    order = []
    for _ in src:  # recover the hard-join order to know where the joins are
        for j, p in enumerate(src):
            if j not in order and torch.equal(hard[0, :, pos:pos + p.shape[-1]], p):
                order.append(j)
                pos += p.shape[-1]
                joins.append(pos)
                break
    joins = torch.tensor(joins[:-1])
    dist = (differ[:, None] - joins[None, :]).abs().min(1).values
    assert int(dist.max()) <= 3 and sum(lengths) == x.shape[-1]


def test_split_join_reproducible_gated_and_counts(synthetic_beats):
    x = torch.from_numpy(synthetic_beats()[0]).float().repeat(4, 1, 1)
    sj = SplitJoin(250.0, p=1.0)
    a = sj(x, generator=torch.Generator().manual_seed(1))
    b = sj(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, sj(x, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(SplitJoin(250.0, p=0.0)(x), x)
    short = x[:1, :, :300]  # fewer than 3 beats
    sj2 = SplitJoin(250.0, p=1.0)
    assert torch.equal(sj2(short), short)
    assert sj2.n_unchanged == 1 and sj2.unchanged_rate == 1.0
    flat = torch.zeros(1, 2, 2500)
    assert torch.equal(sj2(flat), flat)


def reference_smoothing(x, peaks, fs, width_ms, smooth_ms):
    """Float64 loops: x + w * (smooth(x) - x) with w from the max over peaks."""
    x = x.double().numpy()
    sigma = width_ms * fs / 1000 / (2 * math.sqrt(2 * math.log(2)))
    width = max(1, int(round(smooth_ms * fs / 1000)) | 1)
    half = width // 2
    out = np.empty_like(x)
    t_len = x.shape[-1]
    for t in range(t_len):
        w = 1 - max(math.exp(-((t - r) ** 2) / (2 * sigma**2)) for r in peaks)
        idx = [min(max(i, 0), t_len - 1) for i in range(t - half, t + half + 1)]
        smooth = x[:, idx].mean(1)
        out[:, t] = x[:, t] + w * (smooth - x[:, t])
    return out


def test_peak_noise_smoothing_matches_reference_without_noise(synthetic_beats):
    x = torch.from_numpy(synthetic_beats()[0]).float()
    peaks = peak_indices(detect_r_peaks(x, 250.0, lead=0))[0].tolist()
    t = PeakNoiseSmoothing(250.0, snr_db=300.0, peak_width_ms=60, smooth_ms=40, p=1.0)  # noise ~1e-15
    out = t(x, generator=torch.Generator().manual_seed(0))
    ref = reference_smoothing(x[0], peaks, 250.0, 60, 40)
    np.testing.assert_allclose(out[0].double().numpy(), ref, atol=1e-5)
    assert torch.equal(out[0, :, peaks], x[0, :, peaks])  # w = 0 exactly at each R peak


def test_qrs_neighbourhood_bound_and_snr_elsewhere(synthetic_beats):
    x = torch.from_numpy(synthetic_beats(seconds=10.0)[0]).float()
    fs = 250.0
    t = PeakNoiseSmoothing(fs, snr_db=20.0, peak_width_ms=60, smooth_ms=40, p=1.0)
    out = t(x, generator=torch.Generator().manual_seed(0))
    peaks = peak_indices(detect_r_peaks(x, fs, lead=0))[0]
    w = t.weights(detect_r_peaks(x, fs, lead=0))[0]
    base = torch.from_numpy(reference_smoothing(x[0], peaks.tolist(), fs, 60, 40)).float()
    noise = out[0] - base
    # Within +-8 ms of an R peak, w <= 1 - exp(-(2 samples)^2 / (2 sigma^2)) ~ 0.048, so the change is
    # at most 0.048 * (|smooth - x| + |noise|).
    sigma = t.sigma_samples
    bound_w = 1 - math.exp(-(2**2) / (2 * sigma**2))
    near = torch.zeros(x.shape[-1], dtype=torch.bool)
    for r in peaks.tolist():
        near[max(r - 2, 0):r + 3] = True
    smooth_dev = (base - x[0]).abs() / w.clamp_min(1e-12)  # |smooth - x|
    limit = bound_w * (smooth_dev + noise.abs() / w.clamp_min(1e-12))
    assert ((out[0] - x[0]).abs()[:, near] <= limit[:, near] + 1e-6).all()
    assert bound_w < 0.05
    # Far from peaks (w > 0.999) the residual is the noise: SNR = 20 dB per lead, within 0.7 dB.
    far = w > 0.999
    for lead in range(x.shape[1]):
        snr = 10 * math.log10(float(x[0, lead].var()) / float(noise[lead, far].var()))
        assert snr == pytest.approx(20.0, abs=0.7)


def test_peak_noise_smoothing_keeps_precision_with_a_large_offset(synthetic_beats):
    # Raw ADC units: a 30,000 offset on a signal with a std of about 60. Power from E[x^2] - mean^2 in float32
    # would be off by orders of magnitude here, and running sums of the raw signal would lose the smooth.
    xd = 30000.0 + 200.0 * torch.from_numpy(synthetic_beats(n_leads=2)[0])
    x = xd.float()
    peaks = peak_indices(detect_r_peaks(x, 250.0, lead=0))[0].tolist()
    quiet = PeakNoiseSmoothing(250.0, snr_db=300.0, p=1.0)(x, generator=torch.Generator().manual_seed(0))
    ref = reference_smoothing(x[0], peaks, 250.0, 60, 40)
    np.testing.assert_allclose(quiet[0].double().numpy(), ref, atol=0.01)  # a few float32 ulps at 30,000
    t = PeakNoiseSmoothing(250.0, snr_db=20.0, p=1.0)
    noise = t(x, generator=torch.Generator().manual_seed(1))[0].double() - torch.from_numpy(ref)
    far = t.weights(detect_r_peaks(x, 250.0, lead=0))[0] > 0.999
    for lead in range(x.shape[1]):
        snr = 10 * math.log10(float(xd[0, lead].var()) / float(noise[lead, far].var()))
        assert snr == pytest.approx(20.0, abs=0.7)


def test_peak_noise_smoothing_unchanged_cases(synthetic_beats):
    x = torch.from_numpy(synthetic_beats(n_leads=3)[0]).float()
    x[:, 1] = 0.25  # flat leads: zero power and a constant smooth -> unchanged,
    x[:, 2] = 0.1  # even where the running sums of the smooth round (0.1 is not exact in binary)
    t = PeakNoiseSmoothing(250.0, p=1.0)
    out = t(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 1:], x[:, 1:]) and not torch.equal(out[:, 0], x[:, 0])
    almost = x.clone()
    almost[:, 2, 7] += 1e-6  # not flat: smoothed and noised at its own (tiny) power
    assert not torch.equal(t(almost)[:, 2], almost[:, 2])
    flat = torch.zeros(1, 3, 2500)
    assert torch.equal(t(flat), flat) and t.n_unchanged == 1
    assert t(torch.zeros(0, 3, 2500)).shape == (0, 3, 2500)
    assert SplitJoin(250.0, p=1.0)(torch.zeros(0, 3, 2500)).shape == (0, 3, 2500)
    with pytest.raises(ValueError, match="below the 50 Hz"):
        PeakNoiseSmoothing(30.0, p=1.0)(x)
    x[0, 0, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        t(x)


@pytest.mark.parametrize("crossfade_ms", [10.0, 40.0])
def test_split_join_crossfade_matches_a_loop_reference(synthetic_beats, crossfade_ms):
    x = torch.from_numpy(synthetic_beats()[0]).float()
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    hard = SplitJoin(250.0, crossfade_ms=0, p=1.0)(x, generator=g())[0].double()
    soft = SplitJoin(250.0, crossfade_ms=crossfade_ms, p=1.0)(x, generator=g())[0].double()
    src = x[0].double()
    t = src.shape[-1]
    peaks = peak_indices(detect_r_peaks(x, 250.0, lead=0))[0].tolist()
    cuts = [0] + [(a + b) // 2 for a, b in zip(peaks[:-1], peaks[1:])] + [t]
    ranges = list(zip(cuts[:-1], cuts[1:]))
    layout, pos = [], 0  # recover the hard-join order: (output start, source start, length) per piece
    while pos < t:
        a, b = next((a, b) for a, b in ranges if torch.equal(hard[:, pos:pos + b - a], src[:, a:b])
                    and (a, b) not in [(s, s + n) for _, s, n in layout])
        layout.append((pos, a, b - a))
        pos += b - a
    half = round(crossfade_ms * 250.0 / 2000)
    expected = hard.clone()
    starts = {}
    for (_, sa, la), (j, sb, lb) in zip(layout[:-1], layout[1:]):
        for e in range(1, min(half, la) + 1):  # end of A fades towards the source before B
            a = (half - e + 0.5) / (2 * half)
            expected[:, j - e] = (1 - a) * hard[:, j - e] + a * src[:, min(max(sb - e, 0), t - 1)]
        for o in range(min(half, lb)):  # start of B fades in from the source after A
            a = (half - o - 0.5) / (2 * half)
            starts[j + o] = (1 - a) * hard[:, j + o] + a * src[:, min(max(sa + la + o, 0), t - 1)]
    for i, v in starts.items():  # the start side wins where a piece is shorter than the fade
        expected[:, i] = v
    assert len(layout) == len(peaks) and half > 0 and not torch.equal(soft, hard)
    torch.testing.assert_close(soft, expected, rtol=0, atol=1e-6)


def test_peak_noise_smoothing_blocks_and_thread_count_do_not_change_the_numbers(synthetic_beats, monkeypatch):
    x = torch.cat([torch.from_numpy(synthetic_beats(seed=s, n_leads=2)[0]).float() for s in range(5)])
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    whole = PeakNoiseSmoothing(250.0, p=1.0)(x, generator=g())
    monkeypatch.setattr(semantic, "_BLOCK", 1)  # one sample per block
    assert torch.equal(PeakNoiseSmoothing(250.0, p=1.0)(x, generator=g()), whole)
    monkeypatch.setattr(_random, "STREAM_SIZE", 1000)  # many noise streams, drawn on 1 or 2 threads
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = PeakNoiseSmoothing(250.0, p=1.0)(x, generator=g())
        torch.set_num_threads(2)
        assert torch.equal(PeakNoiseSmoothing(250.0, p=1.0)(x, generator=g()), one)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("fs,width_ms", [(250.0, 60.0), (50.0, 100.0), (1000.0, 5.0)])
def test_peak_weights_match_a_loop_reference(fs, width_ms):
    mask = torch.zeros(4, 300, dtype=torch.bool)
    mask[0, [0, 17, 20, 150, 299]] = True  # peaks at both ends and closer than the kernel's reach
    mask[1, 100] = True
    mask[3, ::7] = True  # row 2 has no peak: w = 1
    t = PeakNoiseSmoothing(fs, peak_width_ms=width_ms, p=1.0)
    sigma = t.sigma_samples
    ref = np.ones((4, 300))
    for b in range(4):
        peaks = torch.nonzero(mask[b]).flatten().tolist()
        for i in range(300):
            if peaks:
                ref[b, i] = 1 - max(math.exp(-((i - r) ** 2) / (2 * sigma**2)) for r in peaks)
    np.testing.assert_allclose(t.weights(mask).double().numpy(), ref, atol=1e-7)
