import csv
from dataclasses import replace

import numpy as np
import pytest
import torch
import wfdb

from ssl_ecg import load_encoder
from ssl_ecg.errors import ConfigError
from ssl_ecg.pretrain import PretrainConfig, run_pretrain


def _ludb_subset(ludb_root, folder, n):
    """The first ``n`` real LUDB records as a LUDB-layout folder in the test's tmp dir.

    The header and signal files are copied (about 120 kB a record): listed paths that lead out of a dataset
    folder through a symbolic link are refused by the adapters, so the subset cannot link to the shared copy.
    """
    import shutil

    (folder / "data").mkdir(parents=True)
    shutil.copyfile(ludb_root / "ludb.csv", folder / "ludb.csv")
    for i in range(1, n + 1):
        for ext in (".hea", ".dat"):
            shutil.copyfile(ludb_root / "data" / f"{i}{ext}", folder / "data" / f"{i}{ext}")
    (folder / "RECORDS").write_text("".join(f"data/{i}\n" for i in range(1, n + 1)))
    return folder


@pytest.mark.realdata
def test_cmsc_on_real_ludb_loss_falls_and_is_reproducible(ludb_root, tmp_path):
    root = _ludb_subset(ludb_root, tmp_path / "ludb24", 24)
    cfg = PretrainConfig(dataset="ludb", root=str(root), method="cmsc", fs=100.0, segment_len=5.0, lr=1e-3,
                         batch_size=8 * 12, epochs=6, seed=3, positives="patient_lead", pool="all",
                         cache_dir=str(tmp_path / "cache"), accelerator="cpu")
    a = run_pretrain(replace(cfg, name="a"), runs=tmp_path / "runs", progress=False)
    assert a["records"] == 24 and all(np.isfinite(a["losses"])) and len(a["losses"]) == 6
    assert a["losses"][-1] < a["losses"][0] - 0.2
    b = run_pretrain(replace(cfg, name="b"), runs=tmp_path / "runs", progress=False)
    ea, eb = load_encoder(a["encoder"]), load_encoder(b["encoder"])
    for (k, va), vb in zip(ea.state_dict().items(), eb.state_dict().values()):
        assert torch.equal(va, vb), k
    assert (tmp_path / "runs" / "a" / "checkpoints" / "last.ckpt").is_file()


def test_positives_option_is_validated(tmp_path):
    root = tmp_path / "ludb"
    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 5):
        d = rng.integers(-1000, 1000, size=(1000, 2)).astype(np.int64)
        wfdb.wrsamp(str(i), fs=100, units=["mV"] * 2, sig_name=["ii", "v2"], d_signal=d, fmt=["16"] * 2,
                    adc_gain=[1000.0] * 2, baseline=[0] * 2, write_dir=str(root / "data"))
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in range(1, 5)))
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies"])
        w.writerows([i, "F", 50, "Sinus rhythm", "Electric axis of the heart: normal", ""] for i in range(1, 5))
    cfg = PretrainConfig(root=str(root), fs=100.0, segment_len=4.0, positives="leads", epochs=1, pool="all",
                         cache_dir=str(tmp_path / "cache"), accelerator="cpu")
    with pytest.raises(ConfigError, match="positives"):
        run_pretrain(cfg, runs=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs" / "pretrain" / "encoder.pt").exists()
