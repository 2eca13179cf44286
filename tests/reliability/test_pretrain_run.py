"""The pretraining run (issue 17): untrusted checkpoints, diverged or untrained runs, re-runs under one name.

Tiny synthetic LUDB-layout data (8 records) and a tiny encoder keep each run to a second or two on CPU.
"""

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb
from pytorch_lightning.callbacks import Callback

from ssl_ecg import load_encoder
from ssl_ecg.cli import main
from ssl_ecg.errors import ConfigError, TrainingError
from ssl_ecg.pretrain import PretrainConfig, run_pretrain
from ssl_ecg.pretrain.train import fit, load_checkpoint

LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]


def _ecg(n_leads: int, n: int, fs: float, seed: int) -> np.ndarray:
    """Periodic QRS/T-like waves (mV) with per-record heart rate and lead gains, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    phase = (t % (60.0 / rng.uniform(55, 95))) * rng.uniform(55, 95) / 60.0
    wave = np.exp(-((phase - 0.3) ** 2) / (2 * 0.012**2)) + 0.3 * np.exp(-((phase - 0.6) ** 2) / (2 * 0.05**2))
    return rng.uniform(-1.5, 1.5, (n_leads, 1)) * wave + 0.05 * rng.standard_normal((n_leads, n))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A LUDB-layout folder (ludb.csv, RECORDS, data/<id>.hea/.dat): 8 ten-second 12-lead records at 500 Hz."""
    root = tmp_path_factory.mktemp("ludb")
    (root / "data").mkdir()
    for i in range(1, 9):
        d = np.round(_ecg(12, 5000, 500.0, seed=i) * 1000).astype(np.int64).T  # LUDB: 1 unit = 1 uV
        wfdb.wrsamp(str(i), fs=500, units=["mV"] * 12, sig_name=LEADS, d_signal=d, fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(root / "data"))
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in range(1, 9)))
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies"])
        for i in range(1, 9):
            w.writerow([i, "F", 50 + i, "Sinus rhythm", "Electric axis of the heart: normal", ""])
    return root


def _cfg(data: Path, name: str = "run", **kw) -> PretrainConfig:
    base = dict(name=name, dataset="ludb", root=str(data), method="cmsc", fs=100.0, segment_len=2.0, epochs=1,
                batch_size=4, lr=1e-3, embed_dim=8, leads=["II", "V2"], cache_dir=str(data.parent / "cache"),
                encoder={"name": "resnet1d", "widths": [4, 8], "depth": [1, 1]}, accelerator="cpu")
    return PretrainConfig(**{**base, **kw})


def _plant(path: Path, marker: Path) -> None:
    """A pickle whose loading (with weights_only=False) creates ``marker``: the stand-in for running code."""

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": Payload(), "epoch": 0}, path)


def _assert_live(path: Path, tmp_path: Path) -> None:
    """The planted file really runs code when unpickled, so a missing marker means it was not unpickled."""
    probe = tmp_path / "probe.ckpt"
    _plant(probe, tmp_path / "probe-marker")
    torch.load(probe, weights_only=False)
    assert (tmp_path / "probe-marker").exists()
    assert path.is_file()


def _weights_equal(encoder_path: Path, ckpt_path: Path) -> None:
    state = load_checkpoint(ckpt_path)["state_dict"]
    for key, value in load_encoder(encoder_path).state_dict().items():
        assert torch.equal(value, state[f"encoder.{key}"]), key


# -- untrusted checkpoints ----------------------------------------------------------------------------------------


def test_planted_best_and_last_ckpt_never_run_on_a_finishing_early_stopping_run(data, tmp_path):
    marker = tmp_path / "pwned"
    ckpts = tmp_path / "runs" / "es" / "checkpoints"
    for name in ("best.ckpt", "last.ckpt"):
        _plant(ckpts / name, marker)
    _assert_live(ckpts / "best.ckpt", tmp_path)
    cfg = _cfg(data, "es", epochs=3, early_stopping_patience=1)
    with pytest.raises(ConfigError, match=r"es already holds files of a run without a readable run\.json.*overwrite"):
        run_pretrain(cfg, runs=tmp_path / "runs", progress=False)
    result = run_pretrain(replace(cfg, overwrite=True), runs=tmp_path / "runs", progress=False)
    assert not marker.exists()
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]  # the planted ones were removed
    assert result["val_records"] > 0 and not result["reused"]
    _weights_equal(result["encoder"], ckpts / "best.ckpt")  # this run's best weights


def test_a_best_ckpt_swapped_during_the_run_is_refused_not_unpickled(data, tmp_path):
    marker = tmp_path / "pwned"

    class Swap(Callback):  # after Lightning wrote best.ckpt, before the runner reads it back
        def on_fit_end(self, trainer, pl_module):
            _plant(Path(trainer.checkpoint_callback.best_model_path), marker)

    cfg = _cfg(data, "swap", epochs=2, early_stopping_patience=1)
    with pytest.raises(ConfigError, match=r"best\.ckpt: refused, expected a checkpoint that loads with weights_only"):
        run_pretrain(cfg, runs=tmp_path, progress=False, callbacks=[Swap()])
    assert not marker.exists() and not (tmp_path / "swap" / "encoder.pt").exists()


def test_resume_reads_last_ckpt_weights_only_and_only_for_the_same_recipe(data, tmp_path):
    marker = tmp_path / "pwned"

    class Kill(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                raise RuntimeError("simulated kill")

    cfg = _cfg(data, "r", epochs=2)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run_pretrain(cfg, runs=tmp_path, progress=False, callbacks=[Kill()])
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    genuine = last.read_bytes()
    _plant(last, marker)
    with pytest.raises(ConfigError, match=r"last\.ckpt: refused, expected a checkpoint that loads with weights_only"):
        run_pretrain(replace(cfg, resume=True), runs=tmp_path, progress=False)
    assert not marker.exists()
    last.write_bytes(genuine)  # Lightning's own checkpoint (optimizer, loops, callbacks) loads weights-only
    with pytest.raises(ConfigError, match=r"resume: .*r was not started by this recipe.*overwrite"):
        run_pretrain(replace(cfg, resume=True, lr=5e-3), runs=tmp_path, progress=False)
    resumed = run_pretrain(replace(cfg, resume=True), runs=tmp_path, progress=False)
    full = run_pretrain(replace(cfg, name="full"), runs=tmp_path, progress=False)
    a, b = load_encoder(full["encoder"]).state_dict(), load_encoder(resumed["encoder"]).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    with pytest.raises(ConfigError, match="resume, overwrite"):
        run_pretrain(replace(cfg, resume=True, overwrite=True), runs=tmp_path, progress=False)


# -- diverged or untrained runs -----------------------------------------------------------------------------------


def test_non_finite_loss_fails_the_run_naming_run_step_and_epoch(data, tmp_path):
    class Poison(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 1:
                with torch.no_grad():
                    next(pl_module.encoder.parameters()).fill_(float("inf"))

    with pytest.raises(TrainingError, match=r"run 'nan': training loss is (nan|inf) at step 1 \(epoch 0\); expected"):
        run_pretrain(_cfg(data, "nan"), runs=tmp_path, progress=False, callbacks=[Poison()])
    assert not (tmp_path / "nan" / "encoder.pt").exists()
    assert json.loads((tmp_path / "nan" / "run.json").read_text())["status"] == "running"


def test_an_inf_sample_fails_the_run(data, tmp_path):
    class PoisonInput(Callback):  # one non-finite input sample in the first batch
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                batch[0][min(3, len(batch[0]) - 1), 0, 50] = float("inf")

    with pytest.raises(TrainingError, match=r"run 'arr': training loss is (nan|inf) at step 0 \(epoch 0\)"):
        run_pretrain(_cfg(data, "arr"), runs=tmp_path, progress=False, callbacks=[PoisonInput()])
    assert not (tmp_path / "arr" / "encoder.pt").exists()


def test_non_finite_weights_fail_the_run_even_with_finite_losses(data, tmp_path):
    class PoisonBuffer(Callback):  # BatchNorm's running mean: training losses stay finite, the weights are not
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            bn = next(m for m in pl_module.encoder.modules() if isinstance(m, torch.nn.BatchNorm1d))
            bn.running_mean.fill_(float("nan"))

    with pytest.raises(TrainingError, match=r"run 'w': after step \d+ \(epoch 0\): weights are not finite .*running"):
        run_pretrain(_cfg(data, "w"), runs=tmp_path, progress=False, callbacks=[PoisonBuffer()])
    assert not (tmp_path / "w" / "encoder.pt").exists()


def test_a_loss_stuck_at_exactly_zero_fails_the_run(data, tmp_path, monkeypatch):
    from ssl_ecg.pretrain import methods

    monkeypatch.setattr(methods._Patient, "loss", lambda self, z, ids: z.sum() * 0.0)  # no positives: nothing trains
    with pytest.raises(TrainingError, match=r"run 'zero': the training loss was exactly 0 at all \d+ steps of epoch 0"):
        run_pretrain(_cfg(data, "zero"), runs=tmp_path, progress=False)
    assert not (tmp_path / "zero" / "encoder.pt").exists()


@pytest.mark.parametrize("method", ["cmlc", "cmsmlc", "clocs"])
def test_lead_view_methods_refuse_one_lead_before_training(data, tmp_path, method):
    with pytest.raises(ConfigError, match=rf"method '{method}': .* needs >= 2 leads, but the ludb data has 1 "
                                          r"\(leads: \['II'\]\)"):
        run_pretrain(_cfg(data, method, method=method, leads=["II"]), runs=tmp_path, progress=False)
    assert not (tmp_path / method).exists()


def test_a_lead_view_method_trains_on_two_leads(data, tmp_path):
    result = run_pretrain(_cfg(data, "cmlc2", method="cmlc"), runs=tmp_path, progress=False)
    assert result["losses"] and all(np.isfinite(result["losses"])) and result["losses"][0] > 0


@pytest.mark.parametrize("key,value", [("epochs", 0), ("epochs", -1), ("max_steps", 0), ("max_steps", -2)])
def test_an_empty_training_budget_is_refused(data, tmp_path, key, value):
    with pytest.raises(ConfigError, match=rf"^{key}: expected"):
        run_pretrain(_cfg(data, "empty", **{key: value}), runs=tmp_path, progress=False)
    assert not (tmp_path / "empty").exists()
    with pytest.raises(ConfigError, match=rf"^{key}: expected"):
        fit(torch.nn.Linear(1, 1), [], tmp_path / "fit", **{"epochs": 1, "max_steps": -1, key: value})


# -- re-runs under one name ---------------------------------------------------------------------------------------


def test_a_rerun_reuses_only_a_matching_finished_run(data, tmp_path):
    class Count(Callback):
        batches = 0

        def on_train_batch_end(self, *args):
            Count.batches += 1

    cfg = _cfg(data, "es", epochs=3, early_stopping_patience=1)
    first = run_pretrain(cfg, runs=tmp_path, progress=False)
    encoder = tmp_path / "es" / "encoder.pt"
    weights = encoder.read_bytes()
    again = run_pretrain(replace(cfg, num_workers=0, wandb=False), runs=tmp_path, progress=False, callbacks=[Count()])
    assert again["reused"] and Count.batches == 0 and again["losses"] == first["losses"]
    assert encoder.read_bytes() == weights

    with pytest.raises(ConfigError, match=r"a run of a different recipe, data or code version .*--resume.*--overwrite"):
        run_pretrain(replace(cfg, lr=3e-3), runs=tmp_path, progress=False)
    second = run_pretrain(replace(cfg, lr=3e-3, overwrite=True), runs=tmp_path, progress=False)
    ckpts = tmp_path / "es" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]  # no best-v1.ckpt beside the old one
    _weights_equal(second["encoder"], ckpts / "best.ckpt")
    assert encoder.read_bytes() != weights  # the new run's weights, not the previous run's

    encoder.write_bytes(weights)  # tampered or replaced after the run finished
    with pytest.raises(ConfigError, match=r"encoder\.pt no longer matches the hash in run\.json"):
        run_pretrain(replace(cfg, lr=3e-3), runs=tmp_path, progress=False)


def test_an_unfinished_run_needs_resume_or_overwrite(data, tmp_path):
    class Kill(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            raise RuntimeError("simulated kill")

    cfg = _cfg(data, "u")
    with pytest.raises(RuntimeError):
        run_pretrain(cfg, runs=tmp_path, progress=False, callbacks=[Kill()])
    with pytest.raises(ConfigError, match=r"already holds an unfinished run of this recipe"):
        run_pretrain(cfg, runs=tmp_path, progress=False)
    assert run_pretrain(replace(cfg, overwrite=True), runs=tmp_path, progress=False)["losses"]


def test_an_overwritten_run_in_one_folder_writes_this_runs_checkpoints(data, tmp_path):
    """The demo's pretraining step re-run with another recipe: the folder starts clean (no -v1 copies)."""
    run_pretrain(_cfg(data, "a", epochs=2, seed=1), runs=tmp_path, progress=False)
    second = run_pretrain(_cfg(data, "a", seed=0, overwrite=True), runs=tmp_path, progress=False)
    fresh = run_pretrain(_cfg(data, "b", seed=0), runs=tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert load_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")["epoch"] == 0  # this run's single epoch
    a, b = load_encoder(second["encoder"]).state_dict(), load_encoder(fresh["encoder"]).state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_cli_pretrain_reuses_refuses_then_overwrites(data, tmp_path, capsys):
    cfg = _cfg(data, "cli")
    recipe = tmp_path / "r.yaml"
    fields = {k: v for k, v in cfg.__dict__.items() if k not in ("name",)}
    recipe.write_text(json.dumps({**fields, "name": "cli"}))  # JSON is YAML
    args = ["pretrain", str(recipe), "--runs", str(tmp_path / "runs"), "--quiet"]
    assert main(args) == 0
    assert main(args) == 0 and "reused the finished run" in capsys.readouterr().out
    assert main([*args, "lr=0.005"]) != 0
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "lr=0.005", "--overwrite"]) == 0
    state = json.loads((tmp_path / "runs" / "cli" / "run.json").read_text())
    assert state["status"] == "complete"
