"""Preset augmentation pipelines."""

from __future__ import annotations

from ecg_augmentations import (
    AmplitudeScale,
    BaselineWander,
    Compose,
    GaussianNoise,
    PowerlineNoise,
    RandomApply,
    RandomResizedCrop,
    TimeMask,
)

__all__ = ["default_ecg_augmentation", "simclr_ecg_augmentation"]

# Mehari & Strodthoff (2022), custom_simclr_bolts.py defaults: --rr_crop_ratio_range and --to_crop_ratio_range.
RRC_SCALE = (0.5, 1.0)
TIMEOUT_FRACTION = (0.2, 0.4)


def simclr_ecg_augmentation(fs: float, segment_len: float) -> Compose:
    """The ECG SimCLR augmentation of Mehari & Strodthoff: random resized crop, then time out.

    Mehari and Strodthoff, "Self-supervised representation learning from 12-lead
    ECG data", Computers in Biology and Medicine 141, 105114 (2022); code:
    ``tmehari/ecg-selfsupervised``. Their SimCLR, BYOL and SwAV runs use
    ``--trafos RandomResizedCrop TimeOut`` (the best pair of their augmentation
    study) with the defaults of ``custom_simclr_bolts.py``. Both are applied to
    every view (no probability), shared across leads, in this order:

    - random resized crop: a window of 50-100 % of the segment (fraction drawn
      uniformly), at a uniformly random position, linearly resampled back to the
      segment's ``round(segment_len * fs)`` samples (``rr_crop_ratio_range =
      [0.5, 1.0]``);
    - time out: one contiguous stretch of 20-40 % of the segment (fraction drawn
      uniformly, rounded to whole samples) set to zero (``to_crop_ratio_range =
      [0.2, 0.4]``).

    Their windows are 2.5 s at 100 Hz; here the fractions apply to whatever
    segment the recipe sets.

    Args:
        fs: sampling rate in Hz.
        segment_len: length in seconds of the segments the pipeline receives.

    Raises:
        ValueError: ``fs`` or ``segment_len`` is not positive, or the segment is shorter than one sample.
    """
    if fs <= 0 or segment_len <= 0:
        raise ValueError(f"fs/segment_len: expected positive values, got {segment_len} s at {fs} Hz")
    samples = int(round(segment_len * fs))
    if samples < 1:
        raise ValueError(f"segment_len: {segment_len} s at {fs} Hz is shorter than one sample")
    timeout = (TIMEOUT_FRACTION[0] * samples / fs, TIMEOUT_FRACTION[1] * samples / fs)  # seconds
    return Compose([
        RandomResizedCrop(samples, scale=RRC_SCALE),
        TimeMask(fs, duration=timeout, n_masks=1, fill="zero"),
    ])


def default_ecg_augmentation(fs: float) -> Compose:
    """A mild, label-preserving mix of ECG perturbations (not tied to one paper).

    The SimCLR-family baselines use :func:`simclr_ecg_augmentation` instead.
    Each step is applied independently per sample, in this order:

    - amplitude scaling by a log-uniform factor in 0.8-1.2, one per sample (p = 0.5): gain differences
      between devices;
    - baseline wander (p = 0.5): two summed sinusoids of 0.05-0.5 Hz, each with a peak amplitude of
      0.025-0.25 x the lead's standard deviation (ecg-augmentations' defaults), for respiration and
      electrode motion;
    - powerline interference at 50 Hz, SNR 20-40 dB per lead (p = 0.3), only when 50 Hz is below
      the Nyquist frequency (fs > 100 Hz);
    - white Gaussian noise, SNR 15-35 dB per lead (p = 0.5);
    - one time mask of 0.1-0.3 s set to zero, shared across leads (p = 0.3): dropouts.

    Morphology-changing transforms (time warps, lead permutations, inversion) are
    left out because they can change the diagnosis.

    Args:
        fs: sampling rate in Hz.
    """
    steps = [
        RandomApply([AmplitudeScale(scale=(0.8, 1.2))], p=0.5),
        RandomApply([BaselineWander(fs)], p=0.5),
    ]
    if fs > 100.0:
        steps.append(RandomApply([PowerlineNoise(fs, freq=50.0, snr_db=(20.0, 40.0))], p=0.3))
    steps += [
        RandomApply([GaussianNoise(snr_db=(15.0, 35.0))], p=0.5),
        RandomApply([TimeMask(fs, duration=(0.1, 0.3))], p=0.3),
    ]
    return Compose(steps)
