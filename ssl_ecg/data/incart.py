"""St Petersburg INCART 12-lead arrhythmia database (WFDB records with ``.atr`` beat annotations)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ssl_ecg.data.cinc import header_patient
from ssl_ecg.data.index import DatasetIndex, register_dataset
from ssl_ecg.data.record import read_record
from ssl_ecg.errors import DatasetError

__all__ = ["load_incart"]


@register_dataset("incart")
def load_incart(root: Path) -> DatasetIndex:
    """St Petersburg INCART 12-lead arrhythmia database (75 records I01-I75, 257 Hz, ``.atr`` beats).

    The records come from 32 subjects; each header names its subject with a
    ``# patient <n>`` comment (n = 1-32, "a patient number that identifies the
    source recording", incartdb's description), read as ``patient_id =
    "incart:<n>"`` (``patient_id_source = "dataset"``). A header without that
    line keeps the record id (``patient_id_source = "record"``).
    """
    headers = sorted(root.glob("I*.hea"))
    if not headers:
        raise DatasetError(f"{root}: no INCART records (I*.hea) found")
    patients = []
    for h in headers:
        comments = [line.lstrip("#").strip() for line in h.read_text(errors="replace").splitlines()
                    if line.startswith("#")]
        patients.append(header_patient(h.stem, comments))
    table = pd.DataFrame({
        "record_id": [h.stem for h in headers], "path": [str(h.with_suffix("")) for h in headers],
        "patient_id": [p or h.stem for p, h in zip(patients, headers)],
        "patient_id_source": ["dataset" if p else "record" for p in patients], "fs": 257.0, "n_samples": 462600,
        "has_beats": [h.with_suffix(".atr").is_file() for h in headers],
    })

    def reader(row):
        return read_record(row["path"], record_id=row["record_id"], patient_id=row["patient_id"])

    return DatasetIndex("incart", root, table, reader, ("has_beats",))
