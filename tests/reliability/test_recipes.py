"""Recipe validation (issue 17): types, value constraints, YAML 1.2 floats, and run names that stay in runs/."""

import os
from dataclasses import replace
from pathlib import Path

import pytest

from ssl_ecg.demo import load_demo, run_demo
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.reduced_leads import ReducedLeadsConfig
from ssl_ecg.evaluate.runner import EvalConfig, FewShotConfig, run_evaluation, run_fewshot_recipe
from ssl_ecg.paths import run_folder
from ssl_ecg.pretrain import PretrainConfig, run_pretrain
from ssl_ecg.pretrain.distill import DistillConfig
from ssl_ecg.recipe import load_recipe, parse_overrides

EXPERIMENTS = Path(__file__).parents[2] / "experiments"


def _recipe_class(path: Path) -> type:
    """The config class of a bundled recipe, as the CLI and tests/ssl_ecg/pretrain/test_methods.py decide it."""
    if path.name == "demo.yaml":  # names the two recipes below (see ssl_ecg.demo.load_demo)
        return load_demo
    if path.name.startswith("eval_") or path.name == "demo_curve.yaml":
        return EvalConfig
    if path.name.startswith("fewshot_"):
        return FewShotConfig
    if path.name.startswith("distill_"):
        return DistillConfig
    if path.name.startswith("reduced_leads_"):
        return ReducedLeadsConfig
    return PretrainConfig


def _override_error(cls: type, *items: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_recipe(cls, None, parse_overrides(list(items)))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("recipe", sorted(p.name for p in EXPERIMENTS.glob("*.yaml")))
def test_every_bundled_recipe_validates_against_its_config_class(recipe):
    path = EXPERIMENTS / recipe
    cls = _recipe_class(path)
    if cls is load_demo:
        recipes = load_demo(path)
        assert (recipes.pretrain.name, recipes.curve.name) == ("demo_pretrain", "demo_curve")
        return
    cfg = load_recipe(cls, path)
    assert cfg.name == path.stem


def test_a_word_for_an_integer_names_the_key_the_value_and_the_type():
    assert _override_error(PretrainConfig, "epochs=ten") == "overrides: epochs='ten': expected an integer > 0"


def test_exponent_floats_without_a_dot_are_numbers_in_a_recipe_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nlr: 1e-3\nfs: 1E2\nsegment_len: 5e0\n")
    cfg = load_recipe(PretrainConfig, path)
    assert (cfg.lr, cfg.fs, cfg.segment_len) == (0.001, 100.0, 5.0)
    assert isinstance(cfg.lr, float)


def test_exponent_floats_without_a_dot_are_numbers_in_overrides():
    values = parse_overrides(["lr=1e-3", "fs=1E5", "x=-2e-4", "y=+3e2", "name=1e3x"])
    assert values == {"lr": 0.001, "fs": 100000.0, "x": -0.0002, "y": 300.0, "name": "1e3x"}
    assert load_demo(None, parse_overrides(["pretrain.lr=1e-3"])).pretrain.lr == 0.001


@pytest.mark.parametrize("value, shown", [("0", "0"), ("-4", "-4"), ("'16'", "'16'"), ("true", "True"),
                                          ("16.0", "16.0")])
def test_batch_size_must_be_a_positive_integer(value, shown):
    message = _override_error(PretrainConfig, f"batch_size={value}")
    assert message == f"overrides: batch_size={shown}: expected an integer > 0"


def test_negative_epochs_are_rejected_before_training():
    assert _override_error(PretrainConfig, "epochs=-1") == "overrides: epochs=-1: expected an integer > 0"


def test_a_scalar_where_fractions_expects_a_list_is_rejected():
    message = _override_error(EvalConfig, "fractions=0.5")
    assert message.startswith("overrides: fractions=0.5: expected a list of at least 1 item")
    assert "each item a number > 0 and <= 1" in message


@pytest.mark.parametrize("value", ["[0, 0.5]", "[0.5, 1.5]", "[]"])
def test_fractions_must_lie_in_zero_one(value):
    assert _override_error(EvalConfig, f"fractions={value}").startswith("overrides: fractions=")


def test_encoders_as_a_list_is_rejected():
    message = _override_error(EvalConfig, "encoders=[runs/a, runs/b]")
    assert message == "overrides: encoders=['runs/a', 'runs/b']: expected a mapping, each value a string"


def test_empty_seeds_are_rejected():
    message = _override_error(EvalConfig, "seeds=[]")
    assert message == "overrides: seeds=[]: expected a list of at least 1 item, each item an integer >= 0"


@pytest.mark.parametrize("cls, item, expected", [
    (PretrainConfig, "temperature=0", "a number > 0"),
    (PretrainConfig, "lr=-1e-3", "a number > 0"),
    (PretrainConfig, "max_steps=0", "-1 or an integer > 0"),
    (PretrainConfig, "split=[0.5, 0.5, 0.5]", "the shares must sum to 1, got 1.5"),
    (PretrainConfig, "split=officail", "or 'official'"),
    (FewShotConfig, "ways=1", "an integer >= 2"),
    (FewShotConfig, "head=svm", "one of 'bce', 'contrastive'"),
    (EvalConfig, "bad_leads=skip", "one of 'error', 'zero_lead', 'drop_record'"),
])
def test_meaningless_values_are_rejected_with_the_constraint(cls, item, expected):
    key = item.split("=")[0]
    message = _override_error(cls, item)
    assert message.startswith(f"overrides: {key}=") and expected in message


def test_integers_are_accepted_for_float_fields():
    cfg = load_recipe(PretrainConfig, None, {"fs": 250, "lr": 1})
    assert cfg.fs == 250.0 and isinstance(cfg.fs, float) and cfg.lr == 1.0


def test_a_bad_value_in_the_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nbatch_size: '16'\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(PretrainConfig, path, {"epochs": 2})
    assert str(info.value) == f"{path}: batch_size='16': expected an integer > 0"


def test_unknown_keys_stay_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^overrides: unknown keys \['epoch'\]; expected some of"):
        load_recipe(PretrainConfig, None, {"epoch": 3})


def test_a_recipe_that_is_not_yaml_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nseeds: [0, 1\n")
    with pytest.raises(ConfigError, match=rf"^{path}: expected a YAML mapping of recipe keys \(.*line 3"):
        load_recipe(EvalConfig, path)


@pytest.mark.parametrize("cls", [PretrainConfig, EvalConfig, FewShotConfig])
@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "a\\b", ".", "..", "", "x" * 101])
def test_recipes_reject_names_that_leave_the_runs_folder(cls, name):
    with pytest.raises(ConfigError, match=r"^overrides: name=.*expected a string \(a simple folder name"):
        load_recipe(cls, None, {"name": name})


@pytest.mark.parametrize("name", ["ludb_cmsc", "run-1.v2", "..x", "a" * 100])
def test_simple_names_are_folders_inside_runs(tmp_path, name):
    assert run_folder(tmp_path / "runs", name) == tmp_path / "runs" / name
    assert load_recipe(PretrainConfig, None, {"name": name}).name == name


def test_a_link_inside_runs_that_points_outside_is_refused(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "runs" / "link")
    with pytest.raises(ConfigError, match=r"name='link': .* outside the runs folder"):
        run_folder(tmp_path / "runs", "link")


def _run(runner: str, name: str, tmp_path: Path) -> None:
    runs, missing = tmp_path / "runs", str(tmp_path / "no_data")
    if runner == "pretrain":
        run_pretrain(PretrainConfig(name=name, root=missing, cache_dir=str(tmp_path / "cache")), runs=runs,
                     progress=False)
    elif runner == "eval":
        run_evaluation(EvalConfig(name=name, root=missing), runs=runs, progress=False)
    elif runner == "fewshot":
        run_fewshot_recipe(FewShotConfig(name=name, root=missing), runs=runs)
    else:
        recipes = load_demo()
        run_demo(replace(recipes, pretrain=replace(recipes.pretrain, name=name)), data=missing, runs=runs,
                 progress=False)


@pytest.mark.parametrize("runner", ["pretrain", "eval", "fewshot", "demo"])
@pytest.mark.parametrize("name", ["../x", "/abs"])
def test_runners_refuse_names_outside_runs_before_writing_anything(tmp_path, runner, name):
    work = tmp_path / "work"
    work.mkdir()
    if name == "/abs":
        name = str(tmp_path / "abs")  # an absolute path this test may check (and clean)
    with pytest.raises(ConfigError, match=r"^name=.*expected a simple folder name"):
        _run(runner, name, work)
    assert list(work.iterdir()) == []  # no runs/, no cache/
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]  # nothing beside it (../x, abs)
