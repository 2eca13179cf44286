"""Dataset indexes and the :func:`load_index` registry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ssl_ecg.data.record import Record
from ssl_ecg.errors import DatasetError

__all__ = ["DatasetIndex", "load_index", "register_dataset", "DATASETS", "REQUIRED_COLUMNS"]

REQUIRED_COLUMNS = ("record_id", "patient_id", "patient_id_source", "fs", "n_samples")

DATASETS = ("ptbxl", "ludb", "cinc2020", "cinc2021", "cpsc2018", "chapman", "incart", "mitdb", "cinc2017")

_BUILDERS: dict[str, Callable[..., "DatasetIndex"]] = {}


@dataclass
class DatasetIndex:
    """A table of a dataset's records and a way to read each one.

    Attributes:
        name: dataset name, as given to :func:`load_index`.
        root: dataset folder.
        table: one row per record with at least ``record_id``, ``patient_id``,
            ``patient_id_source`` ("dataset" or "record"), ``fs``, ``n_samples``,
            ``path`` and the dataset's label columns.
        reader: ``reader(row) -> Record`` for one table row.
        label_columns: names of the label columns in ``table``.
    """

    name: str
    root: Path
    table: pd.DataFrame
    reader: Callable[[pd.Series], Record]
    label_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in self.table.columns]
        if missing:
            raise DatasetError(f"{self.name} index at {self.root}: missing columns {missing}")
        if len(self.table) == 0:
            raise DatasetError(f"{self.name} index at {self.root}: no records")
        dup = self.table["record_id"][self.table["record_id"].duplicated()].tolist()
        if dup:
            raise DatasetError(f"{self.name} index at {self.root}: duplicate record ids {dup[:5]}")
        if self.table["patient_id"].isna().any() or (self.table["patient_id"].astype(str) == "").any():
            bad = self.table.loc[self.table["patient_id"].isna(), "record_id"].tolist()[:5]
            raise DatasetError(f"{self.name} index at {self.root}: records without patient_id {bad}")

    def __len__(self) -> int:
        return len(self.table)

    def read(self, i: int) -> Record:
        """Read record ``i`` (row position in ``table``)."""
        row = self.table.iloc[i]
        rec = self.reader(row)
        rec.labels = {c: row[c] for c in self.label_columns}
        return rec


def register_dataset(name: str):
    """Decorator registering ``builder(root) -> DatasetIndex`` under ``name``."""

    def wrap(builder):
        _BUILDERS[name] = builder
        return builder

    return wrap


def load_index(name: str, root: str | os.PathLike, **options) -> DatasetIndex:
    """Build the index of dataset ``name`` from its official layout under ``root``.

    Args:
        name: one of ``ptbxl ludb cinc2020 cinc2021 cpsc2018 chapman incart mitdb cinc2017``.
        root: the dataset's folder (for LUDB, the folder holding ``ludb.csv``).
        **options: adapter options, e.g. ``fs=500`` for PTB-XL.

    Raises:
        DatasetError: unknown name, missing folder or malformed label files.
    """
    key = name.lower()
    if key not in DATASETS:
        raise DatasetError(f"dataset name {name!r} is unknown; expected one of {', '.join(DATASETS)}")
    if key not in _BUILDERS:
        available = ", ".join(sorted(_BUILDERS))
        raise DatasetError(f"dataset {name!r}: no adapter in this version yet (available: {available})")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{name} root {root}: not a directory")
    try:
        return _BUILDERS[key](root, **options)
    except TypeError as exc:
        if "argument" in str(exc):
            raise DatasetError(f"{name}: invalid options {sorted(options)} ({exc})") from exc
        raise
