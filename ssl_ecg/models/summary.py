"""What an encoder costs: parameters, multiply-accumulates, weight size and CPU latency per record."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import statistics
import time
from typing import Any

import torch
from torch import nn

from ssl_ecg.errors import ConfigError
from ssl_ecg.models.registry import ENCODERS, build_encoder

__all__ = ["encoder_summary", "summarize_registry", "count_macs", "MAX_INPUT_SAMPLES"]

#: The most samples per lead a summary builds an input of (10^7: e.g. 11 h at 250 Hz; a 12-lead float32 record of
#: that length is already 480 MB and every encoder runs on it): beyond it ``fs x seconds`` is a typo, refused
#: before any memory is taken.
MAX_INPUT_SAMPLES = 10**7

#: Element-wise layers that ptflops' pytorch backend would count as one (BatchNorm: two) operation per element.
#: They are left out, so "MACs" means the multiply-accumulates of convolutions, linear layers and attention, as
#: the MobileNet papers count mult-adds.
_ELEMENTWISE = [nn.BatchNorm1d, nn.LayerNorm, nn.ReLU, nn.ReLU6, nn.GELU, nn.MaxPool1d, nn.AvgPool1d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d]


def count_macs(module: nn.Module, in_channels: int, input_len: int) -> int:
    """Multiply-accumulates of one forward pass of a single (1, in_channels, input_len) item.

    Counted by ptflops (``get_model_complexity_info``, pytorch backend) on a copy of ``module``, in eval mode.
    Per output element, a Conv1d counts ``kernel * in_channels / groups`` (depthwise: ``kernel``) and a Linear
    ``in_features``; a bias adds one. ``nn.MultiheadAttention`` counts its projections and both attention
    products. Two settings make the count exact: ``count_functional=False``, because the patched
    ``F.relu`` would count every ``nn.ReLU`` a second time, and the element-wise layers (BatchNorm, ReLU,
    pools, LayerNorm) are ignored rather than counted as one operation per element.

    Args:
        module: an encoder taking (N, in_channels, T).
        in_channels: channels of one item.
        input_len: samples of one item.

    Returns:
        The count for one item (int).

    Raises:
        ConfigError: ptflops could not run the forward pass (e.g. the shape does not fit the encoder).
    """
    from ptflops import get_model_complexity_info

    model = copy.deepcopy(module).eval()  # ptflops adds hooks and methods to the module it is given
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):  # ptflops prints failures
        macs, _ = get_model_complexity_info(
            model, (in_channels, input_len), print_per_layer_stat=False, as_strings=False, ost=log,
            input_constructor=lambda shape: torch.zeros(1, *shape), ignore_modules=list(_ELEMENTWISE),
            backend="pytorch", backend_specific_config={"count_functional": False})
    if macs is None:  # ptflops caught an exception from the forward pass and returned None
        reason = next((line for line in reversed(log.getvalue().splitlines()) if line.strip()), "no reason given")
        raise ConfigError(f"encoder {type(module).__name__}: MACs could not be counted for an input of shape "
                          f"(1, {in_channels}, {input_len}) ({reason.strip()}); expected a shape the encoder accepts")
    return int(macs)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: expected an integer >= 1, got {value!r}")
    return value


def encoder_summary(config_or_module: dict[str, Any] | nn.Module, in_channels: int, input_len: int, *,
                    threads: int = 1, repeats: int = 20, warmup: int = 3) -> dict[str, Any]:
    """Size and cost of an encoder for one record of ``in_channels`` leads x ``input_len`` samples.

    A per-lead encoder (one input channel, as CLOCS CMSC runs it) embeds a multi-lead record as
    ``in_channels`` single-lead items, so its MACs and latency are those of the whole record
    (``input`` reads e.g. ``"12 x (1, 2500)"``); a multi-lead encoder takes the record as one item
    (``"1 x (12, 2500)"``).

    Args:
        config_or_module: an encoder, or a config dict for :func:`ssl_ecg.models.build_encoder`.
        in_channels: leads of one record.
        input_len: samples per lead.
        threads: ``torch.set_num_threads`` during the timing (restored after).
        repeats: timed forward passes; the latency is their median.
        warmup: untimed forward passes first.

    Returns:
        ``{"encoder", "input", "params", "trainable_params", "macs", "size_mb", "latency_ms"}``: parameter
        counts, multiply-accumulates per record (:func:`count_macs` x items), the float32 weights in MB
        (4 bytes x parameters / 10^6, BatchNorm buffers excluded), and the median CPU wall time of one
        record's forward pass (batch 1 record, eval mode, ``torch.inference_mode``) in milliseconds.

    Raises:
        ConfigError: a bad argument, or an encoder that takes neither 1 nor ``in_channels`` channels.
    """
    for name, value in (("in_channels", in_channels), ("input_len", input_len), ("threads", threads),
                        ("repeats", repeats)):
        _positive_int(name, value)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warmup: expected an integer >= 0, got {warmup!r}")
    if isinstance(config_or_module, nn.Module):
        module = config_or_module
    elif isinstance(config_or_module, dict):
        module = build_encoder(config_or_module)
    else:
        raise ConfigError(f"config_or_module: expected an nn.Module or an encoder config dict, got "
                          f"{type(config_or_module).__name__}")
    config = getattr(module, "config", {}) or {}
    takes = getattr(module, "in_channels", config.get("in_channels"))
    if takes == in_channels:
        items, channels = 1, in_channels
    elif takes == 1:
        items, channels = in_channels, 1
    else:
        raise ConfigError(f"encoder {config.get('name', type(module).__name__)}: takes {takes} channel(s); expected "
                          f"1 (per lead) or in_channels = {in_channels}")
    params = sum(p.numel() for p in module.parameters())
    macs = count_macs(module, channels, input_len) * items
    model = copy.deepcopy(module).eval()
    x = torch.randn(items, channels, input_len, generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return {"encoder": config.get("name", type(module).__name__), "input": f"{items} x ({channels}, {input_len})",
            "params": params, "trainable_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
            "macs": macs, "size_mb": 4 * params / 1e6, "latency_ms": 1e3 * statistics.median(times)}


def default_config(name: str, input_len: int, in_channels: int | None = None) -> dict[str, Any]:
    """Encoder ``name``'s default config, fitted to ``input_len`` samples (and ``in_channels``, if given).

    Encoders whose config fixes the input length (the CLOCS CNN's flatten size) get ``input_len``; the rest
    take any length and keep their defaults.
    """
    if name not in ENCODERS:
        raise ConfigError(f"encoder {name!r} is unknown; expected one of {sorted(ENCODERS)}")
    config = dict(ENCODERS[name]().config)
    if config.get("input_len") is not None:
        config["input_len"] = input_len
    if in_channels is not None:
        config["in_channels"] = in_channels
    return config


def summarize_registry(fs: float = 250, seconds: float = 10, leads: int = 12, threads: int = 1,
                       in_channels: int | None = None, repeats: int = 20):
    """:func:`encoder_summary` of every registered encoder at its default config, one row each.

    Args:
        fs: sampling rate in Hz.
        seconds: record length in seconds (``round(fs * seconds)`` samples per lead).
        leads: leads per record.
        threads: CPU threads for the latency.
        in_channels: channels every encoder is built with (1: per lead; ``leads``: whole records); None keeps
            each default (1 for every encoder registered so far).
        repeats: timed forward passes per encoder.

    Returns:
        A ``pandas.DataFrame`` with the columns of :func:`encoder_summary`, in registry order.

    Raises:
        ConfigError: fs or seconds not a finite number > 0, fewer than one sample, lead or thread, or more than
            :data:`MAX_INPUT_SAMPLES` samples per lead.
    """
    import pandas as pd

    for name, value in (("fs", fs), ("seconds", seconds)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{name}: expected a finite number > 0, got {value!r}")
    _positive_int("leads", leads)
    if in_channels is not None and in_channels not in (1, leads):
        raise ConfigError(f"in_channels: expected 1 (per lead) or leads = {leads}, got {in_channels!r}")
    input_len = round(fs * seconds) if math.isfinite(fs * seconds) else math.inf
    if input_len < 1:
        raise ConfigError(f"fs x seconds: {fs} Hz x {seconds} s is {fs * seconds:g} samples; expected at least 1")
    if input_len > MAX_INPUT_SAMPLES:
        raise ConfigError(f"fs x seconds: {fs:g} Hz x {seconds:g} s is {fs * seconds:.3g} samples per lead; expected "
                          f"at most {MAX_INPUT_SAMPLES:.0e} (check --fs and --seconds)")
    rows = [encoder_summary(default_config(name, input_len, in_channels), leads, input_len, threads=threads,
                            repeats=repeats) for name in ENCODERS]
    return pd.DataFrame(rows)
