import math

import pytest
import torch

from augmentations import PowerlineNoise, default_ecg_augmentation


@pytest.mark.parametrize("fs,powerline", [(100.0, False), (250.0, True), (500.0, True)])
def test_default_augmentation_per_rate(fs, powerline):
    aug = default_ecg_augmentation(fs)
    assert any(isinstance(m, PowerlineNoise) for m in aug.modules()) == powerline
    x = torch.randn(8, 12, int(5 * fs))
    a = aug(x, generator=torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.isfinite(a).all() and not torch.equal(a, x)
    assert torch.equal(a, aug(x, generator=torch.Generator().manual_seed(0)))


# --- simclr_ecg_augmentation: Mehari & Strodthoff (2022), random resized crop then time out ---

def _simclr_steps(fs, segment_len):
    from augmentations import RandomResizedCrop, TimeMask
    from augmentations.presets import simclr_ecg_augmentation

    aug = simclr_ecg_augmentation(fs, segment_len)
    rrc, timeout = aug.transforms
    assert isinstance(rrc, RandomResizedCrop) and isinstance(timeout, TimeMask)
    return aug, rrc, timeout


@pytest.mark.parametrize("fs,segment_len", [(100.0, 5.0), (100.0, 2.5), (500.0, 4.0)])
def test_simclr_preset_parameters_are_the_papers(fs, segment_len):
    aug, rrc, timeout = _simclr_steps(fs, segment_len)
    samples = round(fs * segment_len)
    assert aug.p == rrc.p == timeout.p == 1.0  # both always applied
    assert rrc.n_samples == samples and rrc.scale == (0.5, 1.0)
    assert timeout.duration == pytest.approx((0.2 * segment_len, 0.4 * segment_len))
    assert timeout.n_masks == (1, 1) and timeout.fill == "zero"


def test_simclr_preset_random_resized_crop_against_a_float64_ramp():
    fs, segment_len = 100.0, 5.0
    _, rrc, _ = _simclr_steps(fs, segment_len)
    s = 500
    ramp = torch.arange(s, dtype=torch.float64)
    x = ramp + 1000.0 * torch.arange(3, dtype=torch.float64)[:, None]  # 3 leads, offsets tell them apart
    x = x.expand(256, 3, s).clone()
    y = rrc(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == torch.float64
    # linear interpolation of a ramp is the ramp at the sampled positions: affine, one window shared by leads
    pos = y[:, 0]
    torch.testing.assert_close(y - pos[:, None], (x[:, :, :1] - x[:, :1, :1]).expand_as(y), rtol=0, atol=1e-9)
    step = pos.diff(dim=-1)
    torch.testing.assert_close(step, step[:, :1].expand_as(step), rtol=0, atol=1e-9)
    fraction = (step[:, 0] * (s - 1) + 1) / s  # window length / segment length
    assert (fraction >= 0.5 - 1e-9).all() and (fraction <= 1.0 + 1e-9).all()
    assert fraction.min() < 0.55 and fraction.max() > 0.95  # the whole 50-100 % range is drawn
    assert (pos[:, 0] >= 0).all() and (pos[:, -1] <= s - 1 + 1e-9).all()  # inside the segment


def test_simclr_preset_time_out_zeroes_20_to_40_percent_shared_by_leads():
    fs, segment_len = 100.0, 5.0
    _, _, timeout = _simclr_steps(fs, segment_len)
    s = 500
    x = torch.ones(512, 3, s, dtype=torch.float64)
    y = timeout(x, generator=torch.Generator().manual_seed(1))
    zero = y == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # same stretch on every lead
    assert torch.equal(y[~zero], x[~zero])  # nothing else changes
    z = zero[:, 0].long()
    runs = (z.diff(dim=-1) == 1).sum(-1) + z[:, 0]
    assert (runs == 1).all()  # one contiguous stretch per sample
    length = z.sum(-1)
    assert length.min() >= round(0.2 * s) and length.max() <= round(0.4 * s)
    assert length.min() < round(0.22 * s) and length.max() > round(0.38 * s)


def test_simclr_preset_is_seeded_and_validates():
    from augmentations.presets import simclr_ecg_augmentation

    aug = simclr_ecg_augmentation(100.0, 5.0)
    x = torch.randn(8, 12, 500)
    a = aug(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, aug(x, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(a, aug(x, generator=torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match="fs/segment_len"):
        simclr_ecg_augmentation(100.0, 0.0)
    with pytest.raises(ValueError, match="shorter than one sample"):
        simclr_ecg_augmentation(100.0, 0.001)


# --- default_ecg_augmentation: each step's parameters and effect, as its docstring states ---

def _default_steps(fs):
    from augmentations import AmplitudeScale, BaselineWander, GaussianNoise, TimeMask

    aug = default_ecg_augmentation(fs)
    steps = {type(step.transforms[0]).__name__: step for step in aug.transforms}
    assert all(len(step.transforms) == 1 for step in aug.transforms)
    names = ["AmplitudeScale", "BaselineWander"] + (["PowerlineNoise"] if fs > 100 else []) + \
        ["GaussianNoise", "TimeMask"]
    assert [type(s.transforms[0]).__name__ for s in aug.transforms] == names  # the documented order
    assert isinstance(steps["AmplitudeScale"].transforms[0], AmplitudeScale)
    assert isinstance(steps["BaselineWander"].transforms[0], BaselineWander)
    assert isinstance(steps["GaussianNoise"].transforms[0], GaussianNoise)
    assert isinstance(steps["TimeMask"].transforms[0], TimeMask)
    return steps


def _ecgish(b, leads, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, leads, t, generator=g, dtype=torch.float64).cumsum(-1) * 0.05 + \
        torch.randn(b, leads, 1, generator=g, dtype=torch.float64)


def test_default_preset_probabilities():
    steps = _default_steps(250.0)
    assert {k: v.p for k, v in steps.items()} == {"AmplitudeScale": 0.5, "BaselineWander": 0.5, "PowerlineNoise": 0.3,
                                                  "GaussianNoise": 0.5, "TimeMask": 0.3}
    x = _ecgish(4000, 1, 50)
    changed = (steps["AmplitudeScale"](x, generator=torch.Generator().manual_seed(0)) != x).any(-1).any(-1)
    assert 0.46 < changed.double().mean() < 0.54  # p = 0.5 per sample


def test_default_preset_amplitude_scale_is_0_8_to_1_2_per_sample():
    scale = _default_steps(100.0)["AmplitudeScale"].transforms[0]
    x = _ecgish(512, 12, 200)
    factor = scale(x, generator=torch.Generator().manual_seed(0)) / x
    torch.testing.assert_close(factor, factor[:, :1, :1].expand_as(factor), rtol=1e-12, atol=0)  # one per sample
    f = factor[:, 0, 0]
    assert f.min() >= 0.8 and f.max() <= 1.2 and f.min() < 0.82 and f.max() > 1.18


@pytest.mark.parametrize("name,low,high", [("GaussianNoise", 15.0, 35.0), ("PowerlineNoise", 20.0, 40.0)])
def test_default_preset_noise_snr_is_exact_in_float64(name, low, high):
    fs = 250.0
    noise = _default_steps(fs)[name].transforms[0]
    x = _ecgish(256, 12, 1250)
    added = noise(x, generator=torch.Generator().manual_seed(0)) - x
    snr = 10 * torch.log10(x.var(-1, unbiased=False) / added.pow(2).mean(-1))  # per lead
    torch.testing.assert_close(snr, snr[:, :1].expand_as(snr), rtol=0, atol=1e-9)  # one SNR per sample, every lead
    assert snr.min() >= low - 1e-9 and snr.max() <= high + 1e-9
    assert snr.min() < low + 1 and snr.max() > high - 1
    if name == "PowerlineNoise":  # a pure 50 Hz tone: 5 s at 250 Hz puts 50 Hz exactly on bin 250
        spectrum = torch.fft.rfft(added, dim=-1).abs()
        assert (spectrum.argmax(-1) == 250).all()
        assert (spectrum[..., 250] > 0.99 * spectrum.pow(2).sum(-1).sqrt()).all()


def test_default_preset_baseline_wander_is_slow_and_bounded():
    fs = 100.0
    wander = _default_steps(fs)["BaselineWander"].transforms[0]
    assert wander.freq == (0.05, 0.5) and wander.amplitude == (0.05, 0.5) and wander.n_components == 2
    x = _ecgish(256, 12, 1000)
    added = wander(x, generator=torch.Generator().manual_seed(0)) - x
    std = x.std(-1, unbiased=False, keepdim=True)
    assert (added.abs() <= 0.5 * std + 1e-12).all()  # two components of at most 0.25 std each
    slope_bound = 2 * math.pi * 0.5 * 0.5 * std / fs  # |d/dt| <= 2 pi f_max A_max per sample
    assert (added.diff(dim=-1).abs() <= slope_bound + 1e-12).all()
    assert added.abs().amax(-1).max() > 0.2 * std.max()  # not a no-op


def test_default_preset_time_mask_is_0_1_to_0_3_s():
    fs = 100.0
    mask = _default_steps(fs)["TimeMask"].transforms[0]
    x = torch.ones(512, 2, 500, dtype=torch.float64)
    zero = (mask(x, generator=torch.Generator().manual_seed(0)) == 0)[:, 0]
    length = zero.sum(-1)
    assert length.min() >= 10 and length.max() <= 30 and length.min() <= 11 and length.max() >= 29
