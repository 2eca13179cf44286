"""PTB-XL (Wagner et al., Scientific Data 7, 2020; PhysioNet ``ptb-xl``).

Labels follow the PTB-XL benchmark (Strodthoff et al., IEEE JBHI 2021;
``helme/ecg_ptbxl_benchmarking``): every SCP statement key of a record counts,
whatever its likelihood, and tasks aggregate them through
``scp_statements.csv``:

- ``all``: every statement; ``diagnostic``: statements with ``diagnostic == 1``;
- ``subdiagnostic`` / ``superdiagnostic``: their ``diagnostic_subclass`` / ``diagnostic_class``;
- ``form``: ``form == 1``; ``rhythm``: ``rhythm == 1``.

Splits are the official stratified folds: 1-8 train, 9 validation, 10 test
(each patient lies in one fold).
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ssl_ecg.data.index import (
    DatasetIndex,
    check_unique,
    confine_paths,
    read_csv_checked,
    register_dataset,
    require_columns,
)
from ssl_ecg.data.record import read_record
from ssl_ecg.errors import DatasetError

__all__ = ["load_ptbxl", "PTBXL_TASKS", "multi_hot", "V102_DUPLICATES"]

PTBXL_TASKS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
# ecg_ids that PTB-XL 1.0.2 removed as duplicates (one of them, 145, duplicates 463 of another patient).
V102_DUPLICATES = frozenset({137, 139, 140, 141, 142, 143, 145, 456, 458, 459, 461, 462})
_DB_COLUMNS = ("ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr")


def _statements(path: Path) -> pd.DataFrame:
    df = read_csv_checked(path, "PTB-XL statement file", index_col=0)
    require_columns(path, df, ("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"))
    check_unique(path, df.index.to_series(), "statement")
    for column in ("diagnostic", "form", "rhythm"):
        flags = pd.to_numeric(df[column], errors="coerce")
        bad = df.index[(flags.isna() & df[column].notna()) | ~flags.isin([0, 1]) & flags.notna()].tolist()
        if bad:
            raise DatasetError(f"{path}: column {column!r} of statements {bad[:5]} holds "
                               f"{df.loc[bad[0], column]!r}; expected 1, 0 or empty")
        df[column] = flags
    return df


def _scp_codes(db_path: Path, ecg_id, text) -> dict:
    """Parse one ``scp_codes`` cell (a Python dict literal of statement -> likelihood)."""
    try:
        codes = ast.literal_eval(text) if isinstance(text, str) else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        codes = None
    if not isinstance(codes, dict) or not all(isinstance(k, str) for k in codes):
        raise DatasetError(f"{db_path}: ecg_id {ecg_id}: scp_codes {text!r} is not a dict of statement codes; "
                           "expected e.g. {'NORM': 100.0, 'SR': 0.0}")
    return codes


def _integers(db_path: Path, db: pd.DataFrame, column: str, ids: pd.Series, low: int | None = None,
              high: int | None = None) -> pd.Series:
    """A column of whole numbers (``15709.0`` allowed), or a DatasetError naming the first bad ecg_id."""
    values = pd.to_numeric(db[column], errors="coerce")
    bad = values.isna() | (values != values.round())
    if low is not None:
        bad |= values < low
    if high is not None:
        bad |= values > high
    if bad.any():
        k = int(np.flatnonzero(bad.to_numpy())[0])
        where = f"ecg_id {ids.iloc[k]}" if column != "ecg_id" else f"row {k + 1}"
        expected = f"a whole number in {low}-{high}" if low is not None else "a whole number"
        raise DatasetError(f"{db_path}: {where}: {column} {str(db[column].iloc[k])!r}; expected {expected} "
                           f"({int(bad.sum())} bad rows)")
    return values.astype(np.int64)


def _task_labels(codes: dict, stmts: pd.DataFrame, task: str) -> list[str]:
    keys = [k for k in codes if k in stmts.index]
    if task == "all":
        out = keys
    elif task in ("diagnostic", "form", "rhythm"):
        out = [k for k in keys if stmts.at[k, task] == 1]
    else:
        column = "diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"
        out = [stmts.at[k, column] for k in keys if stmts.at[k, "diagnostic"] == 1]
        out = [v for v in out if isinstance(v, str)]
    return sorted(set(out))


@register_dataset("ptbxl")
def load_ptbxl(root: Path, fs: int = 100, missing: str = "warn", drop_duplicates: bool = True) -> DatasetIndex:
    """Index PTB-XL from its PhysioNet layout.

    Args:
        root: folder with ``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/``, ``records500/``.
        fs: 100 (``filename_lr``) or 500 (``filename_hr``).
        missing: records whose files are absent: ``"warn"`` (skip, count in
            ``table.attrs['missing']``, warn) or ``"error"``.
        drop_duplicates: drop the ecg_ids that PTB-XL 1.0.2 removed as duplicates.
    """
    if fs not in (100, 500):
        raise DatasetError(f"fs: PTB-XL ships 100 and 500 Hz records, got {fs}")
    if missing not in ("warn", "error"):
        raise DatasetError(f"missing: expected 'warn' or 'error', got {missing!r}")
    db_path = root / "ptbxl_database.csv"
    db = read_csv_checked(db_path, "PTB-XL database file")
    require_columns(db_path, db, _DB_COLUMNS)
    stmts = _statements(root / "scp_statements.csv")
    if db["patient_id"].isna().any():
        raise DatasetError(f"{db_path}: ecg_ids {db.loc[db['patient_id'].isna(), 'ecg_id'].tolist()[:5]} "
                           "have no patient_id")
    db = db.assign(ecg_id=_integers(db_path, db, "ecg_id", db["ecg_id"]))
    check_unique(db_path, db["ecg_id"], "ecg_id")
    db = db.assign(patient_id=_integers(db_path, db, "patient_id", db["ecg_id"]),
                   strat_fold=_integers(db_path, db, "strat_fold", db["ecg_id"], 1, 10))
    if drop_duplicates:
        db = db[~db["ecg_id"].isin(V102_DUPLICATES)]
    column = "filename_lr" if fs == 100 else "filename_hr"
    # data rows count from 1 (the header is not counted); the index is read_csv's, kept through the filter
    labels = (f"row {i + 1} (ecg_id {e})" for i, e in zip(db.index, db["ecg_id"]))
    paths = pd.Series(confine_paths(root, db[column].tolist(), db_path, labels, what=column), index=db.index)
    exists = paths.map(lambda p: Path(p + ".hea").is_file())
    if not exists.all():
        lost = db.loc[~exists, "ecg_id"].tolist()
        if missing == "error":
            raise DatasetError(f"{root}: {len(lost)} records at {fs} Hz have no files (e.g. ecg_id {lost[:5]})")
        warnings.warn(f"PTB-XL at {root}: skipping {len(lost)} records without {fs} Hz files", stacklevel=2)
    db, paths = db[exists.to_numpy()], paths[exists.to_numpy()]
    codes = [_scp_codes(db_path, e, c) for e, c in zip(db["ecg_id"], db["scp_codes"])]
    table = pd.DataFrame({
        "record_id": db["ecg_id"].astype(str).to_numpy(),
        "path": paths.to_numpy(),
        "patient_id": db["patient_id"].astype(str).to_numpy(),
        "patient_id_source": "dataset",
        "fs": float(fs),
        "n_samples": 10 * fs,
        "strat_fold": db["strat_fold"].to_numpy(),
    })
    table["split"] = np.where(table["strat_fold"] <= 8, "train", np.where(table["strat_fold"] == 9, "val", "test"))
    for task in PTBXL_TASKS:
        table[task] = [_task_labels(c, stmts, task) for c in codes]
    table.attrs["missing"] = int((~exists).sum())

    def reader(row):
        return read_record(row["path"], record_id=row["record_id"], patient_id=row["patient_id"])

    return DatasetIndex("ptbxl", root, table, reader, ("strat_fold", "split") + PTBXL_TASKS)


def multi_hot(labels: pd.Series, classes: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Lists of labels -> (n, C) 0/1 matrix and the class order (sorted, unless given)."""
    classes = sorted({c for row in labels for c in row}) if classes is None else list(classes)
    pos = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for i, row in enumerate(labels):
        for c in row:
            if c in pos:
                y[i, pos[c]] = 1.0
    return y, classes
