import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ssl_ecg.checkpoint import save_encoder
from ssl_ecg.cli import main
from ssl_ecg.errors import ConfigError, SplitError
from ssl_ecg.evaluate.runner import EvalConfig, FewShotConfig, check_encoder, run_evaluation, run_fewshot_recipe
from ssl_ecg.models import build_encoder
from ssl_ecg.recipe import load_recipe

EXPERIMENTS = Path(__file__).parents[3] / "experiments"


def _checkpoint(path, **cfg):
    torch.manual_seed(0)
    enc = build_encoder({"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 8, **cfg})
    return save_encoder(enc, path)


def test_checkpoint_that_does_not_fit_the_data_is_named(tmp_path, ludb_root):
    enc = build_encoder({"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 8})
    with pytest.raises(ConfigError, match="built for 400 samples.*window is 500"):
        check_encoder(enc, True, 12, 500, source="x.pt")
    with pytest.raises(ConfigError, match="takes 1 channel.*12 leads"):
        check_encoder(enc, False, 12, 400, source="x.pt")
    path = _checkpoint(tmp_path / "enc.pt")
    cfg = EvalConfig(name="bad", root=str(ludb_root), fs=100.0, window=5.0, encoders={"mine": str(path)})
    with pytest.raises(ConfigError, match=r"encoders.mine \(.*enc.pt\): encoder was built for 400 samples"):
        run_evaluation(cfg, runs=tmp_path, progress=False)


@pytest.mark.parametrize("recipe", ["eval_ludb_curve.yaml"])
def test_bundled_eval_recipes_validate(recipe):
    cfg = load_recipe(EvalConfig, EXPERIMENTS / recipe)
    assert cfg.encoders and cfg.name == recipe[:-5]


@pytest.mark.parametrize("recipe", ["fewshot_mitdb.yaml", "fewshot_ludb.yaml"])
def test_bundled_fewshot_recipes_validate(recipe):
    cfg = load_recipe(FewShotConfig, EXPERIMENTS / recipe)
    assert cfg.name == recipe[:-5] and cfg.episodes >= 200


@pytest.mark.slow
@pytest.mark.realdata
def test_curve_probe_and_finetune_commands_on_real_ludb(tmp_path, ludb_root, capsys):
    path = _checkpoint(tmp_path / "enc.pt")
    common = [f"root={ludb_root}", "fs=80.0", "window=5.0", f"encoders={{mine: {path}}}", "tasks=[lad, axis]",
              "epochs=2"]
    assert main(["curve", *common, "name=c", "fractions=[0.5, 1.0]", "seeds=[0, 1]", "probes=[logistic, torch]",
                 "--runs", str(tmp_path), "--quiet"]) == 0
    curve = pd.read_csv(tmp_path / "c" / "curve.csv")
    # 2 tasks x 2 seeds x 2 fractions x (2 encoders x 2 probes + supervised)
    assert len(curve) == 2 * 2 * 2 * 5 and curve["value"].between(0, 1).all()
    meta = json.loads((tmp_path / "c" / "curve.json").read_text())
    assert "labels_needed" in meta and meta["split_sizes"]["test"] > 0
    assert (tmp_path / "c" / "labels_needed.png").is_file()
    assert main(["probe", *common, "name=p", "seeds=[0, 1]", "--runs", str(tmp_path), "--quiet"]) == 0
    probe = pd.read_csv(tmp_path / "p" / "curve.csv")
    assert set(probe["fraction"]) == {1.0} and set(probe["arm"]) == {"mine", "random_init"}
    assert main(["finetune", *common, "name=f", "seeds=[0]", "--runs", str(tmp_path), "--quiet"]) == 0
    ft = pd.read_csv(tmp_path / "f" / "curve.csv")
    assert set(ft["probe"]) == {"finetune"} and set(ft["arm"]) == {"mine"}
    assert "lad: test AUROC" in capsys.readouterr().out
    assert main(["curve", *common, "name=bad", "fractions=[0, 0.5]", "--runs", str(tmp_path)]) == 2


@pytest.mark.realdata
def test_fewshot_on_real_mitdb_beats(tmp_path, mitdb_root):
    cfg = FewShotConfig(root=str(mitdb_root), shots=[1, 5], episodes=200, head_steps=200,
                        max_items_per_patient_class=10)
    res = run_fewshot_recipe(cfg, runs=tmp_path)
    assert res["head_patients"] == 22 and res["episode_patients"] == 21  # DS1 / DS2 without 202 (= 201)
    for shots in ("1-shot", "5-shot"):
        for method in ("siamese", "cosine"):
            mean, lo, hi = res["results"][shots][method]["accuracy"]
            assert 0 <= lo <= mean <= hi <= 1
    assert json.loads((tmp_path / "fewshot" / "fewshot.json").read_text())["results"]
    with pytest.raises(SplitError, match=r"class 'F' has \d patient\(s\)"):
        run_fewshot_recipe(FewShotConfig(root=str(mitdb_root), shots=[10], episode_classes=["N", "V", "F"],
                                         head_steps=10, max_items_per_patient_class=5), runs=tmp_path)


@pytest.mark.realdata
def test_fewshot_on_real_ludb_rhythms(tmp_path, ludb_root):
    cfg = FewShotConfig(name="lr", dataset="ludb", root=str(ludb_root), label="rhythm", fs=100.0, window=5.0,
                        ways=2, shots=[1, 5], episodes=200, head_steps=200)
    res = run_fewshot_recipe(cfg, runs=tmp_path)
    assert res["head_patients"] + res["episode_patients"] == 200
    acc = res["results"]["5-shot"]["cosine"]["accuracy"]
    assert 0 <= acc[1] <= acc[0] <= acc[2] <= 1
    with pytest.raises(ConfigError, match="label"):
        run_fewshot_recipe(FewShotConfig(dataset="ludb", root=str(ludb_root)), runs=tmp_path)
    assert np.isfinite(acc[0])


@pytest.mark.realdata
def test_multilabel_curves_on_real_ptbxl_and_the_challenge_score_on_cinc2021(tmp_path, ptbxl_root, cinc2021_root):
    px = run_evaluation(EvalConfig(name="px", dataset="ptbxl", root=str(ptbxl_root), dataset_options={"fs": 100},
                                   fs=100.0, window=5.0, tasks=["superdiagnostic"], fractions=[0.25, 1.0],
                                   seeds=[0, 1], supervised=False, split="official"), runs=tmp_path, progress=False)
    curve = px["curve"]
    assert set(curve["metric"]) == {"auroc"} and len(curve) == 4  # not CinC codes: no challenge score
    assert curve["value"].between(0.5, 1).all()  # macro AUROC over the five superclasses
    cc = run_evaluation(EvalConfig(name="cc", dataset="cinc2021", root=str(cinc2021_root), fs=100.0, window=5.0,
                                   tasks=["scored"], fractions=[1.0], seeds=[0, 1], supervised=False),
                        runs=tmp_path, progress=False)
    metrics = cc["curve"].groupby("metric")["value"]
    assert set(metrics.groups) == {"auroc", "challenge"}
    assert metrics.max()["challenge"] <= 1 and np.isfinite(metrics.min()["challenge"])
    assert "scored [challenge]" in cc["summary"]
