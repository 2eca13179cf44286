import numpy as np
import pytest
import torch

from ssl_ecg.errors import SplitError
from ssl_ecg.evaluate.fewshot import (
    PairSampler,
    SiameseHead,
    evaluate_episodes,
    run_fewshot,
    sample_episodes,
)


def pool(n_classes=4, patients_per_class=8, items=6, seed=0, sep=3.0, dim=16):
    """Items of distinct patients per class; embeddings = class direction * sep + noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), patients_per_class * items)
    patients = np.array([f"c{c}p{p}" for c in range(n_classes) for p in range(patients_per_class)
                         for _ in range(items)])
    centers = rng.standard_normal((n_classes, dim))
    x = centers[labels] * sep + rng.standard_normal((len(labels), dim))
    return x.astype(np.float32), labels, patients


def test_pair_sampler_is_balanced_and_pairs_are_valid():
    _, labels, patients = pool(n_classes=3)
    labels = labels.copy()
    labels[labels == 2] = 1  # unequal class sizes
    labels[:3] = 2  # a rare class
    i, j, same = PairSampler(labels, patients).sample(3000, np.random.default_rng(0))
    assert same.mean() == 0.5
    assert np.all((labels[i] == labels[j]) == (same == 1)) and np.all(i[same == 1] != j[same == 1])
    counts = np.bincount(labels[i[same == 1]], minlength=3) / (same == 1).sum()
    assert np.allclose(counts, 1 / 3, atol=0.05)  # classes drawn uniformly, not by frequency


def test_episodes_are_patient_disjoint_and_class_balanced():
    _, labels, patients = pool()
    # patients with items of two classes, to make disjointness across classes matter
    patients = patients.copy()
    patients[labels == 1] = np.char.replace(patients[labels == 1].astype(str), "c1", "c0")
    eps = sample_episodes(labels, patients, n_way=3, k_shot=5, n_query=4, n_episodes=200, seed=1)
    assert len(eps) == 200
    for ep in eps:
        assert ep.support.shape == (3, 5) and len(ep.query) == 12
        assert np.array_equal(np.bincount(ep.query_labels), [4, 4, 4])
        assert np.all(labels[ep.query] == ep.classes[ep.query_labels])
        assert np.all(labels[ep.support] == ep.classes[:, None])
        assert all(len(set(patients[ep.support[c]])) == 5 for c in range(3))  # K distinct patients per class
        assert not set(patients[ep.support.ravel()]) & set(patients[ep.query])


def test_k_larger_than_a_class_patient_count_names_the_class():
    _, labels, patients = pool(patients_per_class=6)
    keep = ~((labels == 2) & np.isin(patients, ["c2p4", "c2p5"]))
    labels, patients = labels[keep], patients[keep]
    with pytest.raises(SplitError, match=r"class 2 has 4 patient\(s\).*at least 6"):
        sample_episodes(labels, patients, n_way=3, k_shot=5, classes=[0, 1, 2])
    with pytest.raises(SplitError, match="only 0 class"):
        sample_episodes(labels, patients, n_way=3, k_shot=10)


def test_episode_scores_match_a_loop_reference():
    x, labels, patients = pool(seed=3, sep=0.7)
    eps = sample_episodes(labels, patients, n_way=4, k_shot=2, n_query=3, n_episodes=20, seed=0)
    torch.manual_seed(0)
    head = SiameseHead(16, 8).eval()
    got = evaluate_episodes(x, eps, head)
    xd = x.astype(np.float64)
    for e, ep in enumerate(eps):
        protos = [xd[ep.support[c]].mean(0) for c in range(4)]
        cos_ok, head_ok = 0, 0
        for q, y in zip(ep.query, ep.query_labels):
            cos = [xd[q] @ p / np.linalg.norm(xd[q]) / np.linalg.norm(p) for p in protos]
            rel = [head(torch.tensor(x[q:q + 1]), torch.tensor(p[None], dtype=torch.float32)).item()
                   for p in protos]
            cos_ok += int(np.argmax(cos) == y)
            head_ok += int(np.argmax(rel) == y)
        assert got["cosine"]["accuracy"][e] == pytest.approx(cos_ok / len(ep.query))
        assert got["siamese"]["accuracy"][e] == pytest.approx(head_ok / len(ep.query))


@pytest.mark.parametrize("mode", ["bce", "contrastive"])
def test_heads_learn_held_out_classes_and_shuffled_labels_sit_at_chance(mode):
    x, labels, patients = pool(n_classes=10, patients_per_class=10, seed=5)
    head_p = [p for p in np.unique(patients) if int(p.split("p")[1]) < 5]
    eval_p = [p for p in np.unique(patients) if int(p.split("p")[1]) >= 5]
    res = run_fewshot(x, labels, patients, head_p, eval_p, n_way=3, k_shot=1, n_episodes=200,
                      train_classes=range(7), episode_classes=[7, 8, 9], mode=mode, head_steps=1000)
    for method in ("siamese", "cosine"):
        mean, lo, hi = res.summary[method]["accuracy"]
        assert mean > 0.9 and lo <= mean <= hi
        assert len(res.per_episode[method]["macro_f1"]) == 200
    rng = np.random.default_rng(0)
    shuffled = run_fewshot(x, rng.permutation(labels), patients, head_p, eval_p, n_way=3, k_shot=1,
                           n_episodes=200, mode=mode, head_steps=100)
    assert abs(shuffled.summary["cosine"]["accuracy"][0] - 1 / 3) < 0.06
    with pytest.raises(Exception, match="leak|overlap|both"):
        run_fewshot(x, labels, patients, head_p, head_p[:2] + eval_p, n_way=3, k_shot=1)


def test_fewshot_results_carry_a_fingerprint_keyed_on_encoder_settings_and_split_not_on_the_commit(monkeypatch):
    import ssl_ecg.evaluate.fewshot as fewshot

    x, labels, patients = pool(n_classes=4, patients_per_class=6, items=3, seed=1)
    head_p = [p for p in np.unique(patients) if int(p.split("p")[1]) < 3]
    eval_p = [p for p in np.unique(patients) if int(p.split("p")[1]) >= 3]
    kw = dict(n_way=2, k_shot=1, n_episodes=5, head_steps=5, encoder_hash="w1", split_hash="s1")
    a = run_fewshot(x, labels, patients, head_p, eval_p, **kw)
    assert len(a.fingerprint) == 64 and a.provenance["git_commit"] == fewshot.environment()["git_commit"]
    assert a.to_dict()["fingerprint"] == a.fingerprint and a.to_dict()["summary"] == a.summary
    other_env = {**fewshot.environment(), "git_commit": "0" * 40, "cuda_device": "Other GPU"}
    monkeypatch.setattr(fewshot, "environment", lambda: other_env)
    b = run_fewshot(x, labels, patients, head_p, eval_p, **kw)
    assert b.fingerprint == a.fingerprint and b.provenance["git_commit"] == "0" * 40
    changes = (dict(encoder_hash="w2"), dict(split_hash="s2"), dict(k_shot=2), dict(seed=1), dict(mode="contrastive"))
    for change in changes:
        assert run_fewshot(x, labels, patients, head_p, eval_p, **{**kw, **change}).fingerprint != a.fingerprint, change
    relabelled = labels.copy()
    relabelled[0] = 1
    assert run_fewshot(x, relabelled, patients, head_p, eval_p, **kw).fingerprint != a.fingerprint
    # the inputs' bytes (so the preprocessing) enter it: the same signals normalised per lead, not per record
    rng = np.random.default_rng(3)
    signals = rng.standard_normal((len(labels), 2, 50)) * np.array([[[1.0], [3.0]]])
    per_record = ((signals - signals.mean(-1, keepdims=True)) / signals.std((1, 2), keepdims=True)).astype("f4")
    per_lead = ((signals - signals.mean(-1, keepdims=True)) / signals.std(-1, keepdims=True)).astype("f4")
    r = run_fewshot(x, labels, patients, head_p, eval_p, **kw, inputs=per_record)
    assert r.fingerprint == run_fewshot(x, labels, patients, head_p, eval_p, **kw, inputs=per_record.copy()).fingerprint
    assert r.fingerprint != run_fewshot(x, labels, patients, head_p, eval_p, **kw, inputs=per_lead).fingerprint
    assert r.fingerprint != a.fingerprint  # without inputs the features' bytes stand in for them
    no_hash = {**kw, "encoder_hash": None}  # the features stand in for the encoder
    c = run_fewshot(x, labels, patients, head_p, eval_p, **no_hash)
    assert c.fingerprint != run_fewshot(x + 1, labels, patients, head_p, eval_p, **no_hash).fingerprint
