"""Frozen-encoder embeddings per record, with a proof that the encoder did not change."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from ssl_ecg.errors import ConfigError, EncoderChangedError

__all__ = ["tile_windows", "embed_records", "frozen_state", "assert_unchanged", "EncoderChangedError",
           "state_dict_hash", "LEAD_FEATURES"]

LEAD_FEATURES = ("concat", "mean")
"""How a per-lead encoder's lead embeddings become one record feature: concatenated in lead order (L*E, the
default: it keeps which lead is which, which the electrical axis needs) or mean-pooled over leads (E, the
dimension a multi-lead encoder of the same width gives: the matched-dimension comparison)."""


def tile_windows(x: Tensor, window: int) -> Tensor:
    """Cut (R, L, T) into non-overlapping windows from the start: (R, W, L, window)."""
    if x.shape[-1] < window:
        raise ValueError(f"x: records have {x.shape[-1]} samples, shorter than the {window}-sample window")
    n = x.shape[-1] // window
    return rearrange(x[..., : n * window], "r l (w s) -> r w l s", w=n)


def window_embeddings(encoder: nn.Module, windows: Tensor, per_lead: bool, lead_features: str = "concat") -> Tensor:
    """(R, W, L, S) windows -> (R, W, L*E) with per-lead instances (``lead_features="mean"``: (R, W, E), the
    mean over the L lead embeddings), or (R, W, E) multi-lead."""
    r, w, n_leads, s = windows.shape
    if per_lead:
        z = encoder(windows.reshape(r * w * n_leads, 1, s))
        if lead_features == "mean":
            return z.reshape(r, w, n_leads, z.shape[-1]).mean(2)
        return z.reshape(r, w, n_leads * z.shape[-1])
    return encoder(windows.reshape(r * w, n_leads, s)).reshape(r, w, -1)


def frozen_state(encoder: nn.Module) -> dict[str, Tensor]:
    """A copy of the full state dict, BatchNorm buffers included."""
    return {k: v.detach().clone() for k, v in encoder.state_dict().items()}


def state_dict_hash(encoder: nn.Module) -> str:
    """SHA-256 of an encoder's full state dict (BatchNorm buffers included), independent of device.

    Tensors are taken in sorted key order; each contributes its key, dtype,
    shape and raw bytes (on the CPU, contiguous), so two modules hash equal
    exactly when their state dicts are bit-identical.
    """
    h = hashlib.sha256()
    state = encoder.state_dict()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def assert_unchanged(encoder: nn.Module, before: dict[str, Tensor]) -> None:
    """Raise :class:`EncoderChangedError` unless the state dict is bit-identical to ``before``."""
    after = encoder.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k].detach())]
    if changed or set(after) != set(before):
        raise EncoderChangedError(f"encoder changed during frozen evaluation: {changed[:5]}")


@torch.no_grad()
def embed_records(
    encoder: nn.Module,
    signals: np.ndarray | Tensor,
    window: int,
    per_lead: bool = True,
    aggregate: str = "mean",
    batch_records: int = 64,
    device: str | torch.device = "cpu",
    lead_features: str = "concat",
) -> np.ndarray:
    """Record embeddings from a frozen encoder.

    Each record is cut into non-overlapping windows of ``window`` samples; the
    encoder embeds each window (each lead alone for per-lead encoders, the
    lead embeddings then concatenated in lead order so lead identity survives,
    or mean-pooled over leads with ``lead_features="mean"``), and windows are
    aggregated per record by mean (default) or max.

    The encoder runs in eval mode under ``no_grad``; its state dict is checked
    bit-for-bit afterwards and its training flag restored.

    Args:
        lead_features: per-lead encoders only (see :data:`LEAD_FEATURES`):
            ``"concat"`` (default) or ``"mean"``; ignored for multi-lead encoders.

    Returns:
        float32 array (R, L*E) for per-lead encoders with ``"concat"``, (R, E) with
        ``"mean"`` or for multi-lead encoders.

    Raises:
        ValueError: ``aggregate`` is not mean/max.
        ConfigError: ``lead_features`` is not one of :data:`LEAD_FEATURES`.
    """
    if aggregate not in ("mean", "max"):
        raise ValueError(f"aggregate: expected 'mean' or 'max', got {aggregate!r}")
    if lead_features not in LEAD_FEATURES:
        raise ConfigError(f"lead_features: expected one of {list(LEAD_FEATURES)}, got {lead_features!r}")
    x = torch.as_tensor(signals, dtype=torch.float32)
    was_training = encoder.training
    before = frozen_state(encoder)
    encoder.eval()
    out = []
    try:
        for r0 in range(0, len(x), batch_records):
            z = window_embeddings(encoder, tile_windows(x[r0:r0 + batch_records].to(device), window), per_lead,
                                  lead_features)
            out.append((z.mean(1) if aggregate == "mean" else z.amax(1)).cpu())
    finally:
        encoder.train(was_training)
    assert_unchanged(encoder, before)
    return torch.cat(out).numpy()
