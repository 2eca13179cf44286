import pytest
import torch

from ssl_ecg.errors import ConfigError
from ssl_ecg.models import ClocsEncoder, build_encoder


def test_parameter_count_and_paper_flatten():
    # 3 conv/BN blocks (32+8, 464+32, 3616+64) + Linear(32*3 -> 128) at 1000 samples.
    assert sum(p.numel() for p in ClocsEncoder(input_len=1000).parameters()) == 16632
    assert ClocsEncoder.output_steps(2500) == 10  # CLOCS: 32 x 10 = 320 features at 2500 samples


@pytest.mark.parametrize("channels,length", [(1, 500), (4, 2500), (12, 777)])
def test_any_length_and_lead_count(channels, length):
    fixed = ClocsEncoder(in_channels=channels, input_len=length, embed_dim=32)
    adaptive = ClocsEncoder(in_channels=channels, input_len=None, embed_dim=32)
    x = torch.randn(3, channels, length)
    assert fixed(x).shape == (3, 32) and adaptive(x).shape == (3, 32)
    assert adaptive(torch.randn(2, channels, length + 123)).shape == (2, 32)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"built for 1000 samples, got 900"):
        ClocsEncoder(input_len=1000)(torch.randn(2, 1, 900))
    with pytest.raises(ValueError, match=r"\(N, 1, T\)"):
        ClocsEncoder(input_len=1000)(torch.randn(2, 2, 1000))
    assert ClocsEncoder.min_input_len() == 388
    with pytest.raises(ValueError, match="too short.*388"):
        ClocsEncoder(input_len=387)
    with pytest.raises(ValueError, match="shorter than the 388"):
        ClocsEncoder(input_len=None)(torch.randn(2, 1, 300))


def test_build_from_config():
    enc = build_encoder({"name": "clocs", "in_channels": 2, "input_len": 500, "embed_dim": 16})
    assert enc.config["in_channels"] == 2 and enc(torch.randn(1, 2, 500)).shape == (1, 16)
    with pytest.raises(ConfigError, match="unknown"):
        build_encoder({"name": "nope"})
    with pytest.raises(ConfigError, match="clocs"):
        build_encoder({"name": "clocs", "bogus": 1})
