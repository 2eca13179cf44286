import numpy as np
import pytest
import torch

from ssl_ecg.evaluate import EncoderChangedError, assert_unchanged, embed_records, frozen_state, tile_windows
from ssl_ecg.models import ClocsEncoder


def test_tile_windows_order():
    x = torch.arange(2 * 3 * 10, dtype=torch.float32).reshape(2, 3, 10)
    w = tile_windows(x, 4)
    assert w.shape == (2, 2, 3, 4)
    assert torch.equal(w[1, 1, 2], x[1, 2, 4:8])
    with pytest.raises(ValueError, match="shorter than the 11-sample window"):
        tile_windows(x, 11)


def test_embeddings_leave_encoder_bit_identical_and_mode_restored():
    enc = ClocsEncoder(input_len=400, embed_dim=8).train()  # a careless caller leaves train mode on
    before = frozen_state(enc)
    x = np.random.default_rng(0).standard_normal((5, 3, 850)).astype(np.float32)
    z = embed_records(enc, x, window=400)
    assert z.shape == (5, 3 * 8)
    assert enc.training
    assert_unchanged(enc, before)  # BatchNorm running stats untouched
    # Mean over the two windows, leads concatenated in order.
    enc.eval()
    with torch.no_grad():
        xt = torch.as_tensor(x)
        w0 = enc(xt[:, :, :400].reshape(15, 1, 400)).reshape(5, 24)
        w1 = enc(xt[:, :, 400:800].reshape(15, 1, 400)).reshape(5, 24)
    np.testing.assert_allclose(z, ((w0 + w1) / 2).numpy(), rtol=1e-5, atol=1e-6)


def test_change_is_detected():
    enc = ClocsEncoder(input_len=400, embed_dim=8)
    before = frozen_state(enc)
    enc.train()
    enc(torch.randn(4, 1, 400))  # updates BatchNorm running stats
    with pytest.raises(EncoderChangedError, match="running_mean"):
        assert_unchanged(enc, before)


def test_finetune_trains_a_copy_and_leaves_the_callers_encoder_unchanged():
    from ssl_ecg.evaluate import ProbeData, finetune
    from ssl_ecg.evaluate.embed import frozen_state
    from ssl_ecg.models import build_encoder

    rng = np.random.default_rng(0)

    def task(n):
        y = rng.integers(0, 2, n)
        x = rng.standard_normal((n, 2, 800)).astype(np.float32) * 0.3
        x[:, 0, :] += (2 * y - 1)[:, None] * np.sin(np.linspace(0, 40, 800))[None, :]  # class sets the polarity
        return x, y

    torch.manual_seed(0)
    enc = build_encoder({"name": "clocs", "in_channels": 1, "input_len": 400, "embed_dim": 8})
    before = frozen_state(enc)
    res = finetune(enc, ProbeData(*task(64), *task(32), *task(64)), window=400, per_lead=True, lr=3e-3, epochs=8,
                   encoder_lr_factor=0.5, batch_size=16)
    assert res.test_auroc > 0.9 and 0 <= res.setting["epoch"] < 8
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_mean_lead_features_are_the_float64_mean_of_the_concatenated_lead_blocks():
    torch.manual_seed(0)
    enc = ClocsEncoder(input_len=400, embed_dim=8).eval()
    x = np.random.default_rng(1).standard_normal((5, 3, 850)).astype(np.float32)
    cat = embed_records(enc, x, window=400)  # (5, 3 * 8), leads in order
    mean = embed_records(enc, x, window=400, lead_features="mean")
    assert mean.shape == (5, 8) and mean.dtype == np.float32
    ref = cat.astype(np.float64).reshape(5, 3, 8).mean(axis=1)  # blocks [lead0 | lead1 | lead2]
    np.testing.assert_allclose(mean, ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(mean, cat[:, :8])  # not just the first lead's block
    # Multi-lead encoders have no lead blocks: the option leaves them alone.
    multi = ClocsEncoder(in_channels=3, input_len=400, embed_dim=8).eval()
    np.testing.assert_array_equal(embed_records(multi, x, 400, per_lead=False, lead_features="mean"),
                                  embed_records(multi, x, 400, per_lead=False))
    from ssl_ecg.errors import ConfigError

    with pytest.raises(ConfigError, match="lead_features: expected one of"):
        embed_records(enc, x, window=400, lead_features="sum")


def test_lead_features_enter_the_fingerprint_of_frozen_probe_cells_only():
    from ssl_ecg.errors import ConfigError
    from ssl_ecg.evaluate.curve import CurveSpec, cell_fingerprint

    base = dict(tasks=["y"], window=400, per_lead={"ssl": True, "multi": False, "supervised": True},
                supervised={"name": "clocs"})
    cat, mean = CurveSpec(**base), CurveSpec(**base, lead_features="mean")
    assert cat.lead_features == "concat"  # the default

    def fp(spec, arm, probe):
        return cell_fingerprint(spec, "y", arm, probe, 1.0, 0, encoder_key={"w": arm}, data_key={"d": 1})

    for probe in ("logistic", "torch", "knn"):
        assert fp(cat, "ssl", probe) != fp(mean, "ssl", probe)
        assert fp(cat, "multi", probe) == fp(mean, "multi", probe)  # multi-lead encoder: same features
    assert fp(cat, "ssl", "finetune") == fp(mean, "ssl", "finetune")
    assert fp(cat, "supervised", "supervised") == fp(mean, "supervised", "supervised")
    with pytest.raises(ConfigError, match="lead_features"):
        CurveSpec(**base, lead_features="max")


def test_a_curve_runs_on_mean_pooled_lead_features_and_resume_recomputes_concat_rows(tmp_path):
    import pandas as pd

    from ssl_ecg.evaluate.curve import CurveSpec, run_curve

    rng = np.random.default_rng(0)
    n = 40
    y = np.arange(n) % 2
    x = rng.standard_normal((n, 2, 400)).astype(np.float32) * 0.3
    x[:, 0] += (y[:, None] * 2.0 - 1.0) * np.sin(2 * np.pi * 3 * np.arange(400) / 100.0)[None]
    table = pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "y": y.astype(float)})
    pats = table["patient_id"].tolist()
    splits = {"train": pats[:24], "val": pats[24:32], "test": pats[32:]}
    torch.manual_seed(0)
    enc = {"ssl": ClocsEncoder(input_len=400, embed_dim=8).eval()}
    spec = dict(tasks=["y"], fractions=[1.0], seeds=[0], window=400, supervised=None, probes=["logistic"])
    cat = run_curve(x, table, splits, enc, CurveSpec(**spec), tmp_path, progress=False)
    with pytest.warns(UserWarning, match="fingerprint differs"):
        mean = run_curve(x, table, splits, enc, CurveSpec(**spec, lead_features="mean"), tmp_path, progress=False)
    assert len(mean) == 1 and mean["value"].between(0, 1).all()
    assert mean["fingerprint"].iloc[0] != cat["fingerprint"].iloc[0]  # the concat row was not reused
    assert pd.read_csv(tmp_path / "curve.csv")["fingerprint"].tolist() == mean["fingerprint"].tolist()


def test_eval_recipe_validates_lead_features():
    from ssl_ecg.errors import ConfigError
    from ssl_ecg.evaluate.runner import EvalConfig
    from ssl_ecg.recipe import load_recipe

    assert load_recipe(EvalConfig).lead_features == "concat"
    assert load_recipe(EvalConfig, None, {"lead_features": "mean"}).lead_features == "mean"
    with pytest.raises(ConfigError, match="lead_features='sum': expected one of 'concat', 'mean'"):
        load_recipe(EvalConfig, None, {"lead_features": "sum"})
