"""Figures of a label-efficiency curve: ``curve.png``, ``differences.png`` and ``labels_needed.png`` (matplotlib,
Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_curve", "plot_labels_needed", "plot_differences"]


def plot_curve(summary: dict, path: str | Path, metric: str = "test AUROC") -> Path:
    """One panel per task: x = labelled fraction (log scale), a line per arm with its shaded 95% interval
    (each cell's ``ci_low``/``ci_high``: the hierarchical patient bootstrap, or the t interval it names)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for arm, cells in summary[task].items():
            fr = sorted(cells, key=float)
            x = np.array([float(f) * 100 for f in fr])
            m = np.array([cells[f]["mean"] for f in fr])
            lo = np.array([cells[f]["ci_low"] for f in fr])
            hi = np.array([cells[f]["ci_high"] for f in fr])
            ax.plot(x, m, marker="o", label=arm)
            bounded = "[" not in task  # AUROC lies in [0, 1]; the challenge score can be negative
            ax.fill_between(x, np.clip(lo, 0, 1) if bounded else lo, np.clip(hi, 0, 1) if bounded else hi, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xticks([float(f) * 100 for f in sorted(next(iter(summary[task].values())), key=float)])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())  # only the grid's fractions
        ax.set_xlabel("labelled training patients (%)")
        ax.set_ylabel(metric if "[" not in task else task[task.index("[") + 1:-1] + " score")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_labels_needed(needed: dict, path: str | Path) -> Path:
    """Bar chart: the labelled fraction each encoder needs to match the reference at 100% (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(needed) or ["(none)"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        entry = needed.get(task, {"fractions": {}, "reference": "", "target": float("nan")})
        names = list(entry["fractions"])
        vals = [entry["fractions"][n] for n in names]
        heights = [100 * v if v is not None else 100 for v in vals]
        own = entry.get("references") or {}  # matched references: a bar measured against its group's reference
        names_shown = [f"{n}\nvs {own[n]['reference'].split(' at ')[0]}" if n in own else n for n in names]
        bars = ax.bar(names_shown, heights, color=["C0" if v is not None else "0.8" for v in vals])
        for bar, v in zip(bars, vals):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{100 * v:g}%" if v is not None
                    else "not reached", ha="center", va="bottom", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("labelled patients needed (%)")
        ax.set_title(f"{task}: to match {entry['reference']} ({entry['target']:.3f})", fontsize=9)
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_differences(comparisons: dict, path: str | Path) -> Path:
    """One panel per task: the paired difference of each encoder line and its reference at the same fraction
    (x = labelled fraction, log scale) with its bootstrap 95% interval as a band, and a zero line.

    Args:
        comparisons: ``{task: [comparison, ...]}`` as in ``curve.json`` (``a``/``b`` = [line, fraction],
            ``estimate``, ``ci_low``, ``ci_high``); comparisons across fractions are left out.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t, comps in comparisons.items() if any(c["a"][1] == c["b"][1] for c in comps)] or ["(none)"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        series: dict = {}
        for c in comparisons.get(task, []):
            if c["a"][1] == c["b"][1]:
                series.setdefault(f"{c['a'][0]} - {c['b'][0]}", []).append(
                    (float(c["a"][1]) * 100, c["estimate"], c["ci_low"], c["ci_high"]))
        for name, pts in series.items():
            x, m, lo, hi = (np.array(v, dtype=float) for v in zip(*sorted(pts)))
            ax.plot(x, m, marker="o", label=name)
            ax.fill_between(x, lo, hi, alpha=0.2)
        ax.axhline(0.0, color="0.3", lw=1)
        if series:
            ax.set_xscale("log")
            ticks = sorted({p[0] for pts in series.values() for p in pts})
            ax.set_xticks(ticks)
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())  # only the grid's fractions
            ax.legend(fontsize=8)
        ax.set_xlabel("labelled training patients (%)")
        ax.set_ylabel("paired difference (95% bootstrap interval)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
