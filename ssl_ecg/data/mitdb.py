"""MIT-BIH Arrhythmia Database (Moody & Mark, IEEE EMB Magazine 2001; PhysioNet ``mitdb`` 1.0.0).

48 half-hour two-lead records at 360 Hz from 47 subjects: records 201 and 202
come from the same man, so they share a patient id.

Beat classes follow ANSI/AAMI EC57 (N, S, V, F, Q). The inter-patient split is
de Chazal, O'Dwyer & Reilly (IEEE TBME 2004): DS1 for training, DS2 for
testing. The four paced records (102, 104, 107, 217) are in neither set, as in
that protocol, and are flagged ``paced``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb

from ssl_ecg.data.index import DatasetIndex, check_unique, confine_paths, register_dataset
from ssl_ecg.data.record import read_record
from ssl_ecg.errors import DatasetError, RecordError

__all__ = ["load_mitdb", "AAMI_CLASSES", "AAMI_MAP", "DS1", "DS2", "PACED", "BeatWindows", "beat_windows"]

AAMI_CLASSES = ("N", "S", "V", "F", "Q")
AAMI_MAP = {
    **dict.fromkeys("NLRej", "N"),  # normal, bundle branch blocks, escape beats
    **dict.fromkeys("AaJS", "S"),  # supraventricular ectopic
    **dict.fromkeys("VE", "V"),  # ventricular ectopic
    "F": "F",  # fusion of ventricular and normal
    **dict.fromkeys("/fQ", "Q"),  # paced, paced fusion, unclassifiable
}
DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124", "201", "203", "205",
       "207", "208", "209", "215", "220", "223", "230")
DS2 = ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212", "213", "214", "219",
       "221", "222", "228", "231", "232", "233", "234")
PACED = ("102", "104", "107", "217")
SAME_PATIENT = {"202": "201"}
MITDB_FS = 360.0


@register_dataset("mitdb")
def load_mitdb(root: Path) -> DatasetIndex:
    """Index MIT-BIH from its PhysioNet layout (``RECORDS``, ``NNN.hea/.dat/.atr``)."""
    records_file = root / "RECORDS"
    if not records_file.is_file():
        raise DatasetError(f"{records_file}: MIT-BIH record list not found")
    try:
        lines = [(n, w) for n, line in enumerate(records_file.read_text(encoding="utf-8").splitlines(), 1)
                 for w in line.split()]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{records_file}: not UTF-8 text ({exc}); expected one record name per line") from None
    if not lines:
        raise DatasetError(f"{records_file}: no records listed")
    ids = [w for _, w in lines]
    for n, rid in lines:
        if "/" in rid or "\\" in rid or rid in (".", ".."):
            raise DatasetError(f"{records_file}: record {rid!r} is not a plain record name (line {n}); expected "
                               "names such as 100 beside RECORDS")
    confine_paths(root, ids, records_file, (f"line {n}" for n, _ in lines), what="record")  # 100.hea stays inside
    check_unique(records_file, ids, "record")
    rows = []
    for rid in ids:
        split = "DS1" if rid in DS1 else "DS2" if rid in DS2 else ""
        rows.append({
            "record_id": rid, "path": str(root / rid),
            "patient_id": SAME_PATIENT.get(rid, rid),
            "patient_id_source": "dataset" if rid in SAME_PATIENT or rid in SAME_PATIENT.values() else "record",
            "fs": MITDB_FS, "n_samples": 650000, "split": split, "paced": rid in PACED,
        })
    table = pd.DataFrame(rows)

    def reader(row):
        return read_record(row["path"], record_id=row["record_id"], patient_id=row["patient_id"])

    return DatasetIndex("mitdb", root, table, reader, ("split", "paced"))


@dataclass
class BeatWindows:
    """Beat-centred windows with AAMI labels.

    Attributes:
        x: float32 (n_beats, leads, before + after samples), mV.
        label: AAMI class index into :data:`AAMI_CLASSES`, shape (n_beats,).
        record_id, patient_id: per beat.
        r_index: the annotated R sample in the record.
        n_edge: beats dropped because their window left the record.
    """

    x: np.ndarray
    label: np.ndarray
    record_id: np.ndarray
    patient_id: np.ndarray
    r_index: np.ndarray
    n_edge: int


def beat_windows(index: DatasetIndex, records: list[str] | None = None, before_s: float = 0.25,
                 after_s: float = 0.4) -> BeatWindows:
    """Cut a window around every AAMI-classified beat of the chosen records.

    Args:
        index: a ``mitdb`` index.
        records: record ids (default: all but the paced records).
        before_s, after_s: window extent around the annotated R, in seconds.
    """
    if index.name != "mitdb":
        raise DatasetError(f"beat_windows: expected a mitdb index, got {index.name!r}")
    table = index.table.set_index("record_id")
    records = records if records is not None else [r for r in table.index if r not in PACED]
    unknown = [r for r in records if r not in table.index]
    if unknown:
        raise DatasetError(f"records {unknown} are not in the MIT-BIH index at {index.root}")
    xs, labels, rids, pids, rs, n_edge = [], [], [], [], [], 0
    for rid in records:
        row = table.loc[rid]
        rec = read_record(row["path"], record_id=rid, patient_id=row["patient_id"])
        try:
            ann = wfdb.rdann(row["path"], "atr")
        except Exception as exc:
            raise RecordError(f"{row['path']}.atr: cannot read annotations ({exc})") from exc
        before, after = int(round(before_s * rec.fs)), int(round(after_s * rec.fs))
        sym = np.asarray(ann.symbol)
        samp = np.asarray(ann.sample)
        keep = np.isin(sym, list(AAMI_MAP))
        sym, samp = sym[keep], samp[keep]
        inside = (samp - before >= 0) & (samp + after <= rec.n_samples)
        n_edge += int((~inside).sum())
        sym, samp = sym[inside], samp[inside]
        idx = samp[:, None] + np.arange(-before, after)[None, :]
        xs.append(np.transpose(rec.signal[:, idx], (1, 0, 2)))
        labels.append(np.asarray([AAMI_CLASSES.index(AAMI_MAP[s]) for s in sym], dtype=np.int64))
        rids.append(np.full(len(samp), rid))
        pids.append(np.full(len(samp), rec.patient_id))
        rs.append(samp)
    return BeatWindows(np.concatenate(xs).astype(np.float32), np.concatenate(labels), np.concatenate(rids),
                       np.concatenate(pids), np.concatenate(rs), n_edge)
