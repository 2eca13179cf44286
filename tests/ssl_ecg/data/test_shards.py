"""The sharded record cache: storage error, agreement with the memmap path, DDP shares, resume, keys, corruption."""

import csv
import errno
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load_file, save_file

import ssl_ecg.data.shard_build as shard_build
import ssl_ecg.data.shards as shards_module
from ssl_ecg.data import load_index
from ssl_ecg.data.cache import CacheParams, cache_key, open_cache
from ssl_ecg.data.dataset import CacheLeadWindows, CacheWindows
from ssl_ecg.data.index import DatasetIndex
from ssl_ecg.data.record import Record
from ssl_ecg.data.shard_build import build_shards, shard_key
from ssl_ecg.data.shards import ShardCache, ShardWindows, dequantize, quantize
from ssl_ecg.errors import ConfigError, DatasetError

LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
PARAMS = CacheParams(fs=100.0)
REPO = Path(__file__).resolve().parents[3]


def make_ludb(tmp_path: Path, write_wfdb, ecg_like, n: int = 7, seconds: float = 4.0) -> Path:
    """n synthetic 12-lead LUDB records at 500 Hz; patient of record i is (i + 1) // 2 (pairs share a patient)."""
    root = tmp_path / "ludb"
    for i in range(1, n + 1):
        sig = ecg_like(12, int(seconds * 500), 500.0, seed=i) * (1 + i / 3)
        write_wfdb(root / "data", str(i), sig, 500.0, LEADS)
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in range(1, n + 1)))
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies"])
        for i in range(1, n + 1):
            w.writerow([i, "M", 50, "Sinus rhythm", "Electric axis of the heart: normal", ""])
    return root


@pytest.fixture
def ludb(tmp_path, write_wfdb, ecg_like):
    return load_index("ludb", make_ludb(tmp_path, write_wfdb, ecg_like))


def peaks(x: np.ndarray) -> np.ndarray:
    """(L, 1) float64 peak max|x| of each lead of the reference data (not the scale the code under test chose)."""
    return np.abs(np.asarray(x, dtype=np.float64)).max(axis=1, keepdims=True)


def int16_bound(x: np.ndarray) -> np.ndarray:
    """Half a step of peak / 32767, with slack for the float32 scale, plus float32 rounding of the product."""
    return peaks(x) / 65534 * (1 + 1e-6) + 2.0**-23 * np.abs(x)


def float16_bound(x: np.ndarray) -> np.ndarray:
    """Half an ulp of float16's 11-bit significand plus float32 rounding, and half the subnormal spacing of s = peak."""
    return (2.0**-11 + 2.0**-23) * np.abs(x) + 2.0**-25 * peaks(x) * (1 + 1e-6)


BOUNDS = {"int16": int16_bound, "float16": float16_bound}


@pytest.mark.parametrize("dtype", ["int16", "float16"])
def test_quantize_error_within_documented_bound(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3000)) * np.array([[5.0], [0.01], [1e-4], [0.0]])
    x[1, 7] = 0.0
    x[2, :50] = 1e-9  # float16 subnormal range after scaling
    q, s = quantize(x.astype(np.float32), dtype)
    assert q.dtype == np.dtype(dtype) and q.nbytes * 2 == x.astype(np.float32).nbytes
    xf = x.astype(np.float32).astype(np.float64)
    err = np.abs(dequantize(q, s).astype(np.float64) - xf)
    assert (err <= BOUNDS[dtype](xf)).all()
    assert s[3] == 1.0 and (dequantize(q, s)[3] == 0).all()
    assert err[0].max() > 0  # the bound is not vacuous: storage does lose precision
    with pytest.raises(DatasetError, match="non-finite"):
        quantize(np.array([[np.nan, 1.0]]), dtype)


def test_int16_bound_catches_a_coarser_quantiser(monkeypatch):
    """The bound is the documented one, not derived from the code's scale: 8-bit steps in int16 violate it."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 2000)) * np.array([[5.0], [0.3], [1e-3]])).astype(np.float32)
    xf = x.astype(np.float64)
    q, s = quantize(x, "int16")
    assert (np.abs(dequantize(q, s) - xf) <= int16_bound(xf)).all()
    monkeypatch.setattr(shards_module, "_INT16_MAX", 127)
    q, s = quantize(x, "int16")
    assert not (np.abs(dequantize(q, s) - xf) <= int16_bound(xf)).all()


@pytest.mark.parametrize("dtype", ["int16", "float16"])
def test_shards_round_trip_the_memmap_records_and_index(tmp_path, ludb, dtype):
    memmap = open_cache(ludb, tmp_path / "m", PARAMS)
    built = build_shards(ludb, tmp_path / "s", PARAMS, dtype=dtype, shard_records=3, workers=2)
    cache = built.cache
    assert built.n_shards == 3 and built.pending == 0 and len(cache) == len(memmap) == 7
    for i in range(7):
        want = memmap.record(i).astype(np.float64)
        got = cache.record(i)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert (np.abs(got - want) <= BOUNDS[dtype](want)).all()
    sizes = sum(f.stat().st_size for f in (built.folder / "shards").glob("*.safetensors"))
    assert sizes < 0.55 * (memmap.folder / "signals.f32").stat().st_size
    table = cache.table
    assert table["record_id"].tolist() == memmap.table["record_id"].tolist()
    assert table["fingerprint"].tolist() == memmap.table["fingerprint"].tolist()
    assert table["patient_id"].astype(str).tolist() == cache.patients() and len(cache.patients()) == 7
    np.testing.assert_array_equal(cache.lengths, memmap.table["length"].to_numpy())


def test_same_windows_as_the_memmap_path(tmp_path, ludb):
    memmap = open_cache(ludb, tmp_path / "m", PARAMS)
    cache = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=2).cache
    tol = 2e-4  # int16: half a step of a <= 6 mV peak; another window start would differ by ~1 mV
    records = [5, 0, 3]
    for epoch in (0, 1):
        for kw in ({}, {"records": records}):
            ref, ours = CacheWindows(memmap, 150, seed=4, **kw), ShardWindows(cache, 150, seed=4, **kw)
            ref.set_epoch(epoch)
            ours.set_epoch(epoch)
            assert len(ref) == len(ours)
            for i in range(len(ref)):
                (x, t), (y, u) = ref[i], ours[i]
                assert t == u and y.shape == x.shape and float((x - y).abs().max()) < tol
        ref = CacheLeadWindows(memmap, 150, seed=9, same_lead=True)
        ours = ShardWindows(cache, 150, seed=9, per_lead=True, same_lead=True)
        ref.set_epoch(epoch)
        ours.set_epoch(epoch)
        assert len(ref) == len(ours) == 7 * 12
        for i in range(0, len(ref), 5):
            (x, t, lead), (y, u, lead2) = ref[i], ours[i]
            assert (t, lead) == (u, lead2) and y.shape == (1, 150) and float((x - y).abs().max()) < tol
    np.testing.assert_array_equal(ShardWindows(cache, 150, records=records).patient_codes,
                                  CacheWindows(memmap, 150, records=records).patient_codes)



def test_targets_and_labels_give_the_memmap_items(tmp_path, ludb):
    """Supervised targets (codes and multi-hot rows) and monitor labels: the items of CacheWindows and
    CacheLeadWindows, in the same tuple positions (label third, lead last)."""
    memmap = open_cache(ludb, tmp_path / "m", PARAMS)
    cache = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=3).cache
    codes = np.array([2, 0, 1, 2, 0, 1, 1])
    multi_hot = np.eye(3, dtype=np.float32)[codes] + np.eye(3, dtype=np.float32)[(codes + 1) % 3]
    labels = np.array([0, -1, 1, 1, 0, -1, 0])
    records = [6, 2, 4]
    for targets in (codes, multi_hot):
        ref = CacheWindows(memmap, 120, seed=2, records=records, targets=targets, labels=labels)
        ours = ShardWindows(cache, 120, seed=2, records=records, targets=targets, labels=labels)
        for i in range(len(ref)):
            (x, t, lab), (y, u, lab2) = ref[i], ours[i]
            assert lab == lab2 == labels[records[i]] and float((x - y).abs().max()) < 2e-4
            if targets.ndim == 2:
                assert u.dtype == torch.float32 and torch.equal(t, u)
                assert u.tolist() == multi_hot[records[i]].tolist()
            else:
                assert t == u == codes[records[i]]
    ref = CacheLeadWindows(memmap, 120, seed=3, targets=codes, labels=labels, same_lead=True)
    ours = ShardWindows(cache, 120, seed=3, targets=codes, labels=labels, per_lead=True, same_lead=True)
    for i in range(0, len(ref), 7):
        (x, t, lab, lead), (y, u, lab2, lead2) = ref[i], ours[i]
        assert (t, lab, lead) == (u, lab2, lead2) == (codes[i // 12] * 12 + i % 12, labels[i // 12], i % 12)
        assert float((x - y).abs().max()) < 2e-4
    np.testing.assert_array_equal(ours.instance_patients, np.repeat(cache.patient_codes, 12))
    np.testing.assert_array_equal(ours.instance_leads, np.tile(np.arange(12), 7))
    with pytest.raises(DatasetError, match="targets: expected one code per cache record"):
        ShardWindows(cache, 120, targets=codes[:3])
    with pytest.raises(DatasetError, match="labels: expected one per cache record"):
        ShardWindows(cache, 120, labels=labels[:3])
    with pytest.raises(DatasetError, match="same_lead: lead-specific targets need integer codes"):
        ShardWindows(cache, 120, targets=multi_hot, per_lead=True, same_lead=True)


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch.utils.data import DataLoader
    from ssl_ecg.data.sampler import EpochShuffleSampler
    from ssl_ecg.data.shards import ShardCache, ShardWindows

    def run(rank, world, folder, out):
        dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world)
        data = ShardWindows(ShardCache.load(folder), 100, seed=1, per_lead=True)
        shares = []
        for epoch in (0, 1):
            sampler = EpochShuffleSampler(len(data), seed=3, num_replicas=world, rank=rank)
            sampler.set_epoch(epoch)
            data.set_epoch(epoch)
            mine = list(sampler)
            got = torch.cat([x for x, _, _ in DataLoader(data, batch_size=8, sampler=sampler, num_workers=1,
                                            multiprocessing_context="fork")])
            want = torch.stack([data[i][0] for i in mine])
            assert torch.equal(got, want), "the loader's items are not the sampler's"
            shares.append(mine)
        gathered = [None] * world
        dist.all_gather_object(gathered, shares)
        if rank == 0:
            with open(f"{out}/shares.json", "w") as f:
                json.dump(gathered, f)
        dist.destroy_process_group()

    if __name__ == "__main__":
        mp.spawn(run, args=(2, sys.argv[1], sys.argv[2]), nprocs=2)
    """
)


def test_ddp_ranks_get_disjoint_equal_shares(tmp_path, ludb):
    cache = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=3).cache
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(script), str(cache.folder), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = json.loads((tmp_path / "shares.json").read_text())
    n = 7 * 12  # (record, lead) items; 84 is even: nothing dropped
    for epoch in (0, 1):
        a, b = ranks[0][epoch], ranks[1][epoch]
        assert len(a) == len(b) == n // 2 and not set(a) & set(b) and sorted(a + b) == list(range(n))
    assert ranks[0][0] != ranks[0][1]  # a new permutation each epoch


def test_killed_build_resumes_and_rebuilds_only_unfinished_shards(tmp_path, ludb):
    out = tmp_path / "s"
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal
        from ssl_ecg.data import load_index
        from ssl_ecg.data.cache import CacheParams
        from ssl_ecg.data.shard_build import build_shards
        index = load_index("ludb", {str(ludb.root)!r})
        def die(done, total):
            if done == 2:
                os.kill(os.getpid(), signal.SIGKILL)  # killed after two finished shards
        build_shards(index, {str(out)!r}, CacheParams(fs=100.0), shard_records=2, progress=die)
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr[-2000:]
    folder = next(out.glob("ludb-*"))
    assert not (folder / "manifest.json").exists()
    finished = {p.name: p.stat().st_mtime_ns for p in (folder / "shards").glob("*.safetensors")}
    assert sorted(finished) == ["shard-000000.safetensors", "shard-000001.safetensors"]
    # shard 2 half-written by a killed worker: a file without its done-marker, and a stray part file
    (folder / "shards" / "shard-000002.safetensors").write_bytes(b"partial")
    (folder / "shards" / ".shard-000003.safetensors.999-abcdef12.part").write_bytes(b"x")
    again = build_shards(ludb, out, PARAMS, shard_records=2)
    assert again.built == [2, 3] and again.reused == 2 and again.folder == folder
    assert {p: (folder / "shards" / p).stat().st_mtime_ns for p in finished} == finished
    assert not list((folder / "shards").glob(".*.part"))
    fresh = build_shards(ludb, tmp_path / "fresh", PARAMS, shard_records=2).cache
    for i in range(len(fresh)):
        np.testing.assert_array_equal(again.cache.record(i), fresh.record(i))
    # a finished cache is reopened from its stat key without building anything
    assert build_shards(ludb, out, PARAMS, shard_records=2).built == []


def test_multi_node_shares_merge_when_all_are_built(tmp_path, ludb):
    first = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=2, node_rank=0, num_nodes=2)
    assert first.built == [0, 2] and first.pending == 2 and first.cache is None
    second = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=2, node_rank=1, num_nodes=2)
    assert second.built == [1, 3] and second.pending == 0 and len(second.cache) == 7
    assert second.cache.table["record_id"].astype(str).tolist() == [str(i) for i in range(1, 8)]
    whole = build_shards(ludb, tmp_path / "one", PARAMS, shard_records=2).cache
    for i in range(7):
        np.testing.assert_array_equal(second.cache.record(i), whole.record(i))


def test_key_changes_with_dtype_backend_and_shard_size(tmp_path, ludb):
    keys = {shard_key(ludb, PARAMS, "int16"), shard_key(ludb, PARAMS, "float16"),
            shard_key(ludb, PARAMS, "int16", shard_records=2), cache_key(ludb, PARAMS)}
    assert len(keys) == 4
    a = build_shards(ludb, tmp_path / "s", PARAMS, dtype="int16", shard_records=4)
    b = build_shards(ludb, tmp_path / "s", PARAMS, dtype="float16", shard_records=4)
    assert a.folder != b.folder and a.key == shard_key(ludb, PARAMS, "int16", shard_records=4)
    assert b.cache.manifest["dtype"] == "float16" and b.cache.manifest["backend"] == "safetensors"
    with pytest.raises(ConfigError, match="dtype: expected one of int16, float16, got 'float32'"):
        build_shards(ludb, tmp_path / "s", PARAMS, dtype="float32")


def test_corrupt_shard_gives_one_line_error_naming_it(tmp_path, ludb):
    folder = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=3).folder
    shard = folder / "shards" / "shard-000001.safetensors"
    raw = shard.read_bytes()
    shard.write_bytes(raw[:-10])  # truncated
    with pytest.raises(DatasetError, match="shard-000001.safetensors: corrupt shard") as err:
        ShardCache.load(folder)
    assert "\n" not in str(err.value)
    shard.write_bytes(b"\xff" * 16 + raw[16:])  # same size, garbage header
    cache = ShardCache.load(folder)
    cache.record(0)  # other shards still read
    with pytest.raises(DatasetError, match="shard-000001.safetensors: corrupt shard") as err:
        cache.record(3)
    assert "\n" not in str(err.value)


def test_cli_builds_shards_in_parallel_then_reuses_them(tmp_path, ludb, capsys):
    from ssl_ecg.cli import main

    argv = ["cache", "build", "--dataset", "ludb", "--root", str(ludb.root), "--out", str(tmp_path / "c"), "--fs",
            "100", "--format", "shards", "--workers", "2", "--shard-records", "3", "--dtype", "float16"]
    assert main(argv) == 0
    assert "7 records, 12 leads at 100 Hz in 3 float16 shards (3 built now, 0 reused" in capsys.readouterr().out
    assert main(argv) == 0
    assert "(0 built now, 3 reused" in capsys.readouterr().out
    assert main(argv[:-6] + ["--workers", "0"]) == 2
    assert "workers: expected a positive integer, got 0" in capsys.readouterr().err


# -- hardening: descriptors, stale stat keys, repair, checks on open -----------------------------------------------


def synthetic_index(root: Path, n: int, n_samples: int = 200) -> DatasetIndex:
    """n two-lead records at 100 Hz read from memory (cheap to shard one per shard); patient of record i is i // 2."""
    root.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"record_id": [f"r{i}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
                          "patient_id_source": "dataset", "fs": 100.0, "n_samples": n_samples,
                          "path": [str(root / f"r{i}") for i in range(n)]})

    def reader(row):
        i = int(row["record_id"][1:])
        signal = np.random.default_rng([5, i]).standard_normal((2, n_samples)).astype(np.float32) * (1 + i)
        return Record(signal, 100.0, ["I", "II"], row["record_id"], row["patient_id"])

    return DatasetIndex("synthetic", root, table, reader)


FD_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    from ssl_ecg.data.shards import ShardCache

    folder = sys.argv[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    out = {}
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))  # low soft limit, raisable
    cache = ShardCache.load(folder)
    out["raisable_sum"] = sum(float(np.abs(cache.record(i).astype(np.float64)).sum()) for i in range(len(cache)))
    out["raised_soft"], out["hard"] = resource.getrlimit(resource.RLIMIT_NOFILE)
    del cache  # its shards' descriptors close
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))  # and now not raisable
    cache = ShardCache.load(folder)
    order = np.random.default_rng(0).permutation(len(cache))
    out["fixed_sum"] = sum(float(np.abs(cache.record(i).astype(np.float64)).sum()) for i in sorted(order))
    out["random_reads"] = [float(cache.record(int(i))[0, 0]) for i in order]
    out["open"] = len(cache._open)
    print(json.dumps(out))
    """
)


def test_open_shards_stay_below_the_descriptor_limit(tmp_path):
    """More shards than RLIMIT_NOFILE allows descriptors: the soft limit is raised if it can be, else fewer shards
    stay open (at most half the limit); every record still reads."""
    n = 90
    cache = build_shards(synthetic_index(tmp_path / "src", n), tmp_path / "s", PARAMS, shard_records=1).cache
    assert cache.n_shards == n
    script = tmp_path / "fds.py"
    script.write_text(FD_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(script), str(cache.folder)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    want = sum(float(np.abs(cache.record(i).astype(np.float64)).sum()) for i in range(n))
    assert out["raisable_sum"] == out["fixed_sum"] == want
    order = np.random.default_rng(0).permutation(n)
    assert out["random_reads"] == [float(cache.record(int(i))[0, 0]) for i in order]
    import resource

    hard = out["hard"]
    assert out["raised_soft"] == (2 * n if hard == resource.RLIM_INFINITY else min(hard, 2 * n))
    assert shards_module.MIN_OPEN_SHARDS <= out["open"] <= 32


def test_out_of_descriptors_is_a_dataset_error_suggesting_ulimit(tmp_path, ludb, monkeypatch):
    cache = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=3).cache
    cache.lengths, cache.patient_codes  # mapped before descriptors "run out"

    def out_of_fds(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(shards_module, "open", out_of_fds, raising=False)  # the header read
    with pytest.raises(DatasetError, match=r"shard-000000.safetensors: cannot open the shard, the process is out "
                                           r"of file descriptors .*ulimit -n") as err:
        cache.record(0)
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    monkeypatch.setattr(np, "memmap", out_of_fds)  # the map
    with pytest.raises(DatasetError, match=r"shard-000001.safetensors: cannot open the shard.*ulimit -n"):
        cache.record(3)


def test_touched_sources_are_hashed_once_then_trusted_again(tmp_path, ludb, monkeypatch):
    first = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=3)
    want = [first.cache.record(i) for i in range(7)]
    later = time.time_ns() + 10**9
    for f in ludb.root.rglob("*"):
        if f.is_file():
            os.utime(f, ns=(later, later))
    calls = []
    real = shard_build._hash_sources
    monkeypatch.setattr(shard_build, "_hash_sources", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=3)
    assert calls == [1] and again.built == [] and again.folder == first.folder  # same content: re-hashed, reused
    third = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=3)
    assert calls == [1] and third.built == [] and third.folder == first.folder  # the new stat key was stored
    for i in range(7):
        np.testing.assert_array_equal(third.cache.record(i), want[i])


@pytest.mark.parametrize("lose", ["shard", "shard and marker"])
def test_build_repairs_a_lost_shard_after_the_merge(tmp_path, ludb, lose):
    built = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=2)
    want = [built.cache.record(i) for i in range(7)]
    shards = built.folder / "shards"
    (shards / "shard-000001.safetensors").unlink()
    if lose == "shard and marker":
        (shards / "shard-000001.done.json").unlink()
    with pytest.raises(DatasetError, match="shard-000001.safetensors: shard 1 is missing"):
        ShardCache.load(built.folder)
    again = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=2)
    assert again.built == [1] and again.reused == 3 and again.folder == built.folder and again.cache is not None
    for i in range(7):
        np.testing.assert_array_equal(again.cache.record(i), want[i])
    assert build_shards(ludb, tmp_path / "s", PARAMS, shard_records=2).built == []


def test_build_repairs_a_lost_index_array(tmp_path, ludb):
    built = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=2)
    (built.folder / "lengths.npy").unlink()
    again = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=2)
    assert again.built == [] and again.cache is not None
    np.testing.assert_array_equal(again.cache.lengths, built.cache.lengths)


def test_verify_rebuilds_a_shard_whose_hash_differs_from_its_marker(tmp_path, ludb):
    built = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=2)
    want = [built.cache.record(i) for i in range(7)]
    shard = built.folder / "shards" / "shard-000002.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-6:] = bytes(6)  # same size, other bytes
    shard.write_bytes(bytes(raw))
    assert build_shards(ludb, tmp_path / "s", PARAMS, shard_records=2).built == []  # sizes are trusted
    fixed = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=2, verify=True)
    assert fixed.built == [2] and fixed.reused == 3
    for i in range(7):
        np.testing.assert_array_equal(fixed.cache.record(i), want[i])


def test_swapped_shards_are_an_error_not_wrong_data(tmp_path, ludb):
    folder = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=2).folder
    a, b = folder / "shards" / "shard-000000.safetensors", folder / "shards" / "shard-000001.safetensors"
    raw_a, raw_b = a.read_bytes(), b.read_bytes()
    assert len(raw_a) == len(raw_b)
    a.write_bytes(raw_b)
    b.write_bytes(raw_a)
    cache = ShardCache.load(folder)  # sizes agree with the manifest
    with pytest.raises(DatasetError, match=r"shard-000000.safetensors: holds shard '1' of cache key .*, expected "
                                           r"shard 0 of key") as err:
        cache.record(0)
    assert "\n" not in str(err.value)
    with pytest.raises(DatasetError, match="shard-000001.safetensors: holds shard '0'"):
        cache.record(2)


def test_records_jsonl_must_match_the_shard_boundaries(tmp_path, ludb):
    folder = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=3).folder
    path = folder / "records.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + lines[4:]) + "\n")  # a middle row lost
    with pytest.raises(DatasetError, match=r"records.jsonl: 6 rows, expected one JSON object per record \(7"):
        ShardCache.load(folder).table
    path.write_text("\n".join(lines[:2] + [lines[3], lines[2]] + lines[4:]) + "\n")  # two rows swapped
    with pytest.raises(DatasetError, match=r"records.jsonl: line 3 is at shard 1 row 0, expected shard 0 row 2"):
        ShardCache.load(folder).table
    path.write_text("\n".join(lines) + "\n")
    assert len(ShardCache.load(folder).table) == 7


def _edit_manifest(folder: Path, edit) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    edit(m)
    (folder / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("file", ["../../x.safetensors", "ABSOLUTE", "shard-000002.safetensors", None])
def test_manifest_names_only_its_own_shard_files(tmp_path, ludb, file):
    folder = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=3).folder
    outside = tmp_path / "x.safetensors"
    outside.write_bytes((folder / "shards" / "shard-000000.safetensors").read_bytes())  # a readable shard elsewhere
    name = str(outside) if file == "ABSOLUTE" else file
    _edit_manifest(folder, lambda m: m["shards"][0].update(file=name) if name else m["shards"][0].pop("file"))
    with pytest.raises(DatasetError, match=r"manifest.json: shard entry 0 is .*, expected file "
                                           r"'shard-000000.safetensors' \(in shards/\)") as err:
        ShardCache.load(folder)
    assert "\n" not in str(err.value)


def test_a_marker_naming_another_file_is_unfinished(tmp_path, ludb):
    built = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=3)
    marker = built.folder / "shards" / "shard-000000.done.json"
    good = json.loads(marker.read_text())
    assert shard_build._marker(built.folder, 0, built.key) == good
    outside = tmp_path / "x.safetensors"
    outside.write_bytes((built.folder / "shards" / "shard-000000.safetensors").read_bytes())
    for name in ("../../x.safetensors", str(outside), "shard-000001.safetensors"):
        marker.write_text(json.dumps({**good, "file": name}))
        assert shard_build._marker(built.folder, 0, built.key) is None


def test_manifest_entry_without_bytes_is_a_dataset_error(tmp_path, ludb):
    folder = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=3).folder
    _edit_manifest(folder, lambda m: m["shards"][1].pop("bytes"))
    with pytest.raises(DatasetError, match=r"manifest.json: shard entry 1 is .*its size in bytes"):
        ShardCache.load(folder)
    _edit_manifest(folder, lambda m: m.update(shards={"0": 1}))
    with pytest.raises(DatasetError, match=r"manifest.json: expected leads .*shards \(a list\)"):
        ShardCache.load(folder)


def _replace_shard(folder: Path, k: int, data: bytes) -> None:
    """Write shard k's bytes and the size the manifest expects of it (so only the open can notice)."""
    (folder / "shards" / f"shard-{k:06d}.safetensors").write_bytes(data)
    _edit_manifest(folder, lambda m: m["shards"][k].update(bytes=len(data)))


def _safetensors_bytes(tmp_path: Path, tensors: dict, metadata: dict) -> bytes:
    path = tmp_path / "crafted.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path.read_bytes()


def test_hostile_shard_headers_are_one_line_errors(tmp_path, ludb):
    folder = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=2).folder
    for header, match in (([], "its header is a JSON list, expected an object"),
                          ({"signals": {"dtype": "I16"}, "scales": {}, "offsets": {}, "lengths": {}},
                           "tensor 'signals' is .*; expected a dtype"),
                          ({t: {"dtype": "I16", "shape": [-1], "data_offsets": [0, 0]}
                            for t in ("signals", "scales", "offsets", "lengths")}, "tensor 'signals' of shape")):
        raw = json.dumps(header).encode()
        _replace_shard(folder, 1, struct.pack("<Q", len(raw)) + raw)
        with pytest.raises(DatasetError, match=rf"shard-000001.safetensors: corrupt shard \({match}") as err:
            ShardCache.load(folder).record(2)
        assert "\n" not in str(err.value)


def test_a_shard_with_fewer_rows_is_an_error_not_the_end_of_iteration(tmp_path, ludb):
    built = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=2)
    folder, key = built.folder, built.key
    orig = load_file(str(folder / "shards" / "shard-000001.safetensors"))
    n = int(orig["lengths"][0]) * 12
    one_row = {"signals": orig["signals"][:n], "scales": orig["scales"][:1], "offsets": orig["offsets"][:1],
               "lengths": orig["lengths"][:1]}
    _replace_shard(folder, 1, _safetensors_bytes(tmp_path, one_row, {"key": key, "shard": "1", "n_leads": "12"}))
    data = ShardWindows(ShardCache.load(folder), 100)
    with pytest.raises(DatasetError, match=r"shard-000001.safetensors: holds 1 records, expected 2 \(from "
                                           r"shard_starts.npy\)"):
        list(data)  # an IndexError here would end the iteration silently after 2 items
    longer = dict(orig, lengths=orig["lengths"] + np.array([0, 1]),  # a consistent shard, not the cache's
                  signals=np.concatenate([orig["signals"], np.zeros(12, dtype=orig["signals"].dtype)]))
    _replace_shard(folder, 1, _safetensors_bytes(tmp_path, longer, {"key": key, "shard": "1", "n_leads": "12"}))
    with pytest.raises(DatasetError, match=r"shard-000001.safetensors: row 1 has 401 samples, expected 400 "
                                           r"\(from lengths.npy\)"):
        ShardCache.load(folder).record(3)
    shifted = dict(orig, offsets=np.array([0, 0], dtype=np.int64))
    _replace_shard(folder, 1, _safetensors_bytes(tmp_path, shifted, {"key": key, "shard": "1", "n_leads": "12"}))
    with pytest.raises(DatasetError, match=r"shard-000001.safetensors: corrupt shard \(its offsets"):
        ShardCache.load(folder).record(3)
    ragged = dict(orig, offsets=orig["offsets"][:1])
    _replace_shard(folder, 1, _safetensors_bytes(tmp_path, ragged, {"key": key, "shard": "1", "n_leads": "12"}))
    with pytest.raises(DatasetError, match=r"shard-000001.safetensors: corrupt shard \(2 lengths, 1 offsets and 2 "
                                           r"scale rows"):
        ShardCache.load(folder).record(3)


def test_manifest_leads_must_match_the_shard_scales(tmp_path, ludb):
    folder = build_shards(ludb, tmp_path / "s", PARAMS, shard_records=3).folder
    _edit_manifest(folder, lambda m: m.update(leads=m["leads"][:6]))
    cache = ShardCache.load(folder)
    with pytest.raises(DatasetError, match=r"shard-000000.safetensors: scales for 12 leads, expected 6"):
        cache.segment(0, 0, 10, lead=3)


def test_merge_temporary_names_are_unique_across_nodes(tmp_path, ludb, monkeypatch):
    moved = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: moved.append(Path(src).name) or real(src, dst))
    build_shards(ludb, tmp_path / "s", PARAMS, shard_records=3)
    merged = [n for n in moved if not n.startswith(".shard-")]
    assert {n.split(".part")[0].rsplit(".", 1)[0] for n in merged} >= {
        ".records.jsonl", ".lengths.npy", ".patient_codes.npy", ".shard_starts.npy", ".manifest.json"}
    for name in merged:  # pid, then a random suffix: equal pids on two hosts do not collide
        assert re.fullmatch(rf"\.[\w.]+\.{os.getpid()}-[0-9a-f]{{8}}\.part(\.npy)?", name), name
