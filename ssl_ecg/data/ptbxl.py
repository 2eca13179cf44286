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

from ssl_ecg.data.index import DatasetIndex, register_dataset
from ssl_ecg.data.record import read_record
from ssl_ecg.errors import DatasetError

__all__ = ["load_ptbxl", "PTBXL_TASKS", "multi_hot", "V102_DUPLICATES"]

PTBXL_TASKS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
# ecg_ids that PTB-XL 1.0.2 removed as duplicates (one of them, 145, duplicates 463 of another patient).
V102_DUPLICATES = frozenset({137, 139, 140, 141, 142, 143, 145, 456, 458, 459, 461, 462})
_DB_COLUMNS = ("ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr")


def _statements(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"{path}: PTB-XL statement file not found")
    df = pd.read_csv(path, index_col=0)
    missing = [c for c in ("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass")
               if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}")
    return df


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
    if not db_path.is_file():
        raise DatasetError(f"{db_path}: PTB-XL database file not found")
    db = pd.read_csv(db_path)
    absent = [c for c in _DB_COLUMNS if c not in db.columns]
    if absent:
        raise DatasetError(f"{db_path}: missing columns {absent}")
    stmts = _statements(root / "scp_statements.csv")
    if db["patient_id"].isna().any():
        raise DatasetError(f"{db_path}: ecg_ids {db.loc[db['patient_id'].isna(), 'ecg_id'].tolist()[:5]} "
                           "have no patient_id")
    if drop_duplicates:
        db = db[~db["ecg_id"].isin(V102_DUPLICATES)]
    column = "filename_lr" if fs == 100 else "filename_hr"
    paths = db[column].map(lambda p: str(root / p))
    exists = paths.map(lambda p: Path(p + ".hea").is_file())
    if not exists.all():
        lost = db.loc[~exists, "ecg_id"].tolist()
        if missing == "error":
            raise DatasetError(f"{root}: {len(lost)} records at {fs} Hz have no files (e.g. ecg_id {lost[:5]})")
        warnings.warn(f"PTB-XL at {root}: skipping {len(lost)} records without {fs} Hz files", stacklevel=2)
    db, paths = db[exists.to_numpy()], paths[exists.to_numpy()]
    codes = db["scp_codes"].map(ast.literal_eval)
    table = pd.DataFrame({
        "record_id": db["ecg_id"].astype(int).astype(str).to_numpy(),
        "path": paths.to_numpy(),
        "patient_id": db["patient_id"].astype(float).astype(int).astype(str).to_numpy(),
        "patient_id_source": "dataset",
        "fs": float(fs),
        "n_samples": 10 * fs,
        "strat_fold": db["strat_fold"].astype(int).to_numpy(),
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
