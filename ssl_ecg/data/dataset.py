"""A torch Dataset of random windows from a :class:`~ssl_ecg.data.cache.RecordCache`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ssl_ecg.data.cache import RecordCache
from ssl_ecg.errors import DatasetError, RecordError

__all__ = ["CacheWindows"]


class CacheWindows(Dataset):
    """Item i: a random ``window``-sample crop (L, window) of record i and its target.

    The target is the record's patient code (for patient-aware losses) or, with
    ``targets``, any per-record integer code (class labels for supervised contrast).

    View makers (``augmentations.SegmentViews`` and friends) then cut the views
    from whole batches on the training device. Starts are drawn from a generator
    seeded with (seed, epoch, i): the same seed and epoch give the same crops in
    any worker layout; call :meth:`set_epoch` each epoch.

    Args:
        cache: an opened record cache.
        window: samples per item (e.g. n_segments x segment length).
        seed: base seed.
        records: positions in ``cache.table`` to use (default all).
        targets: integer code per cache record (default: patient codes).
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
            return x, int(self.patient_codes[i])
        return x, int(self.patient_codes[i]), int(self.labels[i])
