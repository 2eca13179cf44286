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


# -- provenance ---------------------------------------------------------------------------------------------------


def _provenance() -> dict:
    from ssl_ecg.data.prepare import Split

    split = Split(patients={"train": ("ludb:1", "ludb:2"), "val": ("ludb:3",), "test": ("ludb:4",)},
                  rule={"split": [0.5, 0.25, 0.25], "seed": 0, "datasets": ["ludb"]}, cache_key="k")
    return {"version": 1, "datasets": ["ludb"], "cache_keys": ["k"], "pool_patients": ["ludb:1", "ludb:2", "ludb:3"],
            "pool_fingerprints": ["f1", "f2", "f3"], "label_patients": [], "split": split.to_dict()}


def _save(tmp_path, provenance=None, **extra) -> None:
    extra = dict(extra, **({} if provenance is None else {"provenance": provenance}))
    save_encoder(ClocsEncoder(input_len=500, embed_dim=16), tmp_path / "encoder.pt", extra=extra)


def test_load_provenance_round_trips_and_finds_the_json_from_any_of_the_paths(tmp_path):
    from ssl_ecg.checkpoint import load_provenance

    prov = _provenance()
    _save(tmp_path, prov, method="cmsc")
    for path in (tmp_path, tmp_path / "encoder.pt", tmp_path / "encoder.json"):
        assert load_provenance(path) == prov


def test_load_provenance_is_none_for_an_encoder_without_one(tmp_path):
    from ssl_ecg.checkpoint import load_provenance

    _save(tmp_path, method="cmsc", pretraining={"records": 3})  # the encoder.json written before provenance existed
    assert load_provenance(tmp_path) is None
    assert load_encoder(tmp_path) is not None


@pytest.mark.parametrize("change,error,match", [
    (lambda p: p.pop("pool_patients"), "DatasetError", r"provenance\.pool_patients: expected a list of strings, "
                                                         r"got missing"),
    (lambda p: p.update(pool_fingerprints="f1"), "DatasetError", r"provenance\.pool_fingerprints: expected a list"),
    (lambda p: p.update(label_patients=[1, 2]), "DatasetError", r"provenance\.label_patients: expected a list"),
    (lambda p: p.update(pool_patients=[]), "DatasetError", r"provenance\.pool_patients: expected the patients"),
    (lambda p: p.update(version="1"), "DatasetError", r"provenance\.version: expected a positive integer"),
    (lambda p: p.update(version=2), "ConfigError", r"provenance\.version: 2 was written by a newer ssl-ecg"),
    (lambda p: p.pop("split"), "DatasetError", r"provenance\.split: expected the split object"),
    (lambda p: p["split"]["patients"]["test"].append("ludb:9"), "DatasetError", r"provenance\.split"),
])
def test_malformed_provenance_is_an_error_naming_the_file_and_key(tmp_path, change, error, match):
    from ssl_ecg import errors
    from ssl_ecg.checkpoint import load_provenance

    prov = json.loads(json.dumps(_provenance()))
    change(prov)
    _save(tmp_path, prov)
    with pytest.raises(getattr(errors, error), match=rf"{tmp_path / 'encoder.json'}: {match}"):
        load_provenance(tmp_path)


def test_load_provenance_of_a_missing_or_broken_file(tmp_path):
    from ssl_ecg.checkpoint import load_provenance
    from ssl_ecg.errors import DatasetError

    with pytest.raises(ConfigError, match=rf"{tmp_path / 'encoder.json'}: encoder config not found"):
        load_provenance(tmp_path)
    (tmp_path / "encoder.json").write_text("{not json")
    with pytest.raises(ConfigError, match="expected a JSON encoder config"):
        load_provenance(tmp_path)
    (tmp_path / "encoder.json").write_text('{"encoder": {}, "provenance": [1]}')
    with pytest.raises(DatasetError, match=r"provenance: expected an object, got list"):
        load_provenance(tmp_path)
