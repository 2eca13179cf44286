"""The demo is two recipes (issue 12): ``ssl-ecg demo`` == ``ssl-ecg pretrain`` + ``ssl-ecg curve`` on them."""

import csv
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from ssl_ecg.cli import main
from ssl_ecg.data.prepare import Split
from ssl_ecg.demo import DEMO_CURVE, DEMO_PRETRAIN, format_table, load_demo, run_demo
from ssl_ecg.errors import ConfigError, DatasetError
from ssl_ecg.evaluate.runner import EvalConfig
from ssl_ecg.pretrain import PretrainConfig
from ssl_ecg.recipe import load_recipe, parse_overrides

EXPERIMENTS = Path(__file__).parents[2] / "experiments"
LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
KEYS = ["task", "arm", "probe", "fraction", "seed"]


def make_fake_ludb(root: Path, n: int = 30, seed: int = 0) -> Path:
    """A LUDB-layout folder (as tests/ssl_ecg/data/test_ludb.py make_fake_ludb) whose labels alternate, so
    every split holds both classes of ``lvh`` (odd ids) and ``lad`` (every third id; the rest normal axis)."""
    rng = np.random.default_rng(seed)
    (root / "data").mkdir(parents=True)
    for i in range(1, n + 1):
        d = rng.integers(-1500, 1500, size=(5000, 12)).astype(np.int64)  # 1 unit = 1 uV
        wfdb.wrsamp(str(i), fs=500, units=["mV"] * 12, sig_name=LEADS, d_signal=d, fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(root / "data"))
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in range(1, n + 1)))
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies"])
        for i in range(1, n + 1):
            axis = "left axis deviation" if i % 3 == 0 else "normal"
            w.writerow([i, "F", 50 + i, "Sinus rhythm", f"Electric axis of the heart: {axis}",
                        "Left ventricular hypertrophy" if i % 2 else ""])
    return root


def _tiny(cache: Path, supervised: bool = True) -> tuple[list[str], list[str]]:
    """Tiny settings as (pretraining, curve) overrides: 2 epochs, fractions [0.5, 1.0], seeds [0, 1]."""
    pre = ["epochs=2", f"cache_dir={cache}"]
    curve = ["fractions=[0.5, 1.0]", "seeds=[0, 1]", "epochs=2", "supervised_lrs=[0.001]",
             "supervised_batch_sizes=[16]", "supervised_min_steps=2", f"supervised={str(supervised).lower()}"]
    if any(f.name == "cache_dir" for f in fields(EvalConfig)):
        curve.append(f"cache_dir={cache}")
    return pre, curve


def _values(run: Path, *extra: str) -> pd.DataFrame:
    curve = pd.read_csv(run / "curve.csv")
    return curve.sort_values(KEYS).reset_index(drop=True)[[*KEYS, "value", "val_value", *extra]]


def _demo_equals_pretrain_then_curve(root: Path, tmp_path: Path, capsys,
                                     supervised: bool = True) -> tuple[list[str], Path]:
    """Run the demo (in runs_demo/) and the two CLI commands on the same recipes (in runs_cli/); compare.

    Returns the demo's command line and runs folder."""
    pre, curve = _tiny(tmp_path / "cache", supervised)
    demo_runs, cli_runs = tmp_path / "runs_demo", tmp_path / "runs_cli"
    demo_args = ["demo", str(EXPERIMENTS / "demo.yaml"), "--data", str(root), "--runs", str(demo_runs), "--quiet",
                 *(f"pretrain.{o}" for o in pre), *(f"curve.{o}" for o in curve)]
    assert main(demo_args) == 0
    out = capsys.readouterr().out
    assert "cmsc" in out and "random_init" in out and "reused" not in out

    assert main(["pretrain", str(EXPERIMENTS / "demo_pretrain.yaml"), "--runs", str(cli_runs), "--quiet",
                 f"root={root}", *pre]) == 0
    assert main(["curve", str(EXPERIMENTS / "demo_curve.yaml"), "--runs", str(cli_runs), "--quiet", f"root={root}",
                 f"encoders={{cmsc: {cli_runs / 'demo_pretrain'}}}", *curve]) == 0
    capsys.readouterr()
    by_demo, by_cli = _values(demo_runs / "demo_curve"), _values(cli_runs / "demo_curve")
    arms = {"cmsc", "random_init"} | ({"supervised"} if supervised else set())
    assert set(by_demo["arm"]) == arms and len(by_demo) == 2 * len(arms) * 2 * 2  # tasks x arms x fractions x seeds
    pd.testing.assert_frame_equal(by_demo, by_cli, check_exact=True)  # bit-identical values
    split = Split.load(demo_runs / "demo_pretrain" / "split.json")  # the curve ran on the encoder's own split
    assert Split.load(demo_runs / "demo_curve" / "split.json").hash == split.hash
    assert Split.load(cli_runs / "demo_curve" / "split.json").hash == split.hash

    # a second `make demo`: the finished pretraining run is reused, the curve gives the same values
    assert main(demo_args) == 0
    assert "reused the finished run" in capsys.readouterr().out
    pd.testing.assert_frame_equal(_values(demo_runs / "demo_curve"), by_demo, check_exact=True)
    return demo_args, demo_runs


@pytest.mark.slow
def test_demo_equals_pretrain_then_curve_on_synthetic_ludb(tmp_path, capsys):
    root = make_fake_ludb(tmp_path / "ludb")
    demo_args, runs = _demo_equals_pretrain_then_curve(root, tmp_path, capsys, supervised=False)  # real: with it
    before = _values(runs / "demo_curve", "fingerprint")
    assert before["value"].between(0, 1).all()

    # another pretraining recipe under the same name: refused, then replaced with --overwrite; the curve
    # recomputes the encoder's rows instead of keeping the old encoder's results
    assert main([*demo_args, "pretrain.seed=1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*demo_args, "pretrain.seed=1", "--overwrite"]) == 0
    capsys.readouterr()
    after = _values(runs / "demo_curve", "fingerprint")
    assert len(after) == len(before)
    cmsc = (after["arm"] == "cmsc").to_numpy()
    assert (after["fingerprint"][cmsc] != before["fingerprint"][cmsc]).all()


@pytest.mark.slow
@pytest.mark.realdata
def test_demo_equals_pretrain_then_curve_on_real_ludb(ludb_root, tmp_path, capsys):
    _, runs = _demo_equals_pretrain_then_curve(ludb_root, tmp_path, capsys)
    assert _values(runs / "demo_curve")["value"].between(0, 1).all()


def test_demo_offline_without_data_fails_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SSL_ECG_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SSL_ECG_PHYSIONET_URL", "http://127.0.0.1:9/")  # discard port: connection refused
    with pytest.raises(DatasetError, match="cannot download ludb.*offline"):
        run_demo(load_demo(), data=str(tmp_path / "empty"), runs=tmp_path / "runs", progress=False)
    assert main(["demo", "--data", str(tmp_path / "empty"), "--runs", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssl-ecg demo: error: ") and "offline" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing written before the data is found


def test_bundled_demo_recipes_load_and_match_the_built_in_copies():
    bundled = load_demo(EXPERIMENTS / "demo.yaml")
    assert bundled == load_demo()  # `ssl-ecg demo` without a recipe runs the same settings
    assert bundled.pretrain == load_recipe(PretrainConfig, EXPERIMENTS / "demo_pretrain.yaml")
    assert bundled.curve == load_recipe(EvalConfig, EXPERIMENTS / "demo_curve.yaml")
    pre, curve = bundled.pretrain, bundled.curve
    assert (pre.method, pre.dataset, pre.fs, pre.segment_len, pre.n_segments, pre.positives) == \
        ("cmsc", "ludb", 100.0, 5.0, 2, "patient_lead")
    assert (pre.lr, pre.epochs, pre.embed_dim, pre.temperature, pre.batch_size) == (1e-3, 40, 128, 0.1, 192)
    assert curve.encoders == {"cmsc": f"runs/{pre.name}"} and curve.split is None  # the encoder's own split
    assert curve.tasks == ["lvh", "lad"] and curve.fractions == [0.05, 0.1, 0.25, 0.5, 1.0]
    assert curve.seeds == [0, 1, 2, 3, 4] and curve.probes == ["logistic"] and curve.random_init and curve.supervised
    assert set(DEMO_PRETRAIN) <= {f.name for f in fields(PretrainConfig)}
    assert set(DEMO_CURVE) <= {f.name for f in fields(EvalConfig)}


def test_overrides_name_their_recipe():
    recipes = load_demo(None, parse_overrides(["pretrain.epochs=2", "curve.seeds=[0,1]", "pretrain.lr=0.01"]))
    assert recipes.pretrain.epochs == 2 and recipes.pretrain.lr == 0.01 and recipes.curve.seeds == [0, 1]
    assert recipes.curve.epochs == 60  # the curve's own epochs are untouched
    with pytest.raises(ConfigError, match=r"^overrides: epochs=2: expected pretrain\.KEY=VALUE or curve\.KEY=VALUE"):
        load_demo(None, parse_overrides(["epochs=2"]))
    with pytest.raises(ConfigError, match=r"^overrides: demo\.epochs=2: expected pretrain\.KEY"):
        load_demo(None, parse_overrides(["demo.epochs=2"]))
    with pytest.raises(ConfigError, match=r"^overrides: unknown keys \['bogus'\]"):
        load_demo(EXPERIMENTS / "demo.yaml", parse_overrides(["curve.bogus=1"]))
    with pytest.raises(ConfigError, match=r"^overrides: fractions=\[0\.5, 1\.5\]"):
        load_demo(EXPERIMENTS / "demo.yaml", parse_overrides(["curve.fractions=[0.5, 1.5]"]))


def test_a_bad_demo_file_names_itself(tmp_path):
    path = tmp_path / "demo.yaml"
    with pytest.raises(ConfigError, match=rf"^{path}: demo recipe not found"):
        load_demo(path)
    path.write_text("pretrain: demo_pretrain.yaml\n")
    with pytest.raises(ConfigError, match=rf"^{path}: expected exactly the keys pretrain and curve"):
        load_demo(path)
    path.write_text("pretrain: p.yaml\ncurve: c.yaml\n")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'p.yaml'}: recipe not found"):  # relative to demo.yaml
        load_demo(path)
    (tmp_path / "p.yaml").write_text("name: p\nepochs: 3\n")
    (tmp_path / "c.yaml").write_text("name: c\nencoders: {x: runs/p}\nseeds: [0, 1]\n")
    recipes = load_demo(path)
    assert (recipes.pretrain.name, recipes.pretrain.epochs, recipes.curve.encoders) == ("p", 3, {"x": "runs/p"})


def test_a_curve_without_an_arm_for_the_pretraining_run_is_refused_before_anything_runs(tmp_path):
    recipes = load_demo(None, parse_overrides(["curve.encoders={cmsc: runs/other}"]))
    with pytest.raises(ConfigError, match=r"^curve\.encoders: .*names no arm for the pretraining run; expected one "
                                          r"such as curve\.encoders=\{cmsc: runs/demo_pretrain\}"):
        run_demo(recipes, data=str(tmp_path / "missing"), runs=tmp_path / "runs", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_format_table_lists_every_arm_and_fraction():
    cell = {"mean": 0.8, "ci_low": 0.7, "ci_high": 0.9}
    text = format_table({"lvh": {"cmsc": {"0.5": cell, "1.0": cell}, "random_init": {"0.5": cell, "1.0": cell}}})
    assert text.splitlines()[0] == "lvh: test AUROC, mean [95% CI] over seeds"
    assert "50%" in text and "100%" in text
    assert "cmsc           0.800 [0.70,0.90]" in text and "random_init" in text


def test_a_pool_recipe_gets_a_root_per_member(tmp_path, monkeypatch):
    import ssl_ecg.demo as demo

    data = tmp_path / "data"
    make_fake_ludb(data / "ludb", n=2)
    calls = []
    monkeypatch.setattr(demo, "run_pretrain", lambda cfg, runs, progress: calls.append(cfg) or {"run": 1})
    monkeypatch.setattr(demo, "run_evaluation", lambda cfg, runs, progress: calls.append(cfg) or {"curve": 1})
    pool = [{"dataset": "ludb"}, {"dataset": "mitdb", "root": str(tmp_path / "my_mitdb")}]
    recipes = load_demo(overrides={"pretrain.dataset": pool, "pretrain.leads": ["II"],
                                   "curve.dataset": [{"dataset": "LUDB"}], "curve.leads": ["II"]})
    result = run_demo(recipes, data=data, runs=tmp_path / "runs", progress=False)
    assert result == {"curve": 1, "pretrain": {"run": 1}}
    pre, curve = calls
    assert pre.dataset == [{"dataset": "ludb", "root": str(data / "ludb")},
                           {"dataset": "mitdb", "root": str(tmp_path / "my_mitdb")}]
    assert pre.root is None and curve.dataset == [{"dataset": "LUDB", "root": str(data / "ludb")}]
    calls.clear()
    run_demo(load_demo(), data=data, runs=tmp_path / "runs", progress=False)  # a dataset name: root= as before
    assert [(c.dataset, c.root) for c in calls] == [("ludb", str(data / "ludb"))] * 2
