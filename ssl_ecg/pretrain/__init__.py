"""Pretraining: Lightning modules and the training entry point."""

from ssl_ecg.pretrain.module import ContrastivePretrainer
from ssl_ecg.pretrain.train import PretrainResult, pretrain

__all__ = ["ContrastivePretrainer", "pretrain", "PretrainResult"]
