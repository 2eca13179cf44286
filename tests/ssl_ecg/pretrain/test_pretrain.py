import numpy as np
import pytest
import torch

from ssl_ecg import load_encoder
from ssl_ecg.data import load_index
from ssl_ecg.data.arrays import load_signals
from ssl_ecg.errors import ConfigError
from ssl_ecg.pretrain import pretrain


@pytest.mark.realdata
def test_cmsc_on_real_ludb_loss_falls_and_is_reproducible(ludb_root, tmp_path):
    idx = load_index("ludb", ludb_root)
    idx.table = idx.table.iloc[:24].reset_index(drop=True)
    x, table = load_signals(idx, fs=100.0)
    codes = np.arange(len(table))
    kw = dict(fs=100.0, segment_len=5.0, lr=1e-3, batch_size=8, epochs=6, seed=3, progress_bar=False)
    a = pretrain(x, codes, tmp_path / "a", positives="patient_lead", **kw)
    assert all(np.isfinite(a.losses)) and len(a.losses) == 6
    assert a.losses[-1] < a.losses[0] - 0.2
    b = pretrain(x, codes, tmp_path / "b", positives="patient_lead", **kw)
    ea, eb = load_encoder(a.encoder_path), load_encoder(b.encoder_path)
    for (k, va), vb in zip(ea.state_dict().items(), eb.state_dict().values()):
        assert torch.equal(va, vb), k
    assert (tmp_path / "a" / "checkpoints" / "last.ckpt").is_file()


def test_positives_option_is_validated(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, 2, 1000)).astype(np.float32)
    with pytest.raises(ConfigError, match="positives"):
        pretrain(x, np.arange(4), tmp_path, fs=100.0, segment_len=4.0, positives="leads", epochs=1,
                 progress_bar=False)
