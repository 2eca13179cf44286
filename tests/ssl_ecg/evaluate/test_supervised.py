"""The supervised arm: lr x batch size chosen on validation, test scored once, minimum steps per epoch."""

import numpy as np
import pytest
import torch

import ssl_ecg.evaluate.supervised as sup
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.probe import ProbeData
from ssl_ecg.evaluate.supervised import epoch_batches, train_supervised
from ssl_ecg.evaluate.tasks import auroc

CONFIG = {"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 8}


def _data(n, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = np.arange(800) / 100.0
    x = 0.3 * rng.standard_normal((n, 1, 800)) + (y[:, None, None] * np.sin(2 * np.pi * 3 * t))[:, :, :]
    return x.astype(np.float32), y


def test_epoch_batches_small_sets_take_min_steps_full_batches():
    gen = torch.Generator().manual_seed(0)
    batches = epoch_batches(4, 16, 10, gen)
    assert len(batches) == 10 and all(len(b) == 4 for b in batches)
    assert np.bincount(torch.cat(batches).numpy(), minlength=4).tolist() == [10] * 4
    batches = epoch_batches(25, 16, 10, gen)  # ceil(25/16) = 2 < 10 steps: 10 batches of 16
    counts = np.bincount(torch.cat(batches).numpy(), minlength=25)
    assert len(batches) == 10 and all(len(b) == 16 for b in batches) and set(counts) <= {6, 7}
    batches = epoch_batches(1000, 64, 10, gen)  # 16 steps already: one permutation
    assert len(batches) == 16 and sorted(torch.cat(batches).tolist()) == list(range(1000))
    with pytest.raises(ValueError, match="min_steps"):
        epoch_batches(4, 16, 0, gen)


def test_grid_is_chosen_on_validation_and_test_is_scored_once(monkeypatch):
    x_tr, y_tr = _data(8, 0)
    x_va, y_va = _data(6, 1)
    x_te, y_te = _data(7, 2)  # 7 test records: calls on them are recognisable by size
    calls = []
    real_scores = sup._scores

    def counting_scores(model, windows, kind):
        calls.append(windows.shape[0])
        return real_scores(model, windows, kind)

    steps = []
    real_step = torch.optim.Adam.step

    def counting_step(self, *a, **k):
        steps.append(1)
        return real_step(self, *a, **k)

    monkeypatch.setattr(sup, "_scores", counting_scores)
    monkeypatch.setattr(torch.optim.Adam, "step", counting_step)
    res = train_supervised(CONFIG, ProbeData(x_tr, y_tr, x_va, y_va, x_te, y_te), window=400, lr=[1e-3, 3e-4],
                           batch_size=[4, 16], epochs=2, patience=5, seed=0, min_steps=10)
    assert calls.count(7) == 1 and set(calls) == {6, 7}  # everything else scored validation
    assert len(steps) == 4 * 2 * 10  # 4 settings x 2 epochs x 10 steps (8 records are < 10 batches)
    assert [(g["lr"], g["batch_size"]) for g in res.grid] == [(1e-3, 4), (1e-3, 16), (3e-4, 4), (3e-4, 16)]
    vals = [g["val_auroc"] for g in res.grid]
    best = res.grid[int(np.argmax(vals))]  # first maximum in grid order
    assert (res.setting["lr"], res.setting["batch_size"]) == (best["lr"], best["batch_size"])
    assert res.val_auroc == max(vals)
    assert res.test_auroc == pytest.approx(auroc(y_te, res.test_scores, "binary"))
    assert res.val_scores.shape == (6,) and res.test_scores.shape == (7,)
    with pytest.raises(ConfigError, match="supervised grid"):
        train_supervised(CONFIG, ProbeData(x_tr, y_tr, x_va, y_va, x_te, y_te), window=400, lr=[], epochs=1)


def test_single_setting_is_deterministic_and_ignores_test_labels():
    x_tr, y_tr = _data(8, 0)
    x_va, y_va = _data(6, 1)
    x_te, y_te = _data(7, 2)
    kw = dict(window=400, lr=1e-3, batch_size=4, epochs=2, patience=5, seed=3)
    a = train_supervised(CONFIG, ProbeData(x_tr, y_tr, x_va, y_va, x_te, y_te), **kw)
    b = train_supervised(CONFIG, ProbeData(x_tr, y_tr, x_va, y_va, x_te, 1 - y_te), **kw)  # flipped test labels
    np.testing.assert_array_equal(a.test_scores, b.test_scores)  # the choice never sees test labels
    assert a.test_auroc == pytest.approx(1 - b.test_auroc) and (a.setting["lr"], a.setting["batch_size"]) == (1e-3, 4)
