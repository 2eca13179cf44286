"""Provenance checks for every evaluation stage: no test (or episode) patient in an encoder's pretraining pool.

An encoder's ``encoder.json`` carries a ``provenance`` block (written by pretraining, read with
:func:`ssl_ecg.checkpoint.load_provenance`)::

    {"version": 1, "datasets": [...], "cache_keys": [...], "pool_patients": ["ludb:1", ...],
     "pool_fingerprints": ["ab12...", ...], "label_patients": [...], "split": {Split.to_dict()}}

Evaluation (``probe``, ``finetune``, ``curve``) and ``fewshot`` use these checks:

- :func:`resolve_split`: which patient split to evaluate on. By default (``split: null``) the encoders' own
  split, which all encoders with provenance must share; a recipe's own split is allowed but checked.
- :func:`check_overlap`: refuses (:class:`~ssl_ecg.errors.LeakageError`) when an evaluated patient was in an
  encoder's pool, by patient key (``dataset:patient_id``) or by record fingerprint (the same signal under another
  id), unless ``allow_overlap``.
- :func:`check_labels`: refuses cells where the encoder used labels (``sclst``, label monitors) that the cell
  treats as unlabelled: any fraction < 1 (only a subset of the training patients is labelled there), and any
  cell at all when the encoder used labels of patients outside train and val (every cell labels all of
  train at fraction 1 and uses all val labels for model selection), unless ``allow_overlap``.
- :func:`check_known`: refuses encoders without provenance unless ``allow_unknown_provenance``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ssl_ecg.errors import ConfigError, LeakageError

__all__ = ["PROVENANCE_KEYS", "OverlapReport", "read_provenance", "check_provenance", "check_known",
           "resolve_split", "check_overlap", "check_labels", "provenance_summary", "allow_flags_line",
           "pretraining_data", "check_preprocessing"]

#: Keys a provenance block must have, with their JSON types.
PROVENANCE_KEYS = {"pool_patients": list, "pool_fingerprints": list, "label_patients": list, "split": dict}
#: How many patient ids an error message or a report shows.
SHOWN_IDS = 5


def _shown(ids: Iterable[str]) -> str:
    ids = sorted(ids)
    more = f", ... ({len(ids) - SHOWN_IDS} more)" if len(ids) > SHOWN_IDS else ""
    return ", ".join(ids[:SHOWN_IDS]) + more


def check_provenance(provenance: Any, source: str) -> dict | None:
    """``provenance`` checked for the keys and types the checks need; None stays None (unknown provenance).

    Args:
        provenance: the ``provenance`` block of an ``encoder.json``, or None.
        source: the encoder (arm name and path) for the message.

    Raises:
        ConfigError: not a mapping, a key is missing or has the wrong type, or the split has no hash.
    """
    if provenance is None:
        return None
    if not isinstance(provenance, Mapping):
        raise ConfigError(f"{source}: provenance must be a mapping with keys {sorted(PROVENANCE_KEYS)}, "
                          f"got {type(provenance).__name__}")
    for key, kind in PROVENANCE_KEYS.items():
        if not isinstance(provenance.get(key), kind):
            raise ConfigError(f"{source}: provenance key {key!r} must be a {kind.__name__}, got "
                              f"{type(provenance.get(key)).__name__}; re-pretrain it or set "
                              "allow_unknown_provenance: true")
    split = provenance["split"]
    if not isinstance(split.get("hash"), str) or not isinstance(split.get("patients"), Mapping):
        raise ConfigError(f"{source}: provenance split must hold 'patients' and 'hash' (a Split.to_dict()), got "
                          f"keys {sorted(split)}")
    return dict(provenance)


def read_provenance(path: str | os.PathLike, source: str | None = None) -> dict | None:
    """The checked provenance of the encoder at ``path`` (``.pt``, run folder, or an ``ssl-ecg export`` folder,
    whose ``encoder.json`` is the run's copy); None when it has none.

    Raises:
        ConfigError: beside an exported ``model_card.json``, the ``encoder.json`` names another pool or split than
            the card (a provenance file from another run).
    """
    import hashlib
    import json

    from ssl_ecg.checkpoint import MODEL_CARD_FILE, _config_path, load_provenance

    who = source or str(path)
    provenance = check_provenance(load_provenance(path), who)
    card_path = _config_path(path).with_name(MODEL_CARD_FILE)
    if card_path.is_file():  # the exported form: the card (written with the weights) must describe this pool
        try:
            pre = json.loads(card_path.read_text(encoding="utf-8")).get("pretraining") or {}
        except (OSError, ValueError, AttributeError):
            raise ConfigError(f"{card_path}: expected a JSON model card with a 'pretraining' block") from None
        pool = provenance["pool_patients"] if provenance else []
        mine = hashlib.sha256("\n".join(sorted(map(str, pool))).encode()).hexdigest() if pool else None
        split = provenance["split"]["hash"] if provenance else None
        if pre.get("pool_hash") != mine or (provenance is not None and pre.get("split_hash") != split):
            raise ConfigError(f"{who}: its encoder.json names pool {str(mine)[:12]} / split {str(split)[:12]}, but "
                              f"{card_path.name} pool {str(pre.get('pool_hash'))[:12]} / split "
                              f"{str(pre.get('split_hash'))[:12]}; expected the encoder.json exported with it")
    return provenance


def check_known(arm: str, provenance: dict | None, allow_unknown: bool, source: str | None = None) -> bool:
    """Refuse an encoder without provenance unless ``allow_unknown``.

    Returns:
        Whether the provenance is known.

    Raises:
        LeakageError: no provenance and not ``allow_unknown``; names the encoder.
    """
    if provenance is not None:
        return True
    if not allow_unknown:
        raise LeakageError(f"{source or arm}: encoder has no provenance (no pretraining pool in its encoder.json: "
                           "third-party weights or a checkpoint from before provenance), so its test patients "
                           "cannot be checked for overlap; re-pretrain it or set allow_unknown_provenance: true")
    return False


def resolve_split(provenances: Mapping[str, dict | None], split: Any = None, sources: Mapping[str, str] | None = None):
    """The patient split an evaluation uses.

    Args:
        provenances: arm name -> its (checked) provenance, None for unknown ones.
        split: the recipe's ``split``: None (the encoders' own split), a :class:`~ssl_ecg.data.prepare.Split`,
            a path to a ``split.json``, or train/val/test shares / ``"official"`` (drawn on the data by
            :func:`~ssl_ecg.data.prepare.prepare`).
        sources: arm name -> how to name it in messages (e.g. ``"encoders.cmsc (runs/ludb_cmsc)"``).

    Returns:
        A ``Split`` to evaluate on, or None when the split is to be drawn from the recipe's shares (or
        ``"official"``) and seed: an explicit shares/official split, or ``split: null`` with no encoder that
        has provenance.

    Raises:
        ConfigError: ``split`` is null and encoders with provenance were pretrained on different splits
            (the message names each encoder and its split hash).
    """
    from ssl_ecg.data.prepare import Split

    sources = sources or {}
    if isinstance(split, Split):
        return split
    if isinstance(split, (str, os.PathLike)) and str(split) != "official":
        return Split.load(split)
    if split is not None:
        return None  # shares or "official": drawn by prepare(), then checked against every pool
    known = {arm: p for arm, p in provenances.items() if p is not None}
    if not known:
        return None
    hashes = {arm: p["split"]["hash"] for arm, p in known.items()}
    if len(set(hashes.values())) > 1:
        named = "; ".join(f"{sources.get(arm, arm)} split {h[:12]}" for arm, h in hashes.items())
        raise ConfigError(f"encoders: pretrained on different patient splits ({named}); with split: null they "
                          "must share one; pretrain them on one split or name the split to evaluate on "
                          "(split: [shares], 'official' or a split.json path), which is checked against each pool")
    arm = next(iter(known))
    return Split.from_dict(known[arm]["split"], source=f"{sources.get(arm, arm)} provenance split")


@dataclass
class OverlapReport:
    """One encoder's overlap with the evaluated patients.

    Attributes:
        arm: the arm name.
        evaluated: the evaluated split names (e.g. ``("test",)``; few-shot: ``("episodes",)``).
        evaluated_patients: how many patients were evaluated.
        pool_patients, pool_fingerprints: sizes of the encoder's pretraining pool.
        by_patient: evaluated patient keys in the pool.
        by_fingerprint: evaluated patient keys (not in the pool by key) with a record whose signal
            fingerprint is in the pool.
        allowed: the overlap was allowed (``allow_overlap``).
    """

    arm: str
    evaluated: tuple[str, ...]
    evaluated_patients: int
    pool_patients: int
    pool_fingerprints: int
    by_patient: list[str] = field(default_factory=list)
    by_fingerprint: list[str] = field(default_factory=list)
    allowed: bool = False

    @property
    def overlap(self) -> list[str]:
        """Every overlapping patient key (by key or by fingerprint), sorted."""
        return sorted(set(self.by_patient) | set(self.by_fingerprint))

    def to_dict(self) -> dict:
        """JSON-ready: counts plus up to :data:`SHOWN_IDS` ids of each kind."""
        d = asdict(self)
        d["evaluated"] = list(self.evaluated)
        d["overlap"] = len(self.overlap)
        d["by_patient"], d["by_fingerprint"] = len(self.by_patient), len(self.by_fingerprint)
        d["examples"] = self.overlap[:SHOWN_IDS]
        return d


def _evaluated_rows(table: pd.DataFrame, evaluated: Sequence[str]) -> pd.DataFrame:
    for col in ("patient_key", "split"):
        if col not in table.columns:
            raise ConfigError(f"check_overlap: the data table has no {col!r} column (expected prepare()'s table)")
    return table[table["split"].astype(str).isin(list(evaluated))]


def check_overlap(arm: str, provenance: dict | None, split, table: pd.DataFrame,
                  evaluated: Sequence[str] = ("test",), allow_overlap: bool = False,
                  source: str | None = None) -> OverlapReport | None:
    """Refuse when an evaluated patient was in the encoder's pretraining pool, by patient key or by fingerprint.

    Args:
        arm: the arm name.
        provenance: its checked provenance (None: unknown, nothing to check, returns None).
        split: the evaluation's ``Split`` (its ``patients`` of the ``evaluated`` names count), or None to use
            only the table's ``split`` column.
        table: the prepared data table: ``patient_key``, ``split`` and (for the fingerprint check)
            ``fingerprint`` per record.
        evaluated: the split names whose patients are scored (``("test",)``; few-shot: every episode split).
        allow_overlap: record the overlap instead of refusing (a transductive setting).
        source: how to name the encoder (default ``arm``).

    Returns:
        The :class:`OverlapReport` (empty overlap lists when clean); None for unknown provenance.

    Raises:
        LeakageError: overlap and not ``allow_overlap``; names the encoder, the count and up to
            :data:`SHOWN_IDS` patient ids.
    """
    if provenance is None:
        return None
    rows = _evaluated_rows(table, evaluated)
    patients = set(rows["patient_key"].astype(str))
    if split is not None:
        for name in evaluated:
            patients |= set(map(str, split.patients.get(name, ())))
    pool = set(map(str, provenance["pool_patients"]))
    pool_fp = set(map(str, provenance["pool_fingerprints"]))
    by_patient = sorted(patients & pool)
    by_fp: set[str] = set()
    if pool_fp and "fingerprint" in rows.columns:
        hit = rows["fingerprint"].astype(str).isin(pool_fp).to_numpy()
        by_fp = set(rows["patient_key"].astype(str).to_numpy()[hit]) - set(by_patient)
    report = OverlapReport(arm=arm, evaluated=tuple(evaluated), evaluated_patients=len(patients),
                           pool_patients=len(pool), pool_fingerprints=len(pool_fp), by_patient=by_patient,
                           by_fingerprint=sorted(by_fp), allowed=bool(allow_overlap))
    if report.overlap and not allow_overlap:
        what = "/".join(evaluated)
        raise LeakageError(
            f"{source or arm}: {len(report.overlap)} of {len(patients)} {what} patients were in its pretraining "
            f"pool ({len(by_patient)} by patient key, {len(by_fp)} by signal fingerprint), e.g. "
            f"{_shown(report.overlap)}; evaluate on the encoder's own split (split: null) or set "
            "allow_overlap: true for a transductive setting")
    return report


def check_labels(arm: str, provenance: dict | None, split, fractions: Sequence[float],
                 allow_overlap: bool = False, train: str = "train", source: str | None = None,
                 val: str = "val") -> dict | None:
    """Refuse cells where the encoder used labels of patients that the cell treats as unlabelled.

    Every cell uses the labels of all ``val`` patients (model selection, early stopping), and a cell at
    fraction 1 labels every ``train`` patient, so fraction 1 is clean when the encoder's label patients all
    lie in ``train`` or ``val`` (sCL-ST uses val labels to stop early, or pretrains on train + val). A cell at
    fraction < 1 labels only a subset of ``train``, so a label-using encoder is refused there. An encoder that
    used no labels passes every cell.

    Args:
        arm: the arm name.
        provenance: its checked provenance (None: unknown, returns None).
        split: the evaluation's ``Split``.
        fractions: the labelled fractions of the curve.
        allow_overlap: record the refused fractions instead of raising.
        train: the split name of the labelled training patients.
        source: how to name the encoder (default ``arm``).
        val: the split name of the validation patients (labelled in every cell).

    Returns:
        ``{"label_patients": n, "outside_train": n, "refused_fractions": [...], "allowed": bool}``
        (``outside_train``: label patients outside ``train`` and ``val``); None for unknown provenance.

    Raises:
        LeakageError: a refused fraction and not ``allow_overlap``; names the encoder, the count, a few patient
            ids and the fractions.
    """
    if provenance is None:
        return None
    used = set(map(str, provenance.get("label_patients") or ()))
    labelled = set(map(str, split.patients.get(train, ()))) | set(map(str, split.patients.get(val, ())))
    outside = sorted(used - labelled)
    if not used:
        refused: list[float] = []
    elif outside:
        refused = sorted(float(f) for f in fractions)
    else:
        refused = sorted(float(f) for f in fractions if float(f) < 1)
    report = {"label_patients": len(used), "outside_train": len(outside), "refused_fractions": refused,
              "allowed": bool(allow_overlap)}
    if refused and not allow_overlap:
        if outside:
            why = (f"{len(outside)} of its {len(used)} label patients are outside the {train!r} and {val!r} "
                   f"splits (e.g. {_shown(outside)})")
            fix = (f"pretrain it on the labels of {train} and {val} patients only (evaluate on its own split: "
                   "split: null)")
        else:
            why = (f"it used the labels of {len(used)} {train}/{val} patients (e.g. {_shown(used)}), which a "
                   f"label fraction below 1 treats as unlabelled")
            fix = "use fractions: [1.0] or an encoder pretrained without labels"
        raise LeakageError(f"{source or arm}: pretraining used labels the curve hides: {why}; refused fractions "
                           f"{[f'{f:g}' for f in refused]}; {fix}, or set allow_overlap: true")
    return report


def pretraining_data(path: str | os.PathLike) -> dict | None:
    """The data settings an encoder was pretrained with (``leads``, ``normalization``, ``band``, ``fs``), from the
    ``pretraining.config`` of its ``encoder.json``; None when it has none (third-party weights) or is unreadable
    (:func:`~ssl_ecg.checkpoint.load_encoder` names that file)."""
    import json

    from ssl_ecg.checkpoint import _config_path

    try:
        meta = json.loads(_config_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    config = (meta.get("pretraining") or {}).get("config") if isinstance(meta, Mapping) else None
    if not isinstance(config, Mapping):
        return None
    return {k: config.get(k) for k in ("leads", "normalization", "band", "fs") if k in config}


def _leads(value: Any) -> list[str] | None:
    from ssl_ecg.data.record import canonical_lead

    return None if value is None else [canonical_lead(str(v)) for v in value]


def _band(value: Any) -> list[float] | None:
    return None if value is None else [float(v) for v in value]


def check_preprocessing(arm: str, pretrained: Mapping[str, Any] | None, spec: Any, per_lead: bool = False,
                        source: str | None = None) -> dict:
    """Compare the evaluation's data settings with the encoder's pretraining ones.

    Another normalisation or band-pass only warns (``UserWarning`` naming the encoder, the key and both
    values). Leads given on both sides, as many but not the same list (another order or other leads), feed
    the encoder's input channels other leads than it learned on: refused for a multi-lead encoder, a warning
    for a per-lead one (each lead is embedded alone). Other lead counts are left to the checkpoint check.

    Args:
        arm: the arm name.
        pretrained: :func:`pretraining_data` of the encoder (None: nothing to compare, returns ``{}``).
        spec: the evaluation's :class:`~ssl_ecg.data.prepare.DataSpec` (``leads``, ``normalization``, ``band``).
        per_lead: the encoder embeds one lead at a time.
        source: how to name the encoder (default ``arm``).

    Returns:
        ``{key: {"evaluation": value, "pretraining": value}}`` for every differing key.

    Raises:
        ConfigError: a multi-lead encoder evaluated on another list of as many leads.
    """
    import warnings

    if not pretrained:
        return {}
    who = source or arm
    ours = {"leads": _leads(spec.leads), "normalization": spec.normalization, "band": _band(spec.band)}
    theirs = {"leads": _leads(pretrained.get("leads")), "normalization": pretrained.get("normalization"),
              "band": _band(pretrained.get("band"))}
    differs = {k: {"evaluation": ours[k], "pretraining": theirs[k]} for k in ours
               if k in pretrained and ours[k] != theirs[k]}
    for key, pair in differs.items():
        a, b = pair["evaluation"], pair["pretraining"]
        if key == "leads":
            if a is None or b is None or len(a) != len(b):
                continue  # "all leads" or another count: the checkpoint check decides
            if not per_lead:
                raise ConfigError(f"{who}: leads {a} differ from its pretraining leads {b} (as many, another "
                                  "order or other leads), so its input channels would get other leads; set "
                                  f"leads: {b}")
        warnings.warn(f"{who}: {key} {a!r} differs from its pretraining {key} {b!r}; its embeddings may suffer",
                      UserWarning, stacklevel=2)
    return differs


def provenance_summary(provenance: dict | None) -> dict:
    """What ``curve.json`` / ``fewshot.json`` record about one encoder's provenance."""
    if provenance is None:
        return {"known": False}
    return {"known": True, "datasets": list(provenance.get("datasets", [])),
            "pool_patients": len(provenance["pool_patients"]),
            "pool_fingerprints": len(provenance["pool_fingerprints"]),
            "label_patients": len(provenance["label_patients"]), "split_hash": provenance["split"]["hash"]}


def allow_flags_line(meta: Mapping[str, Any]) -> str | None:
    """The table-header line for set allow flags (with overlap counts), or None when none is set.

    Args:
        meta: a result or ``curve.json``/``fewshot.json`` payload with ``allow_overlap``,
            ``allow_unknown_provenance`` and ``provenance`` (arm -> summary with ``overlap``).
    """
    parts = []
    arms = meta.get("provenance") or {}
    if meta.get("allow_overlap"):
        counts = ", ".join(f"{arm} {info['overlap']['overlap']} {'/'.join(info['overlap']['evaluated'])}"
                           for arm, info in arms.items() if info.get("overlap"))
        refused = ", ".join(f"{arm} fractions {info['labels']['refused_fractions']}" for arm, info in arms.items()
                            if info.get("labels") and info["labels"]["refused_fractions"])
        parts.append("allow_overlap: true (overlapping patients: " + (counts or "none")
                     + (f"; label-leaking cells kept: {refused}" if refused else "") + ")")
    if meta.get("allow_unknown_provenance"):
        unknown = [arm for arm, info in arms.items() if info.get("known") is False]
        parts.append("allow_unknown_provenance: true (unchecked encoders: " + (", ".join(unknown) or "none") + ")")
    return "; ".join(parts) if parts else None


def path_source(arm: str, path: str | os.PathLike) -> str:
    """How messages name an encoder arm: ``encoders.<arm> (<path>)``."""
    return f"encoders.{arm} ({Path(path)})"
