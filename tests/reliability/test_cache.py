"""The record cache never serves stale data (issue 17).

Each test builds small synthetic WFDB datasets in a tmp folder and would fail on
the (size, mtime)-keyed cache that preceded it.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import wfdb

from ssl_ecg.cli import main as cli_main
from ssl_ecg.data import cache as cache_mod
from ssl_ecg.data import load_index
from ssl_ecg.data.cache import CacheParams, RecordCache, cache_key, open_cache, remove_orphaned_builds
from ssl_ecg.data.preprocess import preprocess
from ssl_ecg.errors import ConfigError, DatasetError, RecordError

LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
P = CacheParams(fs=250.0)


def make_ludb(tmp_path, n=3, seed=0):
    """A LUDB-layout dataset of ``n`` ten-second 12-lead records (digital units = uV)."""
    root = tmp_path / "ludb"
    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(1, n + 1):
        d = rng.integers(-1500, 1500, size=(5000, 12))
        wfdb.wrsamp(str(i), fs=500, units=["mV"] * 12, sig_name=LEADS, d_signal=d, fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(root / "data"))
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in range(1, n + 1)))
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies"])
        for i in range(1, n + 1):
            w.writerow([i, "M", 50, "Sinus rhythm", "Electric axis of the heart: normal", ""])
    return root


def make_cinc2017(tmp_path, labels=("N", "A", "O")):
    """CinC 2017 layout with records in ``training/`` and the labels in ``validation/REFERENCE.csv``."""
    root = tmp_path / "cinc2017"
    rng = np.random.default_rng(1)
    for k in range(len(labels)):
        sig = rng.standard_normal((3000, 1))
        wfdb.wrsamp(f"A{k:05d}", fs=300, units=["mV"], sig_name=["I"], p_signal=sig, fmt=["16"],
                    write_dir=str(_mkdir(root / "training")))
    (_mkdir(root / "validation") / "REFERENCE.csv").write_text(
        "".join(f"A{k:05d},{lab}\n" for k, lab in enumerate(labels)))
    return root


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def rewrite_keeping_size_and_mtime(path, change):
    """What ``cp -p`` / ``rsync -a`` leave behind: new bytes, same size, the old atime and mtime restored."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    change(data)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def flip_samples(data):
    data[-200:] = bytes(255 - b for b in data[-200:])


def expected(index, i, params=P):
    return preprocess(index.read(i), fs=params.fs, leads=params.leads, normalization=params.normalization,
                      bad_lead_policy=params.bad_lead_policy).signal


# --- staleness ---------------------------------------------------------------------------------------------------


def test_same_size_rewrite_with_restored_mtime_rebuilds(tmp_path):
    idx = load_index("ludb", make_ludb(tmp_path))
    old = open_cache(idx, tmp_path / "c", P)
    before = np.array(old.record(1))
    rewrite_keeping_size_and_mtime(idx.root / "data" / "2.dat", flip_samples)
    new = open_cache(idx, tmp_path / "c", P)
    assert new.folder != old.folder
    np.testing.assert_array_equal(new.record(1), expected(idx, 1))
    assert not np.array_equal(new.record(1), before)


def test_copy_replacing_the_file_with_restored_mtime_rebuilds(tmp_path):
    # cp -p onto the dataset: a new inode, same size, same mtime.
    idx = load_index("ludb", make_ludb(tmp_path))
    old = open_cache(idx, tmp_path / "c", P)
    dat = idx.root / "data" / "3.dat"
    st = dat.stat()
    data = bytearray(dat.read_bytes())
    flip_samples(data)
    side = tmp_path / "3.dat.new"
    side.write_bytes(bytes(data))
    os.utime(side, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(side, dat)
    new = open_cache(idx, tmp_path / "c", P)
    assert new.folder != old.folder
    np.testing.assert_array_equal(new.record(2), expected(idx, 2))


def test_relabelled_label_file_in_a_subfolder_rebuilds(tmp_path):
    root = make_cinc2017(tmp_path)
    idx = load_index("cinc2017", root)
    old = open_cache(idx, tmp_path / "c", P)
    assert old.table["label"].tolist() == ["N", "A", "O"]
    ref = root / "validation" / "REFERENCE.csv"
    rewrite_keeping_size_and_mtime(ref, lambda d: d.__setitem__(slice(None), d.replace(b",A\n", b",N\n")))
    idx = load_index("cinc2017", root)
    new = open_cache(idx, tmp_path / "c", P)
    assert new.folder != old.folder
    assert new.table["label"].tolist() == ["N", "N", "O"]
    assert "validation/REFERENCE.csv" in [f[0] for f in json.loads((new.folder / "files.json").read_text())["files"]]


def test_signal_file_named_by_the_header_is_covered(tmp_path):
    root = make_ludb(tmp_path)
    data = root / "data"
    os.rename(data / "2.dat", data / "signals_2.dat")
    hea = data / "2.hea"
    hea.write_text(hea.read_text().replace("2.dat", "signals_2.dat"))
    idx = load_index("ludb", root)
    old = open_cache(idx, tmp_path / "c", P)
    assert old.manifest["header_files"] == ["data/signals_2.dat"]
    rewrite_keeping_size_and_mtime(data / "signals_2.dat", flip_samples)
    new = open_cache(idx, tmp_path / "c", P)
    assert new.folder != old.folder
    np.testing.assert_array_equal(new.record(1), expected(idx, 1))


def test_touched_but_unchanged_files_reuse_the_cache_and_refresh_the_stat_record(tmp_path, monkeypatch):
    idx = load_index("ludb", make_ludb(tmp_path))
    old = open_cache(idx, tmp_path / "c", P)
    signals = os.stat(old.folder / "signals.f32")
    dat = idx.root / "data" / "1.dat"
    dat.write_bytes(dat.read_bytes())  # same content, new ctime and mtime
    hashed = []
    real = cache_mod._hash_file
    monkeypatch.setattr(cache_mod, "_hash_file", lambda p: hashed.append(os.path.basename(p)) or real(p))
    again = open_cache(idx, tmp_path / "c", P)
    assert again.folder == old.folder and hashed == ["1.dat"]  # only the changed file is re-hashed
    assert os.stat(again.folder / "signals.f32").st_ino == signals.st_ino  # not rebuilt
    assert again.manifest["stat_key"] != old.manifest["stat_key"]
    hashed.clear()
    open_cache(idx, tmp_path / "c", P)
    assert hashed == []  # the refreshed stat record makes the next open a stat check only


def test_verify_rehashes_even_when_the_stat_record_matches(tmp_path):
    idx = load_index("ludb", make_ludb(tmp_path))
    old = open_cache(idx, tmp_path / "c", P)
    dat = idx.root / "data" / "2.dat"
    data = bytearray(dat.read_bytes())
    flip_samples(data)
    dat.write_bytes(bytes(data))
    # Make the stored stat record claim the new stat (as if the file had been changed without any trace).
    files_json = old.folder / "files.json"
    files = json.loads(files_json.read_text())
    st = dat.stat()
    for entry in files["files"]:
        if entry[0] == "data/2.dat":
            entry[1:5] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    files_json.write_text(json.dumps(files))
    pkey = cache_mod._params_key(idx, P)
    manifest = dict(old.manifest, stat_key=cache_mod._stat_key(pkey, [tuple(e[:5]) for e in files["files"]]))
    (old.folder / "manifest.json").write_text(json.dumps(manifest))

    trusted = open_cache(idx, tmp_path / "c", P)
    assert trusted.folder == old.folder  # the open check trusts a matching stat record
    verified = open_cache(idx, tmp_path / "c", P, verify=True)
    assert verified.folder != old.folder
    np.testing.assert_array_equal(verified.record(1), expected(idx, 1))
    assert open_cache(idx, tmp_path / "c", P).folder == verified.folder  # the stale folder no longer claims it


def test_key_covers_params_content_and_format(tmp_path, monkeypatch):
    idx = load_index("ludb", make_ludb(tmp_path, n=2))
    k = cache_key(idx, P)
    assert cache_key(idx, CacheParams(fs=250)) == k
    assert cache_key(idx, CacheParams(fs=250.0, band=(0.5, None))) != k
    assert cache_key(idx, CacheParams(fs=250.0, skip_bad_records=True)) != k
    monkeypatch.setattr(cache_mod, "CACHE_FORMAT", cache_mod.CACHE_FORMAT + 1)
    assert cache_key(idx, P) != k


def test_int_and_float_fs_and_lead_spelling_share_one_cache(tmp_path):
    idx = load_index("ludb", make_ludb(tmp_path, n=2))
    a = open_cache(idx, tmp_path / "c", CacheParams(fs=100, leads=("ii", "V1")))
    inode = os.stat(a.folder / "signals.f32").st_ino
    b = open_cache(idx, tmp_path / "c", CacheParams(fs=100.0, leads=("II", "v1")))
    assert b.folder == a.folder and os.stat(b.folder / "signals.f32").st_ino == inode
    assert len(list((tmp_path / "c").iterdir())) == 1
    assert CacheParams(fs=100).fs == 100.0 and isinstance(CacheParams(fs=100).fs, float)


def test_cache_root_inside_the_dataset_root_is_not_a_source(tmp_path, monkeypatch):
    root = make_ludb(tmp_path, n=2)
    idx = load_index("ludb", root)
    first = open_cache(idx, root / "cache", P)
    monkeypatch.setattr(cache_mod, "_build", lambda *a, **k: pytest.fail("rebuilt its own cache"))
    assert open_cache(idx, root / "cache", P).folder == first.folder
    assert not any(r.startswith("cache/") for r in cache_mod.source_files(idx, exclude=root / "cache"))


# --- corrupt caches ----------------------------------------------------------------------------------------------


def test_truncated_signals_is_named_and_rebuilt(tmp_path):
    idx = load_index("ludb", make_ludb(tmp_path))
    cache = open_cache(idx, tmp_path / "c", P)
    sig = cache.folder / "signals.f32"
    full = sig.stat().st_size
    with open(sig, "r+b") as f:
        f.truncate(full - 4000)
    with pytest.raises(DatasetError, match=rf"signals\.f32: {full - 4000} bytes, expected {full} bytes"):
        RecordCache.load(cache.folder)
    with pytest.warns(UserWarning, match="corrupt, rebuilding"):
        again = open_cache(idx, tmp_path / "c", P)
    assert again.folder == cache.folder and (again.folder / "signals.f32").stat().st_size == full
    np.testing.assert_array_equal(again.record(2), expected(idx, 2))


@pytest.mark.parametrize("name,garbage", [("manifest.json", b'{"key": "abc", "leads": [trunc'),
                                          ("records.json", b"\xff\xfe not json"),
                                          ("manifest.json", b"[1, 2]")])
def test_corrupt_json_is_named_and_rebuilt(tmp_path, name, garbage):
    idx = load_index("ludb", make_ludb(tmp_path, n=2))
    cache = open_cache(idx, tmp_path / "c", P)
    (cache.folder / name).write_bytes(garbage)
    with pytest.raises(DatasetError, match=rf"{name.replace('.', '[.]')}: "):
        RecordCache.load(cache.folder)
    with pytest.warns(UserWarning, match="corrupt, rebuilding"):
        again = open_cache(idx, tmp_path / "c", P)
    assert again.folder == cache.folder
    np.testing.assert_array_equal(again.record(1), expected(idx, 1))


def test_records_json_inconsistent_with_the_manifest_is_named(tmp_path):
    idx = load_index("ludb", make_ludb(tmp_path, n=2))
    cache = open_cache(idx, tmp_path / "c", P)
    rows = json.loads((cache.folder / "records.json").read_text())
    (cache.folder / "records.json").write_text(json.dumps(rows[:1]))
    with pytest.raises(DatasetError, match=r"records\.json: 1 records, expected 2"):
        RecordCache.load(cache.folder)


# --- orphaned temporary folders ----------------------------------------------------------------------------------


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_orphaned_temp_folders_are_removed_but_live_ones_kept(tmp_path):
    root = tmp_path / "c"
    host = cache_mod._host()
    dead = root / f".ludb-0123456789abcdef.tmp-{host}-{_dead_pid()}-deadbeef"
    (dead / "sub").mkdir(parents=True)
    (dead / "signals.f32").write_bytes(b"\0" * 64)
    live_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = root / f".ludb-0123456789abcdef.tmp-{host}-{live_proc.pid}-cafebabe"
        other_host = root / f".ludb-0123456789abcdef.tmp-otherhost-{_dead_pid()}-0badf00d"
        mine = root / f".ludb-0123456789abcdef.tmp-{host}-{os.getpid()}-12345678"
        for folder in (live, other_host, mine):
            folder.mkdir()
        idx = load_index("ludb", make_ludb(tmp_path, n=2))
        open_cache(idx, root, P)
        assert not dead.exists()
        assert live.is_dir() and other_host.is_dir() and mine.is_dir()
    finally:
        live_proc.kill()
        live_proc.wait()
    assert remove_orphaned_builds(root) == [live]


def test_a_killed_build_leaves_nothing_behind_after_the_next_open(tmp_path):
    root = make_ludb(tmp_path, n=2)
    out = tmp_path / "c"
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from ssl_ecg.data import cache, load_index
        real = cache._build
        def stalled(*args, **kwargs):
            real(*args, **kwargs)
            print("built", flush=True)
            time.sleep(120)
        cache._build = stalled
        cache.open_cache(load_index("ludb", {str(root)!r}), {str(out)!r}, cache.CacheParams(fs=250.0))
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"built", proc.stderr.read().decode()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = [p.name for p in out.iterdir()]
    assert len(left) == 1 and ".tmp-" in left[0]  # the killed build's complete but unrenamed folder
    cache = open_cache(load_index("ludb", root), out, P)
    assert [p.name for p in out.iterdir()] == [cache.folder.name]


# --- unreadable records ------------------------------------------------------------------------------------------


def _break_record(root, name="2"):
    dat = root / "data" / f"{name}.dat"
    dat.write_bytes(dat.read_bytes()[:1000])  # shorter than the header says


def test_first_unreadable_record_stops_the_build_naming_it(tmp_path):
    root = make_ludb(tmp_path)
    _break_record(root)
    idx = load_index("ludb", root)
    with pytest.raises(RecordError, match=r"stopped at record 2 \(.*data/2\).*skip_bad_records"):
        open_cache(idx, tmp_path / "c", P)
    assert not (tmp_path / "c").exists() or not [p for p in (tmp_path / "c").iterdir()]


def test_skip_bad_records_lists_each_file_and_reason(tmp_path):
    root = make_ludb(tmp_path, n=4)
    _break_record(root, "2")
    _break_record(root, "4")
    idx = load_index("ludb", root)
    with pytest.warns(UserWarning, match="skipped 2 unreadable records"):
        cache = open_cache(idx, tmp_path / "c", P, skip_bad_records=True)
    assert cache.table["record_id"].tolist() == ["1", "3"]
    m = json.loads((cache.folder / "manifest.json").read_text())
    assert m["n_skipped"] == 2 and m["params"]["skip_bad_records"] is True
    assert [s["record_id"] for s in m["skipped"]] == ["2", "4"]
    assert m["skipped"][0]["file"].endswith(os.path.join("data", "2"))
    assert "2.hea" in m["skipped"][0]["reason"] or "2.dat" in m["skipped"][0]["reason"]
    np.testing.assert_array_equal(cache.record(1), expected(idx, 2))


def test_cli_skip_bad_records_prints_the_count(tmp_path, capsys):
    root = make_ludb(tmp_path)
    _break_record(root)
    args = ["cache", "build", "--dataset", "ludb", "--root", str(root), "--out", str(tmp_path / "c")]
    assert cli_main(args) == 2
    assert "data/2" in capsys.readouterr().err
    with pytest.warns(UserWarning):
        assert cli_main(args + ["--skip-bad-records", "--verify"]) == 0
    assert "1 skipped as unreadable" in capsys.readouterr().out


# --- parameters --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,key", [
    ({"bad_lead_policy": "bogus"}, "bad_lead_policy"),
    ({"normalization": "zscore"}, "normalization"),
    ({"fs": 0}, "fs"), ({"fs": -250.0}, "fs"), ({"fs": float("nan")}, "fs"), ({"fs": float("inf")}, "fs"),
    ({"fs": "250"}, "fs"), ({"fs": True}, "fs"),
    ({"band": (40.0, 10.0)}, "band"), ({"band": (0.0, 10.0)}, "band"), ({"band": (None, 125.0)}, "band"),
    ({"band": (0.5,)}, "band"), ({"band": "0.5,40"}, "band"),
    ({"leads": ("I", "i")}, "leads"), ({"leads": ()}, "leads"), ({"leads": ("I", " ")}, "leads"),
    ({"leads": "I,II"}, "leads"), ({"leads": ("I", 2)}, "leads"),
    ({"min_seconds": -1.0}, "min_seconds"), ({"skip_bad_records": "yes"}, "skip_bad_records"),
])
def test_invalid_params_raise_config_error_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^CacheParams\.{key}: "):
        CacheParams(**kwargs)


def test_valid_params_are_normalised():
    p = CacheParams(fs=500, leads=["I", "aVR"], band=(1, None), min_seconds=2)
    assert p.fs == 500.0 and p.leads == ("I", "aVR") and p.band == (1.0, None) and p.min_seconds == 2.0
    assert CacheParams(band=(None, None)).band is None
    assert CacheParams(leads=("#0", "#1")).leads == ("#0", "#1")


def test_open_check_stats_each_source_file_once_and_hashes_none(tmp_path, monkeypatch):
    idx = load_index("ludb", make_ludb(tmp_path, n=2))
    open_cache(idx, tmp_path / "c", P)
    sources = {str(p) for p in cache_mod.source_files(idx, exclude=tmp_path / "c").values()}
    calls = []
    real = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: calls.append(str(p)) or real(p, *a, **k))
    monkeypatch.setattr(cache_mod, "_hash_file", lambda p: pytest.fail(f"hashed {p} on a clean open"))
    open_cache(idx, tmp_path / "c", P)
    assert sorted(c for c in calls if c in sources) == sorted(sources)
