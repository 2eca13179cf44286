import numpy as np
import pandas as pd
import pytest
import scipy.io

from ssl_ecg.data import load_index, read_record
from ssl_ecg.data.arrays import load_signals
from ssl_ecg.data.cinc import SCORED_CLASSES, scored_labels
from ssl_ecg.data.other import read_tolerant
from ssl_ecg.errors import DatasetError, RecordError

LEADS12 = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def test_scored_classes_merge_equivalents():
    assert len(SCORED_CLASSES) == 24
    assert scored_labels(["59118001", "164889003", "999"]) == ["164889003", "713427006"]
    assert scored_labels(["17338001", "427172004"]) == ["427172004"]


@pytest.mark.parametrize("name", ["cinc2020", "cinc2021", "chapman"])
def test_cinc_family_fixture(tmp_path, write_wfdb, ecg_like, name):
    write_wfdb(tmp_path / "g1", "E00001", ecg_like(12, 2500, 500.0), 500.0, LEADS12,
               comments=["Age: 61", "Sex: Female", "Dx: 59118001,426783006"])
    write_wfdb(tmp_path / "g2", "JS00002", ecg_like(12, 2500, 500.0, seed=2), 500.0, LEADS12,
               comments=["Age: 40", "Sex: Male", "Dx: 1234"])
    idx = load_index(name, tmp_path)
    t = idx.table.set_index("record_id")
    assert t.loc["E00001", "scored"] == ["426783006", "713427006"] and t.loc["E00001", "source"] == "georgia"
    assert t.loc["JS00002", "scored"] == [] and t.loc["JS00002", "source"] == "chapman_ningbo"
    assert (idx.table["patient_id"] == idx.table["record_id"]).all()
    assert idx.read(0).signal.shape == (12, 2500)


def test_cinc_without_dx_is_an_error(tmp_path, write_wfdb, ecg_like):
    write_wfdb(tmp_path, "E1", ecg_like(1, 1000, 500.0), 500.0, ["I"], comments=["Age: 1"])
    with pytest.raises(DatasetError, match=r"E1\.hea: no '# Dx:'"):
        load_index("cinc2021", tmp_path)


@pytest.mark.realdata
def test_real_cinc2021_sample(cinc2021_root):
    idx = load_index("cinc2021", cinc2021_root)
    t = idx.table
    assert len(t) == 50 and t["source"].value_counts().to_dict() == {"georgia": 20, "chapman_ningbo": 20, "ptbxl": 10}
    assert t.loc[t.record_id == "E07500", "dx"].item() == ["67741000119109", "426177001"]
    assert t.loc[t.record_id == "E07500", "scored"].item() == ["426177001"]
    rec = idx.read(int(np.flatnonzero(t.record_id == "HR06000")[0]))  # '/mv' units
    assert rec.signal.shape == (12, 5000) and 0.1 < np.ptp(rec.signal[1]) < 10


def test_cpsc2018_fixture_with_reference(tmp_path):
    data = np.random.default_rng(0).standard_normal((12, 3000))
    scipy.io.savemat(tmp_path / "A0001.mat", {"ECG": {"sex": "Female", "age": 33, "data": data}})
    scipy.io.savemat(tmp_path / "A0002.mat", {"ECG": {"sex": "Male", "age": 70, "data": data[:, :2000]}})
    pd.DataFrame({"Recording": ["A0001", "A0002"], "First_label": ["2", "1"], "Second_label": ["7", None],
                  "Third_label": [None, None]}).to_csv(tmp_path / "REFERENCE.csv", index=False)
    idx = load_index("cpsc2018", tmp_path)
    assert idx.table["labels"].tolist() == [["AF", "PVC"], ["Normal"]] and idx.table.attrs["labelled"]
    rec = idx.read(0)
    np.testing.assert_allclose(rec.signal, data.astype(np.float32))
    assert rec.leads == LEADS12 and rec.demographics == {"sex": "Female", "age": 33.0}
    (tmp_path / "A0003.mat").write_bytes(b"not a mat file")
    with pytest.raises(RecordError, match=r"A0003\.mat"):
        load_index("cpsc2018", tmp_path, missing_labels="keep").read(2)


@pytest.mark.realdata
def test_real_cpsc2018_sample(cpsc2018_root):
    idx = load_index("cpsc2018", cpsc2018_root)
    assert len(idx) == 10 and not idx.table.attrs["labelled"]
    lengths = [idx.read(i).n_samples for i in range(10)]
    assert min(lengths) >= 5000 and max(lengths) == 27157


def test_incart_fixture(tmp_path, write_wfdb, ecg_like):
    write_wfdb(tmp_path, "I01", ecg_like(12, 2570, 257.0), 257.0, LEADS12)
    idx = load_index("incart", tmp_path)
    assert idx.table["record_id"].tolist() == ["I01"] and idx.read(0).fs == 257.0


@pytest.mark.parametrize("date", ["05:05:15 2000-01-05", "05:05:15 01/05/00", "25:61:00 01/01/2000"])
def test_cinc2017_tolerant_header(tmp_path, write_wfdb, ecg_like, date):
    sig = ecg_like(1, 3000, 300.0)
    path = write_wfdb(tmp_path, "A00001", sig, 300.0, ["ECG"])
    hea = tmp_path / "A00001.hea"
    lines = hea.read_text().splitlines()
    lines[0] += " " + date
    hea.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError):
        read_record(path)  # wfdb rejects this base time/date
    rec = read_tolerant(path)
    np.testing.assert_allclose(rec.signal[0], sig[0], atol=2e-3)
    (tmp_path / "REFERENCE.csv").write_text("A00001,A\n")
    idx = load_index("cinc2017", tmp_path)
    assert idx.table["label"].tolist() == ["A"] and idx.read(0).signal.shape == (1, 3000)
    (tmp_path / "REFERENCE.csv").write_text("A00001,X\n")
    with pytest.raises(DatasetError, match=r"unknown labels \['X'\]"):
        load_index("cinc2017", tmp_path)


def test_tolerant_reader_does_not_hide_real_damage(tmp_path, write_wfdb, ecg_like):
    path = write_wfdb(tmp_path, "B", ecg_like(1, 1000, 300.0), 300.0, ["ECG"])
    (tmp_path / "B.dat").write_bytes((tmp_path / "B.dat").read_bytes()[:500])
    with pytest.raises(RecordError, match=r"B\.hea"):
        read_tolerant(path)


def test_header_signal_count_and_format_code(tmp_path, write_wfdb, ecg_like):
    path = write_wfdb(tmp_path, "C", ecg_like(2, 1000, 250.0), 250.0, ["I", "II"])
    hea = tmp_path / "C.hea"
    text = hea.read_text().splitlines()
    hea.write_text("\n".join([text[0].replace("C 2 ", "C 3 ", 1)] + text[1:] + [text[2].replace("II", "III")]) + "\n")
    with pytest.raises(RecordError, match=r"C\.hea"):
        read_record(path)  # 3 signals declared, data written for 2
    path = write_wfdb(tmp_path, "D", ecg_like(1, 1000, 250.0), 250.0, ["I"])
    hea = tmp_path / "D.hea"
    lines = hea.read_text().splitlines()
    lines[1] = lines[1].replace("D.dat 16", "D.dat 99", 1)
    hea.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"D\.hea"):
        read_record(path)


def test_mixed_rates_without_resampling(tmp_path, write_wfdb, ecg_like):
    write_wfdb(tmp_path, "I01", ecg_like(1, 2570, 257.0), 257.0, ["I"])
    write_wfdb(tmp_path, "I02", ecg_like(1, 2500, 250.0), 250.0, ["I"])
    idx = load_index("incart", tmp_path)
    with pytest.raises(DatasetError, match=r"mixed sampling rates \[250.0, 257.0\]"):
        load_signals(idx, fs=None)
    assert load_signals(idx, fs=250.0)[0].shape == (2, 1, 2500)


def test_duplicate_record_ids_and_missing_patients(tmp_path):
    from ssl_ecg.data.index import DatasetIndex

    table = pd.DataFrame({"record_id": ["a", "b", "a"], "patient_id": ["p", "q", "r"], "patient_id_source": "dataset",
                          "fs": 250.0, "n_samples": 100})
    with pytest.raises(DatasetError, match=r"duplicate record ids \['a'\]"):
        DatasetIndex("x", tmp_path, table, reader=None)
    table["record_id"] = ["a", "b", "c"]
    table.loc[1, "patient_id"] = None
    with pytest.raises(DatasetError, match=r"records without patient_id \['b'\]"):
        DatasetIndex("x", tmp_path, table, reader=None)
