import numpy as np
import pytest
import torch

from ssl_ecg.evaluate import EncoderChangedError, assert_unchanged, embed_records, frozen_state, tile_windows
from ssl_ecg.models import ClocsEncoder


def test_tile_windows_order():
    x = torch.arange(2 * 3 * 10, dtype=torch.float32).reshape(2, 3, 10)
    w = tile_windows(x, 4)
    assert w.shape == (2, 2, 3, 4)
    assert torch.equal(w[1, 1, 2], x[1, 2, 4:8])
    with pytest.raises(ValueError, match="shorter than the 11-sample window"):
        tile_windows(x, 11)


def test_embeddings_leave_encoder_bit_identical_and_mode_restored():
    enc = ClocsEncoder(input_len=400, embed_dim=8).train()  # a careless caller leaves train mode on
    before = frozen_state(enc)
    x = np.random.default_rng(0).standard_normal((5, 3, 850)).astype(np.float32)
    z = embed_records(enc, x, window=400)
    assert z.shape == (5, 3 * 8)
    assert enc.training
    assert_unchanged(enc, before)  # BatchNorm running stats untouched
    # Mean over the two windows, leads concatenated in order.
    enc.eval()
    with torch.no_grad():
        xt = torch.as_tensor(x)
        w0 = enc(xt[:, :, :400].reshape(15, 1, 400)).reshape(5, 24)
        w1 = enc(xt[:, :, 400:800].reshape(15, 1, 400)).reshape(5, 24)
    np.testing.assert_allclose(z, ((w0 + w1) / 2).numpy(), rtol=1e-5, atol=1e-6)


def test_change_is_detected():
    enc = ClocsEncoder(input_len=400, embed_dim=8)
    before = frozen_state(enc)
    enc.train()
    enc(torch.randn(4, 1, 400))  # updates BatchNorm running stats
    with pytest.raises(EncoderChangedError, match="running_mean"):
        assert_unchanged(enc, before)


def test_finetune_trains_a_copy_and_leaves_the_callers_encoder_unchanged():
    from ssl_ecg.evaluate import ProbeData, finetune
    from ssl_ecg.evaluate.embed import frozen_state
    from ssl_ecg.models import build_encoder

    rng = np.random.default_rng(0)

    def task(n):
        y = rng.integers(0, 2, n)
        x = rng.standard_normal((n, 2, 800)).astype(np.float32) * 0.3
        x[:, 0, :] += (2 * y - 1)[:, None] * np.sin(np.linspace(0, 40, 800))[None, :]  # class sets the polarity
        return x, y

    torch.manual_seed(0)
    enc = build_encoder({"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 8})
    before = frozen_state(enc)
    res = finetune(enc, ProbeData(*task(64), *task(32), *task(64)), window=400, per_lead=True, lr=3e-3, epochs=8,
                   encoder_lr_factor=0.5, batch_size=16)
    assert res.test_auroc > 0.9 and 0 <= res.setting["epoch"] < 8
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
