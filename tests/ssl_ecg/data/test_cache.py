import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ssl_ecg.data import load_index
from ssl_ecg.data.cache import CACHE_FORMAT, CacheParams, RecordCache, cache_key, open_cache, record_fingerprint
from ssl_ecg.data.dataset import CacheWindows
from ssl_ecg.data.preprocess import preprocess
from ssl_ecg.errors import DatasetError, RecordError


def make_index(tmp_path, n=5):
    import csv

    import wfdb

    root = tmp_path / "ludb"
    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    leads = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
    for i in range(1, n + 1):
        d = rng.integers(-1500, 1500, size=(5000, 12))
        wfdb.wrsamp(str(i), fs=500, units=["mV"] * 12, sig_name=leads, d_signal=d, fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(root / "data"))
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in range(1, n + 1)))
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies"])
        for i in range(1, n + 1):
            w.writerow([i, "M", 50, "Sinus rhythm", "Electric axis of the heart: normal", ""])
    return load_index("ludb", root)


def test_cache_matches_preprocessing_and_slices(tmp_path):
    idx = make_index(tmp_path)
    params = CacheParams(fs=250.0)
    cache = open_cache(idx, tmp_path / "cache", params)
    assert len(cache) == 5 and cache.n_leads == 12 and cache.fs == 250.0
    for i in range(5):
        want = preprocess(idx.read(i), fs=250.0, normalization="record", bad_lead_policy="zero_lead").signal
        np.testing.assert_array_equal(cache.record(i), want)
        np.testing.assert_array_equal(cache.segment(i, 100, 300), want[:, 100:400])
    with pytest.raises(RecordError, match="outside its 2500 samples"):
        cache.segment(0, 2400, 200)
    # Reopening does not rebuild.
    mtime = os.stat(cache.folder / "signals.f32").st_mtime_ns
    again = open_cache(idx, tmp_path / "cache", params)
    assert again.folder == cache.folder and os.stat(again.folder / "signals.f32").st_mtime_ns == mtime


def test_key_changes_with_params_and_files(tmp_path):
    idx = make_index(tmp_path)
    k1 = cache_key(idx, CacheParams(fs=250.0))
    assert k1 != cache_key(idx, CacheParams(fs=100.0))
    assert k1 != cache_key(idx, CacheParams(fs=250.0, normalization="lead"))
    dat = idx.root / "data" / "3.dat"
    st = dat.stat()
    os.utime(dat, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache_key(idx, CacheParams(fs=250.0)) == k1  # the key follows content, not timestamps
    raw = bytearray(dat.read_bytes())
    raw[100] ^= 1
    dat.write_bytes(bytes(raw))
    assert cache_key(idx, CacheParams(fs=250.0)) != k1
    a = open_cache(idx, tmp_path / "c", CacheParams(fs=250.0))
    b = open_cache(idx, tmp_path / "c", CacheParams(fs=100.0))
    assert a.folder != b.folder and b.record(0).shape == (12, 1000)


def test_concurrent_builds_do_not_corrupt(tmp_path):
    idx = make_index(tmp_path, n=8)
    script = tmp_path / "build.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from ssl_ecg.data import load_index
        from ssl_ecg.data.cache import CacheParams, open_cache
        c = open_cache(load_index("ludb", {str(idx.root)!r}), {str(tmp_path / 'cc')!r}, CacheParams(fs=250.0))
        print(c.folder, float(c.record(7).sum()))
    """))
    procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()
    lines = {o.decode().strip() for o, _ in outs}
    assert len(lines) == 1  # same folder, same data
    folders = [p for p in (tmp_path / "cc").iterdir()]
    assert len(folders) == 1 and not folders[0].name.startswith(".")
    cache = RecordCache.load(folders[0])
    want = preprocess(idx.read(7), fs=250.0, normalization="record", bad_lead_policy="zero_lead").signal
    np.testing.assert_array_equal(cache.record(7), want)


def test_incomplete_folder_is_rejected(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DatasetError, match="not a complete record cache"):
        RecordCache.load(tmp_path / "x")


def test_windows_dataset_with_workers_is_seeded(tmp_path):
    idx = make_index(tmp_path, n=6)
    cache = open_cache(idx, tmp_path / "cache", CacheParams(fs=250.0))
    ds = CacheWindows(cache, window=1000, seed=3)
    x0, code0 = ds[0]
    assert x0.shape == (12, 1000) and x0.dtype == torch.float32 and code0 == 0
    serial = torch.stack([ds[i][0] for i in range(len(ds))])
    batches = list(DataLoader(ds, batch_size=3, num_workers=2))
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), serial, rtol=0, atol=0)
    ds.set_epoch(1)
    assert not torch.equal(torch.stack([ds[i][0] for i in range(len(ds))]), serial)
    with pytest.raises(RecordError, match="shorter than the 3000-sample window"):
        CacheWindows(cache, window=3000)


def test_empty_after_filtering(tmp_path):
    idx = make_index(tmp_path, n=2)
    with pytest.raises(DatasetError, match="no records left"):
        open_cache(idx, tmp_path / "c", CacheParams(fs=250.0, min_seconds=60.0))


def test_records_carry_the_fingerprint_of_the_signal_as_read(tmp_path):
    import json

    idx = make_index(tmp_path, n=3)
    a = open_cache(idx, tmp_path / "c", CacheParams(fs=250.0))
    b = open_cache(idx, tmp_path / "c", CacheParams(fs=100.0, leads=("II",), normalization="none"))
    want = [record_fingerprint(idx.read(i)) for i in range(3)]
    assert a.table["fingerprint"].tolist() == want == b.table["fingerprint"].tolist()  # before preprocessing
    assert len(set(want)) == 3 and all(len(f) == 32 for f in want)
    stored = json.loads((a.folder / "records.json").read_text())
    assert [r["fingerprint"] for r in stored] == want
    manifest = json.loads((a.folder / "manifest.json").read_text())
    assert manifest["format"] == CACHE_FORMAT == 3 and manifest["nonfinite_samples"] == 0


def test_record_fingerprint_quantises_to_microvolts_and_covers_shape_rate_and_leads():
    from ssl_ecg.data import Record

    rng = np.random.default_rng(0)
    sig = np.round(rng.uniform(-2, 2, size=(2, 500)), 3).astype(np.float32)
    rec = Record(sig, 250.0, ["ii", "V1"], "a", "p")
    fp = record_fingerprint(rec)
    assert record_fingerprint(Record(sig + 1e-5, 250.0, ["II", "v1"], "b", "q")) == fp  # below 1 uV, names canonical
    changed = sig.copy()
    changed[1, 7] += 1e-3
    assert record_fingerprint(Record(changed, 250.0, ["II", "V1"], "a", "p")) != fp
    assert record_fingerprint(Record(sig, 500.0, ["II", "V1"], "a", "p")) != fp
    assert record_fingerprint(Record(sig, 250.0, ["V1", "II"], "a", "p")) != fp
    assert record_fingerprint(Record(sig.reshape(4, 250), 250.0, ["I", "II", "V1", "V2"], "a", "p")) != fp  # shape
    nan = sig.copy()
    nan[0, 3] = np.nan
    assert record_fingerprint(Record(nan, 250.0, ["II", "V1"], "a", "p")) not in (fp, None)
