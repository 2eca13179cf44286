"""Issue 17: damaged WFDB records, multi-frequency records, non-finite samples and lead lists."""

import os
import shutil

import numpy as np
import pytest
import wfdb

from ssl_ecg.data import read_record
from ssl_ecg.data.other import read_tolerant as read_tolerant_compat
from ssl_ecg.data.preprocess import check_signal, preprocess, resolve_lead_names, select_leads
from ssl_ecg.data.record import Record, read_tolerant
from ssl_ecg.errors import RecordError


def _write(folder, name, n_leads=2, n=500, fs=250.0, seed=0):
    sig = np.random.default_rng(seed).standard_normal((n, n_leads))
    wfdb.wrsamp(name, fs=fs, units=["mV"] * n_leads, sig_name=["I", "II", "III"][:n_leads], p_signal=sig,
                fmt=["16"] * n_leads, write_dir=str(folder))
    return folder / name, sig


def _edit_header(path, edit):
    hea = path.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join(edit(lines)) + "\n")


def _rec(sig, leads=None):
    leads = leads or [f"L{i}" for i in range(len(sig))]
    return Record(signal=np.asarray(sig, np.float32), fs=100.0, leads=leads, record_id="r", patient_id="p",
                  path="/x/r")


# --- non-finite samples -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, kind", [(np.inf, r"\+inf"), (-np.inf, "-inf"), (np.nan, "NaN")])
def test_non_finite_samples_are_bad_leads(value, kind):
    sig = np.random.default_rng(0).standard_normal((3, 200))
    sig[1, [3, 70]] = value
    with pytest.raises(RecordError, match=rf"/x/r: bad leads \['L1 \({kind}\)'\], non-finite samples per lead "
                                          r"\{'L1': 2\}"):
        check_signal(_rec(sig), "error")
    stats = {}
    assert check_signal(_rec(sig), "drop_record", stats) is None
    assert stats == {"nonfinite_samples": 2, "dropped_records": 1}
    stats = {}
    fixed = check_signal(_rec(sig), "zero_lead", stats)
    assert stats == {"nonfinite_samples": 2, "zeroed_leads": 1}
    assert np.all(fixed.signal[1] == 0) and np.isfinite(fixed.signal).all()
    np.testing.assert_array_equal(fixed.signal[[0, 2]], sig[[0, 2]].astype(np.float32))


def test_inf_does_not_reach_preprocessed_output():
    sig = np.random.default_rng(1).standard_normal((2, 1000))
    sig[0, 10] = np.inf
    out = preprocess(_rec(sig), fs=50.0, bad_lead_policy="zero_lead")
    assert np.isfinite(out.signal).all() and np.all(out.signal[0] == 0)


# --- lead lists ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("leads, dup", [(["II", "II"], "II"), (["ii", "II"], "II"), (["avr", "aVR"], "aVR"),
                                        (["MLII", "mlii"], "mlii"), (["#0", "#0"], "#0")])
def test_duplicate_lead_names_are_refused(leads, dup):
    with pytest.raises(RecordError, match=rf"leads: '{dup}' is given twice"):
        resolve_lead_names(leads)
    with pytest.raises(RecordError, match="given twice"):
        preprocess(_rec(np.random.default_rng(0).standard_normal((2, 100)), ["MLII", "II"]), fs=None, leads=leads)


def test_name_and_position_of_the_same_channel_are_refused():
    rec = _rec(np.random.default_rng(0).standard_normal((2, 100)), ["I", "II"])
    with pytest.raises(RecordError, match=r"leads 'II' and '#1' both select channel 1"):
        select_leads(rec, ["II", "#1"])
    out = select_leads(rec, ["ii", "#0"])
    assert out.leads == ["II", "#0"] and np.array_equal(out.signal, rec.signal[::-1])


def test_non_standard_names_match_case_insensitively_and_ambiguity_is_refused():
    sig = np.random.default_rng(0).standard_normal((3, 100))
    assert select_leads(_rec(sig, ["MLII", "V5", "x"]), ["mlii"]).leads == ["mlii"]
    with pytest.raises(RecordError, match=r"lead 'V5' matches channels \[1, 2\]"):
        select_leads(_rec(sig, ["MLII", "V5", "v5"]), ["V5"])


# --- multi-frequency and low-rate records -------------------------------------------------------------------

def test_multi_frequency_record_is_read_at_the_true_rate(tmp_path):
    fs, frames = 100.0, 400
    t_fast = np.arange(frames * 4) / (fs * 4)
    t_slow = np.arange(frames) / fs
    fast = np.round(1000 * np.sin(2 * np.pi * 3 * t_fast)).astype(np.int64)
    slow = np.round(800 * np.sin(2 * np.pi * 2 * t_slow)).astype(np.int64)
    wfdb.wrsamp("mf", fs=fs, units=["mV", "uV"], sig_name=["I", "II"], e_d_signal=[fast, slow], fmt=["16", "16"],
                adc_gain=[1000.0, 1.0], baseline=[0, 0], samps_per_frame=[4, 1], write_dir=str(tmp_path))
    smoothed = wfdb.rdrecord(str(tmp_path / "mf"))
    assert smoothed.fs == fs and smoothed.p_signal.shape == (frames, 2)  # wfdb's default averages the frames
    rec = read_record(tmp_path / "mf")
    assert rec.fs == 400.0 and rec.signal.shape == (2, frames * 4) and rec.duration_s == 4.0
    np.testing.assert_allclose(rec.signal[0], fast / 1000.0, atol=1e-6)  # fastest channel untouched
    core = slice(40, -40)  # resample_poly edge effects
    np.testing.assert_allclose(rec.signal[1, core], 0.8 * np.sin(2 * np.pi * 2 * t_fast)[core], atol=2e-3)
    digital = read_record(tmp_path / "mf", adc_unit_mv=1e-3)
    assert digital.fs == 400.0 and digital.signal.shape == (2, frames * 4)
    np.testing.assert_allclose(digital.signal[0], fast * 1e-3, rtol=1e-6)


def test_single_frequency_record_with_a_low_frame_rate(tmp_path):
    sig = np.linspace(-1, 1, 600)[:, None]
    wfdb.wrsamp("slow", fs=1, units=["mV"], sig_name=["I"], p_signal=sig, fmt=["16"], write_dir=str(tmp_path))
    rec = read_record(tmp_path / "slow")
    assert rec.fs == 1.0 and rec.signal.shape == (1, 600)
    np.testing.assert_allclose(rec.signal[0], sig[:, 0], atol=1e-3)


# --- damaged headers and signal files -----------------------------------------------------------------------

def test_signals_without_description_get_positional_names(tmp_path):
    path, sig = _write(tmp_path, "nn")
    _edit_header(path, lambda ls: [ls[0]] + [" ".join(line.split()[:-1]) for line in ls[1:]])
    assert wfdb.rdheader(str(path)).sig_name == [None, None]
    rec = read_record(path)
    assert rec.leads == ["#0", "#1"]
    np.testing.assert_allclose(rec.signal, sig.T, atol=1e-3)
    assert select_leads(rec, ["#1"]).leads == ["#1"]


def _damage(tmp_path, case):
    path, _ = _write(tmp_path, "d")
    if case == "missing_dat":
        (tmp_path / "d.dat").unlink()
    elif case == "truncated_dat":
        (tmp_path / "d.dat").write_bytes((tmp_path / "d.dat").read_bytes()[:1001])
    elif case == "sig_len_0":
        _edit_header(path, lambda ls: ["d 2 250 0"] + ls[1:])
    elif case == "unknown_format":
        _edit_header(path, lambda ls: [ls[0], ls[1].replace("d.dat 16", "d.dat 99", 1)] + ls[2:])
    elif case == "gain_0":
        _edit_header(path, lambda ls: [ls[0]] + [" ".join([f[0], f[1], "0/mV"] + f[3:]) for f in
                                                 (line.split() for line in ls[1:])])
    elif case == "non_utf8":
        hea = tmp_path / "d.hea"
        hea.write_bytes(hea.read_bytes() + b"# caf\xe9\n")
    elif case == "non_ascii_units":
        _edit_header(path, lambda ls: [ls[0]] + [line.replace("/mV", "/µV") for line in ls[1:]])
    elif case == "empty_header":
        (tmp_path / "d.hea").write_bytes(b"")
    elif case == "outside_file":
        (tmp_path / "sub").mkdir()
        shutil.copy(tmp_path / "d.dat", tmp_path / "sub" / "x.dat")
        _edit_header(path, lambda ls: [ls[0]] + [line.replace("d.dat", "sub/x.dat") for line in ls[1:]])
    return path


DAMAGE = {
    "missing_dat": r"d\.dat: signal file not found \(named by header .*d\.hea\)",
    "truncated_dat": r"d\.dat: signal file is truncated: 1001 bytes, but header .*d\.hea declares 500 samples x 2 "
                     r"signals in format 16; expected at least 2000 bytes",
    "sig_len_0": r"d\.hea: header declares 0 samples; expected a positive sample count",
    "unknown_format": r"d\.hea: line 2: signal 0 has storage format '99'; expected one of 8, 16",
    "gain_0": r"d\.hea: signal 0 \('I'\) has ADC gain 0 \(uncalibrated amplitudes\); expected a non-zero gain",
    "non_utf8": r"d\.hea: not UTF-8 text \(byte 0xe9 at offset \d+\); expected an ASCII WFDB header",
    "non_ascii_units": r"d\.hea: line 2 holds the non-ASCII character 'µ'; expected ASCII",
    "empty_header": r"d\.hea: header is empty \(0 bytes\); expected a WFDB record line",
    "outside_file": r"d\.hea: signal file 'sub/x\.dat' is not a plain file name",
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_records_raise_one_record_error_naming_the_file(tmp_path, case):
    path = _damage(tmp_path, case)
    with pytest.raises(RecordError, match=DAMAGE[case]):
        read_record(path)
    with pytest.raises(RecordError, match=DAMAGE[case]):
        read_tolerant(path)  # the fallback neither hides the damage nor crashes


def test_gain_0_is_readable_in_digital_units(tmp_path):
    path = _damage(tmp_path, "gain_0")
    d = wfdb.rdrecord(str(path), physical=False).d_signal.T
    np.testing.assert_allclose(read_record(path, adc_unit_mv=1e-3).signal, d * 1e-3, rtol=1e-6)


# --- the tolerant reader ------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["../planted.mat", "/tmp/planted.mat", "a/b.mat"])
def test_tolerant_reader_refuses_signal_files_outside_the_record_folder(tmp_path, monkeypatch, target):
    folder = tmp_path / "records"
    folder.mkdir()
    path, _ = _write(folder, "A00001", n_leads=1)
    shutil.copy(folder / "A00001.dat", tmp_path / "planted.mat")
    # a CinC 2017-style base date that wfdb rejects, so the fallback runs
    _edit_header(path, lambda ls: [ls[0] + " 05:05:15 2000-01-05", ls[1].replace("A00001.dat", target, 1)])
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    before = set(os.listdir(tmp_path))
    with pytest.raises(RecordError, match=rf"A00001\.hea: signal file '{target}' is not a plain file name"):
        read_tolerant(path)
    assert set(os.listdir(tmp_path)) == before and os.listdir(tmp_path / "tmp") == []


def test_tolerant_reader_cleans_its_temporary_folder(tmp_path, monkeypatch):
    path, sig = _write(tmp_path, "A00002", n_leads=1)
    _edit_header(path, lambda ls: [ls[0] + " 05:05:15 2000-01-05"] + ls[1:])
    with pytest.raises(RecordError):
        read_record(path)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    rec = read_tolerant(path)
    np.testing.assert_allclose(rec.signal[0], sig[:, 0], atol=1e-3)
    assert rec.path == str(path) and os.listdir(tmp_path / "tmp") == []
    (tmp_path / "A00002.dat").write_bytes(b"")
    with pytest.raises(RecordError, match=rf"^{tmp_path}/A00002\.dat: signal file is truncated: 0 bytes"):
        read_tolerant(path)  # the real damage at the real path, not the rejected date
    assert os.listdir(tmp_path / "tmp") == []
    assert read_tolerant_compat is read_tolerant  # other.py keeps the old import path
