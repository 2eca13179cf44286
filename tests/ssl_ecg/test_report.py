"""ssl-ecg report: block recipes, the headline verdict, and a --quick run that writes RESULTS.md."""

import json
from pathlib import Path

import pytest
import yaml

from ssl_ecg.cli import main
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.reduced_leads import ReducedLeadsConfig
from ssl_ecg.evaluate.runner import EvalConfig, FewShotConfig
from ssl_ecg.pretrain.run import PretrainConfig
from ssl_ecg.recipe import load_recipe
from ssl_ecg.report import ReportBlock, describe_pool, headline, load_blocks, render_results, run_report

RESULTS = Path(__file__).resolve().parents[2] / "experiments" / "results"


def _block(folder: Path, name: str = "b", **fields) -> Path:
    (folder / "recipes").mkdir(exist_ok=True)
    (folder / "recipes" / "pre.yaml").write_text("method: cmsc\n")
    (folder / "recipes" / "curve.yaml").write_text("tasks: [lad]\n")
    body = {"name": name, "curve": "recipes/curve.yaml", "methods": {"cmsc": "recipes/pre.yaml"}, **fields}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_bundled_blocks_parse_and_agree_with_their_recipes():
    blocks = load_blocks(RESULTS, full=True)
    assert {"ludb", "ptbxl"} <= {b.name for b in blocks}
    assert {b.name for b in load_blocks(RESULTS)} >= {"ludb", "ptbxl"}  # the core grid
    kinds = {b.name: (b.kind, b.tier) for b in blocks}
    assert kinds["reduced_leads_ptbxl"] == ("reduced_leads", "full")
    assert kinds["transfer_ludb"] == ("transfer", "full")
    assert kinds["fewshot_mitdb"] == ("fewshot", "full")
    assert kinds["cinc2021"] == ("curve", "full")
    for block in blocks:
        if block.kind == "fewshot":
            _check_fewshot_block(block)
            continue
        cls = ReducedLeadsConfig if block.kind == "reduced_leads" else EvalConfig
        curve = load_recipe(cls, block.path(block.curve), dict(block.curve_overrides))
        for method, recipe in {**block.methods, **block.full_methods}.items():
            pre = load_recipe(PretrainConfig, block.path(recipe), dict(block.pretrain_overrides))
            where = f"{block.name}/{method}"
            assert pre.method == method, where
            assert pre.fs == curve.fs, where
            if block.kind == "transfer":  # a pool of 12-lead datasets; the curve on a dataset outside it
                members = [m["dataset"] for m in pre.dataset]
                assert len(members) >= 2 and curve.dataset not in members, where
                assert set(members) - {"ptbxl", "ludb", "mitdb"} <= set(block.data_folders), where
            else:
                assert pre.dataset == curve.dataset, where
                assert pre.split == block_split(curve, pre), where
            assert pre.segment_len == curve.window, f"{where}: the encoder's input is the curve's window"
            assert pre.monitor_label is None, f"{where}: an online label monitor would show the encoders labels"
        assert curve.split is None, f"{block.name}: the curve must use the encoders' own split"
    cinc = next(b for b in blocks if b.name == "cinc2021")
    curve = load_recipe(EvalConfig, cinc.path(cinc.curve), {})
    assert curve.dataset == "cinc2021" and curve.tasks == ["scored"]  # scored: the 2021 challenge classes
    assert cinc.data_folders == {"cinc2021": "cinc2021_sample"}


def _check_fewshot_block(block: ReportBlock) -> None:
    fewshot = load_recipe(FewShotConfig, block.path(block.curve), dict(block.curve_overrides))
    assert fewshot.dataset == "mitdb" and fewshot.random_init
    for method, recipe in block.methods.items():
        pre = load_recipe(PretrainConfig, block.path(recipe), dict(block.pretrain_overrides))
        assert pre.method == method and pre.dataset == "mitdb" and pre.pool == "DS1", method
        assert (pre.fs, pre.segment_len, pre.leads) == (fewshot.fs, fewshot.window, fewshot.leads), method


def block_split(curve: EvalConfig, pre: PretrainConfig):
    """The split the curve will evaluate on: the encoders' own, i.e. the pretraining recipe's."""
    return pre.split


def test_block_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="results folder not found"):
        load_blocks(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no block recipes"):
        load_blocks(tmp_path)
    _block(tmp_path, "a")
    assert [b.name for b in load_blocks(tmp_path)] == ["a"]
    with pytest.raises(ConfigError, match=r"--block: \['zz'\] are not blocks"):
        load_blocks(tmp_path, only=["zz"])
    _block(tmp_path, "b", methods={"cmsc": "nope.yaml"})
    with pytest.raises(ConfigError, match="recipe 'nope.yaml' not found"):
        load_blocks(tmp_path)
    (tmp_path / "b.yaml").unlink()
    _block(tmp_path, "c", methods={"random_init": "recipes/pre.yaml"})
    with pytest.raises(ConfigError, match="the curve's own arms"):
        load_blocks(tmp_path)
    (tmp_path / "c.yaml").unlink()
    _block(tmp_path, "d", split_seeds=[0, 0])
    with pytest.raises(ConfigError, match="distinct"):
        load_blocks(tmp_path)
    (tmp_path / "d.yaml").unlink()
    _block(tmp_path, "e", tier="sometimes")
    with pytest.raises(ConfigError, match="tier"):
        load_blocks(tmp_path)
    (tmp_path / "e.yaml").unlink()
    _block(tmp_path, "f", tier="full")
    assert [b.name for b in load_blocks(tmp_path)] == ["a"] and len(load_blocks(tmp_path, full=True)) == 2
    assert [b.name for b in load_blocks(tmp_path, only=["f"])] == ["f"]


def test_cli_report_errors_exit_2(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results folder not found" in err[0]
    _block(tmp_path, "a")
    assert main(["report", "--results", str(tmp_path), "--n-boot", "0"]) == 2
    assert "n_boot=0" in capsys.readouterr().err


def _comparison(a, b, est, lo, hi, p_holm=0.5, **extra):
    return {"a": a, "b": b, "estimate": est, "ci_low": lo, "ci_high": hi, "p": p_holm / 5, "p_holm": p_holm,
            "verdict": f"{a[0]} - {b[0]}", **extra}


def test_headline_answers_from_the_holm_adjusted_p():
    summary = {"comparisons": {"lad": [
        _comparison(["cmsc", 0.1], ["supervised", 1.0], 0.05, 0.01, 0.09, p_holm=0.01),
        _comparison(["simclr", 0.1], ["supervised", 1.0], -0.05, -0.09, -0.01, p_holm=0.02),
        _comparison(["byol", 0.1], ["supervised", 1.0], 0.01, -0.02, 0.04, p_holm=0.6),
        # the unadjusted interval excludes 0, but Holm's p does not reach 0.05: the answer must follow Holm
        _comparison(["cmsmlc", 0.1], ["supervised", 1.0], 0.04, 0.002, 0.08, p_holm=0.09),
        _comparison(["cmsc", 0.1], ["supervised", 0.1], 0.2, 0.1, 0.3),  # same fraction: not the headline
        _comparison(["cmsc", 1.0], ["supervised", 1.0], 0.0, -0.1, 0.1),
    ]}}
    lines = headline(summary, "lad")
    assert len(lines) == 4
    assert "cmsc at 10% vs supervised at 100%" in lines[0] and "yes, and it is better" in lines[0]
    assert "simclr" in lines[1] and "no, it is worse" in lines[1]
    assert "byol" in lines[2] and "not distinguishable" in lines[2]
    assert "cmsmlc" in lines[3] and "not distinguishable" in lines[3] and "better" not in lines[3]
    assert "+0.040 [+0.002, +0.080] (unadjusted interval), Holm p=0.09" in lines[3]
    assert all("Holm-adjusted over the 6 comparisons of family *all of lad*" in line for line in lines)
    assert headline({"comparisons": {}}, "lad") == []


def test_headline_names_the_family_and_its_size():
    fam = {"family": "vs supervised at 100%", "family_size": 3, "correction": "Holm"}
    summary = {"comparisons": {"lad": [
        _comparison(["cmsc", 0.1], ["supervised", 1.0], 0.05, 0.01, 0.09, p_holm=0.049, **fam),
        _comparison(["byol", 0.1], ["supervised", 1.0], 0.05, 0.01, 0.09, p_holm=0.05, **fam),
        _comparison(["cmsc", 0.1], ["random_init", 0.1], 0.1, 0.05, 0.2, p_holm=0.01, family="vs random init",
                    family_size=12),
    ]}}
    lines = headline(summary, "lad")
    assert len(lines) == 2
    assert "yes, and it is better" in lines[0] and "3 comparisons of family *vs supervised at 100%*" in lines[0]
    assert "not distinguishable" in lines[1]  # p = 0.05 is not below 0.05


@pytest.mark.slow
def test_quick_report_writes_results_and_resumes(tmp_path, real_dataset):
    real_dataset("ludb")
    out = tmp_path / "RESULTS.md"
    first = run_report(RESULTS, runs=tmp_path / "runs", out=out, quick=True, n_boot=50, only=["ludb"])
    text = out.read_text()
    assert "smoke test on tiny settings: NOT results" in text
    assert "### lad" in text and "| cmsc |" in text and "| random_init |" in text and "| supervised |" in text
    assert "hierarchical bootstrap (50 replicates" in text
    assert "vs supervised at 100%" in text  # the headline question, answered from the paired interval
    assert "**pclr**" in text and "in `--full` only" in text  # what is not in the table, and why
    figures = tmp_path / "RESULTS_figures"
    for name in ("ludb_curve.png", "ludb_differences.png"):
        assert (figures / name).stat().st_size > 1000
        assert f"](RESULTS_figures/{name})" in text
    (split,) = first["blocks"][0]["splits"]
    assert split["seed"] == 0 and len(split["curve"]) > 0
    encoder = tmp_path / "runs" / "ludb" / "split0" / "cmsc" / "encoder.pt"
    curve_csv = split["out"] / "curve.csv"
    stamps = encoder.stat().st_mtime_ns, curve_csv.stat().st_mtime_ns
    again = run_report(RESULTS, runs=tmp_path / "runs", out=out, quick=True, n_boot=50, only=["ludb"])
    assert (encoder.stat().st_mtime_ns, curve_csv.stat().st_mtime_ns) == stamps  # resumed: nothing recomputed
    assert again["blocks"][0]["splits"][0]["curve"]["value"].tolist() == split["curve"]["value"].tolist()


def test_report_block_defaults():
    block = ReportBlock(name="x", curve="c.yaml")
    assert block.split_seeds == [0, 1, 2] and block.tier == "core"


def _one_line_error(folder: Path, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        load_blocks(folder)
    assert "\n" not in str(info.value)


def test_block_kind_mismatch_and_missing_fields_are_one_line(tmp_path):
    _block(tmp_path, "a", kind="fewshot")  # a curve recipe (tasks) is not a FewShotConfig
    _one_line_error(tmp_path, r"kind 'fewshot' takes a FewShotConfig as its curve recipe .*tasks")
    (tmp_path / "a.yaml").unlink()
    _block(tmp_path, "b", kind="histogram")
    _one_line_error(tmp_path, "kind")
    (tmp_path / "b.yaml").unlink()
    _block(tmp_path, "c", kind="transfer")  # the method pretrains on one dataset, not a pool
    _one_line_error(tmp_path, r"kind 'transfer': method 'cmsc' .* pretrains on 'ludb'; expected a pool")
    (tmp_path / "c.yaml").unlink()
    (tmp_path / "recipes" / "pool.yaml").write_text(yaml.safe_dump(
        {"method": "cmsc", "dataset": [{"dataset": "ludb"}, {"dataset": "ptbxl"}]}))
    _block(tmp_path, "d", kind="transfer", methods={"cmsc": "recipes/pool.yaml"})  # curve on LUDB, in the pool
    _one_line_error(tmp_path, r"holds the curve's dataset 'ludb'")
    (tmp_path / "d.yaml").unlink()
    (tmp_path / "recipes" / "fewshot.yaml").write_text("dataset: mitdb\nshots: [1]\n")
    _block(tmp_path, "e", kind="fewshot", curve="recipes/fewshot.yaml", quick_tasks=["lad"])
    _one_line_error(tmp_path, "quick_tasks: a fewshot block has no tasks")
    (tmp_path / "e.yaml").unlink()
    (tmp_path / "f.yaml").write_text(yaml.safe_dump({"name": "f", "methods": {}}))  # no curve recipe
    _one_line_error(tmp_path, "curve")
    (tmp_path / "f.yaml").unlink()
    _block(tmp_path, "g", kind="fewshot", curve="recipes/fewshot.yaml")
    assert load_blocks(tmp_path)[0].kind == "fewshot"


def _done(block: ReportBlock, **split) -> dict:
    return {"block": block, "splits": [{"seed": 0, **split}], "failed": {}, "pretrain_seconds": {"cmsc": [60.0]},
            "curve_seconds": [30.0], "summary": None}


def test_fewshot_section_has_a_table_per_k_and_scoring_method(tmp_path):
    cell = {"accuracy": (0.5, 0.25, 0.75), "macro_f1": (0.4, 0.125, 0.625), "n_patients": 7}
    results = {"cmsc": {"1-shot": {"siamese": cell, "cosine": {**cell, "accuracy": (0.9, 0.8, 1.0)},
                                   "fingerprint": "abc"}},
               "random_init": {"1-shot": {"siamese": {**cell, "accuracy": (0.3, 0.1, 0.5)}, "cosine": cell,
                                          "fingerprint": "def"}}}
    block = ReportBlock(name="fs", curve="c.yaml", kind="fewshot", title="Few-shot")
    text = render_results([_done(block, results=results, scoring={"siamese": "as trained", "cosine": "baseline"},
                                 patients_rule="mitdb DS1 head / DS2 episodes", head_patients=21,
                                 episode_patients=21, items=900, allow_flags=None,
                                 setting={"ways": 3, "shots": [1], "queries": 5, "episodes": 200, "head": "bce",
                                          "n_boot": 1000})],
                          tmp_path / "figs", wall_seconds=60, quick=False, full=True, n_boot=10, seed=0)
    assert "### 1-shot, siamese (as trained)" in text and "### 1-shot, cosine (baseline)" in text
    siamese = text[text.index("### 1-shot, siamese"):text.index("### 1-shot, cosine")]
    assert "| cmsc | 0.500 [0.250, 0.750] | 0.400 [0.125, 0.625] | 7 |" in siamese
    assert "| random_init | 0.300 [0.100, 0.500] |" in siamese
    assert "| cmsc | 0.900 [0.800, 1.000] |" in text[text.index("### 1-shot, cosine"):]
    assert "| fingerprint |" not in text and "21 head and 21 episode patients" in text


@pytest.mark.slow
def test_quick_transfer_block_writes_pools_and_overlap(tmp_path, real_dataset, monkeypatch):
    """A --quick transfer block: CMSC on the CinC 2021 + CPSC 2018 samples (one 12-lead pool at 100 Hz), its
    curve on LUDB on a split the runner draws, since the encoder's split holds no LUDB patient."""
    real_dataset("ludb")
    data = real_dataset("cinc2021_sample").parent
    real_dataset("cpsc2018_sample")
    monkeypatch.setenv("SSL_ECG_DATA", str(data))
    (tmp_path / "recipes").mkdir()
    pool = yaml.safe_load((RESULTS / "recipes" / "pool12_cmsc.yaml").read_text())
    pool["dataset"] = pool["dataset"][1:]  # the two samples only: seconds, not minutes
    pool["cache_dir"] = str(Path.cwd() / "cache")
    (tmp_path / "recipes" / "pool.yaml").write_text(yaml.safe_dump(pool))
    (tmp_path / "recipes" / "curve.yaml").write_text(
        (RESULTS / "recipes" / "ludb_curve.yaml").read_text() + f"cache_dir: {Path.cwd() / 'cache'}\n")
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({
        "name": "t", "kind": "transfer", "methods": {"cmsc": "recipes/pool.yaml"}, "curve": "recipes/curve.yaml",
        "curve_overrides": {"supervised": False, "feature_arm": False}, "quick_tasks": ["lad"],
        "data_folders": {"cinc2021": "cinc2021_sample", "cpsc2018": "cpsc2018_sample"}}))
    out = tmp_path / "RESULTS.md"
    done = run_report(tmp_path, runs=tmp_path / "runs", out=out, quick=True, n_boot=20)
    text = out.read_text()
    (split,) = done["blocks"][0]["splits"]
    assert split["split_source"].startswith("drawn")  # the pool's split has no LUDB patient
    pools = split["pools"]["cmsc"]
    assert pools["members"] == {"cinc2021": {"records": 50, "patients": 50},
                                "cpsc2018": {"records": 10, "patients": 10}}  # pool: all; record ids as patients
    assert pools["pairs"] == [{"a": "cinc2021", "b": "cpsc2018", "patients": 0, "fingerprints": 0}]
    check = split["provenance"]["cmsc"]["overlap"]
    assert check["by_patient"] == 0 and check["by_fingerprint"] == 0 and check["evaluated_patients"] == 40
    assert "### Pretraining pools and their overlap" in text
    assert "cinc2021 50 records / 50 patients, cpsc2018 10 records / 10 patients" in text
    assert "0 by patient key and 0 by signal fingerprint of 40 test patients" in text
    assert "### lad" in text and "| cmsc |" in text and "| random_init |" in text
    again = describe_pool(load_recipe(PretrainConfig, tmp_path / "recipes" / "pool.yaml",
                                      {"dataset": [{"dataset": "cinc2021", "root": str(data / "cinc2021_sample")},
                                                   {"dataset": "cpsc2018", "root": str(data / "cpsc2018_sample")}]}),
                          tmp_path / "runs" / "t" / "split0" / "cmsc")
    assert again == pools


def _cell(mean, lo, hi, **flags):
    return {"mean": mean, "estimate": mean, "ci_low": lo, "ci_high": hi, "n_splits": 2, "real_fraction": 0.1,
            **flags}


def test_a_flag_on_every_cell_for_one_reason_is_one_footnote():
    from ssl_ecg.report import _table

    few = dict(few_positives=True, class_patients=9)
    every = _table({"cmsc": {"0.1": _cell(0.7, 0.6, 0.8, **few), "1": _cell(0.8, 0.7, 0.9, **few)},
                    "supervised": {"0.1": _cell(0.6, 0.5, 0.7, **few), "1": _cell(0.9, 0.8, 1.0, **few)}})
    assert every[-1].startswith("† few patients on a class's smaller side of the test set: the AUROC is unstable "
                                "and its interval can under-cover")
    assert every[-1].endswith(": every cell (9 patients on a class's smaller side).")
    mixed = _table({"cmsc": {"0.1": _cell(0.7, 0.6, 0.8, **few), "1": _cell(0.8, 0.7, 0.9)},
                    "supervised": {"0.1": _cell(0.6, 0.5, 0.7, few_positives=True, class_patients=3),
                                   "1": _cell(0.9, 0.8, 1.0, **few)}})
    assert mixed[-1].endswith(": cmsc at 10%, supervised at 100% (9 patients on a class's smaller side); "
                              "supervised at 10% (3 patients on a class's smaller side).")
    one = _table({"cmsc": {"0.1": _cell(0.7, 0.6, 0.8, few_positives=True, class_patients=1)}})
    assert one[-1].endswith(": every cell (1 patient on a class's smaller side).")


def test_render_shows_cell_flags_families_validation_patients_and_times(tmp_path):
    fam = {"family": "lad: vs supervised", "family_size": 2, "p_min": 0.0099, "p_holm_min": 0.0198}
    summary = {"summary": {"lad": {
        "cmsc": {"0.1": _cell(0.7, 0.6, 0.8, few_positives=True, class_patients=3, sigma_between=0.0412),
                 "1": _cell(1.0, 1.0, 1.0, degenerate=True, sigma_between=0.0)},
        "supervised": {"0.1": _cell(0.6, 0.5, 0.7, n_splits=1),
                       "1": _cell(0.8, 0.7, 0.9, patient_se=0.0412, delong_se=0.0398)}}},
        "comparisons": {"lad": [
            _comparison(["cmsc", 0.1], ["supervised", 1.0], -0.1, -0.2, -0.01, p_holm=0.2, **fam),
            _comparison(["cmsc", 0.1], ["supervised", 0.1], 0.1, 0.01, 0.2, p_holm=0.03, **fam)]},
        "bootstrap": {"n_boot": 50, "n_redrawn": {"lad": 7}, "correction": "Holm (statsmodels) within each family",
                      "min_class_patients": 3,
                      "classes": {"lad": [{"scored": 2, "dropped": 1}, {"scored": 3, "dropped": 0}]}}}
    block = ReportBlock(name="b", curve="c.yaml", title="B", not_applicable={"pclr": "one record per patient"})
    done = {"block": block, "summary": summary, "pretrain_seconds": {"cmsc": [120.0, 240.0]},
            "curve_seconds": [60.0, 60.0], "failed": {"byol": {"reason": "DatasetError: no", "seeds": [1]}},
            "splits": [{"seed": 0, "val_patients": {"lad": 40}}, {"seed": 1, "val_patients": {"lad": 39}}]}
    monkey_figures = tmp_path / "figs"
    import ssl_ecg.report as report

    original = report._figures
    report._figures = lambda *a: []  # the plots are tested elsewhere; this test reads the text
    try:
        text = render_results([done], monkey_figures, wall_seconds=6.0, quick=False, full=True, n_boot=50, seed=0)
        named = render_results([done], monkey_figures, wall_seconds=6.0, quick=False, full=False, n_boot=50, seed=0,
                               only=["b"])
    finally:
        report._figures = original
    assert "Written by `ssl-ecg report --full` (the full grid)" in text
    assert "Written by `ssl-ecg report --block b` (blocks b)" in named
    assert "compute time of the stages (from their records) 8.0 min" in text  # 2 + 4 + 1 + 1 min
    assert "this invocation's wall time 0.1 min" in text
    assert "cmsc 3.0 min" in text and "evaluation 2.0 min in all" in text
    assert "| cmsc | 0.700 [0.600, 0.800]† | 1.000 [1.000, 1.000]‡ |" in text
    assert "Does the pretrained probe at 10% of the labels match supervised training on 100%?" in text  # real 10%
    assert "a replicate that loses every patient of a class is redrawn" in text
    assert "† few patients on a class's smaller side" in text
    assert "cmsc at 10% (3 patients on a class's smaller side)" in text
    assert "‡ degenerate" in text
    assert "| supervised | 0.600 [0.500, 0.700]§ |" in text and "supervised at 10% (1 of 2)" in text
    assert "| *labelled validation patients used for selection (per split)* | 40, 39 | 40, 39 |" in text
    assert "| cmsc | 0.041 | 0.000 |" in text  # between-split SD
    assert "n_redrawn): 7" in text
    assert "Classes scored (at least 3 test patients on each side" in text and "2 of 3, 3 of 3 in the splits" in text
    assert "at least 3 test patients on each side (rarer classes are lost" in text  # the intro states the rule
    assert "adopted after the first version of this report, from the test sets' class counts only" in text
    assert "patient bootstrap / DeLong et al. 1988" in text and "supervised 0.041 / 0.040." in text
    summary["bootstrap"]["failed"] = {"lad": "test_sets[0]: no class has 3 or more test patients on each side"}
    report._figures = lambda *a: []
    try:
        failed = render_results([done], monkey_figures, wall_seconds=6.0, quick=False, full=True, n_boot=50, seed=0)
    finally:
        report._figures = original
    assert ("**No patient bootstrap for this task** (test_sets[0]: no class has 3 or more test patients on each "
            "side): the intervals above are t intervals") in failed
    assert "No patient bootstrap" not in text
    assert "at 10% (in fact 31% of the training patients) of the labels" not in failed
    summary["summary"]["lad"]["cmsc"]["0.1"]["real_fraction"] = 0.31  # rare classes forced into the draw
    report._figures = lambda *a: []
    try:
        forced = render_results([done], monkey_figures, wall_seconds=6.0, quick=False, full=True, n_boot=50, seed=0)
    finally:
        report._figures = original
    assert "Does the pretrained probe at 10% (in fact 31% of the training patients) of the labels match" in forced
    assert ("Family *lad: vs supervised*: 2 comparisons, Holm; the smallest p the bootstrap can give is 0.0099, the "
            "smallest adjusted p 0.02") in text
    assert "not distinguishable (Holm-adjusted over the 2 comparisons of family *lad: vs supervised*" in text
    assert "**byol**: pretraining failed in split seed [1] of [0, 1] (DatasetError: no)" in text
    assert "**pclr**: one record per patient" in text
    assert "not** counted in the fraction" in text


def _fake_stages(monkeypatch, tmp_path, fail: dict[str, set[int]]):
    """run_pretrain raising for (method, seed) in ``fail``, and a run_evaluation that records its encoders."""
    import pandas as pd

    import ssl_ecg.evaluate.runner as runner
    import ssl_ecg.pretrain.run as pretrain
    import ssl_ecg.report as report
    from ssl_ecg.errors import DatasetError

    calls: list[dict] = []

    def run_pretrain(cfg, runs, progress=False):
        if cfg.split_seed in fail.get(cfg.name, set()):
            raise DatasetError(f"{cfg.name}: does not fit\nthe data")
        return {"seconds": 30.0, "reused": True}

    def run_evaluation(cfg, runs, progress=False):
        calls.append({"seed": cfg.split_seed, "encoders": dict(cfg.encoders)})
        out = Path(runs) / "curve"
        out.mkdir(parents=True, exist_ok=True)
        (out / "curve.json").write_text('{"wall_seconds": 5.0}')
        arms = [*cfg.encoders, "byol", "random_init"]  # a stale byol row must be dropped as well
        curve = pd.DataFrame({"task": "lad", "arm": arms, "probe": "logistic", "fraction": 1.0, "seed": 0,
                              "metric": "auroc", "value": 0.5})
        return {"curve": curve, "predictions": None, "out": out, "split_hash": f"h{cfg.split_seed}"}

    monkeypatch.setattr(pretrain, "run_pretrain", run_pretrain)
    monkeypatch.setattr(runner, "run_evaluation", run_evaluation)
    monkeypatch.setattr(report, "validation_patients", lambda cfg, split: {"lad": 40})
    return calls


def test_a_method_failing_in_one_split_is_left_out_of_every_split(tmp_path, monkeypatch):
    from ssl_ecg.report import run_block

    _block(tmp_path, "b", methods={"cmsc": "recipes/pre.yaml", "byol": "recipes/pre.yaml"}, split_seeds=[0, 1])
    (block,) = load_blocks(tmp_path)
    calls = _fake_stages(monkeypatch, tmp_path, {"byol": {1}})
    result = run_block(block, tmp_path / "runs")
    assert result["failed"] == {"byol": {"reason": "DatasetError: byol: does not fit the data", "seeds": [1]}}
    assert [c["encoders"] for c in calls] == [{"cmsc": str(tmp_path / "runs" / "b" / f"split{s}" / "cmsc")}
                                              for s in (0, 1)]  # byol pretrained in split 0, yet left out there
    assert all(set(s["curve"]["arm"]) == {"cmsc", "random_init"} for s in result["splits"])
    assert result["pretrain_seconds"] == {"cmsc": [30.0, 30.0], "byol": [30.0]}  # the runs' records
    assert result["curve_seconds"] == [5.0, 5.0]
    again = run_block(block, tmp_path / "runs")  # a resumed sitting adds its record: reuse never counts as 0
    assert again["curve_seconds"] == [10.0, 10.0] and again["pretrain_seconds"]["cmsc"] == [30.0, 30.0]


@pytest.mark.slow
def test_two_split_seeds_each_evaluated_on_its_own_split(tmp_path, real_dataset):
    """Two split seeds on real LUDB (quick settings): each curve uses its own split, the encoders of seed k are
    evaluated only on split k's test patients, and a method whose pretraining fails is listed and absent."""
    import json

    import numpy as np

    from ssl_ecg.data.prepare import Split

    real_dataset("ludb")
    cache = str(Path.cwd() / "cache")
    (tmp_path / "recipes").mkdir()
    cmsc = yaml.safe_load((RESULTS.parent / "ludb_cmsc.yaml").read_text())
    (tmp_path / "recipes" / "cmsc.yaml").write_text(yaml.safe_dump({**cmsc, "cache_dir": cache}))
    # PCLR needs patients with 2+ records; LUDB has one each, so its pretraining fails
    (tmp_path / "recipes" / "pclr.yaml").write_text(yaml.safe_dump({**cmsc, "method": "pclr", "cache_dir": cache}))
    (tmp_path / "recipes" / "curve.yaml").write_text(
        (RESULTS / "recipes" / "ludb_curve.yaml").read_text() + f"cache_dir: {cache}\n")
    (tmp_path / "two.yaml").write_text(yaml.safe_dump({
        "name": "two", "methods": {"cmsc": "recipes/cmsc.yaml", "pclr": "recipes/pclr.yaml"},
        "curve": "recipes/curve.yaml", "split_seeds": [0, 1], "pretrain_overrides": {"epochs": 1, "max_steps": 2,
                                                                                     "batch_size": 16},
        "curve_overrides": {"tasks": ["lad"], "fractions": [1.0], "seeds": [0], "supervised": False,
                            "feature_arm": False, "probes": ["logistic"]}}))
    out = tmp_path / "RESULTS.md"
    done = run_report(tmp_path, runs=tmp_path / "runs", out=out, n_boot=40)
    text = out.read_text()
    result = done["blocks"][0]
    assert list(result["failed"]) == ["pclr"] and result["failed"]["pclr"]["seeds"] == [0, 1]
    assert "**pclr**: pretraining failed in split seeds [0, 1]" in text and "| pclr |" not in text
    assert "| cmsc |" in text and "| random_init |" in text
    hashes = []
    for seed, split in zip((0, 1), result["splits"]):
        pretrained = json.loads((tmp_path / "runs" / "two" / f"split{seed}" / "cmsc" / "pretrain.json").read_text())
        assert split["split_hash"] == pretrained["split_hash"]  # the curve ran on the encoder's own split
        hashes.append(split["split_hash"])
        test = set(Split.load(Path(split["out"]) / "split.json").patients["test"])
        rows = split["curve"][split["curve"]["arm"] == "cmsc"]
        assert len(rows) > 0
        for fingerprint in rows["fingerprint"]:
            with np.load(Path(split["out"]) / "predictions" / f"{fingerprint}.npz", allow_pickle=False) as z:
                assert set(z["patients"].astype(str)) <= test  # only this split's test patients
        assert split["val_patients"]["lad"] > 0
    assert hashes[0] != hashes[1]  # two split seeds, two patient splits
    assert "labelled validation patients used for selection (per split)" in text


def test_arms_lines_state_each_arms_leads_feature_size_and_budget(tmp_path):
    """RESULTS.md says what each arm is, so a paired difference across architectures is read as one."""
    from ssl_ecg.report import _arms_lines

    def encoder(name, channels, instances, records, passes, seconds):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "encoder.json").write_text(json.dumps({
            "encoder": {"name": "clocs", "in_channels": channels, "embed_dim": 128},
            "pretraining": {"instances": instances, "records": records, "encoder_forward_passes": passes,
                            "seconds": seconds}}))
        return str(folder)

    out = tmp_path / "curve"
    out.mkdir()
    encoders = {"cmsc": encoder("cmsc", 1, 120, 10, 2400, 3.2), "cmsmlc": encoder("cmsmlc", 1, 10, 10, 2400, 2.0),
                "simclr": encoder("simclr", 12, 10, 10, 200, 1.0)}
    (out / "curve.json").write_text(json.dumps({"config": {"encoders": encoders},
                                                "per_lead": {"cmsc": True, "cmsmlc": True, "simclr": False}}))
    text = _arms_lines({"out": str(out), "seed": 4})[-1]
    assert text.startswith("Arms (split seed 4): **cmsc**: clocs on 1 lead, 128-d per lead, probe features 1,536 "
                           "(12 leads concatenated), 2,400 encoder passes in 3 s of pretraining;")
    assert "**cmsmlc**: clocs on 1 lead, 128-d per lead, probe features 1,536 (12 leads concatenated)" in text
    assert "**simclr**: clocs on 12 leads, probe features 128, 200 encoder passes in 1 s of pretraining." in text
    assert "**random_init** and **supervised** take the cmsc architecture" in text
    assert "mixes method and architecture" in text
    assert _arms_lines({"out": str(tmp_path / "missing"), "seed": 0}) == []
    # one encoder and no supervised arm (the transfer block): the sentence says so, and that its comparisons match
    (out / "curve.json").write_text(json.dumps({"config": {"encoders": {"cmsc": encoders["cmsc"]}, "supervised": False},
                                                "per_lead": {"cmsc": True}}))
    alone = _arms_lines({"out": str(out), "seed": 0})[-1]
    assert "**random_init** takes the cmsc architecture (no supervised arm in this block)." in alone
    assert "So cmsc's comparisons with them are matched" in alone and "mixes method" not in alone


def test_a_block_whose_summary_failed_says_so_and_the_rest_renders(tmp_path):
    import ssl_ecg.report as report

    block = ReportBlock(name="tiny", curve="c.yaml", title="Tiny")
    failed = {"block": block, "summary": None, "summary_error": "DatasetError: patients: 9 of 10 replicates lost a "
              "class", "pretrain_seconds": {}, "curve_seconds": [1.0], "failed": {}, "splits": [{"seed": 0}]}
    original = report._figures
    report._figures = lambda *a: []
    try:
        text = render_results([failed], tmp_path / "f", wall_seconds=1.0, quick=False, full=True, n_boot=10, seed=0)
    finally:
        report._figures = original
    assert "## Tiny" in text
    assert ("**No table**: its runs finished, but their summary failed (DatasetError: patients: 9 of 10 replicates "
            "lost a class). No number of this block is reported.") in text


def test_lead_set_methods_are_pretrained_on_each_lead_set_and_evaluated_there(tmp_path, monkeypatch):
    import pandas as pd

    import ssl_ecg.evaluate.reduced_leads as rl
    import ssl_ecg.pretrain.run as pretrain
    from ssl_ecg.errors import DatasetError
    from ssl_ecg.report import _reduced_section, run_block

    _block(tmp_path, "r", kind="reduced_leads", lead_set_methods={"simclr": "recipes/simclr.yaml"}, split_seeds=[0, 1])
    (tmp_path / "recipes" / "simclr.yaml").write_text("method: simclr\n")
    (tmp_path / "recipes" / "curve.yaml").write_text("tasks: [lad]\nlead_sets: [12, [ii, I]]\n")
    (block,) = load_blocks(tmp_path, full=True)
    pretrained, evaluated = [], []

    def run_pretrain(cfg, runs, progress=False):
        pretrained.append((cfg.split_seed, cfg.seed, cfg.name, cfg.leads, cfg.method, Path(runs)))
        if cfg.name == "simclr_leadsII-I" and cfg.split_seed == 1:
            raise DatasetError("simclr: no\ngood")
        return {"seconds": 3.0}

    def run_reduced_leads(cfg, runs, progress=False):
        evaluated.append((cfg.split_seed, dict(cfg.encoders), dict(cfg.lead_set_encoders)))
        out = Path(runs) / cfg.name
        return {"out": out, "table": pd.DataFrame(), "curves": {}, "lead_sets": {}, "per_lead": {},
                "split_hash": "h", "split_source": "encoders", "provenance": {}, "wall_seconds": 1.0}

    monkeypatch.setattr(pretrain, "run_pretrain", run_pretrain)
    monkeypatch.setattr(rl, "run_reduced_leads", run_reduced_leads)
    result = run_block(block, tmp_path / "runs")
    folder = {s: tmp_path / "runs" / "r" / f"split{s}" for s in (0, 1)}
    twelve = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert pretrained == [(s, s, "cmsc", None, "cmsc", folder[s]) for s in (0, 1)] + [
        (s, s, name, leads, "simclr", folder[s]) for s in (0, 1)
        for name, leads in (("simclr_leads12", twelve), ("simclr_leadsII-I", ["I", "II"]))]  # the data's lead order
    # the 2-lead run failed in split 1: left out of both splits; the 12-lead one is evaluated at "12" only
    assert result["failed"] == {"simclr_leadsII-I": {"reason": "DatasetError: simclr: no good", "seeds": [1]}}
    assert evaluated == [(s, {"cmsc": str(folder[s] / "cmsc")},
                          {"12": {"simclr@leadset": str(folder[s] / "simclr_leads12")}}) for s in (0, 1)]
    assert result["pretrain_seconds"] == {"cmsc": [3.0, 3.0], "simclr_leads12": [3.0, 3.0], "simclr_leadsII-I": [3.0]}
    assert [s["lead_set_encoders"] for s in result["splits"]] == [e[2] for e in evaluated]
    with pytest.raises(ConfigError, match="lead_set_methods: pretraining per lead set is for kind 'reduced_leads'"):
        ReportBlock(name="c", curve="c.yaml", lead_set_methods={"simclr": "s.yaml"})
    with pytest.raises(ConfigError, match=r"\['supervised'\] are the curve's own arms"):
        ReportBlock(name="c", curve="c.yaml", kind="reduced_leads", lead_set_methods={"supervised": "s.yaml"})
    row = {"task": "lad", "metric": "auroc", "arm": "simclr@leadset", "lead_set": "12", "n_leads": 12, "leads": "",
           "arm_input": rl.LEAD_SET_INPUT, "fraction": 1.0, "mean": 0.7, "n_seeds": 1}
    lines = _reduced_section({"block": block, "splits": [{"lead_sets": {"12": twelve}, "table": pd.DataFrame([row])}],
                              "summary": {"12": {"summary": {}}}}, tmp_path / "figures")
    assert "**simclr@leadset**: the method pretrained on each lead set's own leads" in lines[1]
