"""Saliency of probe decisions: map shapes, determinism, completeness, float64 references, plots, the CLI."""

import csv
import json

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import wfdb
from torch import nn

from ssl_ecg.cli import main
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.head import ProbeModel, WindowFeatures, fit_probe_model
from ssl_ecg.evaluate.saliency import (
    explain_records,
    find_gradcam_layer,
    grad_cam,
    integrated_gradients,
    plot_saliency,
    record_attributions,
    saliency_figure,
)
from ssl_ecg.models import build_encoder

LEADS, S = 3, 400
ENCODERS = {
    "clocs": lambda c: {"name": "clocs", "in_channels": c, "input_len": S, "embed_dim": 8},
    "resnet1d": lambda c: {"name": "resnet1d", "in_channels": c, "embed_dim": 8, "widths": [8, 16], "depth": [1, 1]},
}


def _probe(encoder: nn.Module, per_lead: bool, dim: int, k: int = 1, seed: int = 0) -> ProbeModel:
    """A ProbeModel with a seeded random head (standardisation included) on ``encoder``."""
    g = torch.Generator().manual_seed(seed)
    d = dim * LEADS if per_lead else dim
    return ProbeModel(WindowFeatures(encoder, per_lead), torch.randn(d, generator=g),
                      0.5 + torch.rand(d, generator=g), torch.randn(k, d, generator=g), torch.randn(k, generator=g),
                      "binary" if k == 1 else "multiclass").eval()


def _model(name: str, per_lead: bool, seed: int = 0) -> ProbeModel:
    torch.manual_seed(seed)
    enc = build_encoder(ENCODERS[name](1 if per_lead else LEADS))
    return _probe(enc, per_lead, 8, seed=seed)


def _x(n: int = 3, length: int = S, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, LEADS, length, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("per_lead", [True, False])
def test_maps_have_the_input_length_per_lead_and_multi_lead(name, per_lead):
    model, x = _model(name, per_lead), _x()
    attr, delta = integrated_gradients(model, x, n_steps=16)
    cam = grad_cam(model, x)
    assert attr.shape == cam.shape == x.shape and delta.shape == (len(x),)
    lead_spread = (cam - cam[:, :1]).abs().amax()
    if per_lead:  # each lead is its own instance, so its own map
        assert lead_spread > 0
    else:  # one feature map for all leads, broadcast
        assert lead_spread == 0
    assert (cam >= 0).all()  # ReLU (Selvaraju et al.)


@pytest.mark.parametrize("per_lead", [True, False])
def test_maps_are_bit_identical_across_calls(per_lead):
    model, x = _model("clocs", per_lead), _x()
    a1, d1 = integrated_gradients(model, x, n_steps=16)
    a2, d2 = integrated_gradients(model, x, n_steps=16)
    assert torch.equal(a1, a2) and torch.equal(d1, d2)
    assert torch.equal(grad_cam(model, x), grad_cam(model, x))
    r1, _ = record_attributions(model, _x(2, 2 * S + 30), S, method="gradcam")
    r2, _ = record_attributions(model, _x(2, 2 * S + 30), S, method="gradcam")
    np.testing.assert_array_equal(r1, r2)
    assert not model.training


def test_training_flag_is_restored():
    model = _model("clocs", True).train()
    integrated_gradients(model, _x(), n_steps=4)
    grad_cam(model, _x())
    assert model.training


@pytest.mark.parametrize("name", list(ENCODERS))
def test_ig_is_complete(name):
    """sum IG = F(x) - F(0) up to the quadrature error, which captum's delta reports and more steps shrink (ReLU
    and max-pool kinks make the integrand piecewise smooth, so it converges slowly)."""
    model, x = _model(name, True), _x(2)
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x)))[:, 0].double()
    coarse = integrated_gradients(model, x, n_steps=16)[1].abs().max()
    attr, delta = integrated_gradients(model, x, n_steps=256)
    total = attr.double().sum((1, 2))
    np.testing.assert_allclose(total - gap, delta.double(), atol=1e-5)  # the delta is the completeness error
    assert delta.abs().max() <= 0.02 * gap.abs().max()
    assert delta.abs().max() <= max(coarse / 5, 1e-5)  # 1e-5: float32 rounding of the sums


@pytest.mark.parametrize("per_lead", [True, False])
def test_ig_of_a_linear_model_is_input_times_gradient(per_lead):
    """A conv-free linear encoder: F(x) = W ((A x + a - mu) / sigma) + b, so IG(x; 0) = x * dF/dx exactly."""
    torch.manual_seed(3)
    width = S if per_lead else LEADS * S
    enc = nn.Sequential(nn.Flatten(), nn.Linear(width, 5))
    model = _probe(enc, per_lead, 5, seed=3)
    x = _x(2, seed=4)
    attr, delta = integrated_gradients(model, x, n_steps=8)
    a_mat = enc[1].weight.detach().double().numpy()  # (5, width)
    w = model.linear.weight.detach().double().numpy()[0] / model.scale.double().numpy()  # (D,)
    if per_lead:  # feature lead * 5 + e is that lead's embedding e
        grad = np.stack([w[lead * 5:(lead + 1) * 5] @ a_mat for lead in range(LEADS)])  # (L, S)
    else:
        grad = (w @ a_mat).reshape(LEADS, S)
    expected = x.double().numpy() * grad[None]
    np.testing.assert_allclose(attr.double().numpy(), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    assert delta.abs().max() < 1e-4


def _gradcam_reference(model: ProbeModel, layer: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Grad-CAM by hand in float64: A from a hook, dF/dA by autograd, ReLU(sum_c mean_t(dF/dA) A_c), linear
    interpolation to S (align_corners=False: sample centres)."""
    model = model.double()
    store = {}
    hook = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        out = model(x.double())[:, 0].sum()
    finally:
        hook.remove()
    act = store["a"]
    grad, = torch.autograd.grad(out, act)
    cam = torch.relu((grad.mean(-1, keepdim=True) * act).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-1], mode="linear", align_corners=False)[:, 0]
    model.float()
    return cam.detach().numpy()


@pytest.mark.parametrize("name,expected", [("clocs", "features.12"), ("resnet1d", "blocks")])
def test_gradcam_finds_the_last_rectified_conv_map_and_matches_a_float64_reference(name, expected):
    model, x = _model(name, True), _x(2)
    layer_name, layer = find_gradcam_layer(model, x)
    assert layer_name == expected
    # Selvaraju et al.'s map is rectified: the chosen layer's output is >= 0; CLOCS' raw last conv output is not
    maps = {}
    encoder = model.features.encoder
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: maps.__setitem__(n, o.detach()))
             for n, m in encoder.named_modules() if n in (expected, "features.10")]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert (maps[expected] >= 0).all() and maps[expected].shape[-1] > 1
    if name == "clocs":
        assert isinstance(layer, nn.ReLU) and (maps["features.10"] < 0).any()
    cam = grad_cam(model, x).double().numpy()
    ref = _gradcam_reference(model, layer, x).reshape(2, LEADS, S)  # per-lead instances, lead-major per window
    np.testing.assert_allclose(cam, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_gradcam_needs_a_convolution():
    enc = nn.Sequential(nn.Flatten(), nn.Linear(S, 5))
    model = _probe(enc, True, 5)
    with pytest.raises(ConfigError, match="no Conv1d"):
        grad_cam(model, _x())


def test_bad_arguments_are_named():
    model = _model("clocs", True)
    with pytest.raises(ConfigError, match="target: output index 1"):
        integrated_gradients(model, _x(), target=1)
    with pytest.raises(ConfigError, match="baseline"):
        integrated_gradients(model, _x(), baseline="noise")
    with pytest.raises(ConfigError, match=r"x: expected floating windows \(N, L, S\)"):
        grad_cam(model, torch.zeros(LEADS, S))
    with pytest.raises(ConfigError, match="method"):
        record_attributions(model, _x(1, 2 * S), S, method="saliency")


def test_record_attribution_is_the_window_attributions_over_the_window_count():
    """g(x) = mean_w F(x_w): IG(g) = concat_w IG(F; x_w) / W, zero after the last whole window, still complete."""
    model = _model("clocs", True)
    rec = _x(2, 3 * S + 57, seed=5)
    attr, delta = record_attributions(model, rec, S, n_steps=32)
    assert attr.shape == tuple(rec.shape)
    for w in range(3):
        win, _ = integrated_gradients(model, rec[..., w * S:(w + 1) * S], n_steps=32)
        np.testing.assert_allclose(attr[..., w * S:(w + 1) * S], win.numpy() / 3, rtol=1e-5, atol=1e-8)
    assert (attr[..., 3 * S:] == 0).all()
    gap = model.record_logits(rec, S)[:, 0].astype(np.float64) - model.record_logits(torch.zeros_like(rec), S)[:, 0]
    np.testing.assert_allclose(attr.astype(np.float64).sum((1, 2)) - gap, delta, atol=1e-5)
    cam, cam_delta = record_attributions(model, rec, S, method="gradcam")
    win = grad_cam(model, rec[..., S:2 * S]).numpy() / 3
    np.testing.assert_allclose(cam[..., S:2 * S], win, rtol=1e-5, atol=1e-8)
    assert np.isnan(cam_delta).all()


def test_plot_has_one_axis_per_lead_and_a_colour_bar(tmp_path):
    rng = np.random.default_rng(0)
    signal, attr = rng.standard_normal((LEADS, 500)), rng.standard_normal((LEADS, 500))
    peaks = np.array([40, 140, 240, 340, 440])
    fig = saliency_figure(signal, attr, 100.0, ["I", "II", "V1"], peaks, "t")
    assert len(fig.axes) == LEADS + 1
    marked = [line for line in fig.axes[0].lines if line.get_marker() == "v"]
    assert len(marked) == 1 and np.allclose(marked[0].get_xdata(), peaks / 100.0)
    np.testing.assert_allclose(marked[0].get_ydata(), signal[0, peaks])
    import matplotlib.pyplot as plt

    plt.close(fig)
    path = plot_saliency(signal, attr, 100.0, None, peaks, tmp_path / "a" / "s.png", "title")
    assert path.stat().st_size > 1000
    assert matplotlib.image.imread(path).ndim == 3
    with pytest.raises(ConfigError, match="attribution"):
        plot_saliency(signal, attr[:, :10], 100.0, None, None, tmp_path / "b.png")


def _fitted(seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 30
    patients = [f"p{i}" for i in range(n)]
    signals = rng.standard_normal((n, LEADS, 2 * S)).astype(np.float32)
    table = pd.DataFrame({"patient_id": patients, "record_id": [f"r{i}" for i in range(n)],
                          "task": (np.arange(n) % 2).astype(float)})
    splits = {"train": patients[:18], "val": patients[18:24], "test": patients[24:]}
    torch.manual_seed(0)
    enc = build_encoder(ENCODERS["clocs"](1))
    return fit_probe_model(enc, signals, table, splits, "task", window=S, per_lead=True), signals, table


def test_explain_records_top_k_and_chosen_records(tmp_path):
    fitted, signals, table = _fitted()
    test_rows = fitted.rows["test"]
    out = explain_records(fitted, signals, table, tmp_path / "top", S, 100.0, top_k=2, n_steps=8)
    scores = fitted.model.record_scores(signals[test_rows], S)
    best = np.argsort(-scores, kind="stable")[:2]
    assert [e["record_id"] for e in out["records"]] == list(table["record_id"].to_numpy()[test_rows][best])
    np.testing.assert_allclose([e["score"] for e in out["records"]], scores[best], rtol=1e-6)
    saved = json.loads((tmp_path / "top" / "saliency.json").read_text())
    assert saved["records"] == out["records"] and saved["method"] == "ig"
    for e in saved["records"]:
        assert (tmp_path / "top" / e["file"]).stat().st_size > 1000
        assert e["label"] == fitted.y[int(e["record_id"][1:])]
    chosen = explain_records(fitted, signals, table, tmp_path / "one", S, 100.0, records=["r25"], method="gradcam")
    assert [e["record_id"] for e in chosen["records"]] == ["r25"] and chosen["records"][0]["completeness_delta"] is None
    with pytest.raises(ConfigError, match=r"record: \['r0'\] not among the 6 test records"):
        explain_records(fitted, signals, table, tmp_path / "x", S, 100.0, records=["r0"])  # a training record
    with pytest.raises(ConfigError, match="method"):
        explain_records(fitted, signals, table, tmp_path / "x", S, 100.0, method="lime")
    with pytest.raises(ConfigError, match="target"):
        explain_records(fitted, signals, table, tmp_path / "x", S, 100.0, target=1)


LUDB_LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]


def _ludb_like(tmp_path, ecg_like, n=24):
    """A tiny LUDB layout: ``n`` 10 s 12-lead ECG-like records at 100 Hz, one patient each, lad alternating."""
    root = tmp_path / "ludb"
    (root / "data").mkdir(parents=True)
    for i in range(1, n + 1):
        mv = ecg_like(12, 1000, 100.0, seed=i, hr=60 + i)
        wfdb.wrsamp(str(i), fs=100, units=["mV"] * 12, sig_name=LUDB_LEADS,
                    d_signal=np.round(mv.T * 1000).astype(np.int64), fmt=["16"] * 12, adc_gain=[1000.0] * 12,
                    baseline=[0] * 12, write_dir=str(root / "data"))
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in range(1, n + 1)))
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies"])
        for i in range(1, n + 1):
            axis = "left axis deviation" if i % 2 else "normal"
            w.writerow([i, "M", 50, "Sinus rhythm", f"Electric axis of the heart: {axis}", ""])
    return root


def test_explain_command_end_to_end(tmp_path, ecg_like, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the checkout
    root = _ludb_like(tmp_path, ecg_like)
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(f"name: sal\nroot: {root}\nfs: 100\nwindow: 4.0\nleads: [II, V1]\n"
                      f"cache_dir: {tmp_path / 'cache'}\n")
    runs = tmp_path / "runs"
    args = ["explain", str(recipe), "--task", "lad", "--runs", str(runs), "--quiet"]
    assert main(args + ["--top-k", "2"]) == 0
    out = runs / "sal" / "explain"
    summary = json.loads((out / "saliency.json").read_text())
    assert summary["arm"] == "random_init" and summary["task"] == "lad" and len(summary["records"]) == 2
    for entry in summary["records"]:
        assert (out / entry["file"]).stat().st_size > 1000
        assert entry["r_peaks"] >= 8  # 10 s at 61-84 bpm
    assert "saliency.json" in capsys.readouterr().out
    test_id = summary["records"][0]["record_id"]
    assert main(args + ["--record", test_id, "--method", "gradcam", "--out", "cam"]) == 0
    assert json.loads((runs / "sal" / "cam" / "saliency.json").read_text())["records"][0]["record_id"] == test_id
    capsys.readouterr()
    for extra, message in ((["--record", "999"], "record: ['999']"), (["--method", "lime"], "method"),
                           (["--out", "../elsewhere"], "name='../elsewhere'")):
        assert main(args + extra) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["explain", str(recipe), "--task", "nope", "--runs", str(runs), "--quiet"]) == 2
    assert "'nope'" in capsys.readouterr().err


def test_explain_records_refuses_short_records_and_notes_a_top_k_above_the_split(tmp_path):
    fitted, signals, table = _fitted()
    with pytest.raises(ConfigError, match=r"signals: the 30 record\(s\) have 300 samples, shorter than one "
                                          r"400-sample window"):
        explain_records(fitted, signals[..., :300], table, tmp_path / "short", S, 100.0, top_k=1)
    assert not (tmp_path / "short").exists()  # before any computation or file
    with pytest.raises(ConfigError, match=r"shorter than one 400-sample window"):
        record_attributions(fitted.model, signals[:2, :, :300], S)
    out = explain_records(fitted, signals, table, tmp_path / "all", S, 100.0, top_k=10, method="gradcam")
    assert len(out["records"]) == 6  # the test split has 6 records
    assert out["note"] == "top_k 10 asked, but the test split of this task has only 6 records: all 6 are explained"
    assert out["note"] in out["selection"]  # the CLI prints the selection
    assert explain_records(fitted, signals, table, tmp_path / "two", S, 100.0, top_k=2,
                           method="gradcam")["note"] is None
