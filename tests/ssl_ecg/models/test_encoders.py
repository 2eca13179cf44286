import pytest
import torch

from ssl_ecg import load_encoder, save_encoder
from ssl_ecg.models import ENCODERS, PatchTransformer1d, ResNet1d, build_encoder

CONFIGS = [
    {"name": "clocs", "in_channels": 1, "input_len": None, "embed_dim": 32},
    {"name": "resnet1d", "in_channels": 1, "embed_dim": 32, "widths": [16, 32], "depth": [1, 1]},
    {"name": "resnet1d", "in_channels": 12, "embed_dim": 32, "widths": [16, 32, 64], "depth": [2, 1, 1]},
    {"name": "transformer", "in_channels": 1, "embed_dim": 32, "patch": 25, "width": 32, "depth": 2, "heads": 4},
    {"name": "transformer", "in_channels": 12, "embed_dim": 32, "patch": 50, "width": 32, "depth": 1, "heads": 2},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['name']}-{c['in_channels']}")
@pytest.mark.parametrize("length", [400, 1000, 2513])
def test_any_length_and_channels(config, length):
    enc = build_encoder(config).eval()
    x = torch.randn(3, config["in_channels"], length)
    z = enc(x)
    assert z.shape == (3, config["embed_dim"]) == (3, enc.embed_dim) and torch.isfinite(z).all()
    z.sum().backward()


@pytest.mark.parametrize("config", CONFIGS[1:], ids=lambda c: f"{c['name']}-{c['in_channels']}")
def test_roundtrip_through_load_encoder(config, tmp_path):
    enc = build_encoder(config).eval()
    save_encoder(enc, tmp_path / "encoder.pt")
    x = torch.randn(2, config["in_channels"], 777)
    torch.testing.assert_close(load_encoder(tmp_path)(x), enc(x))


def test_registry_and_bad_config():
    assert set(ENCODERS) == {"clocs", "resnet1d", "transformer", "mobilenet1d", "mobilenetv2_1d"}
    with pytest.raises(ValueError, match="odd"):
        ResNet1d(kernel=4)
    with pytest.raises(ValueError, match="divisible"):
        PatchTransformer1d(width=30, heads=4)
    with pytest.raises(ValueError, match=r"\(N, 1, T\)"):
        ResNet1d()(torch.randn(2, 3, 100))
