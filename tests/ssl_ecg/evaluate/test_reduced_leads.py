import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ssl_ecg.checkpoint import save_encoder
from ssl_ecg.data.prepare import Split
from ssl_ecg.data.preprocess import normalize
from ssl_ecg.errors import ConfigError, LeakageError
from ssl_ecg.evaluate import reduced_leads as rl
from ssl_ecg.evaluate.reduced_leads import (
    LEAD_SETS,
    ReducedLeadsConfig,
    ZeroFilled,
    lead_set_signals,
    resolve_lead_sets,
    run_reduced_leads,
)
from ssl_ecg.models import build_encoder
from ssl_ecg.recipe import load_recipe

LEADS = list(LEAD_SETS[12])
EXPERIMENTS = Path(__file__).parents[3] / "experiments"


def test_cinc2021_lead_sets():
    assert LEAD_SETS[6] == ("I", "II", "III", "aVR", "aVL", "aVF") and LEAD_SETS[4] == ("I", "II", "III", "V2")
    assert LEAD_SETS[3] == ("I", "II", "V2") and LEAD_SETS[2] == ("I", "II") and LEAD_SETS[1] == ("II",)


def test_subsetting_and_zero_filling_are_exact():
    x = np.random.default_rng(0).standard_normal((5, 12, 300)).astype(np.float32)
    sub = lead_set_signals(x, LEADS, LEAD_SETS[4], per_lead=True)
    np.testing.assert_array_equal(sub, x[:, [0, 1, 2, 7]])
    np.testing.assert_array_equal(lead_set_signals(x, LEADS, ["ii", "I"], per_lead=True), x[:, [0, 1]])  # data order
    full = lead_set_signals(x, LEADS, LEAD_SETS[3], per_lead=False)
    assert full.shape == x.shape
    kept = [0, 1, 7]
    np.testing.assert_array_equal(full[:, kept], x[:, kept])
    assert not np.delete(full, kept, axis=1).any()  # every other channel is exactly zero
    np.testing.assert_array_equal(lead_set_signals(x, LEADS, LEADS, per_lead=False), x)


def test_renormalizing_equals_the_record_normalisation_of_the_available_leads():
    raw = np.random.default_rng(1).standard_normal((3, 12, 500)) * np.arange(1, 13)[None, :, None] + 0.3
    cached = np.stack([normalize(r, "record") for r in raw])
    got = lead_set_signals(cached, LEADS, LEAD_SETS[2], per_lead=True, renormalize=True)
    want = np.stack([normalize(r[[0, 1]], "record") for r in raw])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_zero_filled_encoder_equals_the_encoder_on_zero_filled_signals():
    torch.manual_seed(0)
    enc = build_encoder({"name": "clocs", "in_channels": 12, "input_len": 400, "embed_dim": 8}).eval()
    x = np.random.default_rng(2).standard_normal((4, 12, 400)).astype(np.float32)
    wrapped = ZeroFilled(enc, [0, 1, 7], 12, ["I", "II", "V2"])
    with torch.no_grad():
        a = wrapped(torch.as_tensor(lead_set_signals(x, LEADS, LEAD_SETS[3], per_lead=True)))
        b = enc(torch.as_tensor(lead_set_signals(x, LEADS, LEAD_SETS[3], per_lead=False)))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert wrapped.config["zero_filled"]["available"] == ["I", "II", "V2"] and wrapped.embed_dim == 8


def test_bad_lead_sets_are_one_line_config_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"lead_sets\[1\]: \['V7'\] are not leads"):
        resolve_lead_sets([2, ["II", "V7"]], LEADS)
    with pytest.raises(ConfigError, match=r"lead_sets\[0\].*not leads of the evaluation data"):
        resolve_lead_sets([2], ["II"])  # the data holds lead II only
    with pytest.raises(ConfigError, match=r"lead_sets\[1\].*given twice"):
        resolve_lead_sets([2, ["ii", "I"]], LEADS)  # the CinC 2-lead set again, by name
    with pytest.raises(ConfigError, match=r"lead_sets\[0\].*named twice"):
        resolve_lead_sets([["II", "ii"]], LEADS)
    with pytest.raises(ConfigError, match="lead_sets"):
        load_recipe(ReducedLeadsConfig, overrides={"lead_sets": [5]})
    assert resolve_lead_sets([12, ["v1", "II"]], LEADS) == {"12": LEADS, "V1-II": ["V1", "II"]}
    assert "\n" not in str(pytest.raises(ConfigError, resolve_lead_sets, [["X"]], LEADS).value)


def test_bundled_recipe_validates():
    cfg = load_recipe(ReducedLeadsConfig, EXPERIMENTS / "reduced_leads_ptbxl.yaml")
    assert cfg.lead_sets == [12, 6, 4, 3, 2, 1] and cfg.split == "official" and cfg.lead_features == "mean"


def test_reduced_leads_end_to_end_shares_the_split_and_writes_the_table_and_plot(tmp_path, monkeypatch, ludb_like):
    root = ludb_like()
    torch.manual_seed(0)
    for name, channels in (("per", 1), ("multi", 12)):
        enc = build_encoder({"name": "clocs", "in_channels": channels, "input_len": 400, "embed_dim": 8})
        save_encoder(enc, tmp_path / name / "encoder.pt")
    seen = []
    real_run_curve = rl.run_curve

    def spy(signals, table, splits, encoders, spec, out, progress=True):
        lead_rows = {}
        for arm, enc in encoders.items():  # count the lead instances every per-lead arm embeds
            if spec.lead_mode(arm):
                enc.register_forward_pre_hook(lambda m, a, arm=arm: lead_rows.__setitem__(
                    arm, lead_rows.get(arm, 0) + a[0].shape[0]))
        result = real_run_curve(signals, table, splits, encoders, spec, out, progress)
        seen.append((Path(out).name, signals.shape, {a: type(e).__name__ for a, e in encoders.items()}, lead_rows))
        for enc in encoders.values():
            enc._forward_pre_hooks.clear()
        return result

    monkeypatch.setattr(rl, "run_curve", spy)
    cfg = ReducedLeadsConfig(name="rl", dataset="ludb", root=str(root), fs=100.0, window=4.0,
                             encoders={"per": str(tmp_path / "per"), "multi": str(tmp_path / "multi")},
                             allow_unknown_provenance=True, supervised=False, feature_arm=True, tasks=["lad"],
                             fractions=[0.5, 1.0], seeds=[0], lead_sets=[12, 2, 1], split=[0.5, 0.25, 0.25],
                             cache_dir=str(tmp_path / "cache"))
    result = run_reduced_leads(cfg, runs=tmp_path / "runs", progress=False)
    out = result["out"]
    for label in ("12", "2", "1"):
        assert (out / f"leads_{label}" / "curve.csv").is_file() and (out / f"leads_{label}" / "curve.png").is_file()
    hashes = {json.loads((out / f"leads_{lab}" / "split.json").read_text())["hash"] for lab in ("12", "2", "1")}
    assert hashes == {result["split_hash"]}
    encoder_calls = {name: (shape, kinds, rows) for name, shape, kinds, rows in seen if name != "features"}
    n_records, windows = 16, 2  # 10 s records, 4 s windows
    for label, k in (("12", 12), ("2", 2), ("1", 1)):
        shape, kinds, rows = encoder_calls[f"leads_{label}"]
        assert shape[1] == k  # per-lead arms and the features see the available leads only
        assert rows == {"per": n_records * windows * k, "random_init": n_records * windows * k}
        assert kinds["multi"] == ("ClocsEncoder" if k == 12 else "ZeroFilled")
    table = pd.read_csv(out / "reduced_leads.csv")
    assert list(table.columns) == rl.REDUCED_COLUMNS
    assert set(table["arm"]) == {"per", "multi", "random_init", "features"}
    assert set(table["n_leads"]) == {12, 2, 1} and len(table) == 4 * 3 * 2  # arms x lead sets x fractions
    assert table["mean"].between(0, 1).all() and (table["n_seeds"] == 1).all()
    per = table[table["arm"] == "per"]["arm_input"].unique().tolist()
    assert per == ["per lead, mean over available leads"]
    # same patients at every lead set: the per-fraction training-set sizes agree across the subfolders
    sizes = [pd.read_csv(out / f"leads_{lab}" / "curve.csv").groupby(["fraction", "seed"])["n_train_patients"]
             .first().tolist() for lab in ("12", "2", "1")]
    assert sizes[0] == sizes[1] == sizes[2]
    assert (out / "reduced_leads.png").stat().st_size > 1000
    assert "lad: test AUROC at 100%" in rl.format_reduced_table(table)


def test_run_evaluation_adds_the_feature_arm_on_whole_records(tmp_path, ludb_like):
    from ssl_ecg.evaluate.runner import EvalConfig, run_evaluation

    root = ludb_like()
    cfg = dict(name="e", dataset="ludb", root=str(root), fs=100.0, window=4.0, leads=["I", "II"], tasks=["lad"],
               fractions=[1.0], seeds=[0], supervised=False, split=[0.5, 0.25, 0.25], feature_arm=True,
               cache_dir=str(tmp_path / "cache"))
    result = run_evaluation(EvalConfig(**cfg), runs=tmp_path / "runs", progress=False)
    rows = pd.read_csv(result["out"] / "features" / "curve.csv")
    assert set(rows["arm"]) == {"features"} and set(result["curve"]["arm"]) == {"random_init", "features"}
    assert "features" in result["summary"]["lad"]
    enc = tmp_path / "enc.pt"
    save_encoder(build_encoder({"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 8}), enc)
    with pytest.raises(ConfigError, match="encoders.features"):
        run_evaluation(EvalConfig(**{**cfg, "encoders": {"features": str(enc)}, "allow_unknown_provenance": True}),
                       runs=tmp_path / "runs", progress=False)


def test_reduced_leads_plot_draws_each_lines_interval_as_a_band(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import pandas as pd

    from ssl_ecg.evaluate.reduced_leads import REDUCED_COLUMNS, plot_reduced_leads

    rows = [{"task": "t", "metric": "auroc", "arm": arm, "lead_set": ls, "n_leads": n, "leads": "", "arm_input": "",
             "fraction": 1.0, "mean": 0.7 + 0.01 * n, "n_seeds": 3, "ci_low": 0.6 + 0.01 * n,
             "ci_high": 0.8 + 0.01 * n} for arm in ("a", "b") for ls, n in (("12", 12), ("2", 2))]
    table = pd.DataFrame(rows)
    bands = []
    original = plt.Axes.fill_between

    def spy(self, x, low, high, **kw):
        bands.append((list(low), list(high)))
        return original(self, x, low, high, **kw)

    monkeypatch.setattr(plt.Axes, "fill_between", spy)
    plot_reduced_leads(table, tmp_path / "with.png")
    assert len(bands) == 2  # one band per arm, in lead-set order
    for low, high in bands:
        np.testing.assert_allclose([low, high], [[0.72, 0.62], [0.92, 0.82]])
    bands.clear()
    plot_reduced_leads(table[REDUCED_COLUMNS], tmp_path / "without.png")
    assert bands == [] and (tmp_path / "without.png").stat().st_size > 1000


def test_matched_references_are_refused_by_reduced_leads(tmp_path):
    from ssl_ecg.errors import ConfigError
    from ssl_ecg.evaluate.reduced_leads import ReducedLeadsConfig, run_reduced_leads

    with pytest.raises(ConfigError, match="matched_references: not supported by reduced-lead evaluation"):
        run_reduced_leads(ReducedLeadsConfig(matched_references=True), runs=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())  # refused before anything is written


def _saved(tmp_path, name: str, channels: int, leads: list[str] | None = None) -> str:
    """A tiny CLOCS encoder of ``channels`` input channels (4 s at 100 Hz), with its pretraining leads recorded."""
    enc = build_encoder({"name": "clocs", "in_channels": channels, "input_len": 400, "embed_dim": 8})
    extra = {"pretraining": {"config": {"leads": leads, "normalization": "record"}}} if leads else None
    save_encoder(enc, tmp_path / name / "encoder.pt", extra=extra)
    return str(tmp_path / name)


def test_a_lead_set_encoder_is_evaluated_only_at_its_lead_set_on_exactly_its_leads(tmp_path, monkeypatch, ludb_like):
    root = ludb_like()
    torch.manual_seed(0)
    multi = _saved(tmp_path, "multi", 12)
    two = _saved(tmp_path, "two", 2, ["I", "II"])  # pretrained on the 2-lead set: 2 input channels
    one = _saved(tmp_path, "one", 1, ["II"])  # a per-lead encoder pretrained on lead II
    per = _saved(tmp_path, "per", 1, ["II", "I"])  # per lead, pretrained on leads I and II (order is free)
    inputs_seen: dict[str, dict[str, torch.Tensor]] = {}
    real_run_curve = rl.run_curve

    def spy(signals, table, splits, encoders, spec, out, progress=True):
        seen = inputs_seen.setdefault(Path(out).name, {})
        hooks = [enc.register_forward_pre_hook(lambda m, a, arm=arm: seen.setdefault(arm, a[0].clone()))
                 for arm, enc in encoders.items()]
        try:
            return real_run_curve(signals, table, splits, encoders, spec, out, progress)
        finally:
            for hook in hooks:
                hook.remove()

    monkeypatch.setattr(rl, "run_curve", spy)
    cfg = ReducedLeadsConfig(name="rl", dataset="ludb", root=str(root), fs=100.0, window=4.0,
                             encoders={"multi": multi},
                             lead_set_encoders={"2": {"x@leadset": two, "p@leadset": per}, "1": {"x@leadset": one}},
                             allow_unknown_provenance=True, supervised=False, random_init=False, tasks=["lad"],
                             fractions=[1.0], seeds=[0], lead_sets=[12, 2, 1], split=[0.5, 0.25, 0.25],
                             cache_dir=str(tmp_path / "cache"))
    result = run_reduced_leads(cfg, runs=tmp_path / "runs", progress=False)
    assert set(inputs_seen["leads_12"]) == {"multi"}  # absent from the other lead sets' curves
    assert set(inputs_seen["leads_2"]) == {"multi", "x@leadset", "p@leadset"}
    assert set(inputs_seen["leads_1"]) == {"multi", "x@leadset"}
    # at "2": the lead-set encoder itself (no zero-filling) gets the same 2-lead windows the zero-filled arm gets
    assert inputs_seen["leads_2"]["x@leadset"].shape[1] == 2
    torch.testing.assert_close(inputs_seen["leads_2"]["x@leadset"], inputs_seen["leads_2"]["multi"], rtol=0, atol=0)
    assert inputs_seen["leads_1"]["x@leadset"].shape[1] == 1
    # the per-lead one embeds each of the same two leads alone (window by window, lead by lead)
    windows = inputs_seen["leads_2"]["multi"]
    torch.testing.assert_close(inputs_seen["leads_2"]["p@leadset"],
                               windows.reshape(-1, 1, windows.shape[-1]), rtol=0, atol=0)
    out = result["out"]
    assert "x@leadset" not in set(pd.read_csv(out / "leads_12" / "curve.csv")["arm"])
    table = pd.read_csv(out / "reduced_leads.csv")
    rows = table[table["arm"] == "x@leadset"].set_index("lead_set")
    assert sorted(rows.index.astype(str)) == ["1", "2"]  # one line of the table across its lead sets
    assert rows.loc[2, "arm_input"] == rl.LEAD_SET_INPUT
    assert rows.loc[1, "arm_input"] == rl.LEAD_SET_INPUT  # one lead: per lead or not, the same input
    per_rows = table[table["arm"] == "p@leadset"]
    assert per_rows["lead_set"].tolist() == [2]
    assert per_rows["arm_input"].tolist() == [f"{rl.LEAD_SET_INPUT}, per lead, mean over them"]
    assert "zero-filled" in table[table["arm"] == "multi"].set_index("lead_set").loc[2, "arm_input"]
    meta = json.loads((out / "reduced_leads.json").read_text())
    assert meta["lead_set_encoders"] == {"2": {"x@leadset": two, "p@leadset": per}, "1": {"x@leadset": one}}
    assert {"x@leadset [2]", "x@leadset [1]"} <= set(meta["provenance"])
    # other pretraining leads than the lead set's: refused, naming the arm (the data is cached by now)
    swapped = _saved(tmp_path, "swapped", 2, ["II", "I"])
    with pytest.raises(ConfigError, match=r"lead_set_encoders\.2\.x@leadset .*pretrained on leads \['II', 'I'\], "
                                          r"but lead set 2 gives \['I', 'II'\] \(in this order\)"):
        run_reduced_leads(replace(cfg, lead_set_encoders={"2": {"x@leadset": swapped}}), runs=tmp_path / "runs",
                          progress=False)
    other = _saved(tmp_path, "other", 1, ["I"])  # a per-lead encoder pretrained on lead I, not lead II
    with pytest.raises(ConfigError, match=r"lead_set_encoders\.1\.x@leadset .*pretrained on leads \['I'\]"):
        run_reduced_leads(replace(cfg, lead_set_encoders={"1": {"x@leadset": other}}), runs=tmp_path / "runs",
                          progress=False)
    # its pool is checked against the evaluation's test patients as the encoders arms' are
    split = Split.load(out / "split.json")

    def with_pool(name: str, pool: list[str], split: Split) -> str:
        enc = build_encoder({"name": "clocs", "in_channels": 2, "input_len": 400, "embed_dim": 8})
        save_encoder(enc, tmp_path / name / "encoder.pt", extra={"provenance": {
            "version": 1, "datasets": ["ludb"], "cache_keys": ["k"], "pool_patients": pool, "pool_fingerprints": [],
            "label_patients": [], "split": split.to_dict()}})
        return str(tmp_path / name)

    leaky = with_pool("leaky", sorted(split.patients["test"])[:1], split)
    with pytest.raises(LeakageError, match=r"lead_set_encoders\.2\.x@leadset"):
        run_reduced_leads(replace(cfg, lead_set_encoders={"2": {"x@leadset": leaky}}), runs=tmp_path / "runs",
                          progress=False)
    # with split: null, a lead-set encoder pretrained on another split than the evaluation's is refused
    train = sorted(split.patients["train"])
    other_split = Split({**split.patients, "train": tuple(train[1:]), "val": (*split.patients["val"], train[0])},
                        split.rule)
    elsewhere = with_pool("elsewhere", train[1:2], other_split)
    with pytest.raises(ConfigError, match=rf"^lead_set_encoders\.2\.x@leadset \(.*\): pretrained on split "
                                          rf"{other_split.hash[:12]}, but with split: null"):
        run_reduced_leads(replace(cfg, split=None, lead_set_encoders={"2": {"x@leadset": elsewhere}}),
                          runs=tmp_path / "runs", progress=False)


def test_bad_lead_set_encoders_are_refused_before_any_data_is_read(tmp_path):
    two, twelve = _saved(tmp_path, "two", 2), _saved(tmp_path, "twelve", 12)
    base = ReducedLeadsConfig(name="rl", dataset="ludb", root=str(tmp_path / "nowhere"), fs=100.0, window=4.0,
                              encoders={"simclr": twelve}, lead_sets=[12, 2, ["V1", "II"]], feature_arm=True,
                              cache_dir=str(tmp_path / "cache"))
    cases = [
        ({"3": {"a": two}}, r"^lead_set_encoders\.3: '3' is not a lead set of lead_sets; expected one of "
                            r"\['12', '2', 'V1-II'\]$"),
        ({"2": {"simclr": two}}, r"^lead_set_encoders\.2\.simclr: the name is taken by an encoders arm"),
        ({"2": {"random_init": two}}, r"^lead_set_encoders\.2\.random_init: the name is taken by the random-init"),
        ({"2": {"features": two}}, r"^lead_set_encoders\.2\.features: the name is taken by the feature arm"),
        ({"2": {"supervised@simclr": two}}, r"taken by a matched reference arm"),
        ({"2": {"a": twelve}}, r"^lead_set_encoders\.2\.a \(.*twelve\): encoder takes 12 channel\(s\), but the "
                               r"evaluation gives 2 \(2 leads\)"),
        ({"V1-II": {"a": twelve}}, r"^lead_set_encoders\.V1-II\.a .*gives 2 \(2 leads\)"),
    ]
    for encoders, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            run_reduced_leads(replace(base, lead_set_encoders=encoders), runs=tmp_path / "runs", progress=False)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()
    # YAML reads `2:` as an int key: a lead-set label all the same
    cfg = load_recipe(ReducedLeadsConfig, overrides={"lead_set_encoders": {2: {"a": two}}})
    assert cfg.lead_set_encoders == {"2": {"a": two}}
