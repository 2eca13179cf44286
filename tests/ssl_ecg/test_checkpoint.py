import json

import pytest
import torch

from ssl_ecg import load_encoder, save_encoder
from ssl_ecg.errors import ConfigError
from ssl_ecg.models import ClocsEncoder


def test_roundtrip_gives_identical_outputs(tmp_path):
    enc = ClocsEncoder(input_len=500, embed_dim=16)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p))
    enc.features[1].running_mean.fill_(0.3)
    save_encoder(enc, tmp_path / "encoder.pt", extra={"method": "cmsc"})
    loaded = load_encoder(tmp_path)
    assert not loaded.training
    x = torch.randn(4, 1, 500)
    assert torch.equal(enc.eval()(x), loaded(x))
    assert json.loads((tmp_path / "encoder.json").read_text())["method"] == "cmsc"


def test_mismatched_config_is_a_clear_error(tmp_path):
    save_encoder(ClocsEncoder(input_len=500, embed_dim=16), tmp_path / "encoder.pt")
    meta = json.loads((tmp_path / "encoder.json").read_text())
    meta["encoder"]["embed_dim"] = 32
    (tmp_path / "encoder.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="do not match"):
        load_encoder(tmp_path / "encoder.pt")


def test_pickled_code_is_refused(tmp_path):
    save_encoder(ClocsEncoder(input_len=500, embed_dim=16), tmp_path / "encoder.pt")
    torch.save({"evil": ClocsEncoder(input_len=500)}, tmp_path / "encoder.pt")  # a pickled module
    with pytest.raises(Exception, match="(?i)weights"):
        load_encoder(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_encoder(tmp_path / "none.pt")
