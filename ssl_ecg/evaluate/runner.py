"""Recipe-driven evaluation: ``ssl-ecg probe``, ``ssl-ecg finetune``, ``ssl-ecg curve`` and ``ssl-ecg fewshot``."""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Literal, Union

import numpy as np
import pandas as pd
import torch
from annotated_types import Ge, MinLen
from pydantic import AfterValidator
from torch import nn

from ssl_ecg.checkpoint import load_encoder
from ssl_ecg.data.download import dataset_root
from ssl_ecg.data.prepare import DataSpec, prepare
from ssl_ecg.data.prepare import Split as PatientSplit
from ssl_ecg.data.preprocess import BadLeadPolicy
from ssl_ecg.data.splits import patient_split, record_level_ids
from ssl_ecg.errors import ConfigError, RecordError
from ssl_ecg.evaluate.challenge import challenge_year
from ssl_ecg.evaluate.curve import PREDICTIONS, CurveSpec, is_reference_arm, run_curve, write_outputs
from ssl_ecg.evaluate.embed import embed_records, state_dict_hash
from ssl_ecg.evaluate.features import HandcraftedFeatures
from ssl_ecg.evaluate.fewshot import SCORING, paired_differences, run_fewshot
from ssl_ecg.evaluate.provenance import (
    allow_flags_line,
    check_known,
    check_labels,
    check_overlap,
    check_preprocessing,
    path_source,
    pretraining_data,
    provenance_summary,
    read_provenance,
    resolve_split,
)
from ssl_ecg.models import build_encoder
from ssl_ecg.paths import run_folder
from ssl_ecg.recipe import (
    Fractions,
    Names,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    RunName,
    Seeds,
    Split,
    window_samples,
)
from ssl_ecg.utils import seeded, wandb_settings

__all__ = ["EvalConfig", "run_evaluation", "FewShotConfig", "run_fewshot_recipe", "check_encoder", "load_arms",
           "EvalSplit", "DEFAULT_SHARES", "EvalInputs", "evaluation_inputs", "curve_spec", "feature_arm_curve",
           "FEATURE_ARM", "eval_leads", "check_curve_recipe", "ReferenceGroup", "reference_groups",
           "add_matched_references", "check_encoder_pools"]

#: The split drawn when neither an encoder nor the recipe gives one.
DEFAULT_SHARES = [0.6, 0.2, 0.2]
#: Name of the hand-crafted feature arm (``feature_arm: true``), and of the folder its curve rows go to.
FEATURE_ARM = "features"


def _split_json(path: str) -> str:
    if not path.endswith(".json"):
        raise ValueError("a split file path must end in .json (a split.json written by a run)")
    return path


#: An evaluation's patient split: None (the encoders' own split, from their provenance), train/val/test shares,
#: "official" (the dataset's own split column) or the path of a ``split.json``.
EvalSplit = Union[Split, Annotated[str, AfterValidator(_split_json)], None]


@dataclass
class EvalConfig:
    """An evaluation recipe: encoders x tasks x label fractions x seeds x probes."""

    name: RunName = "eval"
    dataset: str | list[dict] = "ludb"  # a dataset name, or a pool of {dataset, root, dataset_options} mappings
    root: str | None = None  # default: found under $SSL_ECG_DATA
    dataset_options: dict = field(default_factory=dict)
    fs: PositiveFloat = 100.0
    leads: Names | None = None
    normalization: Literal["record", "lead", "none"] = "record"  # as the encoders' pretraining recipe
    bad_leads: BadLeadPolicy = "zero_lead"  # NaN or flat leads: "zero_lead", "drop_record" or "error"
    window: PositiveFloat = 5.0  # seconds per evaluation window: the encoders' input length
    per_lead: bool | None = None  # default: from each checkpoint (in_channels == 1: one lead at a time)
    encoders: dict[str, str] = field(default_factory=dict)  # arm name -> encoder checkpoint (.pt or run folder)
    random_init: bool = True  # add a random-init arm with the first checkpoint's architecture
    supervised: bool = True  # add the supervised-from-scratch arm
    tasks: Names = field(default_factory=lambda: ["lad"])
    fractions: Fractions = field(default_factory=lambda: [0.01, 0.05, 0.1, 0.25, 0.5, 1.0])
    seeds: Seeds = field(default_factory=lambda: [0, 1, 2, 3, 4])
    probes: Names = field(default_factory=lambda: ["logistic"])
    # None: the encoders' own split (from their provenance; without checkpoints: shares [0.6, 0.2, 0.2]);
    # or shares, "official" or a split.json path, checked against every encoder's pretraining pool
    split: EvalSplit = None
    split_seed: NonNegativeInt = 0  # seed of a split drawn from shares, and of the random-init arm
    cache_dir: str = "cache"  # the record cache pretraining uses (ssl_ecg.data.prepare)
    allow_overlap: bool = False  # evaluate even when test patients were pretrained on (transductive; recorded)
    allow_unknown_provenance: bool = False  # evaluate encoders without provenance (recorded)
    epochs: PositiveInt = 60  # supervised arm and fine-tuning
    lr: PositiveFloat = 1e-3
    encoder_lr_factor: Annotated[float, Ge(0)] = 0.1
    wandb: bool = False  # log the table and plots to wandb (offline unless WANDB_MODE=online)
    # supervised arm: lr x batch size chosen on validation AUROC; each epoch takes at least min_steps steps
    supervised_lrs: Annotated[list[PositiveFloat], MinLen(1)] = field(default_factory=lambda: [1e-3, 3e-4])
    supervised_batch_sizes: Annotated[list[PositiveInt], MinLen(1)] = field(default_factory=lambda: [16, 64])
    supervised_min_steps: PositiveInt = 10
    # per-lead encoders' probe features: lead embeddings concatenated (L*E) or mean-pooled (E, matched dimension)
    lead_features: Literal["concat", "mean"] = "concat"
    # add the hand-crafted feature arm "features" (ssl_ecg.evaluate.features: RR/HRV, intervals, per-lead
    # amplitudes at fs), scored by the frozen probes on whole records; its rows go to features/curve.csv
    feature_arm: bool = False
    # per encoder architecture (config and lead mode) other than the first arm's, add `random_init@<group>` and
    # `supervised@<group>` (group = its first arm), so each method is compared with its own architecture
    matched_references: bool = False


def check_encoder(encoder: nn.Module, per_lead: bool, n_leads: int, window: int, source: str = "encoder") -> None:
    """Raise :class:`ConfigError` (naming ``source``) unless the encoder fits the evaluation data."""
    cfg = getattr(encoder, "config", {}) or {}
    want = 1 if per_lead else n_leads
    if cfg.get("in_channels") not in (None, want):
        raise ConfigError(f"{source}: encoder takes {cfg['in_channels']} channel(s), but the evaluation gives {want} "
                          f"({'one lead at a time' if per_lead else f'{n_leads} leads'}); check leads= and per_lead=")
    if cfg.get("input_len") not in (None, window):
        raise ConfigError(f"{source}: encoder was built for {cfg['input_len']} samples, but the evaluation window is "
                          f"{window} samples; set window= (seconds) and fs= to match its pretraining")


def load_arms(paths: dict, per_lead: bool | None, n_leads: int, window: int, random_init: bool,
              seed: int = 0, where: str = "encoders") -> tuple[dict[str, nn.Module], dict[str, bool], dict]:
    """Load and check the checkpoints (errors name ``<where>.<arm> (<path>)``).

    Returns (arms, per-arm per_lead, the architecture config for the baselines:
    the first checkpoint's, else a per-lead CLOCS encoder). With ``per_lead``
    None each checkpoint's mode follows its config (1 input channel: per lead).
    """
    arms, modes, config = {}, {}, None
    for arm, path in paths.items():
        enc = load_encoder(path)
        mode = enc.config.get("in_channels") == 1 if per_lead is None else per_lead
        check_encoder(enc, mode, n_leads, window, source=f"{where}.{arm} ({path})")
        arms[arm], modes[arm] = enc, mode
        config = config or dict(enc.config)
    if config is None:
        mode = True if per_lead is None else per_lead
        config = {"name": "clocs", "in_channels": 1 if mode else n_leads, "input_len": window, "embed_dim": 128}
    base_mode = config["in_channels"] == 1 if per_lead is None else per_lead
    modes["supervised"] = base_mode
    if random_init:
        with seeded(seed):
            arms["random_init"] = build_encoder(config).eval()
        modes["random_init"] = base_mode
    if not arms:
        raise ConfigError("encoders: nothing to evaluate; give checkpoints or set random_init=true")
    return arms, modes, config


@dataclass(frozen=True)
class ReferenceGroup:
    """Encoder arms of one architecture (the same encoder config and lead mode) and the references they take.

    Attributes:
        name: the group's first arm (e.g. ``simclr``).
        suffix: ``""`` for the baseline architecture (the first arm's: plain ``random_init`` / ``supervised``),
            else ``"@<name>"`` (``random_init@simclr``, ``supervised@simclr``).
        config: the encoder config its reference arms are built from.
        per_lead: its lead mode (one lead at a time).
        arms: its encoder arms, in recipe order.
    """

    name: str
    suffix: str
    config: dict
    per_lead: bool
    arms: tuple[str, ...]


def reference_groups(arms: dict[str, nn.Module], modes: dict[str, bool]) -> list[ReferenceGroup]:
    """Group the encoder arms (not the reference arms) by architecture: their ``config`` dict and lead mode.

    The first group is the baseline (the first arm's architecture, suffix ``""``); the others are named after
    their first arm. Two arms share a group only when configs are equal key by key (canonical JSON).
    """
    keyed: dict[str, list[str]] = {}
    for arm, encoder in arms.items():
        if is_reference_arm(arm):
            continue
        config = dict(getattr(encoder, "config", None) or {})
        keyed.setdefault(json.dumps([config, bool(modes[arm])], sort_keys=True, default=str), []).append(arm)
    groups = []
    for i, members in enumerate(keyed.values()):
        first = arms[members[0]]
        groups.append(ReferenceGroup(members[0], "" if i == 0 else f"@{members[0]}", dict(first.config),
                                     bool(modes[members[0]]), tuple(members)))
    return groups


def add_matched_references(arms: dict[str, nn.Module], modes: dict[str, bool], random_init: bool,
                           seed: int = 0) -> tuple[dict[str, str], dict[str, dict]]:
    """Add ``random_init@<group>`` (frozen, built ``with seeded(seed)`` like ``random_init``, when
    ``random_init``) to ``arms`` and ``modes`` for every architecture group but the first (:func:`reference_groups`),
    and give ``modes`` the lead mode of ``supervised@<group>``.

    Returns:
        (arm -> reference group, ``""`` or ``"@<group>"``, for every encoder and reference arm;
        ``supervised@<group>`` -> its encoder config).

    Raises:
        ConfigError: an encoder arm already bears the name of a reference arm to add.
    """
    references = {arm: "" for arm in arms}
    supervised: dict[str, dict] = {}
    for group in reference_groups(arms, modes)[1:]:
        names = [f"random_init{group.suffix}"] if random_init else []
        clash = [n for n in names + [f"supervised{group.suffix}"] if n in arms]
        if clash:
            raise ConfigError(f"encoders.{clash[0]}: the name is taken by a matched reference arm "
                              "(matched_references: true); rename the encoder arm")
        references.update({arm: group.suffix for arm in group.arms})
        for name in names:
            with seeded(seed):
                arms[name] = build_encoder(group.config).eval()
            modes[name], references[name] = group.per_lead, group.suffix
        supervised[f"supervised{group.suffix}"] = group.config
        modes[f"supervised{group.suffix}"] = group.per_lead
        references[f"supervised{group.suffix}"] = group.suffix
    return references, supervised


def _data_spec(cfg, **changes):
    """The recipe's :class:`~ssl_ecg.data.prepare.DataSpec`; a null or file split becomes the default shares
    (the cache is keyed without the split, and a given split is attached by :func:`prepare`)."""
    split = cfg.split if isinstance(cfg.split, list) or cfg.split == "official" else list(DEFAULT_SHARES)
    return DataSpec.from_config(SimpleNamespace(**{**asdict(cfg), "split": split, **changes}))


def _provenances(paths: dict[str, str], allow_unknown: bool, sources: dict[str, str]) -> dict[str, dict | None]:
    """Each encoder's checked provenance; an encoder without one is refused unless ``allow_unknown``."""
    provs = {arm: read_provenance(path, sources[arm]) for arm, path in paths.items()}
    for arm, prov in provs.items():
        check_known(arm, prov, allow_unknown, sources[arm])
    return provs


def _check_arms(provs: dict, paths: dict, sources: dict, split, table: pd.DataFrame, allow_overlap: bool,
                evaluated=("test",), fractions=None) -> dict:
    """Overlap (and label-use) checks of every encoder; what the outputs record about each."""
    out = {}
    for arm, prov in provs.items():
        overlap = check_overlap(arm, prov, split, table, evaluated, allow_overlap, sources[arm])
        labels = (check_labels(arm, prov, split, fractions, allow_overlap, source=sources[arm])
                  if fractions is not None else None)
        out[arm] = {"path": str(paths[arm]), **provenance_summary(prov),
                    "overlap": overlap.to_dict() if overlap is not None else None, "labels": labels}
    return out


def _split_source(cfg, provs: dict) -> str:
    if cfg.split is None:
        return "encoders" if any(p is not None for p in provs.values()) else "default"
    return "file" if isinstance(cfg.split, str) and cfg.split != "official" else "recipe"


def _prepare(cfg, spec: DataSpec, split_arg, provs: dict, progress: bool):
    """:func:`prepare` with the resolved split, and where the split came from.

    An encoders' split that holds none of the prepared patients (encoders pretrained on another dataset) gives
    way to a split drawn from the recipe's shares and seed; every pool is still checked against it.
    """
    prepared = prepare(spec, split=split_arg, progress=progress)
    source = _split_source(cfg, provs)
    if source == "encoders" and not (prepared.table["split"] != "").any():
        prepared = prepare(spec, split=None, progress=progress)
        source = "drawn (the encoders' split holds none of these patients)"
    return prepared, source


def _eval_data(cfg, prepared, window: int):
    """The train/val/test records of ``prepared``, cut to the shortest one's length, and their table."""
    names = ("train", "val", "test")
    if not all(prepared.split.patients.get(n) for n in names):
        raise ConfigError(f"split: evaluation needs train, val and test patients; split {prepared.split.hash[:12]} "
                          f"has {sorted(prepared.split.patients)}")
    rows = np.asarray(prepared.rows(*names))
    data = "+".join(prepared.spec.datasets)
    if len(rows) == 0:
        raise ConfigError(f"split: none of the {len(prepared.table)} cached {data} records belongs to a patient of "
                          f"split {prepared.split.hash[:12]}; is it the split of another dataset?")
    lengths = prepared.table["length"].to_numpy(dtype=np.int64)[rows]
    short = rows[lengths < window]
    if len(short):
        ids = prepared.table["record_id"].iloc[short].astype(str).tolist()
        raise RecordError(f"{data}: records {ids[:5]} ({len(ids)} in all) are shorter than the evaluation "
                          f"window of {window} samples ({cfg.window:g} s at {cfg.fs:g} Hz)")
    signals = prepared.arrays(int(lengths.min()), rows)
    table = prepared.table.iloc[rows].reset_index(drop=True)
    table["patient_id"] = table["patient_key"].astype(str)  # (dataset, patient): ids of two datasets never merge
    return signals, table


@dataclass
class EvalInputs:
    """What an evaluation recipe resolves to before anything is fitted (see :func:`evaluation_inputs`).

    Attributes:
        window: samples per evaluation window.
        prepared: the prepared pool (cache, table, split).
        split: the patient split every arm was checked against; split_source: where it came from.
        signals, table: (R, L, T) train/val/test records and their table (``patient_id`` = patient key).
        checks: per encoder, its provenance summary and overlap/label checks.
        arms, per_lead, config: the loaded arms (plus ``random_init`` when asked), their lead mode, and the
            architecture config of the baselines.
        references: arm -> reference group (``""`` or ``"@<group>"``; empty without matched references);
        extra_supervised: ``supervised@<group>`` -> encoder config (matched references, :func:`add_matched_references`).
    """

    window: int
    prepared: Any
    split: PatientSplit
    split_source: str
    signals: np.ndarray
    table: pd.DataFrame
    checks: dict
    arms: dict
    per_lead: dict
    config: dict
    references: dict = field(default_factory=dict)
    extra_supervised: dict = field(default_factory=dict)

    @property
    def splits(self) -> dict[str, list]:
        """``{"train", "val", "test"}`` -> patient ids."""
        return {name: list(self.split.patients[name]) for name in ("train", "val", "test")}


def evaluation_inputs(cfg: EvalConfig, progress: bool = False) -> EvalInputs:
    """Resolve a recipe's encoders, split and data, with every provenance check of :func:`run_evaluation`
    (overlap of test patients with each pool, label use, preprocessing) done before anything is fitted.

    Export, quantisation, saliency and distillation read their data through this, so they obey the same checks.
    """
    window = window_samples(cfg.window, cfg.fs)
    sources = {arm: path_source(arm, path) for arm, path in cfg.encoders.items()}
    provs = _provenances(cfg.encoders, cfg.allow_unknown_provenance, sources)
    split_arg = resolve_split(provs, cfg.split, sources)
    prepared, split_source = _prepare(cfg, _data_spec(cfg), split_arg, provs, progress)
    signals, table = _eval_data(cfg, prepared, window)
    split = prepared.split
    checks = _check_arms(provs, cfg.encoders, sources, split, prepared.table, cfg.allow_overlap,
                         fractions=cfg.fractions)
    # the random-init arm is seeded by the split seed, so repeated splits also cover the variance over initialisations
    arms, per_lead, config = load_arms(cfg.encoders, cfg.per_lead, signals.shape[1], window, cfg.random_init,
                                       seed=cfg.split_seed)
    for arm, path in cfg.encoders.items():  # another normalisation/band warns; other leads in order refuse
        check_preprocessing(arm, pretraining_data(path), prepared.spec, per_lead[arm], sources[arm])
    references, extra_supervised = {}, {}
    if cfg.matched_references:  # same seed as random_init: each architecture's init drawn the same way
        references, extra_supervised = add_matched_references(arms, per_lead, cfg.random_init, seed=cfg.split_seed)
    return EvalInputs(window, prepared, split, split_source, signals, table, checks, arms, per_lead, config,
                      references, extra_supervised)


def check_encoder_pools(cfg: EvalConfig, inputs: EvalInputs, paths: dict[str, str],
                        sources: dict[str, str]) -> dict:
    """The provenance checks :func:`evaluation_inputs` runs on ``cfg.encoders``, for more encoders evaluated on
    ``inputs``' split (e.g. reduced leads' lead-set encoders): each is refused without provenance unless
    ``allow_unknown_provenance``, and for overlap of its pool (or label use) with the test patients unless
    ``allow_overlap``.

    Args:
        paths: arm -> checkpoint; sources: arm -> how messages name it.

    Returns:
        What the outputs record about each arm (as :attr:`EvalInputs.checks`).
    """
    provs = _provenances(paths, cfg.allow_unknown_provenance, sources)
    return _check_arms(provs, paths, sources, inputs.split, inputs.prepared.table, cfg.allow_overlap,
                       fractions=cfg.fractions)


def eval_leads(inputs: EvalInputs) -> list[str]:
    """The lead names of ``inputs``' signals, in channel order."""
    return [str(n) for n in inputs.prepared.cache.manifest["leads"]]


def check_curve_recipe(cfg: EvalConfig, inputs: EvalInputs) -> None:
    """Raise :class:`ConfigError` for tasks that are not columns of the data, an encoder arm named like a matched
    reference arm (``random_init@...``, ``supervised@...``), or like the feature arm while ``feature_arm`` is on."""
    name = "+".join(inputs.prepared.spec.datasets)
    missing = [t for t in cfg.tasks if t not in inputs.table.columns]
    if missing:
        raise ConfigError(f"tasks: {missing} are not columns of {name} (columns: {sorted(inputs.table.columns)})")
    taken = [arm for arm in cfg.encoders if is_reference_arm(arm) and "@" in arm]
    if taken:
        raise ConfigError(f"encoders.{taken[0]}: names of the form random_init@<group> / supervised@<group> are the "
                          "matched reference arms'; rename the encoder arm")
    if cfg.feature_arm and FEATURE_ARM in cfg.encoders:
        raise ConfigError(f"encoders.{FEATURE_ARM}: the name is taken by the feature arm (feature_arm: true); "
                          "rename the encoder arm")


def curve_spec(cfg: EvalConfig, inputs: EvalInputs) -> CurveSpec:
    """The :class:`CurveSpec` of ``cfg`` on ``inputs`` (the encoder arms and the supervised arm, and with
    ``matched_references`` each architecture group's ``supervised@<group>`` and every arm's reference group)."""
    prepared = inputs.prepared
    return CurveSpec(tasks=cfg.tasks, fractions=cfg.fractions, seeds=cfg.seeds, window=inputs.window,
                     per_lead=inputs.per_lead, supervised=inputs.config if cfg.supervised else None,
                     supervised_epochs=cfg.epochs, supervised_lr=cfg.lr, probes=cfg.probes,
                     encoder_lr_factor=cfg.encoder_lr_factor, supervised_lrs=cfg.supervised_lrs,
                     supervised_batch_sizes=cfg.supervised_batch_sizes,
                     supervised_min_steps=cfg.supervised_min_steps,
                     challenge_year=challenge_year("+".join(prepared.spec.datasets)),
                     split_hash=prepared.split.hash, lead_features=cfg.lead_features,
                     extra_supervised=dict(inputs.extra_supervised) if cfg.supervised else {},
                     references=dict(inputs.references))


def feature_arm_curve(signals: np.ndarray, table: pd.DataFrame, splits: dict, spec: CurveSpec, fs: float,
                      leads: list[str], out: Path, progress: bool = True) -> pd.DataFrame:
    """The hand-crafted feature arm's rows (:class:`~ssl_ecg.evaluate.features.HandcraftedFeatures`), in
    ``out/features/curve.csv``.

    The arm sees whole records (one window of the records' full length) rather than ``spec.window``: RR
    statistics need beats, and a 5 s window holds about five. Its own folder keeps ``curve.csv``'s resume
    keyed on one window length. It takes the frozen probes of ``spec`` (not ``finetune``: it has no weights),
    the same patients, fractions and seeds, and no supervised arm; its fingerprint covers the feature config
    (rate, leads, feature and neurokit2 versions).
    """
    probes = [p for p in spec.probes if p != "finetune"]
    if not probes:
        return pd.DataFrame()
    arm = HandcraftedFeatures(fs, leads)
    own = replace(spec, window=int(signals.shape[-1]), per_lead={FEATURE_ARM: False}, supervised=None, probes=probes,
                  extra_supervised={}, references={})
    return run_curve(signals, table, splits, {FEATURE_ARM: arm}, own, Path(out) / FEATURE_ARM, progress=progress)


def _check_folder_path(folder: Path) -> None:
    """Raise the OSError ``mkdir`` would (naming ``folder``) when an existing part of its path is a file."""
    for part in [folder, *folder.parents]:
        if part.exists():
            if not part.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
            return


def run_evaluation(cfg: EvalConfig, runs: str | Path = "runs", progress: bool = True) -> dict:
    """Run the grid of ``cfg``; writes ``curve.csv``, ``curve.json``, ``curve.png``, ``labels_needed.png`` and
    ``split.json`` under ``runs/<name>/``.

    The data come from the record cache pretraining uses (:func:`ssl_ecg.data.prepare.prepare`). The split is
    the encoders' own (``split: null``) or the recipe's; every encoder's provenance is checked against it
    (:mod:`ssl_ecg.evaluate.provenance`) before anything is computed. With ``feature_arm: true`` the
    hand-crafted feature arm is added (:func:`feature_arm_curve`: rows in ``features/curve.csv``, and in the
    summary and figures beside the encoder arms).

    Raises:
        LeakageError: a test patient was in an encoder's pretraining pool (by patient key or signal
            fingerprint), an encoder used labels the curve hides, or an encoder has no provenance, unless the
            recipe allows it (``allow_overlap`` / ``allow_unknown_provenance``).
        ConfigError: encoders with provenance were pretrained on different splits and ``split`` is null.
    """
    t0 = time.perf_counter()
    out = run_folder(runs, cfg.name)
    _check_folder_path(out)  # a file in the way fails first, naming the run folder
    inputs = evaluation_inputs(cfg, progress)  # every check (window, provenance, data) before anything is written
    out.mkdir(parents=True, exist_ok=True)
    check_curve_recipe(cfg, inputs)
    signals, table, splits, prepared = inputs.signals, inputs.table, inputs.splits, inputs.prepared
    split = inputs.split
    spec = curve_spec(cfg, inputs)
    split.save(out / "split.json")
    curve = run_curve(signals, table, splits, inputs.arms, spec, out, progress=progress)
    if cfg.feature_arm:
        curve = pd.concat([curve, feature_arm_curve(signals, table, splits, spec, cfg.fs, eval_leads(inputs), out,
                                                    progress)], ignore_index=True)
    roots = [str(m["root"] or dataset_root(m["dataset"], m["root"])) for m in prepared.spec.members]
    name = "+".join(prepared.spec.datasets)
    meta = {"config": asdict(cfg), "dataset_root": roots[0] if len(roots) == 1 else roots, "records": int(len(table)),
            "split_sizes": {k: len(v) for k, v in splits.items()}, "per_lead": inputs.per_lead,
            "record_level_patient_ids": record_level_ids(table, name),
            "split_hash": split.hash, "split_rule": split.rule, "split_source": inputs.split_source,
            "records_outside_split": int((prepared.table["split"] == "").sum()),
            "allow_overlap": cfg.allow_overlap, "allow_unknown_provenance": cfg.allow_unknown_provenance,
            "provenance": inputs.checks, "bad_leads": prepared.bad_leads,
            "wall_seconds": round(time.perf_counter() - t0, 1)}
    if inputs.references:  # which references each arm is compared with (report: "random_init@simclr takes ...")
        meta["reference_groups"] = {suffix: [a for a, s in inputs.references.items() if s == suffix
                                             and not is_reference_arm(a)]
                                    for suffix in dict.fromkeys(inputs.references.values())}
    if cfg.feature_arm:
        meta["feature_arm"] = {"rows": f"{FEATURE_ARM}/curve.csv", "window_samples": int(signals.shape[-1]),
                               "leads": eval_leads(inputs)}
    meta["allow_flags"] = allow_flags_line(meta)
    # every cell's test predictions, for the bootstrap: the encoder arms' and the feature arm's own folder
    predictions = [out / PREDICTIONS] + ([out / FEATURE_ARM / PREDICTIONS] if cfg.feature_arm else [])
    run = _wandb_run(cfg, out) if cfg.wandb else None
    try:
        summary = write_outputs(curve, out, meta, wandb_run=run, predictions=predictions)
    finally:
        if run is not None:
            run.finish()
    return {"summary": summary, "out": out, "curve": curve, "predictions": predictions,
            "record_level_patient_ids": meta["record_level_patient_ids"],
            **{k: meta[k] for k in ("split_hash", "provenance", "allow_overlap", "allow_unknown_provenance",
                                    "allow_flags", "bad_leads")}}


def _wandb_run(cfg, out: Path):
    import wandb

    return wandb.init(name=cfg.name, dir=str(out), config=asdict(cfg), reinit=True, **wandb_settings())


@dataclass
class FewShotConfig:
    """A few-shot recipe: N-way K-shot episodes on frozen embeddings with a Siamese head.

    Head and episode patients: MIT-BIH trains the head on DS1 and draws episodes from DS2 (de Chazal et al.
    2004). Other datasets draw episodes from the test patients of the split (the encoder's own split by
    default; its train and val patients train the head), or, with neither an encoder split nor a recipe split,
    from a seeded half of the patients. Episode patients must be outside every encoder's pretraining pool.

    Arms: ``encoder`` (one checkpoint, arm ``"encoder"``) and/or ``encoders`` (arm name -> checkpoint), plus a
    random-init arm (the first checkpoint's architecture; without one, a per-lead CLOCS encoder). Every arm is
    scored on the same episodes and the same episode-bootstrap replicates (episode patients resampled, episodes
    redrawn; ``n_boot`` replicates of ``boot_episodes`` episodes, default ``episodes``), so arms are paired.
    """

    name: RunName = "fewshot"
    dataset: str = "mitdb"  # mitdb: AAMI beat classes; other datasets: records labelled by `label`
    root: str | None = None
    dataset_options: dict = field(default_factory=dict)
    label: str | None = None  # label column (not for mitdb)
    fs: PositiveFloat = 360.0
    leads: Names | None = None  # mitdb: lead positions are kept; default lead 0 only (MLII in 45 of 48 records)
    normalization: Literal["record", "lead", "none"] = "record"  # as the encoder's pretraining recipe
    bad_leads: BadLeadPolicy = "zero_lead"  # NaN or flat leads: "zero_lead", "drop_record" or "error"
    window: PositiveFloat = 1.2  # seconds: beat window centred on the R peak (mitdb) or a record crop from the start
    encoder: str | None = None  # one checkpoint (arm "encoder"); see encoders
    encoders: dict[str, str] = field(default_factory=dict)  # arm name -> checkpoint (.pt or run folder)
    random_init: bool = True  # add a random-init arm (the first checkpoint's architecture, else per-lead CLOCS)
    ways: Annotated[int, Ge(2)] = 3
    shots: Annotated[list[PositiveInt], MinLen(1)] = field(default_factory=lambda: [1, 5, 10])
    queries: PositiveInt = 5
    episodes: PositiveInt = 200
    train_classes: list | None = None  # head classes (default all); the others are held out
    episode_classes: list | None = None  # default: every class with K+1 patients
    head: Literal["bce", "contrastive"] = "bce"  # or "contrastive" (margin loss from losses)
    head_steps: PositiveInt = 1000
    max_items_per_patient_class: PositiveInt = 20
    split: EvalSplit = None  # None: the encoder's own split; shares, "official" or a split.json path
    split_seed: NonNegativeInt = 0
    cache_dir: str = "cache"  # the record cache pretraining uses
    allow_overlap: bool = False  # run even when episode patients were pretrained on (recorded)
    allow_unknown_provenance: bool = False  # run an encoder without provenance (recorded)
    seed: NonNegativeInt = 0
    n_boot: PositiveInt = 1000  # episode-bootstrap replicates (episode patients resampled, episodes redrawn)
    boot_episodes: PositiveInt | None = None  # episodes per replicate (None: `episodes`; fewer is faster, wider)


def _fewshot_patients(cfg: FewShotConfig, prepared, split_given: bool) -> tuple[set, set, str]:
    """Head and episode patient keys, and the rule that chose them."""
    table = prepared.table
    keys = table["patient_key"].astype(str).to_numpy()
    if cfg.dataset == "mitdb":
        from ssl_ecg.data.mitdb import DS1, DS2, PACED

        rec = table["record_id"].astype(str).to_numpy()
        unpaced = ~np.isin(rec, PACED)
        head = set(keys[np.isin(rec, DS1) & unpaced])
        # 202 is patient 201 of DS1: a patient is in one pool only
        return head, set(keys[np.isin(rec, DS2) & unpaced]) - head, "mitdb DS1 head / DS2 episodes"
    if split_given:
        split = prepared.split
        if not split.patients.get("test"):
            raise ConfigError(f"split: few-shot episodes come from the test patients; split {split.hash[:12]} has "
                              f"{sorted(split.patients)}")
        episodes = set(map(str, split.patients["test"]))
        head = {str(p) for name, members in split.patients.items() if name != "test" for p in members}
        return head, episodes, f"episodes: test patients of split {split.hash[:12]}; head: the others"
    halves = patient_split(sorted(set(keys)), [0.5, 0.5], seed=cfg.split_seed, names=("head", "episodes"))
    return set(halves["head"]), set(halves["episodes"]), f"seeded halves of the patients (split_seed {cfg.split_seed})"


def _mitdb_items(cfg: FewShotConfig, prepared, patients_in: set, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Beat windows cut from the cached records around the annotated R peaks (scaled to the cache's rate)."""
    import wfdb

    from ssl_ecg.data.mitdb import AAMI_MAP, MITDB_FS

    fs = float(prepared.cache.fs)
    before = int(round(cfg.window / 2 * fs))
    after = int(round(cfg.window * fs)) - before
    where, labels, patients = [], [], []
    for i, row in enumerate(prepared.table.itertuples(index=False)):
        if str(row.patient_key) not in patients_in:
            continue
        try:
            ann = wfdb.rdann(str(row.path), "atr")
        except Exception as exc:
            raise RecordError(f"{row.path}.atr: cannot read annotations ({exc})") from exc
        sym, samp = np.asarray(ann.symbol), np.asarray(ann.sample)
        keep = np.isin(sym, list(AAMI_MAP))
        pos = np.round(samp[keep] * fs / float(ann.fs or MITDB_FS)).astype(np.int64)
        n = int(row.length)
        inside = (pos - before >= 0) & (pos + after <= n)
        where.extend((i, p) for p in pos[inside])
        labels.extend(AAMI_MAP[s] for s in sym[keep][inside])
        patients.extend([str(row.patient_key)] * int(inside.sum()))
    if not where:
        raise ConfigError(f"{cfg.dataset}: no annotated beats in the head or episode records")
    labels, patients = np.asarray(labels), np.asarray(patients)
    keep = _cap(labels, patients, cfg.max_items_per_patient_class, rng)
    x = np.stack([prepared.cache.segment(where[k][0], int(where[k][1]) - before, before + after) for k in keep])
    return x.astype(np.float32), labels[keep], patients[keep]


def _label_items(cfg: FewShotConfig, prepared, patients_in: set) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``window`` seconds of every labelled record of the head and episode patients."""
    table = prepared.table
    if not cfg.label:
        raise ConfigError(f"label: set the label column for few-shot episodes on {cfg.dataset}")
    if cfg.label not in table.columns:
        raise ConfigError(f"label: {cfg.label!r} is not a column of {cfg.dataset} (columns: {sorted(table.columns)})")
    col = table[cfg.label]
    ok = ~(col.isna() | (col.astype(str).str.strip() == "")).to_numpy()
    ok &= table["patient_key"].astype(str).isin(patients_in).to_numpy()
    rows = np.flatnonzero(ok)
    x = prepared.arrays(int(round(cfg.window * cfg.fs)), rows)
    return x, col.astype(str).to_numpy()[rows], table["patient_key"].astype(str).to_numpy()[rows]


def _cap(labels, patients, cap, rng) -> np.ndarray:
    """At most ``cap`` random items per (patient, class), so no patient dominates a class."""
    keys = pd.factorize(pd.Series(patients) + "\x00" + pd.Series(labels))[0]
    order = rng.permutation(len(keys))
    rank = pd.Series(keys[order]).groupby(keys[order]).cumcount().to_numpy()
    return np.sort(order[rank < cap])


def run_fewshot_recipe(cfg: FewShotConfig, runs: str | Path = "runs", progress: bool = False) -> dict:
    """Embed the items with each (frozen) arm, then run every K in ``cfg.shots``; writes ``fewshot.json``,
    ``predictions.csv`` and ``split.json``.

    Items are read from the record cache pretraining uses. Every encoder's provenance is checked first: no
    episode patient may be in its pretraining pool (by patient key or signal fingerprint); an encoder pretrained
    on the head patients (e.g. MIT-BIH DS1) is fine. All arms see the same items, head patients and episodes.

    ``results[arm][f"{K}-shot"][method]`` holds ``accuracy`` and ``macro_f1`` as (estimate, low, high) with the
    episode-bootstrap interval (:func:`~ssl_ecg.evaluate.fewshot.episode_bootstrap`: the ``n_patients`` episode
    patients resampled, the episodes redrawn; the head, trained on the head patients, is not resampled), the
    query-patient bootstrap as ``*_query_patient_bootstrap`` and the t-intervals over episodes as
    ``*_t_over_episodes``; methods are :data:`~ssl_ecg.evaluate.fewshot.SCORING`. Every arm is scored on the
    same replicates, and ``paired_differences[f"{K}-shot"]`` holds each arm minus ``random_init``
    (:func:`~ssl_ecg.evaluate.fewshot.paired_differences`: interval, bootstrap p, Holm over that K's family).
    ``predictions.csv`` holds every query's prediction (arm, shots,
    method, episode, item, patient, true, predicted, correct).

    Raises:
        ConfigError: ``encoder`` and an ``encoders`` arm both named ``"encoder"``, or no arm at all.
        LeakageError: an episode patient was pretrained on, or an encoder has no provenance, unless allowed
            (``allow_overlap`` / ``allow_unknown_provenance``).
    """
    window_samples(cfg.window, cfg.fs)  # a window under one sample is a recipe error, before any data is read
    if cfg.encoder and "encoder" in cfg.encoders:
        raise ConfigError("encoder, encoders: both name an arm 'encoder'; give the checkpoint once")
    out = run_folder(runs, cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    paths = {**({"encoder": cfg.encoder} if cfg.encoder else {}), **cfg.encoders}
    sources = {arm: f"encoder ({p})" if arm == "encoder" and cfg.encoder else f"encoders.{arm} ({p})"
               for arm, p in paths.items()}
    provs = _provenances(paths, cfg.allow_unknown_provenance, sources)
    split_arg = resolve_split(provs, cfg.split, sources)
    leads = cfg.leads or (["#0"] if cfg.dataset == "mitdb" else None)
    prepared, split_source = _prepare(cfg, _data_spec(cfg, leads=leads), split_arg, provs, progress)
    split_given = split_source in ("encoders", "file", "recipe")
    head_p, episode_p, rule = _fewshot_patients(cfg, prepared, split_given)
    keys = prepared.table["patient_key"].astype(str)
    check_table = prepared.table.assign(split=np.where(keys.isin(episode_p), "episodes",
                                                       np.where(keys.isin(head_p), "head", "")))
    checks = _check_arms(provs, paths, sources, None, check_table, cfg.allow_overlap, evaluated=("episodes",))
    rng = np.random.default_rng(cfg.seed)
    if cfg.dataset == "mitdb":
        x, labels, patients = _mitdb_items(cfg, prepared, head_p | episode_p, rng)
    else:
        x, labels, patients = _label_items(cfg, prepared, head_p | episode_p)
    n_leads, window = x.shape[1], x.shape[2]
    # random init: the first checkpoint's architecture, else a per-lead CLOCS encoder of the window's length
    arms, modes, _ = load_arms(paths, None, n_leads, window, cfg.random_init, seed=cfg.seed)
    for arm, path in paths.items():
        check_preprocessing(arm, pretraining_data(path), prepared.spec, modes[arm], sources[arm])
    results, predictions, seconds, designs, by_shot = {}, [], {}, {}, {}
    for arm, encoder in arms.items():
        start = time.perf_counter()
        per_lead = modes[arm]
        feats = embed_records(encoder, torch.as_tensor(x), window, per_lead)
        results[arm] = {}
        for k in cfg.shots:
            res = run_fewshot(feats, labels, patients, head_p, episode_p, cfg.ways, k, cfg.queries, cfg.episodes,
                              train_classes=cfg.train_classes, episode_classes=cfg.episode_classes, mode=cfg.head,
                              head_steps=cfg.head_steps, seed=cfg.seed,
                              encoder_hash=f"{state_dict_hash(encoder)}|window={window}|per_lead={per_lead}",
                              split_hash=prepared.split.hash, inputs=x, n_boot=cfg.n_boot,
                              boot_episodes=cfg.boot_episodes, design=designs.get(k))
            designs[k] = res.design  # every arm is scored on the first arm's bootstrap replicates
            by_shot.setdefault(k, {})[arm] = res
            results[arm][f"{k}-shot"] = {**res.summary, "fingerprint": res.fingerprint}
            predictions.append(res.predictions.frame().assign(arm=arm, shots=k))
        seconds[arm] = round(time.perf_counter() - start, 1)
    paired = {f"{k}-shot": paired_differences(per_arm) for k, per_arm in by_shot.items()
              if "random_init" in per_arm and len(per_arm) > 1}
    counts = pd.crosstab(pd.Series(labels, name="class"), pd.Series(np.isin(patients, list(episode_p)),
                                                                      name="episode_pool"))
    prepared.split.save(out / "split.json")
    columns = ["arm", "shots", "method", "episode", "item", "patient", "true", "predicted", "correct"]
    pd.concat(predictions, ignore_index=True)[columns].to_csv(out / "predictions.csv", index=False)
    payload = {"config": asdict(cfg), "items": int(len(labels)), "head_patients": len(head_p),
               "episode_patients": len(episode_p), "patients_rule": rule, "items_per_class": counts.to_dict(),
               "split_hash": prepared.split.hash, "split_source": split_source, "allow_overlap": cfg.allow_overlap,
               "allow_unknown_provenance": cfg.allow_unknown_provenance, "provenance": checks,
               "bad_leads": prepared.bad_leads, "arms": list(arms), "scoring": dict(SCORING),
               "seconds_per_arm": seconds, "results": results, "paired_differences": paired}
    payload["allow_flags"] = allow_flags_line(payload)
    (out / "fewshot.json").write_text(json.dumps(payload, indent=2, default=str))
    return {"out": out, **payload}
