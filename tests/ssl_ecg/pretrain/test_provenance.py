"""Pretraining writes its provenance (split.json, encoder.json) and reads the data needs its method declares."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb

from ssl_ecg.checkpoint import load_provenance
from ssl_ecg.data.prepare import Split, patient_key
from ssl_ecg.errors import ConfigError
from ssl_ecg.pretrain import METHODS, MethodSpec, PretrainConfig, build_method, run_pretrain
from ssl_ecg.pretrain.methods import DataNeeds, Method
from ssl_ecg.pretrain.run import prepare_pool, run_fingerprint

LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
N_RECORDS = 12
# LUDB's "Electric axis" per record: "lad" is 1 (left axis deviation), 0 (normal), NaN (any other axis)
AXES = ["left axis deviation", "normal", "vertical", "normal", "left axis deviation", "horizontal",
        "normal", "vertical", "left axis deviation", "normal", "horizontal", "normal"]
FLAT_RECORD = 3  # its lead II is flat: zeroed under bad_leads=zero_lead


def _ecg(n_leads: int, n: int, fs: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    hr = rng.uniform(55, 95)
    phase = (t % (60.0 / hr)) * hr / 60.0
    wave = np.exp(-((phase - 0.3) ** 2) / (2 * 0.012**2)) + 0.3 * np.exp(-((phase - 0.6) ** 2) / (2 * 0.05**2))
    return rng.uniform(-1.5, 1.5, (n_leads, 1)) * wave + 0.05 * rng.standard_normal((n_leads, n))


@pytest.fixture(scope="module")
def ludb(tmp_path_factory) -> Path:
    """A LUDB-layout folder: 12 ten-second 12-lead records at 500 Hz, one patient each, record 3's lead II flat."""
    root = tmp_path_factory.mktemp("ludb")
    (root / "data").mkdir()
    for i in range(1, N_RECORDS + 1):
        x = _ecg(12, 5000, 500.0, seed=i)
        if i == FLAT_RECORD:
            x[1] = 0.0
        d = np.round(x * 1000).astype(np.int64).T
        wfdb.wrsamp(str(i), fs=500, units=["mV"] * 12, sig_name=LEADS, d_signal=d, fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(root / "data"))
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in range(1, N_RECORDS + 1)))
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies"])
        for i in range(1, N_RECORDS + 1):
            w.writerow([i, "F", 50 + i, "Sinus rhythm", f"Electric axis of the heart: {AXES[i - 1]}", ""])
    return root


def _cfg(root: Path, name: str = "run", **kw) -> PretrainConfig:
    base = dict(name=name, dataset="ludb", root=str(root), method="cmsc", fs=100.0, segment_len=2.0, epochs=1,
                max_steps=2, batch_size=4, lr=1e-3, embed_dim=8, leads=["II", "V2"],
                cache_dir=str(root.parent / "cache"), encoder={"name": "resnet1d", "widths": [4], "depth": [1]},
                accelerator="cpu")
    return PretrainConfig(**{**base, **kw})


def _keys(dataset: str, ids) -> list[str]:
    return sorted(patient_key(dataset, i) for i in ids)


# -- provenance ---------------------------------------------------------------------------------------------------


def test_train_val_pool_provenance_lists_exactly_the_train_and_val_patients(ludb, tmp_path):
    cfg = _cfg(ludb)
    result = run_pretrain(cfg, runs=tmp_path, progress=False)
    prov = load_provenance(result["encoder"])
    split = Split.load(tmp_path / "run" / "split.json")
    assert prov["split"] == split.to_dict() and prov["split"]["hash"] == split.hash == result["split_hash"]
    assert sorted(split.patients) == ["test", "train", "val"] and split.patients["test"]
    expected = sorted(set(split.patients["train"]) | set(split.patients["val"]))
    assert prov["pool_patients"] == expected
    assert not set(prov["pool_patients"]) & set(split.patients["test"])
    assert all(k.startswith("ludb:") for k in prov["pool_patients"])
    # the split drawn with the recipe's seed, on the same cache as evaluation reads
    prepared = prepare_pool(cfg)
    assert prepared.split.hash == split.hash
    rows = prepared.rows("train", "val")
    assert prov["pool_fingerprints"] == sorted(prepared.fingerprints(rows))
    assert len(prov["pool_fingerprints"]) == len(rows)
    assert not set(prov["pool_fingerprints"]) & prepared.fingerprints(prepared.rows("test"))
    assert prov["label_patients"] == [] and prov["datasets"] == ["ludb"] and prov["version"] == 1
    assert prov["cache_keys"] and all(prov["cache_keys"])
    assert result["pool_patients"] == len(expected) and result["records"] == len(rows)
    # another split seed draws another split: another pool, another run fingerprint
    other = run_pretrain(replace(cfg, name="seed1", split_seed=1), runs=tmp_path, progress=False)
    assert load_provenance(other["encoder"])["pool_patients"] != expected
    fp = [json.loads((tmp_path / n / "run.json").read_text())["fingerprint"] for n in ("run", "seed1")]
    assert fp[0] != fp[1]


def test_the_run_fingerprint_includes_the_split_hash(ludb):
    cfg = _cfg(ludb)
    assert run_fingerprint(cfg, "key", "a" * 64) != run_fingerprint(cfg, "key", "b" * 64)
    assert run_fingerprint(cfg, "key", "a" * 64) == run_fingerprint(replace(cfg, num_workers=2), "key", "a" * 64)


def test_all_pool_lists_every_patient_and_early_stopping_validates_on_the_val_patients(ludb, tmp_path):
    everyone = run_pretrain(_cfg(ludb, "all", pool="all"), runs=tmp_path, progress=False)
    assert load_provenance(everyone["encoder"])["pool_patients"] == _keys("ludb", range(1, N_RECORDS + 1))
    assert everyone["records"] == N_RECORDS
    stop = run_pretrain(_cfg(ludb, "stop", early_stopping_patience=1, max_steps=-1), runs=tmp_path, progress=False)
    prov, split = load_provenance(stop["encoder"]), Split.load(tmp_path / "stop" / "split.json")
    # trained on train, validated on val: both are in the pool
    assert prov["pool_patients"] == sorted(set(split.patients["train"]) | set(split.patients["val"]))
    assert stop["records"] == len(split.patients["train"]) and stop["val_records"] == len(split.patients["val"])


def test_sclst_records_the_patients_whose_labels_it_used(ludb, tmp_path):
    result = run_pretrain(_cfg(ludb, "sup", method="sclst", label="lad", pool="all", batch_size=4),
                          runs=tmp_path, progress=False)
    prov = load_provenance(result["encoder"])
    labelled = [i for i, axis in enumerate(AXES, 1) if axis in ("normal", "left axis deviation")]
    assert prov["label_patients"] == _keys("ludb", labelled)
    assert prov["pool_patients"] == _keys("ludb", labelled)  # unlabelled records are not trained on
    assert result["label_patients"] == len(labelled) < N_RECORDS


def test_the_online_monitor_records_the_training_patients_it_read_labels_of(ludb, tmp_path):
    result = run_pretrain(_cfg(ludb, "mon", monitor_label="lad"), runs=tmp_path, progress=False)
    prov, split = load_provenance(result["encoder"]), Split.load(tmp_path / "mon" / "split.json")
    labelled = set(_keys("ludb", [i for i, a in enumerate(AXES, 1) if a in ("normal", "left axis deviation")]))
    pool = set(split.patients["train"]) | set(split.patients["val"])
    assert prov["label_patients"] == sorted(labelled & pool) and prov["label_patients"]
    assert prov["pool_patients"] == sorted(pool)


def test_bad_lead_counts_are_in_the_summary_and_the_cli_line(ludb, tmp_path, capsys):
    from ssl_ecg.cli import main

    result = run_pretrain(_cfg(ludb, "bad", pool="all"), runs=tmp_path, progress=False)
    bad = result["bad_leads"]
    assert bad["policy"] == "zero_lead" and bad["zeroed_leads"] == 1 and bad["dropped_records"] == 0
    assert json.loads((tmp_path / "bad" / "pretrain.json").read_text())["bad_leads"] == bad
    cfg = _cfg(ludb, "cli", pool="all", bad_leads="drop_record")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(asdict(cfg)))
    assert main(["pretrain", str(recipe), "--runs", str(tmp_path / "runs"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "bad leads (drop_record): 0 leads zeroed, 1 records dropped" in out
    assert f"{N_RECORDS - 1} records" in out and "split: " in out
    assert load_provenance(tmp_path / "runs" / "cli")["pool_patients"] == _keys(
        "ludb", [i for i in range(1, N_RECORDS + 1) if i != FLAT_RECORD])


def test_a_reused_run_keeps_its_split_and_overwrite_replaces_it(ludb, tmp_path):
    cfg = _cfg(ludb, "again")
    first = run_pretrain(cfg, runs=tmp_path, progress=False)
    again = run_pretrain(cfg, runs=tmp_path, progress=False)
    assert again["reused"] and again["split_hash"] == first["split_hash"]
    assert Split.load(tmp_path / "again" / "split.json").hash == first["split_hash"]
    with pytest.raises(ConfigError, match="different recipe"):
        run_pretrain(replace(cfg, split_seed=3), runs=tmp_path, progress=False)
    third = run_pretrain(replace(cfg, split_seed=3, overwrite=True), runs=tmp_path, progress=False)
    assert Split.load(tmp_path / "again" / "split.json").hash == third["split_hash"] != first["split_hash"]


MITDB_DS1, MITDB_DS2 = ["101", "106", "108", "109"], ["100", "103", "105", "111"]


@pytest.fixture(scope="module")
def mitdb(tmp_path_factory) -> Path:
    """A MIT-BIH-layout folder: eight 12 s two-lead records at 360 Hz, four of DS1 and four of DS2."""
    root = tmp_path_factory.mktemp("mitdb")
    names = MITDB_DS1 + MITDB_DS2
    for k, rid in enumerate(names):
        d = np.round(_ecg(2, int(12 * 360), 360.0, seed=100 + k) * 200).astype(np.int64).T
        wfdb.wrsamp(rid, fs=360, units=["mV"] * 2, sig_name=["MLII", "V1"], d_signal=d, fmt=["212"] * 2,
                    adc_gain=[200.0] * 2, baseline=[1024] * 2, write_dir=str(root))
    (root / "RECORDS").write_text("".join(f"{r}\n" for r in names))
    return root


def test_a_named_official_subset_pool_lists_exactly_its_patients(mitdb, tmp_path):
    cfg = PretrainConfig(name="ds1", dataset="mitdb", root=str(mitdb), method="cmsc", fs=100.0, segment_len=2.0,
                         epochs=1, max_steps=2, batch_size=4, embed_dim=8, pool="DS1",
                         cache_dir=str(tmp_path / "cache"), encoder={"name": "resnet1d", "widths": [4], "depth": [1]},
                         accelerator="cpu")
    result = run_pretrain(cfg, runs=tmp_path, progress=False)
    prov = load_provenance(result["encoder"])
    assert prov["pool_patients"] == _keys("mitdb", MITDB_DS1)
    assert prov["split"]["rule"]["split"] == "official"
    assert sorted(prov["split"]["patients"]["DS2"]) == _keys("mitdb", MITDB_DS2)
    assert result["records"] == len(MITDB_DS1)
    with pytest.raises(ConfigError, match=r"pool: expected 'train\+val', 'all' or a subset .*\['DS1', 'DS2'\]"):
        run_pretrain(replace(cfg, name="x", pool="DS3"), runs=tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"pool: 'train\+val' needs a split with train and val"):
        run_pretrain(replace(cfg, name="y", pool="train+val", split="official"), runs=tmp_path, progress=False)


# -- data needs ---------------------------------------------------------------------------------------------------

# fs 100 Hz, 4 s segments, 2 segments: (window, input, instances, sampler, labels, min leads, channels at 12 / 4 leads)
NEEDS = {
    "cmsc": (800, 400, "record_lead", "shuffle", False, 1, 1, 1),
    "cmlc": (400, 400, "record", "shuffle", False, 2, 1, 1),
    "cmsmlc": (800, 400, "record", "shuffle", False, 2, 1, 1),
    "clocs": (800, 400, "record", "shuffle", False, 2, 1, 1),
    "simclr": (800, 400, "record", "shuffle", False, 1, 12, 4),
    "vicreg": (800, 400, "record", "shuffle", False, 1, 12, 4),
    "barlowtwins": (800, 400, "record", "shuffle", False, 1, 12, 4),
    "byol": (800, 400, "record", "shuffle", False, 1, 12, 4),
    "sclst": (800, 400, "record", "shuffle", True, 1, 12, 4),
    "pclr": (400, 400, "record", "patient", False, 1, 12, 4),
}


def test_the_table_covers_every_registered_method():
    assert set(NEEDS) == set(METHODS)


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_each_registered_method_declares_its_data_needs(name):
    window, inputs, instances, sampler, labels, min_leads, ch12, ch4 = NEEDS[name]
    method = build_method(name, MethodSpec(fs=100.0, segment_len=4.0, n_segments=2))
    for n_leads, channels in ((12, ch12), (4, ch4)):
        assert method.data_needs(n_leads) == DataNeeds(
            window_samples=window, input_samples=inputs, instances=instances, sampler=sampler, needs_labels=labels,
            min_leads=min_leads, in_channels=channels, instances_per_record=1, lead_specific_ids=False)
    three = build_method(name, MethodSpec(fs=250.0, segment_len=2.0, n_segments=3)).data_needs(12)
    assert three.input_samples == 500 and three.window_samples == (500 if window == inputs else 1500)


def test_cmsc_with_lead_specific_positives_declares_lead_specific_ids():
    needs = build_method("cmsc", MethodSpec(fs=100.0, positives="patient_lead")).data_needs(12)
    assert needs.lead_specific_ids and needs.instances == "record_lead"


@pytest.mark.parametrize("kw,match", [
    ({"window_samples": 0}, r"^DataNeeds.window_samples: expected an integer >= 1, got 0"),
    ({"input_samples": 900}, r"^DataNeeds.input_samples: 900 views do not fit in the 800-sample window"),
    ({"instances": "lead"}, r"^DataNeeds.instances: expected one of record, record_lead, got 'lead'"),
    ({"sampler": "random"}, r"^DataNeeds.sampler: expected one of shuffle, patient, got 'random'"),
    ({"min_leads": True}, r"^DataNeeds.min_leads: expected an integer >= 1, got True"),
    ({"lead_specific_ids": True}, r"^DataNeeds.lead_specific_ids: lead-specific targets need instances="),
])
def test_data_needs_refuse_bad_declarations(kw, match):
    with pytest.raises(ConfigError, match=match):
        DataNeeds(**{"window_samples": 800, "input_samples": 400, **kw})
    with pytest.raises(ConfigError, match=r"^n_leads: expected an integer >= 1, got 0"):
        build_method("cmsc", MethodSpec(fs=100.0)).data_needs(0)


class _Declared(Method):
    """A method that only declares its needs (no attributes): views are ``input`` samples of the window's end."""

    def __init__(self, spec: MethodSpec, window: int, instances: str, min_leads: int = 1):
        super().__init__()
        self.spec, self._window, self._instances, self._min = spec, window, instances, min_leads
        self.seen: list[tuple[int, ...]] = []

    def data_needs(self, n_leads: int) -> DataNeeds:
        return DataNeeds(window_samples=self._window, input_samples=100, instances=self._instances,
                         min_leads=self._min, in_channels=1 if self._instances == "record_lead" else n_leads)

    def views(self, x, generator=None):
        self.seen.append(tuple(x.shape))
        return torch.stack([x[..., -100:], x[..., :100]], 1)  # (B, 2, C, 100)

    def loss(self, z, ids):
        return (z[:, 0] - z[:, 1]).pow(2).mean() + 1.0


@pytest.mark.parametrize("window,instances", [(300, "record"), (700, "record_lead")])
def test_run_pretrain_cuts_the_window_and_instances_a_custom_method_declares(ludb, tmp_path, monkeypatch, window,
                                                                              instances):
    made: list[_Declared] = []

    def factory(spec):
        made.append(_Declared(spec, window, instances))
        return made[-1]

    monkeypatch.setitem(METHODS, "declared", factory)
    result = run_pretrain(_cfg(ludb, "custom", method="declared", pool="all", batch_size=3),
                          runs=tmp_path, progress=False)
    channels = 1 if instances == "record_lead" else 2
    assert made[-1].seen and all(s[1:] == (channels, window) for s in made[-1].seen)
    assert result["data_needs"]["window_samples"] == window and result["data_needs"]["instances"] == instances
    assert result["instances"] == N_RECORDS * (2 if instances == "record_lead" else 1)
    assert json.loads((tmp_path / "custom" / "encoder.json").read_text())["encoder"]["in_channels"] == channels


def test_run_pretrain_refuses_fewer_leads_than_a_custom_method_declares(ludb, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "declared", lambda spec: _Declared(spec, 300, "record", min_leads=3))
    with pytest.raises(ConfigError, match=r"method 'declared': .* needs >= 3 leads, but the ludb data has 2"):
        run_pretrain(_cfg(ludb, "few", method="declared"), runs=tmp_path, progress=False)
    assert not (tmp_path / "few").exists()


@pytest.mark.realdata
def test_the_real_mitdb_ds1_pool_owns_patient_201_and_ds2_keeps_21_patients(mitdb_root, tmp_path):
    cfg = PretrainConfig(name="ds1", dataset="mitdb", root=str(mitdb_root), method="cmsc", fs=100.0, segment_len=4.0,
                         leads=["#0"], pool="DS1", epochs=1, max_steps=1, batch_size=8, embed_dim=8,
                         cache_dir=str(tmp_path / "cache"), accelerator="cpu")
    result = run_pretrain(cfg, runs=tmp_path, progress=False)
    prov = load_provenance(result["encoder"])
    ds1 = ["101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124", "201", "203", "205",
           "207", "208", "209", "215", "220", "223", "230"]
    assert prov["pool_patients"] == _keys("mitdb", ds1) and result["records"] == 22
    split = Split.load(tmp_path / "ds1" / "split.json")
    assert split.of("mitdb:201") == "DS1" and len(split.patients["DS2"]) == 21
    assert len(prov["pool_fingerprints"]) == 22  # records 201..230 of DS1, not record 202 (patient 201 in DS2)


# -- the sharded cache backend --------------------------------------------------------------------------------------


def test_prepare_on_shards_gives_the_memmap_records_ids_and_split(ludb, tmp_path):
    from ssl_ecg.data.prepare import DataSpec, prepare
    from ssl_ecg.data.shards import ShardCache

    spec = dict(dataset="ludb", root=str(ludb), fs=100.0, leads=("II", "V2"), cache_dir=str(tmp_path / "c"))
    memmap = prepare(DataSpec(**spec))
    shards = prepare(DataSpec(**spec, cache_backend="shards"))
    assert isinstance(shards.cache, ShardCache) and not isinstance(memmap.cache, ShardCache)
    for column in ("record_id", "patient_key", "fingerprint", "length", "split", "dataset"):
        assert shards.table[column].astype(str).tolist() == memmap.table[column].astype(str).tolist(), column
    assert shards.split.hash == memmap.split.hash and shards.bad_leads == memmap.bad_leads
    assert shards.bad_leads["zeroed_leads"] == 1  # record 3's flat lead II, counted by the shard build too
    assert shards.cache.manifest["key"] != memmap.cache.manifest["key"]
    x, y = memmap.arrays(1000).astype(np.float64), shards.arrays(1000).astype(np.float64)
    peak = np.abs(x).max(axis=2, keepdims=True)
    assert (np.abs(x - y) <= peak / 65534 * (1 + 1e-6) + 2.0**-23 * np.abs(x)).all()  # int16: half a step
    half = prepare(DataSpec(**spec, cache_backend="shards", cache_dtype="float16"))
    assert half.cache.manifest["dtype"] == "float16" and half.cache.folder != shards.cache.folder



def test_prepare_opens_the_shards_built_with_another_shard_size(ludb, tmp_path):
    """`ssl-ecg cache build --format shards --shard-records 5` then a recipe with cache_backend shards: prepare
    opens that cache instead of building one of the default size."""
    from ssl_ecg.data import load_index
    from ssl_ecg.data.prepare import DataSpec, prepare
    from ssl_ecg.data.shard_build import build_shards

    spec = DataSpec(dataset="ludb", root=str(ludb), fs=100.0, cache_dir=str(tmp_path / "c"), cache_backend="shards")
    built = build_shards(load_index("ludb", ludb), spec.cache_dir, spec.cache_params(), shard_records=5)
    prepared = prepare(spec)
    assert prepared.cache.folder == built.folder and prepared.cache.n_shards == 3  # 12 records in shards of 5
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [built.folder.name]


def test_dataspec_refuses_an_unknown_backend_dtype_or_a_sharded_pool(ludb):
    from ssl_ecg.data.prepare import DataSpec

    with pytest.raises(ConfigError, match="DataSpec.cache_backend: expected one of memmap, shards, got 'zarr'"):
        DataSpec(dataset="ludb", cache_backend="zarr")
    with pytest.raises(ConfigError, match="DataSpec.cache_dtype: expected one of int16, float16, got 'int8'"):
        DataSpec(dataset="ludb", cache_backend="shards", cache_dtype="int8")
    with pytest.raises(ConfigError, match="'shards' caches one dataset; a pool of 2 datasets"):
        DataSpec(dataset=[{"dataset": "ludb"}, {"dataset": "mitdb"}], cache_backend="shards")


@pytest.mark.parametrize("method, extra", [("cmsc", {}), ("simclr", {"monitor_label": "lad"}),
                                           ("sclst", {"label": "lad", "pool": "all"})])
def test_pretraining_on_shards_trains_like_the_memmap_path(ludb, tmp_path, method, extra):
    """Same windows (up to the int16 error), same provenance; another cache key, so another run fingerprint."""
    kw = dict(method=method, max_steps=1, **extra)  # one step: the loss is a forward pass on the same windows
    memmap = run_pretrain(_cfg(ludb, "m", **kw), runs=tmp_path, progress=False)
    shards = run_pretrain(_cfg(ludb, "s", cache_backend="shards", **kw), runs=tmp_path, progress=False)
    prov_m, prov_s = load_provenance(memmap["encoder"]), load_provenance(shards["encoder"])
    for key in ("pool_patients", "pool_fingerprints", "label_patients", "datasets"):
        assert prov_m[key] == prov_s[key], key
    assert prov_m["split"]["hash"] == prov_s["split"]["hash"]  # its cache_key (informational) names each cache
    assert prov_m["cache_keys"] != prov_s["cache_keys"]
    assert shards["records"] == memmap["records"] and shards["instances"] == memmap["instances"]
    assert shards["cross_lead_positive_rate"] == pytest.approx(memmap["cross_lead_positive_rate"], abs=1e-12)
    assert shards["encoder_forward_passes"] == memmap["encoder_forward_passes"]
    # a sample is off by <= 1.6e-5 of its lead's peak; the temperature (0.1) scales the logits and their error by 10
    np.testing.assert_allclose(shards["losses"], memmap["losses"], rtol=1e-4)
    fingerprints = [json.loads((tmp_path / n / "run.json").read_text())["fingerprint"] for n in ("m", "s")]
    assert fingerprints[0] != fingerprints[1]


def test_a_whole_cache_pool_on_shards_holds_no_record_list(ludb, tmp_path):
    from ssl_ecg.data.prepare import DataSpec, prepare
    from ssl_ecg.pretrain.run import _shard_windows

    cache = prepare(DataSpec(dataset="ludb", root=str(ludb), cache_dir=str(tmp_path / "c"),
                             cache_backend="shards")).cache
    whole = _shard_windows(cache, 200, 0, np.arange(cache.n_records), per_lead=True)
    part = _shard_windows(cache, 200, 0, np.arange(1, cache.n_records), per_lead=True)
    assert whole.records is None and len(whole) == cache.n_records * 12
    assert part.records.tolist() == list(range(1, cache.n_records)) and len(part) == (cache.n_records - 1) * 12


def test_shard_workers_start_by_spawn_and_get_the_same_windows_without_the_index(ludb, tmp_path, monkeypatch):
    """On the shards backend the DataLoader's workers start by spawn (they do not inherit the main process's index
    table) and receive the dataset pickled: the same items, and no index table in the pickle."""
    import pickle

    import ssl_ecg.pretrain.run as run_module

    seen = {}

    class Stop(Exception):
        pass

    def fake_fit(module, loader, out, **kw):
        seen["loader"] = loader(1, 0)
        raise Stop

    monkeypatch.setattr(run_module, "fit", fake_fit)
    for backend, context in (("shards", "spawn"), ("memmap", None)):
        with pytest.raises(Stop):
            run_pretrain(_cfg(ludb, f"w-{backend}", cache_backend=backend, num_workers=1), runs=tmp_path,
                         progress=False)
        got = seen["loader"].multiprocessing_context
        assert (got is None) if context is None else (got.get_start_method() == context)
    with pytest.raises(Stop):
        run_pretrain(_cfg(ludb, "w-shards2", cache_backend="shards", num_workers=1), runs=tmp_path, progress=False)
    data = seen["loader"].dataset
    data.cache.table  # read in the main process
    assert data.cache._table is not None
    copy = pickle.loads(pickle.dumps(data))
    assert copy.cache._table is None and copy.cache._open == {} and copy.records.tolist() == data.records.tolist()
    for i in range(0, len(data), 5):
        x, y = data[i], copy[i]
        assert torch.equal(x[0], y[0]) and x[1:] == y[1:]


def test_memmap_runs_keep_the_fingerprint_they_had_before_the_backend_fields(ludb):
    """A memmap run's fingerprint is what it was before ``cache_backend``/``cache_dtype`` existed (finished runs are
    reused, not refused as another recipe's); a sharded run's covers the backend and its dtype."""
    import hashlib

    from ssl_ecg import __version__
    from ssl_ecg.pretrain.run import _NOT_RESULT_AFFECTING, RUN_SCHEMA

    cfg = _cfg(ludb)
    before = {k: v for k, v in asdict(cfg).items()
              if k not in _NOT_RESULT_AFFECTING and k not in ("cache_backend", "cache_dtype")}
    payload = {"settings": before, "cache_key": "k", "split": "s", "schema": RUN_SCHEMA, "version": __version__}
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    assert run_fingerprint(cfg, "k", "s") == expected
    assert run_fingerprint(replace(cfg, cache_dtype="float16"), "k", "s") == expected  # ignored by memmap
    shards = {run_fingerprint(replace(cfg, cache_backend="shards", cache_dtype=d), "k", "s") for d in ("int16",
                                                                                                       "float16")}
    assert len(shards) == 2 and expected not in shards
