"""Frozen-encoder evaluation, fine-tuning, few-shot heads and label-efficiency curves."""

from ssl_ecg.evaluate.challenge import challenge_score, load_challenge_weights, modified_confusion_matrix
from ssl_ecg.evaluate.curve import CurveSpec, plot_curve, run_curve, summarize, write_outputs
from ssl_ecg.evaluate.embed import EncoderChangedError, assert_unchanged, embed_records, frozen_state, tile_windows
from ssl_ecg.evaluate.knn import knn_scores
from ssl_ecg.evaluate.linear import torch_linear_probe
from ssl_ecg.evaluate.metrics import MacroAUROC, accuracy, macro_auroc, macro_f1, tune_thresholds
from ssl_ecg.evaluate.probe import ProbeResult, logistic_probe
from ssl_ecg.evaluate.supervised import SupervisedResult, finetune, train_supervised
from ssl_ecg.evaluate.tasks import task_kind

__all__ = [
    "CurveSpec", "run_curve", "summarize", "plot_curve", "write_outputs",
    "embed_records", "frozen_state", "assert_unchanged", "tile_windows", "EncoderChangedError",
    "logistic_probe", "torch_linear_probe", "ProbeResult", "finetune", "train_supervised", "SupervisedResult",
    "knn_scores", "macro_auroc", "MacroAUROC", "tune_thresholds", "macro_f1", "accuracy", "task_kind",
    "challenge_score", "load_challenge_weights", "modified_confusion_matrix",
]
