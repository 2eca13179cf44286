"""The demo: two recipes run in sequence, through the same entry points users run.

1. A pretraining recipe (``experiments/demo_pretrain.yaml``, a :class:`~ssl_ecg.pretrain.PretrainConfig`):
   CMSC on LUDB via :func:`~ssl_ecg.pretrain.run_pretrain`. Pretraining sees only the train+val patients of
   its seeded patient split and writes that split (``split.json``) and its pool (``encoder.json`` provenance).
2. A curve recipe (``experiments/demo_curve.yaml``, an :class:`~ssl_ecg.evaluate.runner.EvalConfig`): the
   label-efficiency curve of that encoder, a random-init arm and a supervised arm via
   :func:`~ssl_ecg.evaluate.runner.run_evaluation`, on the encoder's own split (``split: null``), so no test
   patient was pretrained on (checked from the provenance).

``ssl-ecg demo`` therefore gives the same ``curve.csv`` as ``ssl-ecg pretrain experiments/demo_pretrain.yaml``
followed by ``ssl-ecg curve experiments/demo_curve.yaml``. ``experiments/demo.yaml`` names the two recipe files;
without a recipe the built-in copies below (:data:`DEMO_PRETRAIN`, :data:`DEMO_CURVE`, the same settings as the
bundled files, which a test keeps in sync) are used, so ``ssl-ecg demo`` also works outside a checkout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ssl_ecg.data.download import PHYSIONET, download, locate_dataset, user_data_dir
from ssl_ecg.errors import ConfigError, DatasetError
from ssl_ecg.evaluate.runner import EvalConfig, run_evaluation
from ssl_ecg.paths import run_folder
from ssl_ecg.pretrain import PretrainConfig, run_pretrain
from ssl_ecg.recipe import load_recipe, load_yaml

__all__ = ["DEMO_PRETRAIN", "DEMO_CURVE", "DemoRecipes", "load_demo", "run_demo", "format_table"]

#: The built-in pretraining recipe (the values of ``experiments/demo_pretrain.yaml``).
DEMO_PRETRAIN: dict[str, Any] = {
    "name": "demo_pretrain", "dataset": "ludb", "method": "cmsc", "fs": 100.0, "segment_len": 5.0, "n_segments": 2,
    "positives": "patient_lead", "temperature": 0.1, "embed_dim": 128, "lr": 0.001,
    "batch_size": 192,  # (record, lead) instances per step: 16 records x 12 leads
    "epochs": 40, "seed": 0, "pool": "train+val", "split": [0.6, 0.2, 0.2], "split_seed": 0, "cache_dir": "cache",
}
#: The built-in curve recipe (the values of ``experiments/demo_curve.yaml``).
DEMO_CURVE: dict[str, Any] = {
    "name": "demo_curve", "dataset": "ludb", "fs": 100.0, "window": 5.0, "encoders": {"cmsc": "runs/demo_pretrain"},
    "random_init": True, "supervised": True, "tasks": ["lvh", "lad"], "fractions": [0.05, 0.1, 0.25, 0.5, 1.0],
    "seeds": [0, 1, 2, 3, 4], "probes": ["logistic"], "split": None, "epochs": 60, "lr": 0.001,
    "supervised_lrs": [0.001, 0.0003], "supervised_batch_sizes": [16],
}
_STEPS = ("pretrain", "curve")


@dataclass(frozen=True)
class DemoRecipes:
    """The demo's two recipes."""

    pretrain: PretrainConfig
    curve: EvalConfig


def _split_overrides(overrides: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{"pretrain.epochs": 2, "curve.seeds": [0, 1]}`` -> ``{"pretrain": {"epochs": 2}, "curve": {...}}``."""
    out: dict[str, dict[str, Any]] = {step: {} for step in _STEPS}
    for key, value in (overrides or {}).items():
        step, dot, field = str(key).partition(".")
        if not dot or step not in out or not field:
            raise ConfigError(f"overrides: {key}={value!r}: expected pretrain.KEY=VALUE or curve.KEY=VALUE "
                              "(the demo runs two recipes; e.g. pretrain.epochs=10 curve.seeds=[0,1])")
        out[step][field] = value
    return out


def _recipe_files(path: str | os.PathLike) -> dict[str, Path]:
    """The two recipe files a demo file names (relative paths are taken from the demo file's folder)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: demo recipe not found")
    try:
        names = load_yaml(path.read_text())
    except Exception as exc:  # yaml.YAMLError, UnicodeDecodeError: one line naming the file
        raise ConfigError(f"{path}: expected a YAML mapping {{pretrain: FILE, curve: FILE}} "
                          f"({' '.join(str(exc).split())})") from None
    if not isinstance(names, dict) or set(names) != set(_STEPS) or \
            not all(isinstance(v, str) and v for v in names.values()):
        raise ConfigError(f"{path}: expected exactly the keys pretrain and curve, each a recipe file name "
                          f"(e.g. pretrain: demo_pretrain.yaml), got {names!r}")
    return {step: path.parent / names[step] for step in _STEPS}


def load_demo(recipe: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> DemoRecipes:
    """The demo's two recipes, from a demo file (or the built-in copies) plus prefixed overrides.

    Args:
        recipe: a YAML file ``{pretrain: FILE, curve: FILE}`` naming a pretraining recipe (PretrainConfig)
            and a curve recipe (EvalConfig), relative to its own folder (``experiments/demo.yaml``);
            ``None``: :data:`DEMO_PRETRAIN` and :data:`DEMO_CURVE`.
        overrides: ``{"pretrain.KEY": value, "curve.KEY": value}`` (from
            :func:`ssl_ecg.recipe.parse_overrides`), applied to that recipe.

    Returns:
        The checked recipes.

    Raises:
        ConfigError: the demo file is missing or malformed, an override lacks the ``pretrain.``/``curve.``
            prefix, or a recipe value is invalid (the message names the file or ``overrides`` and the key).
    """
    per_step = _split_overrides(overrides)
    if recipe is None:
        pre = load_recipe(PretrainConfig, None, per_step["pretrain"], defaults=DEMO_PRETRAIN)
        curve = load_recipe(EvalConfig, None, per_step["curve"], defaults=DEMO_CURVE)
    else:
        files = _recipe_files(recipe)
        pre = load_recipe(PretrainConfig, files["pretrain"], per_step["pretrain"])
        curve = load_recipe(EvalConfig, files["curve"], per_step["curve"])
    return DemoRecipes(pre, curve)


def _root(dataset: str, data: str | os.PathLike | None, progress: bool) -> Path:
    """``dataset``'s folder under ``data``, ``$SSL_ECG_DATA`` or the user cache, else downloaded into the cache."""
    found = locate_dataset(dataset, data)
    if found is not None:
        return found
    if dataset not in PHYSIONET:
        raise DatasetError(f"dataset {dataset!r} not found under --data ({data}), $SSL_ECG_DATA or {user_data_dir()}, "
                           f"and only {sorted(PHYSIONET)} can be downloaded; set root= or --data")
    if progress:
        print(f"{dataset} not found under --data, $SSL_ECG_DATA or {user_data_dir()}; downloading from PhysioNet")
    dest = download(dataset, user_data_dir())
    found = locate_dataset(dataset, dest)
    if found is None:
        raise DatasetError(f"{dest}: the {dataset} download finished but the folder does not hold {dataset}")
    return found


def _members(cfg: PretrainConfig | EvalConfig) -> list[dict]:
    """The recipe's datasets as ``{"dataset", "root"}`` mappings: one for a dataset name, each member of a pool."""
    if isinstance(cfg.dataset, str):
        return [{"dataset": cfg.dataset.strip().lower(), "root": cfg.root}]
    return [{**dict(m), "dataset": str(m["dataset"]).strip().lower()} for m in cfg.dataset]


def _rooted(cfg: PretrainConfig | EvalConfig, data: str | os.PathLike | None, progress: bool,
            roots: dict[str, str]) -> PretrainConfig | EvalConfig:
    """``cfg`` with a folder for every dataset (its ``root``, or each pool member's): the one given, the one
    already found (``roots``, updated), else :func:`_root`'s."""
    def folder(name: str, given: str | None) -> str:
        if given:
            return str(given)
        if name not in roots:
            roots[name] = str(_root(name, data, progress))
        return roots[name]

    if isinstance(cfg.dataset, str):
        return replace(cfg, root=folder(cfg.dataset.strip().lower(), cfg.root))
    pool = [{**dict(m), "root": folder(str(m["dataset"]).strip().lower(), m.get("root"))} for m in cfg.dataset]
    return replace(cfg, dataset=pool)


def _point_at_pretraining(curve: EvalConfig, pre: PretrainConfig, runs: str | os.PathLike) -> EvalConfig:
    """The curve recipe with its arm(s) naming the pretraining run (``runs/<pretrain name>``) set to this run."""
    folder = run_folder(runs, pre.name)
    ours = {Path("runs") / pre.name, Path(runs) / pre.name}
    encoders = {arm: str(folder) if Path(path) in ours else path for arm, path in curve.encoders.items()}
    if not any(Path(path) in ours for path in curve.encoders.values()):
        raise ConfigError(f"curve.encoders: {curve.encoders} names no arm for the pretraining run; expected one "
                          f"such as curve.encoders={{cmsc: runs/{pre.name}}} (the pretraining recipe's name)")
    return replace(curve, encoders=encoders)


def run_demo(recipes: DemoRecipes, data: str | os.PathLike | None = None, runs: str | os.PathLike = "runs",
             progress: bool = True) -> dict:
    """Run the pretraining recipe, then the curve recipe on its encoder.

    Data: a recipe without ``root`` reads its dataset from ``data``, then ``$SSL_ECG_DATA``, then the user cache
    (``~/.cache/ssl-ecg/data``), and otherwise downloads it there (a clear :class:`DatasetError` when offline).
    Re-running is safe: :func:`run_pretrain` reuses a finished run of the same fingerprint (and refuses a
    different one unless ``pretrain.overwrite=true``), and the curve recomputes every row whose fingerprint
    (encoder weights, settings, split) differs.

    Args:
        recipes: from :func:`load_demo`.
        data: a folder holding the dataset (or its parent).
        runs: the runs folder; the pretraining run goes to ``runs/<pretrain name>``, the curve to
            ``runs/<curve name>``, and the curve's arm naming ``runs/<pretrain name>`` is pointed there.
        progress: progress bars and the download note.

    Returns:
        :func:`run_evaluation`'s result (``summary``, ``out``, ``curve`` ...) plus ``pretrain``:
        :func:`run_pretrain`'s result.

    Raises:
        ConfigError: a bad run name (before anything is written) or a curve recipe without an arm for the
            pretraining run.
        DatasetError: the data is neither found nor downloadable.
    """
    pre, curve = recipes.pretrain, recipes.curve
    run_folder(runs, curve.name)  # bad names fail before any data is looked up or written
    curve = _point_at_pretraining(curve, pre, runs)
    roots: dict[str, str] = {}  # dataset name -> folder: the curve reads what pretraining read
    for cfg in (pre, curve):
        for m in _members(cfg):
            if m.get("root") and m["dataset"] not in roots:
                roots[m["dataset"]] = str(m["root"])
    pre, curve = _rooted(pre, data, progress, roots), _rooted(curve, data, progress, roots)
    pretrained = run_pretrain(pre, runs=runs, progress=progress)
    result = run_evaluation(curve, runs=runs, progress=progress)
    return {**result, "pretrain": pretrained}


def format_table(summary: dict) -> str:
    """Plain-text table: one row per task/arm, one column per fraction (estimate [95% interval]); the header
    names the interval's method (each cell's ``interval``, e.g. the hierarchical patient bootstrap)."""
    lines = []
    for task, arms in summary.items():
        fracs = sorted(next(iter(arms.values())), key=float)
        metric = "AUROC" if "[" not in task else task[task.index("[") + 1:-1] + " score"
        methods = sorted({c["interval"] for cells in arms.values() for c in cells.values() if "interval" in c})
        how = f"({'; '.join(methods)})" if methods else "over seeds"
        lines.append(f"{task}: test {metric}, mean [95% CI] {how}")
        lines.append(f"{'arm':<12}" + "".join(f"{float(f) * 100:>20.0f}%" for f in fracs))
        for arm, cells in arms.items():
            lines.append(f"{arm:<12}" + "".join(
                f"{cells[f]['mean']:>8.3f} [{cells[f]['ci_low']:.2f},{cells[f]['ci_high']:.2f}]" for f in fracs))
        lines.append("")
    return "\n".join(lines)
