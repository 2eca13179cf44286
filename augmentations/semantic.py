"""Beat-aware transforms of sCL-ST, reconstructed.

Le et al., "sCL-ST: Supervised Contrastive Learning with Semantic
Transformations for Multiple Lead ECG Arrhythmia Classification", IEEE JBHI
2023. The paper does not publish exact definitions; both transforms here are
**our reconstructions** from its description, specified in the project's
issue tracker.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from ecg_augmentations import Transform
from ecg_augmentations.base import as_range, randn, uniform
from torch import Tensor

from augmentations.peaks import check_signal, detect_r_peaks

__all__ = ["SplitJoin", "PeakNoiseSmoothing", "nearest_peak_distance"]


def _padded_peaks(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T) mask -> peak positions (B, K) padded with T, and counts (B,)."""
    b, t = mask.shape
    counts = mask.sum(-1)
    k = max(int(counts.max()), 1) if b else 1
    pos = torch.full((b, k), t, dtype=torch.long, device=mask.device)
    rows, cols = torch.nonzero(mask, as_tuple=True)
    rank = torch.cumsum(mask.long(), -1)[rows, cols] - 1
    pos[rows, rank] = cols
    return pos, counts


class _PeakTransform(Transform):
    """Shared parts of the peak-aware transforms: checks, detection and the skip counter."""

    def __init__(self, fs: float, p: float, lead: int | None, nan_policy: str):
        super().__init__(p)
        if not fs > 0:
            raise ValueError(f"fs: expected a positive sampling rate in Hz, got {fs}")
        self.fs = float(fs)
        self.lead = lead
        self.nan_policy = nan_policy
        self.n_seen = 0
        self.n_unchanged = 0

    @property
    def unchanged_rate(self) -> float:
        """Share of the samples handed to this transform that it returned unchanged (too few beats)."""
        return self.n_unchanged / self.n_seen if self.n_seen else 0.0

    def forward(self, x, generator=None):
        check_signal(x, self.fs, self.nan_policy)
        return super().forward(x, generator)

    def _peaks(self, x: Tensor) -> Tensor:
        return detect_r_peaks(x, self.fs, lead=self.lead, nan_policy=self.nan_policy)


class SplitJoin(_PeakTransform):
    """Split-Join: shuffle the complete beats of each sample (our reconstruction of sCL-ST's).

    Every lead is cut at the same points, the midpoints between consecutive R
    peaks, so each inner piece holds one complete beat. The leading and
    trailing partial pieces stay in place; the complete beats are joined back
    in a random order, with a linear cross-fade of ``crossfade_ms`` centred on
    each join. Length, dtype and device are kept.

    Each output beat keeps the half-RR before and after its R peak from the
    source beat, so the multiset of beat-cycle lengths (the pieces) is
    preserved exactly; an output RR interval is the after-half of one source
    beat plus the before-half of the next.

    Samples with fewer than 3 detected beats are returned unchanged;
    ``n_unchanged`` / ``unchanged_rate`` count them for logging.

    Args:
        fs: sampling rate in Hz (>= 50).
        crossfade_ms: cross-fade width at each join, in ms (0 for hard joins).
        p: probability of transforming each sample.
        lead: lead used for R-peak detection (``None``: all leads).
        nan_policy: ``"error"`` or ``"zero"``.
    """

    def __init__(self, fs: float, crossfade_ms: float = 10.0, p: float = 0.5, lead: int | None = None,
                 nan_policy: str = "error"):
        super().__init__(fs, p, lead, nan_policy)
        if crossfade_ms < 0:
            raise ValueError(f"crossfade_ms: expected >= 0, got {crossfade_ms}")
        self.crossfade_ms = float(crossfade_ms)

    def apply(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b, n_leads, t = x.shape
        peaks, counts = _padded_peaks(self._peaks(x))
        ok = counts >= 3
        self.n_seen += b
        self.n_unchanged += int((~ok).sum())
        n_piece = peaks.shape[1]  # pieces per sample = peaks per sample (padding: empty pieces at T)
        j = torch.arange(n_piece, device=x.device)
        valid = j[None, :] < counts[:, None]
        # Piece j starts at the midpoint before peak j (0 for the first piece).
        mids = (peaks[:, :-1] + peaks[:, 1:]) // 2
        starts = torch.cat([torch.zeros(b, 1, dtype=torch.long, device=x.device), mids], 1)
        starts = torch.where(valid, starts, torch.full_like(starts, t))
        ends = torch.cat([starts[:, 1:], torch.full((b, 1), t, dtype=torch.long, device=x.device)], 1)
        ends = torch.where(valid & (j[None, :] == counts[:, None] - 1), torch.full_like(ends, t), ends)
        lengths = ends - starts

        # Sort keys: first piece -1, complete beats random in [0, 1), last piece and padding after them.
        keys = uniform((0.0, 1.0), (b, n_piece), x.new_empty(0, dtype=torch.float32), generator).double()
        inner = valid & (j[None, :] > 0) & (j[None, :] < counts[:, None] - 1) & ok[:, None]
        keys = torch.where(inner, keys, (j[None, :] + 2.0).to(torch.float64).expand(b, -1))
        keys = torch.where(j[None, :] == 0, torch.full_like(keys, -1.0), keys)
        perm = keys.argsort(dim=1)
        src_start = starts.gather(1, perm)
        out_len = lengths.gather(1, perm)
        out_start = torch.cumsum(out_len, 1) - out_len

        pos = torch.arange(t, device=x.device).expand(b, t)
        piece = (torch.searchsorted(out_start.contiguous(), pos.contiguous(), right=True) - 1).clamp(0, n_piece - 1)
        offset = pos - out_start.gather(1, piece)
        src = src_start.gather(1, piece) + offset

        out = x.gather(2, src[:, None, :].expand(b, n_leads, t).clamp(0, t - 1))
        half = int(round(self.crossfade_ms * self.fs / 2000))
        if half > 0:
            out = self._crossfade(x, out, piece, offset, src, src_start, out_start, out_len, counts, half)
        return torch.where(ok[:, None, None], out, x)

    @staticmethod
    def _crossfade(x, out, piece, offset, src, src_start, out_start, out_len, counts, half):
        """Blend over +-half samples around each inner join; lengths and beat bodies are unchanged."""
        b, n_leads, t = x.shape
        n_piece = out_start.shape[1]
        own_len = out_len.gather(1, piece)
        near_start = (offset < half) & (piece >= 1)
        near_end = (own_len - offset <= half) & (piece + 1 <= counts[:, None] - 1)
        prev = (piece - 1).clamp(0, n_piece - 1)
        nxt = (piece + 1).clamp(0, n_piece - 1)
        # Near a piece's start the previous piece continues past its end; near its end the next
        # piece is read from before its start.
        other = torch.where(
            near_start,
            src_start.gather(1, prev) + out_len.gather(1, prev) + offset,
            src_start.gather(1, nxt) - (own_len - offset),
        )
        alpha = torch.where(near_start, (offset + half + 0.5) / (2 * half),
                            (offset - own_len + half + 0.5) / (2 * half)).clamp(0, 1)
        # Weight on the *earlier* piece's signal: near a start that is `other`, near an end it is `out`.
        blend = near_start | near_end
        other_sig = x.gather(2, other.clamp(0, t - 1)[:, None, :].expand(b, n_leads, t))
        a = alpha[:, None, :].to(x.dtype)
        early = torch.where(near_start[:, None, :], other_sig, out)
        late = torch.where(near_start[:, None, :], out, other_sig)
        mixed = (1 - a) * early + a * late
        return torch.where(blend[:, None, :], mixed, out)


def nearest_peak_distance(mask: Tensor) -> Tensor:
    """Distance in samples from every sample to the nearest peak of a (B, T) mask (inf without peaks)."""
    b, t = mask.shape
    idx = torch.arange(t, device=mask.device, dtype=torch.float32).expand(b, t)
    inf = torch.full_like(idx, float("inf"))
    last = torch.where(mask, idx, -inf).cummax(-1).values
    nxt = torch.where(mask, idx, inf).flip(-1).cummin(-1).values.flip(-1)
    return torch.minimum(idx - last, nxt - idx)


class PeakNoiseSmoothing(_PeakTransform):
    """Semantic weighted-peaks noise smoothing (our reconstruction of sCL-ST's).

    With R peaks r_k and ``sigma`` such that the protected window around each
    peak has a full width at half maximum of ``peak_width_ms``,

        w(t) = 1 - max_k exp(-(t - r_k)^2 / (2 sigma^2))
        y = x + w * (smooth(x) - x) + w * n

    where ``smooth`` is a centred moving average over ``smooth_ms`` and ``n`` is
    Gaussian noise whose power is the lead's signal power (variance) divided by
    10^(snr/10), with snr drawn uniformly in ``snr_db`` per sample. QRS
    complexes stay intact (w = 0 at each R peak) while the rest is smoothed and
    noised. A flat lead has zero power and passes unchanged; samples without a
    detected beat are returned unchanged and counted in ``n_unchanged``.

    Args:
        fs: sampling rate in Hz (>= 50).
        snr_db: SNR in dB, a value or a (low, high) range.
        peak_width_ms: FWHM of the protected window around each R peak, in ms.
        smooth_ms: moving-average width, in ms.
        p: probability of transforming each sample.
        lead: lead used for R-peak detection (``None``: all leads).
        nan_policy: ``"error"`` or ``"zero"``.
    """

    def __init__(self, fs: float, snr_db=(15.0, 30.0), peak_width_ms: float = 60.0, smooth_ms: float = 40.0,
                 p: float = 0.5, lead: int | None = None, nan_policy: str = "error"):
        super().__init__(fs, p, lead, nan_policy)
        if peak_width_ms <= 0 or smooth_ms <= 0:
            raise ValueError(f"peak_width_ms/smooth_ms: expected positive ms, got {peak_width_ms}/{smooth_ms}")
        self.snr_db = as_range(snr_db, "snr_db")
        self.peak_width_ms = float(peak_width_ms)
        self.smooth_ms = float(smooth_ms)

    @property
    def sigma_samples(self) -> float:
        return self.peak_width_ms * self.fs / 1000 / (2 * math.sqrt(2 * math.log(2)))

    def weights(self, peaks: Tensor) -> Tensor:
        """w(t) for a (B, T) peak mask; 1 everywhere for a sample without peaks."""
        d = nearest_peak_distance(peaks)
        return 1 - torch.exp(-(d * d) / (2 * self.sigma_samples**2))

    def apply(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b, n_leads, t = x.shape
        peaks = self._peaks(x)
        has = peaks.any(-1)
        self.n_seen += b
        self.n_unchanged += int((~has).sum())
        w = self.weights(peaks)[:, None, :].to(x.dtype)
        width = max(1, int(round(self.smooth_ms * self.fs / 1000)) | 1)
        smooth = F.avg_pool1d(F.pad(x.reshape(b * n_leads, 1, t), (width // 2, width // 2), mode="replicate"),
                              width, stride=1).reshape(b, n_leads, t)
        snr = uniform(self.snr_db, (b, 1, 1), x, generator)
        noise_std = x.std(-1, keepdim=True) * torch.pow(10.0, -snr / 20)
        noise = randn(x.shape, x, generator) * noise_std
        out = x + w * (smooth - x + noise)
        return torch.where(has[:, None, None], out, x)
