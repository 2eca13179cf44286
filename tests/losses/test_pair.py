import math

import pytest
import torch

from losses import ContrastivePairLoss


def reference(e1, e2, same, margin):
    total = 0.0
    for a, b, y in zip(e1.double(), e2.double(), same):
        d = math.sqrt(float(((a - b) ** 2).sum()))
        total += 0.5 * d * d if y else 0.5 * max(0.0, margin - d) ** 2
    return total / len(e1)


@pytest.mark.parametrize("margin,scale", [(1.0, 0.3), (2.0, 1.0), (0.5, 0.1)])
def test_matches_reference(margin, scale):
    g = torch.Generator().manual_seed(0)
    e1, e2 = scale * torch.randn(16, 8, generator=g), scale * torch.randn(16, 8, generator=g)
    same = torch.randint(0, 2, (16,), generator=g).bool()
    got = ContrastivePairLoss(margin)(e1, e2, same).item()
    assert got == pytest.approx(reference(e1, e2, same, margin), rel=1e-5)


def test_identical_embeddings_have_finite_gradients():
    e = torch.randn(4, 8, requires_grad=True)
    loss = ContrastivePairLoss()(e, e.detach().clone(), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert loss.item() == pytest.approx(0.25, rel=1e-5)  # two dissimilar pairs at d = 0: 0.5 * 1^2 each / 4
    assert torch.isfinite(e.grad).all()


def test_bad_input():
    with pytest.raises(ValueError, match="same"):
        ContrastivePairLoss()(torch.randn(3, 2), torch.randn(3, 2), torch.tensor([0, 2, 1]))
    with pytest.raises(ValueError, match="one shape"):
        ContrastivePairLoss()(torch.randn(3, 2), torch.randn(3, 4), torch.tensor([0, 1, 1]))
