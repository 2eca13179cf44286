"""Distillation losses against slow float64 references written out here."""

import math

import pytest
import torch

from losses.distill import EmbeddingDistillLoss, LogitDistillLoss


def _rows(x):
    return x.double().reshape(-1, x.shape[-1]).tolist()


def embedding_reference(s, t, kind):
    """Loop over pairs and dimensions in float64."""
    total, count = 0.0, 0
    for a, b in zip(_rows(s), _rows(t)):
        na, nb = max(math.sqrt(sum(v * v for v in a)), 1e-12), max(math.sqrt(sum(v * v for v in b)), 1e-12)
        ua, ub = [v / na for v in a], [v / nb for v in b]
        if kind == "cosine":
            total += 1 - sum(x * y for x, y in zip(ua, ub))
            count += 1
        else:
            total += sum((x - y) ** 2 for x, y in zip(ua, ub))
            count += len(a)
    return total / count


def logit_reference(s, t, temperature, kind):
    """KL(teacher || student) at temperature T, times T^2, by loops in float64."""
    s, t = s.double().tolist(), t.double().tolist()
    total = 0.0
    for zs, zt in zip(s, t):
        if kind == "multiclass":
            es, et = [math.exp(v / temperature) for v in zs], [math.exp(v / temperature) for v in zt]
            p, q = [v / sum(et) for v in et], [v / sum(es) for v in es]
            total += sum(pk * math.log(pk / qk) for pk, qk in zip(p, q))
        else:
            for a, b in zip(zt, zs):
                p, q = 1 / (1 + math.exp(-a / temperature)), 1 / (1 + math.exp(-b / temperature))
                total += (p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))) / len(zt)
    return temperature ** 2 * total / len(s)


@pytest.mark.parametrize("kind", ["cosine", "mse"])
@pytest.mark.parametrize("shape", [(16, 8), (5, 3, 7)])
def test_embedding_loss_matches_reference(kind, shape):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(*shape, generator=g), 3 * torch.randn(*shape, generator=g)
    got = EmbeddingDistillLoss(kind)(s, t)
    assert got.item() == pytest.approx(embedding_reference(s, t, kind), rel=1e-5, abs=1e-7)
    got64 = EmbeddingDistillLoss(kind)(s.double(), t.double())
    assert got64.item() == pytest.approx(embedding_reference(s, t, kind), rel=1e-12, abs=1e-14)


def test_mse_is_two_over_d_times_cosine():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(32, 12, generator=g, dtype=torch.float64), torch.randn(32, 12, generator=g, dtype=torch.float64)
    cosine, mse = EmbeddingDistillLoss("cosine")(s, t), EmbeddingDistillLoss("mse")(s, t)
    assert mse.item() == pytest.approx(2 / 12 * cosine.item(), rel=1e-12)


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_embedding_loss_properties(kind):
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(10, 6, generator=g, dtype=torch.float64), torch.randn(10, 6, generator=g, dtype=torch.float64)
    loss = EmbeddingDistillLoss(kind)
    assert loss(t, t).item() == pytest.approx(0.0, abs=1e-12)
    # scale invariance: any positive length per row, on either side
    scales = torch.rand(10, 1, generator=g, dtype=torch.float64) * 10 + 0.1
    assert loss(s * scales, t).item() == pytest.approx(loss(s, t).item(), rel=1e-12)
    assert loss(scales * t, t).item() == pytest.approx(0.0, abs=1e-12)
    # bounds: opposite rows give the maximum
    top = 2.0 if kind == "cosine" else 4.0 / 6
    assert loss(-t, t).item() == pytest.approx(top, rel=1e-12)
    assert 0 <= loss(s, t).item() <= top


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_embedding_loss_gradcheck(kind):
    g = torch.Generator().manual_seed(4)
    s = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(EmbeddingDistillLoss(kind), (s, t))


@pytest.mark.parametrize("kind,k", [("multiclass", 4), ("multilabel", 3), ("binary", 1)])
@pytest.mark.parametrize("temperature", [1.0, 2.5, 0.5])
def test_logit_loss_matches_reference(kind, k, temperature):
    g = torch.Generator().manual_seed(5)
    s, t = 2 * torch.randn(12, k, generator=g), 2 * torch.randn(12, k, generator=g)
    got = LogitDistillLoss(temperature, kind)(s, t)
    assert got.item() == pytest.approx(logit_reference(s, t, temperature, kind), rel=1e-5)
    got64 = LogitDistillLoss(temperature, kind)(s.double(), t.double())
    assert got64.item() == pytest.approx(logit_reference(s, t, temperature, kind), rel=1e-10)


def test_logit_loss_at_t1_is_torch_kl_and_bce_minus_entropy():
    g = torch.Generator().manual_seed(6)
    s, t = torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randn(8, 5, generator=g, dtype=torch.float64)
    kl = torch.nn.functional.kl_div(torch.log_softmax(s, 1), torch.log_softmax(t, 1), log_target=True,
                                    reduction="batchmean")
    assert LogitDistillLoss(1.0, "multiclass")(s, t).item() == pytest.approx(kl.item(), rel=1e-12)
    # Bernoulli KL = cross-entropy with soft targets minus the teacher's entropy
    p = torch.sigmoid(t)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(s, p)
    entropy = torch.nn.functional.binary_cross_entropy_with_logits(t, p)
    assert LogitDistillLoss(1.0, "multilabel")(s, t).item() == pytest.approx((bce - entropy).item(), rel=1e-10)


@pytest.mark.parametrize("kind,k", [("multiclass", 3), ("multilabel", 2), ("binary", 1)])
def test_logit_loss_properties_and_gradcheck(kind, k):
    g = torch.Generator().manual_seed(7)
    s = torch.randn(6, k, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, k, generator=g, dtype=torch.float64, requires_grad=True)
    loss = LogitDistillLoss(2.0, kind)
    assert loss(t, t).item() == pytest.approx(0.0, abs=1e-12)
    assert loss(s, t).item() > 0
    # saturated logits stay finite (logsigmoid / log_softmax, no log(0))
    big = torch.tensor([[80.0] * k, [-80.0] * k], dtype=torch.float64)
    assert torch.isfinite(loss(-big, big))
    assert torch.autograd.gradcheck(loss, (s, t))
    if kind == "multiclass":  # softmax is shift invariant per row
        shift = torch.randn(6, 1, generator=g, dtype=torch.float64)
        assert loss(s + shift, t).item() == pytest.approx(loss(s, t).item(), rel=1e-10)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="kind"):
        EmbeddingDistillLoss("huber")
    with pytest.raises(ValueError, match="embeddings"):
        EmbeddingDistillLoss()(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="temperature"):
        LogitDistillLoss(0.0)
    with pytest.raises(ValueError, match="temperature"):
        LogitDistillLoss(float("inf"))
    with pytest.raises(ValueError, match="kind"):
        LogitDistillLoss(1.0, "softmax")
    with pytest.raises(ValueError, match="binary"):
        LogitDistillLoss(1.0, "binary")(torch.randn(3, 2), torch.randn(3, 2))
    with pytest.raises(ValueError, match="multiclass"):
        LogitDistillLoss(1.0, "multiclass")(torch.randn(3, 1), torch.randn(3, 1))
    with pytest.raises(ValueError, match="logits"):
        LogitDistillLoss(1.0, "multilabel")(torch.randn(3), torch.randn(3))


def _bf16_pair(shape, seed):
    """Student/teacher tensors as a bf16-mixed run hands them over: outputs of linear layers under autocast."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape[0], 16, generator=g)
    a, b = torch.nn.Linear(16, shape[1]), torch.nn.Linear(16, shape[1])
    with torch.no_grad():
        for layer in (a, b):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s, t = a(x), b(x)
    assert s.dtype == t.dtype == torch.bfloat16
    return s, t


@pytest.mark.parametrize("make", [lambda: EmbeddingDistillLoss("cosine"), lambda: EmbeddingDistillLoss("mse"),
                                  lambda: LogitDistillLoss(2.0, "multiclass"),
                                  lambda: LogitDistillLoss(3.0, "multilabel")])
def test_losses_compute_in_float32_under_bf16_autocast(make):
    loss = make()
    s, t = _bf16_pair((64, 12), seed=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(s, t)
    want = loss(s.float(), t.float())  # the same bf16 values, float32 arithmetic, no autocast
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=1e-6, abs=1e-7)
    # and both equal the float64 loop reference of those values within float32 rounding
    if isinstance(loss, EmbeddingDistillLoss):
        ref = embedding_reference(s.float(), t.float(), loss.kind)
    else:
        ref = logit_reference(s.float(), t.float(), loss.temperature, loss.kind)
    assert got.item() == pytest.approx(ref, rel=1e-5, abs=1e-7)


def test_binary_logit_loss_under_bf16_autocast():
    s, t = _bf16_pair((64, 1), seed=9)
    loss = LogitDistillLoss(2.0, "binary")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(s, t)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(logit_reference(s.float(), t.float(), 2.0, "binary"), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("kind,k", [("multiclass", 4), ("multilabel", 3), ("binary", 1)])
def test_logit_gradient_scale_is_independent_of_temperature(kind, k):
    """Hinton et al. section 2.1: for large T the gradient of KL at temperature T is ~ (z_s - z_t) / (K T^2) per
    logit (zero-mean logits); the T^2 factor makes it (z_s - z_t) / K, whatever T. Without it the gradient would
    shrink 100x from T = 10 to T = 100."""
    g = torch.Generator().manual_seed(10)
    zs, zt = torch.randn(8, k, generator=g, dtype=torch.float64), torch.randn(8, k, generator=g, dtype=torch.float64)
    if kind == "multiclass":  # softmax ignores a per-row shift: compare with zero-mean logits, as Hinton et al.
        zs, zt = zs - zs.mean(1, keepdim=True), zt - zt.mean(1, keepdim=True)

    def grad(temperature):
        s = zs.clone().requires_grad_(True)
        LogitDistillLoss(temperature, kind)(s, zt).backward()
        return s.grad

    n = zs.shape[0]
    # the large-T limits: softmax(z / T) ~ (1 + z / T) / K; sigmoid(z / T) ~ 1/2 + z / (4 T)
    limit = (zs - zt) / (k * n) if kind == "multiclass" else (zs - zt) / (4 * n * k)
    g10, g100, g1000 = grad(10.0), grad(100.0), grad(1000.0)
    assert (g1000 - limit).norm().item() < 1e-2 * limit.norm().item()  # the O(1/T) remainder
    assert g100.norm().item() == pytest.approx(g1000.norm().item(), rel=2e-2)
    assert g10.norm().item() == pytest.approx(g1000.norm().item(), rel=0.2)
