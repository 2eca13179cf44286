import numpy as np
import pytest

from ssl_ecg.data import Record
from ssl_ecg.data.preprocess import check_signal, normalize, preprocess, resample, select_leads
from ssl_ecg.errors import RecordError


def rec(sig, fs=500.0, leads=None):
    leads = leads or [f"L{i}" for i in range(sig.shape[0])]
    return Record(signal=sig.astype(np.float32), fs=fs, leads=leads, record_id="r", patient_id="p", path="/x/r")


@pytest.mark.parametrize("fs_in,fs_out", [(500, 250), (500, 100), (257, 250), (360, 250), (100, 250)])
def test_resample_keeps_a_sine(fs_in, fs_out):
    t_in = np.arange(0, 10, 1 / fs_in)
    x = np.sin(2 * np.pi * 5 * t_in)[None]
    y = resample(x, fs_in, fs_out)
    t_out = np.arange(y.shape[1]) / fs_out
    assert y.shape[1] == int(np.ceil(len(t_in) * fs_out / fs_in))
    core = slice(int(fs_out), -int(fs_out))  # ignore filter edges
    np.testing.assert_allclose(y[0, core], np.sin(2 * np.pi * 5 * t_out)[core], atol=0.02)


def test_select_leads_is_case_insensitive_and_reorders():
    r = rec(np.arange(6.0).reshape(3, 2) + 1, leads=["I", "aVR", "V1"])
    out = select_leads(r, ["v1", "AVR"])
    assert out.leads == ["V1", "aVR"] and out.signal[:, 0].tolist() == [5.0, 3.0]
    with pytest.raises(RecordError, match=r"\['V6'\] not found"):
        select_leads(r, ["V6"])


def test_bad_lead_policies():
    sig = np.random.default_rng(0).standard_normal((3, 100))
    sig[1] = 0.2  # flat
    sig[2, 5] = np.nan
    with pytest.raises(RecordError, match=r"/x/r.*L1 \(flat\).*L2 \(NaN\)"):
        check_signal(rec(sig), "error")
    assert check_signal(rec(sig), "drop_record") is None
    fixed = check_signal(rec(sig), "zero_lead")
    assert np.all(fixed.signal[1:] == 0) and np.isfinite(fixed.signal).all()
    np.testing.assert_array_equal(fixed.signal[0], sig[0].astype(np.float32))


def test_record_normalisation_keeps_lead_ratios():
    rng = np.random.default_rng(1)
    base = rng.standard_normal(1000)
    sig = np.stack([2 * base + 5, -base, 0.5 * base]).astype(np.float32)
    out = normalize(sig, "record")
    assert np.allclose(out.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(out[1], -0.5 * out[0], atol=1e-5)
    assert out.std() == pytest.approx(1.0, rel=1e-5)
    lead = normalize(sig, "lead")
    np.testing.assert_allclose(lead.std(1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="normalize"):
        normalize(sig, "zscore")


def test_preprocess_resamples_and_normalises():
    sig = np.random.default_rng(2).standard_normal((2, 5000))
    out = preprocess(rec(sig), fs=250.0)
    assert out.fs == 250.0 and out.signal.shape == (2, 2500) and out.signal.dtype == np.float32


def test_bandpass_removes_baseline_and_counts_policy_actions():
    from ssl_ecg.data.preprocess import bandpass

    fs = 250.0
    t = np.arange(0, 20, 1 / fs)
    ecg = np.sin(2 * np.pi * 10 * t)
    wander = 2.0 * np.sin(2 * np.pi * 0.1 * t)
    out = bandpass((ecg + wander)[None], fs, low=0.5)
    core = slice(int(6 * fs), -int(6 * fs))  # filtfilt edge transients of a 0.1 Hz, 2 mV wander
    np.testing.assert_allclose(out[0, core], ecg[core], atol=0.05)
    with pytest.raises(ValueError, match="must lie in"):
        bandpass(ecg[None], fs, low=200.0)
    sig = np.random.default_rng(0).standard_normal((3, 1000))
    sig[2] = 0.0
    stats = {}
    assert preprocess(rec(sig), fs=250.0, bad_lead_policy="zero_lead", band=(0.5, 40.0), stats=stats) is not None
    assert preprocess(rec(sig), fs=250.0, bad_lead_policy="drop_record", stats=stats) is None
    assert stats == {"zeroed_leads": 1, "dropped_records": 1}


def test_leads_can_be_selected_by_position():
    sig = np.arange(6, dtype=np.float32).reshape(3, 2).T.copy()  # (2 leads, 3 samples)
    rec = Record(record_id="r", patient_id="p", signal=sig, fs=100.0, leads=["MLII", "V5"], path="r")
    out = select_leads(rec, ["#1", "#0"])
    assert out.leads == ["#1", "#0"] and np.array_equal(out.signal, sig[::-1])
    with pytest.raises(RecordError, match="#2"):
        select_leads(rec, ["#2"])
