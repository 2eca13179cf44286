"""ssl-ecg: patient-aware self-supervised pretraining and label-efficiency evaluation for ECG."""

from ssl_ecg.checkpoint import load_encoder, save_encoder
from ssl_ecg.errors import ConfigError, DatasetError, RecordError, SplitError, SslEcgError, TrainingError

__version__ = "0.1.0"

__all__ = ["load_encoder", "save_encoder", "SslEcgError", "RecordError", "DatasetError", "ConfigError", "SplitError",
           "TrainingError"]
