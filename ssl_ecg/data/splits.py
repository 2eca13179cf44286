"""Patient-wise splits, nested label fractions and the leakage check.

Everything here works on patients, never on records or segments, and every
draw is seeded.
"""

from __future__ import annotations

import math
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np

from ssl_ecg.errors import SplitError

__all__ = ["patient_split", "label_fraction_subsets", "check_no_leakage", "check_classes_present"]


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


def label_fraction_subsets(
    patients: Sequence[Hashable],
    fractions: Sequence[float],
    labels: Mapping[Hashable, Hashable] | None = None,
    seed: int = 0,
) -> dict[float, list]:
    """Nested, seeded, per-patient label fractions of a training split.

    One seeded order is drawn per class; the subset at fraction f takes the
    first ``max(1, round(f * n_c))`` patients of each class c. Subsets are
    therefore nested (the 10% subset lies inside the 25% subset) and every class
    keeps at least one patient.

    Args:
        patients: training patients.
        fractions: labelled fractions in (0, 1].
        labels: patient -> class used for stratification (``None``: no strata).
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
    strata = _strata(unique, labels)
    orders = {k: [strata[k][i] for i in rng.permutation(len(strata[k]))] for k in sorted(strata, key=str)}
    subsets = {}
    for f in sorted(fractions):
        chosen = []
        for order in orders.values():
            chosen.extend(order[: max(1, int(round(f * len(order))))])
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
