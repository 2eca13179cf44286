import numpy as np
import pytest

from ssl_ecg.errors import SplitError
from ssl_ecg.evaluate import logistic_probe


def data(n, seed, shuffle=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, 16)) * 0.5
    x[:, 0] += 3 * y
    if shuffle:
        y = rng.permutation(y)
    return x, y


def test_label_plus_noise_is_separable():
    res = logistic_probe(*data(200, 0), *data(100, 1), *data(300, 2))
    assert res.test_auroc > 0.99 and res.C in (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def test_shuffled_labels_sit_near_chance():
    res = logistic_probe(*data(200, 0, True), *data(100, 1, True), *data(2000, 2, True))
    assert abs(res.test_auroc - 0.5) < 0.06


def test_split_without_positives():
    x, y = data(50, 0)
    with pytest.raises(SplitError, match="validation split"):
        logistic_probe(x, y, x[:5], np.zeros(5, int), x, y)


def multi(n, seed, kind, shuffle=False):
    rng = np.random.default_rng(seed)
    if kind == "multiclass":
        y = rng.integers(0, 4, n)
        onehot = np.eye(4)[y]
    else:
        y = (rng.random((n, 3)) < 0.4).astype(int)
        y[y.sum(1) == 0, 0] = 1
        onehot = y
    x = rng.standard_normal((n, 12)) * 0.5
    x[:, : onehot.shape[1]] += 3 * onehot
    if shuffle:
        y = y[rng.permutation(n)]
    return x, y


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
@pytest.mark.parametrize("probe", ["logistic", "torch"])
def test_multiclass_and_multilabel_probes_agree_with_a_sklearn_macro_auroc(kind, probe):
    from sklearn.metrics import roc_auc_score

    from ssl_ecg.evaluate import torch_linear_probe

    fn = logistic_probe if probe == "logistic" else torch_linear_probe
    tr, va, te = multi(300, 0, kind), multi(150, 1, kind), multi(400, 2, kind)
    res = fn(*tr, *va, *te)
    assert res.test_auroc > 0.99
    y = np.eye(4)[te[1]] if kind == "multiclass" else te[1]
    assert res.test_auroc == pytest.approx(roc_auc_score(y, res.test_scores, average="macro"))
    shuffled = fn(*multi(300, 0, kind, True), *multi(150, 1, kind, True), *multi(2000, 2, kind, True))
    assert abs(shuffled.test_auroc - 0.5) < 0.06


def test_torch_probe_binary_selects_on_validation_and_is_seeded():
    from ssl_ecg.evaluate import torch_linear_probe

    a = torch_linear_probe(*data(200, 0), *data(100, 1), *data(300, 2), seed=3, batch_size=32)
    b = torch_linear_probe(*data(200, 0), *data(100, 1), *data(300, 2), seed=3, batch_size=32)
    assert a.test_auroc > 0.99 and np.array_equal(a.test_scores, b.test_scores) and a.best_epoch == b.best_epoch
    assert 0 <= a.best_epoch < 200
    bad = torch_linear_probe(*data(200, 0, True), *data(100, 1, True), *data(2000, 2, True), epochs=30)
    assert abs(bad.test_auroc - 0.5) < 0.06


def test_multilabel_class_without_positives_in_a_split_is_named():
    x, y = multi(100, 0, "multilabel")
    y_val = y[:20].copy()
    y_val[:, 2] = 0
    with pytest.raises(SplitError, match=r"validation split: class\(es\) \[2\]"):
        logistic_probe(x, y, x[:20], y_val, x, y)
