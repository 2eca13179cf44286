import math
import warnings

import pytest
import torch
from lightly.loss import NTXentLoss

from losses import PatientNTXentLoss


def reference_loss(z, ids, tau):
    """Float64 loops straight from the definition in the docstring."""
    z = torch.nn.functional.normalize(z.double().reshape(-1, z.shape[-1]), dim=1)
    v = z.shape[0] // len(ids)
    owner = [int(ids[r // v]) for r in range(z.shape[0])]
    m = z.shape[0]
    total, count = 0.0, 0
    for a in range(m):
        positives = [p for p in range(m) if p != a and owner[p] == owner[a]]
        if not positives:
            continue
        denom = sum(math.exp(float(z[a] @ z[k]) / tau) for k in range(m) if k != a)
        total += -sum(math.log(math.exp(float(z[a] @ z[p]) / tau) / denom) for p in positives) / len(positives)
        count += 1
    return total / count if count else 0.0


def autograd_reference(z, ids, tau):
    """Float64 masked log-softmax through autograd, to check the analytic backward."""
    n, v, d = z.shape
    e = torch.nn.functional.normalize(z.reshape(n * v, d), dim=1)
    owner = ids.repeat_interleave(v)
    eye = torch.eye(n * v, dtype=torch.bool)
    logits = (e @ e.T / tau).masked_fill(eye, float("-inf"))
    logp = logits.log_softmax(1).masked_fill(eye, 0.0)
    pos = (owner[:, None] == owner[None, :]) & ~eye
    npos = pos.sum(1)
    valid = npos > 0
    per = -(logp * pos).sum(1)[valid] / npos[valid]
    return per.mean()


CASES = [
    # (N, V, D, tau, id pattern)
    (6, 2, 8, 0.1, "unique"),
    (8, 3, 5, 0.5, "pairs"),
    (10, 4, 16, 0.07, "random"),
    (5, 1, 4, 1.0, "pairs"),
    (7, 12, 3, 0.2, "random"),
    (9, 2, 32, 0.01, "one"),
]


def make_ids(n, pattern, g):
    if pattern == "unique":
        return torch.arange(n)
    if pattern == "pairs":
        return torch.arange(n) // 2
    if pattern == "one":
        return torch.zeros(n, dtype=torch.long)
    return torch.randint(0, max(2, n // 3), (n,), generator=g)


@pytest.mark.parametrize("n,v,d,tau,pattern", CASES)
@pytest.mark.parametrize("chunk_size", [None, 1, 5])
def test_matches_loop_reference(n, v, d, tau, pattern, chunk_size):
    g = torch.Generator().manual_seed(n * 100 + v)
    z = torch.randn(n, v, d, generator=g)
    ids = make_ids(n, pattern, g)
    got = PatientNTXentLoss(temperature=tau, chunk_size=chunk_size)(z, ids)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(reference_loss(z, ids, tau), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("n,v,d,tau,pattern", CASES)
def test_backward_matches_autograd_reference(n, v, d, tau, pattern):
    g = torch.Generator().manual_seed(7 + n)
    z = torch.randn(n, v, d, generator=g, dtype=torch.float64)
    ids = make_ids(n, pattern, g)
    z1 = z.clone().float().requires_grad_(True)
    PatientNTXentLoss(temperature=tau, chunk_size=3)(z1, ids).backward()
    z2 = z.clone().requires_grad_(True)
    autograd_reference(z2, ids, tau).backward()
    torch.testing.assert_close(z1.grad.double(), z2.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("tau", [0.07, 0.1, 0.5])
@pytest.mark.parametrize("n", [1 + 1, 4, 33])
def test_unique_ids_two_views_equals_lightly_ntxent(n, tau):
    g = torch.Generator().manual_seed(n)
    z = torch.randn(n, 2, 16, generator=g)
    ours = PatientNTXentLoss(temperature=tau)(z, torch.arange(n))
    theirs = NTXentLoss(temperature=tau)(z[:, 0], z[:, 1])
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-6)


def test_gradcheck_float64():
    # The core computes in float32; gradcheck in float64 needs a float64 core, so
    # we check the Function directly on float64 normalised inputs.
    from losses._core import multi_positive_infonce

    g = torch.Generator().manual_seed(0)
    e = torch.nn.functional.normalize(torch.randn(6, 3, generator=g, dtype=torch.float64), dim=1)
    ids = torch.tensor([0, 0, 1, 1, 2, 3])

    def f(x):
        total, count = multi_positive_infonce(x, x, ids, ids, 0.3, chunk_size=4)
        return total / count

    assert torch.autograd.gradcheck(f, (e.requires_grad_(True),), eps=1e-6, atol=1e-5)


def test_permutation_invariance():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(20, 3, 8, generator=g)
    ids = torch.randint(0, 6, (20,), generator=g)
    perm = torch.randperm(20, generator=g)
    loss_fn = PatientNTXentLoss(0.1)
    assert loss_fn(z[perm], ids[perm]).item() == pytest.approx(loss_fn(z, ids).item(), rel=1e-6)


@pytest.mark.parametrize("tau", [0.01, 0.05, 0.3, 1.0])
def test_finite_for_extreme_temperatures_and_collapse(tau):
    z = torch.ones(16, 2, 8, requires_grad=True)  # collapsed
    loss = PatientNTXentLoss(tau)(z, torch.arange(16) // 4)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    z2 = (10 * torch.randn(16, 2, 8, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    loss2 = PatientNTXentLoss(tau)(z2, torch.arange(16))
    loss2.backward()
    assert torch.isfinite(loss2) and torch.isfinite(z2.grad).all()


def test_no_positive_returns_connected_zero_and_warns_once():
    loss_fn = PatientNTXentLoss()
    z = torch.randn(5, 1, 4, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="no anchor"):
        loss = loss_fn(z, torch.arange(5))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_fn(z, torch.arange(5))  # second time: silent


def test_single_instance_single_view():
    z = torch.randn(1, 1, 4, requires_grad=True)
    with pytest.warns(RuntimeWarning):
        loss = PatientNTXentLoss()(z, torch.tensor([3]))
    loss.backward()
    assert loss.item() == 0.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_stays_finite(dtype):
    z = torch.randn(32, 4, 16, generator=torch.Generator().manual_seed(2))
    lin = torch.nn.Linear(16, 16)
    with torch.autocast("cpu", dtype=dtype):
        zz = lin(z)
        loss = PatientNTXentLoss(0.05)(zz, torch.arange(32) // 2)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(lin.weight.grad).all()


@pytest.mark.parametrize(
    "z,ids,match",
    [
        (torch.randn(4, 8), torch.arange(4), r"\(N, V, D\)"),
        (torch.randn(4, 2, 8), torch.arange(3), r"shape \(4,\)"),
        (torch.randn(4, 2, 8), torch.zeros(4), "integer ids"),
    ],
)
def test_bad_input_is_named(z, ids, match):
    with pytest.raises(ValueError, match=match):
        PatientNTXentLoss()(z, ids)


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        PatientNTXentLoss(temperature=0)
