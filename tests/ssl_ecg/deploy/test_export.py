"""ONNX and safetensors export: ONNX Runtime reproduces PyTorch, safetensors reloads bit-identically, the model card
says how to feed the model, and bad inputs give one-line errors."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ssl_ecg import load_encoder
from ssl_ecg.checkpoint import save_encoder
from ssl_ecg.cli import main
from ssl_ecg.deploy.export import (
    CARD_METADATA_KEY,
    ONNX_ATOL,
    ONNX_RTOL,
    export_encoder,
    export_onnx,
    export_safetensors,
    load_onnx_encoder,
    model_card,
    pool_hash,
)
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.head import fit_probe_model, load_probe_head
from ssl_ecg.models import ENCODERS, build_encoder

CLOCS = {"name": "clocs", "input_len": 400, "embed_dim": 8}
RESNET = {"name": "resnet1d", "embed_dim": 8, "widths": [8, 16], "depth": [1, 1]}


def _encoder(config: dict, in_channels: int, seed: int = 0):
    torch.manual_seed(seed)
    enc = build_encoder({**config, "in_channels": in_channels})
    # non-trivial BatchNorm statistics, so a graph that drops or re-estimates them differs
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return enc.eval()


def _probe_data(n_patients: int = 24, leads: int = 2, length: int = 1200, seed: int = 0):
    rng = np.random.default_rng(seed)
    patients = [f"p{i}" for i in range(n_patients)]
    y = np.arange(n_patients) % 2
    signals = rng.standard_normal((n_patients, leads, length)).astype(np.float32)
    table = pd.DataFrame({"patient_id": patients, "task": y.astype(float)})
    splits = {"train": patients[:14], "val": patients[14:19], "test": patients[19:]}
    return signals, table, splits


@pytest.mark.parametrize("config, in_channels", [(CLOCS, 1), (CLOCS, 3), (RESNET, 3)],
                         ids=["clocs-per-lead", "clocs-multi-lead", "resnet1d"])
def test_onnx_round_trip_matches_pytorch(tmp_path, config, in_channels):
    enc = _encoder(config, in_channels).train()  # exported in eval mode (running BatchNorm stats, no dropout)
    real = np.random.default_rng(1).standard_normal((5, in_channels, 400)).astype(np.float32)
    report = export_onnx(enc, tmp_path / "enc.onnx", (2, in_channels, 400), real_inputs=real)
    assert report.input_shape == ["batch", in_channels, 400] and report.output_shape == ["batch", 8]
    assert report.max_abs_diff_real <= report.bound and report.max_abs_diff_random <= report.bound
    onnx_enc = load_onnx_encoder(tmp_path / "enc.onnx")
    x = np.random.default_rng(2).standard_normal((7, in_channels, 400)).astype(np.float32)  # another batch size
    with torch.no_grad():
        ref = enc.eval()(torch.from_numpy(x)).double().numpy()
    enc.train()
    got = onnx_enc(x)
    assert got.shape == (7, 8) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=ONNX_ATOL + ONNX_RTOL * np.abs(ref).max())
    assert enc.training  # the caller's mode is restored


@pytest.mark.parametrize("per_lead", [True, False])
def test_probe_model_onnx_gives_the_probe_record_scores(tmp_path, per_lead):
    signals, table, splits = _probe_data()
    enc = _encoder(CLOCS, 1 if per_lead else 2)
    fitted = fit_probe_model(enc, signals, table, splits, "task", window=400, per_lead=per_lead)
    report = export_onnx(fitted.model, tmp_path / "probe.onnx", (1, 2, 400), real_inputs=signals[:3, :, :400])
    assert report.output_name == "logits" and report.output_shape == ["batch", 1]
    session = load_onnx_encoder(tmp_path / "probe.onnx")
    test = fitted.rows["test"]
    windows = signals[test].reshape(len(test), 2, 3, 400).transpose(0, 2, 1, 3)  # (R, W, L, S)
    logits = session(np.ascontiguousarray(windows.reshape(-1, 2, 400))).reshape(len(test), 3).mean(1)
    np.testing.assert_allclose(logits, fitted.result.test_scores, rtol=1e-4, atol=1e-4)


def test_export_fails_above_the_bound(tmp_path, monkeypatch):
    import ssl_ecg.deploy.export as export

    monkeypatch.setattr(export, "ONNX_RTOL", 0.0)
    monkeypatch.setattr(export, "ONNX_ATOL", 0.0)
    enc = _encoder(RESNET, 3)  # float32 reorderings differ from PyTorch by > 0 somewhere
    with pytest.raises(ConfigError, match=r"ONNX Runtime differs from PyTorch by .* expected at most 0"):
        export_onnx(enc, tmp_path / "enc.onnx", (1, 3, 400))


def test_safetensors_round_trip_is_bit_identical(tmp_path):
    enc = _encoder(CLOCS, 1)
    files = export_safetensors(enc, tmp_path / "out", model_card(enc, fs=100.0, leads=["I", "II"]))
    x = torch.randn(5, 1, 400)
    for path in (tmp_path / "out", files["weights"]):
        again = load_encoder(path)
        assert not again.training
        for (k, v), (k2, v2) in zip(enc.state_dict().items(), again.state_dict().items()):
            assert k == k2 and v.dtype == v2.dtype and torch.equal(v, v2)
        with torch.no_grad():
            assert torch.equal(again(x), enc(x))
    header = json.loads(files["weights"].read_bytes()[8:8 + int.from_bytes(files["weights"].read_bytes()[:8],
                                                                          "little")])
    assert json.loads(header["__metadata__"]["encoder"]) == enc.config  # the config travels in the file


def test_load_encoder_refuses_a_card_that_disagrees_or_a_header_without_config(tmp_path):
    from safetensors.torch import save_file

    enc = _encoder(CLOCS, 1)
    export_safetensors(enc, tmp_path)
    card = json.loads((tmp_path / "model_card.json").read_text())
    card["encoder"]["embed_dim"] = 9
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError, match="model_card.json: its 'encoder' config differs"):
        load_encoder(tmp_path)
    save_file({"w": torch.zeros(1)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ConfigError, match="bare.safetensors: expected safetensors weights with an 'encoder' config"):
        load_encoder(tmp_path / "bare.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="junk.safetensors"):
        load_encoder(tmp_path / "junk.safetensors")
    (tmp_path / "nocard").mkdir()
    export_safetensors(enc, tmp_path / "nocard")
    (tmp_path / "nocard" / "model_card.json").unlink()
    with pytest.raises(ConfigError, match="model_card.json: model card not found"):
        load_encoder(tmp_path / "nocard")


def test_model_card_fields_from_encoder_json(tmp_path):
    enc = _encoder(CLOCS, 1)
    pool = ["ludb:3", "ludb:1", "ludb:2"]
    prov = {"version": 1, "datasets": ["ludb"], "cache_keys": ["k" * 64], "pool_patients": pool,
            "pool_fingerprints": ["f1", "f2", "f3"], "label_patients": [],
            "split": {"hash": "abc123", "patients": {"train": ["1"]}}}
    save_encoder(enc, tmp_path / "run" / "encoder.pt",
                 extra={"method": "cmsc", "provenance": prov,
                        "pretraining": {"config": {"fs": 80.0, "leads": ["II", "V1"], "segment_len": 5.0,
                                                   "normalization": "record"}}})
    card = model_card(enc, tmp_path / "run")
    inp, pre = card["input"], card["pretraining"]
    assert card["encoder"] == enc.config and card["n_parameters"] == sum(p.numel() for p in enc.parameters())
    assert {k: inp[k] for k in ("fs", "window_samples", "window_seconds", "leads", "n_leads", "per_lead",
                                "in_channels", "normalization", "band", "preprocessing_from")} == {
        "fs": 80.0, "window_samples": 400, "window_seconds": 5.0, "leads": ["II", "V1"], "n_leads": 2,
        "per_lead": True, "in_channels": 1, "normalization": "record", "band": None,
        "preprocessing_from": "pretraining recipe"}
    # z-scored per record by default: not millivolts
    assert inp["units"] != "mV" and inp["normalization_rule"].startswith("per record")
    import hashlib

    assert pre["pool_hash"] == hashlib.sha256(b"ludb:1\nludb:2\nludb:3").hexdigest() == pool_hash(pool[::-1])
    assert pre["method"] == "cmsc" and pre["split_hash"] == "abc123" and pre["pool_patients"] == 3
    assert pre["cache_keys"] == ["k" * 64] and pre["label_patients"] == 0
    from ssl_ecg import __version__

    assert card["ssl_ecg_version"] == __version__


def test_probe_head_export_round_trip(tmp_path):
    signals, table, splits = _probe_data()
    enc = _encoder(CLOCS, 1)
    fitted = fit_probe_model(enc, signals, table, splits, "task", window=400, per_lead=True)
    meta = {"task": "task", "fraction": 1.0, "seed": 0, "label_patients": len(fitted.label_patients)}
    export_safetensors(enc, tmp_path, probe=fitted.model, probe_meta=meta)
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["probe"]["task"] == "task" and card["probe"]["kind"] == "binary"
    assert card["probe"]["label_patients"] == 19  # 14 train + 5 val patients
    model, _ = load_probe_head(load_encoder(tmp_path), tmp_path / "probe_head.safetensors")
    np.testing.assert_array_equal(model.record_logits(signals[:3], 400), fitted.model.record_logits(signals[:3], 400))


def test_onnx_encoder_shape_and_dtype_errors(tmp_path):
    enc = _encoder(CLOCS, 3)
    card = model_card(enc, fs=100.0, leads=["I", "II", "V1"])
    export_onnx(enc, tmp_path / "enc.onnx", (1, 3, 400), card=card)
    onnx_enc = load_onnx_encoder(tmp_path / "enc.onnx")
    assert onnx_enc.card["input"]["leads"] == ["I", "II", "V1"]
    good = np.zeros((2, 3, 400), np.float32)
    cases = [(good.astype(np.float64), r"x: dtype float64; expected float32"),
             (torch.zeros(2, 3, 400), r"x: got Tensor; expected a numpy float32 array \(N, 3, 400\)"),
             (good[0], r"x: shape \(3, 400\); expected \(N >= 1, 3, 400\)"),
             (good[:, :2], r"x: 2 leads/channels .* expected 3 lead\(s\) in order \['I', 'II', 'V1'\]"),
             (good[..., :300], r"x: 300 samples per window .* expected 400 \(4 s at 100 Hz\)")]
    for x, message in cases:
        with pytest.raises(ConfigError, match=message):
            onnx_enc(x)


def test_bad_files_and_arguments(tmp_path):
    with pytest.raises(ConfigError, match=r"missing.onnx: ONNX file not found"):
        load_onnx_encoder(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ConfigError, match=r"bad.onnx: not a loadable ONNX model .*expected an .onnx file"):
        load_onnx_encoder(tmp_path / "bad.onnx")
    enc = _encoder(CLOCS, 1)
    with pytest.raises(ConfigError, match=r"example_shape \(1, 2, 400\): the model refuses"):
        export_onnx(enc, tmp_path / "e.onnx", (1, 2, 400))
    with pytest.raises(ConfigError, match=r"real_inputs: shape \(2, 1, 300\); expected"):
        export_onnx(enc, tmp_path / "e.onnx", (1, 1, 400), real_inputs=np.zeros((2, 1, 300), np.float32))
    bare = torch.nn.Conv1d(1, 2, 3)
    with pytest.raises(ConfigError, match="Conv1d: has no config dict"):
        export_safetensors(bare, tmp_path / "bare")
    with pytest.raises(ConfigError, match="Conv1d: has no config dict"):
        model_card(bare)
    with pytest.raises(ConfigError, match="--probe/--task: expected both"):
        export_encoder(tmp_path, tmp_path / "out", task="lad")
    with pytest.raises(ConfigError, match="expected --onnx and/or --safetensors"):
        export_encoder(tmp_path, tmp_path / "out", onnx=False, safetensors=False)


def test_out_paths_stay_inside_out(tmp_path):
    from ssl_ecg.deploy.export import confined

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model_card.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ConfigError, match="outside the output folder"):
        confined(tmp_path / "out", "model_card.json")
    with pytest.raises(ConfigError, match="outside the output folder"):
        confined(tmp_path / "out", "../x.onnx")


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--safetensors"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("ssl-ecg export: error:") and "encoder weights not found" in err
    enc = _encoder(CLOCS, 1)
    save_encoder(enc, tmp_path / "run" / "encoder.pt")
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--probe",
                 str(tmp_path / "missing.yaml"), "--task", "lad"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "missing.yaml: recipe not found" in err


def test_cli_export_writes_every_form_inside_out(tmp_path, capsys):
    enc = _encoder(CLOCS, 1)
    save_encoder(enc, tmp_path / "run" / "encoder.pt",
                 extra={"method": "cmsc", "pretraining": {"config": {"fs": 100.0, "leads": ["I", "II"]}}})
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "encoder.onnx: max |ONNX - PyTorch| random" in out and "model_card.json:" in out and "bytes" in out
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"encoder.onnx", "encoder.safetensors",
                                                             "model_card.json", "encoder.json"}
    assert json.loads((tmp_path / "out" / "encoder.json").read_text()) == json.loads(
        (tmp_path / "run" / "encoder.json").read_text())
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    assert 0 <= card["onnx"]["encoder"]["max_abs_diff_random"] <= card["onnx"]["encoder"]["bound"]
    onnx_enc = load_onnx_encoder(tmp_path / "out")
    assert onnx_enc.card["input"]["leads"] == ["I", "II"] and onnx_enc.input_shape == (None, 1, 400)
    x = np.random.default_rng(0).standard_normal((2, 1, 400)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(onnx_enc(x), load_encoder(tmp_path / "out")(torch.from_numpy(x)).numpy(),
                                   atol=1e-4)
    import onnx

    assert CARD_METADATA_KEY in {p.key for p in onnx.load(str(tmp_path / "out" / "encoder.onnx")).metadata_props}


# every registered encoder, tiny: each must export with a dynamic batch (the transformer needs strict torch.export)
TINY = {"clocs": {"name": "clocs", "input_len": 400, "embed_dim": 8},
        "resnet1d": RESNET,
        "transformer": {"name": "transformer", "embed_dim": 8, "patch": 50, "width": 16, "depth": 1, "heads": 2},
        "mobilenet1d": {"name": "mobilenet1d", "embed_dim": 8, "stem": [8, 4], "layers": [[16, 4]]},
        "mobilenetv2_1d": {"name": "mobilenetv2_1d", "embed_dim": 8, "stem": [8, 4], "blocks": [[2, 16, 1, 4]],
                           "last_channels": 16}}


def test_every_registered_encoder_has_a_tiny_export_config():
    assert set(TINY) == set(ENCODERS)


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_registered_encoder_exports_with_a_dynamic_batch(tmp_path, name):
    enc = _encoder(TINY[name], 1)
    report = export_onnx(enc, tmp_path / "enc.onnx", (2, 1, 400))
    assert report.input_shape == ["batch", 1, 400]
    onnx_enc = load_onnx_encoder(tmp_path / "enc.onnx")
    assert onnx_enc.input_shape == (None, 1, 400)
    for batch in (1, 5):  # neither the example's 2 nor the check's 3
        x = np.random.default_rng(batch).standard_normal((batch, 1, 400)).astype(np.float32)
        with torch.no_grad():
            ref = enc(torch.from_numpy(x)).double().numpy()
        np.testing.assert_allclose(onnx_enc(x), ref, rtol=0, atol=ONNX_ATOL + ONNX_RTOL * np.abs(ref).max())


def test_export_failures_are_one_line_config_errors(tmp_path, monkeypatch):
    enc = _encoder(TINY["mobilenet1d"], 1)

    def broken(*args, **kwargs):
        raise RuntimeError("converter\nexploded")

    with monkeypatch.context() as m:
        m.setattr(torch.onnx, "export", broken)
        with pytest.raises(ConfigError, match=r"e.onnx: mobilenet1d could not be exported to ONNX with a dynamic "
                                              r"batch \(RuntimeError: converter exploded\)") as info:
            export_onnx(enc, tmp_path / "e.onnx", (1, 1, 400))
        assert "\n" not in str(info.value)
    real_export = torch.export.export

    def frozen_batch(model, args, dynamic_shapes=None, strict=False):  # a graph whose batch is fixed
        return real_export(model, args, strict=strict)

    with monkeypatch.context() as m:
        m.setattr(torch.export, "export", frozen_batch)
        with pytest.raises(ConfigError, match=r"f.onnx: ONNX Runtime failed on the random inputs of shape "
                                              r"\(3, 1, 400\) for mobilenet1d \(.*\); expected the exported graph "
                                              r"to run at any batch size") as info:
            export_onnx(enc, tmp_path / "f.onnx", (1, 1, 400))
        assert "\n" not in str(info.value)


def test_non_finite_inputs_are_refused(tmp_path):
    enc = _encoder(CLOCS, 1)
    real = np.zeros((4, 1, 400), np.float32)
    real[2, 0, 7] = np.nan
    with pytest.raises(ConfigError, match=r"real_inputs: windows \[2\] \(1 of 4\) hold NaN or inf"):
        export_onnx(enc, tmp_path / "e.onnx", (1, 1, 400), real_inputs=real)
    export_onnx(enc, tmp_path / "e.onnx", (1, 1, 400))
    onnx_enc = load_onnx_encoder(tmp_path / "e.onnx")
    for bad in (np.nan, np.inf, -np.inf):
        x = np.zeros((3, 1, 400), np.float32)
        x[1, 0, 0] = bad
        with pytest.raises(ConfigError, match=r"x: windows \[1\] \(1 of 3\) hold NaN or inf; expected finite"):
            onnx_enc(x)
    assert np.isfinite(onnx_enc(np.zeros((3, 1, 400), np.float32))).all()


def test_card_units_are_millivolts_only_without_normalisation(tmp_path):
    enc = _encoder(CLOCS, 1)
    for norm, band, units in (("none", None, "mV"), ("lead", [0.5, 40.0], "unitless (normalised)"),
                              ("record", [0.5, None], "unitless (normalised)")):
        save_encoder(enc, tmp_path / norm / "encoder.pt", extra={"pretraining": {"config": {
            "fs": 100.0, "normalization": norm, "band": band}}})
        inp = model_card(enc, tmp_path / norm)["input"]
        assert inp["normalization"] == norm and inp["units"] == units
        if band is None:
            assert inp["band"] is None
        else:
            assert (inp["band"]["highpass_hz"], inp["band"]["lowpass_hz"]) == tuple(band)
    save_encoder(enc, tmp_path / "bare" / "encoder.pt")  # no recipe: nothing claimed
    inp = model_card(enc, tmp_path / "bare")["input"]
    assert inp["units"] is None and inp["normalization"] is None and inp["preprocessing_from"] is None


def test_exported_folder_keeps_the_provenance_and_goes_back_into_a_recipe(tmp_path, ludb_recipe):
    from ssl_ecg.evaluate.provenance import check_overlap, read_provenance
    from ssl_ecg.evaluate.runner import EvalConfig, evaluation_inputs
    from ssl_ecg.recipe import load_recipe

    recipe, run, _ = ludb_recipe
    out = tmp_path / "exported"
    export_encoder(run, out)
    assert {"encoder.safetensors", "model_card.json", "encoder.json", "encoder.onnx"} <= {p.name for p in
                                                                                          out.iterdir()}
    assert read_provenance(out) == read_provenance(run) is not None
    card = json.loads((out / "model_card.json").read_text())
    assert card["pretraining"]["provenance_file"] == "encoder.json"
    inputs = {}
    for name, path in (("run", run), ("exported", out)):
        cfg = load_recipe(EvalConfig, recipe, {"encoders": {"cmsc": str(path)}, "fractions": [1.0]})
        inputs[name] = evaluation_inputs(cfg)
    run_in, exp_in = inputs["run"], inputs["exported"]
    assert exp_in.split.hash == run_in.split.hash and exp_in.split_source == run_in.split_source == "encoders"
    strip = ("path",)
    assert ({k: v for k, v in exp_in.checks["cmsc"].items() if k not in strip}
            == {k: v for k, v in run_in.checks["cmsc"].items() if k not in strip})
    rep = check_overlap("cmsc", read_provenance(out), exp_in.split, exp_in.prepared.table)
    assert rep.to_dict() == check_overlap("cmsc", read_provenance(run), run_in.split, run_in.prepared.table).to_dict()
    # an encoder.json from another run beside this card is refused
    other = json.loads((out / "encoder.json").read_text())
    other["provenance"]["pool_patients"] = other["provenance"]["pool_patients"][:-1]
    (out / "encoder.json").write_text(json.dumps(other))
    with pytest.raises(ConfigError, match=r"its encoder.json names pool .* but model_card.json pool"):
        read_provenance(out)


def test_cli_export_with_probe_writes_probe_onnx_and_the_card_probe_block(tmp_path, ludb_recipe, capsys,
                                                                         monkeypatch):
    import ssl_ecg.evaluate.challenge as challenge
    import ssl_ecg.evaluate.head as head

    recipe, run, prepared = ludb_recipe
    monkeypatch.chdir(tmp_path)
    seen = {}
    fit = head.fit_probe_model

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return fit(*args, **kwargs)

    monkeypatch.setattr(head, "fit_probe_model", spy)
    monkeypatch.setattr(challenge, "challenge_year", lambda dataset: 2021 if dataset == "ludb" else None)
    out = tmp_path / "out"
    assert main(["export", str(run), "--out", str(out), "--probe", str(recipe), "--task", "lad"]) == 0
    printed = capsys.readouterr().out
    assert seen["challenge_year"] == 2021  # as the runner passes it
    assert "probe.onnx: max |ONNX - PyTorch| random" in printed and "real windows" in printed
    assert {"probe.onnx", "encoder.onnx", "probe_head.safetensors", "probe_head.json", "encoder.safetensors",
            "model_card.json", "encoder.json"} <= {p.name for p in out.iterdir()}
    card = json.loads((out / "model_card.json").read_text())
    probe = card["probe"]
    assert probe["task"] == "lad" and probe["kind"] == "binary" and probe["n_outputs"] == 1
    assert probe["split_hash"] == prepared.split.hash and probe["label_patients"] > 0
    assert 0 <= probe["test_auroc"] <= 1 and probe["test_records"] > 0
    inp = card["input"]
    assert inp["preprocessing_from"] == "evaluation recipe" and inp["normalization"] == "record"
    assert inp["units"] != "mV" and inp["fs"] == 100.0 and inp["leads"] == ["II", "V1"]
    assert inp["differs_from_pretraining"] == {}
    assert card["onnx"]["probe"]["max_abs_diff_real"] <= card["onnx"]["probe"]["bound"]
    probe_onnx = load_onnx_encoder(out / "probe.onnx")
    assert probe_onnx.input_shape == (None, 2, 400) and probe_onnx.card["probe"] is not None
    # probe.onnx gives the fitted probe's logits on real windows
    model, _ = load_probe_head(load_encoder(out), out / "probe_head.safetensors")
    x = np.ascontiguousarray(np.asarray(prepared.arrays(400, prepared.rows("test")))[:, :, :400], np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).double().numpy()
    np.testing.assert_allclose(probe_onnx(x), ref, rtol=0, atol=ONNX_ATOL + ONNX_RTOL * np.abs(ref).max())
    # an evaluation recipe that normalises otherwise than pretraining: the card describes the evaluation's input
    # (the probe's) and records the difference, with a warning
    other = tmp_path / "lead.yaml"
    other.write_text(recipe.read_text() + "normalization: lead\n")
    with pytest.warns(UserWarning, match="normalization"):
        assert main(["export", str(run), "--out", str(tmp_path / "lead"), "--probe", str(other), "--task", "lad",
                     "--safetensors"]) == 0
    card = json.loads((tmp_path / "lead" / "model_card.json").read_text())
    assert card["input"]["normalization"] == "lead" and card["input"]["normalization_rule"].startswith("per lead")
    assert card["input"]["differs_from_pretraining"] == {"normalization": {"evaluation": "lead",
                                                                           "pretraining": "record"}}
