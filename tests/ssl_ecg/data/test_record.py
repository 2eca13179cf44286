import numpy as np
import pytest

from ssl_ecg.data import read_record
from ssl_ecg.data.record import STANDARD_LEADS
from ssl_ecg.errors import RecordError

LOWER = [n.lower() for n in STANDARD_LEADS]


def test_roundtrip_millivolts_and_lead_names(tmp_path, write_wfdb, ecg_like):
    sig = ecg_like(12, 2000, 500.0)
    path = write_wfdb(tmp_path, "r1", sig, 500.0, LOWER)
    rec = read_record(path)
    assert rec.signal.dtype == np.float32 and rec.signal.shape == (12, 2000)
    assert rec.leads == list(STANDARD_LEADS)  # case-insensitive, standard spelling
    assert rec.fs == 500.0 and rec.record_id == "r1" and rec.patient_id == "r1"
    np.testing.assert_allclose(rec.signal, sig, atol=2e-3)  # 16-bit quantisation


def test_microvolt_units_are_converted(tmp_path, write_wfdb, ecg_like):
    sig = ecg_like(2, 1000, 250.0)
    path = write_wfdb(tmp_path, "uv", sig * 1000.0, 250.0, ["I", "II"], units="uV")
    np.testing.assert_allclose(read_record(path).signal, sig, atol=2e-3)


def test_adc_unit_overrides_header_gain(tmp_path, write_wfdb, ecg_like):
    sig = ecg_like(1, 500, 250.0)
    path = write_wfdb(tmp_path, "d", sig, 250.0, ["I"])
    import wfdb

    rec = wfdb.rdrecord(str(path), physical=False)
    expect = (rec.d_signal[:, 0] - rec.baseline[0]) * 1e-3
    np.testing.assert_allclose(read_record(path, adc_unit_mv=1e-3).signal[0], expect, rtol=1e-6)


def test_missing_record_names_the_file(tmp_path, write_wfdb, ecg_like):
    with pytest.raises(RecordError, match=r"nope\.hea.*not found"):
        read_record(tmp_path / "nope")


def test_corrupt_header_names_the_file(tmp_path, write_wfdb, ecg_like):
    (tmp_path / "bad.hea").write_text("bad twelve five-hundred\nthis is not a signal line\n")
    with pytest.raises(RecordError, match=r"bad\.hea"):
        read_record(tmp_path / "bad")


def test_truncated_data_is_an_error(tmp_path, write_wfdb, ecg_like):
    path = write_wfdb(tmp_path, "t", ecg_like(2, 1000, 250.0), 250.0, ["I", "II"])
    dat = tmp_path / "t.dat"
    dat.write_bytes(dat.read_bytes()[:1000])
    with pytest.raises(RecordError, match=r"t\.hea"):
        read_record(path)


def test_unknown_units_rejected(tmp_path, write_wfdb, ecg_like):
    path = write_wfdb(tmp_path, "u", ecg_like(1, 500, 250.0), 250.0, ["I"], units="mmHg")
    with pytest.raises(RecordError, match="mmHg"):
        read_record(path)


def test_explicit_patient_id(tmp_path, write_wfdb, ecg_like):
    path = write_wfdb(tmp_path, "p", ecg_like(1, 500, 250.0), 250.0, ["I"])
    assert read_record(path, patient_id="P7").patient_id == "P7"
