import pytest
import torch

from augmentations import SegmentViews, per_lead_ids


def test_segment_views_match_a_loop_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 1000, generator=g)
    views = SegmentViews(n_segments=3, segment_len=1.2, fs=250.0)
    out = views(x, generator=torch.Generator().manual_seed(5))
    s = 300
    assert out.shape == (12, 3, 1, s)
    # Recover each sample's start from its first view and check every view against slices.
    for b in range(3):
        start = None
        for t0 in range(1000 - 3 * s + 1):
            if torch.equal(x[b, 0, t0:t0 + s], out[b * 4, 0, 0]):
                start = t0
                break
        assert start is not None
        for lead in range(4):
            for v in range(3):
                seg = x[b, lead, start + v * s:start + (v + 1) * s]
                assert torch.equal(out[b * 4 + lead, v, 0], seg)  # instance n = b * L + lead; V in time order


def test_multi_lead_layout_and_reproducibility():
    x = torch.randn(2, 12, 600)
    v = SegmentViews(2, 1.0, 250.0, per_lead=False)
    a = v(x, generator=torch.Generator().manual_seed(1))
    b = v(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 2, 12, 250) and torch.equal(a, b)
    assert torch.equal(a[:, 0, :, -1], a[:, 0, :, -1])
    x0 = x.clone()
    v(x)
    assert torch.equal(x, x0)  # input untouched


def test_too_short_names_both_lengths():
    with pytest.raises(ValueError, match=r"400 samples.*2 segments of 250 samples.*need 500"):
        SegmentViews(2, 1.0, 250.0)(torch.randn(1, 1, 400))


def test_per_lead_ids():
    ids = torch.tensor([7, 9])
    assert per_lead_ids(ids, 3).tolist() == [7, 7, 7, 9, 9, 9]
    assert per_lead_ids(ids, 3, same_lead=True).tolist() == [21, 22, 23, 27, 28, 29]


def test_lead_views_and_segment_lead_order():
    from augmentations import LeadViews, SegmentLeadViews

    x = torch.randn(2, 5, 900)
    lv = LeadViews([4, 0, 2])(x)
    assert lv.shape == (2, 3, 1, 900) and torch.equal(lv[:, 0, 0], x[:, 4])
    with pytest.raises(ValueError, match=r"\[7\] out of range"):
        LeadViews([7])(x)
    slv = SegmentLeadViews(2, 1.6, 250.0, leads=[1, 3])(x, generator=torch.Generator().manual_seed(0))
    assert slv.shape == (2, 4, 1, 400)
    # v = s * n_leads + l: views 0, 1 are segment 0 of leads 1, 3; views 2, 3 segment 1, right after.
    for b in range(2):
        start = next(t for t in range(900 - 800 + 1) if torch.equal(x[b, 1, t:t + 400], slv[b, 0, 0]))
        assert torch.equal(slv[b, 1, 0], x[b, 3, start:start + 400])
        assert torch.equal(slv[b, 2, 0], x[b, 1, start + 400:start + 800])
        assert torch.equal(slv[b, 3, 0], x[b, 3, start + 400:start + 800])


def test_multiview_draws_independent_views():
    from augmentations import GaussianNoise, MultiView

    x = torch.randn(3, 2, 500)
    mv = MultiView(GaussianNoise(snr_db=10.0), n_views=3)
    a = mv(x, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, 3, 2, 500)
    assert not torch.equal(a[:, 0], a[:, 1])
    assert torch.equal(a, mv(x, generator=torch.Generator().manual_seed(0)))


def test_single_lead_batches_give_one_instance_per_item():
    """CLOCS' CMSC batches: each item is one lead of one record, (B, 1, T) -> (B, V, 1, S), own start each."""
    x = torch.arange(4 * 900, dtype=torch.float32).reshape(4, 1, 900)
    out = SegmentViews(2, 1.6, 250.0)(x, generator=torch.Generator().manual_seed(3))
    assert out.shape == (4, 2, 1, 400)
    starts = (out[:, 0, 0, 0] - x[:, 0, 0]).long()
    for b in range(4):
        s = int(starts[b])
        assert torch.equal(out[b, 0, 0], x[b, 0, s:s + 400]) and torch.equal(out[b, 1, 0], x[b, 0, s + 400:s + 800])
    assert len(set(starts.tolist())) > 1  # items are cropped independently
    assert torch.equal(per_lead_ids(torch.tensor([5, 6]), 1), torch.tensor([5, 6]))  # L = 1: ids unchanged
