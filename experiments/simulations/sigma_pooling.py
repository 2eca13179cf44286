"""Should the between-split variance be pooled over a line's labelled fractions? (It was not adopted.)

Reproduces the figures quoted in ``ssl_ecg.evaluate.stats.split_contrast``: two identical arms, three splits of 40
test patients, fractions 0.1 / 0.5 / 1.0 that share one pretraining run per split and arm (a gain drawn once per
split and arm, ``tau`` its SD), two label draws per cell. For the paired difference at 10% it counts how often the
95% interval covers 0 and how often sigma_b is estimated as 0, with sigma_b from the difference alone (what
``split_contrast`` does) or pooled over the three fractions (d = 6 degrees of freedom).

    .venv/bin/python experiments/simulations/sigma_pooling.py 100 0.5  # measured: own 0.89 / 35%, pooled 0.90 / 26%
    .venv/bin/python experiments/simulations/sigma_pooling.py 200 1.0  # own 0.885 / 14.5%, pooled 0.875 / 11.5%
    .venv/bin/python experiments/simulations/sigma_pooling.py 200 0.3  # measured: own 0.945 / 59%, pooled 0.94 / 52.5%
"""

from __future__ import annotations

import sys

import numpy as np
from scipy import stats

from ssl_ecg.evaluate.stats import SplitPredictions, hierarchical_replicates, percentile_interval

FRACTIONS = (0.1, 0.5, 1.0)


def null_grid(rng: np.random.Generator, tau: float, n_splits: int = 3, n_pat: int = 40) -> list[SplitPredictions]:
    sets = []
    for m in range(n_splits):
        y = np.arange(n_pat) % 2
        effect = 0.5 * rng.standard_normal(n_pat)
        cells = {}
        for arm in "ab":
            gain = 1.0 + tau * rng.standard_normal()  # this arm's pretraining run in this split: every fraction
            for f in FRACTIONS:
                cells[(arm, f)] = {sd: gain * y + effect + rng.standard_normal(n_pat) for sd in (0, 1)}
        sets.append(SplitPredictions(y, np.array([f"s{m}p{i}" for i in range(n_pat)]), "binary", cells))
    return sets


def moment(boot: dict, f: float) -> tuple[float, np.ndarray, np.ndarray]:
    """s^2 - W of the difference a - b at fraction f (split_contrast's method of moments), its x_m and R_bm."""
    x = boot["split_estimates"][("a", f)] - boot["split_estimates"][("b", f)]
    rr = boot["split_replicates"][("a", f)] - boot["split_replicates"][("b", f)]
    within = float(np.var(rr - rr.mean(0), axis=1, ddof=1).mean())
    return float(np.var(x, ddof=1)) - within, x, rr


def interval(x: np.ndarray, rr: np.ndarray, sigma2: float, dof: float) -> tuple[float, float]:
    m, r = len(x), rr.mean(1)
    v_w = float(np.var(r, ddof=1))
    if sigma2 > 0 and v_w > 0:
        total = v_w + sigma2 / m
        nu = total ** 2 / ((sigma2 / m) ** 2 / dof)
        widen = stats.t.ppf(0.975, nu) / stats.norm.ppf(0.975)
        r = r.mean() + (r - r.mean()) * np.sqrt(total / v_w) * widen
    return percentile_interval(np.clip(r, -1, 1))


def main(n: int, tau: float) -> None:
    rng = np.random.default_rng(0)
    covered = {"own": 0, "pooled": 0}
    zero = {"own": 0, "pooled": 0}
    for i in range(n):
        boot = hierarchical_replicates(null_grid(rng, tau), n_boot=200, rng=i)
        moments = [moment(boot, f) for f in FRACTIONS]
        own, x, rr = moments[0]
        for name, s2, dof in (("own", own, 2.0), ("pooled", float(np.mean([m[0] for m in moments])), 6.0)):
            sigma2 = max(0.0, s2)
            low, high = interval(x, rr, sigma2, dof)
            covered[name] += low <= 0 <= high
            zero[name] += sigma2 == 0
    print(f"n={n} tau={tau}: coverage {({k: v / n for k, v in covered.items()})}, "
          f"sigma_b = 0 in {({k: v / n for k, v in zero.items()})}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100, float(sys.argv[2]) if len(sys.argv) > 2 else 0.5)
