import pytest
import torch
from scipy import stats

from augmentations._random import STREAM_SIZE, randn_streams


def draw(shape, seed, dtype=torch.float32):
    return randn_streams(shape, torch.empty(0, dtype=dtype), torch.Generator().manual_seed(seed))


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_same_numbers_for_any_thread_count(threads):
    shape = (3, STREAM_SIZE + 7)  # four streams, the last one short
    torch.set_num_threads(1)
    one = draw(shape, 5)
    torch.set_num_threads(3)
    three = draw(shape, 5)
    assert torch.equal(one, three)
    assert torch.equal(draw(shape, 5), draw(shape, 5)) and not torch.equal(draw(shape, 5), draw(shape, 6))


def test_small_tensors_draw_one_stream_from_the_generator():
    expected = torch.empty(4, 100).normal_(generator=torch.Generator().manual_seed(2))
    assert torch.equal(draw((4, 100), 2), expected)


def test_streams_are_standard_normal_and_independent():
    x = draw((4, STREAM_SIZE), 0, torch.float64)
    assert x.dtype == torch.float64 and x.shape == (4, STREAM_SIZE)
    for stream in x:  # each row is one stream
        assert stats.kstest(stream[:20000].numpy(), "norm").pvalue > 1e-3
    assert stats.kstest(x.flatten().numpy()[::97], "norm").pvalue > 1e-3
    corr = torch.corrcoef(x)  # streams from different seeds are uncorrelated: |r| ~ 1e-3
    assert (corr - torch.eye(4, dtype=torch.float64)).abs().max() < 5e-3
    assert not torch.equal(x[0, :1000], x[1, :1000])
