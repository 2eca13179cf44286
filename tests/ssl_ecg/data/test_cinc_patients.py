"""Patient ids of the CinC 2020/2021 sources (PTB-XL, PTB, INCART) and the record-level warning."""

import warnings

import pandas as pd
import pytest

from ssl_ecg.data import load_index
from ssl_ecg.data.cinc import header_patient
from ssl_ecg.data.splits import RecordLevelIdsWarning, record_level_ids, table_splits
from ssl_ecg.errors import DatasetError

LEADS12 = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _cinc(folder, write_wfdb, ecg_like, name, fs=500.0, dx="426783006", seed=0):
    """A header in the challenge layout (Age/Sex/Dx/Rx/Hx/Sx comments, as cinc2021_sample/*.hea)."""
    write_wfdb(folder, name, ecg_like(12, int(2 * fs), fs, seed=seed), fs, LEADS12,
               comments=["Age: 56", "Sex: Female", f"Dx: {dx}", "Rx: Unknown", "Hx: Unknown", "Sx: Unknown"])


def test_ptbxl_records_take_patients_from_ptbxl_database(tmp_path, write_wfdb, ecg_like):
    for i, rid in enumerate(["HR00001", "HR00002", "HR00003"]):
        _cinc(tmp_path / "ptb-xl" / "g1", write_wfdb, ecg_like, rid, seed=i)
    _cinc(tmp_path / "georgia" / "g1", write_wfdb, ecg_like, "E00001")
    db = tmp_path / "ptbxl_database.csv"  # PTB-XL's own table: ecg_id -> patient_id (a float column there)
    pd.DataFrame({"ecg_id": [1, 2, 3], "patient_id": [15709.0, 15709.0, 13243.0], "age": [56, 56, 19]}).to_csv(
        db, index=False)
    t = load_index("cinc2021", tmp_path, ptbxl_database=str(db)).table.set_index("record_id")
    assert t.loc["HR00001", "patient_id"] == t.loc["HR00002", "patient_id"] == "ptbxl:15709"
    assert t.loc["HR00003", "patient_id"] == "ptbxl:13243"
    assert (t.loc[["HR00001", "HR00002", "HR00003"], "patient_id_source"] == "dataset").all()
    assert t.loc["E00001", "patient_id"] == "E00001" and t.loc["E00001", "patient_id_source"] == "record"
    with pytest.warns(RecordLevelIdsWarning, match=r"cinc2021: 1 of 4 records have record-level"):
        splits = table_splits(t.reset_index(), [0.34, 0.33, 0.33], seed=0, dataset="cinc2021")
    assert sum("ptbxl:15709" in v for v in splits.values()) == 1  # both records of the patient in one split

    pd.DataFrame({"ecg_id": [1, 2], "patient_id": [15709.0, 15709.0]}).to_csv(db, index=False)
    with pytest.raises(DatasetError, match=r"ptbxl_database .*ecg_id 3 \(record HR00003\)"):
        load_index("cinc2021", tmp_path, ptbxl_database=str(db))


def test_ptb_records_take_patients_only_from_a_patient_map(tmp_path, write_wfdb, ecg_like):
    for i, rid in enumerate(["S0001", "S0002", "S0003", "S0004"]):
        _cinc(tmp_path / "ptb" / "g1", write_wfdb, ecg_like, rid, fs=1000.0, dx="164865005", seed=i)
    t = load_index("cinc2020", tmp_path).table
    assert (t["patient_id"] == t["record_id"]).all() and (t["patient_id_source"] == "record").all()
    note = record_level_ids(t, "cinc2020")
    assert note["record_level"] == 4 and note["records"] == 4 and "cinc2020" in note["message"]
    with pytest.warns(RecordLevelIdsWarning, match="cinc2020: 4 of 4 records"):
        table_splits(t, [0.34, 0.33, 0.33], seed=0, dataset="cinc2020")

    # The patient_map path: the only source of PTB patients (no PTB header names its patient folder). The user
    # writes the PTB folders (patientNNN, from ptbdb's RECORDS file) of the S records they have matched.
    pmap = tmp_path / "ptb_patients.csv"
    pmap.write_text("record_id,patient_id\nS0001,ptb:patient001\nS0002,ptb:patient001\nS0003,ptb:patient002\n"
                    "S0004,ptb:patient003\n")
    t = load_index("cinc2020", tmp_path, patient_map=str(pmap)).table.set_index("record_id")
    assert t.loc["S0001", "patient_id"] == t.loc["S0002", "patient_id"] == "ptb:patient001"
    assert t.loc["S0003", "patient_id"] == "ptb:patient002" and (t["patient_id_source"] == "dataset").all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RecordLevelIdsWarning)  # every id from the data: no warning
        assert record_level_ids(t.reset_index(), "cinc2020") is None
        splits = table_splits(t.reset_index(), [0.34, 0.33, 0.33], seed=0, dataset="cinc2020")
    assert sorted(sum(splits.values(), [])) == ["ptb:patient001", "ptb:patient002", "ptb:patient003"]
    pmap.write_text("record_id,patient\nS0001,x\n")
    with pytest.raises(DatasetError, match=r"patient_map .*missing columns \['patient_id'\]"):
        load_index("cinc2020", tmp_path, patient_map=str(pmap))


def test_header_comments_naming_the_source_patient():
    assert header_patient("I01", ["<age>: 65 <sex>: F <diagnoses> Coronary artery disease", "patient 1",
                                  "PVCs, noise"]) == "incart:1"
    assert header_patient("S0001", ["Age: 81", "Dx: 164865005"]) is None
    # no PTB header names a patient: a record path in a comment is not read as one
    assert header_patient("S0001", ["original record patient001/s0010_re"]) is None
    assert header_patient("I02", ["patients with PVCs"]) is None


def test_incart_headers_give_the_32_subjects(tmp_path, write_wfdb, ecg_like):
    # incartdb's layout: "#<age>: 65 <sex>: F <diagnoses> ...", "# patient <n>", "# <beat notes>"
    for rid, patient, seed in [("I01", 1, 0), ("I02", 1, 1), ("I08", 4, 2)]:
        write_wfdb(tmp_path, rid, ecg_like(12, 2570, 257.0, seed=seed), 257.0, LEADS12,
                   comments=["<age>: 65 <sex>: F <diagnoses> Coronary artery disease, arterial hypertension",
                             f"patient {patient}", "PVCs, noise"])
    write_wfdb(tmp_path, "I09", ecg_like(12, 2570, 257.0, seed=3), 257.0, LEADS12, comments=["<age>: 51 <sex>: F "])
    t = load_index("incart", tmp_path).table.set_index("record_id")
    assert t.loc["I01", "patient_id"] == t.loc["I02", "patient_id"] == "incart:1"
    assert t.loc["I08", "patient_id"] == "incart:4"
    assert t.loc["I09", "patient_id"] == "I09" and t.loc["I09", "patient_id_source"] == "record"
    assert list(t.loc[["I01", "I02", "I08"], "patient_id_source"]) == ["dataset"] * 3
