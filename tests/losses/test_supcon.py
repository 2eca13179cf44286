import math
import warnings

import pytest
import torch

from losses import PatientNTXentLoss, SupConLoss


def reference(z, labels, tau):
    """Float64 loops: weights from equality (N,) or Jaccard overlap (N, C)."""
    n, v, _ = z.shape
    e = torch.nn.functional.normalize(z.double().reshape(n * v, -1), dim=1)
    owner = [r // v for r in range(n * v)]

    def weight(i, j):
        if labels.dim() == 1:
            return float(labels[i] == labels[j])
        a, b = labels[i].bool(), labels[j].bool()
        union = int((a | b).sum())
        return int((a & b).sum()) / union if union else 0.0

    total, count = 0.0, 0
    for r in range(n * v):
        w = [0.0 if c == r else weight(owner[r], owner[c]) for c in range(n * v)]
        if sum(w) == 0:
            continue
        denom = sum(math.exp(float(e[r] @ e[k]) / tau) for k in range(n * v) if k != r)
        total += -sum(wc * (float(e[r] @ e[c]) / tau - math.log(denom)) for c, wc in enumerate(w) if wc) / sum(w)
        count += 1
    return total / count if count else 0.0


@pytest.mark.parametrize("n,v,c,tau,seed", [(6, 2, 3, 0.1, 0), (9, 3, 5, 0.5, 1), (12, 1, 4, 0.07, 2),
                                            (5, 4, 2, 1.0, 3)])
def test_single_and_multi_label_match_reference(n, v, c, tau, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, v, 8, generator=g)
    single = torch.randint(0, c, (n,), generator=g)
    multi = (torch.rand(n, c, generator=g) < 0.4).float()
    multi[0] = 0  # an all-zero row has no positive
    loss = SupConLoss(tau, chunk_size=4)
    assert loss(z, single).item() == pytest.approx(reference(z, single, tau), rel=1e-6, abs=1e-6)
    assert loss(z, multi).item() == pytest.approx(reference(z, multi, tau), rel=1e-6, abs=1e-6)


def test_one_hot_equals_class_indices_and_patient_ntxent():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(10, 2, 8, generator=g)
    y = torch.randint(0, 3, (10,), generator=g)
    a = SupConLoss(0.2)(z, y)
    b = SupConLoss(0.2)(z, torch.nn.functional.one_hot(y, 3).float())
    c = PatientNTXentLoss(0.2)(z, y)
    assert a.item() == pytest.approx(b.item(), rel=1e-6) and a.item() == pytest.approx(c.item(), rel=1e-6)


def test_multi_label_gradient_matches_autograd_reference():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(6, 2, 5, generator=g, dtype=torch.float64)
    y = (torch.rand(6, 3, generator=g) < 0.5).float()
    lab = y.repeat_interleave(2, dim=0)
    inter = lab @ lab.T
    union = lab.sum(1)[:, None] + lab.sum(1)[None] - inter
    w = torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter)).fill_diagonal_(0)
    eye = torch.eye(12, dtype=torch.bool)

    def ref(zz):
        ee = torch.nn.functional.normalize(zz.reshape(12, 5), dim=1)
        lp = (ee @ ee.T / 0.3).masked_fill(eye, float("-inf")).log_softmax(1).masked_fill(eye, 0)
        valid = w.sum(1) > 0
        return (-(w * lp).sum(1)[valid] / w.sum(1)[valid]).mean()

    z1 = z.clone().requires_grad_(True)
    ref(z1).backward()
    z2 = z.clone().float().requires_grad_(True)
    SupConLoss(0.3)(z2, y).backward()
    torch.testing.assert_close(z2.grad.double(), z1.grad, rtol=1e-4, atol=1e-6)


def test_no_positive_anywhere_is_zero_connected_and_warns_once():
    z = torch.randn(4, 1, 8, requires_grad=True)
    loss_fn = SupConLoss()
    with pytest.warns(RuntimeWarning):
        loss = loss_fn(z, torch.zeros(4, 3))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_fn(z, torch.arange(4))


@pytest.mark.parametrize("labels,match", [(torch.tensor([0.5, 1.0, 0.0, 1.0]), "integer"),
                                          (torch.tensor([[0.0, 2.0]] * 4), "only 0 and 1"),
                                          (torch.arange(3), "N = 4")])
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        SupConLoss()(torch.randn(4, 2, 8), labels)
