import numpy as np
import pytest
import wfdb

from ssl_ecg.data import load_index
from ssl_ecg.data.mitdb import AAMI_CLASSES, AAMI_MAP, DS1, DS2, PACED, beat_windows
from ssl_ecg.errors import DatasetError


def test_splits_are_disjoint_and_exclude_paced():
    assert len(DS1) == 22 and len(DS2) == 22
    assert not set(DS1) & set(DS2) and not (set(DS1) | set(DS2)) & set(PACED)
    assert set(AAMI_MAP.values()) == set(AAMI_CLASSES)


def test_missing_record_list(tmp_path):
    with pytest.raises(DatasetError, match="RECORDS"):
        load_index("mitdb", tmp_path)


@pytest.mark.realdata
def test_real_mitdb_index_and_beats(mitdb_root):
    idx = load_index("mitdb", mitdb_root)
    t = idx.table
    assert len(t) == 48 and t["patient_id"].nunique() == 47
    assert t.set_index("record_id").loc["202", "patient_id"] == "201"
    assert set(t.loc[t.paced, "record_id"]) == set(PACED)
    bw = beat_windows(idx, ["100", "119"], before_s=0.25, after_s=0.4)
    assert bw.x.shape[1:] == (2, 90 + 144)
    # Independent count from the annotation file.
    for rid in ("100", "119"):
        ann = wfdb.rdann(str(mitdb_root / rid), "atr")
        want = np.bincount([AAMI_CLASSES.index(AAMI_MAP[s]) for s in ann.symbol if s in AAMI_MAP], minlength=5)
        got = np.bincount(bw.label[bw.record_id == rid], minlength=5)
        assert (want - got).sum() <= bw.n_edge and (got <= want).all()
    r0 = bw.r_index[0]
    rec = idx.read(0)
    np.testing.assert_array_equal(bw.x[0], rec.signal[:, r0 - 90:r0 + 144])
    with pytest.raises(DatasetError, match="not in the MIT-BIH index"):
        beat_windows(idx, ["999"])
