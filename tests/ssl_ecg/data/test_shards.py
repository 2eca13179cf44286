"""The sharded record cache: storage error, agreement with the memmap path, DDP shares, resume, keys, corruption."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_ecg.data import load_index
from ssl_ecg.data.cache import CacheParams, cache_key, open_cache
from ssl_ecg.data.dataset import CacheLeadWindows, CacheWindows
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


def int16_bound(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return 0.5 * scale.astype(np.float64)[:, None] * (1 + 1e-6) + 2.0**-23 * np.abs(x)


def float16_bound(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (2.0**-11 + 2.0**-23) * np.abs(x) + 2.0**-25 * scale.astype(np.float64)[:, None] * (1 + 1e-6)


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
    assert (err <= BOUNDS[dtype](xf, s)).all()
    assert s[3] == 1.0 and (dequantize(q, s)[3] == 0).all()
    assert err[0].max() > 0  # the bound is not vacuous: storage does lose precision
    with pytest.raises(DatasetError, match="non-finite"):
        quantize(np.array([[np.nan, 1.0]]), dtype)


@pytest.mark.parametrize("dtype", ["int16", "float16"])
def test_shards_round_trip_the_memmap_records_and_index(tmp_path, ludb, dtype):
    memmap = open_cache(ludb, tmp_path / "m", PARAMS)
    built = build_shards(ludb, tmp_path / "s", PARAMS, dtype=dtype, shard_records=3, workers=2)
    cache = built.cache
    assert built.n_shards == 3 and built.pending == 0 and len(cache) == len(memmap) == 7
    for i in range(7):
        want = memmap.record(i).astype(np.float64)
        k, row = cache.locate(i)
        scale = cache._shard(k).scales[row]
        got = cache.record(i)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert (np.abs(got - want) <= BOUNDS[dtype](want, scale)).all()
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
