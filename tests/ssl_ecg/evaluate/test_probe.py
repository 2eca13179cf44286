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
