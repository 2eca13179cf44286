"""Pretraining: the method registry, the Lightning module and the entry points."""

from ssl_ecg.pretrain.methods import METHODS, MethodSpec, build_method
from ssl_ecg.pretrain.module import ContrastivePretrainer
from ssl_ecg.pretrain.run import PretrainConfig, run_pretrain
from ssl_ecg.pretrain.train import PretrainResult, pretrain

__all__ = ["ContrastivePretrainer", "pretrain", "PretrainResult", "run_pretrain", "PretrainConfig", "METHODS",
           "MethodSpec", "build_method"]
