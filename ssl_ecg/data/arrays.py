"""Deprecated: a whole (small) dataset as one (R, L, T) array, read through the record cache.

Use :func:`ssl_ecg.data.prepare` and :meth:`~ssl_ecg.data.prepare.Prepared.arrays`
instead: they read the same memmap cache as pretraining and attach the patient
split. :func:`load_signals` is kept as a thin view over that cache, so it
preprocesses exactly as the cache does (one data path) and defaults to the one
bad-lead policy, ``"zero_lead"``.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from contextlib import ExitStack
from typing import Sequence

import numpy as np
import pandas as pd

from ssl_ecg.data.cache import CacheParams, open_cache
from ssl_ecg.data.index import DatasetIndex
from ssl_ecg.data.preprocess import BadLeadPolicy, Normalization
from ssl_ecg.errors import DatasetError, RecordError

__all__ = ["load_signals"]


def load_signals(
    index: DatasetIndex,
    fs: float | None = 250.0,
    n_samples: int | None = None,
    leads: Sequence[str] | None = None,
    normalization: Normalization = "record",
    bad_lead_policy: BadLeadPolicy = "zero_lead",
    min_samples: int = 1,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Deprecated view of the record cache: every record of ``index``, preprocessed and stacked.

    The records are cached with :func:`ssl_ecg.data.cache.open_cache` (under
    ``cache_dir``, or a temporary folder removed afterwards) and cut to
    ``n_samples`` (default: the shortest record) from the start. With
    ``fs=None`` the records' common rate is kept, and mixed rates are an error.

    Args:
        min_samples: records shorter than this after resampling raise
            :class:`RecordError` naming the record (e.g. shorter than two segments).
        cache_dir: the cache root to build in or reuse; default a temporary folder.

    Returns:
        ``(signals, table)``: float32 (R, L, T) and the cached rows in order, with
        their ``fingerprint`` (records dropped by ``bad_lead_policy='drop_record'``
        are left out and counted in ``table.attrs['dropped']``).

    Raises:
        DatasetError: mixed rates with ``fs=None``, or no record left.
        RecordError: a record cannot be read, or is shorter than ``min_samples`` / ``n_samples``.
    """
    warnings.warn("load_signals is deprecated: use ssl_ecg.data.prepare(DataSpec(...)).arrays(n_samples), which reads "
                  "the same memmap cache as pretraining", DeprecationWarning, stacklevel=2)
    if fs is None:
        rates: dict[float, str] = {}
        for i in range(len(index)):
            rec = index.read(i)
            rates.setdefault(float(rec.fs), rec.path or rec.record_id)
        if len(rates) > 1:
            where = list(rates.values())[-1]
            raise DatasetError(f"{index.name}: mixed sampling rates {sorted(rates)} Hz (at {where}) "
                               "and no resampling; pass fs= to resample")
        fs = next(iter(rates))
    params = CacheParams(fs=fs, leads=tuple(leads) if leads else None, normalization=normalization,
                         bad_lead_policy=bad_lead_policy)
    with ExitStack() as stack:
        root = cache_dir if cache_dir is not None else stack.enter_context(tempfile.TemporaryDirectory())
        cache = open_cache(index, root, params)
        lengths = cache.table["length"].to_numpy()
        ids = cache.table["record_id"].astype(str).to_numpy()
        if (lengths < min_samples).any():
            k = int(np.flatnonzero(lengths < min_samples)[0])
            raise RecordError(f"{index.name} record {ids[k]}: {int(lengths[k])} samples at {fs} Hz, "
                              f"shorter than the {min_samples} samples required")
        length = int(n_samples or lengths.min())
        short = ids[lengths < length].tolist()
        if short:
            raise RecordError(f"{index.name}: records {short[:5]} are shorter than {length} samples")
        signals = np.empty((len(cache), cache.n_leads, length), dtype=np.float32)
        for i in range(len(cache)):
            signals[i] = cache.record(i)[:, :length]
        table = cache.table.drop(columns=["offset", "length"]).reset_index(drop=True)
        table.attrs["dropped"] = int(cache.manifest.get("dropped_bad_leads", 0))
        cache._memmap = None  # close the map before a temporary folder is removed
    return signals, table
