"""Exceptions raised by ssl-ecg.

Every message names the file or argument, what was found and what was expected.
"""

__all__ = ["SslEcgError", "RecordError", "DatasetError", "ConfigError", "SplitError", "LeakageError", "TrainingError",
           "EncoderChangedError", "check_choice"]


class SslEcgError(Exception):
    """Base class of all ssl-ecg errors."""


class RecordError(SslEcgError, ValueError):
    """A single record cannot be read or does not meet a requirement."""


class DatasetError(SslEcgError, ValueError):
    """A dataset folder, label file or index is missing or malformed."""


class ConfigError(SslEcgError, ValueError):
    """A recipe, argument or checkpoint config is invalid."""


class SplitError(DatasetError):
    """A split or label fraction is empty, leaks patients, or loses a class."""


class LeakageError(SplitError):
    """An encoder was pretrained on (or used the labels of) patients that an evaluation scores it on."""


class TrainingError(SslEcgError, RuntimeError):
    """A training run diverged or learnt nothing (non-finite loss or weights, a loss stuck at 0)."""


class EncoderChangedError(SslEcgError, RuntimeError):
    """An encoder's state dict changed during an evaluation that must keep it frozen."""


def check_choice(where: str, value: object, choices: "tuple[str, ...] | list[str]") -> None:
    """Raise :class:`ConfigError` ``"<where>: expected one of a, b, got 'value'"`` unless ``value`` is a choice."""
    if value not in choices:
        raise ConfigError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
