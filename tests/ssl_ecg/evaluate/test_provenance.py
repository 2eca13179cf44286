"""The pure provenance checks on synthetic provenance dicts, splits and tables."""

import hashlib
import json
from dataclasses import dataclass

import pandas as pd
import pytest

from ssl_ecg.errors import ConfigError, LeakageError, SplitError
from ssl_ecg.evaluate.provenance import (
    allow_flags_line,
    check_known,
    check_labels,
    check_overlap,
    check_provenance,
    provenance_summary,
)


@dataclass(frozen=True)
class _Split:
    """A stand-in with the two attributes the checks read (patients, hash)."""

    patients: dict

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.patients, sort_keys=True).encode()).hexdigest()


def _split(n=10, test=("ludb:8", "ludb:9")):
    keys = [f"ludb:{i}" for i in range(n)]
    rest = [k for k in keys if k not in test]
    return _Split({"train": tuple(rest[:-2]), "val": tuple(rest[-2:]), "test": tuple(test)})


def _table(split, fingerprints=None):
    rows = []
    for name, members in split.patients.items():
        for p in members:
            rows.append({"patient_key": p, "split": name, "fingerprint": (fingerprints or {}).get(p, f"fp-{p}")})
    return pd.DataFrame(rows)


def _prov(pool, fps=None, labels=(), split=None):
    split = split or _split()
    return check_provenance({"version": 1, "datasets": ["ludb"], "pool_patients": list(pool),
                             "pool_fingerprints": list(fps if fps is not None else [f"fp-{p}" for p in pool]),
                             "label_patients": list(labels),
                             "split": {"patients": split.patients, "hash": split.hash}}, "enc")


def test_clean_pool_passes_and_reports_counts():
    split = _split()
    prov = _prov(split.patients["train"] + split.patients["val"])
    report = check_overlap("cmsc", prov, split, _table(split))
    assert report.overlap == [] and report.evaluated_patients == 2 and report.pool_patients == 8
    assert report.to_dict()["overlap"] == 0


def test_test_patient_in_pool_is_refused_naming_encoder_count_and_ids():
    split = _split()
    prov = _prov(list(split.patients["train"]) + ["ludb:9"])
    with pytest.raises(LeakageError, match=r"encoders.cmsc \(runs/x\): 1 of 2 test patients were in its "
                                           r"pretraining pool \(1 by patient key, 0 by signal fingerprint\), "
                                           r"e.g. ludb:9;.*allow_overlap"):
        check_overlap("cmsc", prov, split, _table(split), source="encoders.cmsc (runs/x)")
    assert issubclass(LeakageError, SplitError)


def test_overlap_by_fingerprint_only_is_refused():
    split = _split()
    # the pool holds the signal of test patient ludb:8 under another id (ludb:99)
    prov = _prov(["ludb:0", "ludb:99"], fps=["fp-ludb:0", "fp-ludb:8"])
    with pytest.raises(LeakageError, match=r"1 of 2 test patients.*0 by patient key, 1 by signal fingerprint.*"
                                           r"ludb:8"):
        check_overlap("a", prov, split, _table(split))


def test_allow_overlap_returns_the_counts():
    split = _split(20, test=tuple(f"ludb:{i}" for i in range(12, 20)))
    prov = _prov(list(split.patients["test"][:7]), fps=["fp-ludb:19"])
    report = check_overlap("a", prov, split, _table(split), allow_overlap=True)
    assert report.allowed and report.by_patient == [f"ludb:{i}" for i in range(12, 19)]
    assert report.by_fingerprint == ["ludb:19"]
    d = report.to_dict()
    assert d["overlap"] == 8 and d["by_patient"] == 7 and d["by_fingerprint"] == 1 and len(d["examples"]) == 5
    with pytest.raises(LeakageError, match=r"8 of 8 test patients.*\(3 more\)"):
        check_overlap("a", prov, split, _table(split))


def test_episode_patients_are_checked_by_split_column_without_a_split():
    table = pd.DataFrame({"patient_key": ["mitdb:100", "mitdb:200", "mitdb:201"],
                          "split": ["head", "episodes", "episodes"], "fingerprint": ["a", "b", "c"]})
    ok = check_overlap("enc", _prov(["mitdb:100"], fps=["a"]), None, table, evaluated=("episodes",))
    assert ok.evaluated_patients == 2 and ok.overlap == []
    with pytest.raises(LeakageError, match="1 of 2 episodes patients.*mitdb:201"):
        check_overlap("enc", _prov(["mitdb:100", "mitdb:201"]), None, table, evaluated=("episodes",))


def test_patient_keys_keep_datasets_apart():
    split = _Split({"train": ("ludb:1",), "val": ("ludb:2",), "test": ("ludb:100",)})
    report = check_overlap("a", _prov(["mitdb:100"], fps=[]), split, _table(split))
    assert report.overlap == []


def test_unknown_provenance_is_refused_unless_allowed():
    with pytest.raises(LeakageError, match=r"encoders.x \(w.pt\): encoder has no provenance.*"
                                           r"allow_unknown_provenance: true"):
        check_known("x", None, allow_unknown=False, source="encoders.x (w.pt)")
    assert check_known("x", None, allow_unknown=True) is False
    assert check_known("x", _prov([]), allow_unknown=False) is True
    assert check_overlap("x", None, _split(), _table(_split())) is None
    assert provenance_summary(None) == {"known": False}


@pytest.mark.parametrize("bad, match", [
    ([], "provenance must be a mapping"),
    ({"pool_patients": "ludb:1", "pool_fingerprints": [], "label_patients": [], "split": {}}, "'pool_patients'"),
    ({"pool_patients": [], "pool_fingerprints": [], "label_patients": [], "split": {"patients": {}}}, "'hash'"),
])
def test_malformed_provenance_is_a_config_error(bad, match):
    with pytest.raises(ConfigError, match=f"enc.json: .*{match}"):
        check_provenance(bad, "enc.json")


def test_label_using_encoder_is_refused_below_fraction_one():
    split = _split()
    train = list(split.patients["train"])
    assert check_labels("a", _prov(train), split, [0.1, 1.0])["refused_fractions"] == []
    prov = _prov(train, labels=train[:3])
    assert check_labels("a", prov, split, [1.0]) == {"label_patients": 3, "outside_train": 0,
                                                     "refused_fractions": [], "allowed": False}
    with pytest.raises(LeakageError, match=r"sclst: pretraining used labels.*3 train/val patients.*"
                                           r"refused fractions \['0.1', '0.5'\]"):
        check_labels("sclst", prov, split, [0.1, 0.5, 1.0])
    report = check_labels("sclst", prov, split, [0.1, 0.5, 1.0], allow_overlap=True)
    assert report["refused_fractions"] == [0.1, 0.5] and report["allowed"]


def test_label_patients_outside_train_and_val_refuse_every_fraction():
    split = _split()
    prov = _prov(split.patients["train"], labels=[split.patients["train"][0], split.patients["test"][0]])
    test0 = split.patients["test"][0]
    with pytest.raises(LeakageError, match=rf"1 of its 2 label patients are outside the 'train' and 'val' splits "
                                           rf"\(e.g. {test0}\).*\['1'\]; pretrain it on the labels of train and "
                                           r"val patients only"):
        check_labels("sclst", prov, split, [1.0])


def test_sclst_labels_of_train_and_val_patients_pass_at_fraction_one_and_are_refused_below():
    split = _split()
    used = list(split.patients["train"]) + list(split.patients["val"])  # sCL-ST: train + val labels
    prov = _prov(used, labels=used)
    assert check_labels("sclst", prov, split, [1.0]) == {"label_patients": len(used), "outside_train": 0,
                                                         "refused_fractions": [], "allowed": False}
    with pytest.raises(LeakageError, match=rf"sclst: pretraining used labels the curve hides: it used the labels "
                                           rf"of {len(used)} train/val patients.*refused fractions \['0.25'\]"):
        check_labels("sclst", prov, split, [0.25, 1.0])


def test_allow_flags_line():
    assert allow_flags_line({"allow_overlap": False, "allow_unknown_provenance": False}) is None
    split = _split()
    rep = check_overlap("a", _prov(["ludb:9"]), split, _table(split), allow_overlap=True).to_dict()
    line = allow_flags_line({"allow_overlap": True, "allow_unknown_provenance": True,
                             "provenance": {"a": {"known": True, "overlap": rep}, "b": {"known": False}}})
    assert line == ("allow_overlap: true (overlapping patients: a 1 test); "
                    "allow_unknown_provenance: true (unchecked encoders: b)")


def test_evaluation_data_settings_are_compared_with_the_encoders_pretraining(tmp_path):
    import json
    import warnings

    from ssl_ecg.data.prepare import DataSpec
    from ssl_ecg.evaluate.provenance import check_preprocessing, pretraining_data

    (tmp_path / "encoder.json").write_text(json.dumps({"encoder": {"name": "clocs"}, "pretraining": {"config": {
        "dataset": "ludb", "leads": ["I", "II"], "normalization": "record", "band": None, "fs": 100.0}}}))
    pre = pretraining_data(tmp_path)
    assert pre == {"leads": ["I", "II"], "normalization": "record", "band": None, "fs": 100.0}
    assert pretraining_data(tmp_path / "missing") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_preprocessing("a", pre, DataSpec("ludb", leads=("i", "ii"))) == {}  # same leads, spelled apart
    with pytest.warns(UserWarning, match=r"encoders.a \(runs/a\): normalization 'lead' differs from its "
                                         r"pretraining normalization 'record'"):
        got = check_preprocessing("a", pre, DataSpec("ludb", leads=("I", "II"), normalization="lead"),
                                  source="encoders.a (runs/a)")
    assert got == {"normalization": {"evaluation": "lead", "pretraining": "record"}}
    with pytest.warns(UserWarning, match=r"a: band \[0.5, 40.0\] differs from its pretraining band None"):
        check_preprocessing("a", pre, DataSpec("ludb", leads=("I", "II"), band=(0.5, 40)))
    with pytest.raises(ConfigError, match=r"a: leads \['II', 'I'\] differ from its pretraining leads \['I', 'II'\]"):
        check_preprocessing("a", pre, DataSpec("ludb", leads=("II", "I")))
    with pytest.warns(UserWarning, match=r"a: leads \['II', 'I'\] differs"):  # per-lead: each lead embedded alone
        check_preprocessing("a", pre, DataSpec("ludb", leads=("II", "I")), per_lead=True)
    assert check_preprocessing("a", None, DataSpec("ludb", normalization="none")) == {}
