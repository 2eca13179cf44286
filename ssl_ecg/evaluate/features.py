"""A hand-crafted feature arm: RR/HRV and interval features as a parameter-free "encoder".

Frozen window-averaged CNN features can score near chance where a handful of RR features do well (AF-type
rhythm labels), so a curve should show when pretraining loses to classic features. :class:`HandcraftedFeatures`
is an ``nn.Module`` mapping (N, C, T) to (N, D) like any frozen encoder, so the same probes score it; it has no
weights, and its ``config`` (rate, leads, feature version, neurokit2 version) is what the curve fingerprints.

Features (neurokit2, Makowski et al. 2021, Behav. Res. Methods 53:1689; HRV definitions after the Task Force of
the ESC/NASPE 1996, Circulation 93:1043):

- **RR / HRV** (reference lead; ``nk.ecg_peaks`` then ``nk.hrv_time``): mean RR (ms), heart rate (bpm, 60000 /
  mean RR), SDNN (ms), RMSSD (ms), pNN50 and pNN20 (%), CVNN (SDNN / mean RR), and ``rr_missing``. pNN20 and
  CVNN are kept because they stay informative on the few beats of a short recording, where pNN50 is mostly 0;
  sample entropy is left out, being undefined on ~10 intervals.
- **Intervals** (reference lead; ``nk.ecg_delineate``, discrete wavelet method): median QRS duration
  (R onset to R offset), PR (P onset to R onset) and QT (R onset to T offset) in ms over the beats where both
  ends were found, each with its ``*_missing`` indicator.
- **Per lead**: the signed amplitude at the reference lead's R peaks (median over beats, relative to the lead's
  median: the projection of the QRS on every lead, which carries the electrical axis), and ``lead_missing``.

Reference lead: the first lead of :data:`REFERENCE_LEADS` that is present and usable (finite, not flat), else
the first usable channel; it is cleaned (``nk.ecg_clean``) and turned upright when inverted (``nk.ecg_invert``,
as in aVR or a reversed electrode) before peak detection. Delineation runs on that lead only (about 40 ms per
10 s record at 100 Hz; all 12 leads would be 12 times that for little gain). A feature that cannot be computed
(no usable lead, fewer than :data:`MIN_PEAKS` R peaks, a failed delineation) is :data:`FILL_VALUE` with its
indicator set to 1, never NaN and never an exception.

Window length: the curve's ``embed_records`` tiles records into windows and averages the window features. RR
statistics need beats: a 5 s window at 75 bpm holds ~6 beats (5 intervals), so SDNN/RMSSD are noisy and an
average of per-window values is not the whole record's value. The evaluation runner therefore gives this arm
whole records (``EvalConfig.feature_arm``), and a curve that tiles it should use windows of 10 s or more.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ssl_ecg.errors import ConfigError

__all__ = ["HandcraftedFeatures", "REFERENCE_LEADS", "RR_FEATURES", "INTERVAL_FEATURES", "FILL_VALUE", "MIN_PEAKS",
           "FEATURE_VERSION", "handcrafted_features"]

#: Bump when a feature's definition changes: it is part of the arm's config, hence of every curve fingerprint.
FEATURE_VERSION = 1
#: Leads tried, in order, as the reference for R peaks and delineation (II: the usual rhythm lead; every CinC
#: 2021 reduced lead set keeps it).
REFERENCE_LEADS = ("II", "I", "V5", "V6", "V4", "aVF", "V3", "V2", "V1", "III", "aVL", "aVR")
#: RR / HRV features, in output order (``rr_missing`` follows them).
RR_FEATURES = ("mean_rr_ms", "heart_rate_bpm", "sdnn_ms", "rmssd_ms", "pnn50", "pnn20", "cvnn")
_HRV_COLUMNS = ("HRV_MeanNN", None, "HRV_SDNN", "HRV_RMSSD", "HRV_pNN50", "HRV_pNN20", "HRV_CVNN")
#: Interval features: name -> (start wave, end wave) of ``nk.ecg_delineate``; each is followed by ``<name>_missing``.
INTERVAL_FEATURES = {"qrs_ms": ("ECG_R_Onsets", "ECG_R_Offsets"), "pr_ms": ("ECG_P_Onsets", "ECG_R_Onsets"),
                     "qt_ms": ("ECG_R_Onsets", "ECG_T_Offsets")}
#: The value a feature takes when it cannot be computed (its indicator is then 1).
FILL_VALUE = 0.0
#: Fewest R peaks for the RR features (two intervals: SDNN and RMSSD are defined).
MIN_PEAKS = 3
#: A lead whose standard deviation is at most this (in the signal's units) is flat: unusable.
FLAT_STD = 1e-6


def _usable(lead: np.ndarray) -> bool:
    return bool(np.isfinite(lead).all() and lead.std() > FLAT_STD)


def _quietly(fn, *args, **kwargs):
    """Call neurokit2 with its warnings silenced (short or odd signals warn; the indicators say what failed)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _rr_features(peaks: np.ndarray, fs: float) -> tuple[list[float], float]:
    import neurokit2 as nk

    if len(peaks) < MIN_PEAKS:
        return [FILL_VALUE] * len(RR_FEATURES), 1.0
    try:
        hrv = _quietly(nk.hrv_time, peaks, sampling_rate=fs).iloc[0]
    except Exception:  # neurokit2 raises assorted errors on degenerate peak series; the indicator records it
        return [FILL_VALUE] * len(RR_FEATURES), 1.0
    mean_rr = float(hrv["HRV_MeanNN"])
    values = [60000.0 / mean_rr if col is None and mean_rr > 0 else float(hrv[col]) if col else float("nan")
              for col in _HRV_COLUMNS]
    if not np.isfinite(values).all():
        return [FILL_VALUE] * len(RR_FEATURES), 1.0
    return values, 0.0


def _interval_features(cleaned: np.ndarray, peaks: np.ndarray, fs: float) -> list[float]:
    import neurokit2 as nk

    waves: dict = {}
    if len(peaks) >= MIN_PEAKS:
        try:
            _, waves = _quietly(nk.ecg_delineate, cleaned, peaks, sampling_rate=fs, method="dwt")
        except Exception:  # a failed delineation is a missing feature, not a crash
            waves = {}
    out = []
    for start, end in INTERVAL_FEATURES.values():
        a = np.asarray(waves.get(start, []), dtype=float)
        b = np.asarray(waves.get(end, []), dtype=float)
        d = (b - a) / fs * 1000.0 if a.shape == b.shape else np.array([])
        d = d[np.isfinite(d) & (d > 0)]
        out += [float(np.median(d)), 0.0] if len(d) else [FILL_VALUE, 1.0]
    return out


def handcrafted_features(x: np.ndarray, fs: float, leads: Sequence[str]) -> np.ndarray:
    """The feature vector of one recording (see the module doc and :attr:`HandcraftedFeatures.feature_names`).

    Args:
        x: (C, T) signal of one record or window, leads in the order of ``leads``.
        fs: its sampling rate in Hz.
        leads: its lead names (canonical spelling; other names are never the reference by name).

    Returns:
        float64 (7 + 1 + 2 * 3 + 2 * C,): RR features, ``rr_missing``, intervals with indicators, then per-lead
        amplitudes and ``lead_missing`` (C each). Always finite.
    """
    import neurokit2 as nk

    x = np.asarray(x, dtype=np.float64)
    usable = [_usable(lead) for lead in x]
    order = [list(leads).index(name) for name in REFERENCE_LEADS if name in leads]
    order += [c for c in range(len(x)) if c not in order]
    ref = next((c for c in order if usable[c]), None)
    peaks, cleaned = np.zeros(0, dtype=np.int64), None
    if ref is not None:
        try:
            cleaned = _quietly(nk.ecg_clean, x[ref], sampling_rate=fs)
            cleaned, _ = _quietly(nk.ecg_invert, cleaned, sampling_rate=fs)  # R peaks are sought upright
            _, info = _quietly(nk.ecg_peaks, cleaned, sampling_rate=fs)
            peaks = np.asarray(info["ECG_R_Peaks"], dtype=np.int64)
        except Exception:  # no detectable beats: every beat-based feature is missing
            peaks = np.zeros(0, dtype=np.int64)
    rr, rr_missing = _rr_features(peaks, fs)
    intervals = _interval_features(cleaned, peaks, fs) if cleaned is not None else [FILL_VALUE, 1.0] * 3
    amplitude = np.full(len(x), FILL_VALUE)
    for c in range(len(x)):
        if usable[c] and len(peaks):
            amplitude[c] = float(np.median(x[c, peaks] - np.median(x[c])))
    missing = 1.0 - np.asarray(usable, dtype=np.float64)
    return np.concatenate([rr, [rr_missing], intervals, amplitude, missing])


class HandcraftedFeatures(nn.Module):
    """Parameter-free feature "encoder": (N, C, T) -> (N, D) RR/HRV, interval and per-lead amplitude features.

    Evaluated in multi-lead mode (``per_lead=False``) by the same frozen probes as the encoder arms. The
    features are computed with neurokit2 on the CPU, one row at a time; see the module doc for the list, the
    reference lead and the fill values.

    Args:
        fs: sampling rate of the inputs in Hz.
        leads: names of the C input channels, in order (matched case-insensitively to the standard spelling).

    Attributes:
        config: ``{"name": "handcrafted", "fs", "leads", "version", "neurokit2"}``: what decides the features,
            so a curve's fingerprint changes with any of them.
        embed_dim: D = 14 + 2 * C.
        feature_names: the D column names.
    """

    def __init__(self, fs: float, leads: Sequence[str]):
        super().__init__()
        import neurokit2 as nk

        from ssl_ecg.data.record import canonical_lead

        if not (isinstance(fs, (int, float)) and np.isfinite(fs) and fs > 0):
            raise ConfigError(f"HandcraftedFeatures: fs={fs!r}; expected a sampling rate in Hz > 0")
        if isinstance(leads, str) or not leads or not all(isinstance(n, str) and n.strip() for n in leads):
            raise ConfigError(f"HandcraftedFeatures: leads={leads!r}; expected a non-empty list of lead names")
        self.fs = float(fs)
        self.leads = [canonical_lead(n) for n in leads]
        self.config = {"name": "handcrafted", "fs": self.fs, "leads": list(self.leads), "version": FEATURE_VERSION,
                       "neurokit2": nk.__version__}
        names = [*RR_FEATURES, "rr_missing"]
        for name in INTERVAL_FEATURES:
            names += [name, f"{name.removesuffix('_ms')}_missing"]
        names += [f"amplitude_{lead}" for lead in self.leads] + [f"missing_{lead}" for lead in self.leads]
        self.feature_names = names
        self.embed_dim = len(names)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, T) signals -> (N, D) float32 features on ``x``'s device."""
        if x.ndim != 3 or x.shape[1] != len(self.leads):
            raise ConfigError(f"HandcraftedFeatures: input of shape {tuple(x.shape)}; expected (N, "
                              f"{len(self.leads)}, T) with leads {self.leads}")
        rows = x.detach().cpu().double().numpy()
        out = np.stack([handcrafted_features(r, self.fs, self.leads) for r in rows]) if len(rows) else \
            np.zeros((0, self.embed_dim))
        return torch.as_tensor(out, dtype=torch.float32, device=x.device)
