"""PhysioNet/CinC Challenge 2020 and 2021 training sets, and Chapman-Shaoxing in its WFDB release.

Perez Alday et al., "Classification of 12-lead ECGs: the PhysioNet/Computing in
Cardiology Challenge 2020", Physiol. Meas. 41, 2020; Reyna et al., "Will Two Do?
Varying Dimensions in Electrocardiography: the PhysioNet/Computing in Cardiology
Challenge 2021", CinC 2021; Zheng et al., "A 12-lead electrocardiogram database
for arrhythmia research covering more than 10,000 patients", Sci. Data 7, 2020.

Records are WFDB headers with ``.mat`` signals (``16x1+24``) and comments
``# Age:``, ``# Sex:``, ``# Dx: <SNOMED-CT codes>``. Labels:

- ``dx``: every SNOMED code of the record;
- ``scored``: the challenges' scored classes (the same 27 codes in 2020 and
  2021, from the official ``weights.csv``), with the three equivalent pairs
  merged as the challenge scores them: 713427006|59118001 (complete RBBB / RBBB),
  284470004|63593006 (PAC / SVPB), 427172004|17338001 (PVC / VEB). A merged
  class is named by its first code.

The source database comes from the record-name prefix. None of these sources
gives patient ids across records, so ``patient_id`` is the record id
(``patient_id_source = "record"``); note that INCART (prefix ``I``) holds 75
records from 32 subjects, so patient-wise splits of that subset can leak.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import wfdb

from ssl_ecg.data.index import DatasetIndex, register_dataset
from ssl_ecg.data.record import read_record
from ssl_ecg.errors import DatasetError, RecordError

__all__ = ["SCORED_CLASSES", "EQUIVALENT", "SOURCES", "load_cinc", "scored_labels"]

# The scored classes of the 2020 and 2021 challenges (official weights.csv), in the file's order.
SCORED_CLASSES = (
    "270492004", "164889003", "164890007", "426627000", "713427006", "713426002", "445118002", "39732003",
    "164909002", "251146004", "698252002", "10370003", "284470004", "427172004", "164947007", "111975006",
    "164917005", "47665007", "427393009", "426177001", "426783006", "427084000", "164934002", "59931005",
)
EQUIVALENT = {"59118001": "713427006", "63593006": "284470004", "17338001": "427172004"}
SOURCES = {"A": "cpsc2018", "Q": "cpsc2018_extra", "I": "incart", "S": "ptb", "HR": "ptbxl", "E": "georgia",
           "JS": "chapman_ningbo"}


def scored_labels(codes: list[str]) -> list[str]:
    """Scored classes of a record's SNOMED codes, equivalent codes merged."""
    out = {EQUIVALENT.get(c, c) for c in codes}
    return sorted(c for c in out if c in SCORED_CLASSES)


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


def load_cinc(root: Path, name: str) -> DatasetIndex:
    """Index every ``*.hea`` under ``root`` (recursively) with its Dx labels."""
    headers = sorted(root.rglob("*.hea"))
    if not headers:
        raise DatasetError(f"{root}: no WFDB headers (*.hea) found for {name}")
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
        rows.append({
            "record_id": h.stem, "path": path, "patient_id": h.stem, "patient_id_source": "record",
            "fs": float(head.fs), "n_samples": int(head.sig_len or 0), "source": _source(h.stem),
            "dx": codes, "scored": scored_labels(codes), "age": info.get("age", ""), "sex": info.get("sex", ""),
        })
    table = pd.DataFrame(rows)

    def reader(row):
        return read_record(row["path"], record_id=row["record_id"], patient_id=row["patient_id"])

    return DatasetIndex(name, root, table, reader, ("source", "dx", "scored", "age", "sex"))


@register_dataset("cinc2021")
def load_cinc2021(root: Path) -> DatasetIndex:
    """PhysioNet/CinC 2021 training data (any folder layout below ``root``)."""
    return load_cinc(root, "cinc2021")


@register_dataset("cinc2020")
def load_cinc2020(root: Path) -> DatasetIndex:
    """PhysioNet/CinC 2020 training data (any folder layout below ``root``)."""
    return load_cinc(root, "cinc2020")


@register_dataset("chapman")
def load_chapman(root: Path) -> DatasetIndex:
    """Chapman-Shaoxing / Ningbo in the PhysioNet WFDB release (``WFDBRecords/**/JS*.hea``)."""
    return load_cinc(root, "chapman")
