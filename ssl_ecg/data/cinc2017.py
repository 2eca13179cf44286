"""PhysioNet/CinC Challenge 2017: single-lead AliveCor records (AF classification), read tolerantly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ssl_ecg.data.index import DatasetIndex, check_unique, read_csv_checked, register_dataset
from ssl_ecg.data.record import read_tolerant
from ssl_ecg.errors import DatasetError

__all__ = ["CINC2017_CLASSES", "load_cinc2017"]

# PhysioNet/CinC 2017 (Clifford et al., CinC 2017): single-lead AliveCor records at 300 Hz.
CINC2017_CLASSES = {"N": "normal", "A": "AF", "O": "other", "~": "noisy"}


@register_dataset("cinc2017")
def load_cinc2017(root: Path) -> DatasetIndex:
    """Index PhysioNet/CinC 2017 (``REFERENCE.csv`` with N/A/O/~, ``A00001.hea/.mat`` ...).

    One record per patient as far as the data says (``patient_id_source = "record"``).
    """
    ref_path = next(iter(root.rglob("REFERENCE.csv")), None)
    if ref_path is None:
        raise DatasetError(f"{root}: REFERENCE.csv not found (expected record,label rows with N/A/O/~)")
    ref = read_csv_checked(ref_path, "CinC 2017 label file", header=None, names=["record_id", "label"], dtype=str,
                           keep_default_na=False)
    ref["record_id"] = ref["record_id"].str.strip()
    ref["label"] = ref["label"].str.strip()
    empty = (ref["record_id"] == "") | (ref["label"] == "")
    if empty.any():
        k = int(np.flatnonzero(empty.to_numpy())[0])
        raise DatasetError(f"{ref_path}: row {k + 1} ({ref['record_id'].iloc[k]!r}, {ref['label'].iloc[k]!r}) has "
                           "an empty field; expected record,label with a label in N/A/O/~")
    check_unique(ref_path, ref["record_id"], "record id")
    bad = sorted(set(ref["label"]) - set(CINC2017_CLASSES))
    if bad:
        raise DatasetError(f"{ref_path}: unknown labels {bad}; expected {sorted(CINC2017_CLASSES)}")
    headers = {h.stem: h for h in root.rglob("*.hea")}
    missing = [r for r in ref["record_id"] if r not in headers]
    if missing:
        raise DatasetError(f"{root}: {len(missing)} records in REFERENCE.csv have no header (e.g. {missing[:5]})")
    table = pd.DataFrame({
        "record_id": ref["record_id"], "path": [str(headers[r].with_suffix("")) for r in ref["record_id"]],
        "patient_id": ref["record_id"], "patient_id_source": "record", "fs": 300.0, "n_samples": -1,
        "label": ref["label"],
    })

    def reader(row):
        return read_tolerant(row["path"], record_id=row["record_id"], patient_id=row["patient_id"])

    return DatasetIndex("cinc2017", root, table, reader, ("label",))
