import json

import pytest
import torch
from torch import nn

from ssl_ecg import load_encoder, save_encoder
from ssl_ecg.errors import ConfigError
from ssl_ecg.models import InvertedResidual1d, MobileNet1d, MobileNetV2_1d, build_encoder, make_divisible
from ssl_ecg.utils import seeded

NAMES = ["mobilenet1d", "mobilenetv2_1d"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("in_channels", [1, 12])
@pytest.mark.parametrize("length", [1, 5, 388, 2500, 2513])
def test_any_length_and_channels(name, in_channels, length):
    enc = build_encoder({"name": name, "in_channels": in_channels, "embed_dim": 24}).eval()
    z = enc(torch.randn(3, in_channels, length))
    assert z.shape == (3, 24) == (3, enc.embed_dim) and torch.isfinite(z).all()


@pytest.mark.parametrize("name", NAMES)
def test_trains_and_channel_check(name):
    enc = build_encoder({"name": name, "in_channels": 2, "embed_dim": 8, "width_mult": 0.5})
    enc(torch.randn(4, 2, 600)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())
    with pytest.raises(ConfigError, match=r"x: expected \(N, 2, T\).*got \(4, 3, 600\)"):
        enc(torch.randn(4, 3, 600))


def test_v1_parameter_count_by_hand():
    c_in, k, e = 2, 3, 5
    enc = MobileNet1d(in_channels=c_in, embed_dim=e, kernel=k, stem=(8, 2), layers=[(16, 2), (24, 1)])
    stem = c_in * 8 * k + 2 * 8                    # full conv (no bias) + BN scale and shift
    layer1 = 8 * k + 2 * 8 + 8 * 16 + 2 * 16         # depthwise C*k + BN, pointwise C_in*C_out + BN
    layer2 = 16 * k + 2 * 16 + 16 * 24 + 2 * 24
    head = 24 * e + e
    assert sum(p.numel() for p in enc.parameters()) == stem + layer1 + layer2 + head
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv1d)]
    assert [(m.groups, m.stride[0]) for m in convs] == [(1, 2), (8, 2), (1, 1), (16, 1), (1, 1)]


def test_v2_parameter_count_by_hand():
    c_in, k, e = 2, 3, 5
    enc = MobileNetV2_1d(in_channels=c_in, embed_dim=e, kernel=k, stem=(8, 2), blocks=[(1, 8, 1, 1), (2, 16, 2, 2)],
                         last_channels=24)
    stem = c_in * 8 * k + 2 * 8
    t1 = 8 * k + 2 * 8 + 8 * 8 + 2 * 8                              # t = 1: no expansion conv
    t2a = (8 * 16 + 2 * 16) + (16 * k + 2 * 16) + (16 * 16 + 2 * 16)  # expand 8->16, dw 16, project 16->16
    t2b = (16 * 32 + 2 * 32) + (32 * k + 2 * 32) + (32 * 16 + 2 * 16)  # expand 16->32, dw 32, project 32->16
    last = 16 * 24 + 2 * 24
    head = 24 * e + e
    assert sum(p.numel() for p in enc.parameters()) == stem + t1 + t2a + t2b + last + head
    blocks = [m for m in enc.modules() if isinstance(m, InvertedResidual1d)]
    assert [b.use_residual for b in blocks] == [True, False, True]  # stride 1 and same width only


@pytest.mark.parametrize("value", [0.1, 3, 4, 7.9, 8, 11.2, 12, 19.9, 20, 28, 36, 44.8, 96 * 0.35, 1280 * 0.75, 333.3])
def test_make_divisible_matches_the_mobilenetv2_reference(value):
    from torchvision.models._utils import _make_divisible

    assert make_divisible(value) == _make_divisible(value, 8)
    assert make_divisible(value) % 8 == 0 and make_divisible(value) >= 0.9 * value


@pytest.mark.parametrize("cls", [MobileNet1d, MobileNetV2_1d])
def test_width_mult_scales_channels(cls):
    table = cls().config.get("layers") or [[c, s] for _, c, _, s in cls().config["blocks"]]
    params = []
    for width in (0.5, 0.75, 1.0, 1.5, 2.0):
        enc = cls(in_channels=12, width_mult=width)
        convs = [m for m in enc.modules() if isinstance(m, nn.Conv1d)]
        assert all(m.out_channels % 8 == 0 for m in convs)
        pointwise = [m.out_channels for m in convs if m.kernel_size == (1,) and m.groups == 1]
        for channels, _ in table:  # each row's width appears, scaled and rounded
            assert make_divisible(channels * width) in pointwise
        assert convs[0].out_channels == make_divisible(enc.config["stem"][0] * width)
        params.append(sum(p.numel() for p in enc.parameters()))
    assert params == sorted(params) and len(set(params)) == len(params), params


def test_v2_last_conv_is_not_thinned_below_width_one():
    assert MobileNetV2_1d(width_mult=0.5).out_channels == MobileNetV2_1d().out_channels == 96
    assert MobileNetV2_1d(width_mult=2.0).out_channels == 192


def _inverted_residual_reference(block: InvertedResidual1d, x: torch.Tensor, stride: int) -> torch.Tensor:
    """Sandler et al.'s bottleneck written out in float64 loops from the block's weights: 1x1 expansion -> BN ->
    ReLU6, depthwise conv (same padding, ``stride``) -> BN -> ReLU6, 1x1 projection -> BN, plus the input when
    the shapes allow."""
    import numpy as np

    def bn(y, m):  # eval-mode BatchNorm from running statistics
        g, b = m.weight.detach().double().numpy(), m.bias.detach().double().numpy()
        mu, var = m.running_mean.double().numpy(), m.running_var.double().numpy()
        return (y - mu[:, None]) / np.sqrt(var[:, None] + m.eps) * g[:, None] + b[:, None]

    def relu6(y):
        return np.minimum(np.maximum(y, 0.0), 6.0)

    expand, depthwise, project = (seq for seq in block.body)
    w_e = expand[0].weight.detach().double().numpy()[:, :, 0]       # (hidden, c_in)
    w_d = depthwise[0].weight.detach().double().numpy()[:, 0, :]    # (hidden, k)
    w_p = project[0].weight.detach().double().numpy()[:, :, 0]      # (c_out, hidden)
    k = w_d.shape[1]
    out = []
    for item in x.double().numpy():                                 # (c_in, T)
        h = relu6(bn(w_e @ item, expand[1]))
        t = h.shape[1]
        padded = np.pad(h, ((0, 0), (k // 2, k // 2)))
        t_out = (t + 2 * (k // 2) - k) // stride + 1
        d = np.zeros((h.shape[0], t_out))
        for c in range(h.shape[0]):
            for j in range(t_out):
                d[c, j] = sum(w_d[c, i] * padded[c, j * stride + i] for i in range(k))
        d = relu6(bn(d, depthwise[1]))
        y = bn(w_p @ d, project[1])
        out.append(y + item if stride == 1 and y.shape == item.shape else y)
    return torch.from_numpy(np.stack(out))


def _randomise_bn(module: nn.Module) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("stride", [1, 2])
def test_inverted_residual_matches_a_float64_reference(stride):
    torch.manual_seed(0)
    block = InvertedResidual1d(8, 8, kernel=5, stride=stride, expansion=3).eval()
    _randomise_bn(block)
    x = torch.randn(2, 8, 40)
    ref = _inverted_residual_reference(block, x, stride)
    with torch.no_grad():
        got = block(x)
    assert got.shape == ref.shape == (2, 8, 40 // stride)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    assert block.use_residual == (stride == 1)


def test_inverted_residual_uses_its_shortcut():
    torch.manual_seed(0)
    block = InvertedResidual1d(8, 8, kernel=5, stride=1, expansion=3).eval()
    x = torch.randn(2, 8, 40)
    assert not torch.allclose(block(x), x)
    with torch.no_grad():  # projection BN -> 0: only the shortcut is left
        block.projection_bn.weight.zero_()
        block.projection_bn.bias.zero_()
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    strided = InvertedResidual1d(8, 8, kernel=5, stride=2, expansion=3).eval()
    with torch.no_grad():
        strided.projection_bn.weight.zero_()
        strided.projection_bn.bias.zero_()
    assert strided(x).shape == (2, 8, 20) and torch.count_nonzero(strided(x)) == 0  # no shortcut when strided


def test_v2_has_linear_bottlenecks_and_relu6():
    enc = MobileNetV2_1d()
    block = next(m for m in enc.modules() if isinstance(m, InvertedResidual1d))
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in block.body[-1])  # projection is linear
    kinds = {type(m) for m in enc.modules()}
    assert nn.ReLU6 in kinds and nn.ReLU not in kinds


@pytest.mark.parametrize("config", [{"name": "mobilenet1d", "in_channels": 12, "width_mult": 0.75, "kernel": 5},
                                    {"name": "mobilenetv2_1d", "in_channels": 1, "embed_dim": 64},
                                    {"name": "mobilenetv2_1d", "in_channels": 12, "width_mult": 1.5}],
                         ids=lambda c: f"{c['name']}-{c['in_channels']}")
def test_roundtrip_through_load_encoder(config, tmp_path):
    enc = build_encoder(config)
    enc(torch.randn(8, config["in_channels"], 500))  # train-mode pass: BN running statistics move off their init
    enc.eval()
    save_encoder(enc, tmp_path / "encoder.pt")
    saved = json.loads((tmp_path / "encoder.json").read_text())["encoder"]
    assert saved == enc.config
    loaded = load_encoder(tmp_path)
    x = torch.randn(2, config["in_channels"], 777)
    torch.testing.assert_close(loaded(x), enc(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_build_is_deterministic(name):
    def weights(seed):
        with seeded(seed):
            return build_encoder({"name": name, "in_channels": 12}).state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", NAMES)
def test_any_evaluation_window_is_accepted(name):
    from ssl_ecg.evaluate.runner import check_encoder

    enc = build_encoder({"name": name})
    assert "input_len" not in enc.config
    check_encoder(enc, per_lead=True, n_leads=12, window=1234)
    with pytest.raises(ConfigError, match="takes 1 channel"):
        check_encoder(enc, per_lead=False, n_leads=12, window=1234)


@pytest.mark.parametrize("kwargs, match", [
    ({"kernel": 4}, "kernel must be an odd integer"),
    ({"width_mult": 0}, "width_mult must be a number > 0"),
    ({"in_channels": 0}, "in_channels must be an integer >= 1"),
    ({"stem": [8]}, r"stem must be 2 integers >= 1 \(channels, stride\), got \[8\]"),
])
@pytest.mark.parametrize("cls", [MobileNet1d, MobileNetV2_1d])
def test_bad_arguments(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


def test_bad_tables():
    with pytest.raises(ConfigError, match=r"mobilenet1d: layers\[1\] must be 2 integers >= 1.*got \[32, 0\]"):
        MobileNet1d(layers=[[16, 2], [32, 0]])
    with pytest.raises(ConfigError, match=r"mobilenetv2_1d: blocks\[0\] must be 4 integers"):
        MobileNetV2_1d(blocks=[[2, 16, 2]])
    with pytest.raises(ConfigError, match="non-empty list"):
        MobileNetV2_1d(blocks=[])
    with pytest.raises(ConfigError, match="last_channels"):
        MobileNetV2_1d(last_channels=0)
