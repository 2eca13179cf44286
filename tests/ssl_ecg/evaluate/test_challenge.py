import numpy as np
import pytest

from ssl_ecg.data.cinc import SCORED_CLASSES
from ssl_ecg.evaluate.challenge import challenge_score, load_challenge_weights, modified_confusion_matrix


def _reference_score(weights, labels, outputs, normal):
    """The official algorithm, written as plain float64 loops."""
    def confusion(lab, out):
        a = np.zeros((lab.shape[1], lab.shape[1]))
        for r in range(len(lab)):
            norm = max(sum(1 for c in range(lab.shape[1]) if lab[r, c] or out[r, c]), 1)
            for j in range(lab.shape[1]):
                for k in range(lab.shape[1]):
                    if lab[r, j] and out[r, k]:
                        a[j, k] += 1.0 / norm
        return a

    inactive = np.zeros_like(labels)
    inactive[:, normal] = 1
    obs = (weights * confusion(labels, outputs)).sum()
    cor = (weights * confusion(labels, labels)).sum()
    ina = (weights * confusion(labels, inactive)).sum()
    return (obs - ina) / (cor - ina)


def test_bundled_weights_are_the_official_24_classes():
    classes, w = load_challenge_weights()
    assert tuple(classes) == SCORED_CLASSES and w.shape == (24, 24)
    assert np.array_equal(w, w.T) and np.all(np.diag(w) == 1) and w.min() == 0.15
    assert w[classes.index("164889003"), classes.index("164890007")] == 0.5  # AF vs atrial flutter


def test_score_matches_the_loop_reference_on_random_multilabel_outputs():
    classes, w = load_challenge_weights()
    rng = np.random.default_rng(0)
    labels = rng.random((60, 24)) < 0.1
    outputs = rng.random((60, 24)) < 0.15
    normal = classes.index("426783006")
    ref = _reference_score(w, labels.astype(int), outputs.astype(int), normal)
    assert challenge_score(labels, outputs) == pytest.approx(ref, abs=1e-12)


def test_score_anchors_and_partial_credit():
    classes, w = load_challenge_weights()
    normal = classes.index("426783006")
    labels = np.zeros((3, 24), bool)
    labels[0, 0] = labels[1, 1] = labels[2, normal] = True
    assert challenge_score(labels, labels) == pytest.approx(1.0)
    inactive = np.zeros_like(labels)
    inactive[:, normal] = True
    assert challenge_score(labels, inactive) == pytest.approx(0.0)
    a = modified_confusion_matrix(labels[:1], np.eye(24, dtype=bool)[[1]])  # one wrong output: |Y ∪ O| = 2
    assert a[0, 1] == 0.5 and a.sum() == 0.5
    with pytest.raises(ValueError, match="columns"):
        challenge_score(labels[:, :5], labels[:, :5])
