import numpy as np
import pytest
import torch
from lightly.utils.benchmarking import knn_predict
from sklearn.metrics import f1_score, roc_auc_score

from ssl_ecg.evaluate.knn import knn_scores
from ssl_ecg.evaluate.metrics import accuracy, macro_auroc, macro_f1, tune_thresholds


def clustered(n, c, seed, noise=0.3):
    centers = np.random.default_rng(123).standard_normal((c, 16)) * 3  # shared by train and test
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    return centers[y] + noise * rng.standard_normal((n, 16)), y


def test_knn_matches_lightly_ranking_and_separates():
    xtr, ytr = clustered(300, 4, 0)
    xte, yte = clustered(200, 4, 1)
    scores = knn_scores(xtr, ytr, xte, k=15, temperature=0.1)
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-5)
    f = torch.nn.functional.normalize
    ranked = knn_predict(f(torch.tensor(xte, dtype=torch.float32), dim=1),
                         f(torch.tensor(xtr, dtype=torch.float32), dim=1).T, torch.tensor(ytr), 4, knn_k=15, knn_t=0.1)
    assert (ranked[:, 0].numpy() == scores.argmax(1)).all()
    assert macro_auroc(yte, scores).value > 0.99 and accuracy(yte, scores) > 0.95
    shuffled = knn_scores(xtr, np.random.default_rng(2).permutation(ytr), xte, k=15)
    assert abs(macro_auroc(yte, shuffled).value - 0.5) < 0.1


def test_knn_multi_hot_votes():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = np.array([[1, 1], [1, 0], [0, 1]])
    s = knn_scores(train, labels, np.array([[1.0, 0.05]]), k=2, temperature=1.0)
    te = np.array([1.0, 0.05]) / np.hypot(1.0, 0.05)
    sims = np.array([train[0] @ te / 1.0, train[1] @ te / np.hypot(0.9, 0.1)])
    w = np.exp(sims)
    np.testing.assert_allclose(s[0], [1.0, w[0] / w.sum()], rtol=1e-5)


def test_metrics_agree_with_sklearn_and_list_exclusions():
    rng = np.random.default_rng(0)
    y = (rng.random((50, 4)) < 0.3).astype(int)
    y[:, 3] = 0  # no positives: excluded, not silently dropped
    scores = rng.random((50, 4)) + 0.5 * y
    m = macro_auroc(y, scores)
    assert m.excluded == [3]
    assert m.value == pytest.approx(np.mean([roc_auc_score(y[:, c], scores[:, c]) for c in range(3)]))
    th = tune_thresholds(y, scores)
    assert macro_f1(y, scores, th) == pytest.approx(f1_score(y, scores >= th, average="macro", zero_division=0))
    assert macro_f1(y[:, :3], scores[:, :3], th[:3]) >= macro_f1(y[:, :3], scores[:, :3], np.full(3, 0.5))
    with pytest.raises(ValueError, match="undefined"):
        macro_auroc(np.zeros((5, 2), int), rng.random((5, 2)))


def test_knn_probe_chooses_k_on_validation_and_scores_test_once_at_that_k(monkeypatch):
    import ssl_ecg.evaluate.knn as knn
    from ssl_ecg.evaluate import ProbeData, knn_probe

    (xtr, ytr), (xva, yva), (xte, yte) = (clustered(n, 3, s, noise=2.5) for n, s in ((120, 0), (60, 1), (90, 2)))
    calls = []
    real = knn.knn_scores

    def counting(train, labels, x, k=20, **kw):
        calls.append((len(x), k))
        return real(train, labels, x, k=k, **kw)

    monkeypatch.setattr(knn, "knn_scores", counting)
    res = knn_probe(ProbeData(xtr, ytr, xva, yva, xte, yte), ks=(1, 5, 25))
    vals = {g["k"]: g["val_auroc"] for g in res.grid}
    best = max(vals.values())
    assert res.setting == {"k": min(k for k, v in vals.items() if v == best)} and res.val_auroc == best
    assert [c for c in calls if c[0] == 90] == [(90, res.setting["k"])]  # the test split: once, at the chosen k
    expected = real(xtr, ytr, xte, k=res.setting["k"], temperature=0.1, n_classes=3)
    np.testing.assert_array_equal(res.test_scores, expected)
    assert res.test_auroc == macro_auroc(yte, expected).value
