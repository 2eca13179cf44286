import numpy as np
import pytest

from ssl_ecg.data.splits import check_classes_present, check_no_leakage, label_fraction_subsets, patient_split
from ssl_ecg.errors import SplitError

PATIENTS = [f"p{i}" for i in range(100)]
LABELS = {p: int(i % 4 == 0) for i, p in enumerate(PATIENTS)}  # 25% positives


def test_patient_split_is_disjoint_complete_seeded_and_stratified():
    s = patient_split(PATIENTS + PATIENTS[:10], (0.6, 0.2, 0.2), labels=LABELS, seed=3)
    assert sorted(sum(s.values(), []), key=str) == sorted(PATIENTS, key=str)
    assert [len(s[k]) for k in ("train", "val", "test")] == [60, 20, 20]
    assert sum(LABELS[p] for p in s["test"]) == 5  # 25% of 20
    assert s == patient_split(PATIENTS, (0.6, 0.2, 0.2), labels=LABELS, seed=3)
    assert s != patient_split(PATIENTS, (0.6, 0.2, 0.2), labels=LABELS, seed=4)


def test_label_fractions_are_nested_seeded_and_keep_every_class():
    fr = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0]
    subsets = label_fraction_subsets(PATIENTS, fr, labels=LABELS, seed=0)
    for small, large in zip(fr[:-1], fr[1:]):
        assert set(subsets[small]) <= set(subsets[large])
    for f in fr:
        assert {LABELS[p] for p in subsets[f]} == {0, 1}
    assert set(subsets[1.0]) == set(PATIENTS)
    assert len(subsets[0.25]) == 25
    assert subsets == label_fraction_subsets(PATIENTS, fr, labels=LABELS, seed=0)
    assert subsets[0.1] != label_fraction_subsets(PATIENTS, fr, labels=LABELS, seed=1)[0.1]


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_fraction_outside_unit_interval(bad):
    with pytest.raises(SplitError, match=r"\(0, 1\]"):
        label_fraction_subsets(PATIENTS, [bad])


def test_leakage_and_empty_split_are_errors():
    with pytest.raises(SplitError, match="p1.*both"):
        check_no_leakage({"train": ["p0", "p1"], "test": ["p1"]})
    with pytest.raises(SplitError, match="'val' is empty"):
        check_no_leakage({"train": ["p0"], "val": []})
    with pytest.raises(SplitError, match="sum"):
        patient_split(PATIENTS, (0.5, 0.2, 0.2))


def test_class_without_positives_is_named():
    with pytest.raises(SplitError, match=r"task 'lvh', test split.*\[1\]"):
        check_classes_present([0, 0, 0], "test split", "lvh")


def test_multi_label_fractions_nested_keep_classes_and_warn():
    rng = np.random.default_rng(0)
    labels = {p: {c for c in ("AF", "PVC", "LBBB") if rng.random() < (0.3 if c != "LBBB" else 0.03)}
              for p in PATIENTS}
    labels["p7"] = {"RARE"}
    fr = [0.01, 0.05, 0.25, 1.0]
    subsets = label_fraction_subsets(PATIENTS, fr, labels=labels, seed=4)
    classes = {c for v in labels.values() for c in v}
    for small, large in zip(fr[:-1], fr[1:]):
        assert set(subsets[small]) <= set(subsets[large])
    for f in fr:
        assert {c for p in subsets[f] for c in labels[p]} == classes  # every class keeps a positive
    assert len(subsets[0.25]) >= 25 and set(subsets[1.0]) == set(PATIENTS)
    with pytest.warns(UserWarning, match=r"\['GHOST'\] have no positive"):
        label_fraction_subsets(PATIENTS[:50], [0.1], labels={**labels, "p60": {"GHOST"}}, seed=0)


def test_table_splits_warn_about_record_level_patient_ids():
    import warnings

    import pandas as pd

    from ssl_ecg.data.splits import RecordLevelIdsWarning, record_level_ids, table_splits

    table = pd.DataFrame({"record_id": [f"r{i}" for i in range(12)],
                          "patient_id": [f"p{i // 2}" for i in range(8)] + ["r8", "r9", "r10", "r11"],
                          "patient_id_source": ["dataset"] * 8 + ["record"] * 4})
    with pytest.warns(RecordLevelIdsWarning, match=r"incart: 4 of 12 records have record-level patient ids"):
        splits = table_splits(table, (0.5, 0.25, 0.25), seed=1, dataset="incart")
    check_no_leakage(splits)
    assert record_level_ids(table, "incart")["record_level"] == 4
    table["patient_id_source"] = "dataset"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert table_splits(table, (0.5, 0.25, 0.25), seed=1, dataset="incart") == splits
    assert record_level_ids(table, "incart") is None


def test_official_patient_split_groups_patients_and_refuses_one_in_two_subsets():
    from ssl_ecg.data.splits import official_patient_split

    patients = ["a", "a", "b", "c", "d", "e"]
    subsets = ["DS1", "DS1", "DS2", "", float("nan"), None]
    assert official_patient_split(patients, subsets, "mitdb") == {"DS1": ["a"], "DS2": ["b"]}
    # a patient with one named and one unnamed record belongs to the named subset
    assert official_patient_split(["a", "a", "b"], ["", "test", "train"]) == {"test": ["a"], "train": ["b"]}
    with pytest.raises(SplitError, match=r"mitdb: .*patient '201' in subsets \['DS1', 'DS2'\]"):
        official_patient_split(["201", "201", "100"], ["DS1", "DS2", "DS2"], "mitdb")
    with pytest.raises(SplitError, match="names no subset"):
        official_patient_split(["a"], [""], "x")
