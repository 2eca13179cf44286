"""The command line's failures (issue 17): one line, naming the file or key, and distinct exit codes."""

import errno
import os
from pathlib import Path

import pytest

import ssl_ecg.evaluate.runner
import ssl_ecg.pretrain
from ssl_ecg.cli import main
from ssl_ecg.errors import DatasetError

EXPERIMENTS = Path(__file__).parents[2] / "experiments"


def _one_error_line(capsys, prefix: str) -> str:
    """The single stderr line (asserting there is exactly one and that it starts with ``prefix``)."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


@pytest.fixture
def fake_pretrain(monkeypatch, tmp_path):
    """Replace the training run by a recorder of the config the CLI built."""
    seen = []

    def run_pretrain(cfg, runs="runs", progress=True):
        seen.append((cfg, runs, progress))
        return {"losses": [1.0, 0.5], "records": 4, "seconds": 0.1, "encoder": tmp_path / "encoder.pt"}

    monkeypatch.setattr(ssl_ecg.pretrain, "run_pretrain", run_pretrain)
    return seen


@pytest.fixture
def fake_fewshot(monkeypatch, tmp_path):
    seen = []

    def run_fewshot_recipe(cfg, runs="runs"):
        seen.append(cfg)
        return {"items": 0, "head_patients": 0, "episode_patients": 0, "results": {}, "out": tmp_path}

    monkeypatch.setattr(ssl_ecg.evaluate.runner, "run_fewshot_recipe", run_fewshot_recipe)
    return seen


def _raise_in_evaluation(monkeypatch, exc: BaseException) -> None:
    def run_evaluation(cfg, runs="runs", progress=True):
        raise exc

    monkeypatch.setattr(ssl_ecg.evaluate.runner, "run_evaluation", run_evaluation)


def test_a_config_error_prints_one_line_and_exits_2(capsys):
    assert main(["probe", "seeds=[]", "--quiet"]) == 2
    line = _one_error_line(capsys, "ssl-ecg probe: error: overrides: seeds=[]: expected a list of at least 1 item")
    assert "Traceback" not in line


def test_runs_pointing_to_a_file_is_one_line_naming_it(capsys, tmp_path):
    runs = tmp_path / "runs.txt"
    runs.write_text("not a folder")
    assert main(["probe", "name=x", "--runs", str(runs), "--quiet"]) == 2
    line = _one_error_line(capsys, f"ssl-ecg probe: error: {runs / 'x'}: ")
    assert "expected a folder, but a file is in the way" in line
    assert runs.read_text() == "not a folder"


@pytest.mark.parametrize("code, expected", [
    (errno.EACCES, "expected a file or folder this user may read and write"),
    (errno.EROFS, "expected a writable file system"),
    (errno.ENOSPC, "expected free disk space"),
])
def test_os_errors_from_a_run_are_one_line_naming_the_file(capsys, monkeypatch, code, expected):
    _raise_in_evaluation(monkeypatch, OSError(code, os.strerror(code), "/data/runs/x/curve.csv"))
    assert main(["curve", "--quiet"]) == 2
    line = _one_error_line(capsys, f"ssl-ecg curve: error: /data/runs/x/curve.csv: {os.strerror(code)}; ")
    assert expected in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_runs_folder_is_one_line(capsys, tmp_path):
    runs = tmp_path / "ro"
    runs.mkdir()
    runs.chmod(0o555)
    try:
        assert main(["probe", "name=x", "--runs", str(runs), "--quiet"]) == 2
    finally:
        runs.chmod(0o755)
    assert "Permission denied" in _one_error_line(capsys, f"ssl-ecg probe: error: {runs / 'x'}: ")


def test_a_library_error_with_a_newline_is_printed_on_one_line(capsys, monkeypatch):
    _raise_in_evaluation(monkeypatch, DatasetError("/c/manifest.json: not valid JSON\n(line 1)"))
    assert main(["curve", "--quiet"]) == 2
    assert _one_error_line(capsys, "ssl-ecg curve: error: ").endswith("/c/manifest.json: not valid JSON (line 1)")


def test_a_yaml_error_in_an_override_is_one_line_naming_the_key(capsys):
    assert main(["probe", "seeds=[0, 1", "--quiet"]) == 2
    line = _one_error_line(capsys, "ssl-ecg probe: error: overrides: seeds='[0, 1': expected a YAML value (")
    assert "column" in line


def test_a_broken_recipe_file_is_one_line_naming_it(capsys, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nepochs: [1\n")
    assert main(["pretrain", str(path)]) == 2
    _one_error_line(capsys, f"ssl-ecg pretrain: error: {path}: expected a YAML mapping of recipe keys (")


@pytest.mark.parametrize("where", [0, 1, -1])
def test_debug_anywhere_shows_the_traceback_and_keeps_the_exit_code(capsys, where):
    argv = ["probe", "seeds=[]", "--quiet"]
    argv.insert(where if where >= 0 else len(argv), "--debug")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "ConfigError" in err
    assert err.splitlines()[-1].startswith("ssl-ecg probe: error: overrides: seeds=[]")


def test_an_internal_error_is_one_line_with_its_type_and_exit_1(capsys, monkeypatch):
    _raise_in_evaluation(monkeypatch, ZeroDivisionError("division by zero"))
    assert main(["curve", "--quiet"]) == 1
    line = _one_error_line(capsys, "ssl-ecg curve: error: internal error ZeroDivisionError: division by zero")
    assert line.endswith("(run with --debug for the traceback)")


def test_a_plain_value_error_is_reported_not_raised(capsys, monkeypatch):
    _raise_in_evaluation(monkeypatch, ValueError("could not broadcast input array"))
    assert main(["curve", "--quiet"]) == 1
    _one_error_line(capsys, "ssl-ecg curve: error: internal error ValueError: could not broadcast input array")


def test_ctrl_c_exits_130_with_one_line(capsys, monkeypatch):
    _raise_in_evaluation(monkeypatch, KeyboardInterrupt())
    assert main(["curve", "--quiet"]) == 130
    assert _one_error_line(capsys, "ssl-ecg curve: ") == "ssl-ecg curve: interrupted"


def test_overrides_after_flags_are_accepted(fake_pretrain, tmp_path):
    recipe = EXPERIMENTS / "ludb_cmsc.yaml"
    assert main(["pretrain", str(recipe), "--quiet", "epochs=2", "--runs", str(tmp_path), "lr=1e-3"]) == 0
    (cfg, runs, progress), = fake_pretrain
    assert (cfg.epochs, cfg.lr, cfg.name, runs, progress) == (2, 0.001, "ludb_cmsc", str(tmp_path), False)


def test_overrides_before_and_after_flags_apply_in_order(fake_pretrain):
    recipe = EXPERIMENTS / "ludb_cmsc.yaml"
    assert main(["pretrain", str(recipe), "epochs=2", "batch_size=4", "--quiet", "epochs=3"]) == 0
    cfg = fake_pretrain[0][0]
    assert (cfg.epochs, cfg.batch_size) == (3, 4)


def test_a_recipe_after_a_flag_is_still_the_recipe(fake_fewshot, tmp_path):
    recipe = EXPERIMENTS / "fewshot_ludb.yaml"
    assert main(["fewshot", "--runs", str(tmp_path), str(recipe), "shots=[1]"]) == 0
    cfg, = fake_fewshot
    assert (cfg.name, cfg.shots, cfg.ways) == ("fewshot_ludb", [1], 2)


def test_overrides_alone_after_a_flag(fake_fewshot, tmp_path):
    assert main(["fewshot", "--runs", str(tmp_path), "ways=2", "episodes=5"]) == 0
    cfg, = fake_fewshot
    assert (cfg.name, cfg.ways, cfg.episodes) == ("fewshot", 2, 5)


def test_a_stray_word_after_a_flag_is_rejected(capsys, fake_pretrain):
    assert main(["pretrain", str(EXPERIMENTS / "ludb_cmsc.yaml"), "--quiet", "epochs"]) == 2
    line = _one_error_line(capsys, "ssl-ecg pretrain: error: 'epochs': expected a key=value override or a flag")
    assert "--help" in line and not fake_pretrain


def test_an_unknown_flag_is_rejected(capsys, fake_pretrain):
    assert main(["pretrain", str(EXPERIMENTS / "ludb_cmsc.yaml"), "--epochs=2"]) == 2
    _one_error_line(capsys, "ssl-ecg pretrain: error: unrecognized flag '--epochs=2'")
    assert not fake_pretrain


def test_argparse_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["pretrain", "--quiet"])
    assert info.value.code == 2
    _one_error_line(capsys, "ssl-ecg pretrain: error: the following arguments are required: recipe")


@pytest.mark.parametrize("name", ["../x", "/abs"])
def test_a_name_outside_runs_fails_before_anything_is_written(capsys, tmp_path, name):
    work = tmp_path / "work"
    work.mkdir()
    if name == "/abs":
        name = str(tmp_path / "abs")
    argv = ["pretrain", str(EXPERIMENTS / "ludb_cmsc.yaml"), f"name={name}", f"cache_dir={work / 'cache'}",
            f"root={work / 'no_data'}", "--runs", str(work / "runs")]
    assert main(argv) == 2
    _one_error_line(capsys, f"ssl-ecg pretrain: error: overrides: name={name!r}: expected a string (a simple folder")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["work"]
