"""Batched R-peak detection in torch (CPU or GPU, whole batches at once)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from augmentations._checks import check_batch

__all__ = ["detect_r_peaks", "r_peak_positions", "peak_indices", "check_signal", "MIN_FS"]

MIN_FS = 50.0
_ENV_STRIDE = 4  # envelope medians every 4 grid points (1 s)
_FAR = 1 << 58  # position of padded candidates: beyond any window, safe in int64 arithmetic


def check_signal(x: Tensor, fs: float, nan_policy: str = "error", name: str = "x") -> Tensor:
    """Validate a (B, L, T) floating tensor and fs; apply the NaN policy.

    Args:
        nan_policy: ``"error"`` (raise on NaN) or ``"zero"`` (treat NaN samples as 0).
    """
    check_batch(x, name)
    if not fs >= MIN_FS:
        raise ValueError(f"fs: {fs} Hz is below the {MIN_FS:.0f} Hz these transforms need")
    if nan_policy not in ("error", "zero"):
        raise ValueError(f"nan_policy: expected 'error' or 'zero', got {nan_policy!r}")
    if not torch.isfinite(x.sum()):  # one pass; NaN (or inf) anywhere makes the sum non-finite
        nan = torch.isnan(x)
        if not nan.any():
            return x
        if nan_policy == "error":
            bad = torch.nonzero(nan.any(-1))[0].tolist()
            raise ValueError(f"{name}: NaN in sample {bad[0]}, lead {bad[1]}; pass nan_policy='zero' to zero them")
        x = torch.nan_to_num(x, nan=0.0)
    return x


def _fast_len(n: int) -> int:
    """The smallest 2-3-5-smooth integer >= n (fast FFT sizes)."""
    m = n
    while True:
        k = m
        for f in (2, 3, 5):
            while k % f == 0:
                k //= f
        if k == 1:
            return m
        m += 1


def _reflect_padded(x: Tensor, left: int, right: int) -> Tensor:
    """``F.pad(x, (left, right), mode="reflect")`` written into one buffer (about twice as fast on CPU)."""
    t = x.shape[-1]
    out = x.new_empty(*x.shape[:-1], left + t + right)
    out[..., left:left + t] = x
    out[..., :left] = x[..., 1:left + 1].flip(-1)
    out[..., left + t:] = x[..., t - 1 - right:t - 1].flip(-1)
    return out


def _bandpass(x: Tensor, fs: float, low: float, high: float) -> Tensor:
    """Zero-phase FFT band-pass with raised-cosine edges, after reflect padding against wrap-around."""
    t = x.shape[-1]
    pad = min(t - 1, int(fs / 2))
    right = min(t - 1, _fast_len(t + 2 * pad) - t - pad)  # a 2-3-5-smooth FFT length is faster
    xp = _reflect_padded(x, pad, right)
    n = xp.shape[-1]
    spec = torch.fft.rfft(xp, dim=-1)  # the gain is 0 at DC, so no mean removal is needed
    f = torch.fft.rfftfreq(n, d=1.0 / fs, device=x.device)
    edge = 0.5 * low  # transition width of each edge, in Hz
    rise = torch.clamp((f - (low - edge)) / (2 * edge), 0, 1)
    fall = torch.clamp(((high + edge) - f) / (2 * edge), 0, 1)
    gain = (0.5 - 0.5 * torch.cos(math.pi * rise)) * (0.5 - 0.5 * torch.cos(math.pi * fall))
    return torch.fft.irfft(spec.mul_(gain), n=n, dim=-1)[..., pad:pad + t]


def _moving_average(x: Tensor, width: int) -> Tensor:
    """Centred moving average over the last axis, from cumulative sums (O(T) for any width).

    Windows are truncated at the edges and averaged over the samples they hold.
    Long signals accumulate in float64 so the differences of large running sums
    stay exact enough; short ones (<= 100k samples) in float32.
    """
    c, signal = _sum_buffer(x, width)
    signal.copy_(x)
    return _window_means(c.cumsum_(-1), width, x.shape[-1]).to(x.dtype)


def _squared_derivative_average(y: Tensor, width: int) -> Tensor:
    """``_moving_average`` of the squared central derivative of y (0 at both ends), without padded copies."""
    c, signal = _sum_buffer(y, width)
    if y.shape[-1] > 2:
        d = y[..., 2:] - y[..., :-2]
        if c.dtype == y.dtype:
            torch.mul(d, d, out=signal[..., 1:-1])
        else:
            signal[..., 1:-1] = d * d
    return _window_means(c.cumsum_(-1), width, y.shape[-1]).to(y.dtype)


def _sum_buffer(x: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """A zeroed buffer for ``_window_means``'s running sums of x, and its view where the signal goes."""
    t = x.shape[-1]
    half = (max(1, width | 1)) // 2
    c = x.new_zeros(*x.shape[:-1], t + 2 * half + 1, dtype=torch.float64 if t > 100_000 else x.dtype)
    return c, c[..., half + 1:half + 1 + t]


def _window_means(c: Tensor, width: int, t: int) -> Tensor:
    """Means over truncated centred windows from running sums ``c`` of a signal padded with half+1, half zeros."""
    width = max(1, width | 1)
    half = width // 2
    sums = c[..., width:] - c[..., :-width]  # window [i - half, i + half] for i in 0..t-1
    if 2 * half >= t:
        edges = torch.arange(t, device=c.device)
    else:  # only windows truncated by an end hold fewer than ``width`` samples
        sums[..., half:t - half] /= width
        edges = torch.cat([torch.arange(half, device=c.device), torch.arange(t - half, t, device=c.device)])
    count = (edges + half + 1).clamp(max=t) - (edges - half).clamp(min=0)
    sums[..., edges] = sums[..., edges] / count.to(c.dtype)
    return sums


def _rolling_max(x: Tensor, width: int) -> Tensor:
    """Centred rolling maximum over the last axis in O(T) (van Herk / Gil-Werman blocks)."""
    width = max(1, width | 1)
    half = width // 2
    t = x.shape[-1]
    if width == 1:
        return x
    n_blocks = -(-(t + 2 * half) // width)
    total = n_blocks * width
    xp = F.pad(x, (half, total - t - half), value=float("-inf"))
    blocks = xp.reshape(*x.shape[:-1], n_blocks, width)
    prefix = blocks.cummax(-1).values.reshape(*x.shape[:-1], total)
    suffix = blocks.flip(-1).cummax(-1).values.flip(-1).reshape(*x.shape[:-1], total)
    # Window [i, i + width) of the padded signal: suffix max of i's block, prefix max up to i + width - 1.
    return torch.maximum(suffix[..., :t], prefix[..., width - 1:width - 1 + t])


def _block_max(x: Tensor, step: int) -> Tensor:
    """Maximum over consecutive blocks of ``step`` samples (the last block may be partial)."""
    t = x.shape[-1]
    full = t // step
    out = x[..., :full * step].reshape(*x.shape[:-1], full, step).amax(-1)  # a view: no padded copy
    return torch.cat([out, x[..., full * step:].amax(-1, keepdim=True)], -1) if full * step < t else out


def detect_r_peaks(x: Tensor, fs: float, *args, **options) -> Tensor:
    """The R peaks of :func:`r_peak_positions` (same arguments) as a boolean mask of shape (B, T)."""
    pos, _ = r_peak_positions(x, fs, *args, **options)
    mask = torch.zeros(pos.shape[0], x.shape[-1] + 1, dtype=torch.bool, device=x.device)
    return mask.scatter_(1, pos, True)[:, :-1]


def r_peak_positions(
    x: Tensor,
    fs: float,
    lead: int | None = None,
    band: tuple[float, float] = (5.0, 20.0),
    integration_ms: float = 150.0,
    refractory_ms: float = 200.0,
    threshold: float = 0.18,
    envelope_s: float = 4.0,
    search_ms: float = 0.0,
    lead_weight_power: float = 2.0,
    nan_policy: str = "error",
) -> tuple[Tensor, Tensor]:
    """Detect R peaks in a whole batch at once, as sorted sample indices.

    A vectorised Pan-Tompkins-style detector (Pan & Tompkins, IEEE TBME 1985):

    1. zero-phase FFT band-pass ``band`` Hz (default 5-20 Hz);
    2. central derivative and squaring;
    3. centred moving-window integration over ``integration_ms`` per lead;
    4. a weighted sum over the leads (or one chosen ``lead``): each lead is
       scaled to its QRS level and weighted by its peak-to-background ratio to
       the power ``lead_weight_power``, so noisy leads count less and flat leads
       not at all;
    5. local maxima by max-pooling over +-``refractory_ms`` (the refractory period);
    6. an adaptive threshold: ``threshold`` times a robust envelope, the median
       over +-``envelope_s`` of the rolling maximum over +-1 s of the integrated
       energy (so a few large ectopic beats do not hide their neighbours), with
       a search-back at half that threshold inside RR gaps longer than 1.5 times
       the local median RR;
    7. optionally (``search_ms > 0``), each accepted peak is moved to the largest
       absolute band-passed amplitude within +-``search_ms``. Off by default: on
       MIT-BIH the zero-phase energy peak is closer to the annotated R than the
       largest deflection, which is often the S wave.

    Args:
        x: (B, L, T) signal (any units; each lead is normalised).
        fs: sampling rate in Hz (>= 50).
        lead: detect on this lead only; ``None`` combines all leads.
        nan_policy: ``"error"`` or ``"zero"``.

    Returns:
        Peak positions, a (B, K) tensor sorted per row and padded with T, and the
        number of peaks per row (B,). :func:`detect_r_peaks` gives the same peaks
        as a mask.
    """
    check_batch(x)
    if lead is not None:
        if not -x.shape[1] <= lead < x.shape[1]:
            raise ValueError(f"lead: {lead} is out of range for {x.shape[1]} leads")
        x = x[:, lead:lead + 1]
    x = check_signal(x, fs, nan_policy)
    b, n_leads, t = x.shape
    if b == 0 or t == 0:
        empty = torch.zeros(b, dtype=torch.long, device=x.device)
        return torch.full((b, 1), t, dtype=torch.long, device=x.device), empty
    xf = x.float()
    y = _bandpass(xf, fs, band[0], min(band[1], 0.45 * fs))
    top, bottom = xf.amax(-1), xf.amin(-1)
    alive = (top - bottom) > 1e-6 * torch.maximum(top.abs(), bottom.abs()).clamp_min(1e-12)
    width = int(round(integration_ms * fs / 1000))
    if n_leads == 1:
        mwi = _squared_derivative_average(y[:, 0], width)
        if not alive.all():
            mwi = torch.where(alive, mwi, torch.zeros(1, device=x.device))
        weights = alive.float()
    else:
        d = y[..., 2:] - y[..., :-2]
        energy = F.pad(d * d, (1, 1))
        # The moving average is linear: weight the lead energies first, integrate once.
        weights, scale = _lead_weights(_moving_average(energy.reshape(b * n_leads, t), width).reshape(b, n_leads, t),
                                       alive, lead_weight_power, width // 2)
        mwi = _moving_average(torch.einsum("blt,bl->bt", energy, weights / scale), width)

    refr = int(round(refractory_ms * fs / 1000))
    step = max(1, int(fs / 4))
    env = _robust_envelope(mwi, fs, envelope_s, step)
    # A local maximum at or below every weak threshold of its row can neither be accepted nor beat an
    # accepted peak, so dropping it up front changes nothing and leaves ~10x fewer candidates.
    pos, h, valid = _candidates(mwi, (0.5 * threshold * env).amin(1).clamp_min(0))
    keep = valid & _is_window_max(mwi, pos, h, valid, refr)
    env = env.gather(1, ((pos // step + _ENV_STRIDE // 2) // _ENV_STRIDE).clamp(max=env.shape[1] - 1))
    strong = keep & (h > threshold * env)
    weak = keep & ~strong & (h > 0.5 * threshold * env)
    accepted = strong | _searchback(pos, strong, weak, fs, refr)

    w = int(round(search_ms * fs / 1000))
    if w > 0:
        amp = (y.abs() / y.abs().amax(-1, keepdim=True).clamp_min(1e-30) * weights[..., None]).sum(1)
        _, where = F.max_pool1d(amp[:, None], 2 * w + 1, stride=1, padding=w, return_indices=True)
        pos = where[:, 0].gather(1, pos.clamp(max=t - 1))
    pos = torch.where(accepted, pos, torch.full_like(pos, t))
    if w > 0:  # moved peaks may coincide: merge them through a mask
        mask = torch.zeros(b, t + 1, dtype=torch.bool, device=x.device)
        return padded_positions(mask.scatter_(1, pos, True)[:, :t], t)
    counts = accepted.sum(-1)
    return pos.sort(-1).values[:, :max(int(counts.max()) if b else 0, 1)], counts


def padded_positions(mask: Tensor, fill: int) -> tuple[Tensor, Tensor]:
    """A (B, T) mask's True positions as a (B, K) array padded with ``fill``, and the counts (B,)."""
    b = mask.shape[0]
    rows, cols = torch.nonzero(mask, as_tuple=True)  # row-major, so ranks are offsets within each row
    counts = torch.bincount(rows, minlength=b)  # cheaper than mask.sum, which widens the whole mask to int64
    k = max(int(counts.max()) if b else 0, 1)
    rank = torch.arange(rows.numel(), device=mask.device) - (torch.cumsum(counts, 0) - counts)[rows]
    pos = torch.full((b, k), fill, dtype=torch.long, device=mask.device)
    pos[rows, rank] = cols
    return pos, counts


def _candidates(mwi: Tensor, floor: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Local maxima (first sample of a plateau) above each row's ``floor`` (B,), as padded (B, K) positions,
    heights and a validity mask."""
    t = mwi.shape[1]
    is_max = mwi > floor[:, None]
    if t > 1:  # compare neighbours on shifted views; no padded copies of the signal
        is_max[:, 1:] &= mwi[:, 1:] > mwi[:, :-1]
        is_max[:, :-1] &= mwi[:, :-1] >= mwi[:, 1:]
    pos, counts = padded_positions(is_max, _FAR)  # padding beyond every window
    valid = torch.arange(pos.shape[1], device=mwi.device)[None, :] < counts[:, None]
    h = torch.where(valid, mwi.gather(1, pos.clamp(max=t - 1)), torch.zeros((), dtype=mwi.dtype, device=mwi.device))
    return pos, h, valid


def _is_window_max(mwi: Tensor, pos: Tensor, h: Tensor, valid: Tensor, refr: int) -> Tensor:
    """Whether each candidate is the maximum of mwi over [pos - refr, pos + refr].

    The maximum of a sequence over an interval is at a local maximum inside it or
    at an end, so it suffices to compare with the two ends and with the other
    candidates within ``refr``.
    """
    b, t = mwi.shape
    ends_ok = (h >= mwi.gather(1, (pos - refr).clamp(0, t - 1))) & (h >= mwi.gather(1, (pos + refr).clamp(0, t - 1)))
    k = pos.shape[1]
    beaten = torch.zeros_like(ends_ok)
    # Shift s compares candidate j with j + s (and so j + s with j); positions are sorted per row,
    # so once no pair s apart lies within refr, no pair further apart does either.
    for s in range(1, k):
        near = ((pos[:, s:] - pos[:, :-s]) <= refr) & valid[:, s:]  # valid is a prefix: both ends real
        if not near.any():
            break
        beaten[:, :-s] |= near & (h[:, s:] > h[:, :-s])
        beaten[:, s:] |= near & (h[:, :-s] > h[:, s:])
    return ends_ok & ~beaten


def _lead_weights(lead_mwi: Tensor, alive: Tensor, power: float, stride: int) -> tuple[Tensor, Tensor]:
    """Per-lead weights and QRS scales from the leads' integrated energies (B, L, T).

    On samples ``stride`` apart (half the integration window, so no QRS is
    skipped), a lead's QRS level is its 98th percentile and its background the
    median; the weight is (QRS level / background) ** ``power``, normalised over
    the leads, so clean leads dominate noisy ones. Flat leads get 0.
    """
    sub = lead_mwi[..., ::max(1, stride)].sort(-1).values
    n = sub.shape[-1]
    hi = sub[..., int(0.98 * (n - 1))]
    lo = sub[..., (n - 1) // 2]
    ratio = hi / lo.clamp_min(1e-12 * hi.clamp_min(1e-30))
    weights = torch.where(alive & (hi > 0), ratio.clamp_min(1.0) ** power, torch.zeros_like(ratio))
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-30)
    return weights, hi.clamp_min(1e-30)


def _robust_envelope(mwi: Tensor, fs: float, envelope_s: float, step: int) -> Tensor:
    """The median over +-envelope_s of the rolling max over +-1 s of ``mwi``.

    The rolling max is taken on a grid of ``step`` samples (0.25 s) and the
    median every ``_ENV_STRIDE`` grid points (1 s): the envelope only scales a
    threshold and varies over seconds, and the median is the costliest step.
    Entry j covers grid point ``j * _ENV_STRIDE``.
    """
    per_second = fs / step
    coarse = _rolling_max(_block_max(mwi, step), 2 * int(round(per_second)) + 1)
    half = max(1, int(round(envelope_s * per_second)))
    padded = F.pad(coarse[:, None], (half, half), mode="replicate")[:, 0]
    return padded.unfold(-1, 2 * half + 1, _ENV_STRIDE).median(-1).values


def _searchback(pos: Tensor, strong: Tensor, weak: Tensor, fs: float, refr: int) -> Tensor:
    """Weak candidates inside an RR gap > 1.5x the median RR, at least 1.5 refractory periods from both neighbours."""
    big = 4 * _FAR
    prev = torch.where(strong, pos, torch.full_like(pos, -big)).cummax(-1).values
    nxt = torch.where(strong, pos, torch.full_like(pos, 2 * big)).flip(-1).cummin(-1).values.flip(-1)
    prev = F.pad(prev[:, :-1], (1, 0), value=-big)  # strictly before
    nxt = F.pad(nxt[:, 1:], (0, 1), value=2 * big)  # strictly after
    far = ((pos - prev) > 1.5 * refr) & ((nxt - pos) > 1.5 * refr)
    return weak & ((nxt - prev).float() > 1.5 * _median_rr(pos, strong, fs)[:, None]) & far


def _median_rr(pos: Tensor, strong: Tensor, fs: float) -> Tensor:
    """Median RR (samples) of each row's strong peaks; 1 s where there are fewer than 3."""
    ordered = torch.where(strong, pos.double(), torch.full(pos.shape, float("inf"), dtype=torch.float64,
                                                             device=pos.device))
    ordered = ordered.sort(-1).values
    rr = torch.diff(ordered, dim=-1)
    rr = torch.where(torch.isfinite(rr), rr, torch.full_like(rr, float("nan")))
    med = torch.nanmedian(rr, dim=-1).values if rr.shape[-1] else torch.full(pos.shape[:1], float("nan"))
    return torch.where(torch.isnan(med) | (strong.sum(-1) < 3), torch.full_like(med, float(fs)), med).float()


def peak_indices(mask: Tensor) -> list[Tensor]:
    """Turn a (B, T) peak mask into a list of B index tensors."""
    if mask.dim() != 2:
        raise ValueError(f"mask: expected (B, T), got {tuple(mask.shape)}")
    rows, cols = torch.nonzero(mask, as_tuple=True)
    counts = torch.bincount(rows, minlength=mask.shape[0]).tolist()
    return list(torch.split(cols, counts))


# Beat annotation symbols (PhysioNet / ANSI-AAMI EC57); rhythm and other annotations are not beats.
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")


def match_peaks(detected, reference, tolerance: int) -> tuple[int, int, int]:
    """One-to-one matching of detected and reference peak indices within ``tolerance`` samples.

    Each reference beat is matched to the nearest unused detection within the
    tolerance (greedy in order of distance; see
    :func:`augmentations.peaks_scoring.matched_peak_pairs`). Returns ``(tp, fp, fn)``.
    """
    import numpy as np

    from augmentations.peaks_scoring import matched_peak_pairs

    n_det, n_ref = np.asarray(detected).size, np.asarray(reference).size
    tp = len(matched_peak_pairs(detected, reference, tolerance)[0])
    return tp, n_det - tp, n_ref - tp
