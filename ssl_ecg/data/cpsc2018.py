"""CPSC 2018 (China Physiological Signal Challenge 2018): ``.mat`` records and ``REFERENCE.csv`` labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from ssl_ecg.data.index import DatasetIndex, check_unique, read_csv_checked, register_dataset, require_columns
from ssl_ecg.data.record import STANDARD_LEADS, Record
from ssl_ecg.errors import DatasetError, RecordError

__all__ = ["CPSC2018_CLASSES", "CPSC2018_FS", "read_cpsc2018", "load_cpsc2018"]

# CPSC 2018 (Liu et al., J. Med. Imaging Health Inform. 8, 2018): REFERENCE.csv class numbers.
CPSC2018_CLASSES = {1: "Normal", 2: "AF", 3: "I-AVB", 4: "LBBB", 5: "RBBB", 6: "PAC", 7: "PVC", 8: "STD", 9: "STE"}
CPSC2018_FS = 500.0


def read_cpsc2018(path: str | os.PathLike, record_id: str | None = None) -> Record:
    """Read a CPSC 2018 ``.mat`` file (struct ``ECG`` with ``data`` 12 x N in mV at 500 Hz).

    ``sex`` and ``age`` are optional: a struct without them, or with an age
    that is not a number, gives ``sex = ""`` and ``age = nan``.

    Raises:
        RecordError: not a ``.mat`` file with struct ``ECG.data`` of shape (12, N).
    """
    path = Path(path)
    try:
        ecg = scipy.io.loadmat(path, squeeze_me=False)["ECG"][0, 0]
        data = np.asarray(ecg["data"], dtype=np.float64)
    except Exception as exc:  # scipy raises many types for damaged files
        raise RecordError(f"{path}: not a CPSC 2018 .mat file with struct ECG.data ({exc})") from exc
    if data.ndim != 2 or data.shape[0] != 12:
        raise RecordError(f"{path}: ECG.data has shape {data.shape}; expected (12, N)")
    fields = ecg.dtype.names or ()
    sex_value = np.asarray(ecg["sex"]).ravel() if "sex" in fields else np.asarray([])
    age_value = np.asarray(ecg["age"]).ravel() if "age" in fields else np.asarray([])
    sex = str(sex_value[0]).strip() if sex_value.size else ""
    try:
        age = float(age_value[0]) if age_value.size else float("nan")
    except (TypeError, ValueError):
        age = float("nan")
    rid = record_id or path.stem
    return Record(signal=data.astype(np.float32), fs=CPSC2018_FS, leads=list(STANDARD_LEADS), record_id=rid,
                  patient_id=rid, demographics={"sex": sex, "age": age}, path=str(path.with_suffix("")))


def _cpsc_class(ref_path: Path, row: int, recording: str, column: str, text: str) -> str:
    """The class name of one REFERENCE.csv label cell, or a DatasetError naming the row."""
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if number not in CPSC2018_CLASSES:
        raise DatasetError(f"{ref_path}: row {row} (Recording {recording}): {column} {text!r}; expected a class "
                           f"number 1-{len(CPSC2018_CLASSES)}")
    return CPSC2018_CLASSES[int(number)]


@register_dataset("cpsc2018")
def load_cpsc2018(root: Path, missing_labels: str = "error") -> DatasetIndex:
    """Index CPSC 2018 (``A0001.mat`` ...; labels from ``REFERENCE.csv`` when present).

    Without ``REFERENCE.csv`` the records are indexed unlabelled (``labels`` is
    empty) and ``table.attrs['labelled']`` is False. One record per patient.
    ``REFERENCE.csv`` may list records that are not in the folder (a subset
    of the data); they are ignored.

    Args:
        root: folder searched recursively for ``A*.mat`` and ``REFERENCE.csv``.
        missing_labels: records in the folder without a ``REFERENCE.csv`` row:
            ``"error"`` (default) raises, ``"keep"`` indexes them with empty
            ``labels`` and lists them in ``table.attrs['unlabelled']``.

    Raises:
        DatasetError: no records; ``REFERENCE.csv`` unreadable, without its
            columns, with a repeated or empty Recording, a class that is not
            1-9, or (with ``missing_labels="error"``) records it does not list.
    """
    if missing_labels not in ("error", "keep"):
        raise DatasetError(f"missing_labels: expected 'error' or 'keep', got {missing_labels!r}")
    mats = sorted(root.rglob("A*.mat"))
    if not mats:
        raise DatasetError(f"{root}: no CPSC 2018 records (A*.mat) found")
    ref_path = next(iter(root.rglob("REFERENCE.csv")), None)
    labels: dict[str, list[str]] = {}
    unlabelled: list[str] = []
    if ref_path is not None:
        ref = read_csv_checked(ref_path, "CPSC 2018 label file", dtype=str)
        require_columns(ref_path, ref, ("Recording", "First_label"))
        empty = ref["Recording"].isna() | (ref["Recording"].fillna("").str.strip() == "")
        if empty.any():
            raise DatasetError(f"{ref_path}: row {int(np.flatnonzero(empty.to_numpy())[0]) + 1} has an empty "
                               "Recording; expected a record name such as A0001")
        ref["Recording"] = ref["Recording"].str.strip()
        check_unique(ref_path, ref["Recording"], "Recording")
        for k, r in ref.iterrows():
            nums = [(c, r[c]) for c in ("First_label", "Second_label", "Third_label")
                    if c in r.index and isinstance(r[c], str) and r[c].strip()]
            if not nums:
                raise DatasetError(f"{ref_path}: row {k + 1} (Recording {r['Recording']}): no First_label; "
                                   f"expected a class number 1-{len(CPSC2018_CLASSES)}")
            labels[r["Recording"]] = sorted({_cpsc_class(ref_path, k + 1, r["Recording"], c, n.strip())
                                             for c, n in nums})
        unlabelled = [m.stem for m in mats if m.stem not in labels]
        if unlabelled and missing_labels == "error":
            raise DatasetError(f"{ref_path}: {len(unlabelled)} of {len(mats)} records under {root} have no row "
                               f"(e.g. {unlabelled[:5]}); expected a row per record, or "
                               "load_index('cpsc2018', root, missing_labels='keep')")
    table = pd.DataFrame({
        "record_id": [m.stem for m in mats], "path": [str(m) for m in mats],
        "patient_id": [m.stem for m in mats], "patient_id_source": "record", "fs": CPSC2018_FS,
    })
    table["n_samples"] = -1  # unknown until read (records are 6-60 s)
    table["labels"] = [labels.get(r, []) for r in table["record_id"]]
    table.attrs["labelled"] = ref_path is not None
    table.attrs["unlabelled"] = unlabelled

    def reader(row):
        return read_cpsc2018(row["path"], record_id=row["record_id"])

    return DatasetIndex("cpsc2018", root, table, reader, ("labels",))
