"""LUDB (Lobachevsky University Electrocardiography Database, v1.0.1).

Kalyakulina et al., "LUDB: A New Open-Access Validation Tool for
Electrocardiogram Delineation Algorithms", IEEE Access 8, 2020.
200 ten-second 12-lead records at 500 Hz, one per patient.

Amplitudes: every LUDB header gives each lead a gain equal to that lead's own
digital peak-to-peak, so wfdb's physical signal is 1 "mV" peak-to-peak for
every lead and amplitudes are meaningless. We read the digital values and treat
one unit as 1 uV (``adc_unit_mv=1e-3``), which gives the expected 1-3 mV QRS
amplitudes; this is our reading, not documented upstream.
"""

from __future__ import annotations

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

__all__ = ["load_ludb", "LUDB_LABEL_COLUMNS", "LUDB_ADC_UNIT_MV"]

LUDB_ADC_UNIT_MV = 1e-3
LUDB_FS = 500.0
LUDB_SAMPLES = 5000

_CSV_COLUMNS = ("ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies")
LUDB_LABEL_COLUMNS = ("rhythm", "axis", "lvh", "lad", "afib", "sex", "age")


def _cell(value) -> list[str]:
    """A multi-line LUDB cell as a list of stripped entries."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [part.strip() for part in str(value).splitlines() if part.strip()]


def _axis(value) -> str:
    entries = _cell(value)
    if not entries:
        return ""
    return entries[0].split(":", 1)[-1].strip().lower()


def _age(value) -> float:
    text = " ".join(_cell(value)).lstrip(">")
    try:
        return float(text)
    except ValueError:
        return float("nan")


def parse_ludb_csv(path: Path) -> pd.DataFrame:
    """Parse ``ludb.csv`` into one row per record with our label columns.

    Labels:
        rhythm: first entry of "Rhythms" (e.g. "sinus rhythm").
        axis: "normal", "left axis deviation", "vertical", "horizontal", ...
        lvh: 1 if "Left ventricular hypertrophy" is listed, else 0.
        lad: left axis deviation vs normal axis: 1 / 0, NaN for other axes.
        afib: 1 if the rhythm is atrial fibrillation, else 0.
    """
    raw = read_csv_checked(path, "LUDB label file", dtype=str, keep_default_na=False)
    require_columns(path, raw, _CSV_COLUMNS)
    rows = []
    for k, r in raw.iterrows():
        rid = " ".join(_cell(r["ID"]))
        if not rid:
            raise DatasetError(f"{path}: row {k + 1} has an empty ID; expected a record number")
        axis = _axis(r["Electric axis of the heart"])
        rhythms = [x.lower() for x in _cell(r["Rhythms"])]
        rows.append(
            {
                "record_id": rid,
                "rhythm": rhythms[0] if rhythms else "",
                "axis": axis,
                "lvh": int(any(x.lower() == "left ventricular hypertrophy" for x in _cell(r["Hypertrophies"]))),
                "lad": 1.0 if axis == "left axis deviation" else (0.0 if axis == "normal" else np.nan),
                "afib": int(any("atrial fibrillation" in x for x in rhythms)),
                "sex": " ".join(_cell(r["Sex"])),
                "age": _age(r["Age"]),
            }
        )
    table = pd.DataFrame(rows, columns=["record_id", "rhythm", "axis", "lvh", "lad", "afib", "sex", "age"])
    check_unique(path, table["record_id"], "ID")
    return table


@register_dataset("ludb")
def load_ludb(root: Path) -> DatasetIndex:
    """Index LUDB from its PhysioNet layout (``ludb.csv``, ``RECORDS``, ``data/N.hea``)."""
    labels = parse_ludb_csv(root / "ludb.csv")
    records_file = root / "RECORDS"
    if records_file.is_file():
        try:
            text = records_file.read_text(encoding="utf-8")
            lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{records_file}: not UTF-8 text ({exc}); expected one record path per line") from None
        paths = [p for _, p in lines]
        confine_paths(root, paths, records_file, (f"line {n}" for n, _ in lines), what="record path")  # 'data/1'
        check_unique(records_file, [p.split("/")[-1] for p in paths], "record")
    else:
        stems = [p.stem for p in (root / "data").glob("*.hea")]
        paths = [f"data/{s}" for s in sorted(stems, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))]
    if not paths:
        raise DatasetError(f"{root}: no LUDB records found (expected RECORDS or data/*.hea)")
    table = pd.DataFrame({"record_id": [p.split("/")[-1] for p in paths], "path": [str(root / p) for p in paths]})
    table = table.merge(labels, on="record_id", how="left")  # ids are unique on both sides (checked above)
    unlabelled = table.loc[table["axis"].isna(), "record_id"].tolist()
    if unlabelled:
        raise DatasetError(f"{root / 'ludb.csv'}: no labels for records {unlabelled[:5]}")
    # LUDB's documentation: 200 records of 200 different subjects, so the record id is the patient id by the
    # dataset's own word (not a stand-in), and splits need no record-level warning.
    table["patient_id"] = table["record_id"]
    table["patient_id_source"] = "dataset"
    table["fs"] = LUDB_FS
    table["n_samples"] = LUDB_SAMPLES

    def reader(row):
        return read_record(row["path"], record_id=row["record_id"], patient_id=row["patient_id"],
                           adc_unit_mv=LUDB_ADC_UNIT_MV)

    return DatasetIndex("ludb", root, table, reader, LUDB_LABEL_COLUMNS)
