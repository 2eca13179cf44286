import itertools
import math

import pytest
import torch

from losses import ClocsLoss


def fixed_reference(z, ids, tau):
    """Float64 loops over ordered view pairs, straight from the docstring."""
    n, v, _ = z.shape
    e = torch.nn.functional.normalize(z.double(), dim=-1)
    total = 0.0
    for a, b in itertools.permutations(range(v), 2):
        s = [[float(e[i, a] @ e[j, b]) / tau for j in range(n)] for i in range(n)]

        def nlp(i, j):
            return -(s[i][j] - math.log(sum(math.exp(x) for x in s[i])))

        diag = sum(nlp(i, i) for i in range(n)) / n
        off = [(i, j) for i in range(n) for j in range(n) if i != j and ids[i] == ids[j]]
        total += (diag + sum(nlp(i, j) for i, j in off) / len(off)) / 2 if off else diag
    return total / (v * (v - 1))


def published_clocs(z, ids, tau):
    """The published obtain_contrastive_loss semantics (float64), overwrite bug included."""
    n, v, _ = z.shape
    e = torch.nn.functional.normalize(z.double(), dim=-1)
    same = ids[:, None] == ids[None, :]
    r1, c1 = torch.where(torch.triu(same, 1))
    r2, c2 = torch.where(torch.tril(same, -1))
    loss, ncomb = 0.0, 0
    for a, b in itertools.combinations(range(v), 2):
        ex = torch.exp(e[:, a] @ e[:, b].T / tau)
        rows, cols = ex.sum(1), ex.sum(0)
        d1 = -torch.log(torch.diag(ex) / rows).mean()
        d2 = -torch.log(torch.diag(ex) / cols).mean()
        loss = d1 + d2  # the overwrite
        terms = 2
        if len(r1):
            loss = loss + -torch.log(ex[r1, c1] / rows[r1]).mean()
            terms += 1
        if len(r2):
            loss = loss + -torch.log(ex[r2, c2] / cols[c2]).mean()
            terms += 1
        ncomb += 1
    return float(loss / (terms * ncomb))


@pytest.mark.parametrize("n,v,d,tau,seed", [(6, 2, 4, 0.1, 0), (8, 3, 5, 0.5, 1), (7, 4, 8, 0.07, 2),
                                            (5, 12, 3, 1.0, 3), (9, 2, 16, 0.01, 4)])
@pytest.mark.parametrize("pattern", ["unique", "pairs", "random"])
def test_matches_float64_reference(n, v, d, tau, seed, pattern):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, v, d, generator=g)
    ids = {"unique": torch.arange(n), "pairs": torch.arange(n) // 2,
           "random": torch.randint(0, 3, (n,), generator=g)}[pattern]
    got = ClocsLoss(tau)(z, ids).item()
    assert got == pytest.approx(fixed_reference(z, ids, tau), rel=1e-6, abs=1e-6)


def test_equals_published_code_for_two_views_and_unique_ids():
    z = torch.randn(10, 2, 8, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(10)
    assert ClocsLoss(0.1)(z, ids).item() == pytest.approx(published_clocs(z, ids, 0.1), rel=1e-6)


def test_published_code_only_sees_the_last_pair():
    # The overwrite bug: with V = 3 the published value depends only on views (1, 2); ours on all pairs.
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 3, 8, generator=g)
    z2 = z.clone()
    z2[:, 0] = torch.randn(6, 8, generator=g)  # change view 0 only
    ids = torch.arange(6)
    assert published_clocs(z2, ids, 0.1) == pytest.approx(published_clocs(z, ids, 0.1), rel=1e-9)
    assert ClocsLoss(0.1)(z2, ids).item() != pytest.approx(ClocsLoss(0.1)(z, ids).item(), rel=1e-3)


def test_gradcheck_and_permutation():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(5, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 0, 1, 2, 2])
    loss_fn = ClocsLoss(0.3)
    # the loss computes in float32; compare its gradient with float64 finite differences loosely
    loss_fn(z, ids).backward()
    num = torch.zeros_like(z)
    eps = 1e-4
    with torch.no_grad():
        for idx in itertools.product(*map(range, z.shape)):
            zp, zm = z.clone(), z.clone()
            zp[idx] += eps
            zm[idx] -= eps
            num[idx] = (fixed_reference(zp, ids, 0.3) - fixed_reference(zm, ids, 0.3)) / (2 * eps)
    torch.testing.assert_close(z.grad, num, rtol=1e-3, atol=1e-5)
    perm = torch.randperm(5, generator=g)
    assert loss_fn(z[perm], ids[perm]).item() == pytest.approx(loss_fn(z, ids).item(), rel=1e-6)


def test_needs_two_views_and_stays_finite():
    with pytest.raises(ValueError, match="V >= 2"):
        ClocsLoss()(torch.randn(4, 1, 8), torch.arange(4))
    z = torch.ones(4, 3, 8, requires_grad=True)
    loss = ClocsLoss(0.01)(z, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    one = torch.randn(1, 2, 8, requires_grad=True)
    val = ClocsLoss()(one, torch.tensor([0]))
    val.backward()
    assert val.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(one.grad).all()
