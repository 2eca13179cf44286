import json

import pandas as pd
import pytest

from ssl_ecg.cli import main
from ssl_ecg.demo import DemoConfig, format_table, run_demo
from ssl_ecg.errors import ConfigError, DatasetError
from ssl_ecg.recipe import load_recipe, parse_overrides


@pytest.mark.slow
@pytest.mark.realdata
def test_demo_end_to_end_on_real_ludb(ludb_root, tmp_path):
    cfg = DemoConfig(name="mini", epochs=3, fractions=[0.25, 1.0], seeds=[0, 1], supervised_epochs=3)
    out = run_demo(cfg, data=str(ludb_root), runs=tmp_path, progress=False)
    run = tmp_path / "mini"
    curve = pd.read_csv(run / "curve.csv")
    assert len(curve) == 2 * 3 * 2 * 2  # tasks x arms x fractions x seeds
    assert curve["value"].between(0, 1).all()
    meta = json.loads((run / "curve.json").read_text())
    assert meta["pretraining_pool"]["ludb"]["splits"] == ["train", "val"]
    sizes = meta["split_sizes"]
    assert sum(sizes.values()) == 200  # stratified per class, so each split is within rounding of 60/20/20
    assert abs(sizes["train"] - 120) <= 3 and abs(sizes["val"] - 40) <= 3 and abs(sizes["test"] - 40) <= 3
    assert (run / "curve.png").stat().st_size > 1000 and (run / "pretrain" / "encoder.pt").is_file()
    assert "cmsc" in format_table(out["summary"]) and "random_init" in format_table(out["summary"])


def test_demo_offline_without_data_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_ECG_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SSL_ECG_PHYSIONET_URL", "http://127.0.0.1:9/")  # discard port: connection refused
    with pytest.raises(DatasetError, match="cannot download ludb.*offline"):
        run_demo(DemoConfig(), data=str(tmp_path / "empty"), runs=tmp_path)
    assert main(["demo", "--data", str(tmp_path / "empty"), "--runs", str(tmp_path), "--quiet"]) == 2


def test_recipe_unknown_key_and_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("epochs: 2\nbogus: 1\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['bogus'\]"):
        load_recipe(DemoConfig, path)
    path.write_text("epochs: 2\n")
    cfg = load_recipe(DemoConfig, path, parse_overrides(["seeds=[0,1]", "lr=0.01"]))
    assert cfg.epochs == 2 and cfg.seeds == [0, 1] and cfg.lr == 0.01
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(ConfigError, match="tasks"):
        DemoConfig(tasks=["nope"])


def test_bundled_demo_recipe_loads():
    from pathlib import Path

    cfg = load_recipe(DemoConfig, Path(__file__).parents[2] / "experiments" / "demo.yaml")
    assert cfg.fractions == [0.05, 0.1, 0.25, 0.5, 1.0] and len(cfg.seeds) >= 5
