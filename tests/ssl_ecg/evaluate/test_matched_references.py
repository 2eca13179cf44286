"""Matched references: random_init@<group> and supervised@<group> per encoder architecture."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.curve import CurveSpec, run_curve, summarize_runs, write_outputs
from ssl_ecg.evaluate.runner import add_matched_references, reference_groups
from ssl_ecg.models import ClocsEncoder, build_encoder
from ssl_ecg.utils import seeded

PER_LEAD = {"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 8}
TWO_LEADS = {**PER_LEAD, "in_channels": 2}


def synthetic(n=60, seed=0):
    """Two-lead records whose lead 0 polarity carries a binary label; one patient each."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = np.arange(800) / 100.0
    x = rng.standard_normal((n, 2, 800)).astype(np.float32) * 0.3
    x[:, 0] += (y[:, None] * 2.0 - 1.0) * np.sin(2 * np.pi * 3 * t)[None]
    table = pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "y": y.astype(float)})
    pats = table["patient_id"].tolist()
    return x, table, {"train": pats[:36], "val": pats[36:48], "test": pats[48:]}


def _encoder(config, seed):
    torch.manual_seed(seed)
    return build_encoder(config).eval()


def _encoders():
    """cmsc: per-lead; simclr and byol: one two-lead architecture (other weights)."""
    return {"cmsc": _encoder(PER_LEAD, 1), "simclr": _encoder(TWO_LEADS, 2), "byol": _encoder(TWO_LEADS, 3)}


def _base(encoders, modes, seed=0):
    """What the runner's load_arms gives: random_init and supervised of the first arm's architecture."""
    with seeded(seed):
        encoders["random_init"] = build_encoder(PER_LEAD).eval()
    modes.update(random_init=True, supervised=True)
    return encoders, modes


def _spec(matched=None, **kw):
    references, extra = matched or ({}, {})
    base = dict(tasks=["y"], fractions=[0.5, 1.0], seeds=[0, 1], window=400, supervised=dict(PER_LEAD),
                supervised_epochs=1, supervised_lrs=[1e-3], supervised_batch_sizes=[16],
                per_lead={"cmsc": True, "simclr": False, "byol": False, "random_init": True, "supervised": True,
                          "random_init@simclr": False, "supervised@simclr": False},
                extra_supervised=extra, references=references)
    base.update(kw)
    return CurveSpec(**base)


class CountingProbe:
    """Counts the cells ``run_curve`` computes (its ``fit_probe`` calls)."""

    def __init__(self, monkeypatch):
        import ssl_ecg.evaluate.curve as curve

        self.cells, self.real, self.supervised = [], curve.fit_probe, []
        monkeypatch.setattr(curve, "fit_probe", self)

    def __call__(self, kind, data, **kw):
        self.cells.append(kind)
        if kind == "supervised":  # which architecture and lead mode each supervised cell trained
            self.supervised.append((dict(kw["encoder"]), kw["per_lead"]))
        return self.real(kind, data, **kw)


def test_groups_follow_config_and_lead_mode_and_the_new_arms_are_seeded_builds():
    arms, modes = _base(_encoders(), {"cmsc": True, "simclr": False, "byol": False})
    groups = reference_groups(arms, modes)
    assert [(g.name, g.suffix, g.arms, g.per_lead) for g in groups] == [
        ("cmsc", "", ("cmsc",), True), ("simclr", "@simclr", ("simclr", "byol"), False)]
    references, extra = add_matched_references(arms, modes, random_init=True, seed=7)
    assert references == {"cmsc": "", "simclr": "@simclr", "byol": "@simclr", "random_init": "",
                          "random_init@simclr": "@simclr", "supervised@simclr": "@simclr"}
    assert extra == {"supervised@simclr": arms["simclr"].config} and extra["supervised@simclr"]["in_channels"] == 2
    assert modes["random_init@simclr"] is False and modes["supervised@simclr"] is False
    with seeded(7):
        want = build_encoder(TWO_LEADS).state_dict()
    got = arms["random_init@simclr"].state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want) and not arms["random_init@simclr"].training
    # the same config in another lead mode is another architecture
    arms2, modes2 = _base({"a": _encoder(PER_LEAD, 0), "b": _encoder(PER_LEAD, 1)}, {"a": True, "b": False})
    assert [g.arms for g in reference_groups(arms2, modes2)] == [("a",), ("b",)]
    # one architecture only: nothing is added
    arms3, modes3 = _base({"a": _encoder(PER_LEAD, 0)}, {"a": True})
    assert add_matched_references(arms3, modes3, random_init=True) == ({"a": "", "random_init": ""}, {})
    assert set(arms3) == {"a", "random_init"}
    # without random_init only the supervised copy is added; an encoder bearing its name is refused
    arms4, modes4 = _base(_encoders(), {"cmsc": True, "simclr": False, "byol": False})
    assert list(add_matched_references(arms4, modes4, random_init=False)[1]) == ["supervised@simclr"]
    assert "random_init@simclr" not in arms4
    arms5, modes5 = _base({**_encoders(), "supervised@simclr": _encoder(PER_LEAD, 4)},
                          {"cmsc": True, "simclr": False, "byol": False, "supervised@simclr": True})
    with pytest.raises(ConfigError, match=r"encoders\.supervised@simclr: the name is taken"):
        add_matched_references(arms5, modes5, random_init=True)


def test_bad_matched_specs_are_named():
    with pytest.raises(ConfigError, match="extra_supervised: arm 'simclr'"):
        _spec(({}, {"simclr": TWO_LEADS}))
    with pytest.raises(ConfigError, match="references: .*'simclr'"):
        _spec(({"byol": "simclr"}, {}))


def test_matched_references_only_add_cells_and_each_group_is_compared_with_its_own(tmp_path, monkeypatch):
    x, table, splits = synthetic()
    out = tmp_path / "run"
    probe = CountingProbe(monkeypatch)
    # today's run: one random_init and one supervised, both per-lead (the first arm's architecture)
    arms, modes = _base(_encoders(), {"cmsc": True, "simclr": False, "byol": False})
    plain = run_curve(x, table, splits, dict(arms), _spec(), out, progress=False)
    assert set(plain["arm"]) == {"cmsc", "simclr", "byol", "random_init", "supervised"}
    assert (plain["reference"] == "").all() and len(probe.cells) == len(plain) == 5 * 2 * 2
    # the same grid without the new fields gives the same fingerprints (nothing added to their payloads)
    assert run_curve(x, table, splits, dict(arms), CurveSpec(**{
        k: v for k, v in _spec().__dict__.items() if k not in ("extra_supervised", "references")}), out,
        progress=False)["fingerprint"].tolist() == plain["fingerprint"].tolist()
    probe.cells.clear()

    matched = add_matched_references(arms, modes, random_init=True, seed=0)
    both = run_curve(x, table, splits, arms, _spec(matched), out, progress=False)
    # only the new arms' cells are computed; every old row is reused unchanged
    assert sorted(probe.cells) == ["logistic"] * 4 + ["supervised"] * 4
    assert set(both["arm"]) == set(plain["arm"]) | {"random_init@simclr", "supervised@simclr"}
    old = both.loc[both["arm"].isin(set(plain["arm"]))].drop(columns="reference").reset_index(drop=True)
    pd.testing.assert_frame_equal(old, plain.drop(columns="reference"))
    group = dict(zip(both["arm"], both["reference"]))
    assert group == {"cmsc": "", "random_init": "", "supervised": "", "simclr": "@simclr", "byol": "@simclr",
                     "random_init@simclr": "@simclr", "supervised@simclr": "@simclr"}
    stored = pd.read_csv(out / "curve.csv", keep_default_na=False)  # the regrouping reached the file
    assert dict(zip(stored["arm"], stored["reference"])) == group
    # the supervised copy trained the two-lead config, multi-lead; the plain one CMSC's per-lead config
    trained = {(e["in_channels"], mode) for e, mode in probe.supervised}
    assert (TWO_LEADS["in_channels"], False) in trained and (1, True) in trained and len(trained) == 2
    sup = both.loc[both["arm"] == "supervised@simclr"]
    assert not set(sup["fingerprint"]) & set(both.loc[both["arm"] == "supervised", "fingerprint"])
    other = _spec((matched[0], {"supervised@simclr": {**TWO_LEADS, "embed_dim": 16}}))
    probe.cells.clear()
    run_curve(x, table, splits, arms, other, tmp_path / "other", progress=False)
    assert probe.cells.count("supervised") == 8  # a fresh folder: the check below is on the fingerprints
    again = pd.read_csv(tmp_path / "other" / "curve.csv", dtype=str)
    changed = again.loc[again["arm"] == "supervised@simclr", "fingerprint"]
    assert not set(changed) & set(sup["fingerprint"])
    assert set(again.loc[again["arm"] == "supervised", "fingerprint"]) == set(
        both.loc[both["arm"] == "supervised", "fingerprint"])

    res = summarize_runs([(both, out / "predictions")], n_boot=300, seed=0)
    pairs = {(c["family"], c["a"][0], c["b"][0]) for c in res["comparisons"]["y"]}
    names = {c["name"] for c in res["comparisons"]["y"]}
    for method, suffix in (("cmsc", ""), ("simclr", "@simclr"), ("byol", "@simclr")):
        assert {(f, method, b) for f, _, b in pairs if _ == method} == {
            ("vs random_init", method, f"random_init{suffix}"), ("vs supervised", method, f"supervised{suffix}"),
            ("headline", method, f"supervised{suffix}")}
    assert "simclr - supervised@simclr at 50% vs 100%" in names and "cmsc - supervised at 50% vs 100%" in names
    assert not any(a.startswith(("random_init", "supervised")) for _, a, _ in pairs)  # references are not methods
    # labels needed: simclr against random_init@simclr at 100%, cmsc against random_init
    est = {(line, float(f)): c["estimate"] for line, cells in res["summary"]["y"].items() for f, c in cells.items()}
    needed = res["labels_needed"]["y"]
    assert needed["reference"] == "random_init at 100%" and needed["target"] == est[("random_init", 1.0)]
    assert needed["references"]["simclr"] == {"reference": "random_init@simclr at 100%",
                                              "target": est[("random_init@simclr", 1.0)]}
    assert "cmsc" not in needed["references"] and set(needed["fractions"]) == {"cmsc", "simclr", "byol"}
    for line, ref in (("cmsc", "random_init"), ("simclr", "random_init@simclr")):
        reached = [f for f in (0.5, 1.0) if est[(line, f)] >= est[(ref, 1.0)]]
        assert needed["fractions"][line] == (reached[0] if reached else None)
    vs_sup = res["labels_needed_vs_supervised"]["y"]
    assert vs_sup["references"]["random_init@simclr"]["reference"] == "supervised@simclr at 100%"
    assert "supervised@simclr" not in vs_sup["fractions"] and "random_init" in vs_sup["fractions"]

    # rows of a file written before the column: every arm is compared with the plain references
    legacy = summarize_runs([(both.drop(columns="reference"), out / "predictions")], n_boot=300, seed=0)
    assert {c["b"][0] for c in legacy["comparisons"]["y"]} == {"random_init", "supervised"}
    assert "references" not in legacy["labels_needed"]["y"]
    # the figures take the extra lines
    write_outputs(both, out, {"note": "matched"}, n_boot=300)
    for png in ("curve.png", "differences.png", "labels_needed.png"):
        assert (out / png).stat().st_size > 1000
    verdicts = json.loads((out / "curve.json").read_text())["verdicts"]["y"]
    assert sum("simclr - random_init@simclr at" in v for v in verdicts) == 2


def test_switching_matched_references_off_again_moves_the_new_rows_aside(tmp_path):
    x, table, splits = synthetic()
    arms, modes = _base(_encoders(), {"cmsc": True, "simclr": False, "byol": False})
    plain_arms = dict(arms)
    matched = add_matched_references(arms, modes, random_init=True, seed=0)
    sp = dict(fractions=[1.0], seeds=[0], supervised=None)
    run_curve(x, table, splits, arms, _spec((matched[0], {}), **sp), tmp_path, progress=False)
    with pytest.warns(UserWarning, match="fingerprint differs"):
        back = run_curve(x, table, splits, plain_arms, _spec(**sp), tmp_path, progress=False)
    assert set(back["arm"]) == {"cmsc", "simclr", "byol", "random_init"} and (back["reference"] == "").all()
    assert set(pd.read_csv(tmp_path / "curve.stale.csv")["arm"]) == {"random_init@simclr"}
    assert (pd.read_csv(tmp_path / "curve.csv", keep_default_na=False)["reference"] == "").all()


def test_per_lead_and_two_lead_clocs_share_no_group():
    enc = {"a": ClocsEncoder(in_channels=1, input_len=400, embed_dim=8),
           "b": ClocsEncoder(in_channels=2, input_len=400, embed_dim=8)}
    assert [g.suffix for g in reference_groups(enc, {"a": True, "b": False})] == ["", "@b"]


def test_a_recipe_with_matched_references_adds_the_arms_and_records_the_groups(tmp_path, ludb_like):
    from ssl_ecg.checkpoint import save_encoder
    from ssl_ecg.evaluate.runner import EvalConfig, run_evaluation

    root = ludb_like(40)
    paths = {}
    for arm, config, seed in (("cmsc", PER_LEAD, 1), ("simclr", TWO_LEADS, 2), ("byol", TWO_LEADS, 3)):
        paths[arm] = str(save_encoder(_encoder(config, seed), tmp_path / arm / "encoder.pt"))
    values = dict(name="e", root=str(root), fs=100.0, window=4.0, leads=["I", "II"], encoders=paths, tasks=["lad"],
                  fractions=[1.0], seeds=[0], epochs=1, supervised_lrs=[1e-3], supervised_batch_sizes=[16],
                  split=[0.5, 0.25, 0.25], allow_unknown_provenance=True, cache_dir=str(tmp_path / "cache"))
    out = run_evaluation(EvalConfig(**values, matched_references=True), runs=tmp_path / "runs", progress=False)
    curve = out["curve"]
    assert dict(zip(curve["arm"], curve["reference"])) == {
        "cmsc": "", "random_init": "", "supervised": "", "simclr": "@simclr", "byol": "@simclr",
        "random_init@simclr": "@simclr", "supervised@simclr": "@simclr"}
    meta = json.loads((out["out"] / "curve.json").read_text())
    assert meta["reference_groups"] == {"": ["cmsc"], "@simclr": ["simclr", "byol"]}
    assert meta["per_lead"]["supervised@simclr"] is False and meta["per_lead"]["random_init@simclr"] is False
    sup = json.loads(curve.loc[curve["arm"] == "supervised@simclr", "setting"].iloc[0])
    assert sup  # the two-lead supervised arm trained (its grid choice is recorded)
    # off (the default): today's arms, and their rows are the ones the matched run stored
    with pytest.warns(UserWarning, match=r"2 row\(s\) of 2 cell\(s\) .*fingerprint differs"):  # the matched arms'
        plain = run_evaluation(EvalConfig(**values), runs=tmp_path / "runs", progress=False)["curve"]
    assert set(plain["arm"]) == {"cmsc", "simclr", "byol", "random_init", "supervised"}
    assert (plain["reference"] == "").all()
    assert set(plain["fingerprint"]) <= set(curve["fingerprint"])
    assert "reference_groups" not in json.loads((out["out"] / "curve.json").read_text())
    with pytest.raises(ConfigError, match=r"encoders\.random_init@x: names of the form"):
        run_evaluation(EvalConfig(**{**values, "encoders": {**paths, "random_init@x": paths["cmsc"]}}),
                       runs=tmp_path / "runs", progress=False)


def test_the_report_names_each_groups_references_and_headlines_against_them(tmp_path):
    from ssl_ecg.report import _arms_lines, headline

    folders = {}
    for arm, config in (("cmsc", PER_LEAD), ("simclr", TWO_LEADS), ("byol", TWO_LEADS)):
        folders[arm] = tmp_path / arm
        folders[arm].mkdir()
        (folders[arm] / "encoder.json").write_text(json.dumps({"encoder": config, "pretraining": {}}))
    meta = {"per_lead": {"cmsc": True, "simclr": False, "byol": False},
            "config": {"encoders": {a: str(f) for a, f in folders.items()}}}
    (tmp_path / "curve.json").write_text(json.dumps(meta))
    plain = _arms_lines({"out": str(tmp_path), "seed": 0})[-1]
    assert "**random_init** and **supervised** take the cmsc architecture" in plain
    (tmp_path / "curve.json").write_text(json.dumps({**meta, "reference_groups": {"": ["cmsc"],
                                                                                  "@simclr": ["simclr", "byol"]}}))
    text = _arms_lines({"out": str(tmp_path), "seed": 0})[-1]
    assert ("**random_init** and **supervised** take cmsc's architecture (cmsc); **random_init@simclr** and "
            "**supervised@simclr** take simclr's (simclr, byol). Each method is compared") in text
    assert "take the cmsc architecture" not in text

    x, table, splits = synthetic()
    arms, modes = _base(_encoders(), {"cmsc": True, "simclr": False, "byol": False})
    matched = add_matched_references(arms, modes, random_init=True, seed=0)
    curve = run_curve(x, table, splits, arms, _spec(matched, seeds=[0]), tmp_path / "run", progress=False)
    res = summarize_runs([(curve, tmp_path / "run" / "predictions")], n_boot=300, seed=0)
    lines = headline(res, "y", low_fraction=0.5)
    assert [ln.split("**")[1] for ln in lines] == ["cmsc at 50% vs supervised at 100%",
                                                   "simclr at 50% vs supervised@simclr at 100%",
                                                   "byol at 50% vs supervised@simclr at 100%"]


def test_the_labels_needed_plot_names_each_bars_own_reference(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from ssl_ecg.evaluate.plots import plot_labels_needed

    shown = []
    original = plt.Axes.bar

    def spy(self, names, heights, **kw):
        shown.extend(names)
        return original(self, names, heights, **kw)

    monkeypatch.setattr(plt.Axes, "bar", spy)
    needed = {"t": {"target": 0.8, "reference": "random_init at 100%", "fractions": {"cmsc": 0.1, "simclr": None},
                    "references": {"simclr": {"reference": "random_init@simclr at 100%", "target": 0.7}}}}
    plot_labels_needed(needed, tmp_path / "n.png")
    assert shown == ["cmsc", "simclr\nvs random_init@simclr"]


def _rows_with_predictions(folder, arms, seed=0, n_pat=24, patients=None):
    """curve rows (with the ``reference`` column) and stored predictions of a binary task, one draw per cell."""
    from ssl_ecg.evaluate.curve import save_predictions

    rng = np.random.default_rng(seed)
    y = np.arange(n_pat) % 2
    pid = np.arange(n_pat).astype(str) if patients is None else patients
    rows = []
    for arm, probe, group in arms:
        for frac in (0.1, 1.0):
            scores = y + rng.standard_normal(n_pat)
            fp = f"{arm}-{frac}-{seed}"
            save_predictions(folder / f"{fp}.npz", scores, y, pid, np.arange(n_pat), "binary")
            rows.append({"task": "t", "arm": arm, "probe": probe, "fraction": frac, "real_fraction": frac, "seed": 0,
                         "metric": "auroc", "value": 0.7, "fingerprint": fp, "reference": group})
    return pd.DataFrame(rows)


def test_a_method_whose_own_reference_is_missing_is_never_compared_with_another_architectures(tmp_path):
    from ssl_ecg.evaluate.curve import summarize_runs

    arms = [("cmsc", "logistic", ""), ("simclr", "logistic", "@simclr"), ("random_init", "logistic", ""),
            ("supervised", "supervised", ""), ("supervised@simclr", "supervised", "@simclr")]  # no random_init@simclr
    res = summarize_runs([(_rows_with_predictions(tmp_path, arms), tmp_path)], n_boot=50)
    pairs = {(c["a"][0], c["b"][0]) for c in res["comparisons"]["t"]}
    assert ("cmsc", "random_init") in pairs and ("simclr", "supervised@simclr") in pairs
    assert not {p for p in pairs if p[0] == "simclr" and p[1] in ("random_init", "supervised")}
    assert "simclr" not in res["labels_needed"]["t"]["fractions"]  # its own random init has no 100% cell
    assert "cmsc" in res["labels_needed"]["t"]["fractions"]
    assert res["labels_needed_vs_supervised"]["t"]["references"]["simclr"]["reference"] == "supervised@simclr at 100%"


def test_runs_disagreeing_on_a_lines_reference_group_are_refused(tmp_path):
    from ssl_ecg.errors import ConfigError
    from ssl_ecg.evaluate.curve import summarize_runs

    one = [("simclr", "logistic", "@simclr"), ("random_init", "logistic", ""),
           ("random_init@simclr", "logistic", "@simclr")]
    two = [("simclr", "logistic", ""), ("random_init", "logistic", ""), ("random_init@simclr", "logistic", "@simclr")]
    runs = [(_rows_with_predictions(tmp_path / "a", one), tmp_path / "a"),
            (_rows_with_predictions(tmp_path / "b", two, seed=1), tmp_path / "b")]
    with pytest.raises(ConfigError, match=r"runs: line 'simclr' has reference groups \['', '@simclr'\]"):
        summarize_runs(runs, n_boot=20)


def test_only_an_infeasible_bootstrap_falls_back_and_the_fallback_stays_in_0_1(tmp_path):
    from ssl_ecg.errors import ConfigError
    from ssl_ecg.evaluate.curve import summarize_runs

    arms = [("cmsc", "logistic", ""), ("random_init", "logistic", "")]
    bad = _rows_with_predictions(tmp_path / "bad", arms, patients=np.array(["p"] * 23))  # 23 ids for 24 records
    with pytest.raises(ConfigError, match="patients: 23 ids for 24 records"):
        summarize_runs([(bad, tmp_path / "bad")], n_boot=20)  # a defect is raised, not hidden behind t intervals
    tiny = pd.concat([_rows_with_predictions(tmp_path / "tiny", arms, n_pat=4)] * 2, ignore_index=True)
    tiny.loc[len(tiny) // 2:, "seed"] = 1
    tiny.loc[tiny["seed"] == 0, "value"] = 0.99
    tiny.loc[tiny["seed"] == 1, "value"] = 0.80  # two draws far apart: the t interval would pass 1
    res = summarize_runs([(tiny, tmp_path / "tiny")], n_boot=20)
    cell = res["summary"]["t"]["cmsc"]["1"]
    assert "no patient bootstrap" in cell["interval"] and cell["ci_high"] == 1.0 and cell["t_ci_high"] > 1.0
