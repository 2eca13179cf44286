"""Preset augmentation pipelines."""

from __future__ import annotations

from ecg_augmentations import (
    AmplitudeScale,
    BaselineWander,
    Compose,
    GaussianNoise,
    PowerlineNoise,
    RandomApply,
    TimeMask,
)

__all__ = ["default_ecg_augmentation"]


def default_ecg_augmentation(fs: float) -> Compose:
    """The SimCLR-baseline augmentation: mild, label-preserving ECG perturbations.

    Each applied independently per sample, in this order:

    - amplitude scaling by 0.8-1.2 (p = 0.5): gain differences between devices;
    - baseline wander (p = 0.5): respiration and electrode motion below 1 Hz;
    - powerline interference at 50 Hz, SNR 20-40 dB (p = 0.3), only when 50 Hz is below
      the Nyquist frequency (fs > 100 Hz);
    - Gaussian noise, SNR 15-35 dB (p = 0.5);
    - one time mask of 0.1-0.3 s (p = 0.3): dropouts.

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
