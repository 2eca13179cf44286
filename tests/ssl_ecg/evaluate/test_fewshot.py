import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import special
from sklearn.metrics import f1_score

from ssl_ecg.errors import ConfigError, SplitError
from ssl_ecg.evaluate.fewshot import (
    Episode,
    PairSampler,
    QueryPredictions,
    SiameseHead,
    evaluate_episodes,
    predict_episodes,
    query_patient_bootstrap,
    run_fewshot,
    sample_episodes,
)

EXPERIMENTS = Path(__file__).parents[3] / "experiments"


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


@pytest.mark.parametrize("mode", ["bce", "contrastive"])
def test_episode_scores_match_a_loop_reference(mode):
    x, labels, patients = pool(seed=3, sep=0.7)
    eps = sample_episodes(labels, patients, n_way=4, k_shot=2, n_query=3, n_episodes=20, seed=0)
    torch.manual_seed(0)
    head = SiameseHead(16, 8, mode=mode).eval()
    got = evaluate_episodes(x, eps, head)
    xd = x.astype(np.float64)

    def rel(a, b):
        return head(torch.tensor(a[None], dtype=torch.float32), torch.tensor(b[None], dtype=torch.float32)).item()

    for e, ep in enumerate(eps):
        protos = [xd[ep.support[c]].mean(0) for c in range(4)]
        ok = Counter()
        for q, y in zip(ep.query, ep.query_labels):
            cos = [xd[q] @ p / np.linalg.norm(xd[q]) / np.linalg.norm(p) for p in protos]
            # as trained: the head on (query, one support item), averaged over the K items (bce: probabilities)
            pair = [np.mean([special.expit(rel(x[q], x[s])) if mode == "bce" else rel(x[q], x[s])
                             for s in ep.support[c]]) for c in range(4)]
            proto = [rel(x[q], p) for p in protos]
            ok["cosine"] += int(np.argmax(cos) == y)
            ok["siamese"] += int(np.argmax(pair) == y)
            ok["siamese_prototype"] += int(np.argmax(proto) == y)
        for method in ("cosine", "siamese", "siamese_prototype"):
            assert got[method]["accuracy"][e] == pytest.approx(ok[method] / len(ep.query)), method


def _hand_head() -> SiameseHead:
    """A 1-d bce head with logit = 1 - |e1 - e2| (unit standardisation)."""
    head = SiameseHead(1, hidden=1)
    with torch.no_grad():
        head.mlp[0].weight.fill_(1.0), head.mlp[0].bias.zero_()
        head.mlp[2].weight.fill_(-1.0), head.mlp[2].bias.fill_(1.0)
    return head.eval()


def test_pairwise_and_prototype_scoring_on_a_hand_computed_episode():
    # class 0 support items at 0 and 4 (prototype 2), class 1 at 2.5 and 2.5 (prototype 2.5); both queries class 0
    x = np.array([[0.0], [4.0], [2.5], [2.5], [2.1], [4.2]], dtype=np.float32)
    ep = Episode(np.array(["A", "B"]), np.array([[0, 1], [2, 3]]), np.array([4, 5]), np.array([0, 0]))
    pred = predict_episodes(x, [ep], _hand_head(), patients=["a0", "a1", "b0", "b1", "q0", "q1"])
    # query 2.1 -- prototype logits: A 1-|2.1-2| = 0.9, B 1-0.4 = 0.6 -> A;
    #   pairwise: A (s(-1.1) + s(-0.9)) / 2 = (0.2497 + 0.2891) / 2 = 0.2694, B s(0.6) = 0.6457 -> B
    # query 4.2 -- prototype logits: A 1-2.2 = -1.2, B 1-1.7 = -0.7 -> B;
    #   pairwise: A (s(-3.2) + s(0.8)) / 2 = (0.0392 + 0.6900) / 2 = 0.3646, B s(-0.7) = 0.3318 -> A
    assert pred.predicted["siamese_prototype"].tolist() == [0, 1]
    assert pred.predicted["siamese"].tolist() == [1, 0]
    assert pred.patient.tolist() == ["q0", "q1"] and pred.true.tolist() == [0, 0]
    frame = pred.frame()
    pair = frame[frame["method"] == "siamese"]
    assert pair["predicted"].tolist() == ["B", "A"] and pair["true"].tolist() == ["A", "A"]
    assert pair["correct"].tolist() == [False, True]
    with pytest.raises(ConfigError, match="patients: 2 ids for 6 items"):
        predict_episodes(x, [ep], _hand_head(), patients=["a0", "a1"])
    with pytest.raises(ConfigError, match="at least one episode"):
        predict_episodes(x, [], _hand_head())


@pytest.mark.parametrize("mode", ["bce", "contrastive"])
def test_one_shot_pairwise_and_prototype_scoring_agree(mode):
    x, labels, patients = pool(seed=4, sep=0.5)
    eps = sample_episodes(labels, patients, n_way=4, k_shot=1, n_query=5, n_episodes=30, seed=2)
    torch.manual_seed(1)
    pred = predict_episodes(x, eps, SiameseHead(16, 8, mode=mode).eval())
    assert np.array_equal(pred.predicted["siamese"], pred.predicted["siamese_prototype"])


def _toy_predictions(n_episodes=12, n_way=3, n_query=2, n_patients=7, seed=0, accuracy=0.6):
    rng = np.random.default_rng(seed)
    q = n_way * n_query
    true = np.tile(np.repeat(np.arange(n_way), n_query), n_episodes)
    wrong = (true + rng.integers(1, n_way, len(true))) % n_way
    pred = np.where(rng.random(len(true)) < accuracy, true, wrong)
    patient = np.array([f"p{i}" for i in rng.integers(0, n_patients, len(true))])
    return QueryPredictions(episode=np.repeat(np.arange(n_episodes), q), item=np.arange(len(true)),
                            patient=patient, true=true, predicted={"m": pred}, n_way=n_way)


def _reference_bootstrap(p: QueryPredictions, n_boot: int, seed: int):
    """Slow float64 loops: patients in sorted order, replicate b draws row b of integers(0, P, (B, P))."""
    ids = sorted(set(p.patient.tolist()))
    picks = np.random.default_rng(seed).integers(0, len(ids), size=(n_boot, len(ids)))
    accs, f1s = [], []
    pred = p.predicted["m"]
    for b in range(n_boot):
        mult = Counter(ids[i] for i in picks[b])
        w = np.array([float(mult[pat]) for pat in p.patient])
        accs.append(sum(wi * (pi == ti) for wi, pi, ti in zip(w, pred, p.true)) / w.sum())
        num = den = 0.0
        for e in np.unique(p.episode):
            rows = (p.episode == e) & (w > 0)
            if not rows.any():
                continue  # no drawn patient has a query in this episode
            present = sorted(set(p.true[rows].tolist()))  # classes with drawn queries
            f1 = f1_score(p.true[rows], pred[rows], labels=present, average="macro", sample_weight=w[rows],
                          zero_division=0)
            num, den = num + w[rows].sum() * f1, den + w[rows].sum()
        f1s.append(num / den)
    return np.array(accs), np.array(f1s)


def test_patient_bootstrap_matches_a_slow_reference_loop():
    p = _toy_predictions(n_patients=5)  # few patients: some replicates leave a class out of an episode
    got = query_patient_bootstrap(p, "m", n_boot=150, seed=7)
    acc, f1 = _reference_bootstrap(p, 150, 7)
    np.testing.assert_allclose(got["accuracy"].replicates, acc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["macro_f1"].replicates, f1, rtol=0, atol=1e-12)
    for name, ref in (("accuracy", acc), ("macro_f1", f1)):
        lo, hi = np.quantile(ref, [0.025, 0.975])
        assert got[name].low == pytest.approx(lo, abs=1e-12) and got[name].high == pytest.approx(hi, abs=1e-12)
    # the estimates are the plain means over episodes (sklearn's macro F1 per episode)
    per = [(p.predicted["m"][p.episode == e] == p.true[p.episode == e]).mean() for e in range(12)]
    assert got["accuracy"].estimate == pytest.approx(np.mean(per), abs=1e-12)
    f1_per = [f1_score(p.true[p.episode == e], p.predicted["m"][p.episode == e], labels=[0, 1, 2],
                       average="macro", zero_division=0) for e in range(12)]
    assert got["macro_f1"].estimate == pytest.approx(np.mean(f1_per), abs=1e-12)
    again = query_patient_bootstrap(p, "m", n_boot=150, seed=7)
    assert np.array_equal(again["accuracy"].replicates, got["accuracy"].replicates)
    other = query_patient_bootstrap(p, "m", n_boot=150, seed=8)
    assert not np.array_equal(other["accuracy"].replicates, got["accuracy"].replicates)
    with pytest.raises(ConfigError, match="method: 'x' has no predictions"):
        query_patient_bootstrap(p, "x")


def _repeat(p: QueryPredictions, rows: np.ndarray, episode: np.ndarray) -> QueryPredictions:
    return QueryPredictions(episode=episode, item=p.item[rows], patient=p.patient[rows], true=p.true[rows],
                            predicted={m: v[rows] for m, v in p.predicted.items()}, n_way=p.n_way)


def test_duplicating_each_patients_queries_leaves_the_interval_unchanged():
    from ssl_ecg.evaluate.fewshot import _ci

    p = _toy_predictions(n_episodes=20, n_patients=9, seed=3)
    base = query_patient_bootstrap(p, "m", n_boot=300, seed=0)
    n_ep = int(p.episode.max()) + 1
    rows = np.arange(len(p.true))
    twice_in_episode = _repeat(p, np.repeat(rows, 2), np.repeat(p.episode, 2))  # every query twice
    twice_episodes = _repeat(p, np.r_[rows, rows], np.r_[p.episode, p.episode + n_ep])  # every episode twice
    for dup in (twice_in_episode, twice_episodes):
        got = query_patient_bootstrap(dup, "m", n_boot=300, seed=0)
        for name in ("accuracy", "macro_f1"):
            np.testing.assert_allclose(got[name].replicates, base[name].replicates, rtol=0, atol=1e-12)
            assert (got[name].estimate, got[name].low, got[name].high) == pytest.approx(
                (base[name].estimate, base[name].low, base[name].high), abs=1e-12)
    # the t-interval over episodes treats the repeated episodes as new evidence and narrows (by about sqrt 2)
    acc = evaluate_episodes(None, [None] * n_ep, predictions=p)["m"]["accuracy"]
    acc2 = evaluate_episodes(None, [None] * 2 * n_ep, predictions=twice_episodes)["m"]["accuracy"]
    width, width2 = np.diff(_ci(acc)[1:])[0], np.diff(_ci(acc2)[1:])[0]
    assert width2 < 0.75 * width


def test_patient_bootstrap_intervals_lie_in_the_unit_interval():
    p = _toy_predictions(n_patients=4, seed=5)
    for accuracy, bounds in ((1.0, (1.0, 1.0)), (0.0, (0.0, 0.0)), (0.5, None)):
        q = _toy_predictions(n_patients=4, seed=5, accuracy=accuracy)
        for name, b in query_patient_bootstrap(q, "m", n_boot=200, seed=1).items():
            assert 0.0 <= b.low <= b.estimate <= b.high <= 1.0 and np.all((b.replicates >= 0) & (b.replicates <= 1))
            if bounds is not None:
                assert (b.low, b.high) == bounds, name
    assert query_patient_bootstrap(p, "m", n_boot=10, seed=1)["accuracy"].replicates.shape == (10,)


@pytest.mark.parametrize("mode", ["bce", "contrastive"])
def test_heads_learn_held_out_classes_and_shuffled_labels_sit_at_chance(mode):
    x, labels, patients = pool(n_classes=10, patients_per_class=10, seed=5)
    head_p = [p for p in np.unique(patients) if int(p.split("p")[1]) < 5]
    eval_p = [p for p in np.unique(patients) if int(p.split("p")[1]) >= 5]
    res = run_fewshot(x, labels, patients, head_p, eval_p, n_way=3, k_shot=1, n_episodes=200,
                      train_classes=range(7), episode_classes=[7, 8, 9], mode=mode, head_steps=1000, n_boot=50,
                      boot_episodes=20)
    for method in ("siamese", "cosine"):
        mean, lo, hi = res.summary[method]["accuracy"]
        assert mean > 0.9 and lo <= mean <= hi
        assert len(res.per_episode[method]["macro_f1"]) == 200
    rng = np.random.default_rng(0)
    shuffled = run_fewshot(x, rng.permutation(labels), patients, head_p, eval_p, n_way=3, k_shot=1,
                           n_episodes=200, mode=mode, head_steps=100, n_boot=20, boot_episodes=20)
    assert abs(shuffled.summary["cosine"]["accuracy"][0] - 1 / 3) < 0.06
    with pytest.raises(Exception, match="leak|overlap|both"):
        run_fewshot(x, labels, patients, head_p, head_p[:2] + eval_p, n_way=3, k_shot=1)


def test_fewshot_results_carry_a_fingerprint_keyed_on_encoder_settings_and_split_not_on_the_commit(monkeypatch):
    import ssl_ecg.evaluate.fewshot as fewshot

    x, labels, patients = pool(n_classes=4, patients_per_class=9, items=3, seed=1)
    head_p = [p for p in np.unique(patients) if int(p.split("p")[1]) < 3]
    eval_p = [p for p in np.unique(patients) if int(p.split("p")[1]) >= 3]
    kw = dict(n_way=2, k_shot=1, n_episodes=5, head_steps=5, encoder_hash="w1", split_hash="s1", n_boot=20)
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


def test_beat_pretraining_recipes_fit_the_fewshot_window():
    from ssl_ecg.evaluate.runner import FewShotConfig, check_encoder
    from ssl_ecg.models import build_encoder
    from ssl_ecg.pretrain import PretrainConfig
    from ssl_ecg.pretrain.methods import MethodSpec, build_method
    from ssl_ecg.recipe import load_recipe

    fewshot = load_recipe(FewShotConfig, EXPERIMENTS / "fewshot_mitdb.yaml")
    before = int(round(fewshot.window / 2 * fewshot.fs))  # as the runner cuts beats around the R peak
    window = before + int(round(fewshot.window * fewshot.fs)) - before
    assert set(fewshot.encoders) == {"beats_cmsc", "beats_simclr"} and fewshot.random_init and window == 432
    for path in fewshot.encoders.values():
        name = Path(path).name
        pre = load_recipe(PretrainConfig, EXPERIMENTS / f"{name}.yaml")
        assert pre.name == name and pre.dataset == fewshot.dataset == "mitdb"
        assert pre.pool == "DS1"  # the few-shot head patients; DS2 gives the episodes
        assert (pre.fs, pre.leads, pre.normalization, pre.bad_leads) == (
            fewshot.fs, fewshot.leads, fewshot.normalization, fewshot.bad_leads)
        needs = build_method(pre.method, MethodSpec(fs=pre.fs, segment_len=pre.segment_len,
                                                    n_segments=pre.n_segments)).data_needs(len(pre.leads))
        assert needs.input_samples == window and needs.in_channels == 1, name
        encoder = build_encoder({"name": "clocs", "input_len": needs.input_samples, "in_channels": needs.in_channels,
                                 "embed_dim": pre.embed_dim})
        check_encoder(encoder, per_lead=True, n_leads=len(fewshot.leads), window=window, source=name)
        with pytest.raises(ConfigError, match="built for 432 samples"):
            check_encoder(encoder, per_lead=True, n_leads=1, window=int(round(5.0 * 250.0)), source=name)


@pytest.mark.realdata
def test_a_ds1_beat_encoder_and_random_init_share_the_fewshot_table(tmp_path, mitdb_root):
    import pandas as pd

    from ssl_ecg.checkpoint import load_provenance
    from ssl_ecg.evaluate.runner import FewShotConfig, run_fewshot_recipe
    from ssl_ecg.pretrain import PretrainConfig, run_pretrain
    from ssl_ecg.recipe import load_recipe

    common = {"root": str(mitdb_root), "cache_dir": str(tmp_path / "cache")}
    pre = load_recipe(PretrainConfig, EXPERIMENTS / "mitdb_beats_cmsc.yaml",
                      {**common, "epochs": 1, "max_steps": 1, "embed_dim": 8, "accelerator": "cpu"})
    run_pretrain(pre, runs=tmp_path / "runs", progress=False)
    enc = tmp_path / "runs" / "mitdb_beats_cmsc"
    cfg = load_recipe(FewShotConfig, EXPERIMENTS / "fewshot_mitdb.yaml",
                      {**common, "encoders": {"beats_cmsc": str(enc)}, "shots": [1], "episodes": 20,
                       "head_steps": 20, "max_items_per_patient_class": 3, "n_boot": 50})
    res = run_fewshot_recipe(cfg, runs=tmp_path / "runs")
    assert res["arms"] == ["beats_cmsc", "random_init"] and res["episode_patients"] == 21
    assert res["provenance"]["beats_cmsc"]["overlap"]["overlap"] == 0
    assert res["provenance"]["beats_cmsc"]["pool_patients"] == 22
    for arm in res["arms"]:
        for method in ("siamese", "siamese_prototype", "cosine"):
            m = res["results"][arm]["1-shot"][method]
            # 20 original episodes: their mean may sit outside the redrawn episodes' percentile interval
            assert 0 <= m["accuracy"][1] <= m["accuracy"][2] <= 1 and 0 <= m["accuracy"][0] <= 1
            assert m["n_patients"] == 21 and m["n_boot"] == 50 and "accuracy_t_over_episodes" in m
            assert 2 <= m["n_query_patients"] <= 21 and "accuracy_query_patient_bootstrap" in m
    paired = res["paired_differences"]["1-shot"]
    assert paired["reference"] == "random_init" and paired["family"] == 3 * 2
    assert set(paired["arms"]) == {"beats_cmsc"}
    assert 0 <= paired["arms"]["beats_cmsc"]["cosine"]["accuracy"]["p_holm"] <= 1
    saved = json.loads((tmp_path / "runs" / "fewshot_mitdb" / "fewshot.json").read_text())
    assert saved["results"]["random_init"]["1-shot"]["cosine"]["accuracy"] == pytest.approx(
        list(res["results"]["random_init"]["1-shot"]["cosine"]["accuracy"]))
    rows = pd.read_csv(tmp_path / "runs" / "fewshot_mitdb" / "predictions.csv")
    assert len(rows) == 2 * 3 * 20 * 3 * 5  # arms x methods x episodes x (3 ways x 5 queries)
    assert not set(rows["patient"].astype(str)) & set(load_provenance(enc)["pool_patients"])
    acc = rows[(rows["arm"] == "random_init") & (rows["method"] == "cosine")]["correct"].mean()
    assert acc == pytest.approx(res["results"]["random_init"]["1-shot"]["cosine"]["accuracy"][0])


def _mixed_pool(n_patients=7, items=2, dim=8, seed=0, noise=1.5):
    """Patients with items of several classes (so support/query disjointness spans classes)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((3, dim)) * 2
    labels, patients = [], []
    for p in range(n_patients):
        for c in range(3):
            if (p + c) % 4 != 3:  # each patient misses some class
                labels += [c] * items
                patients += [f"p{p}"] * items
    labels, patients = np.array(labels), np.array(patients)
    x = centers[labels] + noise * rng.standard_normal((len(labels), dim))
    return x.astype(np.float32), labels, patients


def _reference_episode_bootstrap(x, labels, patients, head, k_shot, n_episodes, n_boot, seed, n_way=3, n_query=2):
    """Slow loop: materialise each replicate's resampled pool, draw its episodes, score with predict_episodes."""
    from ssl_ecg.evaluate.stats import task_rng

    ids = sorted(set(patients.tolist()))
    target = [c for c in sorted(set(labels.tolist())) if len(set(patients[labels == c])) >= k_shot + 1]
    rng = task_rng(seed, "episode bootstrap")
    out: dict = {}
    while len(out.get("cosine", [])) < n_boot:
        mult = Counter(rng.integers(0, len(ids), len(ids)).tolist())
        rows, ident = [], []
        for r, pid in enumerate(ids):
            for copy in range(mult[r]):
                for i in np.flatnonzero(patients == pid):
                    rows.append(i)
                    ident.append(f"{pid}#{copy}")
        rows, ident = np.array(rows), np.array(ident)
        origin, rep_labels = patients[rows], labels[rows]
        if any(len(set(ident[rep_labels == c])) < k_shot + 1 or len(set(origin[rep_labels == c])) < 2
               for c in target):
            continue
        try:
            eps = sample_episodes(rep_labels, ident, n_way, k_shot, n_query, n_episodes, classes=target, seed=rng,
                                  origins=origin)
        except SplitError:
            continue
        for ep in eps:  # a query never shares its real patient with a support of its episode
            assert not set(origin[ep.query]) & set(origin[ep.support.ravel()])
        per = evaluate_episodes(None, eps, predictions=predict_episodes(x[rows], eps, head))
        for m, d in per.items():
            out.setdefault(m, []).append((d["accuracy"].mean(), d["macro_f1"].mean()))
    return {m: np.array(v) for m, v in out.items()}


@pytest.mark.parametrize("k_shot", [1, 2])
def test_episode_bootstrap_matches_a_slow_reference_loop(k_shot):
    from ssl_ecg.evaluate.fewshot import episode_bootstrap, episode_bootstrap_design

    x, labels, patients = _mixed_pool()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        head = SiameseHead(8, 8).eval()
    design = episode_bootstrap_design(labels, patients, 3, k_shot, 2, n_episodes=6, n_boot=25, seed=4)
    got = episode_bootstrap(x, design, head)
    ref = _reference_episode_bootstrap(x, labels, patients, head, k_shot, 6, 25, 4)
    assert set(got) == set(ref) == {"siamese", "siamese_prototype", "cosine"}
    for m in ref:
        np.testing.assert_allclose(got[m]["accuracy"].replicates, ref[m][:, 0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got[m]["macro_f1"].replicates, ref[m][:, 1], rtol=0, atol=1e-12)
        lo, hi = np.quantile(ref[m][:, 0], [0.025, 0.975])
        assert (got[m]["accuracy"].low, got[m]["accuracy"].high) == pytest.approx((lo, hi), abs=1e-12)
    assert design.support.shape == (25, 6, 3, k_shot) and design.query.shape == (25, 6, 6)
    again = episode_bootstrap_design(labels, patients, 3, k_shot, 2, n_episodes=6, n_boot=25, seed=4)
    assert np.array_equal(again.support, design.support) and np.array_equal(again.query, design.query)
    other = episode_bootstrap_design(labels, patients, 3, k_shot, 2, n_episodes=6, n_boot=25, seed=5)
    assert not np.array_equal(other.query, design.query)


def test_duplicating_each_patients_items_leaves_the_episode_bootstrap_interval_about_unchanged():
    from ssl_ecg.evaluate.fewshot import episode_bootstrap, episode_bootstrap_design

    x, labels, patients = pool(n_classes=4, patients_per_class=6, items=3, sep=0.6, dim=8, seed=2)
    kw = dict(n_way=3, k_shot=1, n_query=3, n_episodes=30, n_boot=300)
    base = episode_bootstrap(x, episode_bootstrap_design(labels, patients, seed=0, **kw))["cosine"]
    twice = np.r_[np.arange(len(labels)), np.arange(len(labels))]
    dup = episode_bootstrap(x[twice], episode_bootstrap_design(labels[twice], patients[twice], seed=1, **kw))["cosine"]
    for name in ("accuracy", "macro_f1"):
        b, d = base[name], dup[name]
        assert 0.45 < b.replicates.mean() < 0.9  # neither trivial nor chance
        assert d.replicates.mean() == pytest.approx(b.replicates.mean(), abs=0.015)
        assert (d.low, d.high) == pytest.approx((b.low, b.high), abs=0.03)
        assert d.replicates.std() == pytest.approx(b.replicates.std(), rel=0.2)


def test_fewshot_summary_reports_the_episode_bootstrap_first_and_the_query_patient_bootstrap_second():
    x, labels, patients = pool(n_classes=4, patients_per_class=6, items=3, sep=0.6, dim=8, seed=2)
    head_p = [p for p in np.unique(patients) if int(p.split("p")[1]) < 2]
    eval_p = [p for p in np.unique(patients) if int(p.split("p")[1]) >= 2]
    res = run_fewshot(x, labels, patients, head_p, eval_p, n_way=3, k_shot=1, n_query=3, n_episodes=20,
                      head_steps=20, n_boot=100, boot_episodes=10)
    for m, s in res.summary.items():
        assert s["accuracy"][0] == pytest.approx(s["accuracy_query_patient_bootstrap"][0], abs=1e-12)  # one estimate
        assert s["accuracy"][1:] == (res.bootstrap[m]["accuracy"].low, res.bootstrap[m]["accuracy"].high)
        assert 0 <= s["accuracy"][1] <= s["accuracy"][2] <= 1 and 0 <= s["macro_f1"][1] <= s["macro_f1"][2] <= 1
        assert s["n_patients"] == 16 and s["n_boot"] == 100 and s["boot_episodes"] == 10
        assert s["interval"].startswith("episode bootstrap") and "n_query_patients" in s
    assert res.design.support.shape == (100, 10, 3, 1)


def test_paired_differences_are_zero_for_identical_arms_and_holm_adjusted():
    from ssl_ecg.evaluate.fewshot import paired_differences
    from ssl_ecg.evaluate.stats import holm

    x, labels, patients = pool(n_classes=4, patients_per_class=6, items=3, sep=1.0, dim=8, seed=3)
    head_p = [p for p in np.unique(patients) if int(p.split("p")[1]) < 2]
    eval_p = [p for p in np.unique(patients) if int(p.split("p")[1]) >= 2]
    kw = dict(n_way=3, k_shot=2, n_query=3, n_episodes=20, head_steps=30, n_boot=200)
    ref = run_fewshot(x, labels, patients, head_p, eval_p, **kw)
    same = run_fewshot(x, labels, patients, head_p, eval_p, **kw, design=ref.design)
    noisy = x + 3 * np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    worse = run_fewshot(noisy, labels, patients, head_p, eval_p, **kw, design=ref.design)
    out = paired_differences({"random_init": ref, "same": same, "worse": worse})
    assert out["reference"] == "random_init" and out["family"] == 2 * 3 * 2
    for method in ("siamese", "siamese_prototype", "cosine"):
        for metric in ("accuracy", "macro_f1"):
            cell = out["arms"]["same"][method][metric]
            assert tuple(cell["difference"]) == (0.0, 0.0, 0.0) and cell["p"] == 1.0
            w = out["arms"]["worse"][method][metric]
            assert w["difference"][1] <= w["difference"][2] and -1 <= w["difference"][0] <= 1
    assert out["arms"]["worse"]["cosine"]["accuracy"]["difference"][2] < 0  # noise hurts, clearly
    cells = [out["arms"][a][m][k] for a in ("same", "worse") for m in ("siamese", "siamese_prototype", "cosine")
             for k in ("accuracy", "macro_f1")]
    np.testing.assert_allclose([c["p_holm"] for c in cells], holm([c["p"] for c in cells]))
    assert min(c["p_holm"] for c in cells) > min(c["p"] for c in cells)  # adjusted upwards
    for m, metrics in ref.bootstrap.items():
        for k, b in metrics.items():
            assert 0 <= b.low <= b.high <= 1 and np.all((b.replicates >= 0) & (b.replicates <= 1))
            assert b.estimate == pytest.approx(ref.per_episode[m][k].mean())
    other_design = run_fewshot(x, labels, patients, head_p, eval_p, **{**kw, "n_boot": 50})
    with pytest.raises(ConfigError, match="other episodes or bootstrap replicates"):
        paired_differences({"random_init": ref, "other": other_design})
    with pytest.raises(ConfigError, match="design: drawn for another episode pool"):
        run_fewshot(x, labels, patients, head_p, eval_p, **{**kw, "k_shot": 1}, design=ref.design)
