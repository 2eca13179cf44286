import numpy as np
import pytest

from ssl_ecg.data.sampler import PatientBatchSampler, positive_share
from ssl_ecg.errors import DatasetError

# 30 patients: 10 with 1 record, 10 with 2, 10 with 4.
PATIENTS = [f"p{i}" for i in range(10)] + [f"q{i}" for i in range(10) for _ in range(2)] + \
           [f"r{i}" for i in range(10) for _ in range(4)]


def test_batches_hold_k_per_patient_and_are_seeded():
    s = PatientBatchSampler(PATIENTS, batch_size=8, k=2, seed=1, drop_last=False)
    batches = list(s)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == 10 + 20 + 20  # min(k, records) per patient, no repeats
    ids = np.asarray(PATIENTS)
    for b in batches:
        _, counts = np.unique(ids[b], return_counts=True)
        assert counts.max() <= 2
    assert batches == list(PatientBatchSampler(PATIENTS, batch_size=8, k=2, seed=1, drop_last=False))
    s.set_epoch(1)
    assert list(s) != batches
    share = s.last_positive_share
    assert 0.6 < share <= 1.0  # 40 of 50 items have a partner
    assert positive_share(["a", "a", "b"]) == pytest.approx(2 / 3)


def test_distributed_ranks_are_disjoint_and_equal():
    r0 = list(PatientBatchSampler(PATIENTS, 6, k=2, seed=0, num_replicas=2, rank=0))
    r1 = list(PatientBatchSampler(PATIENTS, 6, k=2, seed=0, num_replicas=2, rank=1))
    assert len(r0) == len(r1) > 0
    assert not {i for b in r0 for i in b} & {i for b in r1 for i in b}



def test_each_patient_is_one_contiguous_run_and_its_draw_is_uniform():
    """Patients fill the batches one after another; a patient with n > k records contributes each record with
    probability k / n (a uniform draw without replacement), checked over epochs against the binomial spread."""
    ids = np.asarray(PATIENTS)
    sampler = PatientBatchSampler(PATIENTS, batch_size=5, k=2, seed=3, drop_last=False)
    picks = np.zeros(len(PATIENTS))
    pairs = {}
    epochs = 400
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        flat = [i for b in sampler for i in b]
        runs = [p for j, p in enumerate(ids[flat]) if j == 0 or ids[flat][j - 1] != p]
        assert len(runs) == len(set(runs)) == 30  # one run per patient, every patient once
        picks[flat] += 1
        for p in ("r0", "r1"):
            key = tuple(sorted(i for i in flat if ids[i] == p))
            pairs[key] = pairs.get(key, 0) + 1
    four = np.flatnonzero(np.char.startswith(ids.astype(str), "r"))
    expected, sd = epochs / 2, np.sqrt(epochs / 4)
    assert np.all(np.abs(picks[four] - expected) < 5 * sd)  # each of 4 records picked with probability 2 / 4
    assert (picks[np.flatnonzero(np.char.startswith(ids.astype(str), "q"))] == epochs).all()
    assert len(pairs) == 12  # all 6 pairs of each of r0's and r1's 4 records occur


@pytest.mark.parametrize("batch_size, drop_last, replicas", [(8, True, 1), (8, False, 1), (6, True, 2),
                                                             (7, False, 3), (50, False, 2), (64, True, 1)])
def test_length_is_counted_without_drawing_and_matches_the_batches(batch_size, drop_last, replicas):
    for rank in range(replicas):
        sampler = PatientBatchSampler(PATIENTS, batch_size, k=2, seed=5, drop_last=drop_last,
                                      num_replicas=replicas, rank=rank)
        batches = list(sampler)
        assert len(sampler) == len(batches)
        assert all(len(b) == batch_size for b in batches[:-1])
        if drop_last:
            assert all(len(b) == batch_size for b in batches)


def test_bad_arguments():
    with pytest.raises(DatasetError, match="k:"):
        PatientBatchSampler(PATIENTS, 8, k=1)
    with pytest.raises(DatasetError, match="no items"):
        PatientBatchSampler([], 8)
    with pytest.raises(DatasetError, match="rank"):
        PatientBatchSampler(PATIENTS, 8, rank=2, num_replicas=2)


def test_epoch_shuffle_sampler_splits_disjoint_equal_shares_across_ranks():
    from ssl_ecg.data.sampler import EpochShuffleSampler

    shares = [list(EpochShuffleSampler(11, seed=4, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    flat = [i for s in shares for i in s]
    assert len(set(flat)) == 9 and set(flat) <= set(range(11))
    single = list(EpochShuffleSampler(11, seed=4))
    assert shares[0] == single[0:9:3]  # the same permutation, dealt out
    with pytest.raises(DatasetError, match="rank"):
        EpochShuffleSampler(11, num_replicas=2, rank=2)


def test_cross_lead_rate_closed_form_and_edge_cases():
    from ssl_ecg.data.sampler import cross_lead_positive_rate, cross_lead_share

    # one patient with 3 leads and 1 with 1 lead in a pool of 4: the 3-lead anchors have m = 2
    patients, leads = ["a", "a", "a", "b"], [0, 1, 2, 0]
    # batch 2: an anchor's one partner slot holds one of its 2 other leads with probability 2/3
    assert cross_lead_positive_rate(patients, leads, 2) == pytest.approx(3 / 4 * 2 / 3)
    assert cross_lead_positive_rate(patients, leads, 4) == pytest.approx(3 / 4)  # one batch holds all
    assert cross_lead_positive_rate(patients, leads, 100) == pytest.approx(3 / 4)
    assert cross_lead_positive_rate(patients, leads, 1) == 0.0  # nobody to meet
    # same patient, same lead (two records of one lead) is not cross-lead
    assert cross_lead_positive_rate(["a", "a"], [0, 0], 2) == 0.0
    assert cross_lead_share(patients, leads, [0, 1, 3]) == pytest.approx(2 / 3)
    assert cross_lead_share(patients, leads, [0, 3]) == 0.0
    with pytest.raises(DatasetError, match="batch_size"):
        cross_lead_positive_rate(patients, leads, 0)
    with pytest.raises(DatasetError, match="one length"):
        cross_lead_positive_rate(patients, leads[:3], 2)


def test_epoch_shuffle_over_a_record_lead_pool_mixes_the_leads_of_a_record():
    from ssl_ecg.data.sampler import EpochShuffleSampler, cross_lead_positive_rate, cross_lead_share

    n_rec, n_leads, batch = 50, 12, 60
    patients, leads = np.repeat(np.arange(n_rec), n_leads), np.tile(np.arange(n_leads), n_rec)
    s = EpochShuffleSampler(n_rec * n_leads, seed=7)
    order = list(s)
    assert sorted(order) == list(range(n_rec * n_leads)) and order == list(EpochShuffleSampler(600, seed=7))
    shares = []
    for e in range(60):
        s.set_epoch(e)
        o = np.array(list(s))
        shares += [cross_lead_share(patients, leads, o[k:k + batch]) for k in range(0, 600, batch)]
    # 1 - C(588, 59) / C(599, 59) = 0.69: far from the 1.0 of keeping a record's leads together
    expected = cross_lead_positive_rate(patients, leads, batch)
    assert expected == pytest.approx(0.69, abs=0.01)
    assert np.mean(shares) == pytest.approx(expected, abs=0.02)
