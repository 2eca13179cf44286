"""Saliency maps of probe decisions: which samples of an ECG moved a frozen encoder's logistic probe.

Two attribution methods, both from captum (Kokhlikyan et al., 2020) on a
:class:`~ssl_ecg.evaluate.head.ProbeModel` (one window (N, L, S) -> logits (N, K)):

* **Integrated gradients** (Sundararajan, Taly & Yan, ICML 2017): for a baseline x' (zeros: a flat line, the
  mean of every normalised lead),

      IG_i(x) = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x'))/dx_i da,

  which is *complete*: sum_i IG_i(x) = F(x) - F(x'). captum approximates the integral with ``n_steps``
  Gauss-Legendre nodes; the returned convergence delta is the completeness error of that approximation. For a
  model linear in x, IG with a zero baseline is exactly x * dF/dx.
* **Grad-CAM** (Selvaraju et al., ICCV 2017) on the encoder's last rectified convolutional feature map A
  (N, C, T') (the activation following the last convolution, see :func:`find_gradcam_layer`):
  weights a_c = mean_t dF/dA_ct, map = ReLU(sum_c a_c A_c) (T',), linearly interpolated to the S input samples.
  Per-lead encoders see each lead alone, so each lead gets its own map; a multi-lead encoder sees all leads in
  one feature map, so its map is shared by every lead (broadcast over L).

**Whole records.** The probe scores a record by the mean of the logits of its W non-overlapping windows
(:meth:`~ssl_ecg.evaluate.head.ProbeModel.record_logits`): g(x) = (1/W) sum_w F(x_w), the windows x_w being
disjoint slices of x. So dg/dx_i = (1/W) dF/dx_i^(w) for the window w holding sample i, and with a zero baseline

    IG_i(g; x) = (1/W) IG_i(F; x_w),     sum_i IG_i(g; x) = (1/W) sum_w (F(x_w) - F(0)) = g(x) - g(0):

the record's attribution is the concatenation of its window attributions divided by W, and stays complete
(its delta is the mean of the window deltas). Grad-CAM's gradients scale by the same 1/W, and ReLU commutes with
a positive scale, so the same rule gives the record's Grad-CAM. Samples after the last whole window are never
seen by the probe and get zero attribution, so a record map has the record's length T.

Everything here is deterministic: no random baselines, the model in eval mode, the same input gives the same
maps bit for bit (tested).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.embed import tile_windows
from ssl_ecg.evaluate.head import FittedProbe, ProbeModel, check_records

__all__ = ["SALIENCY_METHODS", "CLIP_PERCENTILE", "integrated_gradients", "grad_cam", "find_gradcam_layer",
           "record_attributions", "plot_saliency", "saliency_figure", "explain_records", "run_explain"]

CLIP_PERCENTILE = 99.5
"""The colour scale of :func:`plot_saliency` ends at this percentile of |attribution| (larger values saturate)."""

SALIENCY_METHODS = ("ig", "gradcam")
"""``ig``: integrated gradients (signed, complete); ``gradcam``: Grad-CAM on the last convolutional map."""


def _check_windows(model: ProbeModel, x: Tensor, name: str = "x") -> Tensor:
    if not isinstance(model, ProbeModel):
        raise ConfigError(f"model: expected a ProbeModel (ssl_ecg.evaluate.head), got {type(model).__name__}")
    x = torch.as_tensor(x)
    if x.ndim != 3 or not x.is_floating_point():
        raise ConfigError(f"{name}: expected floating windows (N, L, S), got {x.dtype} {tuple(x.shape)}")
    return x.float()


def _target_list(model: ProbeModel, target: int | Sequence[int], n: int) -> list[int]:
    """One output index per window, each checked against the model's K outputs."""
    targets = [int(target)] * n if isinstance(target, (int, np.integer)) else [int(t) for t in target]
    if len(targets) != n:
        raise ConfigError(f"target: expected one index or {n} (one per window), got {len(targets)}")
    bad = [t for t in targets if not 0 <= t < model.n_outputs]
    if bad:
        raise ConfigError(f"target: output index {bad[0]} is outside the model's {model.n_outputs} output(s) "
                          f"(a binary probe has one: target 0)")
    return targets


class _EvalMode:
    """Put a module in eval mode for a block and restore its training flag after (its weights are untouched)."""

    def __init__(self, module: nn.Module):
        self.module, self.was_training = module, module.training

    def __enter__(self) -> nn.Module:
        return self.module.eval()

    def __exit__(self, *exc: Any) -> None:
        self.module.train(self.was_training)


def integrated_gradients(model: ProbeModel, x: Tensor, target: int | Sequence[int] = 0,
                         baseline: str | Tensor = "zeros", n_steps: int = 64,
                         internal_batch_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Integrated gradients of one probe output with respect to the input windows (captum).

    Args:
        model: encoder + probe, (N, L, S) -> (N, K).
        x: (N, L, S) windows.
        target: the output index (0 for a binary probe's decision value, the class index otherwise), or one per
            window.
        baseline: ``"zeros"`` (a flat line) or a tensor broadcastable to (N, L, S).
        n_steps: Gauss-Legendre nodes of the path integral.
        internal_batch_size: windows x steps evaluated at once (None: all).

    Returns:
        The attributions (N, L, S) and the convergence delta (N,): sum of attributions - (F(x) - F(baseline)).

    Raises:
        ConfigError: ``x`` is not (N, L, S), ``target`` is out of range, ``baseline`` is neither, or
            ``n_steps`` < 1.
    """
    from captum.attr import IntegratedGradients

    x = _check_windows(model, x)
    if isinstance(baseline, str):
        if baseline != "zeros":
            raise ConfigError(f"baseline: expected 'zeros' or a tensor, got {baseline!r}")
        base = torch.zeros_like(x)
    else:
        try:
            base = torch.as_tensor(baseline, dtype=torch.float32).expand_as(x).contiguous()
        except RuntimeError:
            raise ConfigError(f"baseline: shape {tuple(torch.as_tensor(baseline).shape)} does not broadcast to the "
                              f"windows' {tuple(x.shape)}") from None
    if int(n_steps) < 1:
        raise ConfigError(f"n_steps: expected >= 1, got {n_steps!r}")
    targets = _target_list(model, target, len(x))
    with _EvalMode(model):
        attr, delta = IntegratedGradients(model).attribute(
            x, baselines=base, target=targets, n_steps=int(n_steps), internal_batch_size=internal_batch_size,
            return_convergence_delta=True)
    return attr.detach(), delta.detach()


#: Activations whose output, following the last convolution, is the rectified feature map Grad-CAM uses.
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish)
#: Modules that may sit between a convolution and its activation without changing the map's shape or meaning.
_BETWEEN = (nn.BatchNorm1d, nn.GroupNorm, nn.InstanceNorm1d, nn.Identity, nn.Dropout)


def find_gradcam_layer(model: ProbeModel, x: Tensor) -> tuple[str, nn.Module]:
    """The encoder's last rectified convolutional feature map: Grad-CAM's layer.

    Selvaraju et al. (ICCV 2017) take the feature maps of the last convolutional layer *after* its
    rectification. The search: the last module, in the order the forward pass finishes them, that is or contains
    a ``Conv1d`` and returns an (N, C, T') map with T' > 1 (a map of one time step carries no position); then,
    when the modules finishing right after it are normalisations (BatchNorm, GroupNorm, Identity, Dropout) and
    an activation (ReLU, ReLU6, GELU, SiLU, ...) called once per forward pass with the same output shape, that
    activation instead. For the CLOCS encoder that is the ReLU after its last ``Conv1d`` and BatchNorm
    (``features.12``; its last pool leaves one step at 4-5 s windows); for ResNet1d the residual ``blocks``
    (which end with the last block's addition and ReLU already).

    Args:
        model: encoder + probe; x: an example (N, L, S) window batch (one forward pass, no gradients).

    Returns:
        (the layer's name inside the encoder, the layer).

    Raises:
        ConfigError: the encoder has no ``Conv1d``, or none keeps more than one time step.
    """
    x = _check_windows(model, x)
    encoder = model.features.encoder
    has_conv = {name: any(isinstance(m, nn.Conv1d) for m in module.modules())
                for name, module in encoder.named_modules() if name}
    if not any(has_conv.values()):
        raise ConfigError(f"grad_cam: the encoder {type(encoder).__name__} has no Conv1d layer, so Grad-CAM has "
                          f"no feature map; expected a convolutional encoder (or use method='ig')")
    finished: list[tuple[str, nn.Module, tuple]] = []
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: finished.append(
        (name, m, tuple(o.shape) if isinstance(o, Tensor) else ())))
        for name, module in encoder.named_modules() if name]
    try:
        with _EvalMode(model), torch.no_grad():
            model(x[:1])
    finally:
        for hook in hooks:
            hook.remove()
    maps = [k for k, (name, m, shape) in enumerate(finished)
            if has_conv[name] and len(shape) == 3 and shape[-1] > 1]
    if not maps:
        raise ConfigError(f"grad_cam: no convolutional layer of {type(encoder).__name__} keeps more than one time "
                          f"step at {x.shape[-1]}-sample windows; expected a (N, C, T'>1) feature map "
                          f"(pass layer= or use method='ig')")
    last = maps[-1]
    calls: dict[int, int] = {}
    for _, m, _ in finished:
        calls[id(m)] = calls.get(id(m), 0) + 1
    for name, m, shape in finished[last + 1:]:  # the activation rectifying that map, if it follows directly
        if shape != finished[last][2]:
            break
        if isinstance(m, _ACTIVATIONS):
            if calls[id(m)] == 1:  # a shared activation module would give captum another call's output
                return name, m
            break
        if not isinstance(m, _BETWEEN):
            break
    return finished[last][0], finished[last][1]


def grad_cam(model: ProbeModel, x: Tensor, target: int | Sequence[int] = 0, layer: nn.Module | None = None,
             relu: bool = True) -> Tensor:
    """Grad-CAM of one probe output on the encoder's last convolutional map (captum ``LayerGradCam``), linearly
    interpolated to the input length (captum ``LayerAttribution.interpolate``).

    Args:
        model: encoder + probe, (N, L, S) -> (N, K).
        x: (N, L, S) windows.
        target: output index (0 for binary), or one per window.
        layer: the encoder layer; None finds it (:func:`find_gradcam_layer`).
        relu: keep only positive evidence, as Selvaraju et al. do (False: the signed map).

    Returns:
        (N, L, S): per-lead encoders give each lead its own map; a multi-lead encoder's one map is repeated over
        the L leads.

    Raises:
        ConfigError: bad ``x`` or ``target``, or no convolutional layer to use.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    x = _check_windows(model, x)
    n, n_leads, s = x.shape
    targets = _target_list(model, target, n)
    if layer is None:
        layer = find_gradcam_layer(model, x)[1]
    per_lead = model.features.per_lead
    with _EvalMode(model):
        cam = LayerGradCam(model, layer).attribute(x, target=targets, relu_attributions=relu)  # (N or N*L, 1, T')
    cam = cam.detach()
    if cam.ndim != 3 or cam.shape[0] != (n * n_leads if per_lead else n):
        raise ConfigError(f"grad_cam: layer output gave a map of shape {tuple(cam.shape)}; expected (N*L, 1, T') "
                          f"for a per-lead or (N, 1, T') for a multi-lead encoder (pass a convolutional layer=)")
    cam = LayerAttribution.interpolate(cam, (s,), interpolate_mode="linear")[:, 0]  # (N or N*L, S)
    return cam.reshape(n, n_leads, s) if per_lead else cam[:, None, :].expand(n, n_leads, s).contiguous()


def record_attributions(model: ProbeModel, signals: np.ndarray | Tensor, window: int, target: int = 0,
                        method: str = "ig", n_steps: int = 64, batch_windows: int = 64) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """Attributions of whole records' probe decisions: each record tiled into the evaluation's non-overlapping
    windows, the window maps concatenated and divided by the number of windows W (see the module doc).

    Args:
        model: encoder + probe; signals: (R, L, T) records; window: samples per window.
        target: output index (0 for binary); method: ``ig`` or ``gradcam`` (:data:`SALIENCY_METHODS`).
        n_steps: integrated-gradient nodes; batch_windows: windows attributed per captum call.

    Returns:
        float32 (R, L, T) attributions (zero after the last whole window) and (R,) completeness deltas (IG: sum
        of the record's attributions - (g(x) - g(0)); NaN for Grad-CAM, which has no such property).

    Raises:
        ConfigError: unknown ``method``, or records shorter than one window.
    """
    if method not in SALIENCY_METHODS:
        raise ConfigError(f"method: expected one of {list(SALIENCY_METHODS)}, got {method!r}")
    x = torch.as_tensor(signals, dtype=torch.float32)
    check_records(x, window)
    windows = tile_windows(x, window)  # (R, W, L, S)
    r, n_w = windows.shape[:2]
    flat = windows.reshape(r * n_w, *windows.shape[2:])
    layer = find_gradcam_layer(model, flat[:1])[1] if method == "gradcam" else None
    attrs, deltas = [], []
    for i in range(0, len(flat), batch_windows):
        chunk = flat[i:i + batch_windows]
        if method == "ig":
            a, d = integrated_gradients(model, chunk, target, n_steps=n_steps)
        else:
            a, d = grad_cam(model, chunk, target, layer=layer), torch.full((len(chunk),), float("nan"))
        attrs.append(a)
        deltas.append(d)
    attr = torch.cat(attrs).reshape(r, n_w, *windows.shape[2:]) / n_w  # g = (1/W) sum_w F(x_w)
    out = torch.zeros_like(x)
    out[..., : n_w * window] = attr.permute(0, 2, 1, 3).reshape(r, x.shape[1], n_w * window)
    delta = torch.cat(deltas).reshape(r, n_w).double().mean(1)
    return out.numpy(), delta.numpy()


def saliency_figure(signal: np.ndarray, attribution: np.ndarray, fs: float, lead_names: Sequence[str] | None = None,
                    r_peaks: Sequence[int] | np.ndarray | None = None, title: str = ""):
    """The figure of :func:`plot_saliency` (one axis per lead and a colour bar), for callers that add to it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    signal, attribution = np.asarray(signal, dtype=np.float64), np.asarray(attribution, dtype=np.float64)
    if signal.ndim != 2 or attribution.shape != signal.shape:
        raise ConfigError(f"attribution: expected the signal's (L, T) shape {signal.shape}, got {attribution.shape}")
    if not fs > 0:
        raise ConfigError(f"fs: expected a positive sampling rate in Hz, got {fs!r}")
    n_leads, t = signal.shape
    names = list(lead_names) if lead_names is not None else [f"lead {i + 1}" for i in range(n_leads)]
    if len(names) != n_leads:
        raise ConfigError(f"lead_names: expected {n_leads} names, got {len(names)}")
    peaks = np.asarray([] if r_peaks is None else r_peaks, dtype=np.int64)
    peaks = peaks[(peaks >= 0) & (peaks < t)]
    signed = attribution.min() < 0  # IG is signed: a diverging map centred on 0; Grad-CAM is >= 0
    # IG mass sits on a few QRS samples; a scale at the maximum would leave the rest of the band blank
    top = float(np.percentile(np.abs(attribution), CLIP_PERCENTILE)) or float(np.abs(attribution).max()) or 1.0
    cmap, vmin = ("RdBu_r", -top) if signed else ("Reds", 0.0)
    seconds = np.arange(t) / fs
    fig, axes = plt.subplots(n_leads, 1, figsize=(12, 0.8 * n_leads + 1.0), sharex=True, squeeze=False,
                             layout="constrained")
    image = None
    for lead, ax in enumerate(axes[:, 0]):
        lo, hi = signal[lead].min(), signal[lead].max()
        pad = 0.1 * (hi - lo) or 0.5
        lo, hi = lo - pad, hi + pad
        image = ax.imshow(attribution[lead][None, :], aspect="auto", cmap=cmap, vmin=vmin, vmax=top,
                          extent=(0.0, t / fs, lo, hi), interpolation="nearest", alpha=0.85)
        ax.plot(seconds, signal[lead], color="k", linewidth=0.6)
        if len(peaks):
            ax.plot(seconds[peaks], signal[lead][peaks], linestyle="none", marker="v", markersize=3.5,
                    color="tab:green", label="R peak (detect_r_peaks)" if lead == 0 else None)
        ax.set_ylim(lo, hi)
        ax.set_ylabel(names[lead], rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("time (s)")
    if len(peaks):
        axes[0, 0].legend(loc="upper right", fontsize=7, framealpha=0.8)
    fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.02, pad=0.01, extend="both" if signed else "max",
                 label=("attribution" if signed else "Grad-CAM") + f" (scale clipped at the {CLIP_PERCENTILE:g}th "
                       "percentile of |map|)")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_saliency(signal: np.ndarray, attribution: np.ndarray, fs: float, lead_names: Sequence[str] | None,
                  r_peaks: Sequence[int] | np.ndarray | None, path: str | os.PathLike, title: str = "") -> Path:
    """Plot an ECG record with its attribution as a colour band behind each lead's trace, R peaks marked.

    Signed maps (integrated gradients) use a diverging colour map centred on zero (red: pushed the score up,
    blue: down); non-negative maps (Grad-CAM) a sequential one. One colour scale serves every lead, so leads can
    be compared; it ends at the :data:`CLIP_PERCENTILE` percentile of |attribution|, where larger values
    saturate. Matplotlib's Agg backend; nothing is shown.

    Args:
        signal: (L, T) record (mV or normalised); attribution: (L, T), same shape.
        fs: sampling rate in Hz; lead_names: L names (None: numbered).
        r_peaks: R-peak sample indices (e.g. from :func:`augmentations.peaks.r_peak_positions`), or None.
        path: the PNG to write; title: figure title.

    Returns:
        ``path``.

    Raises:
        ConfigError: shapes, names or ``fs`` do not fit.
    """
    import matplotlib.pyplot as plt

    fig = saliency_figure(signal, attribution, fs, lead_names, r_peaks, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def _target_index(model: ProbeModel, target: int | str | None) -> int:
    """The output to explain: 0 for a binary probe; a class name or index otherwise."""
    if model.kind == "binary":
        if target not in (None, 0, "0"):
            raise ConfigError(f"target: a binary probe has one output (the positive class's decision value, "
                              f"target 0 or none); got {target!r}")
        return 0
    classes = model.classes or [str(k) for k in range(model.n_outputs)]
    if target is None:
        raise ConfigError(f"target: the {model.kind} probe has classes {classes}; name the one to explain")
    if str(target) in classes:
        return classes.index(str(target))
    if isinstance(target, (int, np.integer)) and 0 <= int(target) < model.n_outputs:
        return int(target)
    raise ConfigError(f"target: {target!r} is not one of the probe's classes {classes}")


def _safe_name(record_id: str) -> str:
    """A record id as a plain file-name part (ids such as PTB-XL's hold '/'), so files stay in their folder."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(record_id)).strip(".")[:60] or "record"


def _json_value(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def explain_records(fitted: FittedProbe, signals: np.ndarray, table: pd.DataFrame, out: str | os.PathLike,
                    window: int, fs: float, lead_names: Sequence[str] | None = None,
                    records: Sequence[str] | None = None, top_k: int | None = None, split: str = "test",
                    method: str = "ig", target: int | str | None = None, n_steps: int = 64,
                    meta: dict | None = None) -> dict:
    """Explain the probe's decision on chosen records, or on the top-k records of a split: one PNG per record
    (:func:`plot_saliency`, R peaks from :func:`augmentations.peaks.r_peak_positions` on all leads) and
    ``saliency.json``.

    Records come only from the rows of ``split`` that the probe was fitted with (``fitted.rows``). With
    ``records``, those record ids in that order; otherwise the ``top_k`` (default 3) records with the highest
    positive-class score (the binary decision value, or the ``target`` class's probability), ties in table order.

    Args:
        fitted: the probe (:func:`~ssl_ecg.evaluate.head.fit_probe_model`) on ``signals`` and ``table`` (which
            has ``record_id`` and ``patient_id``).
        signals: (R, L, T) records; out: folder for the files (created).
        window, fs, lead_names: the evaluation's window (samples), sampling rate and lead names.
        method: ``ig`` or ``gradcam``; target: class name or index for multi-output probes (binary: None).
        n_steps: integrated-gradient nodes; meta: extra keys for ``saliency.json``.

    Returns:
        The ``saliency.json`` contents; ``note`` says when ``top_k`` exceeds the split's records (all are
        explained then; ``selection`` says so too), else None.

    Raises:
        ConfigError: unknown method, split, target or record id (one not in ``split``), both or neither of
            ``records`` and ``top_k`` wrong, or records shorter than one window (before any computation).
    """
    from augmentations.peaks import r_peak_positions

    if method not in SALIENCY_METHODS:
        raise ConfigError(f"method: expected one of {list(SALIENCY_METHODS)}, got {method!r}")
    if split not in fitted.rows:
        raise ConfigError(f"split: expected one of {sorted(fitted.rows)}, got {split!r}")
    if records is not None and top_k is not None:
        raise ConfigError("records/top_k: give record ids or top_k, not both")
    if top_k is not None and int(top_k) < 1:
        raise ConfigError(f"top_k: expected >= 1, got {top_k!r}")
    for column in ("record_id", "patient_id"):
        if column not in table.columns:
            raise ConfigError(f"table: expected a {column!r} column, got {sorted(table.columns)}")
    check_records(np.asarray(signals), window)
    model = fitted.model
    t_index = _target_index(model, target)
    rows = np.asarray(fitted.rows[split], dtype=np.int64)
    ids = table["record_id"].astype(str).to_numpy()
    scores = model.record_scores(np.asarray(signals)[rows], window)
    scores = scores if scores.ndim == 1 else scores[:, t_index]
    note = None
    if records is not None:
        where = {rid: k for k, rid in enumerate(ids[rows])}
        missing = [str(r) for r in records if str(r) not in where]
        if missing:
            raise ConfigError(f"record: {missing} not among the {len(rows)} {split} records of this task "
                              f"(e.g. {sorted(where)[:5]})")
        chosen = [where[str(r)] for r in records]
        selection = f"records {list(map(str, records))}"
    else:
        k = int(top_k or 3)
        chosen = list(np.argsort(-scores, kind="stable")[:k])
        selection = f"top {k} {split} records by the positive-class score"
        if k > len(rows):
            note = (f"top_k {k} asked, but the {split} split of this task has only {len(rows)} records: all "
                    f"{len(rows)} are explained")
            selection += f"; {note}"
    picked = rows[chosen]
    x = np.asarray(signals, dtype=np.float32)[picked]
    attr, delta = record_attributions(model, x, window, t_index, method, n_steps)
    peaks, counts = r_peak_positions(torch.as_tensor(x), fs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = model.classes
    target_name = (classes[t_index] if classes and model.kind != "binary" else
                   (t_index if model.kind != "binary" else "positive"))
    entries = []
    for rank, (row, k) in enumerate(zip(picked, chosen)):
        label = fitted.y[row]
        label = label[t_index] if np.ndim(label) else label
        if model.kind == "multiclass" and classes:
            label = classes[int(label)]
        r_peaks = peaks[rank, : int(counts[rank])].numpy()
        name = f"{rank + 1:02d}_{_safe_name(ids[row])}_{method}.png"
        title = (f"record {ids[row]} (patient {table['patient_id'].iloc[row]}): {method} for {target_name}, "
                 f"score {float(scores[k]):.3f}, label {label}")
        plot_saliency(x[rank], attr[rank], fs, lead_names, r_peaks, out / name, title)
        entries.append({"record_id": str(ids[row]), "patient_id": str(table["patient_id"].iloc[row]),
                        "score": float(scores[k]), "label": _json_value(label), "file": name,
                        "r_peaks": int(counts[rank]), "completeness_delta": None if np.isnan(delta[rank])
                        else float(delta[rank])})
    summary = {"method": method, "target": _json_value(target_name), "split": split, "selection": selection,
               "note": note,
               "window": int(window), "fs": float(fs), "n_steps": int(n_steps) if method == "ig" else None,
               "record_attribution": "window attributions concatenated and divided by the number of windows",
               "records": entries, **(meta or {})}
    (out / "saliency.json").write_text(json.dumps(summary, indent=2, default=_json_value))
    return summary


def _lead_names(prepared: Any) -> list[str] | None:
    cache = prepared.cache
    manifest = getattr(cache, "manifest", None) or getattr(cache.members[0], "manifest", None)
    return list(manifest["leads"]) if manifest and manifest.get("leads") else None


def run_explain(cfg: Any, task: str, records: Sequence[str] | None = None, top_k: int | None = None,
                method: str = "ig", fraction: float = 1.0, seed: int = 0, arm: str | None = None,
                target: int | str | None = None, out: str = "explain", runs: str | os.PathLike = "runs",
                n_steps: int = 64, progress: bool = False) -> dict:
    """``ssl-ecg explain``: fit an evaluation recipe's logistic probe for ``task`` on one arm and explain it.

    The data, split and encoders come from :func:`~ssl_ecg.evaluate.runner.evaluation_inputs`, with every
    provenance check of the curve (the label-use check at ``fraction``). The arm is ``arm`` or the recipe's first
    encoder (``random_init`` when the recipe names none). Files go to ``runs/<recipe name>/<out>/``.

    Returns:
        The ``saliency.json`` contents plus ``out`` (the folder).

    Raises:
        ConfigError: unknown method, task, arm, target or record id; ``out`` not a plain folder name.
    """
    from dataclasses import replace

    from ssl_ecg.evaluate.challenge import challenge_year
    from ssl_ecg.evaluate.head import fit_probe_model
    from ssl_ecg.evaluate.runner import evaluation_inputs
    from ssl_ecg.paths import run_folder

    if method not in SALIENCY_METHODS:
        raise ConfigError(f"method: expected one of {list(SALIENCY_METHODS)}, got {method!r}")
    if not 0 < float(fraction) <= 1:
        raise ConfigError(f"fraction: expected a number in (0, 1], got {fraction!r}")
    folder = run_folder(run_folder(runs, cfg.name), out)  # both names checked before any work
    cfg = replace(cfg, tasks=[task], fractions=[float(fraction)], supervised=False,
                  random_init=cfg.random_init or not cfg.encoders)
    inputs = evaluation_inputs(cfg, progress=progress)
    if task not in inputs.table.columns:
        raise ConfigError(f"task: {task!r} is not a column of the data (columns: {sorted(inputs.table.columns)})")
    arm = arm if arm is not None else next(iter(inputs.arms))
    if arm not in inputs.arms:
        raise ConfigError(f"arm: {arm!r} is not an arm of {cfg.name} (arms: {list(inputs.arms)})")
    known = set(inputs.table["record_id"].astype(str)) if "record_id" in inputs.table.columns else set()
    unknown = [str(r) for r in records or () if str(r) not in known]
    if unknown:  # before the probe is fitted; a record outside the test split is caught by explain_records
        raise ConfigError(f"record: {unknown} not among the {len(known)} records of {cfg.name}'s split "
                          f"(e.g. {sorted(known)[:5]})")
    dataset = "+".join(inputs.prepared.spec.datasets)
    fitted = fit_probe_model(inputs.arms[arm], inputs.signals, inputs.table, inputs.splits, task, inputs.window,
                             inputs.per_lead[arm], fraction, seed, lead_features=cfg.lead_features,
                             challenge_year=challenge_year(dataset))
    meta = {"recipe": cfg.name, "task": task, "arm": arm, "fraction": float(fraction), "seed": int(seed),
            "dataset": dataset, "split_hash": inputs.prepared.split.hash, "per_lead": inputs.per_lead[arm],
            "probe": {"C": fitted.result.setting.get("C"), "val_auroc": fitted.result.val_auroc,
                      "test_auroc": fitted.result.test_auroc},
            "allow_overlap": cfg.allow_overlap, "allow_unknown_provenance": cfg.allow_unknown_provenance,
            "provenance": inputs.checks.get(arm)}
    summary = explain_records(fitted, inputs.signals, inputs.table, folder, inputs.window, cfg.fs,
                              _lead_names(inputs.prepared), records=records, top_k=top_k, method=method,
                              target=target, n_steps=n_steps, meta=meta)
    return {**summary, "out": folder}
