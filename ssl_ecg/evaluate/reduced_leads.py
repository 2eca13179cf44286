"""Reduced-lead evaluation: the label-efficiency curve at the PhysioNet/CinC 2021 lead sets.

The CinC 2021 challenge (Reyna et al., "Will two do? Varying dimensions in electrocardiography", CinC 2021)
scored 12, 6, 4, 3 and 2-lead ECGs; :data:`LEAD_SETS` adds lead II alone. For each lead set every arm is
evaluated on the same patients, split, fractions and seeds, as a deployed model would see the recording:

- **per-lead encoders** embed only the available leads (never a missing one); their probe features are the
  mean over those lead embeddings (``lead_features: mean``, E, the default here), so every lead set and the
  multi-lead arms have the same feature dimension; ``concat`` (k*E) is the alternative, named in the table;
- **multi-lead encoders** get all L channels with the missing ones zero-filled (:class:`ZeroFilled`), as a model
  trained on 12 leads meets a reduced-lead device;
- the **supervised** arm is trained from scratch on the lead set (a multi-lead one with k input channels):
  pretraining or training on each lead set is the option a zero-filled arm is compared with;
- the **feature** arm (``feature_arm``) sees the available leads;
- **lead-set encoders** (``lead_set_encoders``, the option the zero-filled arms are compared with): an encoder
  pretrained on one lead set is evaluated only at that lead set, on exactly its leads (k input channels, or each
  lead alone for a per-lead one); one arm name across lead sets is one line of the table (``simclr@leadset``).

With ``renormalize`` (default) and ``normalization: record`` the available leads are divided by their own
overall standard deviation, which is the cache's record normalisation applied to those leads alone (exact when
the records were not cut to a shorter length): a device with k leads normalises over k leads.

Outputs (``runs/<name>/``): ``leads_<n>/`` per lead set (``curve.csv``, ``curve.json``, ``curve.png``,
``split.json``, all with the one split), ``reduced_leads.csv`` (task, metric, arm, lead set, n_leads, leads,
arm_input, fraction, mean, n_seeds), ``reduced_leads.png`` (AUROC against lead count, a panel per task) and
``reduced_leads.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, Union

import numpy as np
import pandas as pd
from annotated_types import MinLen
from pydantic import BeforeValidator
from torch import Tensor, nn

from ssl_ecg.data.record import canonical_lead
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.curve import is_reference_arm, line_name, run_curve, write_outputs
from ssl_ecg.evaluate.provenance import check_preprocessing, pretraining_data
from ssl_ecg.evaluate.runner import (
    FEATURE_ARM,
    EvalConfig,
    check_curve_recipe,
    check_encoder_pools,
    curve_spec,
    eval_leads,
    evaluation_inputs,
    feature_arm_curve,
    load_arms,
)
from ssl_ecg.paths import run_folder
from ssl_ecg.recipe import RunName, window_samples

__all__ = ["LEAD_SETS", "ReducedLeadsConfig", "ZeroFilled", "lead_set_signals", "resolve_lead_sets",
           "lead_set_label", "lead_sets_in_data_order", "run_reduced_leads", "format_reduced_table",
           "plot_reduced_leads", "REDUCED_COLUMNS", "LEAD_SET_INPUT"]

#: The CinC 2021 lead sets (Reyna et al. 2021), plus lead II alone.
LEAD_SETS: dict[int, tuple[str, ...]] = {
    12: ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"),
    6: ("I", "II", "III", "aVR", "aVL", "aVF"),
    4: ("I", "II", "III", "V2"),
    3: ("I", "II", "V2"),
    2: ("I", "II"),
    1: ("II",),
}
REDUCED_COLUMNS = ["task", "metric", "arm", "lead_set", "n_leads", "leads", "arm_input", "fraction", "mean", "n_seeds"]
#: ``arm_input`` of a lead-set encoder's rows (``lead_set_encoders``).
LEAD_SET_INPUT = "pretrained on these leads"

LeadSet = Union[Literal[12, 6, 4, 3, 2, 1], Annotated[list[str], MinLen(1)]]


def _label_keys(value: Any) -> Any:
    """YAML reads ``2:`` as an int: lead-set labels are strings (``"2"``)."""
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v for k, v in value.items()}
    return value


#: label -> {arm: checkpoint} (``lead_set_encoders``)
LeadSetEncoders = Annotated[dict[str, dict[str, str]], BeforeValidator(_label_keys)]


@dataclass
class ReducedLeadsConfig(EvalConfig):
    """An :class:`~ssl_ecg.evaluate.runner.EvalConfig` evaluated at several lead sets (``ssl-ecg reduced-leads``).

    ``lead_sets``: each a CinC 2021 lead count (:data:`LEAD_SETS`) or a list of lead names of the data.
    ``lead_set_encoders``: lead-set label (:func:`lead_set_label`: ``"12"`` ... ``"1"``, or ``"I-II"`` for a
    list) -> ``{arm: checkpoint}``, more arms evaluated only at that lead set on exactly its leads (an encoder
    pretrained on those leads); the same arm name at several lead sets is one line of the table.
    """

    name: RunName = "reduced_leads"
    lead_sets: Annotated[list[LeadSet], MinLen(1)] = field(default_factory=lambda: [12, 6, 4, 3, 2, 1])
    lead_features: Literal["concat", "mean"] = "mean"  # per-lead arms: E (matched dimension) or k*E
    renormalize: bool = True  # record normalisation re-applied to the available leads
    lead_set_encoders: LeadSetEncoders = field(default_factory=dict)  # label -> {arm: checkpoint}


def lead_set_label(item: Any) -> str:
    """The label of one ``lead_sets`` entry: ``"6"`` for a CinC lead count, the lead names joined by ``-``
    (``"V1-II"``) for a list; the entry itself is checked by :func:`resolve_lead_sets`."""
    if isinstance(item, int) and not isinstance(item, bool):
        return str(item)
    return "-".join(canonical_lead(str(n)) for n in item) if isinstance(item, (list, tuple)) else str(item)


def resolve_lead_sets(lead_sets: Sequence, leads: Sequence[str]) -> dict[str, list[str]]:
    """``{label: lead names}`` for each lead set (label ``"6"`` for a CinC set, names joined by ``-`` else).

    Raises:
        ConfigError: naming ``lead_sets[k]``, for a count that is not a CinC set, a name that is not a lead of
            the data (``leads``), a repeated lead, or a repeated lead set.
    """
    have = {canonical_lead(n).lower(): canonical_lead(n) for n in leads}
    out: dict[str, list[str]] = {}
    for k, item in enumerate(lead_sets):
        where = f"lead_sets[{k}]"
        if isinstance(item, int) and not isinstance(item, bool):
            if item not in LEAD_SETS:
                raise ConfigError(f"{where}={item!r}: expected a lead count of {sorted(LEAD_SETS)} or a list of "
                                  "lead names")
            names, label = list(LEAD_SETS[item]), lead_set_label(item)
        elif isinstance(item, (list, tuple)) and item and all(isinstance(n, str) for n in item):
            names = [canonical_lead(n) for n in item]
            label = lead_set_label(item)
        else:
            raise ConfigError(f"{where}={item!r}: expected a lead count of {sorted(LEAD_SETS)} or a list of lead "
                              "names")
        unknown = [n for n in names if n.lower() not in have]
        if unknown:
            raise ConfigError(f"{where}: {unknown} are not leads of the evaluation data; expected names among "
                              f"{list(have.values())} (set leads= to the 12 leads)")
        if len({n.lower() for n in names}) != len(names):
            raise ConfigError(f"{where}={item!r}: a lead is named twice")
        names = [have[n.lower()] for n in names]
        twin = next((lab for lab, other in out.items() if set(other) == set(names)), None)
        if twin is not None:
            raise ConfigError(f"{where}={item!r}: lead set {twin} is given twice")
        out[label] = names
    return out


def lead_sets_in_data_order(lead_sets: Sequence, leads: Sequence[str]) -> dict[str, list[str]]:
    """:func:`resolve_lead_sets` with each set's names in the channel order of the data (``leads``), which is the
    order :func:`lead_set_signals` gives them: the ``leads`` to pretrain a lead-set encoder on."""
    return {label: [leads[p] for p in _positions(leads, names)]
            for label, names in resolve_lead_sets(lead_sets, leads).items()}


def _positions(leads: Sequence[str], subset: Sequence[str]) -> list[int]:
    """Channel positions of ``subset`` in ``leads``, in the data's lead order."""
    low = [canonical_lead(n).lower() for n in leads]
    return sorted(low.index(canonical_lead(n).lower()) for n in subset)


def _renormalized(x: np.ndarray) -> np.ndarray:
    """Each record divided by its overall standard deviation (records with none are left as they are)."""
    std = x.reshape(len(x), -1).std(axis=1, dtype=np.float64)
    return (x / np.where(std > 0, std, 1.0)[:, None, None]).astype(np.float32)


def lead_set_signals(signals: np.ndarray, leads: Sequence[str], subset: Sequence[str], per_lead: bool,
                     renormalize: bool = False) -> np.ndarray:
    """The evaluation signals of one lead set.

    Args:
        signals: (R, L, T) records with leads ``leads``.
        subset: the available leads (any order; the data's order is kept).
        per_lead: True: the (R, k, T) available leads only; False: (R, L, T) with the missing leads zero.
        renormalize: divide the available leads by their own overall standard deviation per record (the
            record normalisation over k leads).

    Raises:
        ConfigError: a lead of ``subset`` is not in ``leads``.
    """
    missing = [n for n in subset if canonical_lead(n).lower() not in {canonical_lead(m).lower() for m in leads}]
    if missing:
        raise ConfigError(f"lead_sets: {missing} are not leads of the data {list(leads)}")
    pos = _positions(leads, subset)
    sub = np.asarray(signals[:, pos], dtype=np.float32)
    if renormalize:
        sub = _renormalized(sub)
    if per_lead:
        return sub
    full = np.zeros((len(sub), len(leads), sub.shape[-1]), dtype=np.float32)
    full[:, pos] = sub
    return full


class ZeroFilled(nn.Module):
    """A multi-lead encoder fed a lead subset: (N, k, T) -> the encoder on (N, L, T) with the other leads zero.

    Same output as the encoder on ``lead_set_signals(..., per_lead=False)``, without storing L channels per
    lead set. ``config`` adds the available leads to the encoder's, so curve fingerprints tell lead sets apart.
    """

    def __init__(self, encoder: nn.Module, positions: Sequence[int], n_leads: int, leads: Sequence[str]):
        super().__init__()
        self.encoder = encoder
        self.positions = [int(p) for p in positions]
        self.n_leads = int(n_leads)
        self.embed_dim = getattr(encoder, "embed_dim", None)
        self.config = {**(getattr(encoder, "config", None) or {}), "zero_filled": {"available": list(leads),
                                                                                    "n_leads": self.n_leads}}

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != len(self.positions):
            raise ConfigError(f"ZeroFilled: input has {x.shape[1]} leads; expected {len(self.positions)}")
        full = x.new_zeros(x.shape[0], self.n_leads, x.shape[-1])
        full[:, self.positions] = x
        return self.encoder(full)


@dataclass
class _LeadSetArm:
    """A checked lead-set encoder: its module, lead mode, checkpoint and how messages name it."""

    encoder: nn.Module
    per_lead: bool
    path: str
    source: str


def _lead_set_arms(cfg: ReducedLeadsConfig, window: int) -> dict[str, dict[str, _LeadSetArm]]:
    """Load ``cfg.lead_set_encoders`` and check what needs no data: the label, the arm name, the channels and
    window each encoder takes (:func:`~ssl_ecg.evaluate.runner.check_encoder` with the lead set's lead count).

    Raises:
        ConfigError: naming ``lead_set_encoders.<label>[.<arm>]``: a label of no lead set of ``lead_sets``, an arm
            named like another arm, or an encoder that does not take the lead set's channels or the window.
    """
    items = {lead_set_label(item): item for item in cfg.lead_sets}
    taken = {**{arm: "an encoders arm" for arm in cfg.encoders}, "random_init": "the random-init arm",
             "supervised": "the supervised arm", **({FEATURE_ARM: "the feature arm"} if cfg.feature_arm else {})}
    out: dict[str, dict[str, _LeadSetArm]] = {}
    for label, paths in cfg.lead_set_encoders.items():
        where = f"lead_set_encoders.{label}"
        if label not in items:
            raise ConfigError(f"{where}: {label!r} is not a lead set of lead_sets; expected one of {list(items)}")
        item = items[label]
        n_leads = len(LEAD_SETS.get(item, ())) if isinstance(item, int) else len(item)
        for arm in paths:
            if arm in taken or is_reference_arm(arm):
                what = taken.get(arm, "a matched reference arm")
                raise ConfigError(f"{where}.{arm}: the name is taken by {what}; expected an arm name of its own "
                                  f"(e.g. {arm}@leadset)")
        # loaded and checked as the encoders arms are, with the lead set's lead count
        encoders, modes, _ = (load_arms(paths, cfg.per_lead, n_leads, window, random_init=False, where=where)
                              if paths else ({}, {}, None))
        out[label] = {arm: _LeadSetArm(encoders[arm], modes[arm], str(path), f"{where}.{arm} ({path})")
                      for arm, path in paths.items()}
    return out


def _check_lead_set_arms(cfg: ReducedLeadsConfig, inputs, lead_arms: dict[str, dict[str, _LeadSetArm]],
                         sets: dict[str, list[str]]) -> dict[str, dict]:
    """Check each lead-set encoder against the data: its pretraining leads (when its ``encoder.json`` records
    them) are the lead set's, its pool against the evaluation split as the ``encoders`` arms' are
    (:func:`~ssl_ecg.evaluate.runner.check_encoder_pools`), and with ``split: null`` it shares their split.

    Args:
        sets: label -> the lead set's names in the data's channel order.

    Returns:
        ``"<arm> [<label>]"`` -> what the outputs record about it (as ``provenance``).

    Raises:
        ConfigError: naming ``lead_set_encoders.<label>.<arm>``: other pretraining leads, another split.
        LeakageError: as for the ``encoders`` arms.
    """
    main = {c["split_hash"] for c in inputs.checks.values() if c.get("known")}
    expected = main or {inputs.split.hash}
    spec = inputs.prepared.spec
    out = {}
    for label, arms in lead_arms.items():
        names = sets[label]
        for arm, one in arms.items():
            pretrained = pretraining_data(one.path) or {}
            theirs = pretrained.get("leads")
            if theirs is not None:
                theirs = [canonical_lead(str(n)) for n in theirs]
                same = (sorted(n.lower() for n in theirs) == sorted(n.lower() for n in names) if one.per_lead
                        else [n.lower() for n in theirs] == [n.lower() for n in names])
                if not same:
                    raise ConfigError(f"{one.source}: pretrained on leads {theirs}, but lead set {label} gives "
                                      f"{names}{'' if one.per_lead else ' (in this order)'}; expected an encoder "
                                      "pretrained on the lead set's leads")
            # another normalisation or band only warns, as for the encoders arms
            check_preprocessing(arm, {k: v for k, v in pretrained.items() if k != "leads"}, spec, one.per_lead,
                                one.source)
        checks = check_encoder_pools(cfg, inputs, {a: one.path for a, one in arms.items()},
                                     {a: one.source for a, one in arms.items()})
        for arm, check in checks.items():
            if cfg.split is None and check.get("known") and check["split_hash"] not in expected:
                raise ConfigError(f"{arms[arm].source}: pretrained on split {check['split_hash'][:12]}, but with "
                                  f"split: null the evaluation takes the encoders' split "
                                  f"{' / '.join(h[:12] for h in sorted(expected))}; pretrain it on that split or "
                                  "name the split to evaluate on (split: [shares], 'official' or a split.json path)")
            out[f"{arm} [{label}]"] = {**check, "per_lead": arms[arm].per_lead}
    return out


def _arm_input(arm: str, per_lead: bool, lead_features: str) -> str:
    if arm == FEATURE_ARM:
        return "available leads (hand-crafted)"
    if arm == "supervised":
        return "available leads (trained on the lead set)"
    return f"per lead, {lead_features} over available leads" if per_lead else "all leads, missing zero-filled"


def _reduced_rows(curve: pd.DataFrame, label: str, names: list[str], inputs: dict[str, str]) -> list[dict]:
    rows = []
    if curve.empty:
        return rows
    curve = curve.assign(line=[line_name(a, p) for a, p in zip(curve["arm"], curve["probe"])])
    for (task, metric, line, arm, frac), g in curve.groupby(["task", "metric", "line", "arm", "fraction"],
                                                             sort=False):
        rows.append({"task": task, "metric": metric, "arm": line, "lead_set": label, "n_leads": len(names),
                     "leads": " ".join(names), "arm_input": inputs[arm], "fraction": float(frac),
                     "mean": float(g["value"].astype(float).mean()), "n_seeds": int(len(g))})
    return rows


def run_reduced_leads(cfg: ReducedLeadsConfig, runs: str | Path = "runs", progress: bool = True) -> dict:
    """Evaluate ``cfg`` at each of its lead sets; see the module doc for what each arm sees and what is written.

    The data, split, provenance checks and arms are resolved once (:func:`evaluation_inputs`), so every
    ``leads_<n>/`` holds the same ``split.json`` and the same label-fraction draws.

    Raises:
        ConfigError: a bad lead set (naming ``lead_sets[k]``), ``matched_references`` (not supported here), a bad
            lead-set encoder (naming ``lead_set_encoders.<label>.<arm>``: unknown label, an arm name taken by
            another arm, channels or window that do not fit the lead set, other pretraining leads, another
            split), and everything :func:`run_evaluation` raises.
    """
    t0 = time.perf_counter()
    if cfg.matched_references:  # each supervised@<group> would need its input channels cut per lead set as well
        raise ConfigError("matched_references: not supported by reduced-lead evaluation (its supervised arm is "
                          "rebuilt per lead set); expected matched_references: false")
    out = run_folder(runs, cfg.name)
    lead_arms = _lead_set_arms(cfg, window_samples(cfg.window, cfg.fs))  # before any data is read
    out.mkdir(parents=True, exist_ok=True)
    inputs = evaluation_inputs(cfg, progress)
    check_curve_recipe(cfg, inputs)
    leads = eval_leads(inputs)
    sets = resolve_lead_sets(cfg.lead_sets, leads)
    lead_set_checks = _check_lead_set_arms(cfg, inputs, lead_arms, lead_sets_in_data_order(cfg.lead_sets, leads))
    spec = curve_spec(cfg, inputs)
    renormalize = cfg.renormalize and cfg.normalization == "record"
    rows, curves = [], {}
    for label, names in sets.items():
        folder = out / f"leads_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        inputs.split.save(folder / "split.json")
        pos = _positions(leads, names)
        everything = pos == list(range(len(leads)))
        # all leads: the plain curve's signals, so leads_12/ equals `ssl-ecg curve` with the same settings
        sub = lead_set_signals(inputs.signals, leads, names, per_lead=True,
                               renormalize=renormalize and not everything)
        arms = {arm: enc if inputs.per_lead[arm] or everything else ZeroFilled(enc, pos, len(leads), names)
                for arm, enc in inputs.arms.items()}
        extra = lead_arms.get(label, {})  # encoders pretrained on this lead set: its k leads as they are
        arms.update({arm: one.encoder for arm, one in extra.items()})
        supervised = spec.supervised
        if supervised is not None and not spec.lead_mode("supervised"):
            supervised = {**supervised, "in_channels": len(names)}
        own = replace(spec, supervised=supervised,
                      per_lead={**spec.per_lead, **{arm: one.per_lead for arm, one in extra.items()}})
        curve = run_curve(sub, inputs.table, inputs.splits, arms, own, folder, progress=progress)
        if cfg.feature_arm:
            curve = pd.concat([curve, feature_arm_curve(sub, inputs.table, inputs.splits, own, cfg.fs,
                                                        [leads[p] for p in pos], folder, progress)],
                              ignore_index=True)
        write_outputs(curve, folder, {"config": asdict(cfg), "lead_set": label, "leads": names,
                                      "split_hash": inputs.split.hash,
                                      "lead_set_encoders": {arm: one.path for arm, one in extra.items()}})
        kinds = {arm: _arm_input(arm, inputs.per_lead.get(arm, True), cfg.lead_features) for arm in curve["arm"]}
        # one lead: a per-lead and a 1-channel encoder see the same input, so the row reads the same at every set
        kinds.update({arm: LEAD_SET_INPUT + (f", per lead, {cfg.lead_features} over them"
                                             if one.per_lead and len(names) > 1 else "")
                      for arm, one in extra.items()})
        rows += _reduced_rows(curve, label, names, kinds)
        curves[label] = curve
    table = pd.DataFrame(rows, columns=REDUCED_COLUMNS)
    table.to_csv(out / "reduced_leads.csv", index=False)
    plot_reduced_leads(table, out / "reduced_leads.png")
    inputs.split.save(out / "split.json")
    meta = {"config": asdict(cfg), "lead_sets": sets, "split_hash": inputs.split.hash,
            "split_source": inputs.split_source, "per_lead": inputs.per_lead, "renormalized": renormalize,
            "records": int(len(inputs.table)), "provenance": {**inputs.checks, **lead_set_checks},
            "lead_set_encoders": {label: {arm: one.path for arm, one in arms.items()}
                                  for label, arms in lead_arms.items()},
            "bad_leads": inputs.prepared.bad_leads,
            "wall_seconds": round(time.perf_counter() - t0, 1)}
    (out / "reduced_leads.json").write_text(json.dumps(meta, indent=2, default=str))
    return {"out": out, "table": table, "curves": curves, **meta}


def plot_reduced_leads(table: pd.DataFrame, path: str | Path) -> Path:
    """AUROC against the number of leads, a line per arm (and fraction when several), one panel per task; with
    ``ci_low``/``ci_high`` columns (e.g. the report's bootstrap intervals) each line gets its interval as a band."""
    table = table.assign(lead_set=table["lead_set"].astype(str))  # read back from csv: counts are ints
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    auroc = table[table["metric"] == "auroc"]
    tasks = list(dict.fromkeys(auroc["task"])) or ["(none)"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    order = list(dict.fromkeys(table["lead_set"]))
    fractions = sorted(set(auroc["fraction"]))
    for ax, task in zip(axes[0], tasks):
        g = auroc[auroc["task"] == task]
        for k, arm in enumerate(dict.fromkeys(g["arm"])):
            for frac in fractions:
                line = g[(g["arm"] == arm) & (g["fraction"] == frac)].set_index("lead_set").reindex(order)
                label = arm if len(fractions) == 1 else f"{arm} ({frac:.0%})"
                ax.plot(range(len(order)), line["mean"], marker="o", color=f"C{k % 10}", label=label,
                        alpha=0.4 + 0.6 * (frac == fractions[-1]))
                if {"ci_low", "ci_high"} <= set(line.columns):
                    low, high = line["ci_low"].astype(float), line["ci_high"].astype(float)
                    ax.fill_between(range(len(order)), low, high, color=f"C{k % 10}",
                                    alpha=0.08 + 0.1 * (frac == fractions[-1]), linewidth=0)
        ax.set_xticks(range(len(order)), [f"{lab}" if lab.isdigit() else lab.replace("-", "\n") for lab in order])
        ax.set_xlabel("leads")
        ax.set_ylabel("test AUROC" + (" (band: 95% interval)" if "ci_low" in g else " (mean over seeds)"))
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_reduced_table(table: pd.DataFrame, fraction: float | None = None) -> str:
    """Text table per task: arms x lead sets, test AUROC mean over seeds at ``fraction`` (default the largest)."""
    table = table.assign(lead_set=table["lead_set"].astype(str))  # read back from csv: counts are ints
    auroc = table[table["metric"] == "auroc"]
    if auroc.empty:
        return "(no AUROC rows)"
    fraction = max(auroc["fraction"]) if fraction is None else fraction
    auroc = auroc[auroc["fraction"] == fraction]
    order = list(dict.fromkeys(table["lead_set"]))
    blocks = []
    for task, g in auroc.groupby("task", sort=False):
        wide = g.pivot_table(index="arm", columns="lead_set", values="mean", sort=False).reindex(columns=order)
        inputs = g.drop_duplicates("arm").set_index("arm")["arm_input"]
        head = f"{'arm':<16}" + "".join(f"{lab + ' leads' if lab.isdigit() else lab:>12}" for lab in order)
        lines = [f"{task}: test AUROC at {fraction:.0%} of the labels, mean over seeds", head]
        for arm, vals in wide.iterrows():
            lines.append(f"{arm:<16}" + "".join(f"{v:>12.3f}" for v in vals) + f"   ({inputs[arm]})")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
