"""12-lead -> lead II distillation end to end on synthetic LUDB-layout records: provenance, frozen teacher, re-runs."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb

from losses.distill import EmbeddingDistillLoss, LogitDistillLoss
from ssl_ecg.checkpoint import load_encoder, load_provenance
from ssl_ecg.data.prepare import DataSpec, Split, prepare
from ssl_ecg.errors import ConfigError, LeakageError
from ssl_ecg.evaluate.embed import state_dict_hash
from ssl_ecg.evaluate.head import ProbeModel, WindowFeatures
from ssl_ecg.evaluate.provenance import check_labels, check_overlap
from ssl_ecg.evaluate.runner import EvalConfig, evaluation_inputs
from ssl_ecg.models import build_encoder
from ssl_ecg.pretrain import PretrainConfig, run_pretrain
from ssl_ecg.pretrain import distill as distill_module
from ssl_ecg.pretrain.distill import DistillConfig, DistillModule, PairedWindows, run_distill
from ssl_ecg.pretrain.run import _sha256
from ssl_ecg.pretrain.train import load_checkpoint
from ssl_ecg.recipe import load_recipe

LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
N_RECORDS = 20


def _ecg(n: int, fs: float, seed: int, lad: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    hr = rng.uniform(55, 95)
    phase = (t % (60.0 / hr)) * hr / 60.0
    wave = np.exp(-((phase - 0.3) ** 2) / (2 * 0.012**2)) + 0.3 * np.exp(-((phase - 0.6) ** 2) / (2 * 0.05**2))
    # one amplitude per record, nearly shared by the leads: what the 3-lead teacher sees, lead II mostly tells
    gains = rng.uniform(0.5, 1.5) * rng.uniform(0.9, 1.1, (12, 1))
    gains = gains * (np.where(np.arange(12) == 1, -1, 1)[:, None] if lad else 1)
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



# ---------------------------------------------------------------------------------------------------------------
# The target: the teacher's feature standardised with the pool's statistics


def _teacher_data(ludb, runs):
    split = Split.load(runs / "teacher" / "split.json")
    return prepare(DataSpec(dataset="ludb", root=str(ludb), fs=100.0, leads=("I", "II", "V2"),
                            cache_dir=str(runs.parent / "cache")), split=split)


def test_the_target_standardisation_is_the_probes_on_the_pool(ludb, runs, student):
    """mean and scale = population mean and std over pool records of the mean of the teacher's tiled window
    features (lead embeddings concatenated), by loops in float64."""
    result, _ = student
    stats = result["target_standardization"]
    teacher = load_encoder(runs / "teacher").double().eval()
    prepared = _teacher_data(ludb, runs)
    rows = prepared.rows("train")
    assert stats["records"] == len(rows) and stats["samples"] == 1000 and stats["windows_per_record"] == 5
    feats = []
    with torch.no_grad():
        for r in rows:
            x = torch.from_numpy(np.array(prepared.cache.segment(int(r), 0, 1000), dtype=np.float64))
            windows = [torch.cat([teacher(x[lead, w * 200:(w + 1) * 200].reshape(1, 1, 200))[0] for lead in range(3)])
                       for w in range(5)]
            feats.append((sum(windows) / 5).numpy())
    feats = np.array(feats)
    mean = feats.sum(0) / len(feats)
    std = np.sqrt(((feats - mean) ** 2).sum(0) / len(feats))
    assert len(stats["mean"]) == result["teacher_dim"] == 24
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["scale"], std, rtol=1e-4, atol=1e-6)
    summary = json.loads((runs / "student" / "pretrain.json").read_text())
    assert summary["target_standardization"] == stats


class _CodedCache:
    """Fake cache: record r, lead l, sample t holds 10000 r + 100 l + t, so a window names its row and start."""

    def __init__(self, n_leads):
        self.n_leads = n_leads

    def segment(self, row, start, length):
        t = np.arange(start, start + length, dtype=np.float64)
        return np.stack([10000 * row + 100 * lead + t for lead in range(self.n_leads)])


def test_paired_windows_give_teacher_and_student_the_same_crop():
    t_rows, s_rows = np.array([0, 1, 2, 3]), np.array([3, 0, 2, 1])  # the student cache orders records otherwise
    lengths = np.array([50, 80, 61, 40])
    data = PairedWindows(_CodedCache(3), _CodedCache(1), t_rows, s_rows, lengths, window=40, windows_per_record=5,
                         seed=7)
    assert len(data) == 20
    starts = {}
    for epoch in (0, 1):
        data.set_epoch(epoch)
        for i in range(len(data)):
            xt, xs = data[i]
            j = i // 5
            assert xt.shape == (3, 40) and xs.shape == (1, 40) and xt.dtype == xs.dtype == torch.float32
            start = int(xt[0, 0]) - 10000 * int(t_rows[j])
            assert int(xs[0, 0]) - 10000 * int(s_rows[j]) == start  # the same crop of the same record
            assert 0 <= start <= lengths[j] - 40
            assert torch.equal(xt - xt[:, :1], xs.expand(3, -1) - xs[:, :1])  # consecutive samples, both
            starts[epoch, i] = start
    assert len({starts[0, i] for i in range(5)}) > 1  # crops of one record differ
    assert [starts[0, i] for i in range(20)] != [starts[1, i] for i in range(20)]  # and per epoch
    again = PairedWindows(_CodedCache(3), _CodedCache(1), t_rows, s_rows, lengths, 40, 5, seed=7)
    again.set_epoch(1)
    assert [int(again[i][0][0, 0]) - 10000 * int(t_rows[i // 5]) for i in range(20)] == \
        [starts[1, i] for i in range(20)]  # seeded by (seed, epoch, item), not by the instance


class _Flat(torch.nn.Module):
    """A linear encoder (N, C, S) -> (N, E), with its weights kept for the reference."""

    def __init__(self, c, s, e, g):
        super().__init__()
        self.w, self.b = torch.randn(e, c * s, generator=g) / s, torch.randn(e, generator=g)
        self.linear = torch.nn.Linear(c * s, e)
        with torch.no_grad():
            self.linear.weight.copy_(self.w)
            self.linear.bias.copy_(self.b)

    def forward(self, x):
        return self.linear(x.flatten(1))


def _dot(w, x):
    return [sum(a * b for a, b in zip(row, x)) for row in w]


def test_distill_module_loss_matches_a_float64_reference():
    """embedding term on the pool-standardised target plus weight x logit term through the probe head, against
    loops in float64: t = (f_t - mu) / sigma; m = M f_s + c; logits h(sigma m + mu) and h(f_t)."""
    g = torch.Generator().manual_seed(11)
    n, leads, s, e_t, e_s, temperature, weight = 5, 3, 12, 4, 3, 2.0, 0.7
    teacher, student = _Flat(1, s, e_t, g), _Flat(1, s, e_s, g)
    d = leads * e_t
    mu, sigma = torch.randn(d, generator=g), torch.rand(d, generator=g) + 0.5
    p_mean, p_scale = torch.randn(d, generator=g), torch.rand(d, generator=g) + 0.5
    p_w, p_b = torch.randn(1, d, generator=g), torch.randn(1, generator=g)
    probe = ProbeModel(WindowFeatures(teacher, True), p_mean, p_scale, p_w, p_b, "binary")
    mapping = torch.nn.Linear(e_s, d)
    module = DistillModule(student, WindowFeatures(student, True), WindowFeatures(teacher, True), mapping,
                           EmbeddingDistillLoss("cosine"), probe=probe,
                           logit_loss=LogitDistillLoss(temperature, "binary"), weight=weight, target_mean=mu,
                           target_scale=sigma)
    xt, xs = torch.randn(n, leads, s, generator=g), torch.randn(n, 1, s, generator=g)
    total, embed, logit = module.losses(xt, xs)

    def f64(t):
        return t.detach().double().tolist()

    wt, bt, ws, bs = f64(teacher.w), f64(teacher.b), f64(student.w), f64(student.b)
    m_w, m_b = f64(mapping.weight), f64(mapping.bias)
    mu_, sg_, pm_, ps_, pw_, pb_ = f64(mu), f64(sigma), f64(p_mean), f64(p_scale), f64(p_w), f64(p_b)

    def head(f):
        return _dot(pw_, [(v - a) / b for v, a, b in zip(f, pm_, ps_)])[0] + pb_[0]

    e_sum, l_sum = 0.0, 0.0
    for i in range(n):
        ft = [v + b for lead in range(leads) for v, b in zip(_dot(wt, f64(xt[i, lead])), bt)]
        target = [(v - a) / b for v, a, b in zip(ft, mu_, sg_)]
        fs = [v + b for v, b in zip(_dot(ws, f64(xs[i, 0])), bs)]
        m = [v + b for v, b in zip(_dot(m_w, fs), m_b)]
        cos = sum(a * b for a, b in zip(m, target)) / math.sqrt(sum(a * a for a in m) * sum(b * b for b in target))
        e_sum += 1 - cos
        zs, zt = head([b * v + a for v, a, b in zip(m, mu_, sg_)]), head(ft)
        p, q = 1 / (1 + math.exp(-zt / temperature)), 1 / (1 + math.exp(-zs / temperature))
        l_sum += temperature ** 2 * (p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)))
    want_embed, want_logit = e_sum / n, l_sum / n
    assert embed.item() == pytest.approx(want_embed, rel=1e-5)
    assert logit.item() == pytest.approx(want_logit, rel=1e-4, abs=1e-6)
    assert total.item() == pytest.approx(want_embed + weight * want_logit, rel=1e-5)
    # the teacher's side is outside the graph; the student and the map get gradients from both terms
    total.backward()
    assert mapping.weight.grad is not None and student.linear.weight.grad is not None
    assert teacher.linear.weight.grad is None and probe.linear.weight.grad is None


def test_distill_module_under_bf16_autocast_keeps_the_teacher_side_in_float32():
    g = torch.Generator().manual_seed(12)
    teacher, student = _Flat(1, 16, 4, g), _Flat(1, 16, 3, g)
    mapping = torch.nn.Linear(3, 8)
    module = DistillModule(student, WindowFeatures(student, True), WindowFeatures(teacher, True), mapping,
                           EmbeddingDistillLoss("cosine"), target_mean=torch.randn(8, generator=g),
                           target_scale=torch.rand(8, generator=g) + 0.5)
    xt, xs = torch.randn(6, 2, 16, generator=g), torch.randn(6, 1, 16, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _, _ = module.losses(xt, xs)
        mapped = module.map(module.student_features(xs))
    target = (WindowFeatures(teacher, True)(xt) - module.target_mean) / module.target_scale  # float32, no autocast
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(EmbeddingDistillLoss("cosine")(mapped.float(), target).item(), rel=1e-6)


@pytest.fixture(scope="module")
def strong_student(runs):
    return run_distill(_cfg(runs, "strong", epochs=12, windows_per_record=8, lr=1e-2), runs=runs, progress=False)


def _held_out_cosine(student_features, mapping, teacher_features, stats, x_teacher, x_student) -> float:
    with torch.no_grad():
        target = (teacher_features(x_teacher) - torch.tensor(stats["mean"])) / torch.tensor(stats["scale"])
        mapped = mapping(student_features(x_student))
        return torch.nn.functional.cosine_similarity(mapped, target, dim=1).mean().item()


def test_the_student_matches_the_standardised_target_on_held_out_patients(ludb, runs, strong_student):
    """On the windows of validation patients (never in the student's pool), the trained student through its
    learned map points where the teacher's pool-standardised feature points; random-init students of the same
    architecture through a random map do not come close."""
    stats = strong_student["target_standardization"]
    prepared = _teacher_data(ludb, runs)
    student_prepared = prepare(DataSpec(dataset="ludb", root=str(ludb), fs=100.0, leads=("II",),
                                        cache_dir=str(runs.parent / "cache")), split=prepared.split)
    rows = prepared.rows("val")
    ids = prepared.table["record_id"].astype(str).to_numpy()[rows]
    s_rows = [student_prepared.table["record_id"].astype(str).tolist().index(r) for r in ids]
    # the five tiled windows of each record, teacher leads (I, II, V2) and the student's lead II cache alike
    xt = torch.from_numpy(prepared.arrays(1000, rows)).reshape(len(rows), 3, 5, 200).transpose(1, 2)
    xt = xt.reshape(-1, 3, 200)
    xs = torch.from_numpy(student_prepared.arrays(1000, s_rows)).reshape(-1, 1, 200)
    teacher = WindowFeatures(load_encoder(runs / "teacher").eval(), True)
    state = load_checkpoint(runs / "strong" / "checkpoints" / "last.ckpt")["state_dict"]
    mapping = torch.nn.Linear(6, 24)
    mapping.load_state_dict({"weight": state["map.weight"], "bias": state["map.bias"]})
    trained = WindowFeatures(load_encoder(strong_student["encoder"]).eval(), True)
    got = _held_out_cosine(trained, mapping, teacher, stats, xt, xs)
    baselines = []
    for seed in range(5):
        torch.manual_seed(seed)
        random = WindowFeatures(build_encoder(dict(strong_student["student_encoder"])).eval(), True)
        baselines.append(_held_out_cosine(random, torch.nn.Linear(6, 24), teacher, stats, xt, xs))
    assert got > 0.35, got
    assert max(baselines) < 0.2, baselines


# ---------------------------------------------------------------------------------------------------------------
# Pools with test patients, the probe's recipe in the fingerprint, the challenge year, rank 0


@pytest.mark.parametrize("pool", ["all", "train+test", "test"])
def test_a_pool_with_the_teachers_test_patients_is_refused(runs, pool):
    with pytest.raises(ConfigError, match="allow_test_patients") as err:
        run_distill(_cfg(runs, "with_test", pool=pool), runs=runs, progress=False)
    assert "\n" not in str(err.value) and f"pool={pool!r}" in str(err.value)
    assert not (runs / "with_test").exists()


def test_allowed_test_patients_are_recorded_and_flagged_by_evaluation(ludb, runs, student):
    result = run_distill(_cfg(runs, "with_test", pool="all", allow_test_patients=True, epochs=1), runs=runs,
                         progress=False)
    prov = load_provenance(result["encoder"])
    split = Split.load(runs / "with_test" / "split.json")
    assert prov["allow_test_patients"] is True and result["allow_test_patients"] is True
    assert set(split.patients["test"]) <= set(prov["pool_patients"])
    assert load_provenance(runs / "student")["allow_test_patients"] is False
    cfg = EvalConfig(dataset="ludb", root=str(ludb), fs=100.0, window=2.0, leads=["II"], random_init=False,
                     encoders={"student": str(result["encoder"])}, cache_dir=str(runs.parent / "cache"))
    with pytest.raises(LeakageError, match="student"):
        evaluation_inputs(cfg)
    flagged = evaluation_inputs(replace(cfg, allow_overlap=True)).checks["student"]["overlap"]
    assert flagged["allowed"] and flagged["by_patient"] == len(split.patients["test"])


def _eval_recipe(path: Path, ludb: Path, runs: Path, **extra) -> Path:
    lines = ["dataset: ludb", f"root: {ludb}", "fs: 100.0", "leads: [I, II, V2]", "window: 2.0",
             f"cache_dir: {runs.parent / 'cache'}", *(f"{k}: {v}" for k, v in extra.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_fingerprint_follows_the_probe_recipes_contents_and_the_probe_gets_the_challenge_year(
        ludb, runs, tmp_path, monkeypatch):
    seen = []
    fit = distill_module.fit_probe_model

    def spy(*args, **kwargs):
        seen.append(kwargs.get("challenge_year", "missing"))
        return fit(*args, **kwargs)

    monkeypatch.setattr(distill_module, "fit_probe_model", spy)
    monkeypatch.setattr(distill_module, "challenge_year", lambda name: {"ludb": 2021}.get(name))
    recipe = _eval_recipe(tmp_path / "a.yaml", ludb, runs)
    cfg = _cfg(runs, "probe_recipe", epochs=1, logits={"task": "lad", "recipe": str(recipe)})
    first = run_distill(cfg, runs=runs, progress=False)
    assert seen == [2021]  # the curve's scoring year of the probe's data (runner.curve_spec)
    # the same contents under another path: the same student
    moved = _eval_recipe(tmp_path / "b.yaml", ludb, runs)
    again = run_distill(replace(cfg, logits={"task": "lad", "recipe": str(moved)}), runs=runs, progress=False)
    assert again["reused"] and again["losses"] == first["losses"]
    # an edited recipe is another probe: not silently reused
    _eval_recipe(recipe, ludb, runs, bad_leads="drop_record")
    with pytest.raises(ConfigError, match="already holds a run of a different recipe"):
        run_distill(cfg, runs=runs, progress=False)
    assert seen == [2021]


def test_only_rank_0_writes_the_run_folder(runs, monkeypatch):
    from pytorch_lightning.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    result = run_distill(_cfg(runs, "rank1", epochs=1), runs=runs, progress=False)
    out = runs / "rank1"
    written = {p.name for p in out.iterdir()} if out.exists() else set()
    assert not written & {"run.json", "split.json", "encoder.pt", "encoder.json", "pretrain.json"}
    assert result["encoder"] == out / "encoder.pt" and result["target_standardization"]["records"] > 0
