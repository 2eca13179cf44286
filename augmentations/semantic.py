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
from ecg_augmentations.base import as_range, uniform
from torch import Tensor

from augmentations._random import randn_streams
from augmentations.peaks import check_signal, padded_positions, r_peak_positions

__all__ = ["SplitJoin", "PeakNoiseSmoothing", "nearest_peak_distance"]

_BLOCK = 1 << 19  # elements per block of PeakNoiseSmoothing's blend


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

    def _peaks(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Sorted R-peak positions (B, K) padded with T, and their counts (B,)."""
        return r_peak_positions(x, self.fs, lead=self.lead, nan_policy=self.nan_policy)


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
        lead: lead used for R-peak detection (default 0, as in ecg-augmentations' BeatMask;
            ``None`` combines all leads: more robust, about L times slower).
        nan_policy: ``"error"`` or ``"zero"``.
    """

    def __init__(self, fs: float, crossfade_ms: float = 10.0, p: float = 0.5, lead: int | None = 0,
                 nan_policy: str = "error"):
        super().__init__(fs, p, lead, nan_policy)
        if crossfade_ms < 0:
            raise ValueError(f"crossfade_ms: expected >= 0, got {crossfade_ms}")
        self.crossfade_ms = float(crossfade_ms)

    def apply(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b, n_leads, t = x.shape
        peaks, counts = self._peaks(x)  # padding: empty pieces at T
        ok = counts >= 3
        self.n_seen += b
        self.n_unchanged += int((~ok).sum())
        n_piece = peaks.shape[1]  # pieces per sample = peaks per sample (padding: empty pieces at T)
        j = torch.arange(n_piece, device=x.device)
        valid = j[None, :] < counts[:, None]
        # Piece j starts at the midpoint before peak j; the first piece at 0, the last one ends at T.
        mids = (peaks[:, :-1] + peaks[:, 1:]) // 2
        starts = torch.cat([torch.zeros(b, 1, dtype=torch.long, device=x.device), mids], 1)
        starts = torch.where(valid | (j[None, :] == 0), starts, torch.full_like(starts, t))
        ends = torch.cat([starts[:, 1:], torch.full((b, 1), t, dtype=torch.long, device=x.device)], 1)
        last = j[None, :] == (counts[:, None] - 1).clamp_min(0)
        ends = torch.where(last, torch.full_like(ends, t), ends)
        lengths = ends - starts  # a partition of [0, T) per sample; empty padding pieces

        # Sort keys: first piece -1, complete beats random in [0, 1), last piece and padding after them.
        keys = uniform((0.0, 1.0), (b, n_piece), x.new_empty(0, dtype=torch.float32), generator).double()
        inner = valid & (j[None, :] > 0) & (j[None, :] < counts[:, None] - 1) & ok[:, None]
        keys = torch.where(inner, keys, (j[None, :] + 2.0).to(torch.float64).expand(b, -1))
        keys = torch.where(j[None, :] == 0, torch.full_like(keys, -1.0), keys)
        perm = keys.argsort(dim=1)
        src_start = starts.gather(1, perm)
        out_len = lengths.gather(1, perm)
        out_start = torch.cumsum(out_len, 1) - out_len

        # Source position of every output sample: its piece's shift, repeated over the piece.
        shift = torch.repeat_interleave((src_start - out_start).flatten(), out_len.flatten(), output_size=b * t)
        src = shift.view(b, t).add_(torch.arange(t, device=x.device))
        out = x.gather(2, src[:, None, :].expand(b, n_leads, t))
        half = int(round(self.crossfade_ms * self.fs / 2000))
        if half > 0:
            self._crossfade(x, out, src_start, out_start, out_len, counts, ok, half)
        return out

    @staticmethod
    def _crossfade(x, out, src_start, out_start, out_len, counts, ok, half):
        """Blend, in place, the ``half`` samples on each side of every inner join; beat bodies are untouched.

        At a join at output position J, from piece A to piece B: the last samples
        of A (J - e, e = 1..half) fade towards the samples that precede B in the
        source, and the first samples of B (J + o, o = 0..half-1) fade in from
        the samples that follow A in the source, with weight (half - e + 0.5) /
        (2 half) and (o + half + 0.5) / (2 half) on the incoming signal's side.
        Only these few samples are computed; where a piece is shorter than
        ``half``, the start side of a join wins.
        """
        t = x.shape[-1]
        n_piece = out_len.shape[1]
        k = torch.arange(1, n_piece, device=x.device)
        rows, kk = torch.nonzero(ok[:, None] & (k[None, :] < counts[:, None]), as_tuple=True)
        if rows.numel() == 0:
            return
        kk = kk + 1  # the join before piece kk, between pieces kk - 1 and kk
        join, len_a, len_b = out_start[rows, kk], out_len[rows, kk - 1], out_len[rows, kk]
        after_a = src_start[rows, kk - 1] + len_a  # source sample just after piece A
        before_b = src_start[rows, kk]  # source start of piece B
        steps = torch.arange(half, device=x.device)[None, :]
        sides = []
        for at, inside, other, alpha in (
            (join[:, None] - (steps + 1), steps + 1 <= len_a[:, None], before_b[:, None] - (steps + 1),
             (half - steps - 0.5) / (2 * half)),  # end of A: out = (1 - a) * A + a * source before B
            (join[:, None] + steps, steps < len_b[:, None], after_a[:, None] + steps,
             (half - steps - 0.5) / (2 * half)),  # start of B: out = a * source after A + (1 - a) * B
        ):
            r = rows[:, None].expand_as(at)[inside]
            sides.append((r, at[inside], x[r, :, other[inside].clamp(0, t - 1)],
                          alpha.expand_as(at)[inside].to(x.dtype)[:, None]))
        mine = [out[r, :, c] for r, c, _, _ in sides]  # read both sides before writing either
        for (r, c, theirs, a), own in zip(sides, mine):
            out[r, :, c] = (1 - a) * own + a * theirs


def _window_sums(x: Tensor, width: int) -> Tensor:
    """Sums of x over a centred window of odd ``width`` along the last axis, edges replicated.

    Interior samples come from one running sum of x (no padded copy of the batch);
    the ``width // 2`` samples at each end are computed from a small padded slice.
    """
    half = width // 2
    t = x.shape[-1]
    if half == 0:
        return x.clone()
    if t <= 4 * half + 1:
        xp = torch.cat([x[..., :1].expand(*x.shape[:-1], half), x, x[..., -1:].expand(*x.shape[:-1], half)], -1)
        c = F.pad(torch.cumsum(xp, -1), (1, 0))
        return c[..., width:] - c[..., :-width]
    c = x.new_empty(*x.shape[:-1], t + 1)  # running sums with a leading 0, written in place (no padded copy)
    c[..., 0] = 0
    torch.cumsum(x, -1, out=c[..., 1:])
    out = torch.empty_like(x)
    torch.sub(c[..., width:], c[..., :t + 1 - width], out=out[..., half:t - half])
    for sl, src in ((slice(0, half), x[..., :2 * half]), (slice(t - half, t), x[..., t - 2 * half:])):
        out[..., sl] = _window_sums(src, width)[..., :half] if sl.start == 0 else _window_sums(src, width)[..., half:]
    return out


def _noise_and_blend(x: Tensor, noise: Tensor, gain: Tensor, w: Tensor, width: int) -> Tensor:
    """noise <- x + w * (smooth(x) + gain * std(x) * noise - x) in place; returns which leads are flat (B, L).

    ``smooth`` is the centred moving average of ``width`` samples with replicated
    edges and ``std`` each lead's standard deviation. Each lead's mean is removed
    before its running sums and its variance, so a large offset (raw ADC units)
    costs no precision. The work runs in blocks of samples, so the temporaries
    stay small and in cache.
    """
    b, n_leads, t = x.shape
    half = width // 2
    mean = (x.sum(-1, keepdim=True).double() / t).to(x.dtype)
    interior = half > 0 and t > 4 * half + 1
    if interior:  # the truncated windows at both ends, for the whole batch
        left = _window_sums(x[..., :2 * half] - mean, width)[..., :half]
        right = _window_sums(x[..., t - 2 * half:] - mean, width)[..., half:]
    flat = torch.zeros(b, n_leads, dtype=torch.bool, device=x.device)
    step = max(1, _BLOCK // (n_leads * t))
    work = x.new_empty(3, min(step, b), n_leads, t)  # reused by every block: no allocation per block
    for i in range(0, b, step):
        rows = slice(i, i + step)
        k = min(step, b - i)
        centred = torch.sub(x[rows], mean[rows], out=work[0, :k])
        c = torch.cumsum(centred, -1, out=work[1, :k])
        residual = c[..., -1:].double() / t  # what the float32 mean left over
        var = (torch.linalg.vector_norm(centred, dim=-1, keepdim=True).double() ** 2 / t - residual**2).clamp_min(0)
        flat[rows] = (var <= 1e-12 * mean[rows].double() ** 2)[..., 0]  # candidates, checked exactly below
        block = noise[rows].mul_((var.sqrt() * gain[rows]).to(x.dtype)).add_(mean[rows])
        if interior:
            diff = torch.sub(c[..., width:], c[..., :t - width], out=work[2, :k, :, :t - width])
            block[..., half + 1:t - half].add_(diff, alpha=1.0 / width)
            block[..., half].add_(c[..., 2 * half], alpha=1.0 / width)
            block[..., :half].add_(left[rows], alpha=1.0 / width)
            block[..., t - half:].add_(right[rows], alpha=1.0 / width)
        else:
            block.add_(_window_sums(centred, width), alpha=1.0 / width)
        torch.lerp(x[rows], block, w[rows], out=block)
    if flat.any():
        where = flat.nonzero(as_tuple=True)
        suspects = x[where]
        flat[where] = (suspects == suspects[..., :1]).all(-1)
    return flat


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

    On CPU the noise is drawn in parallel streams seeded from ``generator``
    (see ``augmentations._random.randn_streams``): the numbers depend on the
    seed and the batch shape, not on the number of threads.

    Args:
        fs: sampling rate in Hz (>= 50).
        snr_db: SNR in dB, a value or a (low, high) range.
        peak_width_ms: FWHM of the protected window around each R peak, in ms.
        smooth_ms: moving-average width, in ms.
        p: probability of transforming each sample.
        lead: lead used for R-peak detection (default 0, as in ecg-augmentations' BeatMask;
            ``None`` combines all leads: more robust, about L times slower).
        nan_policy: ``"error"`` or ``"zero"``.
    """

    def __init__(self, fs: float, snr_db=(15.0, 30.0), peak_width_ms: float = 60.0, smooth_ms: float = 40.0,
                 p: float = 0.5, lead: int | None = 0, nan_policy: str = "error"):
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
        return self._weights(*padded_positions(peaks, peaks.shape[-1]), peaks.shape[-1])

    def _weights(self, pos: Tensor, counts: Tensor, t: int) -> Tensor:
        """w(t) (B, T) from sorted peak positions (B, K) and counts (B,).

        1 - w is written only within ``reach`` samples of each peak, where it
        exceeds float32 rounding of 1 (6 sigma: exp(-18) < 2^-25); the minimum
        over overlapping peaks is the maximum over k in the definition.
        """
        reach = int(math.ceil(6 * self.sigma_samples))
        offsets = torch.arange(-reach, reach + 1, device=pos.device)
        dip = offsets.float().square_().mul_(-0.5 / self.sigma_samples**2).exp_().neg_().add_(1)
        b, k = pos.shape
        # Columns [reach, reach + T) are the signal; padding peaks write beyond them, into columns cut off.
        index = torch.where(torch.arange(k, device=pos.device) < counts[:, None], pos + reach,
                            torch.full_like(pos, t + 3 * reach + 1))[:, :, None] + offsets
        w = torch.ones(b, t + 4 * reach + 2, device=pos.device)
        n = k * offsets.numel()  # explicit, so an empty batch reshapes too
        w.scatter_reduce_(1, index.view(b, n), dip.expand(b, k, -1).reshape(b, n), "amin")
        return w[:, reach:reach + t]

    def apply(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b, n_leads, t = x.shape
        pos, counts = self._peaks(x)
        has = counts > 0
        w = torch.where(has[:, None], self._weights(pos, counts, t), torch.zeros(1, device=x.device))[:, None, :]
        width = max(1, int(round(self.smooth_ms * self.fs / 1000)) | 1)
        snr = uniform(self.snr_db, (b, 1, 1), x, generator)
        self.n_seen += b
        self.n_unchanged += int((~has).sum())
        out = randn_streams(x.shape, x, generator)  # the floor of this transform, drawn in parallel on CPU
        flat = _noise_and_blend(x, out, torch.pow(10.0, -snr / 20), w.to(x.dtype), width)
        if flat.any():  # zero power and a constant smooth: pass exactly, whatever the rounding of the smooth
            out[flat] = x[flat]
        return out
