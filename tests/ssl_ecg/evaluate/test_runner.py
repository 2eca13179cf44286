import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import wfdb

from ssl_ecg.checkpoint import save_encoder
from ssl_ecg.cli import main
from ssl_ecg.data.prepare import DataSpec, Split, prepare
from ssl_ecg.errors import ConfigError, LeakageError, SplitError
from ssl_ecg.evaluate.runner import EvalConfig, FewShotConfig, check_encoder, run_evaluation, run_fewshot_recipe
from ssl_ecg.models import build_encoder
from ssl_ecg.recipe import load_recipe

EXPERIMENTS = Path(__file__).parents[3] / "experiments"
LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
FS, WINDOW_S = 100.0, 4.0  # 400-sample single-lead windows (the CLOCS encoder's minimum is 388)


def _ludb_like(tmp_path, n=30, copy_of=None):
    """A tiny LUDB-layout dataset: ``n`` 10 s 12-lead records at 100 Hz, one patient each, with lad / rhythm
    labels alternating; with ``copy_of=k`` record n + 1 repeats record k's signal under a new id."""
    root = tmp_path / "ludb"
    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    signals = {i: rng.integers(-1500, 1500, size=(1000, 12)) for i in range(1, n + 1)}
    if copy_of is not None:
        signals[n + 1] = signals[copy_of].copy()
    for i, d in signals.items():
        wfdb.wrsamp(str(i), fs=100, units=["mV"] * 12, sig_name=LEADS, d_signal=d, fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(root / "data"))
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in signals))
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies"])
        for i in signals:
            axis = "left axis deviation" if i % 2 else "normal"
            w.writerow([i, "M", 50, "Sinus rhythm" if i % 3 else "Sinus bradycardia",
                        f"Electric axis of the heart: {axis}", ""])
    return root


def _spec(tmp_path, root, split_seed=0):
    return DataSpec(dataset="ludb", root=str(root), fs=FS, leads=("II",), split_seed=split_seed,
                    cache_dir=str(tmp_path / "cache"))


def _pretrained(tmp_path, root, name, split_seed=0, pool=("train", "val"), labels=(), split=None):
    """An encoder with the provenance pretraining on ``pool`` of a seeded split would record."""
    prepared = prepare(_spec(tmp_path, root, split_seed), split=split)
    rows = prepared.rows(*pool)
    provenance = {"version": 1, "datasets": ["ludb"], "cache_keys": [prepared.split.cache_key or "k"],
                  "pool_patients": sorted(prepared.patients(rows)),
                  "pool_fingerprints": sorted(prepared.fingerprints(rows)),
                  "label_patients": sorted(labels), "split": prepared.split.to_dict()}
    torch.manual_seed(0)
    enc = build_encoder({"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 8})
    save_encoder(enc, tmp_path / name / "encoder.pt", extra={"provenance": provenance})
    return tmp_path / name, prepared


def _eval(tmp_path, root, encoders, **kw):
    values = dict(name="e", root=None if root is None else str(root), fs=FS, window=WINDOW_S, leads=["II"],
                  encoders=encoders, tasks=["lad"], fractions=[1.0], seeds=[0], supervised=False,
                  cache_dir=str(tmp_path / "cache"))
    values.update(kw)
    return run_evaluation(EvalConfig(**values), runs=tmp_path / "runs", progress=False)


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
    cfg = EvalConfig(name="bad", root=str(ludb_root), fs=100.0, window=5.0, encoders={"mine": str(path)},
                     allow_unknown_provenance=True, cache_dir=str(tmp_path / "cache"))
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
              "epochs=2", "allow_unknown_provenance=true", f"cache_dir={tmp_path / 'cache'}"]
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
    cfg = FewShotConfig(root=str(mitdb_root), shots=[1, 5], episodes=200, head_steps=200, n_boot=50, boot_episodes=50,
                        max_items_per_patient_class=10, cache_dir=str(tmp_path / "cache"))
    res = run_fewshot_recipe(cfg, runs=tmp_path)
    assert res["head_patients"] == 22 and res["episode_patients"] == 21  # DS1 / DS2 without 202 (= 201)
    for shots in ("1-shot", "5-shot"):
        for method in ("siamese", "cosine"):
            mean, lo, hi = res["results"]["random_init"][shots][method]["accuracy"]
            assert 0 <= lo <= mean <= hi <= 1
    assert json.loads((tmp_path / "fewshot" / "fewshot.json").read_text())["results"]
    with pytest.raises(SplitError, match=r"class 'F' has \d patient\(s\)"):
        run_fewshot_recipe(FewShotConfig(root=str(mitdb_root), shots=[10], episode_classes=["N", "V", "F"],
                                         head_steps=10, max_items_per_patient_class=5,
                                         cache_dir=str(tmp_path / "cache")), runs=tmp_path)
    # an encoder pretrained on DS1 (the head patients) is fine; one pretrained on DS2 episode patients is refused
    from ssl_ecg.data.mitdb import DS1, DS2

    prepared = prepare(DataSpec(dataset="mitdb", root=str(mitdb_root), fs=360.0, leads=("#0",),
                                cache_dir=str(tmp_path / "cache")))
    for name, records in (("ds1", DS1), ("ds2", DS2)):
        rows = np.flatnonzero(prepared.table["record_id"].isin(records).to_numpy())
        provenance = {"version": 1, "datasets": ["mitdb"], "cache_keys": ["k"],
                      "pool_patients": sorted(prepared.patients(rows)),
                      "pool_fingerprints": sorted(prepared.fingerprints(rows)), "label_patients": [],
                      "split": prepared.split.to_dict()}
        save_encoder(build_encoder({"name": "clocs", "in_channels": 1, "input_len": 432, "embed_dim": 8}),
                     tmp_path / name / "encoder.pt", extra={"provenance": provenance})
    quick = dict(root=str(mitdb_root), shots=[1], episodes=20, head_steps=20, max_items_per_patient_class=5,
                 cache_dir=str(tmp_path / "cache"))
    with pytest.raises(LeakageError, match=r"encoder \(.*ds2\): 21 of 21 episodes patients were in its pretraining "
                                           r"pool \(21 by patient key"):
        run_fewshot_recipe(FewShotConfig(name="ds2", encoder=str(tmp_path / "ds2"), **quick), runs=tmp_path)
    ok = run_fewshot_recipe(FewShotConfig(name="ds1", encoder=str(tmp_path / "ds1"), **quick), runs=tmp_path)
    assert ok["provenance"]["encoder"]["overlap"]["overlap"] == 0
    assert ok["provenance"]["encoder"]["pool_patients"] == 22 and ok["episode_patients"] == 21


@pytest.mark.realdata
def test_fewshot_on_real_ludb_rhythms(tmp_path, ludb_root):
    cfg = FewShotConfig(name="lr", dataset="ludb", root=str(ludb_root), label="rhythm", fs=100.0, window=5.0,
                        ways=2, shots=[1, 5], episodes=200, head_steps=200, n_boot=50, boot_episodes=50,
                        cache_dir=str(tmp_path / "cache"))
    res = run_fewshot_recipe(cfg, runs=tmp_path)
    assert res["head_patients"] + res["episode_patients"] == 200
    acc = res["results"]["random_init"]["5-shot"]["cosine"]["accuracy"]
    assert 0 <= acc[1] <= acc[0] <= acc[2] <= 1
    with pytest.raises(ConfigError, match="label"):
        run_fewshot_recipe(FewShotConfig(dataset="ludb", root=str(ludb_root), cache_dir=str(tmp_path / "cache")),
                           runs=tmp_path)
    assert np.isfinite(acc[0])


@pytest.mark.realdata
def test_multilabel_curves_on_real_ptbxl_and_the_challenge_score_on_cinc2021(tmp_path, ptbxl_root, cinc2021_root):
    px = run_evaluation(EvalConfig(name="px", dataset="ptbxl", root=str(ptbxl_root), dataset_options={"fs": 100},
                                   fs=100.0, window=5.0, tasks=["superdiagnostic"], fractions=[0.25, 1.0],
                                   seeds=[0, 1], supervised=False, split="official", cache_dir=str(tmp_path / "c")),
                        runs=tmp_path, progress=False)
    curve = px["curve"]
    assert set(curve["metric"]) == {"auroc"} and len(curve) == 4  # not CinC codes: no challenge score
    assert curve["value"].between(0.5, 1).all()  # macro AUROC over the five superclasses
    cc = run_evaluation(EvalConfig(name="cc", dataset="cinc2021", root=str(cinc2021_root), fs=100.0, window=5.0,
                                   tasks=["scored"], fractions=[1.0], seeds=[0, 1], supervised=False,
                                   cache_dir=str(tmp_path / "c")),
                        runs=tmp_path, progress=False)
    metrics = cc["curve"].groupby("metric")["value"]
    assert set(metrics.groups) == {"auroc", "challenge"}
    assert metrics.max()["challenge"] <= 1 and np.isfinite(metrics.min()["challenge"])
    assert "scored [challenge]" in cc["summary"]


def test_evaluating_on_another_split_seed_is_an_overlap_error_and_the_encoders_own_split_runs(tmp_path):
    root = _ludb_like(tmp_path)
    path, pre = _pretrained(tmp_path, root, "enc", split_seed=0)
    with pytest.raises(LeakageError, match=r"encoders.mine \(.*enc\): \d+ of 6 test patients were in its "
                                           r"pretraining pool \(\d+ by patient key, 0 by signal fingerprint\), "
                                           r"e.g. ludb:\d+"):
        _eval(tmp_path, root, {"mine": str(path)}, split=[0.6, 0.2, 0.2], split_seed=1)
    res = _eval(tmp_path, root, {"mine": str(path)})  # split: null -> the encoder's own split
    out = tmp_path / "runs" / "e"
    meta = json.loads((out / "curve.json").read_text())
    assert meta["split_hash"] == pre.split.hash == Split.load(out / "split.json").hash
    assert meta["split_source"] == "encoders" and meta["allow_overlap"] is False
    info = meta["provenance"]["mine"]
    assert info["known"] and info["pool_patients"] == 24 and info["overlap"]["overlap"] == 0
    assert info["overlap"]["evaluated_patients"] == 6 and res["allow_flags"] is None
    assert set(res["curve"]["arm"]) == {"mine", "random_init"}


def test_allow_overlap_runs_records_and_prints_the_counts(tmp_path, capsys):
    root = _ludb_like(tmp_path)
    path, _ = _pretrained(tmp_path, root, "enc", split_seed=0)
    args = ["curve", f"root={root}", f"fs={FS}", f"window={WINDOW_S}", "leads=[II]", f"encoders={{mine: {path}}}",
            "tasks=[lad]", "fractions=[1.0]", "seeds=[0]", "supervised=false", f"cache_dir={tmp_path / 'cache'}",
            "split=[0.6, 0.2, 0.2]", "split_seed=1", "--runs", str(tmp_path / "runs"), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssl-ecg curve: ") and "test patients were in its pretraining pool" in err
    assert main([*args, "allow_overlap=true"]) == 0
    printed = capsys.readouterr().out
    meta = json.loads((tmp_path / "runs" / "eval" / "curve.json").read_text())
    n = meta["provenance"]["mine"]["overlap"]["overlap"]
    assert n > 0 and meta["allow_overlap"] is True and meta["split_source"] == "recipe"
    assert f"allow_overlap: true (overlapping patients: mine {n} test)" in printed
    assert printed.index("allow_overlap") < printed.index("lad: test AUROC")
    from ssl_ecg.data.prepare import bad_leads_line

    line = bad_leads_line(meta["bad_leads"])  # printed with --quiet too
    assert line.startswith("bad leads (zero_lead): ") and line in printed.splitlines()


def test_fewshot_command_prints_the_bad_lead_counts(tmp_path, capsys):
    from ssl_ecg.data.prepare import bad_leads_line

    root = _ludb_like(tmp_path)
    assert main(["fewshot", "name=fs", "dataset=ludb", f"root={root}", "label=rhythm", f"fs={FS}",
                 f"window={WINDOW_S}", "leads=[II]", "ways=2", "shots=[1]", "queries=1", "episodes=20",
                 "head_steps=20", f"cache_dir={tmp_path / 'cache'}", "--runs", str(tmp_path / "runs")]) == 0
    saved = json.loads((tmp_path / "runs" / "fs" / "fewshot.json").read_text())
    line = bad_leads_line(saved["bad_leads"])
    assert line.startswith("bad leads (zero_lead): ") and line in capsys.readouterr().out.splitlines()


def test_encoders_pretrained_on_different_splits_are_named(tmp_path):
    root = _ludb_like(tmp_path)
    a, pa = _pretrained(tmp_path, root, "a", split_seed=0)
    b, pb = _pretrained(tmp_path, root, "b", split_seed=1)
    with pytest.raises(ConfigError, match=rf"encoders.a \(.*a\) split {pa.split.hash[:12]}; encoders.b \(.*b\) "
                                          rf"split {pb.split.hash[:12]}"):
        _eval(tmp_path, root, {"a": str(a), "b": str(b)})


def test_unknown_provenance_is_refused_unless_allowed_and_then_recorded(tmp_path, capsys):
    root = _ludb_like(tmp_path)
    path = _checkpoint(tmp_path / "third_party.pt")  # no provenance block
    with pytest.raises(LeakageError, match=r"encoders.x \(.*third_party.pt\): encoder has no provenance.*"
                                           r"allow_unknown_provenance: true"):
        _eval(tmp_path, root, {"x": str(path)})
    res = _eval(tmp_path, root, {"x": str(path)}, allow_unknown_provenance=True, supervised=True, epochs=1,
                supervised_lrs=[1e-3], supervised_batch_sizes=[16], supervised_min_steps=1)
    meta = json.loads((res["out"] / "curve.json").read_text())
    assert meta["allow_unknown_provenance"] is True and meta["provenance"]["x"] == {
        "path": str(path), "known": False, "overlap": None, "labels": None}
    # no encoder split: the random-init and supervised arms use the recipe's default shares (seed 0)
    default = prepare(_spec(tmp_path, root, 0))
    assert meta["split_hash"] == default.split.hash and meta["split_source"] == "default"
    assert set(res["curve"]["arm"]) == {"x", "random_init", "supervised"}
    assert res["allow_flags"] == "allow_unknown_provenance: true (unchecked encoders: x)"


def test_overlap_by_fingerprint_alone_is_refused(tmp_path):
    root = _ludb_like(tmp_path, n=30, copy_of=1)  # record 31 is record 1's signal under another patient id
    spec = _spec(tmp_path, root)
    keys = sorted(prepare(spec).table["patient_key"], key=lambda k: int(k.split(":")[1]))
    test = ["ludb:1", *keys[1:6]]
    train = [k for k in keys if k not in test][:19]
    val = [k for k in keys if k not in test and k not in train]
    assert "ludb:31" in train + val
    split = Split({"train": tuple(sorted(train)), "val": tuple(sorted(val)), "test": tuple(sorted(test))},
                  {"split": "hand-made", "seed": None, "datasets": ["ludb"]})
    path, pre = _pretrained(tmp_path, root, "enc", split=split)
    assert "ludb:1" not in pre.patients(pre.rows("train", "val"))
    with pytest.raises(LeakageError, match=r"1 of 6 test patients.*\(0 by patient key, 1 by signal fingerprint\), "
                                           r"e.g. ludb:1;"):
        _eval(tmp_path, root, {"mine": str(path)})


def test_a_recipe_split_file_is_used_and_checked(tmp_path):
    root = _ludb_like(tmp_path)
    path, pre = _pretrained(tmp_path, root, "enc", split_seed=0)
    other = prepare(_spec(tmp_path, root, split_seed=2)).split
    other.save(tmp_path / "other" / "split.json")
    with pytest.raises(LeakageError, match="test patients were in its pretraining pool"):
        _eval(tmp_path, root, {"mine": str(path)}, split=str(tmp_path / "other" / "split.json"))
    pre.split.save(tmp_path / "same" / "split.json")
    res = _eval(tmp_path, root, {"mine": str(path)}, split=str(tmp_path / "same" / "split.json"))
    assert res["split_hash"] == pre.split.hash
    with pytest.raises(ConfigError, match=r"split='splits/x.yaml': expected .*must end in .json"):
        load_recipe(EvalConfig, overrides={"split": "splits/x.yaml"})
    assert load_recipe(EvalConfig, overrides={"split": "official"}).split == "official"
    assert EvalConfig().split is None and FewShotConfig().split is None


def test_a_label_using_encoder_is_refused_below_fraction_one(tmp_path):
    root = _ludb_like(tmp_path)
    train = prepare(_spec(tmp_path, root)).split.patients["train"]
    path, _ = _pretrained(tmp_path, root, "sclst", labels=train)
    with pytest.raises(LeakageError, match=r"encoders.s \(.*sclst\): pretraining used labels the curve hides: "
                                           r"it used the labels of 18 train/val patients.*refused fractions \['0.5'\]"):
        _eval(tmp_path, root, {"s": str(path)}, fractions=[0.5, 1.0])
    res = _eval(tmp_path, root, {"s": str(path)}, fractions=[1.0], random_init=False)
    assert res["provenance"]["s"]["labels"] == {"label_patients": 18, "outside_train": 0, "refused_fractions": [],
                                                "allowed": False}


def _fewshot(tmp_path, root, encoder, **kw):
    values = dict(name="fs", dataset="ludb", root=str(root), label="rhythm", fs=FS, window=WINDOW_S, leads=["II"],
                  encoder=encoder, ways=2, shots=[1], queries=1, episodes=20, head_steps=20,
                  cache_dir=str(tmp_path / "cache"))
    values.update(kw)
    return run_fewshot_recipe(FewShotConfig(**values), runs=tmp_path / "runs")


def test_fewshot_refuses_an_encoder_pretrained_on_episode_patients(tmp_path):
    root = _ludb_like(tmp_path)
    leaky, _ = _pretrained(tmp_path, root, "leaky", pool=("train", "val", "test"))
    with pytest.raises(LeakageError, match=r"encoder \(.*leaky\): 6 of 6 episodes patients were in its "
                                           r"pretraining pool"):
        _fewshot(tmp_path, root, str(leaky))
    clean, pre = _pretrained(tmp_path, root, "clean")
    res = _fewshot(tmp_path, root, str(clean))
    assert res["episode_patients"] == 6 and res["head_patients"] == 24 and res["split_hash"] == pre.split.hash
    assert res["provenance"]["encoder"]["overlap"]["overlap"] == 0 and res["allow_flags"] is None
    saved = json.loads((tmp_path / "runs" / "fs" / "fewshot.json").read_text())
    assert saved["provenance"]["encoder"]["pool_patients"] == 24 and saved["allow_overlap"] is False
    allowed = _fewshot(tmp_path, root, str(leaky), allow_overlap=True)
    assert allowed["provenance"]["encoder"]["overlap"]["overlap"] == 6
    assert allowed["allow_flags"] == "allow_overlap: true (overlapping patients: encoder 6 episodes)"
    # no encoder: seeded halves of the patients, as before
    rand = _fewshot(tmp_path, root, None)
    assert rand["head_patients"] == rand["episode_patients"] == 15 and rand["provenance"] == {}


def test_pretrain_split_seed_0_then_evaluate_split_seed_1_is_refused_and_the_own_split_runs(tmp_path, capsys):
    from ssl_ecg.pretrain import PretrainConfig, run_pretrain

    root = _ludb_like(tmp_path)
    cache = str(tmp_path / "cache")
    pre = run_pretrain(PretrainConfig(name="enc", dataset="ludb", root=str(root), method="cmsc", fs=FS,
                                      segment_len=WINDOW_S, epochs=1, max_steps=2, batch_size=4, embed_dim=8,
                                      leads=["II"], split_seed=0, cache_dir=cache, accelerator="cpu"),
                       runs=tmp_path / "runs", progress=False)
    common = ["curve", f"root={root}", f"fs={FS}", f"window={WINDOW_S}", "leads=[II]",
              f"encoders={{cmsc: {pre['encoder']}}}", "tasks=[lad]", "fractions=[1.0]", "seeds=[0]",
              "supervised=false", f"cache_dir={cache}", "--runs", str(tmp_path / "runs"), "--quiet"]
    assert main([*common, "split=[0.6, 0.2, 0.2]", "split_seed=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "encoders.cmsc (" in err and "test patients were in its pretraining pool" in err and "ludb:" in err
    assert main(common) == 0  # split: null -> the encoder's own split
    meta = json.loads((tmp_path / "runs" / "eval" / "curve.json").read_text())
    assert meta["split_hash"] == Split.load(tmp_path / "runs" / "enc" / "split.json").hash
    assert meta["provenance"]["cmsc"]["overlap"]["overlap"] == 0


def test_a_pool_spec_evaluates_on_patient_keys(tmp_path):
    root = _ludb_like(tmp_path)
    res = _eval(tmp_path, None, {}, dataset=[{"dataset": "ludb", "root": str(root)}])
    meta = json.loads((res["out"] / "curve.json").read_text())
    assert meta["dataset_root"] == str(root) and meta["split_source"] == "default" and meta["provenance"] == {}
    assert set(Split.load(res["out"] / "split.json").patients["test"]) <= {f"ludb:{i}" for i in range(1, 31)}
    assert set(res["curve"]["arm"]) == {"random_init"}


def test_an_encoder_from_another_dataset_gets_a_drawn_split_still_checked_by_fingerprint(tmp_path):
    root = _ludb_like(tmp_path)
    foreign = Split({"train": ("ptbxl:1", "ptbxl:2"), "val": ("ptbxl:3",), "test": ("ptbxl:4",)},
                    {"split": [0.6, 0.2, 0.2], "seed": 0, "datasets": ["ptbxl"]})
    ludb = prepare(_spec(tmp_path, root))

    def encoder(name, fingerprints):
        provenance = {"version": 1, "datasets": ["ptbxl"], "cache_keys": ["k"], "pool_patients": ["ptbxl:1"],
                      "pool_fingerprints": sorted(fingerprints), "label_patients": [], "split": foreign.to_dict()}
        save_encoder(build_encoder({"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 8}),
                     tmp_path / name / "encoder.pt", extra={"provenance": provenance})
        return str(tmp_path / name)

    res = _eval(tmp_path, root, {"px": encoder("px", [])})
    meta = json.loads((res["out"] / "curve.json").read_text())
    assert meta["split_source"].startswith("drawn") and meta["split_hash"] == ludb.split.hash
    assert meta["records_outside_split"] == 0 and meta["provenance"]["px"]["overlap"]["overlap"] == 0
    # the same signals inside its pool (a copy of LUDB in the other dataset) are found by fingerprint
    copied = encoder("copied", ludb.fingerprints())
    with pytest.raises(LeakageError, match=r"6 of 6 test patients.*\(0 by patient key, 6 by signal fingerprint\)"):
        _eval(tmp_path, root, {"c": copied})
