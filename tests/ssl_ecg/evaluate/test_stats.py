import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.stats import (
    SplitPredictions,
    aulc,
    auroc_replicates,
    bootstrap_p_value,
    delong_ci,
    delong_covariance,
    delong_paired_test,
    delong_variance,
    hierarchical_replicates,
    holm,
    labels_needed_distribution,
    patient_bootstrap,
    verdict,
    weighted_auroc,
)


def clustered(n_pat=40, per=(1, 3), seed=0, signal=1.0):
    """Records of patients sharing one label and a patient effect: (y, scores, patient ids)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(per[0], per[1] + 1, n_pat)
    lab = np.arange(n_pat) % 2
    effect = rng.standard_normal(n_pat)
    pid = np.repeat(np.arange(n_pat), counts)
    y = lab[pid]
    s = np.round(signal * y + effect[pid] + 0.3 * rng.standard_normal(len(pid)), 1)  # rounded: ties occur
    return y, s, np.array([f"p{i:03d}" for i in pid])


def slow_auc(y, s, rows, kind="binary"):
    """float64 reference: sklearn AUROC of the records listed in ``rows`` (repeats included)."""
    y, s = np.asarray(y)[rows], np.asarray(s, dtype=np.float64)[rows]
    if kind == "binary":
        return roc_auc_score(y, s)
    onehot = np.eye(s.shape[1])[y] if kind == "multiclass" else y
    return np.mean([roc_auc_score(onehot[:, c], s[:, c]) for c in range(s.shape[1])])


def slow_patient_rows(rng, members, n_boot, y_valid):
    """The draws patient_bootstrap documents: rows of rng.integers(0, P, (need, P)), invalid ones redrawn."""
    out, need = [], n_boot
    while need:
        picks = rng.integers(0, len(members), size=(need, len(members)))
        for p in picks:
            rows = np.concatenate([members[i] for i in p])
            if y_valid(rows):
                out.append(rows)
                need -= 1
    return out


def test_weighted_auroc_equals_sklearn_on_repeated_records():
    y, s, _ = clustered()
    w = np.random.default_rng(1).integers(0, 4, (6, len(y)))
    got = weighted_auroc(y, s, w)
    want = [roc_auc_score(np.repeat(y, w[b]), np.repeat(s, w[b])) for b in range(6)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.isnan(weighted_auroc(y, s, (y == 1).astype(float))[0])  # no negative weight: undefined


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_patient_bootstrap_matches_a_slow_loop_over_the_same_draws(kind):
    y, s, pid = clustered(n_pat=24)
    rng = np.random.default_rng(3)
    if kind == "multiclass":
        y = (np.arange(len(y)) // 2) % 3
        s = rng.standard_normal((len(y), 3)) + np.eye(3)[y]
    if kind == "multilabel":
        y = np.stack([y, rng.integers(0, 2, len(y))], axis=1)
        s = y + rng.standard_normal(y.shape)
    res = patient_bootstrap(y, s, pid, kind=kind, n_boot=60, seed=7)
    uniq, codes = np.unique(pid, return_inverse=True)
    members = [np.flatnonzero(codes == g) for g in range(len(uniq))]
    cols = y.reshape(len(y), -1) if kind != "multiclass" else np.eye(3, dtype=int)[y]

    def valid(rows):
        return bool(((cols[rows].sum(0) > 0) & (cols[rows].sum(0) < len(rows))).all())

    ref = [slow_auc(y, s, rows, kind) for rows in slow_patient_rows(np.random.default_rng(7), members, 60, valid)]
    np.testing.assert_allclose(res.replicates, ref, rtol=0, atol=1e-12)
    assert res.estimate == pytest.approx(slow_auc(y, s, np.arange(len(y)), kind), abs=1e-12)
    assert (res.low, res.high) == pytest.approx(tuple(np.quantile(ref, [0.025, 0.975])))


def test_redrawn_replicates_are_counted_and_every_kept_one_has_both_classes(monkeypatch):
    import ssl_ecg.evaluate.stats as st

    y = np.array([1, 0, 0, 0, 0, 0])  # one positive patient: a third of the replicates lose it
    s = np.arange(6.0)[::-1]
    res = patient_bootstrap(y, s, np.arange(6), n_boot=50, seed=0)
    assert res.n_redrawn > 0 and len(res.replicates) == 50 and np.isfinite(res.replicates).all()
    monkeypatch.setattr(st, "_MAX_REDRAW_ROUNDS", 1)  # one round cannot give 200 valid replicates here
    with pytest.raises(ConfigError, match=r"patients: \d+ of 200 bootstrap replicates lost a class"):
        patient_bootstrap(y, s, np.arange(6), n_boot=200, seed=0)


def test_a_patients_records_move_together():
    y, s, pid = clustered(n_pat=30, per=(1, 1))
    once = patient_bootstrap(y, s, pid, n_boot=400, seed=1)
    # every record of every patient duplicated: the same patient replicates, the same AUROCs
    twice = patient_bootstrap(np.repeat(y, 2), np.repeat(s, 2), np.repeat(pid, 2), n_boot=400, seed=1)
    np.testing.assert_allclose(twice.replicates, once.replicates, atol=1e-12)
    assert (twice.low, twice.high) == pytest.approx((once.low, once.high))
    # a record-level bootstrap (each record its own cluster) takes the duplicates for evidence and narrows
    records = patient_bootstrap(np.repeat(y, 2), np.repeat(s, 2), np.arange(2 * len(y)), n_boot=400, seed=1)
    assert records.high - records.low < 0.85 * (once.high - once.low)


def test_intervals_stay_in_0_1_and_a_perfect_classifier_gives_1_1():
    y, s, pid = clustered(n_pat=12, signal=0.2)
    res = patient_bootstrap(y, s, pid, n_boot=300, seed=0)
    assert 0 <= res.low <= res.estimate <= res.high <= 1 and (0 <= res.replicates).all() and (res.replicates <= 1).all()
    perfect = patient_bootstrap(y, y + 0.0, pid, n_boot=300, seed=0)
    assert (perfect.estimate, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    assert delong_ci(y, y + 0.0) == (1.0, 1.0, 1.0)


def slow_delong(y, s_a, s_b):
    """O(m n) placement values (DeLong et al. 1988, eq. 4-5): AUROCs and their covariance."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)

    def psi(a, b):
        return 1.0 if a > b else 0.5 if a == b else 0.0

    comps = []
    for s in (s_a, s_b):
        v10 = np.array([np.mean([psi(s[i], s[j]) for j in neg]) for i in pos])
        v01 = np.array([np.mean([psi(s[i], s[j]) for i in pos]) for j in neg])
        comps.append((v10.mean(), v10, v01))
    cov = np.zeros((2, 2))
    for r in range(2):
        for c in range(2):
            s10 = np.sum((comps[r][1] - comps[r][0]) * (comps[c][1] - comps[c][0])) / (len(pos) - 1)
            s01 = np.sum((comps[r][2] - comps[r][0]) * (comps[c][2] - comps[c][0])) / (len(neg) - 1)
            cov[r, c] = s10 / len(pos) + s01 / len(neg)
    return np.array([comps[0][0], comps[1][0]]), cov


def test_delong_matches_the_slow_placement_reference():
    y, s, _ = clustered(n_pat=50, per=(1, 1))
    s2 = np.round(s + np.random.default_rng(4).standard_normal(len(s)), 1)
    auc, cov = delong_covariance(y, np.stack([s, s2]))
    ref_auc, ref_cov = slow_delong(y, s, s2)
    np.testing.assert_allclose(auc, ref_auc, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-12)
    assert auc[0] == pytest.approx(roc_auc_score(y, s))
    diff, var, p = delong_paired_test(y, s, s2)
    assert diff == pytest.approx(ref_auc[0] - ref_auc[1]) and var == pytest.approx(ref_cov[0, 0] + ref_cov[1, 1]
                                                                                   - 2 * ref_cov[0, 1])
    assert 0 < p < 1
    assert delong_paired_test(y, s, s.copy()) == (0.0, 0.0, 1.0)


def test_delong_agrees_with_the_bootstrap_on_a_large_sample():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 3000)
    s = y * 0.8 + rng.standard_normal(3000)
    auc, var = delong_variance(y, s)
    boot = patient_bootstrap(y, s, np.arange(3000), n_boot=2000, seed=0)
    assert np.std(boot.replicates, ddof=1) == pytest.approx(np.sqrt(var), rel=0.08)
    _, lo, hi = delong_ci(y, s)
    assert lo == pytest.approx(boot.low, abs=0.006) and hi == pytest.approx(boot.high, abs=0.006)
    _, plo, phi = delong_ci(y, s, scale="plain")
    assert plo == pytest.approx(auc - 1.959964 * np.sqrt(var)) and phi == pytest.approx(auc + 1.959964 * np.sqrt(var))


def test_holm_against_hand_worked_examples():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4 0.02, x3 0.03, x2 0.06, x1 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    got = holm([0.02, np.nan, 0.04])  # NaN is not part of the family
    assert got[0] == pytest.approx(0.04) and np.isnan(got[1]) and got[2] == pytest.approx(0.04)


def test_bootstrap_p_value_and_verdict():
    assert bootstrap_p_value(np.zeros(99)) == 1.0
    assert bootstrap_p_value(np.ones(99)) == pytest.approx(2 * 1 / 100)  # never <= 0: (1 + 0) / (B + 1)
    d = np.r_[-np.ones(10), np.ones(89)]
    assert bootstrap_p_value(d) == pytest.approx(2 * 11 / 100)
    assert verdict("cmsc - supervised at 10% vs 100%", 0.03, -0.02, 0.08, 0.41) == \
        "cmsc - supervised at 10% vs 100%: +0.030 [-0.020, +0.080] (Holm-adjusted p=0.41)"


def test_aulc_on_the_log_fraction_axis():
    assert aulc([0.05, 0.1, 0.25, 1.0], [0.7] * 4) == pytest.approx(0.7)
    # x = -2, -1, 0: trapezoids (0.5 + 0.7) / 2 + (0.7 + 0.8) / 2 = 1.35 over a range of 2
    assert aulc([1.0, 0.01, 0.1], [0.8, 0.5, 0.7]) == pytest.approx(0.675)
    np.testing.assert_allclose(aulc([0.1, 1.0], np.array([[0.5, 0.7], [0.6, 0.6]])), [0.6, 0.6])
    with pytest.raises(ConfigError, match="fractions"):
        aulc([1.0], [0.5])


def test_labels_needed_picks_the_smallest_reaching_fraction_and_counts_never():
    fr = [0.1, 0.5, 1.0]
    curve = np.array([[0.6, 0.8, 0.9], [0.9, 0.95, 0.97], [0.5, 0.6, 0.7], [0.6, 0.75, 0.9]])
    target = np.array([0.75, 0.8, 0.8, 0.75])
    out = labels_needed_distribution(fr, curve, target)
    assert out["shares"] == {"0.1": 0.25, "0.5": 0.5, "1": 0.0} and out["never"] == 0.25 and out["n"] == 4
    assert out["low"] == 0.1 and out["high"] is None  # the upper bound lies in "never"


def test_hierarchical_replicates_match_a_slow_loop_and_are_paired():
    rng = np.random.default_rng(0)
    sets, data = [], []
    for m in range(2):  # two splits with their own test sets
        y, s, pid = clustered(n_pat=14 + 2 * m, seed=m)
        draws_a = {sd: s + 0.5 * rng.standard_normal(len(s)) for sd in (0, 1, 2)}
        draws_b = {sd: s + rng.standard_normal(len(s)) for sd in (0, 1, 2)}
        sets.append(SplitPredictions(y, pid, "binary", {("a", 1.0): draws_a, ("b", 1.0): draws_b,
                                               ("same", 1.0): draws_a}))
        data.append((y, pid, draws_a, draws_b))
    out = hierarchical_replicates(sets, n_boot=40, rng=np.random.default_rng(5))
    # slow reference: the same stream, in the documented order (splits, then per split draws and patients)
    ref_rng = np.random.default_rng(5)
    split_picks = ref_rng.integers(0, 2, size=(40, 2))
    per_split = []
    for y, pid, _, _ in data:
        draw_picks = ref_rng.integers(0, 3, size=(40, 3))
        uniq, codes = np.unique(pid, return_inverse=True)
        members = [np.flatnonzero(codes == g) for g in range(len(uniq))]
        rows = slow_patient_rows(ref_rng, members, 40, lambda r, y=y: 0 < y[r].sum() < len(r))
        per_split.append((draw_picks, rows))
    for cell, which in ((("a", 1.0), 2), (("b", 1.0), 3)):
        want = []
        for b in range(40):
            vals = []
            for m in split_picks[b]:
                draw_picks, rows = per_split[m]
                y, draws = data[m][0], data[m][which]
                vals.append(np.mean([slow_auc(y, draws[d], rows[b]) for d in draw_picks[b]]))
            want.append(np.mean(vals))
        np.testing.assert_allclose(out["replicates"][cell], want, atol=1e-12)
        point = np.mean([np.mean([roc_auc_score(d[0], d[which][sd]) for sd in range(3)]) for d in data])
        assert out["estimate"][cell] == pytest.approx(point)
    np.testing.assert_array_equal(out["replicates"][("same", 1.0)], out["replicates"][("a", 1.0)])  # paired
    assert set(out["delong_se"]) == {("a", 1.0), ("b", 1.0), ("same", 1.0)}


def test_auroc_replicates_refuse_labels_without_two_classes():
    with pytest.raises(ConfigError, match="no class has both"):
        auroc_replicates(np.ones(4), np.arange(4.0), np.ones((2, 4)), "binary")
    with pytest.raises(ConfigError, match="patients: 3 ids for 4 records"):
        patient_bootstrap(np.array([0, 1, 0, 1]), np.arange(4.0), np.array(["a", "b", "c"]))
