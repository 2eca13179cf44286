"""12-lead -> lead II distillation end to end on synthetic LUDB-layout records: provenance, frozen teacher, re-runs."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb

from ssl_ecg.checkpoint import load_encoder, load_provenance
from ssl_ecg.data.prepare import Split
from ssl_ecg.errors import ConfigError, LeakageError
from ssl_ecg.evaluate.embed import state_dict_hash
from ssl_ecg.evaluate.provenance import check_labels, check_overlap
from ssl_ecg.evaluate.runner import EvalConfig, evaluation_inputs
from ssl_ecg.pretrain import PretrainConfig, run_pretrain
from ssl_ecg.pretrain.distill import DistillConfig, run_distill
from ssl_ecg.pretrain.run import _sha256
from ssl_ecg.recipe import load_recipe

LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
N_RECORDS = 20


def _ecg(n: int, fs: float, seed: int, lad: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    hr = rng.uniform(55, 95)
    phase = (t % (60.0 / hr)) * hr / 60.0
    wave = np.exp(-((phase - 0.3) ** 2) / (2 * 0.012**2)) + 0.3 * np.exp(-((phase - 0.6) ** 2) / (2 * 0.05**2))
    gains = rng.uniform(0.5, 1.5, (12, 1)) * (np.where(np.arange(12) == 1, -1, 1)[:, None] if lad else 1)
    return gains * wave + 0.05 * rng.standard_normal((12, n))


@pytest.fixture(scope="module")
def ludb(tmp_path_factory) -> Path:
    """A LUDB-layout folder: 20 ten-second 12-lead records at 500 Hz, one patient each, half with LAD."""
    root = tmp_path_factory.mktemp("ludb")
    (root / "data").mkdir()
    for i in range(1, N_RECORDS + 1):
        d = np.round(_ecg(5000, 500.0, seed=i, lad=i % 2 == 0) * 1000).astype(np.int64).T
        wfdb.wrsamp(str(i), fs=500, units=["mV"] * 12, sig_name=LEADS, d_signal=d, fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(root / "data"))
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in range(1, N_RECORDS + 1)))
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies"])
        for i in range(1, N_RECORDS + 1):
            axis = "left axis deviation" if i % 2 == 0 else "normal"
            w.writerow([i, "F", 50 + i, "Sinus rhythm", f"Electric axis of the heart: {axis}", ""])
    return root


@pytest.fixture(scope="module")
def runs(ludb, tmp_path_factory) -> Path:
    """A tiny CMSC teacher on three leads (train+val patients of a 60/20/20 split)."""
    runs = tmp_path_factory.mktemp("runs")
    cfg = PretrainConfig(name="teacher", dataset="ludb", root=str(ludb), method="cmsc", fs=100.0, segment_len=2.0,
                         epochs=1, max_steps=3, batch_size=16, lr=1e-3, embed_dim=8, leads=["I", "II", "V2"],
                         cache_dir=str(ludb.parent / "cache"), accelerator="cpu",
                         encoder={"name": "resnet1d", "widths": [4], "depth": [1]})
    run_pretrain(cfg, runs=runs, progress=False)
    return runs


def _cfg(runs: Path, name: str = "student", **kw) -> DistillConfig:
    base = dict(name=name, teacher=str(runs / "teacher"), epochs=4, batch_size=16, lr=3e-3, windows_per_record=2,
                cache_dir=str(runs.parent / "cache"), accelerator="cpu",
                student={"name": "resnet1d", "widths": [4], "depth": [1], "embed_dim": 6})
    return DistillConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def student(runs):
    teacher_sha = _sha256(runs / "teacher" / "encoder.pt")
    result = run_distill(_cfg(runs), runs=runs, progress=False)
    return result, teacher_sha


@pytest.fixture(scope="module")
def logit_student(runs):
    return run_distill(_cfg(runs, "logits", epochs=2, logits={"task": "lad", "weight": 0.5}), runs=runs,
                       progress=False)


def test_student_provenance_is_the_union_of_its_pool_and_the_teachers(runs, student):
    result, _ = student
    teacher = load_provenance(runs / "teacher")
    prov = load_provenance(result["encoder"])
    split = Split.load(runs / "student" / "split.json")
    assert split.hash == teacher["split"]["hash"] == prov["split"]["hash"] == result["split_hash"]
    distilled = set(split.patients["train"])  # pool "train": the student's own windows
    assert result["distill_pool_patients"] == len(distilled)
    assert prov["pool_patients"] == sorted(distilled | set(teacher["pool_patients"]))
    assert set(split.patients["val"]) <= set(prov["pool_patients"])  # only through the teacher
    assert not set(prov["pool_patients"]) & set(split.patients["test"])
    assert set(teacher["pool_fingerprints"]) <= set(prov["pool_fingerprints"])
    assert prov["label_patients"] == [] and prov["datasets"] == ["ludb"]
    meta = json.loads((runs / "student" / "encoder.json").read_text())
    assert meta["pretraining"]["config"]["leads"] == ["II"] and meta["method"] == "distill"


def test_the_student_takes_one_channel_and_evaluates_on_lead_ii(ludb, runs, student):
    result, _ = student
    enc = load_encoder(result["encoder"])
    assert enc.config["in_channels"] == 1 and result["data_needs"]["input_samples"] == 200
    assert enc(torch.zeros(3, 1, 200)).shape == (3, 6)
    # the evaluation's own checks (overlap, labels, preprocessing, channels) pass with leads [II] on its split
    inputs = evaluation_inputs(EvalConfig(dataset="ludb", root=str(ludb), fs=100.0,
                                          window=2.0, leads=["II"], encoders={"student": str(result["encoder"])},
                                          random_init=False, cache_dir=str(runs.parent / "cache"), fractions=[0.5]))
    assert inputs.signals.shape[1] == 1 and inputs.per_lead["student"]


def test_the_teacher_is_unchanged_and_the_loss_decreases(runs, student):
    result, teacher_sha = student
    assert _sha256(runs / "teacher" / "encoder.pt") == teacher_sha == result["teacher_sha256"]
    assert result["teacher_state_hash"] == state_dict_hash(load_encoder(runs / "teacher"))
    losses = result["losses"]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    # the map is training-only: the saved student is the bare encoder
    state = torch.load(result["encoder"], weights_only=True)
    assert not any(k.startswith(("map.", "student.")) for k in state)


def test_overlap_check_refuses_a_split_whose_test_patients_the_teacher_saw(ludb, runs, student):
    result, _ = student
    prov = load_provenance(result["encoder"])
    split = Split.load(runs / "student" / "split.json")
    from ssl_ecg.data.prepare import DataSpec, prepare

    prepared = prepare(DataSpec(dataset="ludb", root=str(ludb), fs=100.0, leads=("II",),
                                cache_dir=str(runs.parent / "cache")), split=split)
    assert check_overlap("student", prov, split, prepared.table).overlap == []
    # a val patient: never in the student's own windows, but in its teacher's pool
    moved = split.patients["val"][0]
    leaky = Split({"train": split.patients["train"], "val": tuple(split.patients["val"][1:]),
                   "test": (*split.patients["test"], moved)}, {"split": "test"}, split.cache_key)
    table = prepared.table.assign(split=prepared.table["patient_key"].map(lambda k: leaky.of(k) or ""))
    with pytest.raises(LeakageError, match=moved):
        check_overlap("student", prov, leaky, table)


def test_logit_distillation_records_the_probes_label_patients(runs, logit_student):
    result = logit_student
    prov = load_provenance(result["encoder"])
    split = Split.load(runs / "logits" / "split.json")
    labelled = set(split.patients["train"]) | set(split.patients["val"])
    assert set(prov["label_patients"]) == labelled  # fraction 1: every train and val patient with a label
    assert result["probe"]["kind"] == "binary" and result["probe"]["label_patients"] == len(labelled)
    assert np.isfinite(result["losses"]).all()
    assert check_labels("student", prov, split, [1.0])["refused_fractions"] == []
    with pytest.raises(LeakageError, match="labels the curve hides"):
        check_labels("student", prov, split, [0.25, 1.0])


def test_reruns_reuse_refuse_and_overwrite(runs, student):
    again = run_distill(_cfg(runs), runs=runs, progress=False)
    assert again["reused"] and again["losses"] == student[0]["losses"]
    with pytest.raises(ConfigError, match="already holds a run of a different recipe"):
        run_distill(_cfg(runs, loss="mse"), runs=runs, progress=False)


@pytest.mark.parametrize("overrides,match", [
    ({"loss": "huber"}, "loss"),
    ({"temperature": 0}, "temperature"),
    ({"student_leads": []}, "student_leads"),
    ({"windows_per_record": 0}, "windows_per_record"),
    ({"name": "../x"}, "name"),
    ({"bogus": 1}, "unknown keys"),
])
def test_bad_recipe_values_are_one_line_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        load_recipe(DistillConfig, None, overrides)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("changes,match", [
    ({"fs": 250.0}, "fs=250.0: the teacher was pretrained at 100 Hz"),
    ({"window": 5.0}, "window=5.0: 500 samples"),
    ({"normalization": "lead"}, "normalization='lead'"),
    ({"leads": ["II"]}, "leads=\\['II'\\]"),
    ({"pool": "train+bogus"}, "pool='train\\+bogus'"),
    ({"logits": {"weight": -1.0}}, "logits: weight=-1.0"),
    ({"logits": {"task": "lad", "bogus": 1}}, "logits: unknown keys"),
    ({"student": {"name": "resnet1d", "in_channels": 3}}, "student.in_channels=3"),
    ({"teacher": "nowhere/encoder.pt"}, "encoder weights not found"),
])
def test_recipes_that_do_not_fit_the_teacher_are_refused(runs, changes, match):
    with pytest.raises(ConfigError, match=match) as err:
        run_distill(_cfg(runs, "refused", **changes), runs=runs, progress=False)
    assert "\n" not in str(err.value)
    assert not (runs / "refused").exists()


def test_a_teacher_without_provenance_is_refused(runs, tmp_path):
    enc = load_encoder(runs / "teacher")
    meta = json.loads((runs / "teacher" / "encoder.json").read_text())
    meta.pop("provenance")
    (tmp_path / "encoder.json").write_text(json.dumps(meta))
    torch.save(enc.state_dict(), tmp_path / "encoder.pt")
    with pytest.raises(ConfigError, match="has no provenance"):
        run_distill(replace(_cfg(runs), teacher=str(tmp_path)), runs=runs, progress=False)


def test_the_bundled_recipe_validates():
    path = Path(__file__).parents[3] / "experiments" / "distill_ludb_lead2.yaml"
    cfg = load_recipe(DistillConfig, path)
    assert cfg.name == path.stem and cfg.student_leads == ["II"] and cfg.pool == "train" and cfg.logits is None


def test_the_cli_prints_the_loss_trend_and_the_student(runs, student, capsys):
    from ssl_ecg.cli import main

    recipe = Path(__file__).parents[3] / "experiments" / "distill_ludb_lead2.yaml"
    cfg = _cfg(runs)
    args = [f"teacher={cfg.teacher}", "name=student", "epochs=4", "batch_size=16", "lr=3e-3", "windows_per_record=2",
            f"cache_dir={cfg.cache_dir}", "accelerator=cpu", "student={name: resnet1d, widths: [4], depth: [1], "
            "embed_dim: 6}"]
    assert main(["distill", str(recipe), *args, "--runs", str(runs), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "reused the finished run" in out and f"loss {student[0]['losses'][0]:.4f}" in out
    assert str(runs / "student" / "encoder.pt") in out
    assert main(["distill", str(recipe), "loss=huber", "--runs", str(runs)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
