import numpy as np
import pandas as pd
import pytest
import torch

from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate import CurveSpec, run_curve
from ssl_ecg.evaluate.embed import embed_records, state_dict_hash
from ssl_ecg.evaluate.features import FILL_VALUE, HandcraftedFeatures, handcrafted_features

FS = 100.0


def beats(r_times_s, seconds=10.0, fs=FS, gains=(1.0, -0.5)):
    """Gaussian P, Q, R (12 ms sd), S and T waves at the given R times; one row per gain, plus light noise (beats from
    0.6 s on: neurokit2 skips a beat in the first few hundred ms)."""
    t = np.arange(int(seconds * fs)) / fs
    wave = np.zeros_like(t)
    for r in r_times_s:
        for offset, height, sd in ((-0.16, 0.12, 0.02), (-0.03, -0.15, 0.008), (0.0, 1.0, 0.012),
                                   (0.03, -0.25, 0.008), (0.25, 0.25, 0.04)):  # P, Q, R, S, T
            wave += height * np.exp(-((t - r - offset) ** 2) / (2 * sd**2))
    noise = 0.005 * np.random.default_rng(0).standard_normal((len(gains), len(t)))
    return np.asarray(gains)[:, None] * wave[None] + noise


def feature(model, z, name):
    return float(z[model.feature_names.index(name)])


@pytest.mark.parametrize("rr_s", [0.6, 0.8, 1.0])
def test_regular_rhythm_gives_the_known_mean_rr_and_heart_rate(rr_s):
    x = beats(np.arange(0.6, 9.8, rr_s))
    model = HandcraftedFeatures(FS, ["I", "II"])
    z = model(torch.tensor(x[None], dtype=torch.float32))[0].numpy()
    assert feature(model, z, "mean_rr_ms") == pytest.approx(1000 * rr_s, abs=10)  # one sample at 100 Hz
    assert feature(model, z, "heart_rate_bpm") == pytest.approx(60 / rr_s, rel=0.015)
    assert feature(model, z, "sdnn_ms") < 10 and feature(model, z, "rr_missing") == 0


def test_irregular_rhythm_matches_a_float64_reference_of_the_rr_statistics():
    rr = np.array([0.62, 0.95, 0.71, 1.10, 0.58, 0.83, 0.99, 0.66, 0.77, 0.90, 0.70])
    r_times = 0.6 + np.concatenate([[0.0], np.cumsum(rr)])
    x = beats(r_times[r_times < 9.8])
    model = HandcraftedFeatures(FS, ["I", "II"])
    z = model(torch.tensor(x[None], dtype=torch.float32))[0].numpy()
    samples = np.round(r_times[r_times < 9.8] * FS)  # where the peaks lie on the sample grid
    nn_ms = np.diff(samples) / FS * 1000.0
    diffs = np.abs(np.diff(nn_ms))
    assert feature(model, z, "mean_rr_ms") == pytest.approx(nn_ms.mean(), abs=2)
    assert feature(model, z, "sdnn_ms") == pytest.approx(nn_ms.std(ddof=1), abs=3)
    assert feature(model, z, "rmssd_ms") == pytest.approx(np.sqrt(np.mean(np.diff(nn_ms) ** 2)), abs=4)
    # pNN50 as the Task Force defines it: successive differences over 50 ms per NN interval (not per difference)
    assert feature(model, z, "pnn50") == pytest.approx(100 * np.sum(diffs > 50) / len(nn_ms), abs=1e-4)
    assert feature(model, z, "cvnn") == pytest.approx(nn_ms.std(ddof=1) / nn_ms.mean(), abs=0.005)


def test_per_lead_amplitudes_follow_the_lead_gains_and_intervals_are_found():
    x = beats(np.arange(0.6, 9.8, 0.8), gains=(0.5, 1.0, -0.8))
    model = HandcraftedFeatures(FS, ["I", "II", "aVR"])
    z = model(torch.tensor(x[None], dtype=torch.float32))[0].numpy()
    amps = [feature(model, z, f"amplitude_{lead}") for lead in ("I", "II", "aVR")]
    assert amps[0] / amps[1] == pytest.approx(0.5, abs=0.05) and amps[2] / amps[1] == pytest.approx(-0.8, abs=0.05)
    assert feature(model, z, "qrs_missing") == 0 and 0 < feature(model, z, "qrs_ms") < 200


def test_features_are_deterministic_and_the_module_has_no_weights():
    x = torch.tensor(beats(np.arange(0.6, 9.8, 0.7))[None], dtype=torch.float32).repeat(3, 1, 1)
    model = HandcraftedFeatures(FS, ["I", "II"])
    assert list(model.parameters()) == [] and model.embed_dim == 14 + 2 * 2
    a, b = model(x), HandcraftedFeatures(FS, ["I", "II"])(x)
    assert torch.equal(a, b) and a.shape == (3, model.embed_dim)
    assert model.config["name"] == "handcrafted" and model.config["fs"] == FS and model.config["leads"] == ["I", "II"]
    assert state_dict_hash(model) == state_dict_hash(HandcraftedFeatures(50.0, ["I", "II"]))  # config tells them apart


def test_flat_and_nan_leads_give_finite_features_with_missing_indicators():
    x = beats(np.arange(0.6, 9.8, 0.8), gains=(1.0, 1.0, 1.0))
    x[0] = 0.0  # flat
    x[1, 100:200] = np.nan  # lead II: NaN, so the reference falls back to the next usable lead (III)
    model = HandcraftedFeatures(FS, ["I", "II", "III"])
    z = model(torch.tensor(x[None], dtype=torch.float32))[0].numpy()
    assert np.isfinite(z).all()
    assert [feature(model, z, f"missing_{lead}") for lead in ("I", "II", "III")] == [1, 1, 0]
    assert feature(model, z, "amplitude_I") == FILL_VALUE and feature(model, z, "rr_missing") == 0
    assert feature(model, z, "mean_rr_ms") == pytest.approx(800, abs=10)
    dead = model(torch.zeros(2, 3, 1000)).numpy()  # nothing usable: every feature filled, every indicator set
    assert np.isfinite(dead).all()
    names = model.feature_names
    assert all(dead[0, names.index(n)] == 1 for n in names if n.endswith("missing") or n.startswith("missing_"))
    assert all(dead[0, names.index(n)] == FILL_VALUE for n in names if "missing" not in n)
    noise = np.random.default_rng(1).standard_normal((1, 200))  # 2 s of noise: few or no beats, still finite
    assert np.isfinite(handcrafted_features(noise, FS, ["II"])).all()


def test_bad_construction_and_inputs_are_named():
    with pytest.raises(ConfigError, match="fs"):
        HandcraftedFeatures(0.0, ["II"])
    with pytest.raises(ConfigError, match="leads"):
        HandcraftedFeatures(FS, [])
    with pytest.raises(ConfigError, match=r"expected \(N, 2, T\)"):
        HandcraftedFeatures(FS, ["I", "II"])(torch.zeros(1, 3, 100))


def test_the_feature_arm_runs_through_embed_records_and_the_curve(tmp_path):
    rng = np.random.default_rng(0)
    n = 24
    y = np.arange(n) % 2
    x = np.stack([beats(0.3 + np.cumsum(rng.uniform(0.45, 1.15, 14) if yi else np.full(14, 0.8)))
                  [:, :1000] for yi in y]).astype(np.float32)  # label 1: irregular RR (AF-like)
    model = HandcraftedFeatures(FS, ["I", "II"])
    feats = embed_records(model, x, window=1000, per_lead=False)
    assert feats.shape == (n, model.embed_dim)
    table = pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "af": y.astype(float)})
    pats = table["patient_id"].tolist()
    splits = {"train": pats[:12], "val": pats[12:18], "test": pats[18:]}
    spec = CurveSpec(tasks=["af"], fractions=[1.0], seeds=[0], window=1000, per_lead={"features": False})
    curve = run_curve(x, table, splits, {"features": model}, spec, tmp_path, progress=False)
    assert list(curve["arm"]) == ["features"] and curve["value"].iloc[0] > 0.9  # RR irregularity separates them

