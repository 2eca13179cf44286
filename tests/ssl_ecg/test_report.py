"""ssl-ecg report: block recipes, the headline verdict, and a --quick run that writes RESULTS.md."""

from pathlib import Path

import pytest
import yaml

from ssl_ecg.cli import main
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.runner import EvalConfig
from ssl_ecg.pretrain.run import PretrainConfig
from ssl_ecg.recipe import load_recipe
from ssl_ecg.report import ReportBlock, headline, load_blocks, run_report

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
    for block in blocks:
        curve = load_recipe(EvalConfig, block.path(block.curve), dict(block.curve_overrides))
        for method, recipe in {**block.methods, **block.full_methods}.items():
            pre = load_recipe(PretrainConfig, block.path(recipe), dict(block.pretrain_overrides))
            where = f"{block.name}/{method}"
            assert pre.method == method, where
            assert pre.dataset == curve.dataset and pre.fs == curve.fs, where
            assert pre.split == block_split(curve, pre), where
            assert pre.segment_len == curve.window, f"{where}: the encoder's input is the curve's window"
            assert pre.monitor_label is None, f"{where}: an online label monitor would show the encoder labels"
        assert curve.split is None, f"{block.name}: the curve must use the encoders' own split"


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


def _comparison(a, b, est, lo, hi):
    return {"a": a, "b": b, "estimate": est, "ci_low": lo, "ci_high": hi, "p_holm": 0.5, "verdict": "v"}


def test_headline_answers_from_the_paired_interval():
    summary = {"comparisons": {"lad": [
        _comparison(["cmsc", 0.1], ["supervised", 1.0], 0.05, 0.01, 0.09),
        _comparison(["simclr", 0.1], ["supervised", 1.0], -0.05, -0.09, -0.01),
        _comparison(["byol", 0.1], ["supervised", 1.0], 0.01, -0.02, 0.04),
        _comparison(["cmsc", 0.1], ["supervised", 0.1], 0.2, 0.1, 0.3),  # same fraction: not the headline
        _comparison(["cmsc", 1.0], ["supervised", 1.0], 0.0, -0.1, 0.1),
    ]}}
    lines = headline(summary, "lad")
    assert len(lines) == 3
    assert "cmsc at 10% vs supervised at 100%" in lines[0] and "yes, and it is better" in lines[0]
    assert "simclr" in lines[1] and "no, it is worse" in lines[1]
    assert "byol" in lines[2] and "not distinguishable" in lines[2]
    assert headline({"comparisons": {}}, "lad") == []


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
