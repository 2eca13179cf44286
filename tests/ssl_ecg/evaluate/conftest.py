import csv

import numpy as np
import pytest
import wfdb

LUDB_LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]


def write_ludb_like(tmp_path, n: int):
    """A tiny LUDB-layout dataset under ``tmp_path/ludb``: ``n`` 10 s 12-lead records at 100 Hz (seeded integer
    noise), one patient each, sinus rhythm, lad alternating."""
    root = tmp_path / "ludb"
    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        wfdb.wrsamp(str(i), fs=100, units=["mV"] * 12, sig_name=LUDB_LEADS,
                    d_signal=rng.integers(-1500, 1500, (1000, 12)), fmt=["16"] * 12, adc_gain=[1000.0] * 12,
                    baseline=[0] * 12, write_dir=str(root / "data"))
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in range(1, n + 1)))
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies"])
        for i in range(1, n + 1):
            axis = "left axis deviation" if i % 2 else "normal"
            w.writerow([i, "M", 50, "Sinus rhythm", f"Electric axis of the heart: {axis}", ""])
    return root


@pytest.fixture
def ludb_like(tmp_path):
    """``ludb_like(n)``: :func:`write_ludb_like` into the test's ``tmp_path``."""
    return lambda n=16: write_ludb_like(tmp_path, n)
