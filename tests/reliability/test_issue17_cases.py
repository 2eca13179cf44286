"""Issue 17, audit: hostile variants beyond the per-area suites (malformed headers, planted links, YAML bombs,
code-carrying checkpoints, bad dataset roots, empty lead selections) and the fresh-machine skip of real-data tests.

Each test fails if the guarded behaviour regresses: a silently wrong read, a raw exception, or code that runs.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb

from ssl_ecg import load_encoder
from ssl_ecg.checkpoint import save_encoder
from ssl_ecg.cli import main
from ssl_ecg.data import load_index, read_record
from ssl_ecg.data.preprocess import preprocess, select_leads
from ssl_ecg.data.record import Record, read_tolerant
from ssl_ecg.errors import ConfigError, DatasetError, RecordError
from ssl_ecg.models.registry import build_encoder
from ssl_ecg.pretrain import PretrainConfig
from ssl_ecg.recipe import MAX_YAML_CHARS, load_recipe, parse_overrides

REPO = Path(__file__).resolve().parents[2]
DATASETS = ["ptbxl", "ludb", "cinc2020", "cinc2021", "cpsc2018", "chapman", "incart", "mitdb", "cinc2017"]


def _write(folder: Path, name: str, n_leads: int = 2, n: int = 500, fs: float = 250.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sig = np.random.default_rng(0).standard_normal((n, n_leads))
    wfdb.wrsamp(name, fs=fs, units=["mV"] * n_leads, sig_name=["I", "II", "III"][:n_leads], p_signal=sig,
                fmt=["16"] * n_leads, write_dir=str(folder))
    return folder / name


def _edit(path: Path, line: int, old: str, new: str) -> None:
    hea = path.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    assert old in lines[line], (old, lines[line])
    lines[line] = lines[line].replace(old, new, 1)
    hea.write_text("\n".join(lines) + "\n")


def _one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# --- malformed WFDB headers: wfdb silently defaults these -------------------------------------------------------

@pytest.mark.parametrize("old, new, message", [
    (" 250 500", " 250 -500", r"sample count '-500'; expected a non-negative integer"),
    (" 250 500", " -250 500", r"sampling frequency '-250'; expected a positive finite number"),
    (" 250 500", " nan 500", r"sampling frequency 'nan'"),
    (" 250 500", " 1e400 500", r"sampling frequency '1e400'"),
    (" 250 500", " 0 500", r"sampling frequency '0'"),
    (" 250 500", "", r"sampling frequency None"),
    ("r 2 ", "r two ", r"signal count 'two'; expected a non-negative integer"),
])
def test_a_malformed_record_line_is_refused_not_defaulted(tmp_path, old, new, message):
    # wfdb reads -250/nan/missing as 250 Hz, 1e400 as 1 Hz and ignores a negative length
    path = _write(tmp_path, "r")
    _edit(path, 0, old, new)
    with pytest.raises(RecordError, match=rf"r\.hea: line 1: {message}"):
        read_record(path)


def test_a_fractional_and_counter_frequency_still_read(tmp_path):
    path = _write(tmp_path, "r")
    _edit(path, 0, " 250 500", " 250.0/500(0) 500")
    rec = read_record(path)
    assert rec.fs == 250.0 and rec.signal.shape == (2, 500)


def test_a_huge_signal_count_is_refused_without_allocating(tmp_path):
    path = _write(tmp_path, "r")
    _edit(path, 0, "r 2 ", "r 100000000 ")
    with pytest.raises(RecordError, match=r"declares 100000000 signals but has 2 signal lines"):
        read_record(path)


def test_a_huge_sample_count_is_named_as_truncation(tmp_path):
    path = _write(tmp_path, "r")
    _edit(path, 0, " 500", " 99999999999999")
    with pytest.raises(RecordError, match=r"r\.dat: signal file is truncated: 2000 bytes"):
        read_record(path)


@pytest.mark.parametrize("gain", ["1e400", "inf"])
def test_an_infinite_adc_gain_is_refused(tmp_path, gain):
    # an infinite gain would turn every sample into 0 mV
    path = _write(tmp_path, "r")
    hea = path.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    lines[1] = re.sub(r" [\d.]+\(", f" {gain}(", lines[1], count=1)
    hea.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"r\.hea: "):
        read_record(path)


def test_a_nul_filled_header_is_a_record_error(tmp_path):
    path = _write(tmp_path, "r")
    path.with_suffix(".hea").write_bytes(b"\0" * 100)
    with pytest.raises(RecordError, match=r"r\.hea: "):
        read_record(path)


@pytest.mark.parametrize("kind", ["dir", "device"])
def test_a_signal_file_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    path = _write(tmp_path, "r")
    dat = path.with_suffix(".dat")
    dat.unlink()
    if kind == "dir":
        dat.mkdir()
    else:
        os.symlink("/dev/zero", dat)
    with pytest.raises(RecordError, match=r"r\.dat: signal file not found"):
        read_record(path)


# --- planted links -------------------------------------------------------------------------------------------

def _secret(tmp_path: Path) -> Path:
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_bytes(b"password=hunter2\n" * 200)  # big enough to pass the size check
    return secret


def test_a_signal_file_linked_outside_the_record_folder_is_refused(tmp_path):
    path = _write(tmp_path / "ds", "r")
    dat = path.with_suffix(".dat")
    dat.unlink()
    os.symlink(_secret(tmp_path), dat)
    with pytest.raises(RecordError, match=r"r\.dat: signal file is a link to .*secret\.txt, outside the header's "
                                          r"folder"):
        read_record(path)


def test_a_signal_file_linked_to_etc_passwd_is_refused(tmp_path):
    if not Path("/etc/passwd").is_file():
        pytest.skip("no /etc/passwd on this system")
    path = _write(tmp_path, "r", n=1)
    dat = path.with_suffix(".dat")
    dat.unlink()
    os.symlink("/etc/passwd", dat)
    with pytest.raises(RecordError, match=r"outside the header's folder"):
        read_record(path)


def test_the_tolerant_reader_refuses_an_outside_link_too(tmp_path):
    # a CinC 2017 style header (base time and date wfdb rejects) takes the tolerant reader's fallback
    path = _write(tmp_path / "ds", "A00001")
    _edit(path, 0, " 500", " 500 05:05:15 1/05/2000x")
    dat = path.with_suffix(".dat")
    dat.unlink()
    os.symlink(_secret(tmp_path), dat)
    with pytest.raises(RecordError, match=r"outside the header's folder"):
        read_tolerant(path)


def test_linked_dataset_folders_and_side_by_side_links_still_read(tmp_path):
    real = _write(tmp_path / "real", "r")
    os.symlink(tmp_path / "real", tmp_path / "linked")  # the whole folder is a link
    assert read_record(tmp_path / "linked" / "r").signal.shape == (2, 500)
    farm = tmp_path / "farm"  # a subset made of links to one real folder
    farm.mkdir()
    for ext in (".hea", ".dat"):
        os.symlink(real.with_suffix(ext), farm / f"r{ext}")
    np.testing.assert_array_equal(read_record(farm / "r").signal, read_record(real).signal)


# --- recipes: alias bombs, huge files, garbage overrides ---------------------------------------------------------

def _alias_bomb(levels: int = 9) -> str:
    parts = ['&a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    parts += [f"&a{k} [" + ",".join([f"*a{k - 1}"] * 9) + "]" for k in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


@pytest.mark.parametrize("key", ["epochs", "leads", "name", "dataset_options"])
def test_a_billion_laughs_recipe_is_refused_quickly(tmp_path, key):
    # 9^9 values through aliases; before the fix this used 8 GB and never finished
    value = _alias_bomb() if key != "dataset_options" else "{x: " + _alias_bomb() + "}"
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(f"name: x\n{key}: {value}\n")
    with pytest.raises(ConfigError, match=r"bomb\.yaml: .*aliases expand to more than 100000 values"):
        load_recipe(PretrainConfig, recipe)


def test_a_billion_laughs_override_is_refused():
    with pytest.raises(ConfigError, match=r"overrides: epochs=.*aliases expand to more than"):
        parse_overrides([f"epochs={_alias_bomb()}"])


def test_ordinary_anchors_still_work(tmp_path):
    recipe = tmp_path / "anchors.yaml"
    recipe.write_text("name: x\nseed: &s 3\nepochs: *s\nleads: &l [I, II]\n")
    cfg = load_recipe(PretrainConfig, recipe)
    assert cfg.epochs == 3 and cfg.leads == ["I", "II"]


def test_a_huge_recipe_file_is_refused_before_reading(tmp_path, monkeypatch):
    recipe = tmp_path / "big.yaml"
    with recipe.open("w") as f:
        f.write("name: ")
        f.write("x" * (4 * MAX_YAML_CHARS + 10))
    monkeypatch.setattr(Path, "read_text", lambda *a, **k: pytest.fail("the huge recipe was read"))
    with pytest.raises(ConfigError, match=r"big\.yaml: \d+ bytes; expected a recipe of at most"):
        load_recipe(PretrainConfig, recipe)


def test_a_huge_override_value_is_refused_and_not_echoed():
    with pytest.raises(ConfigError) as info:
        parse_overrides(["name=" + "x" * (MAX_YAML_CHARS + 1)])
    assert len(str(info.value)) < 2000 and f"{MAX_YAML_CHARS + 1} characters" in str(info.value)


def test_a_long_bad_value_is_shortened_in_the_message():
    with pytest.raises(ConfigError) as info:
        load_recipe(PretrainConfig, None, {"epochs": "x" * 50_000})
    text = str(info.value)
    assert text.startswith("overrides: epochs='xxx") and len(text) < 1000 and "characters)" in text


@pytest.mark.parametrize("override, needle", [
    ("foo.bar=1", "unknown keys ['foo.bar']"),
    ("epochs={a: [1, {b: 2}]}", "epochs={'a': [1, {'b': 2}]}: expected an integer > 0"),
    ("lr=[1e-3]", "lr=[0.001]: expected a number > 0"),
    ("=3", "'=3': expected key=value"),
    ("epochs=[", "epochs='[': expected a YAML value"),
])
def test_garbage_overrides_are_one_line_cli_errors(capsys, tmp_path, override, needle):
    assert main(["pretrain", str(REPO / "experiments" / "ludb_cmsc.yaml"), override, "--runs",
                 str(tmp_path / "runs")]) == 2
    _one_line_error(capsys, 2, "ssl-ecg pretrain: error: ", needle)
    assert not (tmp_path / "runs").exists()


# --- checkpoints: nothing in encoder.pt/encoder.json may run code or crash raw -----------------------------------

class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def encoder_files(tmp_path):
    path = save_encoder(build_encoder({"name": "clocs"}), tmp_path / "encoder.pt")
    return path, path.read_bytes(), path.with_suffix(".json").read_text()


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_an_encoder_pt_carrying_code_is_refused_and_never_runs(encoder_files, tmp_path, how):
    path = encoder_files[0]
    marker = tmp_path / "PWNED"
    if how == "torch.save":
        torch.save({"weight": _Evil(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(ConfigError, match=r"encoder\.pt: not a weights-only PyTorch state dict \(UnpicklingError\)"):
        load_encoder(path)
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    (b"garbage", r"not a weights-only PyTorch state dict"),
    (None, r"not a weights-only PyTorch state dict \(RuntimeError\)"),  # truncated zip
    ("list", r"holds a list; expected a state dict"),
])
def test_a_damaged_encoder_pt_is_a_config_error(encoder_files, content, message):
    path, good, _ = encoder_files
    if content == "list":
        torch.save([1, 2], path)
    else:
        path.write_bytes(good[:100] if content is None else content)
    with pytest.raises(ConfigError, match=message):
        load_encoder(path)


@pytest.mark.parametrize("content, message", [
    (b"not json", r"expected JSON with an 'encoder' config"),
    (b"\xff\xfe\x00", r"expected JSON with an 'encoder' config \('utf-8' codec"),
    (b'{"encoder": [1]}', r"'encoder' is a list, not a mapping"),
    (b'{"encoder": {"name": 5}}', r"name 5 is unknown"),
    (b'{"encoder": {"name": "resnet1d", "embed_dim": -1}}', r"cannot be built"),
])
def test_a_damaged_encoder_json_is_a_config_error_naming_it(encoder_files, content, message):
    path = encoder_files[0]
    path.with_suffix(".json").write_bytes(content)
    with pytest.raises(ConfigError, match=r"encoder\.json: .*" + message):
        load_encoder(path)


# --- dataset roots, split files, lead selections, CLI arguments ---------------------------------------------------

@pytest.mark.parametrize("name", DATASETS)
def test_a_dataset_root_that_is_a_file_or_empty_is_named(tmp_path, name):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(DatasetError, match=re.escape(str(afile))):
        load_index(name, afile)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=re.escape(str(empty))):
        load_index(name, empty)


def test_cache_build_on_an_empty_folder_is_one_line(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(["cache", "build", "--dataset", "mitdb", "--root", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "cache")]) == 2
    _one_line_error(capsys, 2, "ssl-ecg cache build: error: ", str(tmp_path / "empty"))


@pytest.mark.parametrize("content, message", [
    (b"not json", "not valid JSON"), (b"[]", "expected a JSON object"), (b"{}", "missing fields"),
    (b"\xff\xfe", "cannot read the split file"),
])
def test_a_split_json_that_is_not_a_split_is_named(tmp_path, content, message):
    from ssl_ecg.data.prepare import Split

    (tmp_path / "split.json").write_bytes(content)
    with pytest.raises(DatasetError, match=r"split\.json: .*" + message):
        Split.load(tmp_path)


def test_selecting_zero_leads_is_refused():
    rec = Record(signal=np.ones((2, 100), np.float32), fs=100.0, leads=["I", "II"], record_id="r",
                 patient_id="p", path="/x/r")
    with pytest.raises(RecordError, match=r"/x/r: leads: an empty selection"):
        select_leads(rec, [])
    with pytest.raises(RecordError, match=r"an empty selection"):
        preprocess(rec, fs=100.0, leads=())


@pytest.mark.parametrize("args, needle", [
    (["--source-fs", "abc"], "argument --source-fs: invalid int value: 'abc'"),
    (["--leads", ","], "CacheParams.leads"),
    (["--fs", "nan"], "CacheParams.fs"),
])
def test_bad_cache_arguments_are_one_line_exit_2(capsys, tmp_path, args, needle):
    (tmp_path / "ds").mkdir()
    argv = ["cache", "build", "--dataset", "ludb", "--root", str(tmp_path / "ds"), "--out", str(tmp_path / "c"), *args]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors exit through the parser
        code = exc.code
    assert code == 2
    _one_line_error(capsys, 2, needle)


# --- "Also": a fresh clone without the bundled data skips the real-data tests, saying why -------------------------

@pytest.mark.parametrize("value", ["", None])
def test_real_data_recipe_tests_skip_with_a_reason_without_the_data(value):
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_ECG_DATA", "SSL_ECG_REQUIRE_DATA")}
    if value is not None:
        env["SSL_ECG_DATA"] = value  # what `make test` exports
    env["WANDB_MODE"] = "disabled"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/ssl_ecg/pretrain/test_methods.py", "-q", "-rs", "-p",
         "no:cacheprovider", "-k", "test_bundled_recipes_run_on_the_real_data"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert re.search(r"\b(\d+) skipped", out.stdout) and " passed" not in out.stdout and "failed" not in out.stdout
    assert "needed: set SSL_ECG_DATA" in out.stdout
