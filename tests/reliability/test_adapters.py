"""Issue 17: dataset adapters turn malformed label files into DatasetErrors naming file, row/id and expectation."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

from ssl_ecg.data import load_index
from ssl_ecg.data.index import DatasetIndex
from ssl_ecg.data.other import read_cpsc2018
from ssl_ecg.errors import DatasetError, RecordError


def _sibling(name):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "ssl_ecg" / "data" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- LUDB ---------------------------------------------------------------------------------------------------

@pytest.fixture
def ludb(tmp_path):
    _sibling("test_ludb").make_fake_ludb(tmp_path, n=3)
    return tmp_path


def test_ludb_duplicate_id_in_records(ludb):
    (ludb / "RECORDS").write_text("data/1\ndata/2\ndata/2\n")
    with pytest.raises(DatasetError, match=r"RECORDS: 1 records appear more than once \('2' in rows \[2, 3\]\)"):
        load_index("ludb", ludb)


def test_ludb_duplicate_id_in_csv(ludb):
    text = (ludb / "ludb.csv").read_text()
    rows = pd.read_csv(ludb / "ludb.csv", dtype=str, keep_default_na=False)
    rows.loc[2, "ID"] = "1"
    rows.to_csv(ludb / "ludb.csv", index=False)
    assert text != (ludb / "ludb.csv").read_text()
    with pytest.raises(DatasetError, match=r"ludb\.csv: 1 IDs appear more than once \('1' in rows \[1, 3\]\)"):
        load_index("ludb", ludb)


def test_ludb_records_entry_outside_the_folder(ludb):
    (ludb / "RECORDS").write_text("data/1\n../data/2\n")
    with pytest.raises(DatasetError, match=r"RECORDS: record path '\.\./data/2' leaves the dataset folder"):
        load_index("ludb", ludb)


def test_ludb_unparseable_csv(ludb):
    (ludb / "ludb.csv").write_bytes(b"ID,Sex\n1,\xff\xfe\n")
    with pytest.raises(DatasetError, match=r"ludb\.csv: cannot parse the LUDB label file as CSV"):
        load_index("ludb", ludb)


# --- PTB-XL -------------------------------------------------------------------------------------------------

@pytest.fixture
def ptbxl(tmp_path, write_wfdb, ecg_like):
    _sibling("test_ptbxl").make_fake_ptbxl(tmp_path, write_wfdb, ecg_like)
    return tmp_path


def _set(root, ecg_id, column, value):
    db = pd.read_csv(root / "ptbxl_database.csv", dtype=str)
    db.loc[db["ecg_id"] == str(ecg_id), column] = value
    db.to_csv(root / "ptbxl_database.csv", index=False)


@pytest.mark.parametrize("column, value, message", [
    ("scp_codes", "{'NORM': 100.0", r"ecg_id 2: scp_codes \"\{'NORM': 100\.0\" is not a dict of statement codes"),
    ("scp_codes", "['NORM']", r"ecg_id 2: scp_codes \"\['NORM'\]\" is not a dict"),
    ("scp_codes", "__import__('os')", r"ecg_id 2: scp_codes .* is not a dict"),
    ("strat_fold", "abc", r"ecg_id 2: strat_fold 'abc'; expected a whole number in 1-10"),
    ("strat_fold", "11", r"ecg_id 2: strat_fold '11'; expected a whole number in 1-10"),
    ("patient_id", "P12", r"ecg_id 2: patient_id 'P12'; expected a whole number"),
    ("patient_id", "12.5", r"ecg_id 2: patient_id '12\.5'; expected a whole number"),
    ("ecg_id", "x", r"row 2: ecg_id 'x'; expected a whole number"),
    ("ecg_id", "1", r"1 ecg_ids appear more than once \(1 in rows \[1, 2\]\)"),
    ("filename_lr", "../../etc/x", r"filename_lr '\.\./\.\./etc/x' leaves the dataset folder .* \(ecg_id 2\)"),
])
def test_ptbxl_malformed_rows(ptbxl, column, value, message):
    _set(ptbxl, 2, column, value)
    with pytest.raises(DatasetError, match=r"ptbxl_database\.csv: " + message):
        load_index("ptbxl", ptbxl)


def test_ptbxl_statement_file_problems(ptbxl):
    stmts = (ptbxl / "scp_statements.csv").read_text()
    (ptbxl / "scp_statements.csv").write_text(stmts.replace("IMI,inferior MI,1.0", "IMI,inferior MI,yes"))
    with pytest.raises(DatasetError, match=r"scp_statements\.csv: column 'diagnostic' of statements \['IMI'\] holds "
                                           r"'yes'; expected 1, 0 or empty"):
        load_index("ptbxl", ptbxl)
    (ptbxl / "scp_statements.csv").write_text(stmts.replace(",diagnostic_subclass", ",subclass"))
    with pytest.raises(DatasetError, match=r"scp_statements\.csv: missing columns \['diagnostic_subclass'\]"):
        load_index("ptbxl", ptbxl)
    (ptbxl / "scp_statements.csv").write_text("")
    with pytest.raises(DatasetError, match=r"scp_statements\.csv: cannot parse the PTB-XL statement file"):
        load_index("ptbxl", ptbxl)


# --- CPSC 2018 ----------------------------------------------------------------------------------------------

def _cpsc(root, n=3, reference=None):
    data = np.random.default_rng(0).standard_normal((12, 1000))
    for i in range(1, n + 1):
        scipy.io.savemat(root / f"A{i:04d}.mat", {"ECG": {"sex": "Male", "age": 40 + i, "data": data}})
    if reference is not None:
        reference.to_csv(root / "REFERENCE.csv", index=False)
    return data


def _ref(ids, first, second=None):
    return pd.DataFrame({"Recording": ids, "First_label": first, "Second_label": second or [None] * len(ids)})


@pytest.mark.parametrize("label", ["10", "abc", "0", "2.5"])
def test_cpsc_unknown_class(tmp_path, label):
    _cpsc(tmp_path, reference=_ref(["A0001", "A0002", "A0003"], ["1", "2", "3"], [None, label, None]))
    with pytest.raises(DatasetError, match=rf"REFERENCE\.csv: row 2 \(Recording A0002\): Second_label '{label}'; "
                                           r"expected a class number 1-9"):
        load_index("cpsc2018", tmp_path)


def test_cpsc_reference_listing_too_few_records(tmp_path):
    _cpsc(tmp_path, n=10, reference=_ref(["A0001"], ["1"]))
    with pytest.raises(DatasetError, match=r"REFERENCE\.csv: 9 of 10 records under .* have no row \(e\.g\. "
                                           r"\['A0002', 'A0003', 'A0004', 'A0005', 'A0006'\]\)"):
        load_index("cpsc2018", tmp_path)
    idx = load_index("cpsc2018", tmp_path, missing_labels="keep")
    assert idx.table["labels"].tolist() == [["Normal"]] + [[]] * 9
    assert idx.table.attrs["unlabelled"] == [f"A{i:04d}" for i in range(2, 11)]
    with pytest.raises(DatasetError, match=r"missing_labels: expected 'error' or 'keep', got 'drop'"):
        load_index("cpsc2018", tmp_path, missing_labels="drop")


def test_cpsc_reference_duplicates_and_columns(tmp_path):
    _cpsc(tmp_path, reference=_ref(["A0001", "A0002", "A0002", "A0003"], ["1", "2", "3", "4"]))
    with pytest.raises(DatasetError, match=r"REFERENCE\.csv: 1 Recordings appear more than once "
                                           r"\('A0002' in rows \[2, 3\]\)"):
        load_index("cpsc2018", tmp_path)
    pd.DataFrame({"Recording": ["A0001"], "Label": ["1"]}).to_csv(tmp_path / "REFERENCE.csv", index=False)
    with pytest.raises(DatasetError, match=r"REFERENCE\.csv: missing columns \['First_label'\]"):
        load_index("cpsc2018", tmp_path)


def test_cpsc_mat_without_demographics(tmp_path):
    data = np.random.default_rng(0).standard_normal((12, 800))
    scipy.io.savemat(tmp_path / "A0001.mat", {"ECG": {"data": data}})
    scipy.io.savemat(tmp_path / "A0002.mat", {"ECG": {"sex": "F", "age": "unknown", "data": data}})
    rec = read_cpsc2018(tmp_path / "A0001.mat")
    assert rec.demographics["sex"] == "" and np.isnan(rec.demographics["age"])
    np.testing.assert_allclose(rec.signal, data.astype(np.float32))
    rec = read_cpsc2018(tmp_path / "A0002.mat")
    assert rec.demographics["sex"] == "F" and np.isnan(rec.demographics["age"])
    scipy.io.savemat(tmp_path / "A0003.mat", {"ECG": {"sex": "F", "age": 3}})
    with pytest.raises(RecordError, match=r"A0003\.mat: not a CPSC 2018 \.mat file with struct ECG\.data"):
        load_index("cpsc2018", tmp_path).read(2)


# --- CinC 2017 and MIT-BIH ----------------------------------------------------------------------------------

def test_cinc2017_reference_problems(tmp_path, write_wfdb, ecg_like):
    write_wfdb(tmp_path, "A00001", ecg_like(1, 900, 300.0), 300.0, ["ECG"])
    (tmp_path / "REFERENCE.csv").write_text("A00001,N\nA00002\n")
    with pytest.raises(DatasetError, match=r"REFERENCE\.csv: row 2 \('A00002', ''\) has an empty field"):
        load_index("cinc2017", tmp_path)
    (tmp_path / "REFERENCE.csv").write_text("A00001,N\nA00001,A\n")
    with pytest.raises(DatasetError, match=r"REFERENCE\.csv: 1 record ids appear more than once"):
        load_index("cinc2017", tmp_path)
    (tmp_path / "REFERENCE.csv").write_text("A00001,N\n")
    assert load_index("cinc2017", tmp_path).read(0).signal.shape == (1, 900)


def test_mitdb_records_file_problems(tmp_path, write_wfdb, ecg_like):
    write_wfdb(tmp_path, "100", ecg_like(2, 720, 360.0), 360.0, ["MLII", "V5"])
    (tmp_path / "RECORDS").write_text("100\n100\n")
    with pytest.raises(DatasetError, match=r"RECORDS: 1 records appear more than once \('100' in rows \[1, 2\]\)"):
        load_index("mitdb", tmp_path)
    (tmp_path / "RECORDS").write_text("100\n../100\n")
    with pytest.raises(DatasetError, match=r"RECORDS: record '\.\./100' is not a plain record name"):
        load_index("mitdb", tmp_path)


# --- bulk reads name the failing file -----------------------------------------------------------------------

def test_index_read_errors_name_the_file(tmp_path, write_wfdb, ecg_like):
    write_wfdb(tmp_path, "I01", ecg_like(1, 514, 257.0), 257.0, ["I"])
    write_wfdb(tmp_path, "I02", ecg_like(1, 514, 257.0), 257.0, ["I"])
    (tmp_path / "I02.dat").write_bytes(b"\x00" * 10)
    idx = load_index("incart", tmp_path)
    assert idx.read(0).signal.shape == (1, 514)
    with pytest.raises(RecordError, match=r"I02\.dat: signal file is truncated"):
        idx.read(1)

    def broken(row):
        raise OSError("disk gone")

    table = pd.DataFrame({"record_id": ["r1"], "path": ["/data/r1"], "patient_id": ["p"],
                          "patient_id_source": "record", "fs": 100.0, "n_samples": 10})
    with pytest.raises(RecordError, match=r"^/data/r1: cannot read x record 'r1' \(OSError: disk gone\)"):
        DatasetIndex("x", tmp_path, table, broken).read(0)
