"""``ssl-ecg report``: run (or resume) the results grid and write ``RESULTS.md``.

The grid is a folder of *blocks* (``experiments/results/*.yaml``, :class:`ReportBlock`): one dataset, the
pretraining recipe of each method, one curve recipe, the split seeds. For every split seed a block pretrains each
method on that split's pool (:func:`~ssl_ecg.pretrain.run.run_pretrain`, which reuses a finished run of the same
fingerprint), then evaluates all of them together with random init, supervised training and any reference arm
the curve recipe asks for (:func:`~ssl_ecg.evaluate.runner.run_evaluation`, which reuses every curve cell whose
fingerprint matches). So the report resumes where it stopped, and a changed recipe recomputes exactly what it
changes.

The curves of all split seeds are then combined by :func:`~ssl_ecg.evaluate.curve.summarize_runs`: estimates and
95% intervals from a hierarchical bootstrap over splits, label draws and test patients, paired comparisons with
Holm's correction, the area under each curve and the labels each arm needs. Nothing here looks at test data to
choose anything: every setting is in the recipes, chosen on validation patients where a recipe says so.

Splits: a block whose recipes draw a patient split from shares gets a new split per seed (``split_seed``); a
block on an official split (PTB-XL's folds) keeps it and varies the pretraining seed instead, so its interval
still covers pretraining runs and label draws. Both seeds are set to the split seed in either case.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ssl_ecg.errors import ConfigError, SslEcgError
from ssl_ecg.paths import run_folder
from ssl_ecg.recipe import MAX_INT, RunName, Seeds, load_recipe

__all__ = ["ReportBlock", "load_blocks", "run_block", "run_report", "render_results", "headline", "QUICK_PRETRAIN",
           "QUICK_CURVE"]

QUICK_PRETRAIN: dict[str, Any] = {"epochs": 1, "max_steps": 2, "batch_size": 16}
"""``--quick``: pretraining overrides that make every run a smoke test (seconds, not minutes)."""

QUICK_CURVE: dict[str, Any] = {"fractions": [0.5, 1.0], "seeds": [0], "epochs": 1, "supervised_lrs": [0.001],
                               "supervised_batch_sizes": [16], "probes": ["logistic"]}
"""``--quick``: curve overrides (two fractions, one label draw, a one-epoch supervised arm)."""


@dataclass
class ReportBlock:
    """One block of the results grid (``experiments/results/<name>.yaml``).

    Attributes:
        name: the block's name (its section in RESULTS.md, its folder under the report's runs).
        title: a heading for RESULTS.md.
        tier: ``core`` (run by default) or ``full`` (only with ``--full``).
        methods: method name -> pretraining recipe (a path relative to the block file); the core grid's methods.
        full_methods: more methods, pretrained only with ``--full``.
        pretrain_overrides: ``key -> value`` applied to every pretraining recipe of the block.
        curve: the curve recipe (EvalConfig), relative to the block file.
        curve_overrides: applied to the curve recipe (tasks, fractions, seeds, ...).
        split_seeds: one pretraining + curve per seed (see the module doc).
        not_applicable: method -> why it is not in this block (printed in RESULTS.md).
        chosen_on_validation: what the recipes chose on validation patients, in words (printed in RESULTS.md).
        quick_tasks: the tasks ``--quick`` keeps (default: the first task).
    """

    name: RunName
    curve: str
    methods: dict[str, str] = field(default_factory=dict)
    title: str = ""
    tier: Literal["core", "full"] = "core"
    full_methods: dict[str, str] = field(default_factory=dict)
    pretrain_overrides: dict = field(default_factory=dict)
    curve_overrides: dict = field(default_factory=dict)
    split_seeds: Seeds = field(default_factory=lambda: [0, 1, 2])
    not_applicable: dict[str, str] = field(default_factory=dict)
    chosen_on_validation: str = ""
    quick_tasks: list[str] | None = None
    source: str = ""

    def __post_init__(self):
        bad = [s for s in self.split_seeds if not 0 <= s <= MAX_INT]
        if bad or len(set(self.split_seeds)) != len(self.split_seeds):
            raise ConfigError(f"block {self.name}: split_seeds={self.split_seeds}: expected distinct integers in "
                              f"[0, {MAX_INT}]")
        for method in self.methods.keys() & self.full_methods.keys():
            raise ConfigError(f"block {self.name}: method {method!r} is in both methods and full_methods")
        reserved = {"random_init", "supervised", "features"} & (self.methods.keys() | self.full_methods.keys())
        if reserved:
            raise ConfigError(f"block {self.name}: {sorted(reserved)} are the curve's own arms, not methods")

    def path(self, relative: str) -> Path:
        """A recipe path of this block, resolved against the block file's folder."""
        base = Path(self.source).parent if self.source else Path.cwd()
        return (base / relative).resolve()


def load_blocks(folder: str | os.PathLike, full: bool = False, only: list[str] | None = None) -> list[ReportBlock]:
    """Every block recipe (``*.yaml``) in ``folder``, sorted by file name; ``full`` keeps the ``full`` tier too,
    ``only`` keeps the blocks of those names (whatever their tier).

    Raises:
        ConfigError: the folder is missing or holds no block, a block is malformed or a recipe it names is missing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: results folder not found (expected experiments/results/*.yaml)")
    blocks = []
    for path in sorted(folder.glob("*.yaml")):
        block = load_recipe(ReportBlock, path, defaults={"source": str(path)})
        for relative in [block.curve, *block.methods.values(), *block.full_methods.values()]:
            if not block.path(relative).is_file():
                raise ConfigError(f"{path}: recipe {relative!r} not found (paths are relative to the block file)")
        if (only is None and (full or block.tier == "core")) or (only is not None and block.name in only):
            blocks.append(block)
    unknown = sorted(set(only or ()) - {b.name for b in blocks})
    if unknown:
        raise ConfigError(f"--block: {unknown} are not blocks of {folder}")
    if not blocks:
        raise ConfigError(f"{folder}: no block recipes (*.yaml){'' if full else ' of the core tier'}")
    names = [b.name for b in blocks]
    if len(set(names)) != len(names):
        raise ConfigError(f"{folder}: block names {names} repeat; expected one block per name")
    return blocks


def _pretrain_config(block: ReportBlock, method: str, recipe: str, seed: int, quick: bool):
    from ssl_ecg.pretrain.run import PretrainConfig

    overrides = {**block.pretrain_overrides, **(QUICK_PRETRAIN if quick else {}), "name": method,
                 "split_seed": seed, "seed": seed}
    return load_recipe(PretrainConfig, block.path(recipe), overrides)


def _curve_config(block: ReportBlock, encoders: dict[str, str], seed: int, quick: bool):
    from ssl_ecg.evaluate.runner import EvalConfig

    overrides = {**block.curve_overrides, "name": "curve", "encoders": encoders, "split": None, "split_seed": seed}
    if quick:
        base = load_recipe(EvalConfig, block.path(block.curve), dict(block.curve_overrides))
        overrides.update(QUICK_CURVE, tasks=list(block.quick_tasks or base.tasks[:1]))
    return load_recipe(EvalConfig, block.path(block.curve), overrides)


def run_block(block: ReportBlock, runs: str | os.PathLike, full: bool = False, quick: bool = False,
              progress: bool = False) -> dict:
    """Pretrain and evaluate one block for each split seed (resuming what matches); returns what RESULTS.md needs.

    A method whose pretraining fails with a library error (e.g. a recipe that does not fit the data) is listed
    with that error and left out of the curve; the grid goes on.
    """
    from ssl_ecg.evaluate.runner import run_evaluation
    from ssl_ecg.pretrain.run import run_pretrain

    methods = {**block.methods, **(block.full_methods if full else {})}
    if quick:
        methods = dict(list(methods.items())[:1])
    seeds = block.split_seeds[:1] if quick else block.split_seeds
    out: dict[str, Any] = {"block": block, "splits": [], "failed": {}, "pretrain_seconds": {}, "curve_seconds": []}
    for seed in seeds:
        folder = run_folder(run_folder(runs, block.name), f"split{seed}")
        encoders = {}
        for method, recipe in methods.items():
            cfg = _pretrain_config(block, method, recipe, seed, quick)
            t0 = time.perf_counter()
            try:
                run_pretrain(cfg, runs=folder, progress=progress)
            except SslEcgError as exc:
                out["failed"].setdefault(method, f"{type(exc).__name__}: {' '.join(str(exc).split())}")
                continue
            out["pretrain_seconds"].setdefault(method, []).append(time.perf_counter() - t0)
            encoders[method] = str(folder / method)
        t0 = time.perf_counter()
        result = run_evaluation(_curve_config(block, encoders, seed, quick), runs=folder, progress=progress)
        out["curve_seconds"].append(time.perf_counter() - t0)
        out["splits"].append({"seed": seed, "curve": result["curve"], "predictions": result["predictions"],
                              "out": result["out"], "split_hash": result["split_hash"],
                              "allow_flags": result.get("allow_flags")})
    return out


def run_report(results: str | os.PathLike = "experiments/results", runs: str | os.PathLike = "runs/results",
               out: str | os.PathLike = "RESULTS.md", full: bool = False, quick: bool = False, n_boot: int = 1000,
               seed: int = 0, progress: bool = False, only: list[str] | None = None) -> dict:
    """Run every block (resumable) and write ``out`` (RESULTS.md) with its figures in ``<out stem>_figures/``.

    Args:
        results: the folder of block recipes.
        runs: where pretraining runs and curves go (``runs/<block>/split<seed>/...``).
        out: the Markdown file to write.
        full: also the ``full`` tier and each block's ``full_methods``.
        quick: a smoke test (first method, first split seed, :data:`QUICK_PRETRAIN`, :data:`QUICK_CURVE`).
        n_boot, seed: bootstrap replicates and their seed.
        only: run only the blocks of these names.

    Returns:
        ``{"blocks": [...], "out": Path, "wall_seconds": float}``.
    """
    from ssl_ecg.evaluate.curve import summarize_runs

    if not 1 <= n_boot <= 100_000:
        raise ConfigError(f"n_boot={n_boot}: expected 1 to 100000 bootstrap replicates")
    t0 = time.perf_counter()
    blocks = load_blocks(results, full=full, only=only)
    out = Path(out)
    figures = out.with_name(out.stem + "_figures")
    done = []
    for block in blocks:
        result = run_block(block, runs, full=full, quick=quick, progress=progress)
        result["summary"] = summarize_runs([(s["curve"], s["predictions"]) for s in result["splits"]],
                                           n_boot=n_boot, seed=seed)
        done.append(result)
    wall = time.perf_counter() - t0
    text = render_results(done, figures, wall_seconds=wall, quick=quick, full=full, n_boot=n_boot, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return {"blocks": done, "out": out, "wall_seconds": wall}


# ---------------------------------------------------------------------------------------------------------------
# RESULTS.md


def _fmt(cell: dict | None) -> str:
    if not cell or cell.get("mean") is None or not np.isfinite(cell.get("mean", np.nan)):
        return "–"
    low, high = cell.get("ci_low"), cell.get("ci_high")
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and np.isfinite(low) else ""
    return f"{cell['mean']:.3f}{interval}"


def _pct(fraction: str | float) -> str:
    return f"{float(fraction) * 100:g}%"


def _table(lines: dict) -> list[str]:
    fractions = sorted({f for cells in lines.values() for f in cells}, key=float)
    rows = ["| arm | " + " | ".join(_pct(f) for f in fractions) + " |",
            "|---|" + "---|" * len(fractions)]
    for arm, cells in lines.items():
        rows.append(f"| {arm} | " + " | ".join(_fmt(cells.get(f)) for f in fractions) + " |")
    real = {f: sorted({round(c[f]["real_fraction"], 3) for c in lines.values() if f in c and
                       c[f].get("real_fraction") is not None}) for f in fractions}
    if any(real.values()):
        rows.append("| *real fraction* | " + " | ".join(
            ", ".join(f"{v * 100:.0f}%" for v in real[f]) or "–" for f in fractions) + " |")
    return rows


def _figures(summary: dict, figures: Path, block: str) -> list[str]:
    """The block's figures from the combined summary (all splits): curves with interval bands, paired
    differences, labels needed."""
    from ssl_ecg.evaluate.plots import plot_curve, plot_differences, plot_labels_needed

    figures.mkdir(parents=True, exist_ok=True)
    made = [plot_curve(summary["summary"], figures / f"{block}_curve.png"),
            plot_differences(summary["comparisons"], figures / f"{block}_differences.png")]
    if summary.get("labels_needed"):
        made.append(plot_labels_needed(summary["labels_needed"], figures / f"{block}_labels_needed.png"))
    return [Path(p).name for p in made]


def render_results(done: list[dict], figures: Path, wall_seconds: float, quick: bool, full: bool, n_boot: int,
                   seed: int) -> str:
    """The Markdown of RESULTS.md from :func:`run_block` results with their ``summary``."""
    from ssl_ecg.evaluate.curve import environment

    env = environment()
    mode = "a smoke test on tiny settings: NOT results" if quick else ("the full grid" if full else "the core grid")
    lines = ["# Results", "",
             f"Written by `ssl-ecg report{' --quick' if quick else ''}{' --full' if full else ''}` "
             f"({mode}); wall time {wall_seconds / 60:.1f} min on {env['cpu_count']} CPU core(s) "
             f"({env['cuda_device'] if env['cuda_device'] != 'none' else 'no GPU'}), commit "
             f"`{env['git_commit'][:12] or 'unknown'}`, torch {env['torch_version']}.", "",
             "Every number is a test-set estimate with a 95% interval from a hierarchical bootstrap "
             f"({n_boot} replicates, seed {seed}): split seeds, label draws and test patients are resampled, "
             "so the interval covers the finite test set, the label draw and the pretraining run, not only seeds. "
             "Comparisons are paired (the same split, draw and patients in every replicate) and Holm-corrected "
             "within each task. Nothing was chosen on test data: probes choose C on validation patients, the "
             "supervised arm its learning rate, batch size and epoch on validation AUROC.", ""]
    for result in done:
        block: ReportBlock = result["block"]
        summary = result["summary"]
        lines += [f"## {block.title or block.name}", ""]
        seeds = [s["seed"] for s in result["splits"]]
        lines.append(f"Split seeds {seeds}; recipes: `{Path(block.source).name}` "
                     f"(curve `{block.curve}`). Pretraining wall time per method (mean over splits): " + ", ".join(
                         f"{m} {np.mean(v) / 60:.1f} min" for m, v in result["pretrain_seconds"].items())
                     + f"; curves {np.sum(result['curve_seconds']) / 60:.1f} min in all.")
        if block.chosen_on_validation:
            lines += ["", f"Chosen on validation: {block.chosen_on_validation}"]
        flags = sorted({s["allow_flags"] for s in result["splits"] if s.get("allow_flags")})
        if flags:
            lines += ["", *[f"**NOTE** {f}" for f in flags]]
        skipped = {**block.not_applicable, **result["failed"]}
        if not full:
            skipped.update({m: "in `--full` only" for m in block.full_methods})
        if skipped:
            lines += ["", "Not in this table:", *[f"- **{m}**: {why}" for m, why in skipped.items()]]
        for task, lines_of_task in summary["summary"].items():
            lines += ["", f"### {task}", ""]
            lines += _table(lines_of_task)
            lines += _task_extras(summary, task)
        names = _figures(summary, figures, block.name)
        if names:
            lines += ["", *[f"![{n}]({figures.name}/{n})" for n in names]]
        lines.append("")
    return "\n".join(lines) + "\n"


def _needed_text(point: float | None, boot: dict | None) -> str:
    shown = "not reached" if point is None else _pct(point)
    if not boot or not boot.get("n"):
        return shown
    low = "never" if boot["low"] is None else _pct(boot["low"])
    high = "never" if boot["high"] is None else _pct(boot["high"])
    return f"{shown} [{low}, {high}] (never in {boot['never'] * 100:.0f}% of replicates)"


def headline(summary: dict, task: str, low_fraction: float = 0.1) -> list[str]:
    """The question users ask first, per encoder line: does its probe at 10% of the labels match the same
    architecture trained supervised on 100%? One line each, from the paired comparison (Holm-adjusted)."""
    out = []
    for c in summary["comparisons"].get(task, []):
        a, b = c["a"], c["b"]
        if b[0] != "supervised" or float(b[1]) != 1.0 or float(a[1]) == 1.0:
            continue
        if c["ci_low"] > 0:
            answer = "yes, and it is better"
        elif c["ci_high"] < 0:
            answer = "no, it is worse"
        else:
            answer = "not distinguishable at this test-set size (the interval holds 0)"
        out.append(f"- **{a[0]} at {_pct(a[1])} vs supervised at 100%**: {c['estimate']:+.3f} "
                   f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], Holm p={c['p_holm']:.2g}: {answer}.")
    return out


def _task_extras(summary: dict, task: str) -> list[str]:
    """The headline question, AULC, labels needed and the paired verdicts of one task."""
    out: list[str] = []
    head = headline(summary, task)
    if head:
        low = next(float(c["a"][1]) for c in summary["comparisons"][task] if float(c["a"][1]) != float(c["b"][1]))
        out += ["", f"Does the pretrained probe at {_pct(low)} of the labels match supervised training on 100%?",
                "", *head]
    aulc = summary.get("aulc", {}).get(task) or {}
    if aulc:
        out += ["", "Area under the curve on the log-fraction axis (AULC, AUROC scale): " + "; ".join(
            f"{line} {_fmt({'mean': e['estimate'], 'ci_low': e['ci_low'], 'ci_high': e['ci_high']})}"
            for line, e in aulc.items())]
    for key in ("labels_needed", "labels_needed_vs_supervised"):
        needed = summary.get(key, {}).get(task)
        if needed and needed["fractions"]:
            parts = [f"{line} {_needed_text(point, needed['bootstrap'].get(line))}"
                     for line, point in needed["fractions"].items()]
            out += ["", f"Labels needed to match {needed['reference']} ({needed['target']:.3f}): " + "; ".join(parts)]
    verdicts = [c["verdict"] for c in summary["comparisons"].get(task, [])]
    if verdicts:
        out += ["", "<details><summary>All paired comparisons (Holm-corrected within this task)</summary>", "",
                *[f"- {v}" for v in verdicts], "", "</details>"]
    return out
