"""CPSC 2018, St Petersburg INCART and PhysioNet/CinC 2017 adapters."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from ssl_ecg.data.index import DatasetIndex, check_unique, read_csv_checked, register_dataset, require_columns
from ssl_ecg.data.record import STANDARD_LEADS, Record, read_record, read_tolerant  # noqa: F401 (re-export)
from ssl_ecg.errors import DatasetError, RecordError

__all__ = ["CPSC2018_CLASSES", "read_cpsc2018", "read_tolerant", "CINC2017_CLASSES"]

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


@register_dataset("incart")
def load_incart(root: Path) -> DatasetIndex:
    """St Petersburg INCART 12-lead arrhythmia database (75 records I01-I75, 257 Hz, ``.atr`` beats).

    The records come from 32 subjects; each header names its subject with a
    ``# patient <n>`` comment (n = 1-32, "a patient number that identifies the
    source recording", incartdb's description), read as ``patient_id =
    "incart:<n>"`` (``patient_id_source = "dataset"``). A header without that
    line keeps the record id (``patient_id_source = "record"``).
    """
    from ssl_ecg.data.cinc import header_patient

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
