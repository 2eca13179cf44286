"""``ssl-ecg report``: run (or resume) the results grid and write ``RESULTS.md``.

The grid is a folder of *blocks* (``experiments/results/*.yaml``, :class:`ReportBlock`): one dataset, the
pretraining recipe of each method, one curve recipe, the split seeds. For every split seed a block pretrains each
method on that split's pool (:func:`~ssl_ecg.pretrain.run.run_pretrain`, which reuses a finished run of the same
fingerprint), then evaluates all of them together with random init, supervised training and any reference arm
the curve recipe asks for (:func:`~ssl_ecg.evaluate.runner.run_evaluation`, which reuses every curve cell whose
fingerprint matches). So the report resumes where it stopped, and a changed recipe recomputes exactly what it
changes.

The curves of all split seeds are then combined by :func:`~ssl_ecg.evaluate.curve.summarize_runs`: estimates and
95% intervals from a bootstrap of label draws and test patients (one multiplicity per patient across splits) with
the between-split variance added (method of moments, widened for its few degrees of freedom), paired comparisons
Holm-corrected within pre-specified families, the area under each curve and the labels each arm needs. Nothing
here looks at test data to choose anything: every setting is in the recipes, chosen on validation patients where a
recipe says so.

Splits: a block whose recipes draw a patient split from shares gets a new split per seed (``split_seed``); a
block on an official split (PTB-XL's folds) keeps it and varies the pretraining seed instead, so its interval
still covers pretraining runs and label draws. Both seeds are set to the split seed in either case.

Kinds of block (``kind``; the methods are pretrained the same way in each, the evaluation recipe differs):

- ``curve``: the label-efficiency curve (:class:`~ssl_ecg.evaluate.runner.EvalConfig`), as above;
- ``transfer``: a curve whose methods pretrain on a *pool* of datasets mapped to one rate and lead set
  (``dataset: [{dataset, root, dataset_options}, ...]``) and whose curve is on another dataset. The encoders'
  split then holds none of the curve's patients, so the runner draws the curve's split from its shares and the
  split seed; the pools (records and patients per member, overlap between members by patient key and signal
  fingerprint) and the runner's overlap checks against the curve's test patients go into RESULTS.md;
- ``reduced_leads``: the curve at the CinC 2021 lead sets
  (:func:`~ssl_ecg.evaluate.reduced_leads.run_reduced_leads`), a table per task and fraction (arms x lead
  sets, hierarchical-bootstrap intervals per lead set) and the AUROC-vs-leads plot;
- ``fewshot``: N-way K-shot episodes (:func:`~ssl_ecg.evaluate.runner.run_fewshot_recipe`) with the block's
  encoders and a random-init arm, a table per K and scoring method with patient-bootstrap intervals.

Datasets that the locator cannot find by name (the CinC 2021 and CPSC 2018 samples) are named in
``data_folders``: their folder under ``$SSL_ECG_DATA`` fills ``root`` where a recipe leaves it null.
"""

from __future__ import annotations

import json
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
           "QUICK_CURVE", "QUICK_LEAD_SETS", "QUICK_FEWSHOT", "BLOCK_KINDS", "describe_pool"]

QUICK_PRETRAIN: dict[str, Any] = {"epochs": 1, "max_steps": 2, "batch_size": 16, "early_stopping_patience": None}
"""``--quick``: pretraining overrides that make every run a smoke test (seconds, not minutes; two steps end
before any validation epoch, so no early stopping)."""

QUICK_CURVE: dict[str, Any] = {"fractions": [0.5, 1.0], "seeds": [0], "epochs": 1, "supervised_lrs": [0.001],
                               "supervised_batch_sizes": [16], "probes": ["logistic"]}
"""``--quick``: curve overrides (two fractions, one label draw, a one-epoch supervised arm)."""

QUICK_LEAD_SETS: list[int] = [12, 1]
"""``--quick``: the lead sets a ``reduced_leads`` block keeps (all leads and lead II)."""

QUICK_FEWSHOT: dict[str, Any] = {"shots": [1], "episodes": 5, "queries": 2, "head_steps": 5, "n_boot": 20,
                                 "max_items_per_patient_class": 2}
"""``--quick``: few-shot overrides (1-shot, five episodes, a five-step head)."""

BlockKind = Literal["curve", "transfer", "reduced_leads", "fewshot"]
#: Block kinds and what their evaluation recipe (``curve``) is.
BLOCK_KINDS: dict[str, str] = {"curve": "EvalConfig", "transfer": "EvalConfig", "reduced_leads": "ReducedLeadsConfig",
                               "fewshot": "FewShotConfig"}


@dataclass
class ReportBlock:
    """One block of the results grid (``experiments/results/<name>.yaml``).

    Attributes:
        name: the block's name (its section in RESULTS.md, its folder under the report's runs).
        title: a heading for RESULTS.md.
        tier: ``core`` (run by default) or ``full`` (only with ``--full``).
        kind: ``curve``, ``transfer``, ``reduced_leads`` or ``fewshot`` (see the module doc).
        methods: method name -> pretraining recipe (a path relative to the block file); the core grid's methods.
        full_methods: more methods, pretrained only with ``--full``.
        pretrain_overrides: ``key -> value`` applied to every pretraining recipe of the block.
        curve: the evaluation recipe, relative to the block file: an EvalConfig (kinds ``curve`` and
            ``transfer``), a ReducedLeadsConfig (``reduced_leads``) or a FewShotConfig (``fewshot``).
        curve_overrides: applied to the evaluation recipe (tasks, fractions, seeds, shots, ...).
        split_seeds: one pretraining + curve per seed (see the module doc).
        not_applicable: method -> why it is not in this block (printed in RESULTS.md).
        chosen_on_validation: what the recipes chose on validation patients, in words (printed in RESULTS.md).
        quick_tasks: the tasks ``--quick`` keeps (default: the first task; not for ``fewshot``).
        data_folders: dataset name -> its folder under ``$SSL_ECG_DATA``, filling ``root`` where a recipe (or a
            pool member) leaves it null (e.g. ``{cinc2021: cinc2021_sample}``).
        lead_set_methods: (``reduced_leads`` only) method -> pretraining recipe, pretrained once per lead set on
            that lead set's leads (run ``<method>_leads<label>``) and evaluated only there, as the arm
            ``<method>@leadset`` (the evaluation's ``lead_set_encoders``).
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
    kind: BlockKind = "curve"
    data_folders: dict[str, str] = field(default_factory=dict)
    lead_set_methods: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        bad = [s for s in self.split_seeds if not 0 <= s <= MAX_INT]
        if bad or len(set(self.split_seeds)) != len(self.split_seeds):
            raise ConfigError(f"block {self.name}: split_seeds={self.split_seeds}: expected distinct integers in "
                              f"[0, {MAX_INT}]")
        for method in self.methods.keys() & self.full_methods.keys():
            raise ConfigError(f"block {self.name}: method {method!r} is in both methods and full_methods")
        reserved = {"random_init", "supervised", "features"} & (self.methods.keys() | self.full_methods.keys()
                                                                | self.lead_set_methods.keys())
        if reserved:
            raise ConfigError(f"block {self.name}: {sorted(reserved)} are the curve's own arms, not methods")
        if self.lead_set_methods and self.kind != "reduced_leads":
            raise ConfigError(f"block {self.name}: lead_set_methods: pretraining per lead set is for kind "
                              f"'reduced_leads', not {self.kind!r}; remove lead_set_methods")

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
        for relative in [block.curve, *block.methods.values(), *block.full_methods.values(),
                         *block.lead_set_methods.values()]:
            if not block.path(relative).is_file():
                raise ConfigError(f"{path}: recipe {relative!r} not found (paths are relative to the block file)")
        _check_kind(block, path)
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


def _evaluation_class(kind: str) -> type:
    """The recipe class of a block kind's evaluation recipe (:data:`BLOCK_KINDS`)."""
    if kind == "fewshot":
        from ssl_ecg.evaluate.runner import FewShotConfig

        return FewShotConfig
    if kind == "reduced_leads":
        from ssl_ecg.evaluate.reduced_leads import ReducedLeadsConfig

        return ReducedLeadsConfig
    from ssl_ecg.evaluate.runner import EvalConfig

    return EvalConfig


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _check_kind(block: ReportBlock, path: Path) -> None:
    """Refuse a block whose recipes do not fit its kind (one-line :class:`ConfigError`, naming the block file).

    The evaluation recipe must load as the kind's class with the block's overrides; a ``transfer`` block's
    methods must pretrain on a pool and its curve on a dataset outside that pool; ``fewshot`` has no tasks.
    """
    from ssl_ecg.pretrain.run import PretrainConfig

    cls = _evaluation_class(block.kind)
    try:
        evaluation = load_recipe(cls, block.path(block.curve), dict(block.curve_overrides))
    except ConfigError as exc:
        raise ConfigError(f"{path}: kind {block.kind!r} takes a {cls.__name__} as its curve recipe "
                          f"({block.curve}): {_one_line(exc)}") from None
    if block.kind == "fewshot" and block.quick_tasks is not None:
        raise ConfigError(f"{path}: quick_tasks: a fewshot block has no tasks (its recipe's label or MIT-BIH "
                          "beat classes); remove quick_tasks")
    if block.kind != "transfer":
        return
    if not isinstance(evaluation.dataset, str):
        raise ConfigError(f"{path}: kind 'transfer': the curve recipe ({block.curve}) evaluates on a pool; expected "
                          "one dataset outside the pretraining pool (e.g. ludb)")
    for method, recipe in {**block.methods, **block.full_methods}.items():
        pre = load_recipe(PretrainConfig, block.path(recipe), dict(block.pretrain_overrides))
        if isinstance(pre.dataset, str):
            raise ConfigError(f"{path}: kind 'transfer': method {method!r} ({recipe}) pretrains on {pre.dataset!r}; "
                              "expected a pool (dataset: [{dataset, root, dataset_options}, ...])")
        members = [str(m.get("dataset", "")).lower() for m in pre.dataset]
        if evaluation.dataset.lower() in members:
            raise ConfigError(f"{path}: kind 'transfer': method {method!r} pretrains on {members}, which holds the "
                              f"curve's dataset {evaluation.dataset!r}; expected a curve on another dataset")


def _data_root(block: ReportBlock, dataset: str) -> str:
    """The folder of ``dataset`` under ``$SSL_ECG_DATA`` named by ``block.data_folders``."""
    from ssl_ecg.errors import DatasetError

    base = os.environ.get("SSL_ECG_DATA")
    if not base:
        raise DatasetError(f"block {block.name}: data_folders.{dataset} ({block.data_folders[dataset]!r}) is a folder "
                           "under $SSL_ECG_DATA, which is not set; set SSL_ECG_DATA to the folder holding it")
    return str(Path(base) / block.data_folders[dataset])


def _root_overrides(block: ReportBlock, recipe: Path, cls: type, overrides: dict) -> dict:
    """``root`` (or the pool with its members' roots) from ``data_folders`` where the recipe leaves it null."""
    if not block.data_folders:
        return {}
    cfg = load_recipe(cls, recipe, dict(overrides))
    if isinstance(cfg.dataset, str):
        return ({"root": _data_root(block, cfg.dataset)}
                if cfg.root is None and cfg.dataset in block.data_folders else {})
    pool = [{**m, "root": _data_root(block, m["dataset"])}
            if m.get("root") is None and m.get("dataset") in block.data_folders else dict(m) for m in cfg.dataset]
    return {"dataset": pool} if pool != list(cfg.dataset) else {}


def _pretrain_config(block: ReportBlock, method: str, recipe: str, seed: int, quick: bool):
    from ssl_ecg.pretrain.run import PretrainConfig

    overrides = {**block.pretrain_overrides, **(QUICK_PRETRAIN if quick else {}), "name": method,
                 "split_seed": seed, "seed": seed}
    overrides.update(_root_overrides(block, block.path(recipe), PretrainConfig, overrides))
    return load_recipe(PretrainConfig, block.path(recipe), overrides)


def _curve_config(block: ReportBlock, encoders: dict[str, str], seed: int, quick: bool):
    from ssl_ecg.evaluate.runner import EvalConfig

    overrides = {**block.curve_overrides, "name": "curve", "encoders": encoders, "split": None, "split_seed": seed}
    if quick:
        base = load_recipe(EvalConfig, block.path(block.curve), dict(block.curve_overrides))
        # the quick fractions the block has (a block of 100% only, e.g. sCL-ST's, keeps its own)
        fractions = [f for f in QUICK_CURVE["fractions"] if f in base.fractions] or list(base.fractions)[-1:]
        overrides.update(QUICK_CURVE, tasks=list(block.quick_tasks or base.tasks[:1]), fractions=fractions)
    overrides.update(_root_overrides(block, block.path(block.curve), EvalConfig, overrides))
    return load_recipe(EvalConfig, block.path(block.curve), overrides)


def _reduced_config(block: ReportBlock, encoders: dict[str, str], seed: int, quick: bool,
                    lead_set_encoders: dict[str, dict[str, str]] | None = None):
    from ssl_ecg.evaluate.reduced_leads import ReducedLeadsConfig

    overrides = {**block.curve_overrides, "name": "reduced_leads", "encoders": encoders, "split": None,
                 "split_seed": seed}
    if lead_set_encoders:  # only then: a block without lead_set_methods keeps its recipe's setting
        overrides["lead_set_encoders"] = lead_set_encoders
    if quick:
        base = load_recipe(ReducedLeadsConfig, block.path(block.curve), dict(block.curve_overrides))
        overrides.update(QUICK_CURVE, tasks=list(block.quick_tasks or base.tasks[:1]), lead_sets=QUICK_LEAD_SETS)
    overrides.update(_root_overrides(block, block.path(block.curve), ReducedLeadsConfig, overrides))
    return load_recipe(ReducedLeadsConfig, block.path(block.curve), overrides)


def _fewshot_config(block: ReportBlock, encoders: dict[str, str], seed: int, quick: bool):
    from ssl_ecg.evaluate.runner import FewShotConfig

    overrides = {**block.curve_overrides, "name": "fewshot", "encoder": None, "encoders": encoders,
                 "split_seed": seed, "seed": seed, **(QUICK_FEWSHOT if quick else {})}
    overrides.update(_root_overrides(block, block.path(block.curve), FewShotConfig, overrides))
    return load_recipe(FewShotConfig, block.path(block.curve), overrides)


def describe_pool(cfg: Any, run: str | os.PathLike) -> dict:
    """The pretraining pool of the run at ``run`` (pretrained with recipe ``cfg``): per member dataset its
    records and patients, and the overlap between members by patient key and by signal fingerprint.

    Records are those of the pool's patients (``encoder.json``'s provenance) in the recipe's prepared data, read
    from the record cache with the run's own ``split.json``.

    Returns:
        ``{"members": {dataset: {"records", "patients"}}, "pairs": [{"a", "b", "patients", "fingerprints"}],
        "records", "patients", "fingerprints", "repeated_fingerprints"}`` (the last: recordings held more than
        once in the pool).
    """
    from ssl_ecg.data.prepare import SPLIT_FILE, DataSpec, prepare
    from ssl_ecg.evaluate.provenance import read_provenance

    prov = read_provenance(run)
    if prov is None:
        raise ConfigError(f"{run}: the run has no provenance; cannot describe its pretraining pool")
    prepared = prepare(DataSpec.from_config(cfg), split=Path(run) / SPLIT_FILE)
    table = prepared.table
    table = table[table["patient_key"].astype(str).isin(set(map(str, prov["pool_patients"])))]
    members: dict[str, dict] = {}
    keys: dict[str, set] = {}
    prints: dict[str, set] = {}
    for name in prepared.spec.datasets:
        rows = table[table["dataset"].astype(str) == name]
        keys[name] = set(rows["patient_key"].astype(str))
        prints[name] = set(rows["fingerprint"].astype(str))
        members[name] = {"records": int(len(rows)), "patients": len(keys[name])}
    names = list(members)
    pairs = [{"a": a, "b": b, "patients": len(keys[a] & keys[b]), "fingerprints": len(prints[a] & prints[b])}
             for i, a in enumerate(names) for b in names[i + 1:]]
    fps = table["fingerprint"].astype(str)
    return {"members": members, "pairs": pairs, "records": int(len(table)),
            "patients": int(table["patient_key"].nunique()), "fingerprints": int(fps.nunique()),
            "repeated_fingerprints": int((fps.value_counts() > 1).sum()),
            "fs": float(prepared.spec.fs), "leads": [str(n) for n in prepared.cache.manifest["leads"]]}


def run_block(block: ReportBlock, runs: str | os.PathLike, full: bool = False, quick: bool = False,
              progress: bool = False) -> dict:
    """Pretrain and evaluate one block for each split seed (resuming what matches); returns what RESULTS.md needs.

    Every split's pretraining runs first. A method whose pretraining fails with a library error (e.g. a recipe
    that does not fit the data) in *any* split is left out of *every* split's evaluation, so the splits stay
    paired, and is listed in ``failed`` with the error and the split seeds it failed in; the grid goes on. The
    evaluation follows the block's ``kind`` (see the module doc); each split's entry holds what that kind renders.

    Times are those the stages recorded (:func:`_stage_seconds`), not this call's clock, so a reused stage
    keeps the time it took when it was computed: ``pretrain_seconds[method]`` (per split, ``pretrain.json``'s
    ``seconds``) and ``curve_seconds`` (per split, the evaluation's recorded wall time summed over the report's
    sittings).
    """
    from ssl_ecg.evaluate.runner import run_evaluation

    methods = {**block.methods, **(block.full_methods if full else {})}
    if quick:
        methods = dict(list(methods.items())[:1])
    seeds = block.split_seeds[:1] if quick else block.split_seeds
    out: dict[str, Any] = {"block": block, "splits": [], "failed": {}, "pretrain_seconds": {}, "curve_seconds": []}
    folders = {seed: run_folder(run_folder(runs, block.name), f"split{seed}") for seed in seeds}
    configs: dict[int, dict] = {seed: {} for seed in seeds}
    for seed in seeds:
        for method, recipe in methods.items():
            cfg = configs[seed][method] = _pretrain_config(block, method, recipe, seed, quick)
            _pretrain_recorded(cfg, method, seed, folders[seed], progress, out)
    lead_set_encoders = (_pretrain_lead_sets(block, seeds, folders, quick, progress, out)
                         if block.kind == "reduced_leads" else {})
    kept = [m for m in methods if m not in out["failed"]]  # the same encoders in every split: paired comparisons
    for seed in seeds:
        folder = folders[seed]
        encoders = {m: str(folder / m) for m in kept}
        if block.kind == "reduced_leads":
            entry = _run_reduced(block, encoders, seed, quick, folder, progress, lead_set_encoders.get(seed))
        elif block.kind == "fewshot":
            entry = _run_fewshot(block, encoders, seed, quick, folder, progress)
        else:
            cfg = _curve_config(block, encoders, seed, quick)
            result = run_evaluation(cfg, runs=folder, progress=progress)
            meta = json.loads((Path(result["out"]) / "curve.json").read_text())  # the runner's meta, at the top
            entry = {"seed": seed, "curve": _without(result["curve"], out["failed"]),
                     "predictions": result["predictions"], "out": result["out"], "split_hash": result["split_hash"],
                     "allow_flags": result.get("allow_flags"), "wall_seconds": meta.get("wall_seconds"),
                     "val_patients": validation_patients(cfg, Path(result["out"]) / "split.json")}
            if block.kind == "transfer":
                entry.update(_transfer_extras(result, meta, configs[seed], encoders))
        out["curve_seconds"].append(_stage_seconds(folder, "evaluation", entry.get("wall_seconds")))
        out["splits"].append(entry)
    return out


def _arms_lines(entry: dict) -> list[str]:
    """What each encoder arm is (input leads, probe feature size, pretraining budget), from the split's
    ``curve.json`` and the encoders' ``encoder.json``: arms of different sizes are compared as they are."""
    try:
        meta = json.loads((Path(entry["out"]) / "curve.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return []
    per_lead = meta.get("per_lead") or {}
    encoders = (meta.get("config") or {}).get("encoders") or {}
    records_of = {}
    for arm, folder in encoders.items():
        try:
            records_of[arm] = json.loads((Path(folder) / "encoder.json").read_text())
        except (OSError, ValueError, TypeError):
            continue
    # the data's lead count: a per-lead pool's instances per record, or a multi-lead encoder's input channels
    pretraining = {a: r.get("pretraining") or {} for a, r in records_of.items()}
    counts = [int(pretraining[a].get("instances") or 0) // max(int(pretraining[a].get("records") or 1), 1)
              for a in records_of if per_lead.get(a)]
    counts += [(r.get("encoder") or {}).get("in_channels") or 0 for a, r in records_of.items() if not per_lead.get(a)]
    most = max(counts, default=0)
    leads = most if most > 1 else None
    parts = []
    for arm, record in records_of.items():
        cfg, pre = record.get("encoder") or {}, pretraining[arm]
        dim, channels = cfg.get("embed_dim"), cfg.get("in_channels")
        if per_lead.get(arm):
            size = (f"{dim}-d per lead, probe features {dim * leads:,} ({leads} leads concatenated)" if leads and dim
                    else f"{dim}-d per lead, lead embeddings concatenated")
            what = f"{cfg.get('name', '?')} on 1 lead, {size}"
        else:
            what = f"{cfg.get('name', '?')} on {channels} leads, probe features {dim}"
        passes, seconds = pre.get("encoder_forward_passes"), pre.get("seconds")
        budget = (f", {int(passes):,} encoder passes in {float(seconds):.0f} s of pretraining"
                  if passes is not None and seconds is not None else "")
        parts.append(f"**{arm}**: {what}{budget}")
    if not parts:
        return []
    first = next(iter(records_of))
    supervised = bool((meta.get("config") or {}).get("supervised", True))
    refs = "**random_init** and **supervised** take" if supervised else "**random_init** takes"
    shared = (f" {refs} the {first} architecture"
              + ("" if supervised else " (no supervised arm in this block)") + ". "
              + ("Arms of different input leads or feature sizes are compared as they are, so a paired difference "
                 "between them mixes method and architecture." if len(records_of) > 1 else
                 f"So {first}'s comparisons with them are matched; only the hand-crafted features differ in input."))
    groups = meta.get("reference_groups") or {}  # matched references: one pair of references per architecture
    if len(groups) > 1:
        shared = " " + "; ".join(
            f"**random_init{suffix}** and **supervised{suffix}** take {arms[0]}'s "
            f"{'architecture ' if i == 0 else ''}({', '.join(arms)})"
            for i, (suffix, arms) in enumerate((s, a) for s, a in groups.items() if a)) + (
            ". Each method is compared with the references of its own architecture (matched references).")
    return ["", f"Arms (split seed {entry.get('seed')}): " + "; ".join(parts) + "." + shared]


def _without(curve: Any, failed: dict) -> Any:
    """``curve``'s rows less those of the ``failed`` methods (rows a earlier sitting may have left in a resumed
    curve), so that no split holds a line the others lack."""
    if not failed or curve is None or "arm" not in getattr(curve, "columns", ()):
        return curve
    return curve.loc[~curve["arm"].isin(list(failed))].reset_index(drop=True)


def _pretrain_seconds(summary: dict) -> float:
    """The pretraining time a run recorded (``pretrain.json``): the sum of its sittings' ``seconds`` where it
    lists them (``sittings``), else its ``wall_seconds``, else ``seconds`` (the fit's time)."""
    sittings = summary.get("sittings")
    if isinstance(sittings, list) and sittings:
        return float(sum(float(s.get("seconds", 0.0)) for s in sittings if isinstance(s, dict)))
    for key in ("wall_seconds", "seconds"):
        if summary.get(key) is not None:
            return float(summary[key])
    return float("nan")


SITTINGS_FILE = "report_sittings.json"
"""Per split folder: the wall time each sitting of the report's evaluation stage recorded (the runner's
``curve.json`` / ``reduced_leads.json`` / ``fewshot.json``), since a resumed stage overwrites its own record."""


def _stage_seconds(folder: Path, stage: str, recorded: float | None) -> float:
    """Append this sitting's ``recorded`` seconds of ``stage`` to ``folder``'s :data:`SITTINGS_FILE` and return the
    sum over every sitting, so a stage that this sitting mostly reused still counts the time it took to compute.
    A sitting killed before the stage wrote its record is not counted (nothing recorded it)."""
    path = folder / SITTINGS_FILE
    try:
        ledger = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        ledger = {}
    if not isinstance(ledger, dict):
        ledger = {}
    times = [float(s) for s in ledger.get(stage, []) if isinstance(s, (int, float))]
    if recorded is not None and np.isfinite(float(recorded)):
        times.append(float(recorded))
        ledger[stage] = times
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(ledger, indent=2))
        os.replace(tmp, path)
    return float(sum(times))


def validation_patients(cfg: Any, split: str | os.PathLike) -> dict[str, int]:
    """Per task of the curve recipe ``cfg``, the labelled validation patients of the split at ``split``: the
    patients whose labels chose the probe's C and the supervised arm's settings at every fraction (they are not
    counted in the fraction). Labels as the curve reads them (:func:`~ssl_ecg.evaluate.tasks.task_y`)."""
    from ssl_ecg.data.prepare import DataSpec, prepare
    from ssl_ecg.evaluate.challenge import challenge_year
    from ssl_ecg.evaluate.tasks import task_y

    prepared = prepare(DataSpec.from_config(cfg), split=split)
    table = prepared.table
    record_split = table["split"].astype(str).to_numpy()
    val = record_split == "val"
    year = challenge_year("+".join(prepared.spec.datasets))
    out = {}
    for task in cfg.tasks:
        if task not in table.columns:
            continue
        y, _ = task_y(table[task], record_split, task, {}, challenge_year=year)
        labelled = ~np.isnan(y if y.ndim == 1 else y[:, 0])
        out[task] = int(table.loc[val & labelled, "patient_key"].astype(str).nunique())
    return out


def _pretrain_recorded(cfg: Any, name: str, seed: int, folder: Path, progress: bool, out: dict) -> bool:
    """Pretrain ``cfg`` into ``folder`` (resuming what matches). A library error (e.g. a recipe that does not fit
    the data) is recorded in ``out["failed"][name]`` with the split seed instead of stopping the grid; the run's
    time goes to ``out["pretrain_seconds"][name]``. Returns whether the run finished."""
    from ssl_ecg.pretrain.run import run_pretrain

    try:
        summary = run_pretrain(cfg, runs=folder, progress=progress)
    except SslEcgError as exc:
        failed = out["failed"].setdefault(name, {"reason": f"{type(exc).__name__}: {_one_line(exc)}", "seeds": []})
        failed["seeds"].append(seed)
        return False
    out["pretrain_seconds"].setdefault(name, []).append(_pretrain_seconds(summary))
    return True


def _pretrain_lead_sets(block: ReportBlock, seeds: list[int], folders: dict[int, Path], quick: bool, progress: bool,
                        out: dict) -> dict[int, dict[str, dict[str, str]]]:
    """Pretrain each of ``block.lead_set_methods`` on each lead set of the block's reduced-leads recipe (after its
    overrides and ``--quick``), per split seed: run ``<method>_leads<label>``, the method's recipe with ``leads``
    set to the lead set's names in the data's channel order.

    Like the block's methods, a run failing with a library error in any split is listed in ``out["failed"]``
    (under its run name) and left out of every split; times go to ``out["pretrain_seconds"]``.

    Returns:
        split seed -> ``lead_set_encoders`` (``{label: {"<method>@leadset": run folder}}``).
    """
    from dataclasses import replace

    from ssl_ecg.evaluate.reduced_leads import LEAD_SETS, lead_sets_in_data_order

    methods = dict(list(block.lead_set_methods.items())[:1] if quick else block.lead_set_methods)
    done: dict[int, dict[str, dict[str, str]]] = {seed: {} for seed in seeds}
    if not methods:
        return done
    runs: dict[int, list[tuple[str, str, str]]] = {seed: [] for seed in seeds}
    for seed in seeds:
        cfg = _reduced_config(block, {}, seed, quick)
        sets = lead_sets_in_data_order(cfg.lead_sets, cfg.leads or LEAD_SETS[12])
        for method, recipe in methods.items():
            for label, names in sets.items():
                name = f"{method}_leads{label}"
                on_leads = replace(block, pretrain_overrides={**block.pretrain_overrides, "leads": names})
                if _pretrain_recorded(_pretrain_config(on_leads, name, recipe, seed, quick), name, seed,
                                      folders[seed], progress, out):
                    runs[seed].append((label, f"{method}@leadset", name))
    for seed in seeds:  # a lead set's run failing in one split is left out of every split: paired comparisons
        for label, arm, name in runs[seed]:
            if name not in out["failed"]:
                done[seed].setdefault(label, {})[arm] = str(folders[seed] / name)
    return done


def _run_reduced(block: ReportBlock, encoders: dict, seed: int, quick: bool, folder: Path, progress: bool,
                 lead_set_encoders: dict[str, dict[str, str]] | None = None) -> dict:
    """One split of a ``reduced_leads`` block: each lead set's curve rows and prediction folders; the encoders
    pretrained on each lead set (``lead_set_encoders``, :func:`_pretrain_lead_sets`) are evaluated at theirs."""
    from ssl_ecg.evaluate.curve import PREDICTIONS
    from ssl_ecg.evaluate.reduced_leads import run_reduced_leads
    from ssl_ecg.evaluate.runner import FEATURE_ARM

    cfg = _reduced_config(block, encoders, seed, quick, lead_set_encoders)
    result = run_reduced_leads(cfg, runs=folder, progress=progress)
    dirs = {label: [result["out"] / f"leads_{label}" / PREDICTIONS]
            + ([result["out"] / f"leads_{label}" / FEATURE_ARM / PREDICTIONS] if cfg.feature_arm else [])
            for label in result["curves"]}
    return {"seed": seed, "table": result["table"], "curves": result["curves"], "predictions": dirs,
            "lead_sets": result["lead_sets"], "per_lead": result["per_lead"], "out": result["out"],
            "lead_set_encoders": dict(lead_set_encoders or {}),
            "split_hash": result["split_hash"], "split_source": result["split_source"],
            "allow_flags": _allow_flags(cfg, result["provenance"]), "wall_seconds": result.get("wall_seconds")}


def _run_fewshot(block: ReportBlock, encoders: dict, seed: int, quick: bool, folder: Path, progress: bool) -> dict:
    """One split seed of a ``fewshot`` block: ``results[arm][f"{K}-shot"][method]`` and the episode setting."""
    from ssl_ecg.evaluate.runner import run_fewshot_recipe

    cfg = _fewshot_config(block, encoders, seed, quick)
    result = run_fewshot_recipe(cfg, runs=folder, progress=progress)
    return {"seed": seed, "results": result["results"], "out": result["out"], "split_hash": result["split_hash"],
            "allow_flags": result.get("allow_flags"), "scoring": result.get("scoring", {}),
            "patients_rule": result["patients_rule"], "head_patients": result["head_patients"],
            "episode_patients": result["episode_patients"], "items": result["items"],
            "setting": {k: getattr(cfg, k) for k in ("ways", "shots", "queries", "episodes", "head", "n_boot")},
            "wall_seconds": _fewshot_seconds(Path(result["out"]))}


def _fewshot_seconds(out: Path) -> float | None:
    """The few-shot run's recorded time: the sum of ``fewshot.json``'s ``seconds_per_arm``."""
    try:
        seconds = json.loads((out / "fewshot.json").read_text()).get("seconds_per_arm") or {}
    except (OSError, ValueError):
        return None
    return float(sum(float(s) for s in seconds.values())) if seconds else None


def _allow_flags(cfg: Any, provenance: dict) -> str | None:
    from ssl_ecg.evaluate.provenance import allow_flags_line

    return allow_flags_line({"allow_overlap": cfg.allow_overlap, "provenance": provenance,
                             "allow_unknown_provenance": cfg.allow_unknown_provenance})


def _transfer_extras(result: dict, meta: dict, configs: dict, encoders: dict) -> dict:
    """A ``transfer`` split's pools (:func:`describe_pool`) and the runner's checks against the curve's data
    (``meta``: its ``curve.json``)."""
    return {"pools": {m: describe_pool(configs[m], encoders[m]) for m in encoders},
            "provenance": result["provenance"], "split_source": meta.get("split_source"),
            "split_sizes": meta.get("split_sizes"), "records": meta.get("records")}


def run_report(results: str | os.PathLike = "experiments/results", runs: str | os.PathLike = "runs/results",
               out: str | os.PathLike = "RESULTS.md", full: bool = False, quick: bool = False, n_boot: int = 4000,
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
        try:
            if block.kind == "reduced_leads":  # one summary per lead set, over the split seeds
                labels = list(dict.fromkeys(label for s in result["splits"] for label in s["curves"]))
                result["summary"] = {label: summarize_runs([(s["curves"][label], s["predictions"][label])
                                                            for s in result["splits"] if label in s["curves"]],
                                                           n_boot=n_boot, seed=seed) for label in labels}
            elif block.kind == "fewshot":  # intervals come with the results (patient bootstrap per split seed)
                result["summary"] = None
            else:
                result["summary"] = summarize_runs([(s["curve"], s["predictions"]) for s in result["splits"]],
                                                   n_boot=n_boot, seed=seed)
        except SslEcgError as exc:  # e.g. a test set too small to bootstrap: the block says so, the rest renders
            result["summary"], result["summary_error"] = None, f"{type(exc).__name__}: {_one_line(exc)}"
        done.append(result)
    wall = time.perf_counter() - t0
    text = render_results(done, figures, wall_seconds=wall, quick=quick, full=full, n_boot=n_boot, seed=seed,
                          only=only)
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


#: Per-cell flags of :func:`~ssl_ecg.evaluate.curve.summarize_runs` (when it sets them): the mark in a table
#: cell and the footnote under the table.
CELL_FLAGS: dict[str, tuple[str, str]] = {
    "few_positives": ("†", "few patients on a class's smaller side of the test set: the AUROC is unstable and its "
                           "interval can under-cover (a replicate that loses every patient of a class is redrawn, "
                           "so the interval is conditional on the class being present)"),
    "degenerate": ("‡", "degenerate: a perfect score with the interval [1, 1] (every replicate scored 1)"),
}


def _flagged(cell: dict | None, key: str) -> bool:
    value = (cell or {}).get(key)
    return bool(value) and not (isinstance(value, float) and not np.isfinite(value))


def _table(lines: dict, val_patients: list[int] | None = None, n_splits: int | None = None) -> list[str]:
    """One task's table: arms x fractions with the estimate and its interval, cells marked by
    :data:`CELL_FLAGS` (and cells present in fewer than ``n_splits`` splits), then the real fraction of the
    training patients and the labelled validation patients (per split) that chose each cell's settings."""
    fractions = sorted({f for cells in lines.values() for f in cells}, key=float)
    rows = ["| arm | " + " | ".join(_pct(f) for f in fractions) + " |",
            "|---|" + "---|" * len(fractions)]
    used: dict[str, dict[str, list[str]]] = {}  # flag -> its detail -> the cells it marks
    short: list[str] = []
    n_cells = 0
    for arm, cells in lines.items():
        shown = []
        for f in fractions:
            cell = cells.get(f)
            n_cells += cell is not None
            marks = ""
            for key, (mark, _) in CELL_FLAGS.items():
                if _flagged(cell, key):
                    marks += mark
                    value = cell[key]
                    if key == "few_positives" and cell.get("class_patients") is not None:
                        n = int(cell["class_patients"])
                        value = f"{n} patient{'' if n == 1 else 's'} on a class's smaller side"
                    detail = "" if isinstance(value, bool) else str(value)
                    used.setdefault(key, {}).setdefault(detail, []).append(f"{arm} at {_pct(f)}")
            if cell and n_splits and cell.get("n_splits") is not None and int(cell["n_splits"]) < n_splits:
                marks += "§"
                short.append(f"{arm} at {_pct(f)} ({cell['n_splits']} of {n_splits})")
            shown.append(_fmt(cell) + marks)
        rows.append(f"| {arm} | " + " | ".join(shown) + " |")
    real = {f: sorted({round(c[f]["real_fraction"], 3) for c in lines.values() if f in c and
                       c[f].get("real_fraction") is not None}) for f in fractions}
    if any(real.values()):
        rows.append("| *real fraction* | " + " | ".join(
            ", ".join(f"{v * 100:.0f}%" for v in real[f]) or "–" for f in fractions) + " |")
    if val_patients:
        per_split = ", ".join(str(n) for n in val_patients)
        rows.append("| *labelled validation patients used for selection (per split)* | "
                    + " | ".join(per_split for _ in fractions) + " |")
    notes = [f"{CELL_FLAGS[key][0]} {CELL_FLAGS[key][1]}: {_flag_cells(groups, n_cells)}."
             for key, groups in used.items()]
    if short:
        notes.append(f"§ not in every split (its interval covers fewer splits): {'; '.join(short)}.")
    return rows + (["", *notes] if notes else [])


def _flag_cells(groups: dict[str, list[str]], n_cells: int) -> str:
    """The cells a flag marks, grouped by its detail: ``"every cell (9 patients ...)"`` when it marks them all
    for one reason, else ``"a at 1%, b at 5% (9 patients ...); c at 1% (3 patients ...)"``."""
    if len(groups) == 1 and len(next(iter(groups.values()))) == n_cells:
        detail = next(iter(groups))
        return "every cell" + (f" ({detail})" if detail else "")
    return "; ".join(", ".join(cells) + (f" ({detail})" if detail else "") for detail, cells in groups.items())


def _between_split_sd(lines: dict) -> list[str]:
    """The between-split SD of each cell (``sigma_between``, or ``between_split_sd``: the run-to-run spread of
    the split seeds' estimates), when the summary has it."""
    fractions = sorted({f for cells in lines.values() for f in cells}, key=float)

    def sd(cell: dict) -> Any:
        return cell.get("sigma_between", cell.get("between_split_sd"))

    sds = {arm: {f: sd(cells.get(f) or {}) for f in fractions} for arm, cells in lines.items()}
    if not any(v is not None for cells in sds.values() for v in cells.values()):
        return []

    def shown(v: Any) -> str:
        return "–" if v is None or not np.isfinite(float(v)) else f"{float(v):.3f}"

    return ["", "Between-split SD σ_b (method of moments: the spread of the split seeds' estimates beyond what the "
                "test bootstrap explains, truncated at 0; a 0 means the seeds differ no more than test-set noise, not "
                "that they agree, and then no run-to-run term widens the interval):", "",
            "| arm | " + " | ".join(_pct(f) for f in fractions) + " |", "|---|" + "---|" * len(fractions),
            *[f"| {arm} | " + " | ".join(shown(cells[f]) for f in fractions) + " |" for arm, cells in sds.items()]]


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


def _compute_seconds(done: list[dict]) -> float:
    """The stages' recorded compute time over every block: pretraining (each run's record) and evaluation
    (summed over the report's sittings)."""
    total = 0.0
    for result in done:
        total += sum(float(s) for v in result["pretrain_seconds"].values() for s in v if np.isfinite(float(s)))
        total += sum(float(s) for s in result["curve_seconds"] if np.isfinite(float(s)))
    return total


def _failed_line(method: str, failed: Any, seeds: list[int]) -> str:
    """A failed method's entry: the error and the split seeds it failed in (older results: the error only)."""
    if not isinstance(failed, dict):
        return f"- **{method}**: pretraining failed: {failed}"
    where = failed["seeds"]
    return (f"- **{method}**: pretraining failed in split seed{'s' if len(where) > 1 else ''} {where} of {seeds} "
            f"({failed['reason']}); left out of every split so that all comparisons stay paired")


def render_results(done: list[dict], figures: Path, wall_seconds: float, quick: bool, full: bool, n_boot: int,
                   seed: int, only: list[str] | None = None) -> str:
    """The Markdown of RESULTS.md from :func:`run_block` results with their ``summary``.

    ``only``: the blocks asked for by name (``--block``), written into the command line it shows.

    ``wall_seconds`` is this invocation's wall time; the stages' compute time comes from their records
    (:func:`run_block`), so a resumed report still shows what the reused stages cost.
    """
    from ssl_ecg.evaluate.curve import environment
    from ssl_ecg.evaluate.stats import MIN_CLASS_PATIENTS

    env = environment()
    mode = "a smoke test on tiny settings: NOT results" if quick else ("the full grid" if full else "the core grid")
    if only and not quick:
        mode = f"blocks {', '.join(b['block'].name for b in done)}" + (" with their full_methods" if full else "")
    named = "".join(f" --block {name}" for name in only or [])
    lines = ["# Results", "",
             f"Written by `ssl-ecg report{' --quick' if quick else ''}{' --full' if full else ''}{named}` "
             f"({mode}); compute time of the stages (from their records) {_compute_seconds(done) / 60:.1f} min, "
             f"this invocation's wall time {wall_seconds / 60:.1f} min, on {env['cpu_count']} CPU core(s) "
             f"({env['cuda_device'] if env['cuda_device'] != 'none' else 'no GPU'}), commit "
             f"`{env['git_commit'][:12] or 'unknown'}`, torch {env['torch_version']}.", "",
             "Unless a section says otherwise, every number is a test-set estimate with a 95% interval from a "
             "hierarchical bootstrap "
             f"({n_boot} replicates, seed {seed}): label draws and test patients are resampled (each patient once "
             "per replicate, in every split that holds it), and the variance between split seeds (each with its own "
             "pretraining run and random init, and its own patient split where the split is drawn; official folds "
             "keep one split, and there the label draws and the supervised and feature arms are the same in every "
             "seed) is added with a widening for its few degrees of freedom where the seeds' estimates differ more "
             "than the test bootstrap explains (σ_b > 0 in the between-split table). So the interval covers the "
             "finite test set and the label draw, and the pretraining run only where its variance shows. With 3 "
             "splits σ_b rests on 2 degrees of freedom (1 with 2 splits; a block with one split seed has no "
             "run-to-run term at all) and is 0 in many cells: when runs differ a lot, the "
             "interval can still be too narrow (README: Intervals). A multi-class or multi-label task's macro AUROC "
             f"averages, in each split, the classes with at least {MIN_CLASS_PATIENTS} test patients on each side "
             "(rarer classes are lost by a large share of bootstrap replicates; the rule was adopted after the "
             "first version of this report, from the test sets' class counts only, no arm's score, and applies to "
             "every arm alike), so it can differ from the curve's own mean over every class, and each split keeps "
             "its own classes; each such task says how many classes it kept. "
             "Comparisons are paired (the same split, draw and patients in every replicate) and corrected for "
             "multiple comparisons within each family (Holm, unless a family names another correction); a verdict "
             "says better or worse only where the adjusted p is below 0.05. Nothing was chosen on test data: "
             "probes choose C on validation patients, the supervised arm its learning rate, batch size and epoch "
             "on validation AUROC. Those selections read the labels of every labelled validation patient at every "
             "fraction, and these labels are **not** counted in the fraction: each table's last rows give the real "
             "fraction of training patients and the labelled validation patients used for selection, per split.",
             ""]
    for result in done:
        block: ReportBlock = result["block"]
        summary = result["summary"]
        lines += [f"## {block.title or block.name}", ""]
        seeds = [s["seed"] for s in result["splits"]]
        recipe = "curve" if block.kind in ("curve", "transfer") else f"{block.kind.replace('_', '-')} recipe"
        lines.append(f"Split seeds {seeds}; recipes: `{Path(block.source).name}` "
                     f"({recipe} `{block.curve}`). Pretraining time per method (each run's record, mean over "
                     "splits): " + (", ".join(f"{m} {np.mean(v) / 60:.1f} min"
                                              for m, v in result["pretrain_seconds"].items()) or "none")
                     + f"; evaluation {np.sum(result['curve_seconds']) / 60:.1f} min in all (its records, summed "
                     "over sittings).")
        if block.chosen_on_validation:
            lines += ["", f"Chosen on validation: {block.chosen_on_validation}"]
        if block.kind in ("curve", "transfer") and result["splits"]:
            lines += _arms_lines(result["splits"][0])
        flags = sorted({s["allow_flags"] for s in result["splits"] if s.get("allow_flags")})
        if flags:
            lines += ["", *[f"**NOTE** {f}" for f in flags]]
        skipped = [f"- **{m}**: {why}" for m, why in block.not_applicable.items() if m not in result["failed"]]
        skipped += [_failed_line(m, why, seeds) for m, why in result["failed"].items()]
        if not full:
            skipped += [f"- **{m}**: in `--full` only" for m in block.full_methods]
        if skipped:
            lines += ["", "Not in this table:", *skipped]
        if result.get("summary_error"):
            lines += ["", f"**No table**: its runs finished, but their summary failed ({result['summary_error']}). "
                      "No number of this block is reported.", ""]
            continue
        if block.kind == "reduced_leads":
            lines += _reduced_section(result, figures)
        elif block.kind == "fewshot":
            lines += _fewshot_section(result)
        else:
            if block.kind == "transfer":
                lines += _transfer_section(result)
            val = {}
            for split in result["splits"]:
                for task, n in (split.get("val_patients") or {}).items():
                    val.setdefault(task, []).append(n)
            lines += _curve_section(summary, figures, block.name, val, n_splits=len(result["splits"]))
        lines.append("")
    return "\n".join(lines) + "\n"


def _curve_section(summary: dict, figures: Path, name: str, val_patients: dict[str, list[int]] | None = None,
                   n_splits: int | None = None) -> list[str]:
    """A curve's tables per task (and per metric other than AUROC), the extras of each, and the figures."""
    lines: list[str] = []
    for task, lines_of_task in summary["summary"].items():
        lines += ["", f"### {task}", ""]
        lines += _table(lines_of_task, (val_patients or {}).get(task.split(" [")[0]), n_splits)
        lines += _between_split_sd(lines_of_task)
        lines += _metric_note(task, lines_of_task)
        lines += _task_extras(summary, task)
    names = _figures(summary, figures, name)
    if names:
        lines += ["", *[f"![{n}]({figures.name}/{n})" for n in names]]
    return lines


def _metric_note(task: str, lines_of_task: dict) -> list[str]:
    """What a challenge-score table shows and how its cells got their interval (only for ``[challenge]``)."""
    if "[challenge]" not in task:
        return []
    kinds = sorted({str(c.get("interval")) for cells in lines_of_task.values() for c in cells.values()
                    if c.get("interval")})
    return ["", "The PhysioNet/CinC Challenge score (the year's official weights; sinus rhythm for every record "
            "scores 0, the true labels 1) on the test records, with per-class thresholds tuned for F1 on the "
            "validation records. Its intervals are **t intervals over the split seeds' label draws**, not the "
            "bootstrap: the score is not a mean over patients, so the test set's variance is not covered"
            + (f" (cells: {'; '.join(kinds)})." if kinds else ".")]


def _needed_text(point: float | None, boot: dict | None) -> str:
    shown = "not reached" if point is None else _pct(point)
    if not boot or not boot.get("n"):
        return shown
    low = "never" if boot["low"] is None else _pct(boot["low"])
    high = "never" if boot["high"] is None else _pct(boot["high"])
    return f"{shown} [{low}, {high}] (never in {boot['never'] * 100:.0f}% of replicates)"


ALPHA = 0.05
"""The level of the headline's and the verdicts' test: better or worse where the adjusted p is below it."""


def _family(c: dict, task: str) -> str:
    """The name of a comparison's correction family: its ``family`` (a name, or a mapping with ``name``), else
    the task (the summaries that predate families correct over all of a task's comparisons)."""
    family = c.get("family")
    if isinstance(family, dict):
        family = family.get("name")
    return str(family) if family else f"all of {task}"


def _families(summary: dict, task: str) -> dict[str, dict]:
    """The comparison families of ``task`` in order of appearance: ``{name: {"comparisons", "size",
    "correction", "p_min"}}``. ``size`` is the family's own record (``family_size``, or ``size`` in a mapping
    ``family``), else the number of its comparisons with a p-value (those a Holm adjustment counts)."""
    comparisons = summary["comparisons"].get(task, [])
    default = str((summary.get("bootstrap") or {}).get("correction") or "Holm")
    out: dict[str, dict] = {}
    for c in comparisons:
        name = _family(c, task)
        entry = out.setdefault(name, {"comparisons": [], "size": None, "correction": None, "p_min": None,
                                      "p_holm_min": None})
        entry["comparisons"].append(c)
        family = c.get("family")
        size = c.get("family_size", family.get("size") if isinstance(family, dict) else None)
        if size is not None:
            entry["size"] = int(size)
        entry["correction"] = entry["correction"] or c.get("correction")
        entry["p_min"] = c.get("p_min", entry["p_min"])
        entry["p_holm_min"] = c.get("p_holm_min", entry["p_holm_min"])
    for entry in out.values():
        if entry["size"] is None:
            entry["size"] = sum(1 for c in entry["comparisons"] if c.get("p") is None or np.isfinite(float(c["p"])))
        entry["correction"] = _correction_name(str(entry["correction"] or default))
        if entry["p_min"] is None:
            entry["p_min"] = (summary.get("bootstrap") or {}).get("p_min")
    return out


def _correction_name(correction: str) -> str:
    """``Holm (statsmodels ...) within ...`` -> ``Holm``: the method's name for a verdict line."""
    return correction.split(" (")[0].split(" within")[0].strip() or "Holm"


def headline(summary: dict, task: str, low_fraction: float = 0.1) -> list[str]:
    """The question users ask first, per encoder line: does its probe at 10% of the labels match the same
    architecture trained supervised on 100%? One line each, decided by the comparison's adjusted p-value
    (``p_holm``, adjusted within its family): below :data:`ALPHA`, better or worse by the sign of the estimate;
    otherwise not distinguishable. Each line names the family, its size and its correction, so the answer never
    contradicts the printed correction."""
    out = []
    families = _families(summary, task)
    for c in summary["comparisons"].get(task, []):
        a, b = c["a"], c["b"]
        if b[0].split("@")[0] != "supervised" or float(b[1]) != 1.0 or float(a[1]) == 1.0:
            continue
        name = _family(c, task)
        family = families[name]
        how = family["correction"]
        p = c.get("p_holm")
        p = float("nan") if p is None else float(p)
        within = f"{how}-adjusted over the {family['size']} comparisons of family *{name}*"
        if np.isfinite(p) and p < ALPHA:
            answer = "yes, and it is better" if c["estimate"] > 0 else "no, it is worse"
            answer += f" ({within}, p < {ALPHA:g})"
        else:
            answer = f"not distinguishable ({within}, p ≥ {ALPHA:g})"
        shown = "n/a" if not np.isfinite(p) else f"{p:.2g}"
        out.append(f"- **{a[0]} at {_pct(a[1])} vs {b[0]} at 100%**: {c['estimate']:+.3f} "
                   f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] (unadjusted interval), {how} p={shown}: {answer}.")
    return out


def _task_extras(summary: dict, task: str) -> list[str]:
    """The headline question, AULC, labels needed, the bootstrap's redraws and the paired verdicts of one task,
    grouped by correction family."""
    out: list[str] = []
    failed = ((summary.get("bootstrap") or {}).get("failed") or {}).get(task)
    if failed:
        out += ["", f"**No patient bootstrap for this task** ({failed}): the intervals above are t intervals over "
                "label draws and splits, which do not cover the test set, and no comparison is made."]
    head = headline(summary, task)
    if head:
        low = next(float(c["a"][1]) for c in summary["comparisons"][task] if float(c["a"][1]) != float(c["b"][1]))
        matched = any("@" in c["b"][0] for c in summary["comparisons"][task])
        reals = [c.get(f"{low:g}", {}).get("real_fraction") for c in summary["summary"].get(task, {}).values()]
        real = max((r for r in reals if r is not None), default=None)
        shown = (f"{_pct(low)} (in fact {_pct(round(real, 2))} of the training patients)"
                 if real is not None and abs(real - low) >= 0.01 else _pct(low))
        out += ["", f"Does the pretrained probe at {shown} of the labels match "
                + ("its own architecture's supervised training" if matched else "supervised training")
                + " on 100%?",
                "", *head]
    aulc = summary.get("aulc", {}).get(task) or {}
    if aulc:
        scale = "challenge-score scale" if "[challenge]" in task else "AUROC scale"
        out += ["", f"Area under the curve on the log-fraction axis (AULC, {scale}): " + "; ".join(
            f"{line} {_fmt({'mean': e['estimate'], 'ci_low': e['ci_low'], 'ci_high': e['ci_high']})}"
            for line, e in aulc.items())]
    for key in ("labels_needed", "labels_needed_vs_supervised"):
        needed = summary.get(key, {}).get(task)
        if needed and needed["fractions"]:
            own = needed.get("references") or {}  # matched references: lines measured against their group's
            parts = [f"{line} {_needed_text(point, needed['bootstrap'].get(line))}" + (
                f" (vs {own[line]['reference']}, {own[line]['target']:.3f})" if line in own else "")
                     for line, point in needed["fractions"].items()]
            out += ["", f"Labels needed to match {needed['reference']} ({needed['target']:.3f}): " + "; ".join(parts)]
    boot = summary.get("bootstrap") or {}
    redrawn = (boot.get("n_redrawn") or {}).get(task)
    if redrawn is not None and "[" not in task:  # a metric with t intervals has no bootstrap to redraw
        out += ["", f"Bootstrap replicates redrawn because a class was missing (n_redrawn): {int(redrawn)} "
                f"(of {boot.get('n_boot', '?')} kept)."]
    classes = (boot.get("classes") or {}).get(task)
    if classes and any(c["scored"] + c["dropped"] > 1 for c in classes):
        out += ["", f"Classes scored (at least {boot.get('min_class_patients', '?')} test patients on each side; "
                "the macro AUROC averages these, of the classes with a positive and a negative test patient): "
                + ", ".join(
                    f"{c['scored']} of {c['scored'] + c['dropped']}" for c in classes) + " in the splits, in order."]
    out += _delong_line(summary["summary"].get(task) or {})
    families = _families(summary, task)
    if families:
        out += ["", "<details><summary>All paired comparisons, by correction family</summary>"]
        for name, family in families.items():
            floor = ""
            if family["p_min"] is not None:
                floor = f"; the smallest p the bootstrap can give is {float(family['p_min']):.2g}"
            if family["p_holm_min"] is not None:
                floor += f", the smallest adjusted p {float(family['p_holm_min']):.2g}"
            out += ["", f"Family *{name}*: {family['size']} comparisons, {family['correction']}{floor}.", "",
                    *[f"- {c['verdict']}" for c in family["comparisons"]]]
        out += ["", "</details>"]
    return out


def _delong_line(lines_of_task: dict) -> list[str]:
    """For a binary task: each line's test-set standard error at 100% from the patient bootstrap beside DeLong's
    (the cross-check of :func:`~ssl_ecg.evaluate.stats.hierarchical_replicates`: one label draw, mean over draws
    and splits)."""
    pairs = [(line, cells["1"]) for line, cells in lines_of_task.items()
             if "1" in cells and cells["1"].get("delong_se") is not None and cells["1"].get("patient_se") is not None]
    if not pairs:
        return []
    return ["", "Cross-check of the test-set standard error of one draw's AUROC at 100% (mean over draws and "
            "splits), patient bootstrap / DeLong et al. 1988 (records as independent; they agree when each "
            "patient has one record): " + "; ".join(f"{line} {c['patient_se']:.3f} / {c['delong_se']:.3f}"
                                                  for line, c in pairs) + "."]


# ---------------------------------------------------------------------------------------------------------------
# The sections of the other kinds


def _reduced_section(result: dict, figures: Path) -> list[str]:
    """A ``reduced_leads`` block: per task and fraction a table of arms x lead sets (hierarchical-bootstrap
    estimates and intervals of each lead set over the split seeds), and the AUROC-vs-leads plot."""
    import pandas as pd

    from ssl_ecg.evaluate.reduced_leads import LEAD_SET_INPUT, REDUCED_COLUMNS, plot_reduced_leads

    splits, summaries = result["splits"], result["summary"]
    labels = list(summaries)
    sets = {label: names for s in splits for label, names in s["lead_sets"].items()}
    table = pd.concat([s["table"] for s in splits], ignore_index=True)
    inputs = dict(zip(table["arm"], table["arm_input"]))
    lines = ["", "Every lead set is scored on the same patients, split, fractions and label draws. Per-lead encoders "
             "embed only the available leads; multi-lead encoders get the missing leads zero-filled; the feature "
             "arm sees the available leads (the *input* column). Lead sets: " + "; ".join(
                 f"{label} = {' '.join(sets[label])}" for label in labels) + "."]
    own = [arm for arm, what in inputs.items() if str(what).startswith(LEAD_SET_INPUT)]
    if own:
        lines[-1] += (f" {', '.join(f'**{arm}**' for arm in own)}: the method pretrained on each lead set's own leads "
                      "(run `<method>_leads<lead set>`: same recipe, split and seed) and evaluated only there, the "
                      "option the zero-filled multi-lead encoders are compared with.")
    panels = list(dict.fromkeys(p for label in labels for p in summaries[label]["summary"]))
    for panel in panels:
        cells = {label: summaries[label]["summary"].get(panel, {}) for label in labels}
        arms = list(dict.fromkeys(a for c in cells.values() for a in c))
        fractions = sorted({f for c in cells.values() for line in c.values() for f in line}, key=float)
        for fraction in fractions:
            lines += ["", f"### {panel}, {_pct(fraction)} of the labels", "",
                      "| arm | " + " | ".join(_lead_label(lab) for lab in labels)
                      + " | input |", "|---|" + "---|" * (len(labels) + 1)]
            for arm in arms:
                lines.append(f"| {arm} | " + " | ".join(_fmt(cells[lab].get(arm, {}).get(fraction))
                                                        for lab in labels) + f" | {inputs.get(arm, '')} |")
        lines += _metric_note(panel, cells[labels[0]]) if labels else []
    # the plot: each (task, arm, lead set, fraction) averaged over the split seeds' means
    keys = [c for c in REDUCED_COLUMNS if c not in ("mean", "n_seeds")]
    mean = table.assign(lead_set=table["lead_set"].astype(str)).groupby(keys, sort=False, as_index=False).agg(
        mean=("mean", "mean"), n_seeds=("n_seeds", "sum"))
    # each point's band: its hierarchical-bootstrap interval (the tables' intervals), where it has one
    interval = {(panel, arm, str(label), float(frac)): cell
                for label in labels for panel, arms_of in summaries[label]["summary"].items()
                for arm, cells in arms_of.items() for frac, cell in cells.items()}
    found = [interval.get((t, a, str(ls), float(f))) for t, a, ls, f in
             zip(mean["task"], mean["arm"], mean["lead_set"], mean["fraction"])]
    # the line is the bootstrap estimate where the band is its interval, so a point never leaves its own band
    mean = mean.assign(mean=[c["estimate"] if c else m for c, m in zip(found, mean["mean"])],
                       ci_low=[c["ci_low"] if c else np.nan for c in found],
                       ci_high=[c["ci_high"] if c else np.nan for c in found])
    figures.mkdir(parents=True, exist_ok=True)
    name = f"{result['block'].name}_reduced_leads.png"
    plot_reduced_leads(mean[[*REDUCED_COLUMNS, "ci_low", "ci_high"]], figures / name)
    return lines + ["", f"![{name}]({figures.name}/{name})"]


def _lead_label(label: str) -> str:
    """A lead set's column heading: ``12 leads``, ``1 lead``, or the lead names of a custom set."""
    if not label.isdigit():
        return label
    return f"{label} lead{'' if label == '1' else 's'}"


def _interval(value: Any) -> str:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or value[0] is None:
        return "–"
    est, low, high = (float(v) for v in value)
    return f"{est:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(low) else f"{est:.3f}"


def _fewshot_section(result: dict) -> list[str]:
    """A ``fewshot`` block: per split seed, K and scoring method, accuracy and macro F1 of every arm with the
    patient-bootstrap interval over the query patients."""
    lines: list[str] = []
    for split in result["splits"]:
        st = split["setting"]
        lines += ["", f"Pretraining seed {split['seed']}: {st['ways']}-way episodes ({st['episodes']} per K, "
                  f"{st['queries']} queries per class; {split['patients_rule']}: {split['head_patients']} head and "
                  f"{split['episode_patients']} episode patients, {split['items']} items). Intervals: 95% "
                  f"percentile, patient bootstrap over the query patients ({st['n_boot']} replicates); every arm "
                  "sees the same episodes, and every episode patient was checked against each encoder's "
                  "pretraining pool (patient key and signal fingerprint)."]
        results = split["results"]
        arms = list(results)
        shots = list(dict.fromkeys(k for arm in arms for k in results[arm]))
        for k in shots:
            methods = list(dict.fromkeys(m for arm in arms for m in results[arm].get(k, {}) if m != "fingerprint"))
            for method in methods:
                how = split["scoring"].get(method, "")
                lines += ["", f"### {k}, {method}" + (f" ({how})" if how else ""), "",
                          "| arm | accuracy | macro F1 | query patients |", "|---|---|---|---|"]
                for arm in arms:
                    cell = results[arm].get(k, {}).get(method) or {}
                    lines.append(f"| {arm} | {_interval(cell.get('accuracy'))} | {_interval(cell.get('macro_f1'))} "
                                 f"| {cell.get('n_patients', '–')} |")
    return lines


def _transfer_section(result: dict) -> list[str]:
    """A ``transfer`` block: each method's pretraining pool (members, records, patients, overlap between members
    by patient key and signal fingerprint), where the curve's split came from, and the runner's overlap checks of
    the curve's test patients against each pool."""
    lines = ["", "### Pretraining pools and their overlap", ""]
    for split in result["splits"]:
        lines.append(f"Split seed {split['seed']}: the curve's split: {split.get('split_source')} "
                     f"({split.get('split_sizes')} patients, {split.get('records')} records).")
        for method, pool in split.get("pools", {}).items():
            members = ", ".join(f"{name} {m['records']} records / {m['patients']} patients"
                                for name, m in pool["members"].items())
            pairs = "; ".join(f"{p['a']} & {p['b']}: {p['patients']} patient keys, {p['fingerprints']} fingerprints"
                              for p in pool["pairs"]) or "one member"
            check = (split.get("provenance") or {}).get(method, {}).get("overlap") or {}
            tested = (f"{check.get('by_patient', '–')} by patient key and {check.get('by_fingerprint', '–')} by "
                      f"signal fingerprint of {check.get('evaluated_patients', '–')} test patients"
                      if check else "not checked")
            lines += [f"- **{method}** pool at {pool['fs']:g} Hz, {len(pool['leads'])} leads: {members} "
                      f"({pool['records']} records, {pool['patients']} patients, {pool['repeated_fingerprints']} "
                      f"recordings held twice). Shared between members: {pairs}. Overlap with the curve's test "
                      f"patients (checked by the runner): {tested}."]
        lines.append("")
    return lines[:-1]
