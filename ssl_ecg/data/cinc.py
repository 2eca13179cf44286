"""PhysioNet/CinC Challenge 2020 and 2021 training sets, and Chapman-Shaoxing in its WFDB release.

Perez Alday et al., "Classification of 12-lead ECGs: the PhysioNet/Computing in
Cardiology Challenge 2020", Physiol. Meas. 41, 2020; Reyna et al., "Will Two Do?
Varying Dimensions in Electrocardiography: the PhysioNet/Computing in Cardiology
Challenge 2021", CinC 2021; Zheng et al., "A 12-lead electrocardiogram database
for arrhythmia research covering more than 10,000 patients", Sci. Data 7, 2020.

Records are WFDB headers with ``.mat`` signals (``16x1+24``) and comments
``# Age:``, ``# Sex:``, ``# Dx: <SNOMED-CT codes>``. Labels:

- ``dx``: every SNOMED code of the record;
- ``scored``: the scored classes of the dataset's challenge year (cinc2020:
  2020, 24 classes from 27 codes; cinc2021 and chapman: 2021, 26 classes from 30
  codes), with equivalent codes merged as the official ``weights.csv`` of that
  year does and named by the group's first code: 713427006|59118001 (complete
  RBBB / RBBB), 284470004|63593006 (PAC / SVPB), 427172004|17338001 (PVC / VEB),
  and in 2021 also 733534002|164909002 (complete LBBB / LBBB). A record with no
  scored code has ``scored == []`` (the challenge scores it as an all-zero row).

The source database comes from the record-name prefix. Patient ids
(``patient_id_source = "dataset"``) come from, in order:

1. ``patient_map``: a CSV with ``record_id`` and ``patient_id`` columns;
2. PTB-XL records (``HR<ecg_id>``) with ``ptbxl_database`` pointing to PTB-XL's
   ``ptbxl_database.csv``: ``ptbxl:<patient_id>``;
3. a header comment naming the source patient, as the original INCART database
   writes it (``# patient <n>``, giving ``incart:<n>``; see :func:`header_patient`).

Everything else keeps the record id (``patient_id_source = "record"``). The
challenge headers themselves (Age/Sex/Dx/Rx/Hx/Sx) carry no patient and no
original record name, so PTB (``S`` records: ~516 records from ~290 patients)
and INCART (``I`` records: 75 records from 32 subjects) records can leak across
a patient-wise split unless a map is given, and
:func:`ssl_ecg.data.splits.table_splits` warns about it.

PTB patients need a user-supplied ``patient_map``. The original PTB Diagnostic
ECG Database (physionet.org/content/ptbdb) names each record by its patient
folder in its ``RECORDS`` file (``patient001/s0010_re``: patient 001), but
neither its headers nor the challenge's ``S`` headers carry that path, and this
library does not know which ``S`` record is which PTB record. A user who has
established the correspondence (e.g. by matching signals against the original
records) writes ``record_id,patient_id`` rows such as ``S0001,ptb:patient001``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd
import wfdb

from ssl_ecg.data.index import DatasetIndex, register_dataset
from ssl_ecg.data.record import read_record
from ssl_ecg.errors import DatasetError, RecordError

__all__ = ["SCORED_CLASSES", "SCORED_CLASSES_2020", "SCORED_CLASSES_2021", "EQUIVALENT", "EQUIVALENT_2021",
           "SOURCES", "load_cinc", "scored_labels", "scored_classes", "header_patient"]

# The scored classes of the 2020 challenge (evaluation-2020 weights.csv), in the file's order.
SCORED_CLASSES_2020 = (
    "270492004", "164889003", "164890007", "426627000", "713427006", "713426002", "445118002", "39732003",
    "164909002", "251146004", "698252002", "10370003", "284470004", "427172004", "164947007", "111975006",
    "164917005", "47665007", "427393009", "426177001", "426783006", "427084000", "164934002", "59931005",
)
SCORED_CLASSES = SCORED_CLASSES_2020  # the 2020 set, kept under its old name
# The scored classes of the 2021 challenge (evaluation-2021 weights.csv), in the file's order.
SCORED_CLASSES_2021 = (
    "164889003", "164890007", "6374002", "426627000", "733534002", "713427006", "270492004", "713426002",
    "39732003", "445118002", "164947007", "251146004", "111975006", "698252002", "426783006", "284470004",
    "10370003", "365413008", "427172004", "164917005", "47665007", "427393009", "426177001", "427084000",
    "164934002", "59931005",
)
EQUIVALENT = {"59118001": "713427006", "63593006": "284470004", "17338001": "427172004"}  # 2020
EQUIVALENT_2021 = {**EQUIVALENT, "164909002": "733534002"}
_YEAR = {"cinc2020": 2020, "cinc2021": 2021, "chapman": 2021}
SOURCES = {"A": "cpsc2018", "Q": "cpsc2018_extra", "I": "incart", "S": "ptb", "HR": "ptbxl", "E": "georgia",
           "JS": "chapman_ningbo"}


def scored_classes(year: int) -> tuple[str, ...]:
    """The scored classes of the ``year`` (2020 or 2021) challenge, in its weights' order."""
    if year not in (2020, 2021):
        raise DatasetError(f"year: scored classes exist for the 2020 and 2021 challenges, got {year!r}")
    return SCORED_CLASSES_2020 if year == 2020 else SCORED_CLASSES_2021


def scored_labels(codes: list[str], year: int = 2020) -> list[str]:
    """Scored classes of a record's SNOMED codes in the ``year`` challenge, equivalent codes merged."""
    equivalent = EQUIVALENT if year == 2020 else EQUIVALENT_2021
    classes = set(scored_classes(year))
    return sorted(c for c in {equivalent.get(c, c) for c in codes} if c in classes)


def _source(record_id: str) -> str:
    for prefix in sorted(SOURCES, key=len, reverse=True):
        if record_id.startswith(prefix) and record_id[len(prefix):][:1].isdigit():
            return SOURCES[prefix]
    return "unknown"


def _comments(header: wfdb.Record) -> dict[str, str]:
    out = {}
    for line in header.comments or []:
        if ":" in line:
            key, value = line.split(":", 1)
            out[key.strip().lower()] = value.strip()
    return out


_INCART_PATIENT = re.compile(r"^\s*patient\s+(\d+)\s*$", re.IGNORECASE)


def header_patient(record_id: str, comments: list[str]) -> str | None:
    """The source patient named in a header's comments, or None.

    Only the original INCART database's headers name one: ``# patient <n>``
    (1-32; the subject of the source Holter recording). PTB headers (original
    or challenge) name no patient; see the module docstring for ``patient_map``.
    """
    for line in comments or []:
        m = _INCART_PATIENT.match(line)
        if m:
            return f"incart:{int(m.group(1))}"
    return None


def _read_patient_map(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"patient_map {path}: not a file; expected a CSV with record_id,patient_id columns")
    table = pd.read_csv(path, dtype=str)
    missing = {"record_id", "patient_id"} - set(table.columns)
    if missing:
        raise DatasetError(f"patient_map {path}: missing columns {sorted(missing)}; expected record_id,patient_id")
    if table["patient_id"].isna().any() or table["record_id"].duplicated().any():
        raise DatasetError(f"patient_map {path}: expected one non-empty patient_id per record_id")
    return dict(zip(table["record_id"].str.strip(), table["patient_id"].str.strip()))


def _read_ptbxl_patients(path: str | Path) -> dict[int, str]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"ptbxl_database {path}: not a file; expected PTB-XL's ptbxl_database.csv")
    table = pd.read_csv(path, usecols=lambda c: c in ("ecg_id", "patient_id"))
    if set(table.columns) != {"ecg_id", "patient_id"}:
        raise DatasetError(f"ptbxl_database {path}: expected columns ecg_id and patient_id")
    return {int(e): f"ptbxl:{int(p)}" for e, p in zip(table["ecg_id"], table["patient_id"])}


def load_cinc(root: Path, name: str, ptbxl_database: str | Path | None = None,
              patient_map: str | Path | None = None) -> DatasetIndex:
    """Index every ``*.hea`` under ``root`` (recursively) with its Dx labels and patient ids.

    Args:
        root: dataset folder (any layout below it).
        name: ``cinc2020``, ``cinc2021`` or ``chapman``; sets the scored classes' year.
        ptbxl_database: PTB-XL's ``ptbxl_database.csv``; maps ``HR<ecg_id>`` records to PTB-XL patients.
        patient_map: CSV with ``record_id,patient_id`` columns (e.g. PTB records to their PTB patient folders).

    Raises:
        DatasetError: no headers, a header without Dx, an unreadable option file,
            or a PTB-XL record whose ecg_id is not in ``ptbxl_database``.
    """
    headers = sorted(root.rglob("*.hea"))
    if not headers:
        raise DatasetError(f"{root}: no WFDB headers (*.hea) found for {name}")
    year = _YEAR.get(name, 2021)
    mapped = _read_patient_map(patient_map) if patient_map is not None else {}
    ptbxl = _read_ptbxl_patients(ptbxl_database) if ptbxl_database is not None else None
    rows = []
    for h in headers:
        path = str(h.with_suffix(""))
        try:
            head = wfdb.rdheader(path)
        except Exception as exc:
            raise RecordError(f"{h}: cannot read header ({type(exc).__name__}: {exc})") from exc
        info = _comments(head)
        if "dx" not in info:
            raise DatasetError(f"{h}: no '# Dx:' comment; expected SNOMED-CT codes")
        codes = [c.strip() for c in info["dx"].split(",") if c.strip()]
        source = _source(h.stem)
        patient = mapped.get(h.stem)
        if patient is None and ptbxl is not None and source == "ptbxl":
            ecg_id = int(h.stem[2:])
            if ecg_id not in ptbxl:
                raise DatasetError(f"ptbxl_database {ptbxl_database}: ecg_id {ecg_id} (record {h.stem}) is not listed")
            patient = ptbxl[ecg_id]
        if patient is None:
            patient = header_patient(h.stem, head.comments)
        rows.append({
            "record_id": h.stem, "path": path, "patient_id": patient or h.stem,
            "patient_id_source": "dataset" if patient else "record",
            "fs": float(head.fs), "n_samples": int(head.sig_len or 0), "source": source,
            "dx": codes, "scored": scored_labels(codes, year), "age": info.get("age", ""), "sex": info.get("sex", ""),
        })
    unused = sorted(set(mapped) - {r["record_id"] for r in rows})
    if unused:
        warnings.warn(f"patient_map {patient_map}: {len(unused)} record ids are not in {root} "
                      f"(e.g. {unused[:3]})", stacklevel=3)
    table = pd.DataFrame(rows)

    def reader(row):
        return read_record(row["path"], record_id=row["record_id"], patient_id=row["patient_id"])

    return DatasetIndex(name, root, table, reader, ("source", "dx", "scored", "age", "sex"))


@register_dataset("cinc2021")
def load_cinc2021(root: Path, ptbxl_database: str | Path | None = None,
                  patient_map: str | Path | None = None) -> DatasetIndex:
    """PhysioNet/CinC 2021 training data (any folder layout below ``root``); options as :func:`load_cinc`."""
    return load_cinc(root, "cinc2021", ptbxl_database=ptbxl_database, patient_map=patient_map)


@register_dataset("cinc2020")
def load_cinc2020(root: Path, ptbxl_database: str | Path | None = None,
                  patient_map: str | Path | None = None) -> DatasetIndex:
    """PhysioNet/CinC 2020 training data (any folder layout below ``root``); options as :func:`load_cinc`."""
    return load_cinc(root, "cinc2020", ptbxl_database=ptbxl_database, patient_map=patient_map)


@register_dataset("chapman")
def load_chapman(root: Path) -> DatasetIndex:
    """Chapman-Shaoxing / Ningbo in the PhysioNet WFDB release (``WFDBRecords/**/JS*.hea``)."""
    return load_cinc(root, "chapman")
