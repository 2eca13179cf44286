"""Torch Datasets of random windows from a :class:`~ssl_ecg.data.cache.RecordCache`: one item per
record (all leads), or one item per (record, lead) pair (CLOCS' CMSC instances)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ssl_ecg.data.cache import RecordCache
from ssl_ecg.errors import DatasetError, RecordError

__all__ = ["CacheWindows", "CacheLeadWindows", "contrast_targets"]


def contrast_targets(column: pd.Series, name: str = "label") -> tuple[np.ndarray, list, np.ndarray]:
    """Targets for supervised contrast (sCL-ST's SupCon) from one label column of an index.

    - A list-valued column (PhysioNet/CinC ``dx``/``scored``: each value a list,
      tuple or set of classes) is multi-label: (R, C) float32 multi-hot rows over
      the sorted classes (scikit-learn's ``MultiLabelBinarizer``), for
      :class:`~losses.SupConLoss`'s Jaccard-weighted positives. A record with an
      **empty** label set (e.g. no scored class) or a missing value is
      **unlabelled and dropped** from supervised pretraining: SupCon gives an
      all-zero row no positive (not even its own views), so keeping it would
      only add a negative with no anchor term of its own.
    - Any other column is single-label: (R,) integer codes, one per distinct
      value (missing values unlabelled).

    Args:
        column: the label column, one value per cache record.
        name: the column's name, for errors.

    Returns:
        (targets, classes, labelled): targets as above (unlabelled rows are zero
        / -1), the class names, and a boolean mask of labelled records.
    """
    values = column.tolist()
    is_set = [isinstance(v, (list, tuple, set, frozenset)) for v in values]
    if any(is_set):
        bad = [v for v, s in zip(values, is_set) if not s and not _missing(v)]
        if bad:
            raise DatasetError(f"label: column {name!r} mixes label lists with single values (e.g. {bad[0]!r}); "
                               "expected a list of classes (or nothing) per record")
        from sklearn.preprocessing import MultiLabelBinarizer

        sets = [[str(c) for c in v] if s else [] for v, s in zip(values, is_set)]
        binarizer = MultiLabelBinarizer()
        targets = binarizer.fit_transform(sets).astype(np.float32)
        if targets.shape[1] == 0:
            raise DatasetError(f"label: column {name!r} has no class in any record")
        return targets, [str(c) for c in binarizer.classes_], targets.sum(1) > 0
    labelled = np.array([not _missing(v) for v in values], dtype=bool)
    codes = np.full(len(values), -1, dtype=np.int64)
    codes[labelled], classes = pd.factorize(column[labelled].astype(str))
    return codes, [str(c) for c in classes], labelled


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


class CacheWindows(Dataset):
    """Item i: a random ``window``-sample crop (L, window) of record i and its target.

    The target is the record's patient code (for patient-aware losses) or, with
    ``targets``, any per-record code: integers (class labels for supervised contrast) or
    (R, C) multi-hot rows (multi-label supervised contrast), returned as float32 (C,) tensors.

    View makers (``augmentations.SegmentViews`` and friends) then cut the views
    from whole batches on the training device. Starts are drawn from a generator
    seeded with (seed, epoch, i): the same seed and epoch give the same crops in
    any worker layout; call :meth:`set_epoch` each epoch.

    Args:
        cache: an opened record cache.
        window: samples per item (e.g. n_segments x segment length).
        seed: base seed.
        records: positions in ``cache.table`` to use (default all).
        targets: integer code, or (C,) multi-hot row, per cache record (default: patient codes).
        labels: optional integer class per cache record (-1: unlabelled) for an
            online monitor; items are then ``(x, target, label)``.
    """

    def __init__(self, cache: RecordCache, window: int, seed: int = 0, records=None, targets=None, labels=None):
        self.cache = cache
        self.window = int(window)
        self.seed = int(seed)
        self.epoch = 0
        self.records = np.arange(len(cache)) if records is None else np.asarray(records, dtype=np.int64)
        if len(self.records) == 0:
            raise DatasetError("records: the dataset is empty")
        lengths = cache.table["length"].to_numpy()[self.records]
        if (lengths < self.window).any():
            bad = cache.table["record_id"].to_numpy()[self.records][lengths < self.window][:5].tolist()
            raise RecordError(f"records {bad} are shorter than the {self.window}-sample window "
                              f"({self.window / cache.fs:.2f} s at {cache.fs} Hz)")
        self.lengths = lengths
        codes = pd.factorize(cache.table["patient_id"].astype(str))[0] if targets is None else np.asarray(targets)
        if len(codes) != len(cache):
            raise DatasetError(f"targets: expected one code per cache record ({len(cache)}), got {len(codes)}")
        self.patient_codes = codes[self.records]
        self.labels = None
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            if len(labels) != len(cache):
                raise DatasetError(f"labels: expected one per cache record ({len(cache)}), got {len(labels)}")
            self.labels = labels[self.records]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        start = int(rng.integers(0, self.lengths[i] - self.window + 1))
        x = self.cache.segment(int(self.records[i]), start, self.window)
        x = torch.from_numpy(np.array(x, dtype=np.float32))
        if self.labels is None:
            return x, self._target(i)
        return x, self._target(i), int(self.labels[i])

    def _target(self, i: int):
        code = self.patient_codes[i]
        if np.ndim(code) == 1:  # a multi-hot row
            return torch.as_tensor(code, dtype=torch.float32)
        return int(code)


class CacheLeadWindows(CacheWindows):
    """Item i: lead ``i % L`` of record ``records[i // L]`` as a random (1, ``window``) crop.

    This is how CLOCS (Kiyasseh et al., ICML 2021) feeds CMSC: every (record,
    lead) pair is its own instance, shuffled independently over the pool (with
    :class:`~ssl_ecg.data.sampler.EpochShuffleSampler`), so a batch is (B, 1, T)
    single-lead windows and the views are adjacent segments of that one lead.
    The leads of a record share a batch only by chance.

    Differences from the CLOCS code (``prepare_dataset.my_dataset_contrastive``),
    which stores fixed, precomputed frames per lead: here each pair draws its own
    random start every epoch from a generator seeded with (seed, epoch, i), so
    the leads of a record get independent crops (a record exactly one window long,
    e.g. Chapman's 10 s with two 5 s frames, gives CLOCS' frames exactly); and
    frames are not min-max normalised (signals stay in millivolts).

    Items are ``(x, target, lead)``, or ``(x, target, label, lead)`` with
    ``labels`` (the label stays third, where the online monitor reads it). The
    target is the record's patient code (``positives: patient``: any view of the
    same patient is a positive, as in CLOCS), or with ``same_lead`` the code
    ``patient * L + lead`` (``positives: patient_lead``).

    ``instance_patients`` and ``instance_leads`` (one per item) give the pool to
    :func:`~ssl_ecg.data.sampler.cross_lead_positive_rate`; patients are counted
    by patient key (``patients``, default the cache table's ``patient_key`` column,
    else ``(dataset, patient_id)``, else ``patient_id``), so equal ids of two
    datasets in a pool are two patients and one patient keyed in two datasets is one.

    Args:
        cache, window, seed, records, targets, labels: as in :class:`CacheWindows`.
        same_lead: make the target lead-specific.
        patients: patient key of each cache record (e.g. the prepared table's
            ``patient_key``), for ``instance_patients``.
    """

    def __init__(self, cache: RecordCache, window: int, seed: int = 0, records=None, targets=None, labels=None,
                 same_lead: bool = False, patients=None):
        super().__init__(cache, window, seed=seed, records=records, targets=targets, labels=labels)
        self.n_leads = int(cache.n_leads)
        self.same_lead = bool(same_lead)
        if self.same_lead and np.ndim(self.patient_codes) != 1:
            raise DatasetError("same_lead: lead-specific targets need integer codes, not multi-hot rows")
        if patients is None:
            t = cache.table
            patients = (t["patient_key"] if "patient_key" in t.columns
                        else t["dataset"].astype(str) + ":" + t["patient_id"].astype(str) if "dataset" in t.columns
                        else t["patient_id"])
        patients = np.asarray(patients).astype(str)
        if len(patients) != len(cache):
            raise DatasetError(f"patients: expected one patient key per cache record ({len(cache)}), "
                               f"got {len(patients)}")
        patients = pd.factorize(patients)[0][self.records]
        self.instance_patients = np.repeat(patients, self.n_leads)
        self.instance_leads = np.tile(np.arange(self.n_leads), len(self.records))

    def __len__(self) -> int:
        return len(self.records) * self.n_leads

    def record_lead(self, i: int) -> tuple[int, int]:
        """(position in ``records``, lead index) of item ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"i: {i} is outside the {len(self)} (record, lead) items")
        return divmod(int(i), self.n_leads)

    def __getitem__(self, i: int):
        pos, lead = self.record_lead(i)
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        start = int(rng.integers(0, self.lengths[pos] - self.window + 1))
        x = self.cache.segment(int(self.records[pos]), start, self.window)[lead:lead + 1]
        x = torch.from_numpy(np.array(x, dtype=np.float32))
        target = self._target(pos)
        if self.same_lead:
            target = target * self.n_leads + lead
        if self.labels is None:
            return x, target, lead
        return x, target, int(self.labels[pos]), lead
