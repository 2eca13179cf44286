"""Deployable forms of an encoder (or an encoder with its probe): ONNX checked against PyTorch, safetensors with a
model card, and an inference-only ONNX Runtime wrapper.

Exporter. The model is captured with ``torch.export.export`` with one dynamic axis, the batch, and the program is
converted by ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export``-based exporter, default since torch 2.9;
it needs ``onnxscript``). ``torch.export`` runs non-strict first (the Python forward runs on fake tensors); a
forward that turns the batch size into a Python int (``len(x)``, as :class:`~ssl_ecg.models.PatchTransformer1d`
does to expand its [CLS] token) specialises the batch there, so that case is captured again in strict mode, where
TorchDynamo keeps ``len(x)`` symbolic. Every registered encoder (``clocs``, ``resnet1d``, ``transformer``,
``mobilenet1d``, ``mobilenetv2_1d``) so exports with a dynamic batch (tested). The TorchScript exporter
(``dynamo=False``) is not used: it is deprecated and bakes ``len(x)`` in as a constant. Any failure of the
capture, the conversion or an ONNX Runtime check run is one :class:`~ssl_ecg.errors.ConfigError` naming the file
and the model. Weights are stored inside the ``.onnx`` file (``external_data=False``): our encoders are far below
ONNX's 2 GB protobuf limit, and one file is easier to move than two.

Check. Every export is run with ONNX Runtime (``CPUExecutionProvider``) on seeded random inputs and, where given,
real windows, at a batch size other than the example's (so the dynamic axis is exercised), and compared with
PyTorch. The bound is ``max |onnx - torch| <= ONNX_ATOL + ONNX_RTOL * max |torch|``: both run float32, but ONNX
Runtime's convolution and GEMM kernels (MLAS) sum in another order than PyTorch's, so each output differs by a few
float32 roundings (relative ~1e-7 per operation, growing roughly with the square root of the reduction length over
a dozen layers). Measured differences on the registered encoders are ~1e-7 relative; the 1e-4 relative bound
leaves a thousandfold margin for that, while a wrong graph (a dropped BatchNorm, training-mode dropout, a frozen
batch size) changes outputs at the 1e-2-1e0 scale and fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ssl_ecg.checkpoint import MODEL_CARD_FILE, SAFETENSORS_FILE
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.embed import state_dict_hash
from ssl_ecg.evaluate.head import ProbeModel, save_probe_head

__all__ = ["ExportReport", "export_onnx", "export_safetensors", "model_card", "load_onnx_encoder", "OnnxEncoder",
           "onnx_session", "pool_hash", "confined", "RecipeProbe", "fit_recipe_probe", "export_encoder", "ONNX_RTOL",
           "ONNX_ATOL", "CARD_VERSION", "CARD_METADATA_KEY", "PROBE_HEAD_FILE", "ENCODER_JSON_FILE",
           "NORMALIZATION_RULES", "input_preprocessing", "copy_encoder_json"]

#: Relative and absolute parts of the ONNX-vs-PyTorch bound (see the module docstring for why).
ONNX_RTOL = 1e-4
ONNX_ATOL = 1e-5
#: Version of ``model_card.json`` (bumped when a field changes meaning).
CARD_VERSION = 1
#: ONNX ``metadata_props`` key holding the model card as JSON, so an ``.onnx`` file describes itself.
CARD_METADATA_KEY = "ssl_ecg.model_card"
#: The probe head beside an exported encoder (safetensors, with its JSON card).
PROBE_HEAD_FILE = "probe_head.safetensors"
#: The source's full ``encoder.json`` (config, pretraining recipe, provenance), copied beside the exported files so
#: the export folder can go back into an evaluation recipe (its provenance is checked as the run folder's).
ENCODER_JSON_FILE = "encoder.json"


def confined(folder: str | os.PathLike, name: str) -> Path:
    """``folder/name`` for a fixed output file name, refusing a path that leaves ``folder`` (through ``..`` or an
    existing link).

    Raises:
        ConfigError: the resolved path is outside ``folder``.
    """
    folder = Path(folder)
    path = folder / name
    if Path(name).name != name or path.resolve().parent != folder.resolve():
        raise ConfigError(f"{path}: resolves to {path.resolve()}, outside the output folder {folder.resolve()}; "
                          f"expected a file directly inside it")
    return path


def pool_hash(pool_patients: Sequence[str]) -> str:
    """SHA-256 of the sorted pretraining pool patient keys (``dataset:patient_id``), newline-joined.

    A hash of the patients rather than of the cache keys: the same pool cached at another rate or path hashes the
    same, and any other pool hashes differently.
    """
    return hashlib.sha256("\n".join(sorted(map(str, pool_patients))).encode()).hexdigest()


def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: expected a JSON object ({exc})") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def _cache_leads(cache_dir: str | None, cache_keys: Sequence[str]) -> list[str] | None:
    """Lead names from the manifest of the pretraining cache, when that cache is still on this machine."""
    if not cache_dir or len(cache_keys) != 1:
        return None
    for manifest in sorted(Path(cache_dir).glob(f"*-{cache_keys[0][:16]}/manifest.json")):
        try:
            meta = json.loads(manifest.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(meta, dict) and meta.get("key") == cache_keys[0] and isinstance(meta.get("leads"), list):
            return [str(lead) for lead in meta["leads"]]
    return None


#: What each ``normalization`` of :func:`ssl_ecg.data.preprocess.normalize` does to a record, for the card.
NORMALIZATION_RULES = {
    "record": "per record: each lead's mean removed, then every lead divided by the whole record's standard "
              "deviation (one z-score per record; amplitude ratios between leads kept); unitless",
    "lead": "per lead: each lead of the record z-scored on its own (mean removed, divided by its standard "
            "deviation); unitless",
    "none": "none: millivolts as read",
}


def input_preprocessing(normalization: str | None, band: Sequence[float | None] | None,
                        known: bool = True) -> dict[str, Any]:
    """The card's description of how a record must be prepared before it is cut into windows.

    The cache (:func:`ssl_ecg.data.preprocess.preprocess`) resamples each whole record to ``fs``, band-passes it
    (zero-phase Butterworth of order 4, :func:`~ssl_ecg.data.preprocess.bandpass`) and normalises it; the encoder
    only ever saw windows of records prepared so. Units are millivolts only when ``normalization`` is ``none``.

    Args:
        normalization: ``record``, ``lead``, ``none``, or None when unknown.
        band: ``(highpass Hz or None, lowpass Hz or None)`` or None for no filter.
        known: False when no recipe says how the data were prepared (every field None).

    Returns:
        ``{"normalization", "normalization_rule", "units", "band": {"highpass_hz", "lowpass_hz", "filter"} or
        None, "applied_to"}``.
    """
    if not known or normalization is None:
        return {"normalization": None, "normalization_rule": "unknown (no recipe records it)", "units": None,
                "band": None, "applied_to": None}
    low, high = (None, None) if band is None else (band[0], band[1])
    filt = None if low is None and high is None else {
        "highpass_hz": None if low is None else float(low), "lowpass_hz": None if high is None else float(high),
        "filter": "zero-phase Butterworth, order 4 (scipy.signal.sosfiltfilt)"}
    return {"normalization": normalization,
            "normalization_rule": NORMALIZATION_RULES.get(normalization, f"{normalization} (unknown rule)"),
            "units": "mV" if normalization == "none" else "unitless (normalised)", "band": filt,
            "applied_to": "each whole record after resampling to fs (band-pass first, then normalisation), "
                          "before it is cut into windows"}


def model_card(encoder: nn.Module, source: str | os.PathLike | None = None, *, fs: float | None = None,
               window: int | None = None, leads: Sequence[str] | None = None, per_lead: bool | None = None,
               method: str | None = None, data: Any = None) -> dict[str, Any]:
    """What a user of the exported encoder needs to feed it, and where it came from.

    Fields: ``encoder`` (the architecture config), ``n_parameters``, ``weights_sha256`` (of the full state dict,
    :func:`~ssl_ecg.evaluate.embed.state_dict_hash`), ``input`` (``fs``, ``window_samples``, ``window_seconds``,
    ``leads``, ``n_leads``, ``per_lead``, ``in_channels``, the preprocessing of :func:`input_preprocessing`:
    ``normalization``, ``normalization_rule``, ``units``, ``band``, ``applied_to``; and ``preprocessing_from``:
    which recipe it was read from), ``pretraining`` (``method``, ``datasets``, ``pool_hash`` = :func:`pool_hash`
    of the pool patients, ``pool_patients`` count, ``cache_keys``, ``split_hash``, ``label_patients`` count),
    ``ssl_ecg_version``, and ``onnx`` / ``probe`` (filled by the export).

    Args:
        encoder: the encoder (with its ``config``).
        source: the ``encoder.pt`` / run folder it was loaded from; its ``encoder.json`` supplies the pretraining
            recipe (rate, leads, window, normalisation, band-pass, method) and provenance. None: only the explicit
            arguments.
        fs, window, leads, per_lead, method: override what ``source`` says (e.g. from an evaluation recipe).
        data: the :class:`~ssl_ecg.data.prepare.DataSpec` of the data the export was checked and its probe fitted
            on (an evaluation recipe's): its normalisation and band-pass (and ``fs`` unless given) replace the
            pretraining recipe's.

    Raises:
        ConfigError: the encoder has no config dict.
    """
    from ssl_ecg import __version__

    config = getattr(encoder, "config", None)
    if not isinstance(config, dict):
        raise ConfigError(f"encoder {type(encoder).__name__}: has no config dict; expected an ssl-ecg encoder "
                          "(ssl_ecg.models.build_encoder) so the card can say how to rebuild it")
    meta: dict[str, Any] = {}
    if source is not None:
        path = Path(source)
        path = path / "encoder.json" if path.is_dir() else path.with_suffix(".json")
        if path.is_file():
            meta = _read_json(path)
    pre = meta.get("pretraining") or {}
    recipe = pre.get("config") or {}
    prov = meta.get("provenance") or {}
    if fs is None:
        fs = data.fs if data is not None else recipe.get("fs")
    if data is not None:
        prep, prep_from = input_preprocessing(data.normalization, data.band), "evaluation recipe"
    elif "normalization" in recipe:
        prep, prep_from = input_preprocessing(recipe["normalization"], recipe.get("band")), "pretraining recipe"
    else:
        prep, prep_from = input_preprocessing(None, None, known=False), None
    in_channels = config.get("in_channels")
    per_lead = per_lead if per_lead is not None else in_channels == 1
    if window is None:
        window = config.get("input_len") or (pre.get("data_needs") or {}).get("input_samples")
        if window is None and fs and recipe.get("segment_len"):
            window = int(round(recipe["segment_len"] * fs))
    leads = list(leads) if leads is not None else (recipe.get("leads") or _cache_leads(recipe.get("cache_dir"),
                                                                                      prov.get("cache_keys") or []))
    n_leads = len(leads) if leads else (None if per_lead else in_channels)
    return {
        "card_version": CARD_VERSION,
        "ssl_ecg_version": __version__,
        "encoder": dict(config),
        "n_parameters": int(sum(p.numel() for p in encoder.parameters())),
        "weights_sha256": state_dict_hash(encoder),
        "input": {"fs": fs, "window_samples": window,
                  "window_seconds": (window / fs) if window and fs else None,
                  "leads": leads, "n_leads": n_leads, "per_lead": bool(per_lead), "in_channels": in_channels,
                  **prep, "preprocessing_from": prep_from},
        "pretraining": {"method": method or meta.get("method"), "datasets": prov.get("datasets"),
                        "pool_hash": pool_hash(prov["pool_patients"]) if prov.get("pool_patients") else None,
                        "pool_hash_of": "SHA-256 of the sorted pool patient keys (dataset:patient_id), one a line",
                        "pool_patients": len(prov.get("pool_patients") or []) or None,
                        "cache_keys": prov.get("cache_keys"),
                        "split_hash": (prov.get("split") or {}).get("hash") or pre.get("split_hash"),
                        "label_patients": len(prov["label_patients"]) if "label_patients" in prov else None,
                        "source": str(source) if source is not None else None},
        "onnx": None,
        "probe": None,
    }


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how closely ONNX Runtime reproduces PyTorch.

    Attributes:
        path: the ``.onnx`` file; bytes: its size.
        exporter: which torch exporter and opset.
        input_name, output_name: graph input and output names.
        input_shape: ``["batch", C, S]``; output_shape: ``["batch", D]``.
        max_abs_diff_random: max |ONNX - PyTorch| on seeded standard-normal inputs.
        max_abs_diff_real: the same on the real windows given (None when none were).
        bound: the largest difference allowed (``ONNX_ATOL + ONNX_RTOL * max |PyTorch|``, the smaller of the two
            input sets' bounds).
    """

    path: str
    bytes: int
    exporter: str
    input_name: str
    output_name: str
    input_shape: list
    output_shape: list
    max_abs_diff_random: float
    max_abs_diff_real: float | None
    bound: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def onnx_session(path: str | os.PathLike, threads: int | None = 1):
    """An ONNX Runtime CPU session (``threads`` intra-op threads, one inter-op; None: ONNX Runtime's default).

    Raises:
        ConfigError: the file is missing or is not a model ONNX Runtime can load.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: ONNX file not found")
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
    opts.log_severity_level = 3  # errors only: the one-line ConfigError below says what went wrong
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises InvalidProtobuf, Fail, InvalidGraph, NoSuchFile, ...
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {reason}); expected an .onnx "
                          "file written by ssl-ecg export") from None


def _example_check(model: nn.Module, example_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in example_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"example_shape: expected (N, C, S) with positive sizes, got {tuple(example_shape)}")
    try:
        with torch.no_grad():
            model(torch.zeros(shape))
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"example_shape {shape}: the model refuses an input of this shape ({exc}); expected "
                          "(N, channels or leads, window samples) as the model was built for") from None
    return shape


def _model_name(model: nn.Module) -> str:
    """How messages name a model: the encoder's registry name (``probe on <name>`` for a probe model)."""
    if isinstance(model, ProbeModel):
        return f"probe on {_model_name(model.features.encoder)}"
    config = getattr(model, "config", None)
    return str(config.get("name")) if isinstance(config, dict) and config.get("name") else type(model).__name__


def _one_line(exc: BaseException, limit: int = 240) -> str:
    return f"{type(exc).__name__}: " + " ".join(str(exc).split())[:limit]


def _capture(model: nn.Module, shape: tuple[int, ...], path: Path, input_name: str, output_name: str):
    """``(ONNX program, exporter description)`` of ``model`` with a dynamic batch axis (see the module docstring).

    Raises:
        ConfigError: neither non-strict nor strict ``torch.export`` keeps the batch dynamic, or the conversion
            to ONNX fails; names the file and the model.
    """
    from torch._dynamo.exc import UserError

    # torch.export specialises a dynamic dimension whose example size is 0 or 1: trace at batch >= 2
    args, dims = (torch.zeros(max(2, shape[0]), *shape[1:]),), ({0: torch.export.Dim("batch")},)
    with warnings.catch_warnings():  # torch.export's notes on the graph it traces are not the user's concern
        warnings.simplefilter("ignore")
        try:
            try:
                program, mode = torch.export.export(model, args, dynamic_shapes=dims, strict=False), "non-strict"
            except UserError:  # the batch was specialised (e.g. len(x)): TorchDynamo keeps it symbolic
                program, mode = torch.export.export(model, args, dynamic_shapes=dims, strict=True), "strict"
            onnx_program = torch.onnx.export(program, args, dynamo=True, verbose=False, input_names=[input_name],
                                             output_names=[output_name])
        except Exception as exc:  # torch.export and the ONNX converter raise many types
            raise ConfigError(f"{path}: {_model_name(model)} could not be exported to ONNX with a dynamic batch "
                              f"({_one_line(exc)}); expected a model torch.export can capture") from None
    return onnx_program, f"torch.export.export(strict={mode == 'strict'}) + torch.onnx.export(dynamo=True)"


def _run_session(session, path: Path, model: nn.Module, output_name: str, input_name: str, x: np.ndarray,
                 what: str) -> np.ndarray:
    """``session`` on ``x``, any ONNX Runtime failure a one-line :class:`ConfigError` naming the file and model."""
    try:
        return session.run([output_name], {input_name: x})[0]
    except Exception as exc:  # onnxruntime's InvalidArgument, Fail, RuntimeException, ...
        raise ConfigError(f"{path}: ONNX Runtime failed on the {what} inputs of shape {x.shape} for "
                          f"{_model_name(model)} ({_one_line(exc)}); expected the exported graph to run at any "
                          "batch size") from None


def export_onnx(model: nn.Module, path: str | os.PathLike, example_shape: Sequence[int], *,
                input_name: str = "x", output_name: str | None = None, real_inputs: np.ndarray | None = None,
                card: dict | None = None, seed: int = 0, n_check: int = 3) -> ExportReport:
    """Export an encoder ((N, C, S) -> (N, E)) or a :class:`~ssl_ecg.evaluate.head.ProbeModel` ((N, L, S) ->
    (N, K) logits) to ONNX with a dynamic batch axis, validate it, and check it against PyTorch.

    Steps: ``torch.export`` with a dynamic batch and ``torch.onnx.export(dynamo=True)`` in eval mode (the model's
    training flag is restored; see the module docstring for the strict-mode retry);
    ``onnx.checker.check_model(full_check=True)`` (structure and shape inference); the model card, if given, goes
    into the file's ``metadata_props`` under :data:`CARD_METADATA_KEY`; then ONNX Runtime runs ``n_check``
    seeded standard-normal inputs and ``real_inputs`` (if given) and the results are compared with PyTorch within
    ``ONNX_ATOL + ONNX_RTOL * max |PyTorch|`` (see the module docstring).

    Args:
        model: the module; path: the ``.onnx`` file to write (its folder is created).
        example_shape: (N, C, S) of one input used for tracing.
        input_name, output_name: graph names (output default: ``logits`` for a probe, ``z`` for an encoder).
        real_inputs: (M, C, S) float32 windows to check on too (e.g. training windows).
        card: the model card to embed (see :func:`model_card`).
        seed: seed of the random check inputs; n_check: their batch size (other than N, so the dynamic axis is used).

    Returns:
        :class:`ExportReport`.

    Raises:
        ConfigError: a bad ``example_shape`` or ``real_inputs`` (a shape other than the example's, NaN or inf);
            the export fails; ONNX Runtime fails on a check input or its outputs differ by more than the bound.
    """
    import onnx

    path = Path(path)
    output_name = output_name or ("logits" if isinstance(model, ProbeModel) else "z")
    was_training = model.training
    model.eval()
    try:
        shape = _example_check(model, example_shape)
        if real_inputs is not None:
            real_inputs = np.asarray(real_inputs)
            if real_inputs.ndim != 3 or real_inputs.shape[1:] != shape[1:] or not len(real_inputs):
                raise ConfigError(f"real_inputs: shape {real_inputs.shape}; expected (M >= 1, {shape[1]}, {shape[2]}) "
                                  "like example_shape")
            bad = ~np.isfinite(real_inputs).all(axis=(1, 2))
            if bad.any():
                raise ConfigError(f"real_inputs: windows {np.flatnonzero(bad)[:5].tolist()} ({int(bad.sum())} of "
                                  f"{len(real_inputs)}) hold NaN or inf; expected finite signals to check the export "
                                  "on")
        path.parent.mkdir(parents=True, exist_ok=True)
        program, exporter = _capture(model, shape, path, input_name, output_name)
        proto = program.model_proto
        if card is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = CARD_METADATA_KEY, json.dumps(card, default=str)
        onnx.save_model(proto, str(path))
        onnx.checker.check_model(str(path), full_check=True)
        session = onnx_session(path)
        rng = np.random.default_rng(seed)
        batch = n_check if n_check not in (shape[0], max(2, shape[0])) else max(2, shape[0]) + 1
        checks = {"random": rng.standard_normal((batch, *shape[1:])).astype(np.float32),
                  "real": None if real_inputs is None else real_inputs.astype(np.float32)}
        diffs, bound = {}, np.inf
        for name, x in checks.items():
            if x is None:
                diffs[name] = None
                continue
            with torch.no_grad():
                ref = model(torch.from_numpy(x)).numpy()
            got = _run_session(session, path, model, output_name, input_name, x, name)
            diffs[name] = float(np.abs(got.astype(np.float64) - ref).max())
            allowed = ONNX_ATOL + ONNX_RTOL * float(np.abs(ref).max())
            bound = min(bound, allowed)
            if not diffs[name] <= allowed:
                raise ConfigError(f"{path}: ONNX Runtime differs from PyTorch by {diffs[name]:.3g} on the {name} "
                                  f"inputs; expected at most {allowed:.3g} ({ONNX_ATOL:g} + {ONNX_RTOL:g} x max|out|)")
    finally:
        model.train(was_training)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    out_dim = session.get_outputs()[0].shape[-1]
    return ExportReport(path=str(path), bytes=path.stat().st_size,
                        exporter=f"{exporter}, torch {torch.__version__}, opset {opset}",
                        input_name=input_name, output_name=output_name, input_shape=["batch", *shape[1:]],
                        output_shape=["batch", out_dim], max_abs_diff_random=diffs["random"],
                        max_abs_diff_real=diffs["real"], bound=float(bound))


def export_safetensors(encoder: nn.Module, folder: str | os.PathLike, card: dict | None = None,
                       probe: ProbeModel | None = None, probe_meta: dict | None = None) -> dict[str, Path]:
    """Write ``encoder.safetensors`` (the full state dict, BatchNorm buffers included; the architecture config in
    the header metadata) and ``model_card.json`` into ``folder``; with ``probe``, also its head
    (``probe_head.safetensors`` + ``.json``, :func:`~ssl_ecg.evaluate.head.save_probe_head`) and the card's
    ``probe`` block (``probe_meta``: task, fraction, seed, label-patient count, ...).

    :func:`ssl_ecg.load_encoder` reads the result back (the folder or the ``.safetensors`` file) with
    bit-identical outputs; nothing is pickled.

    Returns:
        name -> path of every file written.

    Raises:
        ConfigError: the encoder has no config, or ``probe`` wraps another encoder.
    """
    from safetensors.torch import save_file

    card = dict(card) if card is not None else model_card(encoder)
    config = getattr(encoder, "config", None)
    if not isinstance(config, dict):
        raise ConfigError(f"encoder {type(encoder).__name__}: has no config dict; expected an ssl-ecg encoder")
    if probe is not None and probe.features.encoder is not encoder:
        raise ConfigError("probe: wraps another encoder than the one exported; expected the probe fitted on it")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = confined(folder, SAFETENSORS_FILE)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(weights), metadata={"encoder": json.dumps(config), "format": "ssl-ecg encoder"})
    written = {"weights": weights}
    if probe is not None:
        head = save_probe_head(probe, confined(folder, PROBE_HEAD_FILE), meta=probe_meta)
        written["probe_head"] = head
        card["probe"] = {"kind": probe.kind, "classes": probe.classes, "n_outputs": probe.n_outputs,
                         "lead_features": probe.features.lead_features, "head": PROBE_HEAD_FILE, **(probe_meta or {})}
    card_path = confined(folder, MODEL_CARD_FILE)
    card_path.write_text(json.dumps(card, indent=2, default=str))
    written["card"] = card_path
    return written


class OnnxEncoder:
    """An exported ONNX model run by ONNX Runtime on the CPU: numpy float32 (N, C, S) -> (N, E) embeddings, or
    (N, K) logits for an encoder+probe export.

    Inference only: no gradients, no training, no device choice; the PyTorch encoder
    (:func:`ssl_ecg.load_encoder`) is the one to fine-tune.

    Attributes:
        path: the ``.onnx`` file. card: its embedded model card ({} when it has none).
        input_shape: (None, C, S), None standing for the dynamic batch axis.
        input_name, output_name: the graph's names.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = 1):
        self.path = Path(path)
        self.session = onnx_session(self.path, threads)
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.card = json.loads(props[CARD_METADATA_KEY]) if CARD_METADATA_KEY in props else {}
        except json.JSONDecodeError:
            raise ConfigError(f"{self.path}: metadata {CARD_METADATA_KEY!r} is not JSON; expected the model card "
                              "written by ssl-ecg export") from None
        if len(self.input_shape) != 3:
            raise ConfigError(f"{self.path}: input {self.input_name!r} has shape {inp.shape}; expected (N, C, S)")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the model on ``x`` (N, C, S) float32; returns float32 (N, E) or (N, K).

        Raises:
            ConfigError: ``x`` is not a float32 numpy array of shape (N, C, S) with this model's C and S, holds NaN
                or inf, or ONNX Runtime fails on it.
        """
        _, channels, samples = self.input_shape
        if not isinstance(x, np.ndarray):
            raise ConfigError(f"x: got {type(x).__name__}; expected a numpy float32 array (N, {channels}, {samples})")
        if x.dtype != np.float32:
            raise ConfigError(f"x: dtype {x.dtype}; expected float32 (use x.astype(np.float32))")
        if x.ndim != 3 or len(x) == 0:
            raise ConfigError(f"x: shape {x.shape}; expected (N >= 1, {channels}, {samples})")
        info = self.card.get("input") or {}
        if channels is not None and x.shape[1] != channels:
            leads = info.get("leads")
            what = (f"{channels} lead(s) in order {leads}" if leads and channels == len(leads)
                    else f"{channels} channel(s)" + (" (one lead at a time)" if channels == 1 else ""))
            raise ConfigError(f"x: {x.shape[1]} leads/channels (shape {x.shape}); expected {what}")
        if samples is not None and x.shape[2] != samples:
            at = (f" ({info['window_seconds']:g} s at {info['fs']:g} Hz)"
                  if info.get("window_seconds") and info.get("fs") else "")
            raise ConfigError(f"x: {x.shape[2]} samples per window (shape {x.shape}); expected {samples}{at}")
        bad = ~np.isfinite(x).all(axis=(1, 2))
        if bad.any():  # ONNX Runtime would return NaN embeddings without a word
            raise ConfigError(f"x: windows {np.flatnonzero(bad)[:5].tolist()} ({int(bad.sum())} of {len(x)}) hold NaN "
                              "or inf; expected finite signals")
        try:
            return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x)})[0]
        except Exception as exc:  # onnxruntime's InvalidArgument, Fail, RuntimeException, ...
            raise ConfigError(f"{self.path}: ONNX Runtime failed on x of shape {x.shape} ({_one_line(exc)})") from None


def load_onnx_encoder(path: str | os.PathLike, threads: int | None = 1) -> OnnxEncoder:
    """Open an exported ``.onnx`` file (or a folder holding ``encoder.onnx``) for inference.

    Args:
        path: the file or folder.
        threads: ONNX Runtime intra-op threads (None: its default).

    Raises:
        ConfigError: the file is missing, corrupt, or not an (N, C, S) model.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "encoder.onnx"
    return OnnxEncoder(path, threads)


def copy_encoder_json(encoder: nn.Module, source: str | os.PathLike, out: str | os.PathLike) -> Path | None:
    """Copy the source's ``encoder.json`` (config, pretraining recipe and full provenance) into ``out`` as
    :data:`ENCODER_JSON_FILE`, so :func:`~ssl_ecg.evaluate.provenance.read_provenance` and an evaluation recipe
    read the exported folder as they read the run folder. Returns the path, or None when the source has none
    (third-party weights: the export then has unknown provenance, as its source had).

    Raises:
        ConfigError: the source's ``encoder.json`` is not a JSON object or describes another architecture than
            ``encoder``'s config.
    """
    from ssl_ecg.checkpoint import _config_path

    src = _config_path(source)
    if not src.is_file():
        return None
    meta = _read_json(src)
    if meta.get("encoder") != encoder.config:
        raise ConfigError(f"{src}: its 'encoder' config {meta.get('encoder')} differs from the exported encoder's "
                          f"{encoder.config}; expected the encoder.json written with these weights")
    path = confined(out, ENCODER_JSON_FILE)
    if src.resolve() != path.resolve():
        path.write_text(json.dumps(meta, indent=2, default=str))
    return path


def _weights_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return (path / "encoder.pt" if path.is_dir() else path).resolve()


@dataclass
class RecipeProbe:
    """An encoder of an evaluation recipe with its probe fitted on the recipe's data (see :func:`fit_recipe_probe`).

    Attributes:
        arm, encoder_path: the recipe arm and its checkpoint.
        inputs: the recipe's :class:`~ssl_ecg.evaluate.runner.EvalInputs` (signals, table, split, checks).
        fitted: the :class:`~ssl_ecg.evaluate.head.FittedProbe`.
        card: the model card (input settings from the recipe; ``probe`` block filled).
        probe_meta: task, fraction, seed, label-patient count, chosen C, validation/test AUROC, split hash.
    """

    arm: str
    encoder_path: str
    inputs: Any
    fitted: Any
    card: dict
    probe_meta: dict


def fit_recipe_probe(recipe: str | os.PathLike, task: str, fraction: float = 1.0, seed: int = 0,
                     encoder: str | os.PathLike | None = None, progress: bool = False) -> RecipeProbe:
    """Fit the logistic probe of ``task`` on one encoder of an evaluation recipe, through
    :func:`~ssl_ecg.evaluate.runner.evaluation_inputs` (so every provenance check of ``ssl-ecg curve`` applies:
    no test patient in the pretraining pool, label use, preprocessing).

    Args:
        recipe: an :class:`~ssl_ecg.evaluate.runner.EvalConfig` YAML file.
        task, fraction, seed: the task column and the seeded label draw.
        encoder: which of the recipe's ``encoders`` (its checkpoint or run folder); None: the first.

    Raises:
        ConfigError: the recipe is missing or bad, it names no encoder, ``encoder`` is not among its encoders, or
            ``task`` is not a column.
        LeakageError: a provenance check fails (unless the recipe allows it).
    """
    from ssl_ecg.evaluate.challenge import challenge_year
    from ssl_ecg.evaluate.head import fit_probe_model
    from ssl_ecg.evaluate.runner import EvalConfig, evaluation_inputs
    from ssl_ecg.recipe import load_recipe

    cfg = load_recipe(EvalConfig, recipe, {"random_init": False, "supervised": False, "fractions": [float(fraction)],
                                           "tasks": [task]})
    if not cfg.encoders:
        raise ConfigError(f"{recipe}: encoders is empty; expected the encoder to export (encoders: {{arm: run}})")
    if encoder is None:
        arm = next(iter(cfg.encoders))
    else:
        want = _weights_path(encoder)
        arms = [a for a, p in cfg.encoders.items() if _weights_path(p) == want]
        if not arms:
            raise ConfigError(f"{encoder}: not among the encoders of {recipe} ({cfg.encoders}); expected one of them "
                              "(the probe is fitted under that recipe's provenance checks)")
        arm = arms[0]
    cfg.encoders = {arm: cfg.encoders[arm]}
    inputs = evaluation_inputs(cfg, progress=progress)
    if task not in inputs.table.columns:
        raise ConfigError(f"task: {task!r} is not a column of {cfg.dataset} (columns: {sorted(inputs.table.columns)})")
    spec = inputs.prepared.spec
    fitted = fit_probe_model(inputs.arms[arm], inputs.signals, inputs.table, inputs.splits, task, inputs.window,
                             inputs.per_lead[arm], fraction=fraction, seed=seed, lead_features=cfg.lead_features,
                             challenge_year=challenge_year("+".join(spec.datasets)))
    manifest = getattr(inputs.prepared.cache, "manifest", None) or {}
    leads = manifest.get("leads") or cfg.leads
    card = model_card(inputs.arms[arm], cfg.encoders[arm], fs=cfg.fs, window=inputs.window, leads=leads,
                      per_lead=inputs.per_lead[arm], data=spec)
    card["input"]["differs_from_pretraining"] = _differs_from_pretraining(cfg.encoders[arm], spec, leads)
    res = fitted.result
    meta = {"task": task, "fraction": float(fraction), "seed": int(seed), "recipe": str(recipe), "arm": arm,
            "label_patients": len(fitted.label_patients), "train_records": int(len(fitted.rows["train"])),
            "test_records": int(len(fitted.rows["test"])), "split_hash": inputs.prepared.split.hash,
            "setting": res.setting, "val_auroc": float(res.val_auroc), "test_auroc": float(res.test_auroc)}
    card["probe"] = {"kind": fitted.model.kind, "classes": fitted.model.classes, "n_outputs": fitted.model.n_outputs,
                     **meta}
    return RecipeProbe(arm, str(cfg.encoders[arm]), inputs, fitted, card, meta)


def _differs_from_pretraining(source: str | os.PathLike, spec: Any, leads: Sequence[str] | None) -> dict:
    """Where the evaluation recipe's data settings (``fs``, ``leads``, ``normalization``, ``band``) differ from
    the encoder's pretraining recipe: ``{key: {"evaluation", "pretraining"}}`` ({} when they agree or the
    pretraining recipe is unknown). A difference warns (``UserWarning``): the card then describes the evaluation's
    input, which the probe was fitted on, and the encoder learned on other input."""
    from ssl_ecg.data.record import canonical_lead
    from ssl_ecg.evaluate.provenance import pretraining_data

    theirs = pretraining_data(source) or {}

    def norm(key: str, value: Any) -> Any:
        if value is None:
            return None
        if key == "leads":
            return [canonical_lead(str(v)) for v in value]
        if key == "band":
            return [None if v is None else float(v) for v in value]
        return float(value) if key == "fs" else value

    ours = {"fs": spec.fs, "leads": leads, "normalization": spec.normalization, "band": spec.band}
    differs = {k: {"evaluation": norm(k, ours[k]), "pretraining": norm(k, theirs[k])} for k in ours
               if k in theirs and theirs[k] is not None and norm(k, ours[k]) != norm(k, theirs[k])}
    if differs:
        warnings.warn(f"{source}: the evaluation recipe's data settings differ from its pretraining ones ({differs}); "
                      "the model card describes the evaluation's input", UserWarning, stacklevel=3)
    return differs


def _training_windows(rp: RecipeProbe, n: int = 16, seed: int = 0) -> np.ndarray:
    """(n, L, S) windows of training records (seeded), to check an export on real data."""
    from ssl_ecg.deploy.quantize import calibration_windows

    pairs = calibration_windows(rp.inputs.signals, rp.fitted.rows["train"], rp.inputs.window, n, seed)
    w = rp.inputs.window
    return np.stack([rp.inputs.signals[r, :, k * w:(k + 1) * w] for r, k in pairs]).astype(np.float32)


def export_encoder(source: str | os.PathLike, out: str | os.PathLike, *, onnx: bool = True, safetensors: bool = True,
                   probe_recipe: str | os.PathLike | None = None, task: str | None = None, fraction: float = 1.0,
                   seed: int = 0) -> dict[str, Any]:
    """``ssl-ecg export``: an encoder (and optionally its probe, fitted through an evaluation recipe) as ONNX
    and/or safetensors files with a model card, all inside ``out``.

    Files: ``encoder.onnx`` ((N, C, S) -> (N, E)); with a probe, ``probe.onnx`` ((N, L, S) -> (N, K) logits) and
    ``probe_head.safetensors`` + ``.json``; ``encoder.safetensors``; ``model_card.json`` (written in every case:
    the card records the ONNX differences) and ``encoder.json`` (the source's, with the full provenance, when it
    has one: the safetensors folder then reads as an encoder of an evaluation recipe, its provenance checked).

    Args:
        source: the encoder checkpoint or run folder.
        out: the output folder.
        onnx, safetensors: which forms to write.
        probe_recipe, task, fraction, seed: fit the probe of ``task`` through this evaluation recipe
            (:func:`fit_recipe_probe`; ``source`` must be one of its encoders).

    Returns:
        ``{"files": {name: {"path", "bytes"}}, "onnx": {name: ExportReport dict}, "card": the card}``.

    Raises:
        ConfigError: no form chosen; ``task`` without a recipe (or the reverse); an encoder without a config or
            whose window is unknown; anything :func:`fit_recipe_probe` or :func:`export_onnx` refuses.
    """
    from ssl_ecg.checkpoint import load_encoder

    if not (onnx or safetensors):
        raise ConfigError("export: expected --onnx and/or --safetensors (nothing to write)")
    if (probe_recipe is None) != (task is None):
        raise ConfigError("--probe/--task: expected both (a probe is fitted on a task through an evaluation recipe) "
                          "or neither")
    out = Path(out)
    if probe_recipe is not None:
        rp = fit_recipe_probe(probe_recipe, task, fraction, seed, encoder=source)
        encoder, card, probe = rp.fitted.model.features.encoder, rp.card, rp.fitted.model
        real = _training_windows(rp, seed=seed)
    else:
        encoder, probe, real = load_encoder(source), None, None
        card = model_card(encoder, source)
    info = card["input"]
    window = info["window_samples"]
    if not window:
        raise ConfigError(f"{source}: the encoder's window is unknown (no input_len in its config and no pretraining "
                          "recipe in encoder.json); expected --probe RECIPE, whose window sets it")
    out.mkdir(parents=True, exist_ok=True)
    provenance_file = copy_encoder_json(encoder, rp.encoder_path if probe is not None else source, out)
    card["pretraining"]["provenance_file"] = provenance_file.name if provenance_file is not None else None
    reports: dict[str, ExportReport] = {}
    if onnx:
        channels = info["in_channels"] or (len(info["leads"]) if info["leads"] else None)
        enc_real = None
        if real is not None:
            enc_real = real.reshape(-1, 1, window)[:64] if info["per_lead"] else real
        reports["encoder"] = export_onnx(encoder, confined(out, "encoder.onnx"), (1, channels, window),
                                         real_inputs=enc_real, card=card, seed=seed)
        if probe is not None:
            reports["probe"] = export_onnx(probe, confined(out, "probe.onnx"), (1, real.shape[1], window),
                                           real_inputs=real, card=card, seed=seed)
        card["onnx"] = {name: {k: r.to_dict()[k] for k in ("max_abs_diff_random", "max_abs_diff_real", "bound",
                                                            "exporter", "input_shape", "output_shape")}
                        for name, r in reports.items()}
        for name, r in reports.items():
            card["onnx"][name]["file"] = Path(r.path).name
    written: dict[str, Path] = {name: Path(r.path) for name, r in reports.items()}
    if provenance_file is not None:
        written["encoder_json"] = provenance_file
    if safetensors:
        files = export_safetensors(encoder, out, card, probe=probe, probe_meta=rp.probe_meta if probe else None)
        written.update({"safetensors": files["weights"], "card": files["card"]})
        if "probe_head" in files:
            written["probe_head"] = files["probe_head"]
    else:
        path = confined(out, MODEL_CARD_FILE)
        path.write_text(json.dumps(card, indent=2, default=str))
        written["card"] = path
    return {"files": {k: {"path": str(p), "bytes": p.stat().st_size} for k, p in written.items()},
            "onnx": {k: r.to_dict() for k, r in reports.items()}, "card": card}
