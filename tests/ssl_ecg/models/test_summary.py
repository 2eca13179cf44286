import math

import pandas as pd
import pytest
import torch
from torch import nn

from ssl_ecg.cli import main
from ssl_ecg.errors import ConfigError
from ssl_ecg.models import ENCODERS, MobileNet1d, build_encoder, count_macs, encoder_summary, summarize_registry
from ssl_ecg.models.summary import default_config


class TinyNet(nn.Module):
    """One Conv1d (+ BN + ReLU, which are not multiply-accumulates) and a Linear on the time-averaged features."""

    def __init__(self, in_channels: int = 3, groups: int = 1, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, 6, 5, stride=2, groups=groups, bias=bias)
        self.bn, self.act = nn.BatchNorm1d(6), nn.ReLU()
        self.fc = nn.Linear(6, 4)
        self.in_channels = in_channels
        self.config = {"name": "tiny", "in_channels": in_channels}

    def forward(self, x):
        return self.fc(self.act(self.bn(self.conv(x))).mean(-1))


def conv_macs(c_in, c_out, k, t_out, groups=1, bias=False):
    """Multiply-accumulates of a Conv1d: every output element sums k * c_in / groups products (+1 for a bias)."""
    return c_out * t_out * (k * c_in // groups + (1 if bias else 0))


@pytest.mark.parametrize("groups, bias", [(1, True), (3, False), (1, False)])
def test_macs_of_conv_and_linear_by_hand(groups, bias):
    length = 50
    t_out = (length - 5) // 2 + 1  # 23
    expected = conv_macs(3, 6, 5, t_out, groups, bias) + 6 * 4 + 4
    assert count_macs(TinyNet(3, groups, bias), 3, length) == expected


def test_macs_of_mobilenet_by_hand():
    # depthwise (groups = C) and pointwise convs, no biases; the counter must treat groups right
    enc = MobileNet1d(in_channels=2, embed_dim=5, kernel=3, stem=(8, 2), layers=[(16, 2), (24, 1)])
    t = 101
    t1 = math.ceil(t / 2)
    t2 = math.ceil(t1 / 2)
    expected = (conv_macs(2, 8, 3, t1) + conv_macs(8, 8, 3, t2, groups=8) + conv_macs(8, 16, 1, t2)
                + conv_macs(16, 16, 3, t2, groups=16) + conv_macs(16, 24, 1, t2) + 24 * 5 + 5)
    assert count_macs(enc, 2, t) == expected


def test_count_macs_leaves_the_module_alone():
    net = TinyNet().train()
    hooks = len(net.conv._forward_hooks)
    count_macs(net, 3, 50)
    assert net.training and len(net.conv._forward_hooks) == hooks and not hasattr(net, "start_flops_count")


def test_summary_of_a_per_lead_encoder_covers_the_whole_record():
    net = TinyNet(in_channels=1)
    net.fc.weight.requires_grad_(False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        row = encoder_summary(net, in_channels=12, input_len=50, threads=1, repeats=3, warmup=1)
        assert torch.get_num_threads() == 2  # the caller's thread count is restored
    finally:
        torch.set_num_threads(before)
    params = 6 * 5 + 6 + 12 + 6 * 4 + 4
    assert row["input"] == "12 x (1, 50)"
    assert row["params"] == params and row["trainable_params"] == params - 24
    assert row["macs"] == 12 * (conv_macs(1, 6, 5, 23, bias=True) + 6 * 4 + 4)
    assert row["size_mb"] == pytest.approx(4 * params / 1e6)
    assert row["latency_ms"] > 0 and row["encoder"] == "tiny"


def test_summary_of_a_multi_lead_config():
    config = {"name": "mobilenet1d", "in_channels": 12, "embed_dim": 16}
    row = encoder_summary(config, 12, 300, repeats=2, warmup=0)
    enc = build_encoder(config)
    assert row["input"] == "1 x (12, 300)" and row["encoder"] == "mobilenet1d"
    # default table: stem (8, stride 6), rows (16, 4), (32, 4), (64, 2), (96, 2), kernel 7, same padding, no biases
    t0 = math.ceil(300 / 6)
    t1, t2 = math.ceil(t0 / 4), math.ceil(math.ceil(t0 / 4) / 4)
    t3, t4 = math.ceil(t2 / 2), math.ceil(math.ceil(t2 / 2) / 2)
    by_hand = (conv_macs(12, 8, 7, t0)
               + conv_macs(8, 8, 7, t1, groups=8) + conv_macs(8, 16, 1, t1)
               + conv_macs(16, 16, 7, t2, groups=16) + conv_macs(16, 32, 1, t2)
               + conv_macs(32, 32, 7, t3, groups=32) + conv_macs(32, 64, 1, t3)
               + conv_macs(64, 64, 7, t4, groups=64) + conv_macs(64, 96, 1, t4)
               + 96 * 16 + 16)
    assert (t0, t1, t2, t3, t4) == (50, 13, 4, 2, 1)
    assert row["macs"] == by_hand
    params = (12 * 8 * 7 + 16 + (8 * 7 + 16 + 8 * 16 + 32) + (16 * 7 + 32 + 16 * 32 + 64)
              + (32 * 7 + 64 + 32 * 64 + 128) + (64 * 7 + 128 + 64 * 96 + 192) + 96 * 16 + 16)
    assert row["params"] == params == sum(p.numel() for p in enc.parameters())


def test_summary_errors():
    with pytest.raises(ConfigError, match=r"takes 3 channel\(s\); expected 1 \(per lead\) or in_channels = 12"):
        encoder_summary(TinyNet(3), 12, 50)
    with pytest.raises(ConfigError, match="input_len: expected an integer >= 1, got 0"):
        encoder_summary(TinyNet(3), 3, 0)
    with pytest.raises(ConfigError, match="threads"):
        encoder_summary(TinyNet(3), 3, 50, threads=0)
    with pytest.raises(ConfigError, match="MACs could not be counted"):
        count_macs(build_encoder({"name": "clocs", "input_len": 1000}), 1, 500)  # CLOCS is built for 1000 samples
    with pytest.raises(ConfigError, match="fs: expected a finite number > 0"):
        summarize_registry(fs=float("nan"))
    with pytest.raises(ConfigError, match=r"in_channels: expected 1 \(per lead\) or leads = 12, got 5"):
        summarize_registry(in_channels=5)
    with pytest.raises(ConfigError, match=r"fs x seconds: 1e\+09 Hz x 3600 s is 3.6e\+12 samples per lead; "
                                          r"expected at most 1e\+07"):
        summarize_registry(fs=1e9, seconds=3600)
    with pytest.raises(ConfigError, match=r"fs x seconds: .* samples per lead; expected at most 1e\+07"):
        summarize_registry(fs=1e300, seconds=1e300)  # overflows to inf


def test_cli_models_refuses_absurd_lengths_in_one_line(capsys):
    assert main(["models", "--fs", "1e6", "--seconds", "3600"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "fs x seconds: 1e+06 Hz x 3600 s is 3.6e+09 samples per lead" in err


@pytest.mark.parametrize("in_channels", [1, 12])
def test_mobilenets_are_cheaper_than_clocs_and_resnet(in_channels):
    # the design target: 10 s at 250 Hz, one lead per item or all 12 at once
    cost = {}
    for name in ("clocs", "resnet1d", "mobilenet1d", "mobilenetv2_1d"):
        enc = build_encoder(default_config(name, 2500, in_channels))
        cost[name] = (sum(p.numel() for p in enc.parameters()), count_macs(enc, in_channels, 2500))
    for name in ("mobilenet1d", "mobilenetv2_1d"):
        for other in ("clocs", "resnet1d"):
            assert cost[name][0] < 0.6 * cost[other][0] and cost[name][1] < 0.9 * cost[other][1], cost


def test_summarize_registry_one_row_per_encoder():
    table = summarize_registry(fs=50, seconds=10, leads=12, repeats=1)
    assert isinstance(table, pd.DataFrame) and list(table["encoder"]) == list(ENCODERS)
    assert list(table.columns) == ["encoder", "input", "params", "trainable_params", "macs", "size_mb", "latency_ms"]
    assert set(table["input"]) == {"12 x (1, 500)"}  # every default is per lead
    assert table.loc[table["encoder"] == "clocs", "params"].item() == sum(
        p.numel() for p in build_encoder({"name": "clocs", "input_len": 500}).parameters())


def test_cli_prints_a_row_per_encoder(capsys, tmp_path):
    out = tmp_path / "models.csv"
    assert main(["models", "--fs", "50", "--seconds", "8", "--leads", "2", "--csv", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ENCODERS:
        assert sum(line.split()[0] == name for line in lines) == 1, (name, lines)
        assert any(line.split()[0] == name and "2 x (1, 400)" in line for line in lines)
    assert list(pd.read_csv(out)["encoder"]) == list(ENCODERS)


@pytest.mark.parametrize("argv, message", [
    (["--seconds", "0"], "seconds: expected a finite number > 0"),
    (["--leads", "0"], "leads: expected an integer >= 1"),
    (["--threads", "0"], "threads: expected an integer >= 1"),
    (["--in-channels", "5"], "in_channels: expected 1"),
])
def test_cli_bad_argument_is_one_line_and_exit_2(capsys, argv, message):
    assert main(["models", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_cli_unparsable_argument_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:  # argparse's own usage error
        main(["models", "--fs", "abc"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "invalid float value: 'abc'" in err and len(err.strip().splitlines()) == 1
