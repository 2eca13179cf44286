"""INT8 static quantisation: calibration reads training windows only, the INT8 model runs and is scored on the same
test records as FP32 and PyTorch, and bad inputs give one-line errors."""

import numpy as np
import pandas as pd
import pytest
import torch

from ssl_ecg.cli import main
from ssl_ecg.deploy.export import onnx_session
from ssl_ecg.deploy.quantize import WindowCalibrationReader, calibration_windows, quantize_probe_model
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.head import fit_probe_model
from ssl_ecg.evaluate.tasks import auroc
from ssl_ecg.models import build_encoder

WINDOW, WINDOWS, N_PATIENTS = 400, 2, 90
#: The largest |INT8 - FP32| test AUROC accepted: a QDQ INT8 copy of a small CNN ranks the records as FP32 does
#: up to a few swapped pairs near the boundary (0.03 measured here); a model that lost the signal drifts to ~0.5.
AUROC_TOLERANCE = 0.05


def _noisy(n_patients: int = N_PATIENTS, leads: int = 2, seed: int = 0):
    """A partly separable task (test AUROC ~0.8): every record carries a 4 Hz sinusoid (at 100 Hz) of amplitude
    |N(1.5 y, 0.6)| in noise, so the classes overlap and a degraded model ranks records differently."""
    rng = np.random.default_rng(seed)
    patients = [f"p{i}" for i in range(n_patients)]
    y = np.arange(n_patients) % 2
    t = np.arange(WINDOW * WINDOWS)
    amplitude = np.abs(rng.normal(1.5 * y, 0.6))
    signals = 0.5 * rng.standard_normal((n_patients, leads, len(t)))
    signals += amplitude[:, None, None] * np.sin(2 * np.pi * t / 25.0)
    table = pd.DataFrame({"patient_id": patients, "task": y.astype(float)})
    splits = {"train": patients[:50], "val": patients[50:66], "test": patients[66:]}
    return signals.astype(np.float32), table, splits


@pytest.fixture(scope="module")
def fitted():
    signals, table, splits = _noisy()
    torch.manual_seed(0)
    enc = build_encoder({"name": "mobilenet1d", "in_channels": 1, "embed_dim": 16, "stem": [8, 4],
                         "layers": [[16, 4], [32, 2]]}).eval()
    return signals, fit_probe_model(enc, signals, table, splits, "task", window=WINDOW, per_lead=True)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, fitted):
    signals, fit = fitted
    out = tmp_path_factory.mktemp("int8")
    return out, quantize_probe_model(fit, signals, WINDOW, out, calibration=64, seed=0)


def test_int8_mobilenet_keeps_the_fp32_auroc_on_a_noisy_task(fitted, quantized):
    signals, fit = fitted
    _, report = quantized
    m = report.models
    fp32, int8 = m["onnx_fp32"], m["onnx_int8"]
    test = fit.rows["test"]
    assert report.test_records == len(test) == 24 and report.windows_per_record == WINDOWS
    assert report.calibration == {"windows": 64, "seed": 0, "rows_from": "train", "records": report.calibration[
        "records"]} and 1 <= report.calibration["records"] <= len(fit.rows["train"])
    # PyTorch's AUROC is the probe's own test AUROC; the task is only partly separable, so ranks can move
    assert m["pytorch"]["test_auroc"] == pytest.approx(fit.result.test_auroc, abs=1e-9)
    assert 0.7 < m["pytorch"]["test_auroc"] < 0.95
    assert fp32["test_auroc"] == pytest.approx(m["pytorch"]["test_auroc"], abs=1e-9)
    # the INT8 AUROC is the AUROC of the INT8 session's own record scores, recomputed here
    session = onnx_session(int8["path"])
    windows = signals[test].reshape(len(test), 2, WINDOWS, WINDOW).transpose(0, 2, 1, 3).reshape(-1, 2, WINDOW)
    logits = session.run(None, {"x": np.ascontiguousarray(windows)})[0].astype(np.float64).reshape(len(test), WINDOWS)
    scores = logits.mean(1)
    expected = auroc(fit.y[test], scores, "binary")
    assert np.isfinite(int8["test_auroc"]) and int8["test_auroc"] == pytest.approx(expected, abs=1e-12)
    assert abs(int8["test_auroc"] - fp32["test_auroc"]) <= AUROC_TOLERANCE
    # the tolerance can fail: an INT8 path that scrambled the records' scores would be caught
    broken = auroc(fit.y[test], np.random.default_rng(0).permutation(scores), "binary")
    assert abs(broken - fp32["test_auroc"]) > AUROC_TOLERANCE
    # quantised: INT8 weights, a smaller file, outputs close to but not equal to FP32
    import onnx

    weights = [i for i in onnx.load(int8["path"]).graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 4  # stem, depthwise and pointwise kernels, the embedding and probe linear maps
    assert int8["bytes"] < fp32["bytes"]
    assert 0 < report.int8_max_abs_diff_logits < 1.0
    # every row is timed with one protocol (per record, a batch of its windows, one thread)
    assert all(m[k]["latency_ms"] > 0 for k in ("pytorch", "onnx_fp32", "onnx_int8"))
    assert m["pytorch"]["bytes"] is None and m["pytorch"]["path"] is None
    assert report.onnx_max_abs_diff < 1e-4


def test_calibration_reads_training_rows_only(fitted):
    signals, fit = fitted
    train = set(fit.rows["train"].tolist())
    reader = WindowCalibrationReader(signals, fit.rows["train"], WINDOW, n=30, seed=1)
    seen = []
    while (batch := reader.get_next()) is not None:
        x = batch["x"]
        assert x.shape == (1, 2, WINDOW) and x.dtype == np.float32
        hits = [(r, w) for r in range(len(signals)) for w in range(WINDOWS)
                if np.array_equal(signals[r, :, w * WINDOW:(w + 1) * WINDOW], x[0])]
        assert len(hits) == 1
        seen.append(hits[0])
    assert len(seen) == len(set(seen)) == 30  # distinct windows, all from training records
    assert {r for r, _ in seen} <= train
    assert [tuple(p) for p in reader.pairs] == seen
    again = WindowCalibrationReader(signals, fit.rows["train"], WINDOW, n=30, seed=1)
    np.testing.assert_array_equal(again.pairs, reader.pairs)  # seeded
    other = WindowCalibrationReader(signals, fit.rows["train"], WINDOW, n=30, seed=2)
    assert not np.array_equal(other.pairs, reader.pairs)
    everything = calibration_windows(signals, fit.rows["train"], WINDOW, n=10_000)
    assert len(everything) == WINDOWS * len(train)  # fewer windows than asked: all of them


def test_a_reader_outside_training_rows_or_empty_is_refused(tmp_path, fitted):
    signals, fit = fitted
    leaky = WindowCalibrationReader(signals, fit.rows["test"], WINDOW, n=4)
    with pytest.raises(ConfigError, match=r"calibration: the reader reads rows \[.*\] outside the training rows"):
        quantize_probe_model(fit, signals, WINDOW, tmp_path, reader=leaky)
    with pytest.raises(ConfigError, match="calibration rows: empty; expected at least one training record"):
        calibration_windows(signals, np.array([], dtype=int), WINDOW)
    for bad in (0, -3):
        with pytest.raises(ConfigError, match=f"calibration: expected a number of training windows >= 1, got {bad}"):
            quantize_probe_model(fit, signals, WINDOW, tmp_path, calibration=bad)
    with pytest.raises(ConfigError, match=r"signals: shape \(90, 2, 300\); expected \(R, L, T\) records with T >= "):
        quantize_probe_model(fit, signals[..., :300], WINDOW, tmp_path)

    class NoPairs:  # a CalibrationDataReader whose rows cannot be checked
        def get_next(self):
            return None

    with pytest.raises(ConfigError, match=r"reader: a NoPairs without .pairs and .get_next\(\); expected"):
        quantize_probe_model(fit, signals, WINDOW, tmp_path, reader=NoPairs())
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_cli_quantize_errors_are_one_line(tmp_path, capsys):
    assert main(["quantize", str(tmp_path / "missing.yaml"), "--task", "lad", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("ssl-ecg quantize: error:") and "missing.yaml: recipe not found" in err
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: ludb\nencoders: {}\n")
    assert main(["quantize", str(recipe), "--task", "lad", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "encoders is empty; expected the encoder to export" in err
    recipe.write_text("dataset: ludb\nencoders: {cmsc: " + str(tmp_path / "nowhere") + "}\n")
    assert main(["quantize", str(recipe), "--task", "lad", "--out", str(tmp_path / "q"), "--encoder",
                 str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "other: not among the encoders of" in err
    with pytest.raises(SystemExit) as exit_info:  # argparse: --task is required
        main(["quantize", str(recipe), "--out", str(tmp_path / "q")])
    assert exit_info.value.code == 2 and "the following arguments are required: --task" in capsys.readouterr().err


def test_cli_refuses_calibration_below_one_before_fitting(tmp_path, capsys):
    # the recipe does not even exist: the calibration count is checked first
    assert main(["quantize", str(tmp_path / "missing.yaml"), "--task", "lad", "--out", str(tmp_path / "q"),
                 "--calibration", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "calibration: expected a number of training windows >= 1, got 0" in err


def test_cli_quantize_writes_quantization_json(tmp_path, ludb_recipe, capsys, monkeypatch):
    import json

    recipe, run, prepared = ludb_recipe
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "q"
    assert main(["quantize", str(recipe), "--task", "lad", "--out", str(out), "--calibration", "16"]) == 0
    printed = capsys.readouterr().out
    assert "calibration 16 training windows" in printed and f"results: {out / 'quantization.json'}" in printed
    for name in ("pytorch", "onnx_fp32", "onnx_int8"):
        assert any(line.startswith(name) and "ms/record" in line for line in printed.splitlines())
    saved = json.loads((out / "quantization.json").read_text())
    report, probe, card = saved["report"], saved["probe"], saved["card"]
    assert report["calibration"]["windows"] == 16 and report["calibration"]["rows_from"] == "train"
    assert report["test_records"] == probe["test_records"] > 0 and report["kind"] == "binary"
    assert probe["task"] == "lad" and probe["split_hash"] == prepared.split.hash and probe["arm"] == "cmsc"
    assert report["models"]["pytorch"]["test_auroc"] == pytest.approx(probe["test_auroc"], abs=1e-9)
    assert all(report["models"][k]["latency_ms"] > 0 for k in ("pytorch", "onnx_fp32", "onnx_int8"))
    assert card["input"]["normalization"] == "record" and card["probe"]["task"] == "lad"
    assert {"probe_fp32.onnx", "probe_int8.onnx", "quantization.json"} <= {p.name for p in out.iterdir()}
