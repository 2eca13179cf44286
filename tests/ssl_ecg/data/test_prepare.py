"""prepare(DataSpec): the single data path, the Split artefact, patient keys, fingerprints and pools."""

import csv
import json
import pickle

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.signal import resample_poly

from ssl_ecg.data import DataSpec, Split, patient_key, prepare, read_record
from ssl_ecg.data.cache import CachePool, record_fingerprint
from ssl_ecg.data.dataset import CacheWindows
from ssl_ecg.data.splits import RecordLevelIdsWarning
from ssl_ecg.errors import ConfigError, DatasetError, RecordError, SplitError

LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]


def write_ludb(root, records):
    """A LUDB folder; ``records`` maps record id -> (T, 12) int microvolts at 500 Hz."""
    (root / "data").mkdir(parents=True)
    for rid, d in records.items():
        wfdb.wrsamp(str(rid), fs=500, units=["mV"] * 12, sig_name=LEADS, d_signal=np.asarray(d, dtype=np.int64),
                    fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(root / "data"))
    (root / "RECORDS").write_text("".join(f"data/{rid}\n" for rid in records))
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies"])
        for rid in records:
            w.writerow([rid, "M", 50, "Sinus rhythm", "Electric axis of the heart: normal", ""])
    return root


def random_uv(seed, n=5000):
    return np.random.default_rng(seed).integers(-1500, 1500, size=(n, 12))


def write_mitdb(root, ids, n=3600):
    root.mkdir(parents=True)
    for k, rid in enumerate(ids):
        sig = np.random.default_rng(100 + k).uniform(-1, 1, size=(n, 2))
        wfdb.wrsamp(rid, fs=360, units=["mV"] * 2, sig_name=["II", "V1"], p_signal=sig, fmt=["16"] * 2,
                    write_dir=str(root))
    (root / "RECORDS").write_text("".join(f"{rid}\n" for rid in ids))
    return root


@pytest.fixture
def ludb(tmp_path):
    return write_ludb(tmp_path / "ludb", {str(i): random_uv(i) for i in range(1, 11)})


def spec(root, tmp_path, **kw):
    return DataSpec("ludb", root=str(root), cache_dir=str(tmp_path / "cache"), **kw)


# ------------------------------------------------------------------------------------------------ Split artefact

SPLIT = {"train": ["ludb:3", "ludb:1"], "val": ["ludb:2"], "test": ["ludb:4"]}
RULE = {"split": [0.5, 0.25, 0.25], "seed": 0, "datasets": ["ludb"]}


def test_split_hash_is_stable_across_order_and_changes_with_any_patient():
    a = Split(SPLIT, RULE, "k1")
    reordered = {k: list(reversed(SPLIT[k])) for k in ("test", "val", "train")}
    b = Split(reordered, {"datasets": ["ludb"], "seed": 0, "split": (0.5, 0.25, 0.25)}, "another cache key")
    assert a.hash == b.hash and len(a.hash) == 64 and hash(a) == hash(b)
    assert a.patients["train"] == ("ludb:1", "ludb:3")
    # any patient moved, added or renamed, or any rule change, changes the hash
    variants = [
        {**SPLIT, "train": ["ludb:1"], "val": ["ludb:2", "ludb:3"]},
        {**SPLIT, "test": ["ludb:4", "ludb:5"]},
        {**SPLIT, "test": ["mitdb:4"]},
    ]
    hashes = {Split(v, RULE).hash for v in variants} | {Split(SPLIT, {**RULE, "seed": 1}).hash}
    assert len(hashes) == 4 and a.hash not in hashes
    assert a.of("ludb:3") == "train" and a.of("ludb:4") == "test" and a.of("mitdb:3") is None
    with pytest.raises(SplitError, match="'ludb:1' is in both split 'train' and 'val'"):
        Split({"train": ["ludb:1"], "val": ["ludb:1"]}, RULE)


def test_split_save_load_round_trip(tmp_path):
    a = Split(SPLIT, RULE, "abc")
    (tmp_path / "run").mkdir()
    path = a.save(tmp_path / "run")
    assert path == tmp_path / "run" / "split.json"
    b = Split.load(path)
    assert b == a and b.hash == a.hash and b.cache_key == "abc" and b.to_dict() == a.to_dict()
    assert Split.load(tmp_path / "run") == a  # the folder holding split.json
    assert Split.from_dict(json.loads(path.read_text())) == a
    assert not [p for p in (tmp_path / "run").iterdir() if p.name != "split.json"]  # no temp file left


@pytest.mark.parametrize("damage, message", [
    (lambda t: t[: len(t) // 2], "not valid JSON"),
    (lambda t: "[1, 2]", "expected a JSON object"),
    (lambda t: json.dumps({k: v for k, v in json.loads(t).items() if k != "hash"}), r"missing fields \['hash'\]"),
    (lambda t: t.replace('"ludb:4"', '"ludb:9"'), "does not match its patients and rule"),
    (lambda t: t.replace('"seed": 0', '"seed": 1'), "does not match its patients and rule"),
    (lambda t: t.replace('"ludb:4"', '"ludb:2"'), "'ludb:2' is in both split"),
    (lambda t: t.replace('"ludb:4"', "4"), "holds 4; expected patient keys"),
])
def test_corrupt_or_tampered_split_file_is_named(tmp_path, damage, message):
    path = Split(SPLIT, RULE).save(tmp_path / "split.json")
    path.write_text(damage(path.read_text()))
    with pytest.raises(DatasetError, match=message) as err:
        Split.load(path)
    assert str(path) in str(err.value)


def test_missing_split_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match=r"nothere\.json: split file not found"):
        Split.load(tmp_path / "nothere.json")


# ------------------------------------------------------------------------------------------------ prepare


def test_prepare_reuses_a_given_split_exactly(ludb, tmp_path):
    given = Split({"train": ["ludb:1", "ludb:2"], "val": ["ludb:3"], "test": ["ludb:4", "mitdb:5"]},
                  {"split": "hand-made"}, "")
    for split in (given, given.save(tmp_path / "split.json"), str(tmp_path / "split.json")):
        p = prepare(spec(ludb, tmp_path, split_seed=5), split=split)
        assert p.split == given and p.split.hash == given.hash
        by_record = dict(zip(p.table["record_id"], p.table["split"]))
        assert by_record == {"1": "train", "2": "train", "3": "val", "4": "test", **{str(i): "" for i in range(5, 11)}}
        assert p.rows("train").tolist() == [0, 1] and p.rows("val", "test").tolist() == [2, 3]
        assert p.patients(p.rows("test")) == {"ludb:4"}
    with pytest.raises(ConfigError, match="split 'DS1' is not in the split"):
        p.rows("DS1")


def test_prepare_draws_same_split_for_same_seed_and_another_for_another_seed(ludb, tmp_path):
    a = prepare(spec(ludb, tmp_path, split=(0.6, 0.2, 0.2), split_seed=0))
    b = prepare(spec(ludb, tmp_path, split=[0.6, 0.2, 0.2], split_seed=0))
    c = prepare(spec(ludb, tmp_path, split=(0.6, 0.2, 0.2), split_seed=1))
    assert a.split == b.split and a.split.hash == b.split.hash
    assert a.split.patients != c.split.patients and a.split.hash != c.split.hash
    assert {k: len(v) for k, v in a.split.patients.items()} == {"train": 6, "val": 2, "test": 2}
    assert a.split.rule == {"split": [0.6, 0.2, 0.2], "seed": 0, "datasets": ["ludb"]}
    assert a.split.cache_key == a.cache.manifest["key"]
    keys = set(a.table["patient_key"])
    assert keys == {f"ludb:{i}" for i in range(1, 11)} == set().union(*a.split.patients.values())
    for name, members in a.split.patients.items():
        assert set(a.table.loc[a.table["split"] == name, "patient_key"]) == set(members)


def test_official_split_needs_the_index_column(ludb, tmp_path):
    with pytest.raises(ConfigError, match="ludb has none"):
        prepare(spec(ludb, tmp_path, split="official"))


def test_pool_patient_keys_distinguish_datasets(tmp_path):
    ids = ["100", "101", "103", "106"]
    lroot = write_ludb(tmp_path / "ludb", {rid: random_uv(int(rid)) for rid in ids})
    mroot = write_mitdb(tmp_path / "mitdb", ids)
    pool = ({"dataset": "ludb", "root": str(lroot)}, {"dataset": "MITDB", "root": str(mroot), "dataset_options": {}})
    s = DataSpec(pool, fs=100.0, leads=("II", "V1"), split=(0.5, 0.25, 0.25), cache_dir=str(tmp_path / "c"))
    with pytest.warns(RecordLevelIdsWarning, match="mitdb: 4 of 4 records have record-level patient ids"):
        p = prepare(s)
    assert isinstance(p.cache, CachePool) and len(p.cache) == 8 and p.cache.n_leads == 2 and p.cache.fs == 100.0
    assert p.table["dataset"].tolist() == ["ludb"] * 4 + ["mitdb"] * 4
    assert p.table["patient_key"].tolist() == [f"ludb:{i}" for i in ids] + [f"mitdb:{i}" for i in ids]
    assert len(p.patients()) == 8 and sum(len(v) for v in p.split.patients.values()) == 8
    assert p.split.rule["datasets"] == ["ludb", "mitdb"]
    # rows read from the right member; segment/record agree; the pool pickles (DataLoader workers)
    ludb_only = prepare(DataSpec("ludb", root=str(lroot), fs=100.0, leads=("II", "V1"),
                                 cache_dir=str(tmp_path / "c")))
    np.testing.assert_array_equal(p.arrays(1000, [2]), ludb_only.arrays(1000, [2]))
    assert p.fingerprints([2]) == ludb_only.fingerprints([2])
    clone = pickle.loads(pickle.dumps(p.cache))
    np.testing.assert_array_equal(clone.segment(5, 10, 50), p.cache.record(5)[:, 10:60])
    with pytest.raises(RecordError, match="record 101: segment 990:1040 is outside"):
        p.cache.segment(5, 990, 50)
    # patient-aware windows never merge LUDB "100" with MIT-BIH "100"
    windows = CacheWindows(p.cache, window=500, seed=0)
    codes = [int(windows[i][1]) for i in range(len(windows))]
    assert len(set(codes)) == 8
    with pytest.raises(ConfigError, match="ludb has none"):
        prepare(DataSpec(pool, fs=100.0, leads=("II", "V1"), split="official", cache_dir=str(tmp_path / "c")))
    with pytest.raises(ConfigError, match="different leads"):
        prepare(DataSpec(pool, fs=100.0, cache_dir=str(tmp_path / "c")))


def test_patient_key_and_spec_validation():
    assert patient_key("LUDB", 100) == "ludb:100" and patient_key("incart", "incart:7") == "incart:7"
    with pytest.raises(ConfigError, match="patient_key"):
        patient_key("ludb", "")
    with pytest.raises(ConfigError, match="summing to 1"):
        DataSpec("ludb", split=(0.5, 0.2, 0.2))
    with pytest.raises(ConfigError, match="bad_lead_policy"):
        DataSpec("ludb", bad_leads="ignore")
    with pytest.raises(ConfigError, match=r"dataset\[1\]: unknown keys \['fs'\]"):
        DataSpec(({"dataset": "ludb"}, {"dataset": "mitdb", "fs": 360}))
    with pytest.raises(ConfigError, match="'ludb' appears twice"):
        DataSpec(({"dataset": "ludb"}, {"dataset": "LUDB"}))

    class Recipe:
        dataset, root, fs, leads, split, split_seed, cache_dir = "ptbxl", "/d", 250, ["ii", "V1"], "official", 3, "c"
        dataset_options = {"fs": 500}
        method = "cmsc"

    s = DataSpec.from_config(Recipe())
    assert (s.dataset, s.root, s.dataset_options, s.fs, s.leads, s.split, s.split_seed, s.bad_leads) == \
        ("ptbxl", "/d", {"fs": 500}, 250, ("ii", "V1"), "official", 3, "zero_lead")
    m = DataSpec.from_config({"dataset": [{"dataset": "ludb"}, {"dataset": "mitdb"}], "leads": ["II"]})
    assert m.datasets == ["ludb", "mitdb"] and m.is_pool and m.split == (0.6, 0.2, 0.2)


def write_ptbxl_and_cinc(tmp_path, write_wfdb, ecg_like):
    """A PTB-XL folder (ecg 1-3 of patients 100, 101, 101) and a CinC 2021 folder holding other recordings of
    those PTB-XL patients (HR00001-3, mapped through ptbxl_database.csv) plus three Georgia records."""
    ptbxl = tmp_path / "ptbxl"
    leads = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    rows = []
    for i in (1, 2, 3):
        name = f"{i:05d}_lr"
        write_wfdb(ptbxl / "records100" / "00000", name, ecg_like(12, 1000, 100.0, seed=i), 100.0, leads)
        rows.append({"ecg_id": i, "patient_id": f"{100 + i // 2}.0", "scp_codes": "{'NORM': 100.0}",
                     "strat_fold": i, "filename_lr": f"records100/00000/{name}",
                     "filename_hr": f"records500/00000/{i:05d}_hr"})
    pd.DataFrame(rows).to_csv(ptbxl / "ptbxl_database.csv", index=False)
    (ptbxl / "scp_statements.csv").write_text(",description,diagnostic,form,rhythm,diagnostic_class,"
                                              "diagnostic_subclass\nNORM,normal ECG,1.0,,,NORM,NORM\n")
    cinc = tmp_path / "cinc"
    for k, rid in enumerate(["HR00001", "HR00002", "HR00003", "E00001", "E00002", "E00003"]):
        write_wfdb(cinc / "g1", rid, ecg_like(12, 1000, 100.0, seed=50 + k), 100.0, leads,
                   comments=["Age: 56", "Sex: Female", "Dx: 426783006"])
    return ptbxl, cinc


def test_cinc_ids_of_ptbxl_patients_key_as_ptbxl_patients(tmp_path, write_wfdb, ecg_like):
    from ssl_ecg.errors import LeakageError
    from ssl_ecg.evaluate.provenance import check_overlap

    ptbxl, cinc = write_ptbxl_and_cinc(tmp_path, write_wfdb, ecg_like)
    cinc_member = {"dataset": "cinc2021", "root": str(cinc),
                   "dataset_options": {"ptbxl_database": str(ptbxl / "ptbxl_database.csv")}}
    assert patient_key("cinc2021", "ptbxl:101") == "ptbxl:101" and patient_key("cinc2021", "ptb:patient001") == \
        "ptb:patient001" and patient_key("cinc2021", "E00001") == "cinc2021:E00001"
    assert patient_key("ludb", "note:7") == "ludb:note:7"  # not a dataset prefix: keyed
    with pytest.warns(RecordLevelIdsWarning):
        c = prepare(DataSpec(**cinc_member, fs=100.0, cache_dir=str(tmp_path / "c"), split=(0.5, 0.25, 0.25)))
    x = prepare(DataSpec("ptbxl", root=str(ptbxl), fs=100.0, cache_dir=str(tmp_path / "c"), split="official"))
    hr = c.table[c.table["record_id"].str.startswith("HR")]
    assert hr["patient_key"].tolist() == ["ptbxl:100", "ptbxl:101", "ptbxl:101"]
    assert x.table["patient_key"].tolist() == ["ptbxl:100", "ptbxl:101", "ptbxl:101"]
    # a pool of both keeps each PTB-XL patient (its CinC and its PTB-XL records) in one split part
    pool = (cinc_member, {"dataset": "ptbxl", "root": str(ptbxl)})
    for seed in range(4):
        with pytest.warns(RecordLevelIdsWarning):
            p = prepare(DataSpec(pool, fs=100.0, split_seed=seed, cache_dir=str(tmp_path / "c")))
        assert isinstance(p.cache, CachePool)
        assert p.table.groupby("patient_key")["split"].nunique().max() == 1
        assert (p.table["patient_key"] == "ptbxl:101").sum() == 4
        assert sum("ptbxl:101" in v for v in p.split.patients.values()) == 1
    # an encoder pretrained on CinC (these records, none of them PTB-XL's signals) evaluated on PTB-XL:
    # the overlap is found by patient key
    prov = {"pool_patients": sorted(c.patients()), "pool_fingerprints": [], "label_patients": [],
            "split": c.split.to_dict()}
    assert not (c.fingerprints() & x.fingerprints())
    with pytest.raises(LeakageError, match=r"cinc_enc: 2 of 2 test patients were in its pretraining pool \(2 by "
                                           r"patient key, 0 by signal fingerprint\), e.g. ptbxl:100, ptbxl:101"):
        check_overlap("cinc_enc", prov, None, x.table.assign(split="test"))


def test_drawn_split_keeps_copies_of_one_signal_in_one_part(tmp_path):
    from ssl_ecg.data.prepare import patient_groups

    same = random_uv(77)
    records = {str(i): random_uv(i) for i in range(1, 11)}
    records["3"] = records["8"] = same  # one recording under two patient ids (and so two keys)
    root = write_ludb(tmp_path / "ludb", records)
    parts = set()
    for seed in range(12):
        p = prepare(DataSpec("ludb", root=str(root), cache_dir=str(tmp_path / "c"), split_seed=seed))
        fp = p.table.set_index("record_id")["fingerprint"]
        assert fp["3"] == fp["8"]
        assert p.split.of("ludb:3") == p.split.of("ludb:8") != ""
        assert sum(len(v) for v in p.split.patients.values()) == 10  # every key is still in the split
        parts.add(p.split.of("ludb:3"))
    assert len(parts) > 1  # the pair moves between parts with the seed, always together
    groups = patient_groups(p.table)
    assert groups["ludb:3"] == ["ludb:3", "ludb:8"] and len(groups) == 9 and groups["ludb:1"] == ["ludb:1"]


# ------------------------------------------------------------------------------------------------ fingerprints


def test_fingerprints_equal_for_the_same_signal_under_two_ids(tmp_path):
    same = random_uv(7)
    other = same.copy()
    other[1234, 5] += 1  # one microvolt in one sample
    root = write_ludb(tmp_path / "ludb", {"1": same, "2": random_uv(8), "3": same, "4": other, "5": random_uv(9)})
    p = prepare(DataSpec("ludb", root=str(root), cache_dir=str(tmp_path / "c"), split=(0.5, 0.25, 0.25)))
    fp = dict(zip(p.table["record_id"], p.table["fingerprint"]))
    assert fp["1"] == fp["3"]
    assert len({fp["1"], fp["2"], fp["4"]}) == 3
    assert p.fingerprints([0, 2]) == {fp["1"]}
    # taken from the signal as read: another rate or normalisation of the cache keeps it
    q = prepare(DataSpec("ludb", root=str(root), cache_dir=str(tmp_path / "c"), fs=250.0, normalization="none",
                         split=(0.5, 0.25, 0.25)))
    assert q.table["fingerprint"].tolist() == p.table["fingerprint"].tolist()
    rec = read_record(root / "data" / "1", adc_unit_mv=1e-3)
    assert fp["1"] == record_fingerprint(rec)


# ------------------------------------------------------------------------------------------------ arrays


def reference(path, fs_out, n):
    """float64: read the record, resample polyphase 500 -> fs_out, centre leads, divide by the record's std."""
    sig = read_record(path, adc_unit_mv=1e-3).signal.astype(np.float64)
    sig = resample_poly(sig, int(fs_out), 500, axis=-1)
    centred = sig - sig.mean(axis=-1, keepdims=True)
    return (centred / centred.std())[:, :n]


def test_arrays_equal_reading_the_records_directly_and_short_record_is_named(tmp_path):
    records = {str(i): random_uv(i) for i in range(1, 5)}
    records["short"] = random_uv(9, n=2000)
    root = write_ludb(tmp_path / "ludb", records)
    p = prepare(DataSpec("ludb", root=str(root), fs=250.0, cache_dir=str(tmp_path / "c"), split=(0.5, 0.25, 0.25)))
    x = p.arrays(1000)
    assert x.shape == (5, 12, 1000) and x.dtype == np.float32
    for i, rid in enumerate(p.table["record_id"]):
        np.testing.assert_allclose(x[i], reference(root / "data" / rid, 250, 1000), rtol=0, atol=2e-5)
    rows = np.array([3, 0])
    np.testing.assert_array_equal(p.arrays(2500, rows[:1]), p.cache.record(3)[None])
    np.testing.assert_array_equal(p.arrays(1000, rows), x[rows])
    assert not np.shares_memory(p.arrays(10, [0]), p.cache.signals)  # a copy, not a view of the memmap
    with pytest.raises(RecordError, match=r"ludb record short \(row 4\): 1000 samples at 250 Hz, shorter than the "
                                          r"2500 samples"):
        p.arrays(2500)
    with pytest.raises(ConfigError, match="n_samples"):
        p.arrays(0)


def test_bad_lead_counts_are_reported(tmp_path, capsys):
    flat = random_uv(1)
    flat[:, 3] = 7  # a flat lead
    nan = random_uv(2)
    nan[100:110, 0] = -32768  # WFDB's invalid sample: 10 NaNs in lead I
    root = write_ludb(tmp_path / "ludb", {"1": flat, "2": nan, **{str(i): random_uv(i) for i in range(3, 7)}})
    p = prepare(DataSpec("ludb", root=str(root), cache_dir=str(tmp_path / "c"), split=(0.5, 0.25, 0.25)),
                progress=True)
    assert p.bad_leads["policy"] == "zero_lead"
    assert {k: p.bad_leads[k] for k in ("zeroed_leads", "dropped_records", "nonfinite_samples")} == \
        {"zeroed_leads": 2, "dropped_records": 0, "nonfinite_samples": 10}
    assert p.bad_leads["by_dataset"]["ludb"]["zeroed_leads"] == 2
    assert not p.arrays(100, [0])[0, 3].any() and not p.arrays(100, [1])[0, 0].any()
    assert "bad leads (zero_lead): 2 leads zeroed, 0 records dropped, 10 non-finite samples" in capsys.readouterr().out
    d = prepare(DataSpec("ludb", root=str(root), cache_dir=str(tmp_path / "c"), bad_leads="drop_record",
                         split=(0.5, 0.25, 0.25)))
    assert d.bad_leads["dropped_records"] == 2 and d.bad_leads["zeroed_leads"] == 0
    assert d.table["record_id"].tolist() == ["3", "4", "5", "6"]


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.realdata
def test_real_ptbxl_duplicate_recordings_share_a_fingerprint(ptbxl_root, real_dataset, tmp_path):
    # In this bundle only ecg_id 1-100 have 500 Hz files, so 145/463 cannot be read at 500 Hz here; the 100 Hz
    # files of 456/457 and of 459/460 are byte-identical recordings under two ecg_ids (PTB-XL 1.0.2 dropped 456
    # and 459 as duplicates, so drop_duplicates=False keeps them).
    p = prepare(DataSpec("ptbxl", root=str(ptbxl_root), dataset_options={"fs": 100, "drop_duplicates": False},
                         fs=100.0, split="official", cache_dir=str(tmp_path / "c")))
    fp = dict(zip(p.table["record_id"], p.table["fingerprint"]))
    assert fp["456"] == fp["457"] and fp["459"] == fp["460"] and fp["456"] != fp["459"]
    counts = p.table["fingerprint"].value_counts()
    assert sorted(counts[counts > 1].index) == sorted({fp["456"], fp["459"]})  # no other duplicates in the bundle
    # official split: PTB-XL's folds 1-8/9/10, on patient keys
    assert set(p.split.names) == {"train", "val", "test"} and p.split.rule["split"] == "official"
    ok = p.table["index_split"] == p.table["split"]
    assert ok.all()
    assert p.table.loc[p.table["record_id"] == "456", "patient_key"].item() == "ptbxl:16773"
    # the CinC-2024 copy of PTB-XL 841 (another header, same samples) has the same fingerprint
    copy = real_dataset("ptbxl_cinc2024") / "records100" / "00000" / "00841_lr"
    assert record_fingerprint(read_record(copy)) == fp["841"]
