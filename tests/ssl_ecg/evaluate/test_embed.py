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
