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

WINDOW = 400


def _separable(n_patients: int = 40, leads: int = 2, windows: int = 3, seed: int = 0):
    """Class 1 records carry a 4 Hz-like sinusoid on every lead (at 100 Hz): separable by any encoder."""
    rng = np.random.default_rng(seed)
    patients = [f"p{i}" for i in range(n_patients)]
    y = np.arange(n_patients) % 2
    t = np.arange(WINDOW * windows)
    signals = 0.5 * rng.standard_normal((n_patients, leads, len(t)))
    signals[y == 1] += 2.0 * np.sin(2 * np.pi * t / 25.0)
    table = pd.DataFrame({"patient_id": patients, "task": y.astype(float)})
    splits = {"train": patients[:24], "val": patients[24:32], "test": patients[32:]}
    return signals.astype(np.float32), table, splits


@pytest.fixture(scope="module")
def fitted():
    signals, table, splits = _separable()
    torch.manual_seed(0)
    enc = build_encoder({"name": "clocs", "in_channels": 1, "input_len": WINDOW, "embed_dim": 32}).eval()
    return signals, fit_probe_model(enc, signals, table, splits, "task", window=WINDOW, per_lead=True)


def test_int8_model_runs_and_is_scored_on_the_test_records(tmp_path, fitted):
    signals, fit = fitted
    report = quantize_probe_model(fit, signals, WINDOW, tmp_path, calibration=24, seed=0)
    m = report.models
    fp32, int8 = m["onnx_fp32"], m["onnx_int8"]
    test = fit.rows["test"]
    assert report.test_records == len(test) == 8 and report.windows_per_record == 3
    assert report.calibration == {"windows": 24, "seed": 0, "rows_from": "train", "records": report.calibration[
        "records"]} and 1 <= report.calibration["records"] <= len(fit.rows["train"])
    # PyTorch's AUROC is the probe's own test AUROC; the task is separable
    assert m["pytorch"]["test_auroc"] == pytest.approx(fit.result.test_auroc, abs=1e-9)
    assert m["pytorch"]["test_auroc"] > 0.9
    assert fp32["test_auroc"] == pytest.approx(m["pytorch"]["test_auroc"], abs=1e-9)
    # the INT8 AUROC is the AUROC of the INT8 session's own record scores, recomputed here
    session = onnx_session(int8["path"])
    windows = signals[test].reshape(len(test), 2, 3, WINDOW).transpose(0, 2, 1, 3).reshape(-1, 2, WINDOW)
    logits = session.run(None, {"x": np.ascontiguousarray(windows)})[0].astype(np.float64).reshape(len(test), 3)
    expected = auroc(fit.y[test], logits.mean(1), "binary")
    assert np.isfinite(int8["test_auroc"]) and int8["test_auroc"] == pytest.approx(expected, abs=1e-12)
    # quantised: INT8 weights, a smaller file, outputs close to but not equal to FP32
    import onnx

    weights = [i for i in onnx.load(int8["path"]).graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 4  # three conv kernels, the embedding and probe linear maps
    assert int8["bytes"] < fp32["bytes"]
    assert 0 < report.int8_max_abs_diff_logits < 1.0
    assert fp32["latency_ms"] > 0 and int8["latency_ms"] > 0
    assert report.onnx_max_abs_diff < 1e-4


def test_calibration_reads_training_rows_only(fitted):
    signals, fit = fitted
    train = set(fit.rows["train"].tolist())
    reader = WindowCalibrationReader(signals, fit.rows["train"], WINDOW, n=30, seed=1)
    seen = []
    while (batch := reader.get_next()) is not None:
        x = batch["x"]
        assert x.shape == (1, 2, WINDOW) and x.dtype == np.float32
        hits = [(r, w) for r in range(len(signals)) for w in range(3)
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
    assert len(everything) == 3 * len(train)  # fewer windows than asked: all of them


def test_a_reader_outside_training_rows_or_empty_is_refused(tmp_path, fitted):
    signals, fit = fitted
    leaky = WindowCalibrationReader(signals, fit.rows["test"], WINDOW, n=4)
    with pytest.raises(ConfigError, match=r"calibration: the reader reads rows \[.*\] outside the training rows"):
        quantize_probe_model(fit, signals, WINDOW, tmp_path, reader=leaky)
    with pytest.raises(ConfigError, match="calibration rows: empty; expected at least one training record"):
        calibration_windows(signals, np.array([], dtype=int), WINDOW)
    with pytest.raises(ConfigError, match="calibration windows: expected >= 1, got 0"):
        quantize_probe_model(fit, signals, WINDOW, tmp_path, calibration=0)
    with pytest.raises(ConfigError, match=r"signals: shape \(40, 2, 300\); expected \(R, L, T\) records with T >= "):
        quantize_probe_model(fit, signals[..., :300], WINDOW, tmp_path)
    assert not (tmp_path / "probe_int8.onnx").exists()


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
