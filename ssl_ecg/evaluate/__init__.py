"""Frozen-encoder evaluation, fine-tuning, few-shot heads and label-efficiency curves."""

from ssl_ecg.evaluate.challenge import challenge_score, load_challenge_weights, modified_confusion_matrix
from ssl_ecg.evaluate.curve import (
    RESULTS_SCHEMA,
    CurveSpec,
    is_reference_arm,
    run_curve,
    summarize,
    summarize_runs,
    write_outputs,
)
from ssl_ecg.evaluate.embed import (
    EncoderChangedError,
    assert_unchanged,
    embed_records,
    frozen_state,
    state_dict_hash,
    tile_windows,
)
from ssl_ecg.evaluate.features import HandcraftedFeatures
from ssl_ecg.evaluate.fewshot import (
    SCORING,
    episode_bootstrap,
    episode_bootstrap_design,
    paired_differences,
    predict_episodes,
    query_patient_bootstrap,
    run_fewshot,
)
from ssl_ecg.evaluate.head import ProbeModel, WindowFeatures, fit_probe_model, load_probe_head, save_probe_head
from ssl_ecg.evaluate.knn import knn_probe, knn_scores
from ssl_ecg.evaluate.linear import torch_linear_probe
from ssl_ecg.evaluate.metrics import MacroAUROC, accuracy, macro_auroc, macro_f1, tune_thresholds
from ssl_ecg.evaluate.plots import plot_curve, plot_differences, plot_labels_needed
from ssl_ecg.evaluate.probe import ProbeData, ProbeResult, fit_probe, logistic_probe
from ssl_ecg.evaluate.saliency import (
    explain_records,
    grad_cam,
    integrated_gradients,
    plot_saliency,
    record_attributions,
)
from ssl_ecg.evaluate.stats import (
    aulc,
    delong_ci,
    delong_paired_test,
    hierarchical_replicates,
    holm,
    labels_needed_distribution,
    patient_bootstrap,
)
from ssl_ecg.evaluate.supervised import finetune, train_supervised
from ssl_ecg.evaluate.tasks import task_kind, task_labels

__all__ = [
    "CurveSpec", "run_curve", "summarize", "plot_curve", "plot_labels_needed", "write_outputs", "RESULTS_SCHEMA",
    "embed_records", "frozen_state", "assert_unchanged", "tile_windows", "EncoderChangedError", "state_dict_hash",
    "ProbeData", "ProbeResult", "fit_probe", "logistic_probe", "torch_linear_probe", "knn_probe", "finetune",
    "train_supervised", "knn_scores", "macro_auroc", "MacroAUROC", "tune_thresholds", "macro_f1", "accuracy",
    "task_kind", "task_labels", "challenge_score", "load_challenge_weights", "modified_confusion_matrix",
    "summarize_runs", "plot_differences", "patient_bootstrap", "hierarchical_replicates", "delong_ci",
    "delong_paired_test", "holm", "aulc", "labels_needed_distribution", "HandcraftedFeatures",
    "integrated_gradients", "grad_cam", "record_attributions", "plot_saliency", "explain_records",
    "ProbeModel", "WindowFeatures", "fit_probe_model", "save_probe_head", "load_probe_head",
    "run_fewshot", "predict_episodes", "query_patient_bootstrap", "SCORING", "episode_bootstrap_design",
    "episode_bootstrap", "paired_differences", "is_reference_arm",
]
