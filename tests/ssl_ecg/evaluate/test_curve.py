import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from ssl_ecg.evaluate import CurveSpec, run_curve, summarize, write_outputs
from ssl_ecg.models import ClocsEncoder


def synthetic(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = np.arange(800) / 100.0
    x = rng.standard_normal((n, 2, 800)).astype(np.float32) * 0.3
    x[:, 0] += (y[:, None] * 2.0 - 1.0) * np.sin(2 * np.pi * 3 * t)[None]  # polarity carries the label
    table = pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "y": y.astype(float)})
    table.loc[5, "y"] = np.nan  # unlabelled for this task
    pats = table["patient_id"].tolist()
    splits = {"train": pats[:36], "val": pats[36:48], "test": pats[48:]}
    return x, table, splits


def spec(**kw):
    base = dict(tasks=["y"], fractions=[0.25, 1.0], seeds=[0, 1, 2], window=400,
                supervised={"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 8},
                supervised_epochs=3)
    base.update(kw)
    return CurveSpec(**base)


def test_curve_rows_resume_and_outputs(tmp_path):
    x, table, splits = synthetic()
    enc = {"random_init": ClocsEncoder(input_len=400, embed_dim=8).eval()}
    full = run_curve(x, table, splits, enc, spec(), tmp_path / "a", progress=False)
    assert len(full) == 2 * 3 * 2  # arms x seeds x fractions
    assert set(full["arm"]) == {"random_init", "supervised"}
    n100 = full.loc[full.fraction == 1.0, "n_train_patients"].unique().tolist()
    assert n100 == [35]  # 36 train patients, one unlabelled
    # Interrupted run: keep the first 5 rows, resume, compare with the uninterrupted run.
    part = tmp_path / "b"
    (part / "predictions").mkdir(parents=True)
    full.iloc[:5].to_csv(part / "curve.csv", index=False)
    for fp in full["fingerprint"].iloc[:5]:  # their predictions come along: the 5 rows are reused
        shutil.copy(tmp_path / "a" / "predictions" / f"{fp}.npz", part / "predictions")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed = run_curve(x, table, splits, enc, spec(), part, progress=False)
    key = ["task", "arm", "fraction", "seed"]
    pd.testing.assert_frame_equal(full.sort_values(key).reset_index(drop=True),
                                  resumed.sort_values(key).reset_index(drop=True))
    summary = write_outputs(full, tmp_path / "a", {"note": "test"})
    assert (tmp_path / "a" / "curve.png").stat().st_size > 1000
    v = full[(full.arm == "random_init") & (full.fraction == 0.25)]["value"].to_numpy()
    cell = summary["y"]["random_init"]["0.25"]
    half = stats.t.ppf(0.975, 2) * v.std(ddof=1) / np.sqrt(3)
    assert cell["mean"] == pytest.approx(v.mean()) and cell["t_ci_high"] == pytest.approx(v.mean() + half)
    assert cell["interval"].startswith("hierarchical bootstrap") and cell["n_test_patients"] == 12
    assert 0 <= cell["ci_low"] <= cell["mean"] <= cell["ci_high"] <= 1
    n25 = full.loc[(full.arm == "random_init") & (full.fraction == 0.25), "n_train_patients"]
    assert cell["real_fraction"] == pytest.approx((n25 / 35).mean()) and full["real_fraction"].max() == 1.0


def test_summarize_single_seed_has_nan_ci():
    df = pd.DataFrame({"task": ["t"], "arm": ["a"], "fraction": [1.0], "seed": [0], "value": [0.7]})
    cell = summarize(df)["t"]["a"]["1"]
    assert cell["mean"] == 0.7 and np.isnan(cell["ci_low"]) and cell["interval"].startswith("t over seeds (no stored")


def test_every_probe_type_and_a_categorical_task(tmp_path):
    from ssl_ecg.evaluate.curve import labels_needed

    x, table, splits = synthetic(n=90)
    rng = np.random.default_rng(1)
    table["rhythm"] = np.where(table["y"] == 1, "sinus", rng.choice(["afib", "flutter"], len(table)))
    table.loc[7, "rhythm"] = ""  # unlabelled
    pats = table["patient_id"].tolist()
    splits = {"train": pats[:50], "val": pats[50:70], "test": pats[70:]}
    torch.manual_seed(0)  # the encoder must not depend on which tests ran before
    enc = {"random_init": ClocsEncoder(input_len=400, embed_dim=8).eval()}
    sp = spec(tasks=["y", "rhythm"], seeds=[0, 1], fractions=[0.5, 1.0], supervised=None,
              probes=["logistic", "torch", "knn", "finetune"], supervised_epochs=12, supervised_lr=3e-3)
    curve = run_curve(x, table, splits, enc, sp, tmp_path, progress=False)
    assert len(curve) == 2 * 2 * 2 * 4 and set(curve["probe"]) == {"logistic", "torch", "knn", "finetune"}
    assert curve["value"].between(0, 1).all()
    assert curve.loc[curve.task == "y"].groupby("probe")["value"].mean().min() > 0.6  # every probe beats chance
    summary = write_outputs(curve, tmp_path, {})
    assert set(summary["y"]) == {"random_init", "random_init+torch", "random_init+knn", "random_init+finetune"}
    needed = labels_needed(summary)
    target = summary["y"]["random_init"]["1"]["mean"]
    for name, frac in needed["y"]["fractions"].items():
        cells = summary["y"][name]
        first = next((float(f) for f in sorted(cells, key=float) if cells[f]["mean"] >= target), None)
        assert frac == first, name
    assert (tmp_path / "labels_needed.png").stat().st_size > 1000


def test_bad_curve_specs_are_named():
    from ssl_ecg.errors import ConfigError

    with pytest.raises(ConfigError, match=r"fractions: \[0.0, 1.5\]"):
        spec(fractions=[0.0, 0.5, 1.5])
    with pytest.raises(ConfigError, match="probes"):
        spec(probes=["svm"])


def test_categorical_classes_missing_from_a_split_are_dropped_with_a_warning():
    from ssl_ecg.evaluate.tasks import task_y as _task_y

    col = pd.Series(["a", "b", "a", "rare", "b", "", "a", "b"])
    split = np.array(["train", "train", "val", "val", "val", "test", "test", "test"])
    dropped: dict = {}
    with pytest.warns(UserWarning, match=r"\['rare'\]"):
        y, names = _task_y(col, split, "t", dropped)
    assert dropped == {"t": ["rare"]} and names == ["a", "b"]
    assert np.isnan(y[[3, 5]]).all() and y[[0, 1, 2, 4, 6, 7]].tolist() == [0, 1, 0, 1, 0, 1]


def test_curve_outputs_log_to_an_offline_wandb_run(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    rows = [{"task": "t", "arm": a, "probe": "logistic", "fraction": f, "seed": s, "metric": "auroc",
             "value": v + 0.01 * s, "val_value": v, "n_train_patients": 10, "n_train_records": 10}
            for a, v0 in (("random_init", 0.7), ("cmsc", 0.8)) for f, v in ((0.1, v0 - 0.1), (1.0, v0))
            for s in (0, 1)]
    run = wandb.init(project="ssl-ecg-test", dir=str(tmp_path), mode="offline")
    try:
        summary = write_outputs(pd.DataFrame(rows), tmp_path, {}, wandb_run=run)
    finally:
        run.finish()
    assert summary["t"]["cmsc"]["1"]["mean"] == pytest.approx(0.805)
    import json

    needed = json.loads((tmp_path / "curve.json").read_text())["labels_needed"]["t"]
    assert needed["target"] == pytest.approx(0.705) and needed["fractions"] == {"cmsc": 0.1}  # 0.705 at 10%
    offline = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].rglob("*.wandb"))
    assert any((offline[0] / "files" / "media").rglob("*.png"))


def test_multilabel_tasks_and_the_challenge_metric(tmp_path):
    from ssl_ecg.evaluate.challenge import challenge_score
    from ssl_ecg.evaluate.curve import _challenge_row
    from ssl_ecg.evaluate.tasks import patient_labels as _patient_labels
    from ssl_ecg.evaluate.tasks import task_y as _task_y

    x, table, splits = synthetic(n=90)
    pats = table["patient_id"].tolist()
    splits = {"train": pats[:50], "val": pats[50:70], "test": pats[70:]}
    sinus, af, rbbb = "426783006", "164889003", "713427006"  # scored SNOMED codes
    rng = np.random.default_rng(2)
    scored = [([af] if y == 1 else [sinus]) + ([rbbb] if rng.random() < 0.4 else []) for y in table["y"].fillna(0)]
    scored[3] = []  # no label: left out
    table["scored"] = pd.Series(scored, dtype=object)
    torch.manual_seed(0)
    enc = {"random_init": ClocsEncoder(input_len=400, embed_dim=8).eval()}
    curve = run_curve(x, table, splits, enc, spec(tasks=["scored"], seeds=[0, 1], fractions=[0.5, 1.0],
                                                  supervised=None), tmp_path, progress=False)
    assert set(curve["metric"]) == {"auroc", "challenge"} and len(curve) == 2 * 2 * 2
    summary = summarize(curve, tmp_path / "predictions", n_boot=200)
    assert set(summary) == {"scored", "scored [challenge]"}
    assert summary["scored"]["random_init"]["1"]["interval"].startswith("hierarchical bootstrap")
    assert "no patient bootstrap" in summary["scored [challenge]"]["random_init"]["1"]["interval"]
    # the challenge row is the official score at thresholds tuned on validation
    record_split = np.array(["train"] * 50 + ["val"] * 20 + ["test"] * 20)
    y, names = _task_y(table["scored"], record_split, "scored", {})
    assert names == sorted([af, sinus, rbbb]) and np.isnan(y[3]).all() and y.shape == (90, 3)
    pl = _patient_labels(np.array(pats), y, np.arange(50)[~np.isnan(y[:50, 0])])
    assert pl["p0"] == tuple(np.flatnonzero(y[0] > 0))
    yv, yt = y[50:70].astype(int), y[70:].astype(int)
    row = _challenge_row(names, yv, yv.astype(float), yt, yt.astype(float))  # perfect scores
    assert row["value"] == pytest.approx(1.0) and row["val_value"] == pytest.approx(1.0)
    assert challenge_score(np.zeros((2, 24)), np.zeros((2, 24))) == 0.0


class CountingProbe:
    """Wraps ``curve.fit_probe`` and counts the cells it computes."""

    def __init__(self, monkeypatch):
        import ssl_ecg.evaluate.curve as curve

        self.calls, self.real = [], curve.fit_probe
        monkeypatch.setattr(curve, "fit_probe", self)

    def __call__(self, kind, data, **kw):
        self.calls.append(kind)
        return self.real(kind, data, **kw)

    def take(self) -> int:
        n, self.calls = len(self.calls), []
        return n


def _encoder(seed):
    torch.manual_seed(seed)
    return ClocsEncoder(input_len=400, embed_dim=8).eval()


def test_resume_is_keyed_on_encoder_settings_split_and_schema_not_on_commit(tmp_path, monkeypatch):
    import ssl_ecg.evaluate.curve as curve

    x, table, splits = synthetic()
    sp = spec(fractions=[0.5, 1.0], seeds=[0], supervised=None)
    enc_a, enc_b = {"random_init": _encoder(0)}, {"random_init": _encoder(1)}
    probe = CountingProbe(monkeypatch)
    ref = run_curve(x, table, splits, enc_a, sp, tmp_path / "ref", progress=False)
    assert probe.take() == 2 and ref["fingerprint"].nunique() == 2 and (ref["git_commit"].str.len() == 40).all()

    # Rows of another encoder (same task/arm/probe/fraction/seed, other weights) are recomputed, not reused.
    out = tmp_path / "run"
    run_curve(x, table, splits, enc_b, sp, out, progress=False)
    planted = pd.read_csv(out / "curve.csv")
    planted["value"] = 0.123
    planted.to_csv(out / "curve.csv", index=False)
    probe.take()
    with pytest.warns(UserWarning, match=r"2 row\(s\) of 2 cell\(s\) .*fingerprint differs"):
        got = run_curve(x, table, splits, enc_a, sp, out, progress=False)
    assert probe.take() == 2 and 0.123 not in got["value"].tolist()
    pd.testing.assert_frame_equal(got, ref)
    assert len(pd.read_csv(out / "curve.csv")) == 2  # the stale rows left the file

    # Matching rows are reused (no probe runs), even with another commit, library versions and machine.
    stored = pd.read_csv(out / "curve.csv", dtype=str)
    stored["git_commit"], stored["torch_version"], stored["cuda_device"] = "0" * 40, "0.0.1", "Other GPU"
    stored.to_csv(out / "curve.csv", index=False)
    again = run_curve(x, table, splits, enc_a, sp, out, progress=False)
    assert probe.take() == 0 and (again["git_commit"] == "0" * 40).all()
    pd.testing.assert_frame_equal(again.drop(columns=["git_commit", "torch_version", "cuda_device"]),
                                  ref.drop(columns=["git_commit", "torch_version", "cuda_device"]))

    # A cell outside this grid stays in the file but is not returned; the grid's own cell is reused.
    one = run_curve(x, table, splits, enc_a, spec(fractions=[1.0], seeds=[0], supervised=None), out, progress=False)
    assert probe.take() == 0 and one["fraction"].tolist() == [1.0] and len(pd.read_csv(out / "curve.csv")) == 2

    # A result-affecting change recomputes: the split hash, the window's lead mode, the labels, the schema.
    for changed in (dict(spec=spec(fractions=[0.5, 1.0], seeds=[0], supervised=None, split_hash="other")),
                    dict(spec=spec(fractions=[0.5, 1.0], seeds=[0], supervised=None, per_lead=False),
                         encoders={"random_init": ClocsEncoder(in_channels=2, input_len=400, embed_dim=8).eval()}),
                    dict(table=table.assign(y=table["y"].where(table.index != 0, 1 - table["y"])))):
        args = dict(spec=sp, encoders=enc_a, table=table) | changed
        with pytest.warns(UserWarning, match="fingerprint differs"):
            run_curve(x, args["table"], splits, args["encoders"], args["spec"], out, progress=False)
        assert probe.take() == 2
    with pytest.warns(UserWarning, match="fingerprint differs"):
        run_curve(x, table, splits, enc_a, sp, out, progress=False)
    assert probe.take() == 2  # back to the original setting: the last run replaced its rows
    monkeypatch.setattr(curve, "RESULTS_SCHEMA", curve.RESULTS_SCHEMA + 1)
    with pytest.warns(UserWarning, match="fingerprint differs"):
        run_curve(x, table, splits, enc_a, sp, out, progress=False)
    assert probe.take() == 2


def test_resume_of_a_file_without_fingerprints_recomputes_and_prunes_the_supervised_grid(tmp_path, monkeypatch):
    x, table, splits = synthetic()
    sp = spec(fractions=[1.0], seeds=[0], supervised_epochs=1, supervised_lrs=[1e-3, 3e-3],
              supervised_batch_sizes=[16])
    enc = {"random_init": _encoder(0)}
    first = run_curve(x, table, splits, enc, sp, tmp_path, progress=False)
    grid = pd.read_csv(tmp_path / "supervised_grid.csv")
    assert len(grid) == 2 and grid["chosen"].sum() == 1
    assert set(grid["fingerprint"]) == set(first.loc[first.arm == "supervised", "fingerprint"])
    probe = CountingProbe(monkeypatch)
    # A changed supervised budget recomputes only the supervised cell; its old grid rows leave the file.
    sp2 = spec(fractions=[1.0], seeds=[0], supervised_epochs=2, supervised_lrs=[1e-3, 3e-3],
               supervised_batch_sizes=[16])
    with pytest.warns(UserWarning, match="1 row"):
        second = run_curve(x, table, splits, enc, sp2, tmp_path, progress=False)
    assert probe.calls == ["supervised"]
    grid = pd.read_csv(tmp_path / "supervised_grid.csv")
    assert len(grid) == 2 and set(grid["fingerprint"]) == set(second.loc[second.arm == "supervised", "fingerprint"])
    # A curve.csv from before fingerprints: nothing in it is trusted.
    pd.read_csv(tmp_path / "curve.csv").drop(columns=["fingerprint"]).to_csv(tmp_path / "curve.csv", index=False)
    probe.take()
    with pytest.warns(UserWarning, match="fingerprint differs"):
        third = run_curve(x, table, splits, enc, sp2, tmp_path, progress=False)
    assert probe.take() == 2 and len(pd.read_csv(tmp_path / "supervised_grid.csv")) == 2
    pd.testing.assert_frame_equal(third.drop(columns="val_value"), second.drop(columns="val_value"))


def test_curve_rows_record_the_chosen_setting(tmp_path):
    import json

    x, table, splits = synthetic()
    curve = run_curve(x, table, splits, {"random_init": _encoder(0)},
                      spec(fractions=[1.0], seeds=[0], supervised=None, probes=["logistic", "knn"]), tmp_path,
                      progress=False)
    settings = {p: json.loads(s) for p, s in zip(curve["probe"], curve["setting"])}
    assert set(settings["logistic"]) == {"C"} and settings["knn"]["k"] in (5, 10, 20, 50)


def test_rows_of_another_encoder_outside_the_grid_move_to_curve_stale_csv(tmp_path, monkeypatch):
    import warnings

    x, table, splits = synthetic()
    enc_a, enc_b = {"random_init": _encoder(0)}, {"random_init": _encoder(1)}
    both, one = (spec(fractions=f, seeds=[0], supervised=None) for f in ([0.5, 1.0], [1.0]))
    probe = CountingProbe(monkeypatch)
    old = run_curve(x, table, splits, enc_b, both, tmp_path, progress=False)
    with pytest.warns(UserWarning, match=r"2 row\(s\) of 2 cell\(s\).*moved to curve.stale.csv.*grid \(1\)"):
        got = run_curve(x, table, splits, enc_a, one, tmp_path, progress=False)
    stored = pd.read_csv(tmp_path / "curve.csv", dtype={"fingerprint": str})
    assert stored["fingerprint"].tolist() == got["fingerprint"].tolist() and stored["fraction"].tolist() == [1.0]
    stale = pd.read_csv(tmp_path / "curve.stale.csv", dtype={"fingerprint": str})
    assert sorted(stale["fingerprint"]) == sorted(old["fingerprint"])  # encoder b's rows, kept aside
    moved = sorted(p.stem for p in (tmp_path / "predictions.stale").glob("*.npz"))
    assert moved == sorted(old["fingerprint"])  # their predictions went with them
    assert sorted(p.stem for p in (tmp_path / "predictions").glob("*.npz")) == got["fingerprint"].tolist()
    probe.take()
    run_curve(x, table, splits, enc_a, both, tmp_path, progress=False)
    assert probe.take() == 1  # fraction 0.5 computed, 1.0 reused
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rows of other cells with a current fingerprint stay, silently
        run_curve(x, table, splits, enc_a, one, tmp_path, progress=False)
    assert probe.take() == 0 and sorted(pd.read_csv(tmp_path / "curve.csv")["fraction"]) == [0.5, 1.0]
    assert len(pd.read_csv(tmp_path / "curve.stale.csv")) == 2
    # a row whose predictions file is gone is never half-used: dropped and recomputed
    (tmp_path / "predictions" / f"{got['fingerprint'].iloc[0]}.npz").unlink()
    with pytest.warns(UserWarning, match=r"1 row\(s\) have no stored predictions"):
        again = run_curve(x, table, splits, enc_a, one, tmp_path, progress=False)
    assert probe.take() == 1 and again["value"].tolist() == got["value"].tolist()
    assert (tmp_path / "predictions" / f"{got['fingerprint'].iloc[0]}.npz").is_file()


def test_real_fraction_counts_the_patients_rare_class_forcing_adds(tmp_path):
    x, table, splits = synthetic(n=90)
    table["rhythm"] = np.where(table["y"] == 1, "sinus", "afib")
    table.loc[[0, 2, 60, 62, 80, 82], "rhythm"] = "flutter"  # one rare class: 2 train, 2 val, 2 test patients
    pats = table["patient_id"].tolist()
    splits = {"train": pats[:50], "val": pats[50:70], "test": pats[70:]}
    curve = run_curve(x, table, splits, {"random_init": _encoder(0)},
                      spec(tasks=["rhythm"], fractions=[0.05, 1.0], seeds=[0], supervised=None), tmp_path,
                      progress=False)
    low = curve.loc[curve.fraction == 0.05].iloc[0]  # 5% of 50: 2.5 patients, but one per class is kept (3)
    assert low["real_fraction"] == pytest.approx(low["n_train_patients"] / 50) and low["real_fraction"] > 0.05
    assert curve.loc[curve.fraction == 1.0, "real_fraction"].tolist() == [1.0]


def fake_run(folder, seed, effect, n_pat=24, seeds=(0, 1)):
    """curve rows and stored predictions of a binary task: cmsc > random_init, supervised in between."""
    from ssl_ecg.evaluate.curve import save_predictions

    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n_pat), 2).astype(str)
    y = np.repeat(np.arange(n_pat) % 2, 2)
    rows = []
    for arm, probe, gain in (("cmsc", "logistic", effect), ("random_init", "logistic", 0.3),
                             ("supervised", "supervised", 0.6)):
        for frac in (0.1, 0.5, 1.0):
            for sd in seeds:
                scores = gain * frac ** 0.2 * y + rng.standard_normal(len(y))
                fp = f"{arm}-{frac}-{sd}-{seed}"
                save_predictions(folder / f"{fp}.npz", scores, y, pid, np.arange(len(y)), "binary")
                rows.append({"task": "t", "arm": arm, "probe": probe, "fraction": frac, "real_fraction": frac,
                             "seed": sd, "metric": "auroc", "value": roc_auc(y, scores), "fingerprint": fp})
    return pd.DataFrame(rows)


def roc_auc(y, s):
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def test_summarize_runs_pairs_lines_holm_adjusts_and_combines_splits(tmp_path):
    from ssl_ecg.evaluate.curve import summarize_runs
    from ssl_ecg.evaluate.stats import aulc

    one = fake_run(tmp_path / "s0", 0, effect=2.0)
    res = summarize_runs([(one, tmp_path / "s0")], n_boot=300, seed=0)
    cell = res["summary"]["t"]["cmsc"]["0.5"]
    assert cell["estimate"] == pytest.approx(one.loc[(one.arm == "cmsc") & (one.fraction == 0.5), "value"].mean())
    assert 0 <= cell["ci_low"] < cell["estimate"] < cell["ci_high"] <= 1 and cell["n_test_patients"] == 24
    assert cell["delong_se"] > 0 and cell["patient_se"] > 0 and cell["n_seeds"] == 2
    comps = {c["name"]: c for c in res["comparisons"]["t"]}
    assert set(comps) == {f"cmsc - {r} at {f}" for r in ("random_init", "supervised") for f in ("10%", "50%", "100%")
                          } | {"cmsc - supervised at 10% vs 100%"}
    c = comps["cmsc - random_init at 100%"]
    assert c["ci_low"] > 0 and c["p"] <= c["p_holm"] <= 1 and "Holm-adjusted p=" in c["verdict"]
    est = {f: res["summary"]["t"]["cmsc"][f"{f:g}"]["estimate"] for f in (0.1, 0.5, 1.0)}
    assert res["aulc"]["t"]["cmsc"]["estimate"] == pytest.approx(aulc(list(est), list(est.values())))
    needed = res["labels_needed"]["t"]["bootstrap"]["cmsc"]
    assert sum(needed["shares"].values()) + needed["never"] == pytest.approx(1.0)
    assert "cmsc" in res["labels_needed_vs_supervised"]["t"]["fractions"]
    assert summarize_runs([(one, tmp_path / "s0")], n_boot=300, seed=0) == res  # seeded: same replicates
    # two splits: one summary over both; its estimate is the mean of the two splits
    two = fake_run(tmp_path / "s1", 1, effect=2.0)
    both = summarize_runs([(one, tmp_path / "s0"), (two, tmp_path / "s1")], n_boot=300, seed=0)
    sec = summarize_runs([(two, tmp_path / "s1")], n_boot=300, seed=0)["summary"]["t"]["cmsc"]["0.5"]
    got = both["summary"]["t"]["cmsc"]["0.5"]
    assert got["estimate"] == pytest.approx((cell["estimate"] + sec["estimate"]) / 2) and got["n_splits"] == 2
    assert got["n_seeds"] == 4 and got["n_test_patients"] == [24, 24]
    # a cell with one row lacking predictions falls back to the t interval, and leaves the comparisons
    (tmp_path / "s0" / f"{one['fingerprint'].iloc[0]}.npz").unlink()
    part = summarize_runs([(one, tmp_path / "s0")], n_boot=100, seed=0)
    assert part["summary"]["t"]["cmsc"]["0.1"]["interval"].startswith("t over seeds")
    assert not any(c["a"] == ["cmsc", 0.1] for c in part["comparisons"]["t"])


def test_write_outputs_records_the_bootstrap_and_draws_the_difference_plot(tmp_path):
    import json

    pred = tmp_path / "predictions"
    curve = fake_run(pred, 0, effect=2.0)
    write_outputs(curve, tmp_path, {"note": 1}, n_boot=200, boot_seed=3)
    out = json.loads((tmp_path / "curve.json").read_text())
    assert out["bootstrap"]["n_boot"] == 200 and out["bootstrap"]["seed"] == 3 and out["note"] == 1
    assert "Holm" in out["bootstrap"]["correction"] and len(out["verdicts"]["t"]) == 7
    assert (tmp_path / "differences.png").stat().st_size > 1000


def test_comparisons_fall_in_prespecified_families_each_holm_corrected(tmp_path):
    from ssl_ecg.evaluate.curve import summarize_runs
    from ssl_ecg.evaluate.stats import holm

    one = fake_run(tmp_path / "s0", 0, effect=2.0)
    feats = one.loc[one.arm == "cmsc"].assign(arm="features")  # a feature arm scored like cmsc
    feats["fingerprint"] = feats["fingerprint"].str.replace("cmsc", "features")
    for fp in one.loc[one.arm == "cmsc", "fingerprint"]:
        shutil.copy(tmp_path / "s0" / f"{fp}.npz", tmp_path / "s0" / f"{fp.replace('cmsc', 'features')}.npz")
    res = summarize_runs([(pd.concat([one, feats], ignore_index=True), tmp_path / "s0")], n_boot=300, seed=0)
    comps = res["comparisons"]["t"]
    fam = {f: [c for c in comps if c["family"] == f] for f in ("headline", "vs random_init", "vs supervised",
                                                              "vs features")}
    assert [c["name"] for c in fam["headline"]] == ["cmsc - supervised at 10% vs 100%",
                                                    "features - supervised at 10% vs 100%"]
    assert [c["name"] for c in fam["vs features"]] == [f"cmsc - features at {f}" for f in ("10%", "50%", "100%")]
    assert len(fam["vs random_init"]) == len(fam["vs supervised"]) == 6
    for members in fam.values():  # Holm within the family only
        np.testing.assert_allclose([c["p_holm"] for c in members], holm([c["p"] for c in members]))
        assert all(c["family_size"] == len(members) and c["p_min"] == pytest.approx(2 / 301) for c in members)
        assert all(c["p_holm_min"] == pytest.approx(len(members) * 2 / 301) for c in members)
    same = next(c for c in fam["vs features"] if c["name"] == "cmsc - features at 50%")
    assert same["estimate"] == 0 and same["ci_low"] == same["ci_high"] == 0 and same["p"] == 1.0
    assert res["bootstrap"]["p_min"] == pytest.approx(2 / 301) and "vs features" in res["bootstrap"]["correction"]
    with pytest.warns(UserWarning, match=r"n_boot: 50 replicates .* family of 6 comparisons .* n_boot >= 240"):
        summarize_runs([(pd.concat([one, feats], ignore_index=True), tmp_path / "s0")], n_boot=50, seed=0)


def test_splits_missing_a_cell_pair_only_where_both_exist_and_cells_carry_flags(tmp_path):
    from ssl_ecg.evaluate.curve import summarize_runs

    one, two = fake_run(tmp_path / "s0", 0, effect=2.0), fake_run(tmp_path / "s1", 1, effect=2.0)
    two = two.loc[~((two.arm == "random_init") & (two.fraction == 0.5))]  # this cell never ran in split 1
    both = summarize_runs([(one, tmp_path / "s0"), (two, tmp_path / "s1")], n_boot=200, seed=0)
    cell = both["summary"]["t"]["random_init"]["0.5"]
    assert cell["n_splits"] == 1 and both["summary"]["t"]["cmsc"]["0.5"]["n_splits"] == 2
    comp = next(c for c in both["comparisons"]["t"] if c["name"] == "cmsc - random_init at 50%")
    first = summarize_runs([(one, tmp_path / "s0")], n_boot=200, seed=0)["summary"]["t"]
    assert comp["n_splits"] == 1  # split 0 only: the pair's difference there, not a mix of splits
    assert comp["estimate"] == pytest.approx(first["cmsc"]["0.5"]["estimate"] - first["random_init"]["0.5"]["estimate"])
    other = next(c for c in both["comparisons"]["t"] if c["name"] == "cmsc - random_init at 10%")
    assert other["n_splits"] == 2 and other["sigma_between"] >= 0
    full = both["summary"]["t"]["cmsc"]["1"]
    assert full["few_positives"] is False and full["class_patients"] == 12 and full["degenerate"] is False
    assert full["n_redrawn"] == both["bootstrap"]["n_redrawn"]["t"] and full["sigma_between"] >= 0
    small = summarize_runs([(fake_run(tmp_path / "s2", 2, effect=2.0, n_pat=12), tmp_path / "s2")], n_boot=200)
    assert small["summary"]["t"]["cmsc"]["1"]["few_positives"] is True  # 6 patients per class


def test_a_test_set_too_small_for_the_class_rule_gets_t_intervals_that_say_why(tmp_path):
    from ssl_ecg.evaluate.curve import summarize_runs

    tiny = fake_run(tmp_path / "s3", 3, effect=2.0, n_pat=4)  # 2 patients per class: below MIN_CLASS_PATIENTS
    res = summarize_runs([(tiny, tmp_path / "s3")], n_boot=50)
    assert "no class has 3 or more test patients on each side" in res["bootstrap"]["failed"]["t"]
    cell = res["summary"]["t"]["cmsc"]["1"]
    assert cell["interval"].startswith("t over seeds (no patient bootstrap: test_sets[0]: no class has 3")
    rows = tiny[(tiny.arm == "cmsc") & (tiny.fraction == 1.0)]["value"]
    assert cell["estimate"] == pytest.approx(rows.mean()) and res["comparisons"]["t"] == []
    loose = summarize_runs([(tiny, tmp_path / "s3")], n_boot=50, min_class_patients=1)
    assert loose["bootstrap"]["failed"] == {} and loose["summary"]["t"]["cmsc"]["1"]["class_patients"] == 2


def test_summarize_runs_names_missing_columns():
    from ssl_ecg.errors import ConfigError
    from ssl_ecg.evaluate.curve import summarize_runs

    with pytest.raises(ConfigError, match=r"runs\[0\]: curve rows lack column\(s\) \['arm', 'seed'\]"):
        summarize_runs([(pd.DataFrame({"task": ["t"], "fraction": [1.0], "value": [0.5]}), None)])


def test_labels_needed_is_paired_a_line_equal_to_the_reference_reaches_it_in_every_replicate(tmp_path):
    """At the fraction where cmsc's predictions are random init's at 100% (same scores, same patients), the paired
    difference is 0 in every replicate, so every replicate has reached the target by then, even with two splits
    whose cells are widened by their own between-split variance."""
    from ssl_ecg.evaluate.curve import summarize_runs

    runs = []
    for split in (0, 1):
        folder = tmp_path / f"s{split}"
        frame = fake_run(folder, split, effect=0.1 + 2.0 * split)  # the splits disagree: sigma_b > 0
        ref = frame[(frame.arm == "random_init") & (frame.fraction == 1.0)]
        for _, row in ref.iterrows():  # cmsc at 50% := random init at 100%, predictions included
            mask = (frame.arm == "cmsc") & (frame.fraction == 0.5) & (frame.seed == row.seed)
            (folder / f"{frame.loc[mask, 'fingerprint'].item()}.npz").write_bytes(
                (folder / f"{row.fingerprint}.npz").read_bytes())
            frame.loc[mask, "value"] = row.value
        runs.append((frame, folder))
    res = summarize_runs(runs, n_boot=300, seed=0)
    needed = res["labels_needed"]["t"]["bootstrap"]["cmsc"]
    shares = {float(f): v for f, v in needed["shares"].items()}
    assert needed["never"] == 0 and shares.get(1.0, 0) == 0, needed
    assert sum(v for f, v in shares.items() if f <= 0.5) == pytest.approx(1.0)
