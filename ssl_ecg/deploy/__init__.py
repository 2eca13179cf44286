"""Deployment: ONNX and safetensors export of encoders (and their probes), and INT8 post-training quantisation.

Imports :mod:`ssl_ecg.models`, :mod:`ssl_ecg.evaluate`, :mod:`ssl_ecg.data` and :mod:`ssl_ecg.checkpoint`, never
:mod:`ssl_ecg.pretrain`.
"""

from ssl_ecg.deploy.export import (
    ExportReport,
    OnnxEncoder,
    RecipeProbe,
    export_encoder,
    export_onnx,
    export_safetensors,
    fit_recipe_probe,
    load_onnx_encoder,
    model_card,
    pool_hash,
)
from ssl_ecg.deploy.quantize import QuantReport, WindowCalibrationReader, calibration_windows, quantize_probe_model

__all__ = ["ExportReport", "OnnxEncoder", "export_onnx", "export_safetensors", "load_onnx_encoder", "model_card",
           "pool_hash", "RecipeProbe", "fit_recipe_probe", "export_encoder", "QuantReport", "WindowCalibrationReader",
           "calibration_windows", "quantize_probe_model"]
