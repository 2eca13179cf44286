"""Uncertainty of test AUROCs: patient (cluster) bootstrap, DeLong, paired comparisons, Holm, AULC, labels needed.

Test records of one patient are not independent, so every resampling here draws
**patients** (clusters) with replacement: a drawn patient's records all enter,
each with the patient's multiplicity (Field & Welsh 2007, "Bootstrapping
clustered data", JRSS-B 69(3)). A replicate is a weight vector over records,
so AUROCs of all replicates are computed at once from one sort of the scores
(:func:`weighted_auroc`).

Replicates that leave a scorable class without positives or without
negatives (its AUROC is undefined) are **redrawn**, not skipped: every
replicate then estimates the same quantity (the same classes enter the macro
mean as in the point estimate). The count of redrawn replicates is reported
(``n_redrawn``); the intervals are therefore conditional on every class being
present, which matters only for test sets with a handful of patients of a class.

The label-efficiency curve (:func:`hierarchical_replicates`) resamples every
source of variance we control, outermost first: split seeds (when several
splits are given), label draws (seeds) within a split, and test patients
within the split's own test set (Davison & Hinkley 1997, sec. 3.8, the
two-stage bootstrap). Two lines of a curve see the *same* resampled splits,
draws and patients in a replicate, so their difference is paired, and its
interval and p-value come from the per-replicate differences.

DeLong et al. (1988, Biometrics 44(3)) give the variance of one AUROC and the
covariance of two AUROCs on the same records; the fast midrank form is Sun &
Xu (2014, IEEE Signal Process. Lett. 21(11)). They treat records as
independent, so they cross-check the bootstrap for binary tasks with one
record per patient.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as _stats

from ssl_ecg.errors import ConfigError

__all__ = ["BootstrapResult", "cluster_counts", "weighted_auroc", "auroc_replicates", "scorable_classes",
           "patient_bootstrap", "delong_variance", "delong_covariance", "delong_ci", "delong_paired_test",
           "holm", "bootstrap_p_value", "percentile_interval", "aulc", "labels_needed_distribution",
           "hierarchical_replicates", "SplitPredictions", "verdict", "PATIENT_BOOTSTRAP", "HIERARCHICAL_BOOTSTRAP",
           "task_rng"]

PATIENT_BOOTSTRAP = "patient bootstrap (percentile)"
HIERARCHICAL_BOOTSTRAP = "hierarchical bootstrap: splits, label draws, test patients (percentile)"
_MAX_REDRAW_ROUNDS = 100


@dataclass
class BootstrapResult:
    """A statistic, its percentile interval and its replicates.

    Attributes:
        estimate: the statistic on the data as observed.
        low, high: the percentile interval (e.g. 2.5% and 97.5% quantiles of ``replicates``).
        replicates: (B,) the statistic per replicate.
        n_redrawn: replicates drawn and discarded because a scorable class had no positive or no negative.
        method: how the interval was made.
    """

    estimate: float
    low: float
    high: float
    replicates: np.ndarray
    n_redrawn: int = 0
    method: str = PATIENT_BOOTSTRAP


def task_rng(seed: int, key: str) -> np.random.Generator:
    """A generator for one ``key`` (e.g. a task name): adding a task does not move another task's replicates."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(str(key).encode())]))


def cluster_counts(n_clusters: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(B, P) multiplicities: replicate b draws row b of ``rng.integers(0, P, size=(B, P))`` with replacement."""
    if n_clusters < 1 or n_boot < 1:
        raise ConfigError(f"cluster_counts: need >= 1 cluster and replicate, got {n_clusters} and {n_boot}")
    picks = rng.integers(0, n_clusters, size=(n_boot, n_clusters))
    flat = picks + n_clusters * np.arange(n_boot)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n_clusters).reshape(n_boot, n_clusters)


def weighted_auroc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Binary AUROC of every weight vector at once (Mann-Whitney with weights, ties count one half).

    AUROC_b = sum_{i pos, j neg} w_bi w_bj ([s_i > s_j] + [s_i = s_j] / 2) / (W_b,pos W_b,neg),
    computed from one sort of the scores in O(B n). Integer weights give exactly the
    AUROC of the records repeated that many times.

    Args:
        y: (n,) 0/1 labels.
        scores: (n,) scores, larger meaning positive.
        weights: (B, n) or (n,) non-negative record weights.

    Returns:
        (B,) AUROCs (float64); NaN where a weight vector leaves no positive or no negative.
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if s.shape != y.shape or w.shape[1] != len(y):
        raise ConfigError(f"weighted_auroc: labels {y.shape}, scores {s.shape} and weights {w.shape}; expected "
                          "(n,), (n,) and (B, n)")
    order = np.argsort(s, kind="stable")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])  # one group per distinct score (ties)
    ws, ys = w[:, order], y[order]
    pos = np.add.reduceat(ws * ys, starts, axis=1)
    neg = np.add.reduceat(ws * ~ys, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each score group
    den = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (pos * (below + 0.5 * neg)).sum(1) / den, np.nan)


def _columns(y: np.ndarray, scores: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(n, K) 0/1 targets and (n, K) scores of the one-vs-rest problems of ``kind`` (K = 1 for binary)."""
    y, scores = np.asarray(y), np.asarray(scores, dtype=np.float64)
    if kind == "binary":
        s = scores if scores.ndim == 1 else scores[:, -1]  # as ssl_ecg.evaluate.tasks.auroc
        return y.reshape(-1, 1).astype(int), s.reshape(-1, 1)
    if kind == "multiclass":
        if scores.ndim != 2:
            raise ConfigError(f"scores: a multiclass task needs (n, C) scores, got shape {scores.shape}")
        onehot = np.zeros(scores.shape, dtype=int)
        onehot[np.arange(len(y)), y.astype(int)] = 1
        return onehot, scores
    if kind == "multilabel":
        if y.shape != scores.shape:
            raise ConfigError(f"scores: a multilabel task needs scores shaped like its labels {y.shape}, "
                              f"got {scores.shape}")
        return y.astype(int), scores
    raise ConfigError(f"kind: expected binary, multiclass or multilabel, got {kind!r}")


def scorable_classes(y: np.ndarray, scores: np.ndarray, kind: str) -> np.ndarray:
    """Indices of the one-vs-rest problems with positives and negatives in ``y`` (the macro AUROC's classes)."""
    cols, _ = _columns(y, scores, kind)
    n_pos = cols.sum(0)
    return np.flatnonzero((n_pos > 0) & (n_pos < len(cols)))


def auroc_replicates(y: np.ndarray, scores: np.ndarray, weights: np.ndarray, kind: str,
                     classes: np.ndarray | None = None) -> np.ndarray:
    """(B,) binary AUROC, or macro one-vs-rest AUROC over ``classes``, per weight vector.

    ``classes`` defaults to :func:`scorable_classes` of the unweighted data, as
    :func:`ssl_ecg.evaluate.metrics.macro_auroc` chooses them; a replicate where one
    of them has no positive or negative gives NaN (see :func:`patient_bootstrap`).
    """
    cols, s = _columns(y, scores, kind)
    classes = scorable_classes(y, scores, kind) if classes is None else np.asarray(classes)
    if len(classes) == 0:
        raise ConfigError("y: no class has both positives and negatives; AUROC is undefined")
    return np.mean([weighted_auroc(cols[:, c], s[:, c], weights) for c in classes], axis=0)


def _valid(cols: np.ndarray, classes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) whether every class in ``classes`` keeps positive and negative weight."""
    pos = weights @ cols[:, classes]
    return ((pos > 0) & (pos < weights.sum(1, keepdims=True))).all(1)


def _record_weights(codes: np.ndarray, n_patients: int, cols: np.ndarray, classes: np.ndarray, n_boot: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(B, n) record weights of B valid patient replicates, and how many were redrawn."""
    kept, n_redrawn, need = [], 0, n_boot
    for _ in range(_MAX_REDRAW_ROUNDS):
        w = cluster_counts(n_patients, need, rng)[:, codes].astype(np.float64)
        ok = _valid(cols, classes, w)
        kept.append(w[ok])
        n_redrawn += int((~ok).sum())
        need -= int(ok.sum())
        if need == 0:
            return np.concatenate(kept), n_redrawn
    raise ConfigError(f"patients: {n_redrawn} of {n_redrawn + n_boot - need} bootstrap replicates lost a class "
                      f"(no positive or no negative patient); expected a test set with several patients per class")


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The (1 - confidence)/2 and (1 + confidence)/2 quantiles of the finite replicates (NaN if none)."""
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence: expected a value in (0, 1), got {confidence}")
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if len(r) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(r, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def _codes(patients: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    patients = np.asarray(patients)
    if len(patients) != n:
        raise ConfigError(f"patients: {len(patients)} ids for {n} records; expected one per record")
    uniq, codes = np.unique(patients.astype(str), return_inverse=True)
    return codes.ravel(), len(uniq)


def patient_bootstrap(y: np.ndarray, scores: np.ndarray, patients: np.ndarray, kind: str = "binary",
                      n_boot: int = 1000, seed: int | np.random.Generator = 0,
                      confidence: float = 0.95) -> BootstrapResult:
    """Percentile interval of a test AUROC from resampling test patients with replacement.

    Replicate b draws P patients (row b of ``rng.integers(0, P, (B, P))``, patients
    in sorted id order); all records of a drawn patient enter with its
    multiplicity. Replicates where a scorable class has no positive or negative
    are redrawn (counted in ``n_redrawn``). Every replicate is an AUROC, so the
    interval lies in [0, 1]; a perfectly separating classifier gives [1, 1].

    Args:
        y: (n,) labels (0/1 or class indices) or (n, C) multi-hot.
        scores: (n,) or (n, C) scores.
        patients: (n,) patient id per record.
        kind: ``binary``, ``multiclass`` or ``multilabel``.
        n_boot: replicates.
        seed: seed or ``numpy.random.Generator``.
        confidence: interval coverage.
    """
    cols, _ = _columns(y, scores, kind)
    codes, n_pat = _codes(patients, len(cols))
    classes = scorable_classes(y, scores, kind)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    w, n_redrawn = _record_weights(codes, n_pat, cols, classes, n_boot, rng)
    reps = auroc_replicates(y, scores, w, kind, classes)
    est = float(auroc_replicates(y, scores, np.ones(len(cols)), kind, classes)[0])
    return BootstrapResult(est, *percentile_interval(reps, confidence), reps, n_redrawn)


def _placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUROCs (K,) and DeLong's structural components: positives' (K, m) and negatives' (K, n) (Sun & Xu 2014)."""
    y = np.asarray(y).astype(bool)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != len(y) or y.ndim != 1:
        raise ConfigError(f"delong: labels {y.shape} and scores {s.shape}; expected (n,) and (n,) or (K, n)")
    pos, neg = s[:, y], s[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ConfigError(f"y: DeLong needs positives and negatives, got {m} and {n}")
    tz = _stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)  # midranks
    tx, ty = _stats.rankdata(pos, axis=1), _stats.rankdata(neg, axis=1)
    v_pos = (tz[:, :m] - tx) / n  # share of negatives below each positive (ties one half)
    v_neg = 1.0 - (tz[:, m:] - ty) / m  # share of positives above each negative
    return v_pos.mean(1), v_pos, v_neg


def delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs (K,) of K score vectors on the same records, and their DeLong covariance (K, K).

    S = S_pos / m + S_neg / n, with S_pos, S_neg the sample covariances (ddof 1)
    of the structural components over the m positives and n negatives
    (DeLong et al. 1988; midrank computation of Sun & Xu 2014).
    """
    auc, v_pos, v_neg = _placements(y, scores)
    m, n = v_pos.shape[1], v_neg.shape[1]
    s_pos = np.atleast_2d(np.cov(v_pos, ddof=1)) if m > 1 else np.zeros((len(auc), len(auc)))
    s_neg = np.atleast_2d(np.cov(v_neg, ddof=1)) if n > 1 else np.zeros((len(auc), len(auc)))
    return auc, s_pos / m + s_neg / n


def delong_variance(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Binary AUROC of ``scores`` (n,) and its DeLong variance."""
    auc, cov = delong_covariance(y, np.asarray(scores).reshape(1, -1))
    return float(auc[0]), float(cov[0, 0])


def delong_ci(y: np.ndarray, scores: np.ndarray, confidence: float = 0.95,
              scale: str = "logit") -> tuple[float, float, float]:
    """AUROC and its DeLong normal interval, built on the ``logit`` scale (default; stays inside (0, 1)) or the
    ``plain`` scale (clipped to [0, 1]). An AUROC of 0 or 1 has zero variance: the interval is the point."""
    auc, var = delong_variance(y, scores)
    z = float(_stats.norm.ppf(0.5 + confidence / 2))
    if scale == "plain":
        h = z * np.sqrt(var)
        return auc, float(max(0.0, auc - h)), float(min(1.0, auc + h))
    if scale != "logit":
        raise ConfigError(f"scale: expected 'logit' or 'plain', got {scale!r}")
    if auc <= 0 or auc >= 1:
        return auc, auc, auc
    centre, h = np.log(auc / (1 - auc)), z * np.sqrt(var) / (auc * (1 - auc))  # delta method
    lo, hi = 1 / (1 + np.exp(-(centre - h))), 1 / (1 + np.exp(-(centre + h)))
    return auc, float(lo), float(hi)


def delong_paired_test(y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> tuple[float, float, float]:
    """DeLong's test of two correlated AUROCs on the same records: (AUROC_a - AUROC_b, its variance, two-sided p).

    Var(a - b) = S_aa + S_bb - 2 S_ab; identical scores give difference 0, variance 0 and p = 1.
    """
    auc, cov = delong_covariance(y, np.stack([np.asarray(scores_a), np.asarray(scores_b)]))
    diff, var = float(auc[0] - auc[1]), float(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0))
    if var == 0:
        return diff, 0.0, 1.0 if diff == 0 else 0.0
    return diff, var, float(2 * _stats.norm.sf(abs(diff) / np.sqrt(var)))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's (1979) step-down adjustment of a family of p-values (statsmodels ``multipletests``, ``holm``).

    NaN p-values are left NaN and are not counted in the family.
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a difference being 0: 2 min(P(D <= 0), P(D >= 0)), each share counted as
    (1 + #) / (B + 1) so it is never 0, capped at 1 (Davison & Hinkley 1997, sec. 4.4)."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan")
    b = len(d)
    return float(min(1.0, 2 * min((1 + (d <= 0).sum()) / (b + 1), (1 + (d >= 0).sum()) / (b + 1))))


def aulc(fractions: Sequence[float], values: np.ndarray) -> np.ndarray | float:
    """Area under a label-efficiency curve on the log10-fraction axis, divided by that axis's range.

    Trapezoids between the sorted fractions; the normalisation puts the area on
    the metric's scale (a constant curve has the constant as its AULC).

    Args:
        fractions: (F,) distinct labelled fractions, F >= 2.
        values: (..., F) the curve (e.g. (B, F): one curve per replicate).

    Returns:
        (...) AULC; a float for a single curve.
    """
    f = np.asarray(fractions, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if len(f) < 2 or len(np.unique(f)) != len(f) or (f <= 0).any() or v.shape[-1] != len(f):
        raise ConfigError(f"fractions: expected >= 2 distinct positive fractions matching values' last axis "
                          f"{v.shape}, got {f.tolist()}")
    order = np.argsort(f)
    x, v = np.log10(f[order]), v[..., order]
    area = np.sum(np.diff(x) * (v[..., 1:] + v[..., :-1]) / 2, axis=-1)
    out = area / (x[-1] - x[0])
    return float(out) if np.ndim(out) == 0 else out


def labels_needed_distribution(fractions: Sequence[float], curve: np.ndarray, target: np.ndarray,
                               confidence: float = 0.95) -> dict:
    """The smallest fraction whose value reaches ``target``, per replicate, and its distribution.

    Args:
        fractions: (F,) labelled fractions.
        curve: (B, F) the line per replicate (NaN replicates are left out).
        target: (B,) the reference value per replicate (e.g. the reference at 100%, same replicates).
        confidence: interval coverage.

    Returns:
        ``{"shares": {fraction: share of replicates where it is the first reaching one}, "never": share never
        reaching, "low", "high"}``: the percentile interval over the discrete fractions ("never" counted as
        beyond the largest; a bound there is None), with ``n`` the replicates used.
    """
    f = np.asarray(fractions, dtype=np.float64)
    order = np.argsort(f)
    f, c = f[order], np.asarray(curve, dtype=np.float64)[:, order]
    t = np.asarray(target, dtype=np.float64)
    ok = np.isfinite(c).all(1) & np.isfinite(t)
    c, t = c[ok], t[ok]
    reached = c >= t[:, None]
    first = np.where(reached.any(1), reached.argmax(1), len(f))  # len(f): never
    n = len(first)
    if n == 0:
        return {"shares": {}, "never": float("nan"), "low": None, "high": None, "n": 0}
    q = np.quantile(first, [(1 - confidence) / 2, (1 + confidence) / 2], method="inverted_cdf")
    bound = [None if int(i) == len(f) else float(f[int(i)]) for i in q]
    return {"shares": {f"{v:g}": float((first == i).mean()) for i, v in enumerate(f)},
            "never": float((first == len(f)).mean()), "low": bound[0], "high": bound[1], "n": int(n)}


@dataclass
class SplitPredictions:
    """One split's test set of a task, and the test scores of every curve cell on it.

    Attributes:
        y: (n,) labels or (n, C) multi-hot of the test records.
        patients: (n,) their patient ids.
        kind: ``binary``, ``multiclass`` or ``multilabel``.
        scores: ``{(line, fraction): {seed: (n,) or (n, C) scores}}``.
    """

    y: np.ndarray
    patients: np.ndarray
    kind: str
    scores: Mapping[tuple, Mapping[int, np.ndarray]]


def hierarchical_replicates(test_sets: Sequence[SplitPredictions], n_boot: int = 1000,
                            rng: np.random.Generator | int = 0) -> dict:
    """Point estimates and paired bootstrap replicates of every curve cell, over splits, draws and patients.

    Replicate b resamples, with replacement and outermost first: the M splits;
    within each split, its label draws (the union of its cells' seeds); and the
    test patients of that split's own test set (clusters, redrawn while a class is
    missing, see :func:`patient_bootstrap`). A cell's replicate is the mean, over
    the resampled splits and draws, of its AUROC on the resampled patients:

        E_b = sum_m K_bm / M * (sum_s D_bms A_ms(w_bm) / sum_s D_bms)

    with K, D the split and draw multiplicities, w_bm the record weights and
    A_ms the AUROC of draw s in split m (a draw or split the cell lacks is left
    out of its sums; NaN if none is left). Every cell shares K, D and w, so
    differences of two cells' replicates are paired. The point estimate is the
    mean over splits of the mean over draws of the full-test-set AUROC.

    Args:
        test_sets: one :class:`SplitPredictions` per split.
        n_boot: replicates B.
        rng: generator or seed.

    Returns:
        ``{"estimate": {cell: float}, "replicates": {cell: (B,)}, "n_redrawn": int, "seeds": {cell: n},
        "patient_se": {cell: mean over its draws and splits of the SE of the draw's AUROC over patient
        replicates}, "delong_se": {cell: the same with DeLong's SE; binary tasks only}}``.
    """
    if not test_sets:
        raise ConfigError("test_sets: expected at least one split's test set, got none")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    n_splits = len(test_sets)
    split_k = cluster_counts(n_splits, n_boot, rng).astype(np.float64)  # (B, M)
    cells = sorted({c for ts in test_sets for c in ts.scores}, key=lambda c: (str(c[0]), float(c[1])))
    num = {c: np.zeros(n_boot) for c in cells}
    den = {c: np.zeros(n_boot) for c in cells}
    point: dict = {c: [] for c in cells}
    n_seeds: dict = {c: 0 for c in cells}
    se: dict = {c: [] for c in cells}
    dl: dict = {c: [] for c in cells}
    n_redrawn = 0
    for m, ts in enumerate(test_sets):
        first = next(iter(next(iter(ts.scores.values())).values()))
        cols, _ = _columns(ts.y, first, ts.kind)
        classes = scorable_classes(ts.y, first, ts.kind)
        if len(classes) == 0:
            raise ConfigError(f"test set {m}: no class has both positives and negatives; AUROC is undefined")
        codes, n_pat = _codes(ts.patients, len(cols))
        seeds = sorted({int(s) for draws in ts.scores.values() for s in draws})
        draw_k = cluster_counts(len(seeds), n_boot, rng).astype(np.float64)  # (B, S)
        w, redrawn = _record_weights(codes, n_pat, cols, classes, n_boot, rng)
        n_redrawn += redrawn
        ones = np.ones(len(cols))
        for cell, draws in ts.scores.items():
            split_num, split_den, values = np.zeros(n_boot), np.zeros(n_boot), []
            for s, sc in draws.items():
                a = auroc_replicates(ts.y, sc, w, ts.kind, classes)
                k = draw_k[:, seeds.index(int(s))]
                split_num += k * a
                split_den += k
                values.append(float(auroc_replicates(ts.y, sc, ones, ts.kind, classes)[0]))
                se[cell].append(float(np.std(a, ddof=1)) if n_boot > 1 else float("nan"))
                if ts.kind == "binary":
                    yb, sb = _columns(ts.y, sc, "binary")
                    dl[cell].append(float(np.sqrt(delong_variance(yb[:, 0], sb[:, 0])[1])))
            with np.errstate(invalid="ignore", divide="ignore"):
                split_mean = np.where(split_den > 0, split_num / split_den, np.nan)
            use = split_k[:, m] * np.isfinite(split_mean)
            num[cell] += use * np.nan_to_num(split_mean)
            den[cell] += use
            point[cell].append(float(np.mean(values)))
            n_seeds[cell] += len(draws)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = {c: np.where(den[c] > 0, num[c] / den[c], np.nan) for c in cells}
    return {"estimate": {c: float(np.mean(point[c])) for c in cells}, "replicates": reps, "n_redrawn": n_redrawn,
            "seeds": n_seeds, "patient_se": {c: float(np.mean(se[c])) for c in cells},
            "delong_se": {c: float(np.mean(dl[c])) for c in cells if dl[c]}}


def verdict(name: str, estimate: float, low: float, high: float, p_adjusted: float, correction: str = "Holm") -> str:
    """One line, e.g. ``cmsc - supervised at 10% vs 100%: +0.030 [-0.020, +0.080] (Holm-adjusted p=0.41)``."""
    p = "n/a" if not np.isfinite(p_adjusted) else f"{p_adjusted:.2g}"
    return f"{name}: {estimate:+.3f} [{low:+.3f}, {high:+.3f}] ({correction}-adjusted p={p})"
