"""INT8 post-training static quantisation of an encoder with its probe, through ONNX Runtime.

``torch.ao.quantization`` is deprecated in torch 2.14, so the FP32 ONNX export of the
:class:`~ssl_ecg.evaluate.head.ProbeModel` (:func:`~ssl_ecg.deploy.export.export_onnx`) is quantised with
``onnxruntime.quantization.quantize_static`` as the ONNX Runtime documentation recommends: first
``quant_pre_process`` (symbolic shape inference and graph optimisation), then static quantisation in the QDQ format
(QuantizeLinear/DequantizeLinear pairs around each quantised operator) with INT8 weights and activations and
MinMax calibration. Activation ranges are calibrated on windows of **training** patients only (the probe's training
draw), so no validation or test record informs the quantised model.

The report compares, on the same test records: PyTorch, the FP32 ONNX model and the INT8 model; test AUROC of the
record scores (mean of the record's window logits, then the probe's output function, as
:meth:`~ssl_ecg.evaluate.head.ProbeModel.record_scores`), file size, and CPU latency per record with one protocol
for all three: one call per record on a batch of that record's windows, one intra-op thread
(``torch.set_num_threads(1)`` for PyTorch, ``intra_op_num_threads=1`` for ONNX Runtime), ``warmup`` untimed calls
first, the median over the test records.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_ecg.deploy.export import confined, export_onnx, onnx_session
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.embed import tile_windows
from ssl_ecg.evaluate.head import FittedProbe
from ssl_ecg.evaluate.tasks import auroc

__all__ = ["WindowCalibrationReader", "QuantReport", "quantize_probe_model", "calibration_windows",
           "check_calibration", "DEFAULT_CALIBRATION_WINDOWS", "FP32_FILE", "INT8_FILE"]

#: Calibration windows drawn (seeded) from the training records; a few hundred cover MinMax ranges of a small CNN.
DEFAULT_CALIBRATION_WINDOWS = 256
FP32_FILE = "probe_fp32.onnx"
INT8_FILE = "probe_int8.onnx"
_PRE_FILE = "probe_fp32_pre.onnx"


def check_calibration(n: Any) -> int:
    """``n`` calibration windows as an int, checked before anything is fitted or written.

    Raises:
        ConfigError: ``n`` is not an integer >= 1.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise ConfigError(f"calibration: expected a number of training windows >= 1, got {n!r}")
    return int(n)


def calibration_windows(signals: np.ndarray, rows: np.ndarray, window: int, n: int = DEFAULT_CALIBRATION_WINDOWS,
                        seed: int = 0) -> np.ndarray:
    """(record row, window index) pairs: ``n`` non-overlapping windows drawn without replacement (seeded) from
    the records ``rows`` of ``signals`` (R, L, T); all of them when there are fewer.

    Raises:
        ConfigError: ``rows`` is empty, or ``n`` < 1.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        raise ConfigError("calibration rows: empty; expected at least one training record to calibrate on")
    if int(n) < 1:
        raise ConfigError(f"calibration windows: expected >= 1, got {n}")
    per_record = signals.shape[-1] // window
    if per_record < 1:
        raise ConfigError(f"window: {window} samples is longer than the {signals.shape[-1]}-sample records")
    pairs = np.stack(np.meshgrid(rows, np.arange(per_record), indexing="ij"), -1).reshape(-1, 2)
    pick = np.random.default_rng(seed).permutation(len(pairs))[: int(n)]
    return pairs[np.sort(pick)]


class WindowCalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over chosen windows of chosen records, one window per batch.

    Args:
        signals: (R, L, T) records; rows: the records it may read (the training rows).
        window: samples per window; input_name: the model's input name.
        n, seed: how many windows to draw (see :func:`calibration_windows`).

    Attributes:
        pairs: (n, 2) (record row, window index) pairs it yields, in order.
    """

    def __init__(self, signals: np.ndarray, rows: np.ndarray, window: int, input_name: str = "x",
                 n: int = DEFAULT_CALIBRATION_WINDOWS, seed: int = 0):
        self.signals, self.window, self.input_name = signals, int(window), input_name
        self.pairs = calibration_windows(signals, rows, window, n, seed)
        self._next = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.pairs):
            return None
        row, w = self.pairs[self._next]
        self._next += 1
        x = self.signals[row, :, w * self.window:(w + 1) * self.window]
        return {self.input_name: np.ascontiguousarray(x[None], dtype=np.float32)}

    def rewind(self) -> None:
        self._next = 0


@dataclass
class QuantReport:
    """FP32 vs INT8: files, sizes, latency and test AUROC on the same test records.

    Attributes:
        models: ``{"pytorch", "onnx_fp32", "onnx_int8"}`` -> ``{"path", "bytes", "latency_ms" (median per record,
            one call on the record's windows, one thread), "test_auroc"}`` (PyTorch has no file: path and bytes
            None).
        test_records, windows_per_record: what the AUROC and latency ran on.
        calibration: windows used, their seed, the rows they came from (``train``) and how many records.
        onnx_max_abs_diff: FP32 export vs PyTorch (:class:`~ssl_ecg.deploy.export.ExportReport`).
        int8_max_abs_diff_logits: max |INT8 - FP32| window logit on the test windows.
        settings: quantisation settings (format, types, per_channel, calibration method).
    """

    models: dict[str, dict[str, Any]]
    test_records: int
    windows_per_record: int
    kind: str
    calibration: dict[str, Any]
    onnx_max_abs_diff: float
    int8_max_abs_diff_logits: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _record_logits(run, signals: np.ndarray, window: int, warmup: int = 0) -> tuple[np.ndarray, list[float]]:
    """Mean window logits per record, one call per record (a batch of its windows), and each call's seconds
    (after ``warmup`` untimed calls on the first record)."""
    for _ in range(warmup):
        run(np.ascontiguousarray(tile_windows(torch.as_tensor(signals[:1]), window)[0].numpy()))
    out, times = [], []
    for rec in signals:
        w = tile_windows(torch.as_tensor(rec[None], dtype=torch.float32), window)[0].numpy()  # (W, L, S)
        t0 = time.perf_counter()
        logits = run(np.ascontiguousarray(w))
        times.append(time.perf_counter() - t0)
        out.append(np.asarray(logits, dtype=np.float64).mean(0))
    return np.stack(out), times


def _torch_record_logits(model: torch.nn.Module, signals: np.ndarray, window: int,
                         warmup: int) -> tuple[np.ndarray, list[float]]:
    """:func:`_record_logits` for the PyTorch model: eval mode, ``torch.inference_mode``, one intra-op thread
    (the caller's thread count and training flag restored)."""
    was_training, threads = model.training, torch.get_num_threads()
    model.eval()
    try:
        torch.set_num_threads(1)
        with torch.inference_mode():
            return _record_logits(lambda x: model(torch.from_numpy(x)).numpy(), signals, window, warmup)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)


def quantize_probe_model(fitted: FittedProbe, signals: np.ndarray, window: int, out_dir: str | os.PathLike, *,
                         calibration: int = DEFAULT_CALIBRATION_WINDOWS, seed: int = 0, per_channel: bool = False,
                         card: dict | None = None, reader: WindowCalibrationReader | None = None,
                         warmup: int = 3) -> QuantReport:
    """Export ``fitted.model`` to FP32 ONNX, quantise it to INT8 (QDQ, calibrated on training windows) and
    compare the two with PyTorch on the test records.

    Writes ``probe_fp32.onnx`` and ``probe_int8.onnx`` (and the pre-processed FP32 graph the quantiser reads)
    into ``out_dir``.

    Args:
        fitted: from :func:`~ssl_ecg.evaluate.head.fit_probe_model`, on the same ``signals`` rows.
        signals: (R, L, T) records; window: samples per window.
        calibration, seed: number of calibration windows drawn from ``fitted.rows["train"]`` and their seed.
        per_channel: per-output-channel weight scales (else one per tensor).
        card: model card to embed in both ONNX files.
        reader: a calibration reader to use instead of the default (it must read training rows only).
        warmup: untimed calls before the latency is measured.

    Raises:
        ConfigError: no training or test rows, a window longer than the records, ``calibration`` < 1, a reader
            without ``pairs`` (so its rows cannot be checked), or one reading other than training rows.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibration = check_calibration(calibration)
    if reader is not None and not (hasattr(reader, "pairs") and hasattr(reader, "get_next")):
        raise ConfigError(f"reader: a {type(reader).__name__} without .pairs and .get_next(); expected a "
                          "WindowCalibrationReader-like reader whose (record row, window) pairs can be checked to "
                          "be training windows")
    model, rows = fitted.model, fitted.rows
    test = np.asarray(rows.get("test", []), dtype=np.int64)
    if len(test) == 0:
        raise ConfigError("fitted.rows['test']: empty; expected the test records to compare FP32 and INT8 on")
    signals = np.asarray(signals, dtype=np.float32)
    if signals.ndim != 3 or signals.shape[-1] < window:
        raise ConfigError(f"signals: shape {signals.shape}; expected (R, L, T) records with T >= window ({window})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reader = reader or WindowCalibrationReader(signals, rows["train"], window, n=calibration, seed=seed)
    if len(reader) == 0:
        raise ConfigError("calibration: the reader yields no windows; expected training windows to calibrate on")
    pairs = np.asarray(reader.pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ConfigError(f"reader.pairs: shape {pairs.shape}; expected (n, 2) (record row, window index) pairs")
    outside = sorted(set(pairs[:, 0].tolist()) - set(np.asarray(rows["train"]).tolist()))
    if outside:
        raise ConfigError(f"calibration: the reader reads rows {outside[:5]} outside the training rows; expected "
                          "training windows only (validation and test records must not inform the INT8 model)")
    calib = np.stack([signals[r, :, w * window:(w + 1) * window] for r, w in reader.pairs[:16]])
    fp32, pre, int8 = (confined(out_dir, name) for name in (FP32_FILE, _PRE_FILE, INT8_FILE))
    export = export_onnx(model, fp32, (1, signals.shape[1], window), real_inputs=calib, card=card, seed=seed)
    quant_pre_process(str(fp32), str(pre))
    settings = {"format": "QDQ", "activation_type": "QInt8", "weight_type": "QInt8", "per_channel": per_channel,
                "calibrate_method": "MinMax", "pre_process": "onnxruntime quant_pre_process"}
    quantize_static(str(pre), str(int8), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    if card is not None:  # the quantiser drops metadata_props: put the card back
        import onnx

        from ssl_ecg.deploy.export import CARD_METADATA_KEY

        proto = onnx.load(str(int8))
        entry = proto.metadata_props.add()
        entry.key, entry.value = CARD_METADATA_KEY, json.dumps({**card, "quantization": settings}, default=str)
        onnx.save_model(proto, str(int8))

    x_test, y_test = signals[test], fitted.y[test]
    sessions = {"onnx_fp32": onnx_session(fp32, threads=1), "onnx_int8": onnx_session(int8, threads=1)}
    logits, models = {}, {}
    for name, session in sessions.items():
        in_name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name

        def run(x, session=session, in_name=in_name, out_name=out_name):
            return session.run([out_name], {in_name: x})[0]

        logits[name], times = _record_logits(run, x_test, window, warmup)
        path = fp32 if name == "onnx_fp32" else int8
        models[name] = {"path": str(path), "bytes": path.stat().st_size,
                        "latency_ms": 1e3 * statistics.median(times)}
    logits["pytorch"], times = _torch_record_logits(model, x_test, window, warmup)
    models["pytorch"] = {"path": None, "bytes": None, "latency_ms": 1e3 * statistics.median(times)}
    for name in ("pytorch", "onnx_fp32", "onnx_int8"):
        models[name]["test_auroc"] = auroc(y_test, model.scores(logits[name]), model.kind)
    windows = tile_windows(torch.as_tensor(x_test), window)
    flat = windows.reshape(-1, *windows.shape[2:]).numpy()
    diff = np.abs(sessions["onnx_int8"].run(None, {export.input_name: flat})[0].astype(np.float64)
                  - sessions["onnx_fp32"].run(None, {export.input_name: flat})[0]).max()
    cal = {"windows": len(reader), "seed": seed, "rows_from": "train",
           "records": int(len(np.unique(reader.pairs[:, 0])))}
    report = QuantReport(models={k: models[k] for k in ("pytorch", "onnx_fp32", "onnx_int8")},
                         test_records=int(len(test)), windows_per_record=int(windows.shape[1]), kind=model.kind,
                         calibration=cal, onnx_max_abs_diff=max(export.max_abs_diff_random,
                                                                export.max_abs_diff_real or 0.0),
                         int8_max_abs_diff_logits=float(diff), settings=settings)
    return report
