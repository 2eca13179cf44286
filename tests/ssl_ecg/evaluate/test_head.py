"""ProbeModel: the encoder and its logistic probe as one module give the probe's own test scores."""

import numpy as np
import pandas as pd
import pytest
import torch

from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.head import ProbeModel, fit_probe_model, load_probe_head, probe_rows, save_probe_head
from ssl_ecg.models import build_encoder


def _data(kind: str, n_patients: int = 30, per_patient: int = 2, leads: int = 3, length: int = 1600, seed: int = 0):
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i}" for i in range(n_patients)], per_patient)
    if kind == "binary":
        labels = np.tile([0, 1], n_patients // 2 + 1)[:n_patients]
        col = np.repeat(labels, per_patient).astype(float)
    elif kind == "multiclass":
        names = np.array(["a", "b", "c"])
        col = np.repeat(names[np.arange(n_patients) % 3], per_patient)
    else:  # multilabel: lists of classes
        sets = [["x"], ["y"], ["x", "y"], ["z"], ["y", "z"]]
        col = [sets[i % len(sets)] for i in range(n_patients) for _ in range(per_patient)]
    signals = rng.standard_normal((len(patients), leads, length)).astype(np.float32)
    table = pd.DataFrame({"patient_id": patients, "task": col})
    ids = [f"p{i}" for i in range(n_patients)]
    splits = {"train": ids[:18], "val": ids[18:24], "test": ids[24:]}
    return signals, table, splits


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("per_lead", [True, False])
def test_record_scores_equal_the_probe_test_scores(kind, per_lead):
    signals, table, splits = _data(kind)
    torch.manual_seed(0)
    enc = build_encoder({"name": "clocs", "in_channels": 1 if per_lead else 3, "input_len": 400, "embed_dim": 16})
    fitted = fit_probe_model(enc, signals, table, splits, "task", window=400, per_lead=per_lead)
    scores = fitted.model.record_scores(signals[fitted.rows["test"]], 400)
    expected = fitted.result.test_scores
    assert scores.shape == np.asarray(expected).shape
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    assert fitted.model.kind == kind
    # the labelled patients are the training draw and validation, never test
    assert set(fitted.label_patients) == set(splits["train"]) | set(splits["val"])


def test_window_logits_average_to_the_record_logit():
    signals, table, splits = _data("binary")
    torch.manual_seed(1)
    enc = build_encoder({"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 8})
    model = fit_probe_model(enc, signals, table, splits, "task", window=400, per_lead=True).model
    x = torch.as_tensor(signals[:2])
    with torch.no_grad():
        per_window = torch.stack([model(x[..., w * 400:(w + 1) * 400]) for w in range(4)], 1).mean(1)
    np.testing.assert_allclose(model.record_logits(signals[:2], 400), per_window.numpy(), rtol=1e-5, atol=1e-5)


def test_fraction_draw_is_nested_and_seeded():
    _, table, splits = _data("binary")
    small, _, _ = probe_rows(table, splits, "task", fraction=0.25, seed=3)
    large, _, _ = probe_rows(table, splits, "task", fraction=0.5, seed=3)
    again, _, _ = probe_rows(table, splits, "task", fraction=0.25, seed=3)
    assert set(small["train"]) < set(large["train"])
    np.testing.assert_array_equal(small["train"], again["train"])
    np.testing.assert_array_equal(small["test"], large["test"])


def test_head_round_trip(tmp_path):
    signals, table, splits = _data("multiclass")
    torch.manual_seed(2)
    enc = build_encoder({"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 8})
    model = fit_probe_model(enc, signals, table, splits, "task", window=400, per_lead=True).model
    path = save_probe_head(model, tmp_path / "head.safetensors", meta={"task": "task"})
    again, card = load_probe_head(enc, path)
    assert card["task"] == "task" and card["kind"] == "multiclass" and card["classes"] == ["a", "b", "c"]
    np.testing.assert_array_equal(again.record_logits(signals[:4], 400), model.record_logits(signals[:4], 400))


def test_bad_inputs_are_named(tmp_path):
    signals, table, splits = _data("binary")
    enc = build_encoder({"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 8})
    with pytest.raises(ConfigError, match="task: column 'nope'"):
        fit_probe_model(enc, signals, table, splits, "nope", window=400, per_lead=True)
    with pytest.raises(ConfigError, match="fraction"):
        probe_rows(table, splits, "task", fraction=0.0)
    with pytest.raises(ConfigError, match="probe head file not found"):
        load_probe_head(enc, tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "bad.json").write_text('{"kind": "binary", "per_lead": true}')
    with pytest.raises(ConfigError, match="expected a probe head"):
        load_probe_head(enc, tmp_path / "bad.safetensors")
    feats = torch.nn.Identity()
    with pytest.raises(ConfigError, match="do not fit"):
        ProbeModel(feats, torch.zeros(3), torch.ones(3), torch.zeros(1, 4), torch.zeros(1), "binary")


def test_record_logits_refuse_records_shorter_than_the_window_before_computing():
    signals, table, splits = _data("binary")
    torch.manual_seed(0)
    enc = build_encoder({"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 16})
    fitted = fit_probe_model(enc, signals, table, splits, "task", window=400, per_lead=True)
    calls = []
    hook = enc.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ConfigError, match=r"signals: the 5 record\(s\) have 300 samples, shorter than one "
                                              r"400-sample window"):
            fitted.model.record_logits(signals[:5, :, :300], 400)
        with pytest.raises(ConfigError, match=r"signals: shape \(3, 400\); expected records \(R, L, T\)"):
            fitted.model.record_scores(signals[0, :, :400], 400)
        assert not calls  # refused before the encoder ran
        assert fitted.model.record_logits(signals[:2, :, :400], 400).shape == (2, 1)
    finally:
        hook.remove()
