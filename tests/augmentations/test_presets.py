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
