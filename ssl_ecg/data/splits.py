"""Patient-wise splits, nested label fractions and the leakage check.

Everything here works on patients, never on records or segments, and every
draw is seeded.
"""

from __future__ import annotations

import math
import warnings
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np

from ssl_ecg.errors import ConfigError, SplitError

__all__ = ["patient_split", "official_patient_split", "table_splits", "label_fraction_subsets", "check_no_leakage",
           "check_classes_present", "record_level_ids", "RecordLevelIdsWarning"]


class RecordLevelIdsWarning(UserWarning):
    """Some records' patient ids are their record ids: one patient's records may fall in two splits."""


def record_level_ids(table, dataset: str = "dataset") -> dict | None:
    """How many rows of an index table use the record id as patient id (``patient_id_source == "record"``).

    Args:
        table: index table with ``patient_id_source`` (a table without the column counts as all record-level).
        dataset: dataset name for the message.

    Returns:
        None when every patient id comes from the dataset, else ``{"dataset", "record_level", "records",
        "message"}``; the message names the dataset and the number of records with record-level ids.
    """
    n = len(table)
    if "patient_id_source" in table.columns:
        k = int((table["patient_id_source"].astype(str) == "record").sum())
    else:
        k = n
    if k == 0:
        return None
    message = (f"{dataset}: {k} of {n} records have record-level patient ids (patient_id_source='record': the "
               "data gives no patient), so records of one patient can fall in different splits")
    return {"dataset": dataset, "record_level": k, "records": n, "message": message}


def _strata(patients: Sequence[Hashable], labels: Mapping[Hashable, Hashable] | None) -> dict:
    groups: dict = {}
    for p in patients:
        groups.setdefault(labels.get(p) if labels is not None else None, []).append(p)
    return groups


def patient_split(
    patients: Iterable[Hashable],
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    labels: Mapping[Hashable, Hashable] | None = None,
    seed: int = 0,
    names: Sequence[str] = ("train", "val", "test"),
) -> dict[str, list]:
    """Seeded patient-wise split, stratified on one label per patient.

    Each stratum (patients sharing a label) is shuffled and cut in the given
    proportions, so every split keeps each class's share (up to rounding).

    Args:
        patients: patient ids (duplicates are ignored).
        fractions: share of patients per split; must sum to 1.
        labels: optional patient -> stratum label.
        seed: seed for the shuffle.
        names: split names, one per fraction.

    Returns:
        ``{name: sorted list of patient ids}``.
    """
    if len(fractions) != len(names):
        raise SplitError(f"fractions {list(fractions)} and names {list(names)} differ in length")
    if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise SplitError(f"fractions: expected non-negative shares summing to 1, got {list(fractions)}")
    unique = sorted(set(patients), key=str)
    if not unique:
        raise SplitError("patients: no patients to split")
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {n: [] for n in names}
    cum = np.cumsum(fractions)
    for key in sorted(_strata(unique, labels), key=str):
        members = _strata(unique, labels)[key]
        order = [members[i] for i in rng.permutation(len(members))]
        cuts = [0] + [int(round(c * len(order))) for c in cum]
        for name, a, b in zip(names, cuts[:-1], cuts[1:]):
            out[name].extend(order[a:b])
    for name in names:
        out[name] = sorted(out[name], key=str)
    check_no_leakage(out)
    return out


def official_patient_split(patients: Sequence[Hashable], subsets: Sequence, dataset: str = "dataset",
                           column: str = "split") -> dict[str, list]:
    """Patients per official subset, from one subset name per record.

    Records whose subset is empty (``""``, ``None`` or NaN) put their patient in
    no subset, unless another of the patient's records names one.

    Args:
        patients: patient id (or key) of each record.
        subsets: the record's official subset name (e.g. PTB-XL's "train"/"val"/"test",
            MIT-BIH's "DS1"/"DS2"), aligned with ``patients``.
        dataset: dataset name(s) for messages.
        column: the index column the names come from, for messages.

    Returns:
        ``{subset name: sorted patient list}``, names sorted.

    Raises:
        SplitError: a patient's records lie in two subsets (the official split is
            record-wise there; the message names the patient and the subsets), or
            no record names a subset.
    """
    patients, subsets = list(patients), list(subsets)
    if len(patients) != len(subsets):
        raise SplitError(f"{dataset}: {len(patients)} patient ids but {len(subsets)} {column!r} values")
    where: dict = {}
    for p, name in zip(patients, subsets):
        if name is None or (isinstance(name, float) and math.isnan(name)) or str(name).strip() == "":
            continue
        where.setdefault(p, set()).add(str(name))
    mixed = {p: sorted(names) for p, names in where.items() if len(names) > 1}
    if mixed:
        first = sorted(mixed, key=str)[0]
        raise SplitError(f"{dataset}: official split column {column!r} puts the records of patient {first!r} in "
                         f"subsets {mixed[first]} ({len(mixed)} such patients); expected each patient in one subset "
                         "(draw a patient split with shares instead)")
    if not where:
        raise SplitError(f"{dataset}: official split column {column!r} names no subset for any record")
    out: dict[str, list] = {}
    for p, names in where.items():
        out.setdefault(next(iter(names)), []).append(p)
    return {name: sorted(out[name], key=str) for name in sorted(out)}


def table_splits(table, split: Sequence[float] | str, seed: int = 0, dataset: str = "dataset") -> dict[str, list]:
    """Train/val/test patients of an index table: a seeded :func:`patient_split` with ``split``
    fractions, or ``split="official"`` for the table's own ``split`` column (e.g. PTB-XL's folds).
    The result is checked for leakage.

    Rows whose ``patient_id_source`` is ``"record"`` are counted and reported with a
    :class:`RecordLevelIdsWarning` naming the dataset and the count (see :func:`record_level_ids`,
    which returns the same note for run outputs).
    """
    note = record_level_ids(table, dataset)
    if note is not None:
        warnings.warn(note["message"], RecordLevelIdsWarning, stacklevel=2)
    patients = table["patient_id"].astype(str)
    if split == "official":
        if "split" not in table.columns:
            raise ConfigError(f"split: 'official' needs a dataset with official splits; {dataset} has none")
        splits = {n: sorted(set(patients[table["split"] == n])) for n in ("train", "val", "test")}
    else:
        splits = patient_split(patients, split, seed=seed)
    check_no_leakage(splits)
    return splits


def label_fraction_subsets(
    patients: Sequence[Hashable],
    fractions: Sequence[float],
    labels: Mapping[Hashable, Hashable] | None = None,
    seed: int = 0,
) -> dict[float, list]:
    """Nested, seeded, per-patient label fractions of a training split.

    Single label per patient (a class value): one seeded order is drawn per
    class, and the subset at fraction f takes the first ``max(1, round(f * n_c))``
    patients of each class c, so subsets are stratified, nested, and keep every
    class.

    Multi-label (each value a set, list or tuple of classes): one seeded order
    of all patients; the subset at f is its first ``max(1, round(f * n))``
    patients plus, for every class that prefix lacks, the class's first positive
    patient in the same order. Subsets are nested (a longer prefix that holds a
    class holds its first positive) and keep every class that has a positive
    training patient; a warning names the classes that have none.

    Args:
        patients: training patients.
        fractions: labelled fractions in (0, 1].
        labels: patient -> class (single-label) or collection of classes (multi-label).
        seed: seed of the order.

    Returns:
        ``{fraction: sorted patient list}``.
    """
    for f in fractions:
        if not 0 < f <= 1:
            raise SplitError(f"fractions: each label fraction must be in (0, 1], got {f}")
    unique = sorted(set(patients), key=str)
    if not unique:
        raise SplitError("patients: the training split is empty")
    rng = np.random.default_rng(seed)
    multi = labels is not None and any(isinstance(v, (set, frozenset, list, tuple)) for v in labels.values())
    subsets = {}
    if multi:
        order = [unique[i] for i in rng.permutation(len(unique))]
        first: dict = {}
        for p in order:
            for c in labels.get(p, ()):
                first.setdefault(c, p)
        classes = {c for v in labels.values() for c in v}
        absent = sorted(classes - set(first), key=str)
        if absent:
            warnings.warn(f"label fractions: classes {absent} have no positive training patient", stacklevel=2)
        for f in sorted(fractions):
            chosen = set(order[: max(1, int(round(f * len(order))))])
            present = {c for p in chosen for c in labels.get(p, ())}
            chosen |= {first[c] for c in first if c not in present}
            subsets[f] = sorted(chosen, key=str)
    else:
        strata = _strata(unique, labels)
        orders = {k: [strata[k][i] for i in rng.permutation(len(strata[k]))] for k in sorted(strata, key=str)}
        for f in sorted(fractions):
            chosen = []
            for members in orders.values():
                chosen.extend(members[: max(1, int(round(f * len(members))))])
            subsets[f] = sorted(chosen, key=str)
    keys = sorted(subsets)
    for small, large in zip(keys[:-1], keys[1:]):
        if not set(subsets[small]) <= set(subsets[large]):  # guaranteed by construction
            raise SplitError(f"label fractions {small} and {large} are not nested")
    return subsets


def check_no_leakage(splits: Mapping[str, Iterable[Hashable]]) -> None:
    """Raise :class:`SplitError` if any patient appears in two splits or a split is empty."""
    seen: dict = {}
    for name, members in splits.items():
        members = list(members)
        if not members:
            raise SplitError(f"split {name!r} is empty")
        for p in members:
            if p in seen and seen[p] != name:
                raise SplitError(f"patient {p!r} is in both split {seen[p]!r} and {name!r}")
            seen[p] = name


def check_classes_present(labels: Sequence, where: str, task: str) -> None:
    """Raise :class:`SplitError` unless binary ``labels`` hold both classes."""
    values = set(np.asarray(labels).astype(int).tolist())
    if values != {0, 1}:
        missing = sorted({0, 1} - values)
        raise SplitError(
            f"task {task!r}, {where}: class(es) {missing} have no patients; "
            "use a larger label fraction or another split seed"
        )
