"""Pretraining: the method registry, the Lightning module and the entry points."""

from ssl_ecg.pretrain.distill import DistillConfig, run_distill
from ssl_ecg.pretrain.methods import METHODS, MethodSpec, build_method
from ssl_ecg.pretrain.module import ContrastivePretrainer
from ssl_ecg.pretrain.run import PretrainConfig, run_pretrain

__all__ = ["ContrastivePretrainer", "run_pretrain", "PretrainConfig", "METHODS",
           "MethodSpec", "build_method", "DistillConfig", "run_distill"]
