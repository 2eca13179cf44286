"""CMSC batched as CLOCS ran it (per-(record, lead) instances), and sCL-ST on multi-label columns."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from losses import SupConLoss
from ssl_ecg.data import load_index
from ssl_ecg.data.cache import CacheParams, open_cache
from ssl_ecg.data.dataset import CacheLeadWindows, contrast_targets
from ssl_ecg.data.sampler import EpochShuffleSampler, cross_lead_positive_rate
from ssl_ecg.pretrain import MethodSpec, PretrainConfig, build_method, run_pretrain

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
FS = 100.0
# Dx per record: lists of SNOMED codes; two records have none (an empty label set).
DX = ["426177001", "164934002,426177001", "", "427084000", "426177001,427084000", "164934002",
      "", "427084000", "164934002,427084000", "426177001"]


@pytest.fixture
def cinc_folder(tmp_path, write_wfdb, ecg_like):
    """Ten 12-lead, 12 s records at 100 Hz in the PhysioNet/CinC layout (one patient per record)."""
    folder = tmp_path / "cinc"
    for i, dx in enumerate(DX):
        write_wfdb(folder, f"E{i:05d}", ecg_like(12, int(12 * FS), FS, seed=i, hr=60 + 5 * i), FS, LEADS,
                   comments=["Age: 50", "Sex: Male", f"Dx: {dx}"])
    return folder


@pytest.fixture
def cache(cinc_folder, tmp_path):
    return open_cache(load_index("cinc2021", cinc_folder), tmp_path / "cache", CacheParams(fs=FS))


def _config(folder, tmp_path, **kw):
    base = dict(name="run", dataset="cinc2021", root=str(folder), fs=FS, segment_len=4.0, n_segments=2,
                embed_dim=8, lr=1e-3, batch_size=16, epochs=1, max_steps=1, pool="all", seed=5,
                accelerator="cpu", cache_dir=str(tmp_path / "cache"))
    base.update(kw)
    return PretrainConfig(**base)


def test_lead_windows_are_one_lead_of_one_record_with_their_own_crop(cache):
    window = 800
    ds = CacheLeadWindows(cache, window, seed=2)
    n_rec, n_leads = len(cache), cache.n_leads
    assert len(ds) == n_rec * n_leads == 120
    codes = {str(p): c for c, p in enumerate(dict.fromkeys(cache.table["patient_id"].astype(str)))}
    starts = {}
    for i in range(len(ds)):
        x, target, lead = ds[i]
        rec, expected_lead = divmod(i, n_leads)
        assert x.shape == (1, window) and x.dtype == torch.float32 and lead == expected_lead
        assert target == codes[str(cache.table["patient_id"].iloc[rec])]
        full = np.asarray(cache.record(rec))
        hits = [s for s in range(full.shape[1] - window + 1) if np.array_equal(full[lead, s:s + window], x[0].numpy())]
        assert hits, f"item {i} is not a window of lead {lead} of record {rec}"
        starts[(rec, lead)] = hits[0]
    # each (record, lead) draws its own start: the leads of a record are not cut at one shared time
    assert all(len({starts[(r, lead)] for lead in range(n_leads)}) > 1 for r in range(n_rec))
    again = CacheLeadWindows(cache, window, seed=2)
    assert all(torch.equal(ds[i][0], again[i][0]) for i in range(0, len(ds), 7))  # seeded
    again.set_epoch(1)
    assert not all(torch.equal(ds[i][0], again[i][0]) for i in range(0, len(ds), 7))  # a new crop each epoch


def test_same_lead_targets_and_labels_keep_the_monitor_position(cache):
    ds = CacheLeadWindows(cache, 800, seed=0, same_lead=True, labels=np.arange(len(cache)) % 3)
    x, target, label, lead = ds[5 * 12 + 7]
    assert lead == 7 and label == 5 % 3 and target == ds.patient_codes[5] * 12 + 7
    assert ds.instance_patients.tolist() == np.repeat(np.arange(10), 12).tolist()
    assert ds.instance_leads.tolist() == list(range(12)) * 10
    with pytest.raises(IndexError, match="120"):
        ds.record_lead(120)


def test_every_record_lead_appears_once_per_epoch_and_epochs_are_seeded(cache):
    ds = CacheLeadWindows(cache, 800, seed=1)

    def epoch(e, **kw):
        sampler = EpochShuffleSampler(len(ds), seed=3, **kw)
        sampler.set_epoch(e)
        ds.set_epoch(e)
        batches = list(DataLoader(ds, batch_size=16, sampler=sampler))
        pairs = [(int(p), int(lead)) for b in batches for p, lead in zip(b[1], b[2])]
        return batches, pairs, [i for i in sampler]

    batches, pairs, order = epoch(0)
    assert all(b[0].shape[1:] == (1, 800) for b in batches)  # (B, 1, T): single-lead windows
    assert sorted(divmod(i, 12) for i in order) == [(r, lead) for r in range(10) for lead in range(12)]
    assert sorted(pairs) == sorted((int(ds.patient_codes[r]), lead) for r in range(10) for lead in range(12))
    batches2, _, order2 = epoch(0)
    assert order2 == order and all(torch.equal(a[0], b[0]) for a, b in zip(batches, batches2))
    _, _, order_e1 = epoch(1)
    assert order_e1 != order and sorted(order_e1) == sorted(order)
    shares = [epoch(0, num_replicas=3, rank=r)[2] for r in range(3)]
    assert [len(s) for s in shares] == [40, 40, 40]
    assert set(shares[0]).isdisjoint(shares[1]) and set(shares[1]).isdisjoint(shares[2])
    assert set(shares[0]).isdisjoint(shares[2]) and sorted(sum(shares, [])) == list(range(120))


def test_cmsc_views_are_adjacent_segments_of_one_lead():
    method = build_method("cmsc", MethodSpec(fs=FS, segment_len=4.0, n_segments=2))
    x = torch.randn(5, 1, 800)
    views = method.views(x, generator=torch.Generator().manual_seed(0))
    assert views.shape == (5, 2, 1, 400)
    assert torch.equal(views[:, 0, 0], x[:, 0, :400]) and torch.equal(views[:, 1, 0], x[:, 0, 400:])
    ids = torch.tensor([3, 3, 1, 2, 2])
    assert torch.equal(method.instance_ids(ids, x), ids)  # patient-level, no lead expansion
    assert method.instances_per_record(12) == 1 and method.lead_instances


def _positives_per_anchor(views: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Positives of each (instance, view) anchor as the patient-aware NT-Xent defines them: every other view
    whose instance carries the same id (the anchor's other views and all views of same-id instances)."""
    n, v = views.shape[:2]
    assert ids.shape == (n,)
    per_view = ids.repeat_interleave(v)
    return (per_view[:, None] == per_view[None, :]).sum(1) - 1


def test_cmsmlc_gives_2l_minus_1_positives_and_clocs_cmsc_batching_1_on_the_same_records():
    """One batch of records (B, L, T), one generator: CMSMLC makes every lead and segment of a record a view of
    one instance (2L - 1 positives per anchor); CMSC as CLOCS batches it takes per-lead instances from the
    (record, lead) pool, so an anchor's positives are its own lead's other segment plus same-patient instances
    that happen to share the batch (none when every patient appears once)."""
    b, n_leads = 12, 12
    x = torch.randn(b, n_leads, 800, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(b)  # one record per patient
    spec = MethodSpec(fs=FS, segment_len=4.0, n_segments=2)
    cmsc, cmsmlc = build_method("cmsc", spec), build_method("cmsmlc", spec)

    views = cmsmlc.views(x, generator=torch.Generator().manual_seed(9))
    pos = _positives_per_anchor(views, cmsmlc.instance_ids(ids, x))
    assert views.shape[:2] == (b, 2 * n_leads) and pos.tolist() == [2 * n_leads - 1] * (b * 2 * n_leads)

    # the (record, lead) pool of the same records; a batch holding lead (i + k) % L of record i: every patient once
    pool, pool_ids = x.reshape(b * n_leads, 1, 800), ids.repeat_interleave(n_leads)
    pick = torch.tensor([i * n_leads + (i + 5) % n_leads for i in range(b)])
    batch = pool[pick]
    views = cmsc.views(batch, generator=torch.Generator().manual_seed(9))
    inst = cmsc.instance_ids(pool_ids[pick], batch)
    assert views.shape == (b, 2, 1, 400)
    assert _positives_per_anchor(views, inst).tolist() == [1] * (2 * b)
    # each instance's two views are adjacent segments of its own lead only
    for k, i in enumerate(pick.tolist()):
        rec, lead = divmod(i, n_leads)
        assert torch.equal(torch.cat([views[k, 0, 0], views[k, 1, 0]]), x[rec, lead])

    # shuffled batches of the pool (CLOCS): an anchor gets 2c - 1 positives, c = instances of its patient in the
    # batch, so more than 1 exactly when another lead of its record was drawn with it
    order = torch.as_tensor(list(EpochShuffleSampler(b * n_leads, seed=1)))
    for k in range(0, len(order), 24):
        sel = order[k:k + 24]
        views = cmsc.views(pool[sel], generator=torch.Generator().manual_seed(k))
        pos = _positives_per_anchor(views, cmsc.instance_ids(pool_ids[sel], pool[sel]))
        counts = torch.bincount(pool_ids[sel], minlength=b)[pool_ids[sel]]
        assert pos.tolist() == (2 * counts - 1).repeat_interleave(2).tolist()
        assert pos.max() < 2 * n_leads - 1  # never the CMSMLC set: 24 draws from 144 never hold a whole record


def test_the_cmsc_dataset_never_puts_two_leads_of_one_record_in_one_instance(cache):
    ds = CacheLeadWindows(cache, 800, seed=4)
    method = build_method("cmsc", MethodSpec(fs=FS, segment_len=4.0, n_segments=2))
    sampler = EpochShuffleSampler(len(ds), seed=0)
    seen = 0
    for xb, target, lead in DataLoader(ds, batch_size=16, sampler=sampler):
        views = method.views(xb, generator=torch.Generator().manual_seed(0))
        assert xb.shape[1] == 1 and views.shape[2] == 1  # one channel per instance and per view
        for k in range(len(xb)):
            whole = torch.cat([views[k, 0, 0], views[k, 1, 0]]).numpy()
            matches = {(r, lead_) for r in range(len(cache)) for lead_ in range(cache.n_leads)
                       if _contains(np.asarray(cache.record(r))[lead_], whole)}
            assert len(matches) == 1, f"instance {seen + k}: its views come from {sorted(matches)}"
            rec, found = matches.pop()
            assert found == int(lead[k]) and int(target[k]) == int(ds.patient_codes[rec])
        seen += len(xb)
    assert seen == len(ds)


def _contains(row: np.ndarray, window: np.ndarray) -> bool:
    starts = np.flatnonzero(row[:len(row) - len(window) + 1] == window[0])
    return any(np.array_equal(row[s:s + len(window)], window) for s in starts)


def test_cross_lead_rate_on_a_synthetic_pool_matches_sampled_batches():
    # 20 patients with one 4-lead record, 8 with two: P = 144 instances, batch 24
    patients = np.repeat(np.r_[np.arange(20), np.repeat(np.arange(20, 28), 2)], 4)
    leads = np.tile(np.arange(4), len(patients) // 4)
    p_size, b = len(patients), 24
    expected = []
    for i in range(p_size):  # independent reference with exact integers
        m = int(((patients == patients[i]) & (leads != leads[i])).sum())
        expected.append(1 - math.comb(p_size - 1 - m, b - 1) / math.comb(p_size - 1, b - 1))
    closed = cross_lead_positive_rate(patients, leads, b)
    assert closed == pytest.approx(np.mean(expected), abs=1e-12)
    sampler, hits = EpochShuffleSampler(p_size, seed=0), []
    for e in range(400):
        sampler.set_epoch(e)
        order = np.array(list(sampler))
        for k in range(0, p_size - b + 1, b):
            batch = order[k:k + b]
            for i in batch:
                hits.append(bool(((patients[batch] == patients[i]) & (leads[batch] != leads[i])).any()))
    assert np.mean(hits) == pytest.approx(closed, abs=0.01)
    assert 0.4 < closed < 0.7  # neither rare nor certain at this pool and batch size


def test_run_pretrain_cmsc_uses_lead_instances_and_records_the_rate(cinc_folder, tmp_path, capsys):
    import pandas as pd

    from ssl_ecg import cli

    cfg = _config(cinc_folder, tmp_path, method="cmsc")
    out = run_pretrain(cfg, runs=tmp_path / "runs", progress=False)
    assert out["records"] == 10 and out["instances"] == 120
    expected = cross_lead_positive_rate(np.repeat(np.arange(10), 12), np.tile(np.arange(12), 10), 16)
    assert out["cross_lead_positive_rate"] == pytest.approx(expected) and out["loss_batch_size"] == 16
    # the fixture's headers give no patient: the run says so in its outputs
    import json

    note = json.loads((tmp_path / "runs" / "run" / "pretrain.json").read_text())["record_level_patient_ids"]
    assert note == out["record_level_patient_ids"] and (note["record_level"], note["records"]) == (10, 10)
    assert note["message"].startswith("cinc2021: 10 of 10 records have record-level patient ids")
    assert 0.5 < expected < 0.9  # 120 instances, batch 16, 11 other leads per anchor
    cmsmlc = run_pretrain(_config(cinc_folder, tmp_path, method="cmsmlc", name="ml"), runs=tmp_path / "runs",
                          progress=False)
    assert cmsmlc["cross_lead_positive_rate"] == 1.0 and cmsmlc["instances"] == 10
    assert math.isfinite(out["losses"][0])
    # positives per anchor as logged by each run: CMSMLC's 2L - 1 (one batch holds the 10 records, one patient each)
    ml_logs = pd.read_csv(next((tmp_path / "runs" / "ml" / "logs").rglob("metrics.csv")))
    assert ml_logs["positives_per_view"].dropna().iloc[0] == pytest.approx(2 * 12 - 1)
    logs = pd.read_csv(next((tmp_path / "runs" / "run" / "logs").rglob("metrics.csv")))
    # 1 + 2 * (chance partners: 15 * 11 / 119 = 1.4 expected) = 3.8 expected, not CMSMLC's 2 * 12 - 1 = 23
    assert 1 <= logs["positives_per_view"].dropna().iloc[0] < 12
    lead = run_pretrain(_config(cinc_folder, tmp_path, method="cmsc", positives="patient_lead", name="pl"),
                        runs=tmp_path / "runs", progress=False)
    assert lead["cross_lead_positive_rate"] == 0.0
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: cli\ndataset: cinc2021\nroot: {cinc_folder}\nmethod: cmsc\nfs: 100.0\n"
                      f"segment_len: 4.0\nembed_dim: 8\nbatch_size: 16\nepochs: 1\nmax_steps: 1\npool: all\n"
                      f"accelerator: cpu\ncache_dir: {tmp_path / 'cache'}\n")
    capsys.readouterr()
    assert cli.main(["pretrain", str(recipe), "--runs", str(tmp_path / "runs"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"another lead in their batch (expected): {expected:.1%} at batch 16" in printed
    assert "warning: cinc2021: 10 of 10 records have record-level patient ids" in printed


def test_the_rate_uses_the_batch_the_gathering_loss_sees():
    from ssl_ecg.pretrain.run import loss_batch_size

    assert loss_batch_size(16, 1) == 16 and loss_batch_size(16, 4) == 64 and loss_batch_size(16, "2") == 32
    assert loss_batch_size(16, [0, 3]) == 32 and loss_batch_size(16, "auto", accelerator="cpu") == 16
    method = build_method("cmsc", MethodSpec(fs=FS, segment_len=4.0, n_segments=2))
    patients, leads = np.repeat(np.arange(10), 12), np.tile(np.arange(12), 10)
    # two ranks of 16: the loss sees 32 instances, and the rate is that of one batch of 32
    assert method.cross_lead_positive_rate(12, loss_batch_size(16, 2), patients, leads) == pytest.approx(
        cross_lead_positive_rate(patients, leads, 32))
    assert cross_lead_positive_rate(patients, leads, 32) > cross_lead_positive_rate(patients, leads, 16)


def test_lead_instances_count_patients_by_patient_key(cache):
    n = len(cache)
    # given keys: records 0 and 1 are one patient (one person keyed in two datasets), the rest one each
    keys = ["ptbxl:7", "ptbxl:7"] + [f"cinc2021:{i}" for i in range(2, n)]
    ds = CacheLeadWindows(cache, 800, seed=0, patients=keys)
    assert ds.instance_patients.tolist() == np.repeat([0, 0, *range(1, n - 1)], 12).tolist()
    # default: the table's (dataset, patient id), so one id in two datasets is two patients
    table = cache.table
    try:
        cache.table = table.assign(patient_id="1", dataset=["a", "b"] * (n // 2))
        ds = CacheLeadWindows(cache, 800, seed=0)
        assert ds.instance_patients.tolist() == np.repeat([0, 1] * (n // 2), 12).tolist()
        cache.table = cache.table.assign(patient_key=["k"] * n)  # a patient_key column wins
        assert set(CacheLeadWindows(cache, 800, seed=0).instance_patients.tolist()) == {0}
    finally:
        cache.table = table
    from ssl_ecg.errors import DatasetError

    with pytest.raises(DatasetError, match="patients: expected one patient key per cache record"):
        CacheLeadWindows(cache, 800, patients=keys[:3])


def test_run_pretrain_gives_the_lead_pool_the_prepared_patient_keys(cinc_folder, tmp_path, monkeypatch):
    from ssl_ecg.data import dataset as dataset_module

    seen = []
    init = dataset_module.CacheLeadWindows.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("patients"))
        init(self, *args, **kwargs)

    monkeypatch.setattr(dataset_module.CacheLeadWindows, "__init__", spy)
    run_pretrain(_config(cinc_folder, tmp_path, method="cmsc"), runs=tmp_path / "runs", progress=False)
    assert seen and list(seen[0]) == [f"cinc2021:E{i:05d}" for i in range(10)]


def test_contrast_targets_multi_hot_single_label_and_empty_sets():
    import pandas as pd

    y, classes, labelled = contrast_targets(pd.Series([["b", "a"], [], ["c"], None, ("a",)]), "dx")
    assert classes == ["a", "b", "c"] and y.dtype == np.float32
    assert y.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0]]
    assert labelled.tolist() == [True, False, True, False, True]  # empty set and missing: dropped
    codes, names, labelled = contrast_targets(pd.Series(["x", None, "y", "x"]), "rhythm")
    assert codes.tolist() == [0, -1, 1, 0] and names == ["x", "y"] and labelled.tolist() == [1, 0, 1, 1]
    from ssl_ecg.errors import DatasetError

    with pytest.raises(DatasetError, match="'dx' mixes label lists with single values"):
        contrast_targets(pd.Series([["a"], "b"]), "dx")


def test_sclst_on_a_list_valued_column_passes_multi_hot_targets_to_supcon(cinc_folder, tmp_path, monkeypatch):
    seen = []
    forward = SupConLoss.forward

    def spy(self, z, labels):
        seen.append(labels.detach().cpu().clone())
        return forward(self, z, labels)

    monkeypatch.setattr(SupConLoss, "forward", spy)
    out = run_pretrain(_config(cinc_folder, tmp_path, method="sclst", label="dx", batch_size=4, max_steps=2),
                       runs=tmp_path / "runs", progress=False)
    assert out["labels"] == {"column": "dx", "kind": "multi-label", "classes": 3, "unlabelled_dropped": 2}
    assert out["records"] == 8  # the two records with an empty Dx set are left out
    assert len(seen) == 2
    classes = sorted({c for dx in DX for c in dx.split(",") if c})
    rows = sorted(tuple(float(c in dx.split(",")) for c in classes) for dx in DX if dx)
    assert all(labels.shape == (4, 3) and labels.is_floating_point() for labels in seen)
    # two batches of 4 cover the 8 labelled records once: exactly their multi-hot rows
    assert sorted(tuple(r) for labels in seen for r in labels.tolist()) == rows
    seen.clear()
    single = run_pretrain(_config(cinc_folder, tmp_path, method="sclst", label="sex", batch_size=4, name="s"),
                          runs=tmp_path / "runs", progress=False)
    assert single["labels"]["kind"] == "single-label" and seen[0].dim() == 1 and not seen[0].is_floating_point()


@pytest.mark.realdata
def test_the_issues_rates_on_the_real_pools(ludb_root, ptbxl_root):
    from ssl_ecg.data.splits import table_splits

    def pool(name, root, split, **opts):
        table = load_index(name, root, **opts).table
        splits = table_splits(table, split, seed=0, dataset=name)
        patients = table["patient_id"].astype(str)
        keep = patients.isin(set(splits["train"]) | set(splits["val"])).to_numpy()
        return np.repeat(patients[keep].to_numpy(), 12), np.tile(np.arange(12), int(keep.sum()))

    with warnings.catch_warnings():  # LUDB gives no patient ids (one record each): a split warns about that
        warnings.simplefilter("ignore")
        p, lead = pool("ludb", ludb_root, [0.6, 0.2, 0.2])
    assert len(p) == 1920
    assert cross_lead_positive_rate(p, lead, 256) == pytest.approx(0.79, abs=0.005)
    p, lead = pool("ptbxl", ptbxl_root, "official", fs=100)
    assert len(p) == 10308
    # 27%: the issue's ~24% is the one-record-per-patient value 1 - (1 - 255 / 10307) ** 11
    assert cross_lead_positive_rate(p, lead, 256) == pytest.approx(0.272, abs=0.005)
    assert 1 - (1 - 255 / 10307) ** 11 == pytest.approx(0.24, abs=0.005)


@pytest.mark.parametrize("name", ["clocs_chapman_4lead", "clocs_chapman_12lead", "clocs_cinc2020_4lead",
                                  "clocs_cinc2020_12lead"])
def test_clocs_recipes_run_cmsc_on_lead_instances(name):
    from ssl_ecg.recipe import load_recipe

    cfg = load_recipe(PretrainConfig, Path(__file__).parents[3] / "experiments" / f"{name}.yaml")
    method = build_method(cfg.method, MethodSpec(fs=cfg.fs, segment_len=cfg.segment_len, positives=cfg.positives))
    assert cfg.method == "cmsc" and cfg.positives == "patient" and method.lead_instances
    assert cfg.n_segments == 2 and method.segment_samples() == 2500


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["ludb", "ptbxl", "mitdb"])
def test_bundled_cmsc_recipes_state_their_cross_lead_rate(name, tmp_path, request):
    """The rate each bundled cmsc recipe states in its comment is the closed form on its real pool."""
    import re

    from ssl_ecg.pretrain.run import pool_rows, prepare_pool
    from ssl_ecg.recipe import load_recipe

    root = request.getfixturevalue(f"{name}_root")
    path = Path(__file__).parents[3] / "experiments" / f"{name}_cmsc.yaml"
    cfg = load_recipe(PretrainConfig, path, {"root": str(root), "cache_dir": str(tmp_path / "cache")})
    stated = re.search(r"rate at (\d+) on this pool \(.*?\): ([\d.]+)%", path.read_text(), re.S)
    assert stated and int(stated[1]) == cfg.batch_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_pool(cfg)
    records = pool_rows(cfg, prepared)[0]
    n_leads = int(prepared.cache.n_leads)
    keys = prepared.table["patient_key"].astype(str).to_numpy()[records]
    rate = cross_lead_positive_rate(np.repeat(keys, n_leads), np.tile(np.arange(n_leads), len(records)),
                                    cfg.batch_size)
    assert 100 * rate == pytest.approx(float(stated[2]), abs=0.05)
