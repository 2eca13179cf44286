import numpy as np
import pytest

from ssl_ecg.errors import ConfigError, SplitError
from ssl_ecg.evaluate import ProbeData, ProbeResult, fit_probe, logistic_probe


def data(n, seed, shuffle=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, 16)) * 0.5
    x[:, 0] += 3 * y
    if shuffle:
        y = rng.permutation(y)
    return x, y


def test_label_plus_noise_is_separable():
    res = logistic_probe(ProbeData(*data(200, 0), *data(100, 1), *data(300, 2)))
    assert res.test_auroc > 0.99 and res.setting["C"] in (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    assert [g["C"] for g in res.grid] == [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    assert res.val_auroc == max(g["val_auroc"] for g in res.grid)


def test_shuffled_labels_sit_near_chance():
    res = logistic_probe(ProbeData(*data(200, 0, True), *data(100, 1, True), *data(2000, 2, True)))
    assert abs(res.test_auroc - 0.5) < 0.06


def test_split_without_positives():
    x, y = data(50, 0)
    with pytest.raises(SplitError, match="validation split"):
        logistic_probe(ProbeData(x, y, x[:5], np.zeros(5, int), x, y))


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
    res = fn(ProbeData(*tr, *va, *te))
    assert res.test_auroc > 0.99
    y = np.eye(4)[te[1]] if kind == "multiclass" else te[1]
    assert res.test_auroc == pytest.approx(roc_auc_score(y, res.test_scores, average="macro"))
    shuffled = fn(ProbeData(*multi(300, 0, kind, True), *multi(150, 1, kind, True), *multi(2000, 2, kind, True)))
    assert abs(shuffled.test_auroc - 0.5) < 0.06


def test_torch_probe_binary_selects_on_validation_and_is_seeded():
    from ssl_ecg.evaluate import torch_linear_probe

    bundle = ProbeData(*data(200, 0), *data(100, 1), *data(300, 2))
    a = torch_linear_probe(bundle, seed=3, batch_size=32)
    b = torch_linear_probe(bundle, seed=3, batch_size=32)
    assert a.test_auroc > 0.99 and np.array_equal(a.test_scores, b.test_scores) and a.setting == b.setting
    assert 0 <= a.setting["epoch"] < 200
    bad = torch_linear_probe(ProbeData(*data(200, 0, True), *data(100, 1, True), *data(2000, 2, True)), epochs=30)
    assert abs(bad.test_auroc - 0.5) < 0.06


def test_multilabel_class_without_positives_in_a_split_is_named():
    x, y = multi(100, 0, "multilabel")
    y_val = y[:20].copy()
    y_val[:, 2] = 0
    with pytest.raises(SplitError, match=r"validation split: class\(es\) \[2\]"):
        logistic_probe(ProbeData(x, y, x[:20], y_val, x, y))


def test_every_probe_kind_runs_through_fit_probe_with_one_result_type():
    import torch

    from ssl_ecg.evaluate import finetune, knn_probe, torch_linear_probe, train_supervised
    from ssl_ecg.models import build_encoder

    feats = ProbeData(*data(120, 0), *data(60, 1), *data(80, 2))
    direct = {"logistic": logistic_probe(feats, seed=1), "torch": torch_linear_probe(feats, seed=1, epochs=20),
              "knn": knn_probe(feats, seed=1)}
    for kind, expected in direct.items():
        got = fit_probe(kind, feats, seed=1, **({"epochs": 20} if kind == "torch" else {}))
        assert type(got) is ProbeResult and got.setting == expected.setting, kind
        np.testing.assert_array_equal(got.test_scores, expected.test_scores)
        assert got.test_auroc == expected.test_auroc > 0.7 and got.val_scores.shape == (60,)
    assert set(direct["knn"].setting) == {"k"} and [g["k"] for g in direct["knn"].grid] == [5, 10, 20, 50]

    rng = np.random.default_rng(0)
    y = np.arange(24) % 2
    x = (0.3 * rng.standard_normal((24, 1, 800)) + y[:, None, None] * np.sin(np.linspace(0, 40, 800))).astype(
        np.float32)
    signals = ProbeData.from_rows(x, y, np.arange(12), np.arange(12, 18), np.arange(18, 24))
    config = {"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 8}
    kw = dict(window=400, epochs=2, seed=0)
    sup = fit_probe("supervised", signals, encoder=config, lr=[1e-3], batch_size=[4], **kw)
    ref = train_supervised(config, signals, lr=[1e-3], batch_size=[4], **kw)
    assert set(sup.setting) == {"lr", "batch_size", "epoch"} and np.array_equal(sup.test_scores, ref.test_scores)
    torch.manual_seed(0)
    enc = build_encoder(config)
    ft = fit_probe("finetune", signals, encoder=enc, **kw)
    assert type(ft) is ProbeResult and set(ft.setting) == {"epoch"}
    np.testing.assert_array_equal(ft.test_scores, finetune(enc, signals, **kw).test_scores)
    with pytest.raises(ConfigError, match="'svm' is unknown"):
        fit_probe("svm", feats)
    with pytest.raises(ConfigError, match="probe 'finetune': encoder must be an nn.Module"):
        fit_probe("finetune", signals, **kw)
    with pytest.raises(ConfigError, match="probe 'logistic': takes no encoder"):
        fit_probe("logistic", feats, encoder=enc)


def test_probe_data_checks_lengths_and_patient_overlap():
    x, y = data(10, 0)
    with pytest.raises(ConfigError, match=r"task 'lad', val split: 10 inputs, 9 labels"):
        ProbeData(x, y, x, y[:9], x, y, task="lad")
    pats = np.array([f"p{i}" for i in range(10)])
    with pytest.raises(SplitError, match="'p3' is in both split 'train' and 'test'"):
        ProbeData.from_rows(x, y, np.arange(0, 4), np.arange(4, 7), np.array([3, 7, 8, 9]), patients=pats)
    ok = ProbeData.from_rows(x, y, np.arange(0, 4), np.arange(4, 7), np.arange(7, 10), patients=pats)
    assert ok.patients_test.tolist() == ["p7", "p8", "p9"] and np.array_equal(ok.x_val, x[4:7])
