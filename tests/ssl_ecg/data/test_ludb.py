import csv

import numpy as np
import pytest
import wfdb

from ssl_ecg.data import load_index
from ssl_ecg.data.ludb import parse_ludb_csv
from ssl_ecg.errors import DatasetError, RecordError

LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
HEADER = ["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Conduction abnormalities", "Extrasystolies",
          "Hypertrophies", "Cardiac pacing", "Ischemia", "Non-specific repolarization abnormalities", "Other states"]


def make_fake_ludb(root, n=4, seed=0):
    """LUDB layout with its header quirk: each lead's gain equals its digital peak-to-peak."""
    rng = np.random.default_rng(seed)
    (root / "data").mkdir(parents=True)
    truth = {}
    for i in range(1, n + 1):
        d = rng.integers(-1500, 1500, size=(5000, 12)).astype(np.int64)
        ptp = (d.max(0) - d.min(0)).astype(float)
        wfdb.wrsamp(str(i), fs=500, units=["mV"] * 12, sig_name=LEADS, d_signal=d, fmt=["16"] * 12,
                    adc_gain=list(ptp), baseline=[0] * 12, write_dir=str(root / "data"))
        truth[str(i)] = d.T / 1000.0
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in range(1, n + 1)))
    axes = ["left axis deviation", "normal", "vertical", "normal"]
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i in range(1, n + 1):
            hyp = "Left atrial hypertrophy\nLeft ventricular hypertrophy" if i % 2 else ""
            w.writerow([i, "F\n", f"{50 + i}\n", "Sinus rhythm" if i != 3 else "Atrial fibrillation",
                        f"Electric axis of the heart: {axes[(i - 1) % 4]}", "", "", hyp, "", "", "", ""])
    return truth


def test_fake_ludb_amplitudes_and_labels(tmp_path):
    truth = make_fake_ludb(tmp_path)
    idx = load_index("ludb", tmp_path)
    assert len(idx) == 4
    assert list(idx.table["patient_id_source"].unique()) == ["dataset"]  # one subject per record, documented
    assert idx.table["lvh"].tolist() == [1, 0, 1, 0]
    assert idx.table["afib"].tolist() == [0, 0, 1, 0]
    assert np.isnan(idx.table["lad"][2]) and idx.table["lad"][0] == 1.0 and idx.table["lad"][1] == 0.0
    rec = idx.read(0)
    np.testing.assert_allclose(rec.signal, truth["1"], rtol=1e-6, atol=1e-9)  # uV -> mV, header gains ignored
    assert rec.leads[3] == "aVR" and rec.labels["lvh"] == 1


def test_label_csv_missing_columns(tmp_path):
    make_fake_ludb(tmp_path)
    (tmp_path / "ludb.csv").write_text("ID,Sex\n1,F\n")
    with pytest.raises(DatasetError, match=r"ludb\.csv.*missing columns.*Rhythms"):
        load_index("ludb", tmp_path)


def test_missing_label_file(tmp_path):
    make_fake_ludb(tmp_path)
    (tmp_path / "ludb.csv").unlink()
    with pytest.raises(DatasetError, match=r"ludb\.csv"):
        load_index("ludb", tmp_path)


def test_missing_record_file_is_named(tmp_path):
    make_fake_ludb(tmp_path)
    (tmp_path / "data" / "2.hea").unlink()
    idx = load_index("ludb", tmp_path)
    with pytest.raises(RecordError, match=r"2\.hea"):
        idx.read(1)


def test_unknown_and_unavailable_dataset_names(tmp_path):
    with pytest.raises(DatasetError, match="unknown"):
        load_index("nosuch", tmp_path)
    with pytest.raises(DatasetError, match="not a directory"):
        load_index("ludb", tmp_path / "absent")


@pytest.mark.realdata
def test_real_ludb(ludb_root):
    idx = load_index("ludb", ludb_root)
    t = idx.table
    assert len(idx) == 200 and t["patient_id"].nunique() == 200
    assert int(t["lvh"].sum()) == 108
    assert (t["lad"] == 1).sum() == 66 and (t["lad"] == 0).sum() == 75
    rec = idx.read(0)
    assert rec.signal.shape == (12, 5000) and rec.fs == 500.0
    # Header of record 1: lead i gain 1716 == its digital peak-to-peak -> 1.716 mV as microvolts.
    assert np.ptp(rec.signal[0]) == pytest.approx(1.716, abs=1e-6)
    assert rec.leads == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    raw = parse_ludb_csv(ludb_root / "ludb.csv")
    assert raw.loc[raw.record_id == "1", "axis"].item() == "left axis deviation"
