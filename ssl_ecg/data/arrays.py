"""Load a whole (small) dataset into one preprocessed (R, L, T) array."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ssl_ecg.data.index import DatasetIndex
from ssl_ecg.data.preprocess import BadLeadPolicy, Normalization, preprocess
from ssl_ecg.errors import DatasetError, RecordError

__all__ = ["load_signals"]


def load_signals(
    index: DatasetIndex,
    fs: float | None = 250.0,
    n_samples: int | None = None,
    leads: Sequence[str] | None = None,
    normalization: Normalization = "record",
    bad_lead_policy: BadLeadPolicy = "error",
    min_samples: int = 1,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Read, preprocess and stack every record of ``index``.

    Records are cut to ``n_samples`` (default: the shortest record) from the start.
    With ``fs=None`` nothing is resampled, and mixed sampling rates are an error.

    Args:
        min_samples: records shorter than this after resampling raise
            :class:`RecordError` naming the record (e.g. shorter than two segments).

    Returns:
        ``(signals, table)``: float32 (R, L, T) and the index rows kept, in order
        (records dropped by ``bad_lead_policy='drop_record'`` are left out and
        counted in ``table.attrs['dropped']``).
    """
    arrays, keep, dropped, rates = [], [], 0, set()
    for i in range(len(index)):
        rec = preprocess(index.read(i), fs=fs, leads=leads, normalization=normalization,
                         bad_lead_policy=bad_lead_policy)
        if rec is None:
            dropped += 1
            continue
        if rec.n_samples < min_samples:
            raise RecordError(f"{rec.path or rec.record_id}: {rec.n_samples} samples at {fs} Hz, "
                              f"shorter than the {min_samples} samples required")
        arrays.append(rec.signal)
        keep.append(i)
        rates.add(rec.fs)
        if len(rates) > 1:
            where = rec.path or rec.record_id
            raise DatasetError(f"{index.name}: mixed sampling rates {sorted(rates)} Hz (at {where}) "
                               "and no resampling; pass fs= to resample")
    if not arrays:
        raise DatasetError(f"{index.name} at {index.root}: no records left after preprocessing")
    n_leads = {a.shape[0] for a in arrays}
    if len(n_leads) != 1:
        raise DatasetError(f"{index.name}: records have different lead counts {sorted(n_leads)}; pass leads=")
    length = n_samples or min(a.shape[1] for a in arrays)
    short = [index.table.iloc[k]["record_id"] for k, a in zip(keep, arrays) if a.shape[1] < length]
    if short:
        raise RecordError(f"{index.name}: records {short[:5]} are shorter than {length} samples")
    signals = np.stack([a[:, :length] for a in arrays]).astype(np.float32)
    table = index.table.iloc[keep].reset_index(drop=True)
    table.attrs["dropped"] = dropped
    return signals, table
