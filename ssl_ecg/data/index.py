"""Dataset indexes and the :func:`load_index` registry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from ssl_ecg.data.record import Record
from ssl_ecg.errors import DatasetError, RecordError, SslEcgError

__all__ = ["DatasetIndex", "load_index", "register_dataset", "DATASETS", "REQUIRED_COLUMNS", "read_csv_checked",
           "require_columns", "check_unique", "confine_paths"]

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
        """Read record ``i`` (row position in ``table``).

        Raises:
            RecordError: the record cannot be read. The message names the
                record's file, so a bulk build (cache, index) can report or skip
                it; reader errors that are not ssl-ecg errors (``OSError``,
                ``ValueError``, ...) are wrapped into one that names the path.
        """
        row = self.table.iloc[i]
        try:
            rec = self.reader(row)
        except SslEcgError:
            raise
        except (OSError, ValueError, KeyError, IndexError, EOFError) as exc:
            where = row["path"] if "path" in row.index else f"{self.root} record {row['record_id']}"
            raise RecordError(f"{where}: cannot read {self.name} record {row['record_id']!r} "
                              f"({type(exc).__name__}: {exc})") from exc
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


def read_csv_checked(path: Path, what: str, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv`` whose failures are :class:`DatasetError` naming the file.

    Args:
        path: the CSV file.
        what: what the file is, for messages (e.g. ``"LUDB label file"``).
        **kwargs: passed to ``pandas.read_csv``.

    Raises:
        DatasetError: the file is missing, empty, not UTF-8 or not parseable CSV.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise DatasetError(f"{path}: cannot parse the {what} as CSV ({type(exc).__name__}: {exc}); expected "
                           "UTF-8 comma-separated rows") from exc


def require_columns(path: Path, table: pd.DataFrame, columns: tuple[str, ...] | list[str]) -> None:
    """Raise :class:`DatasetError` naming ``path`` and the absent ``columns``."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}; expected at least {list(columns)} "
                           f"(found {list(table.columns)})")


def check_unique(path: Path, ids: pd.Series | list, what: str = "record id") -> None:
    """Raise :class:`DatasetError` naming ``path`` and the first repeated ids with their row numbers.

    Row numbers count data rows from 1 (the header line is not counted).
    """
    ids = pd.Series(list(ids))
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        first = {}
        for pos, value in dup.items():
            first.setdefault(value, []).append(pos + 1)
        shown = "; ".join(f"{v!r} in rows {rows}" for v, rows in list(first.items())[:5])
        raise DatasetError(f"{path}: {len(first)} {what}s appear more than once ({shown}); expected each once")


def confine_paths(root: Path, entries: Iterable[object], source: Path, labels: Iterable[str],
                  what: str = "entry", suffix: str = ".hea") -> list[str]:
    """``str(root / entry)`` for each path a dataset's own file lists, each checked to stay inside ``root``.

    PTB-XL's ``filename_lr``/``filename_hr`` columns and LUDB's or MIT-BIH's ``RECORDS`` lines name the
    records to read; an edited or planted file must not make the reader open a header outside the
    dataset. Every entry must be a plain relative path (see :func:`ssl_ecg.data.download.unsafe_reason`:
    no absolute path, ``..``, ``.``, empty segment, backslash, drive letter or control character), and
    ``root / (entry + suffix)`` must resolve inside ``root`` (no symbolic link leading out). Folder
    resolutions are cached, so a 21,000-row index costs one ``lstat`` per entry.

    Args:
        root: the dataset folder.
        entries: the paths as listed (record stems such as ``data/1`` or ``records100/00000/00001_lr``).
        source: the file that lists them, named in the error.
        labels: where each entry sits in ``source`` (e.g. ``"line 3"``, ``"row 5 (ecg_id 5)"``).
        what: what an entry is, for the message (e.g. ``"record path"``, ``"filename_lr"``).
        suffix: appended to an entry to name the file that is opened first (the header).

    Returns:
        The unresolved paths ``str(root / entry)``, in order.

    Raises:
        DatasetError: naming ``source``, the entry's place and the entry, when one is not a plain relative
            path or resolves outside ``root``.
    """
    from ssl_ecg.data.download import unsafe_reason

    base = Path(os.path.realpath(root))
    parents: dict[str, Path] = {}
    out = []
    for entry, label in zip(entries, labels):
        reason = unsafe_reason(entry) if isinstance(entry, str) else f"is {type(entry).__name__}, not text"
        if reason is None:
            target = root / entry
            key = str(target.parent)
            if key not in parents:
                parents[key] = Path(os.path.realpath(target.parent))
            final = parents[key] / (target.name + suffix)
            if final.is_symlink():
                final = Path(os.path.realpath(final))
            if final == base or not final.is_relative_to(base):
                reason = f"resolves to {final} through a symbolic link"
        if reason is not None:
            raise DatasetError(f"{source}: {what} {entry!r} leaves the dataset folder ({reason}) at {label}; "
                               f"expected a relative path inside {root}")
        out.append(str(root / entry))
    return out
