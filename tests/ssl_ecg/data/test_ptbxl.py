import numpy as np
import pandas as pd
import pytest

from ssl_ecg.data import load_index
from ssl_ecg.data.ptbxl import V102_DUPLICATES, multi_hot
from ssl_ecg.data.splits import check_no_leakage
from ssl_ecg.errors import DatasetError

STMTS = """,description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass
NORM,normal ECG,1.0,,,NORM,NORM
IMI,inferior MI,1.0,,,MI,IMI
NDT,non-diagnostic T,1.0,1.0,,STTC,STTC
SR,sinus rhythm,,,1.0,,
PVC,ventricular extrasystole,,1.0,1.0,,
"""


def make_fake_ptbxl(root, write_wfdb, ecg_like):
    rows = []
    codes = ["{'NORM': 100.0, 'SR': 0.0}", "{'IMI': 50.0, 'NDT': 0.0, 'SR': 0.0}", "{'PVC': 100.0}"]
    for i, c in enumerate(codes, start=1):
        name = f"{i:05d}_lr"
        write_wfdb(root / "records100" / "00000", name, ecg_like(12, 1000, 100.0, seed=i), 100.0,
                   ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"])
        rows.append({"ecg_id": i, "patient_id": f"{100 + i // 2}.0", "scp_codes": c, "strat_fold": [1, 9, 10][i - 1],
                     "filename_lr": f"records100/00000/{name}", "filename_hr": f"records500/00000/{i:05d}_hr"})
    pd.DataFrame(rows).to_csv(root / "ptbxl_database.csv", index=False)
    (root / "scp_statements.csv").write_text(STMTS)


def test_fake_ptbxl_tasks_folds_and_ids(tmp_path, write_wfdb, ecg_like):
    make_fake_ptbxl(tmp_path, write_wfdb, ecg_like)
    idx = load_index("ptbxl", tmp_path)
    t = idx.table
    assert t["patient_id"].tolist() == ["100", "101", "101"] and t["split"].tolist() == ["train", "val", "test"]
    assert t["superdiagnostic"].tolist() == [["NORM"], ["MI", "STTC"], []]
    assert t["subdiagnostic"][1] == ["IMI", "STTC"] and t["diagnostic"][1] == ["IMI", "NDT"]
    assert t["form"].tolist() == [[], ["NDT"], ["PVC"]] and t["rhythm"].tolist() == [["SR"], ["SR"], ["PVC"]]
    assert t["all"][1] == ["IMI", "NDT", "SR"]
    assert idx.read(0).leads[3] == "aVR"
    y, classes = multi_hot(t["superdiagnostic"])
    assert classes == ["MI", "NORM", "STTC"] and y.tolist() == [[0, 1, 0], [1, 0, 1], [0, 0, 0]]
    with pytest.warns(UserWarning, match="skipping 3 records without 500 Hz"):
        with pytest.raises(DatasetError, match="no records"):
            load_index("ptbxl", tmp_path, fs=500)
    with pytest.raises(DatasetError, match="3 records at 500 Hz have no files"):
        load_index("ptbxl", tmp_path, fs=500, missing="error")
    with pytest.raises(DatasetError, match="100 and 500"):
        load_index("ptbxl", tmp_path, fs=250)


def test_missing_columns_and_files(tmp_path, write_wfdb, ecg_like):
    make_fake_ptbxl(tmp_path, write_wfdb, ecg_like)
    db = pd.read_csv(tmp_path / "ptbxl_database.csv").drop(columns=["strat_fold"])
    db.to_csv(tmp_path / "ptbxl_database.csv", index=False)
    with pytest.raises(DatasetError, match=r"missing columns \['strat_fold'\]"):
        load_index("ptbxl", tmp_path)
    (tmp_path / "scp_statements.csv").unlink()
    (tmp_path / "ptbxl_database.csv").unlink()
    with pytest.raises(DatasetError, match="ptbxl_database.csv"):
        load_index("ptbxl", tmp_path)


@pytest.mark.realdata
def test_real_ptbxl(ptbxl_root):
    idx = load_index("ptbxl", ptbxl_root)
    t = idx.table
    # ../shared/data/ptbxl holds ecg_id 1-999 (926 patients); PTB-XL 1.0.2 drops 12 of them as duplicates.
    assert len(V102_DUPLICATES) == 12
    assert len(t) == 999 - len(V102_DUPLICATES) and not set(t["record_id"].astype(int)) & V102_DUPLICATES
    assert t.loc[t.record_id == "1", "superdiagnostic"].item() == ["NORM"]
    groups = {s: set(t.loc[t.split == s, "patient_id"]) for s in ("train", "val", "test")}
    check_no_leakage(groups)  # official folds keep each patient in one fold
    rec = idx.read(0)
    assert rec.signal.shape == (12, 1000) and rec.fs == 100.0 and rec.patient_id == "15709"
    assert 0.3 < np.ptp(rec.signal[1]) < 5.0  # lead II peak-to-peak in mV
    with_dups = load_index("ptbxl", ptbxl_root, drop_duplicates=False)
    assert len(with_dups) == 999 and with_dups.table["patient_id"].nunique() == 926
    assert set(with_dups.table["record_id"].astype(int)) == set(range(1, 1000))
