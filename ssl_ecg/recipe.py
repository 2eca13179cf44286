"""Recipes: YAML files mapped onto typed dataclasses, with ``key=value`` overrides.

The recipe dataclasses (``PretrainConfig``, ``EvalConfig``, ``FewShotConfig``) stay plain
stdlib dataclasses; their field annotations carry the constraints (``typing.Annotated`` with
``annotated_types``), and :func:`load_recipe` checks every given value against its field's annotation with
pydantic in strict mode (``'16'`` is not an int, ``1.5`` is not an int, ``1`` is a float). The aliases below
are the constraints the recipes share. Every float in a recipe must be finite (``.inf`` and ``.nan`` are
refused), and every count or seed is at most :data:`MAX_INT`, so a mistyped value is a one-line
:class:`~ssl_ecg.errors.ConfigError` instead of an overflow deep inside training.

YAML is read with PyYAML's safe loader plus the YAML 1.2 float rule, so ``1e-3``, ``1E5`` and ``-2e-4`` are
numbers (YAML 1.1 reads them as strings).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, TypeVar, Union

import annotated_types as at
import yaml
from pydantic import AfterValidator, ConfigDict, TypeAdapter
from pydantic import ValidationError as _ValidationError

from ssl_ecg.errors import ConfigError
from ssl_ecg.paths import check_run_name

__all__ = ["load_recipe", "parse_overrides", "load_yaml", "RunName", "PositiveInt", "NonNegativeInt",
           "PositiveFloat", "NonNegativeFloat", "Fraction", "Fractions", "Seeds", "Names", "SplitFractions", "Split",
           "MaxSteps", "Devices", "MAX_INT", "describe_type",
           "window_samples"]

T = TypeVar("T")


def _sums_to_one(shares: list[float]) -> list[float]:
    if not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
        raise ValueError(f"the shares must sum to 1, got {sum(shares):g}")
    return shares


#: Largest integer a recipe count or seed may hold (epochs, steps, sizes, seeds): a signed 32-bit int.
MAX_INT = 2**31 - 1


def _at_most_max_int(value: int) -> int:
    if value > MAX_INT:
        raise ValueError(f"at most {MAX_INT}")
    return value


#: A count >= 1 (at most :data:`MAX_INT`, named in the error only when exceeded).
PositiveInt = Annotated[int, at.Gt(0), AfterValidator(_at_most_max_int)]
#: A count or seed >= 0 (at most :data:`MAX_INT`, named in the error only when exceeded).
NonNegativeInt = Annotated[int, at.Ge(0), AfterValidator(_at_most_max_int)]
#: A number > 0 (finite, as every recipe float).
PositiveFloat = Annotated[float, at.Gt(0)]
#: A number >= 0 (finite, as every recipe float).
NonNegativeFloat = Annotated[float, at.Ge(0)]
#: A run name: one folder inside the runs folder (see :func:`ssl_ecg.paths.run_folder`).
RunName = Annotated[str, AfterValidator(check_run_name)]
#: A label fraction in (0, 1].
Fraction = Annotated[float, at.Gt(0), at.Le(1)]
#: A non-empty list of label fractions.
Fractions = Annotated[list[Fraction], at.MinLen(1)]
#: A non-empty list of seeds (numpy needs them >= 0).
Seeds = Annotated[list[NonNegativeInt], at.MinLen(1)]
#: A non-empty list of names (tasks, probes, leads).
Names = Annotated[list[str], at.MinLen(1)]
#: Train/val/test shares of patients.
SplitFractions = Annotated[list[NonNegativeFloat], at.Len(3, 3), AfterValidator(_sums_to_one)]
#: A patient split: train/val/test shares, or "official" (the dataset's own split column).
Split = Union[SplitFractions, Literal["official"]]
#: Lightning's step limit: -1 (none) or a positive count.
MaxSteps = Union[Literal[-1], PositiveInt]
#: Lightning's device count: a positive count or "auto".
Devices = Union[PositiveInt, Literal["auto"]]
#: Recipe validation: floats must be finite (pydantic refuses inf and nan).
_RECIPE_CONFIG = ConfigDict(allow_inf_nan=False)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float rule (``1e-3`` is a float, not a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


#: Largest recipe text accepted (characters); a recipe is a few hundred.
MAX_YAML_CHARS = 1_000_000
#: Most values a document may expand to through aliases (``*anchor``): refuses "billion laughs" bombs.
MAX_YAML_NODES = 100_000


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Number of nodes ``node`` stands for once every alias is expanded (linear in the node graph)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once here; the constructor builds it as a cycle
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = size = min(size, MAX_YAML_NODES + 1)
    return size


def load_yaml(text: str) -> Any:
    """Parse YAML ``text`` with the safe loader and YAML 1.2 floats (``1e-3`` -> ``0.001``).

    Texts over :data:`MAX_YAML_CHARS` and documents that expand (through aliases) to more than
    :data:`MAX_YAML_NODES` values are refused before anything is built.

    Raises:
        yaml.YAMLError: ``text`` is not valid YAML, too long, or an alias bomb.
    """
    if len(text) > MAX_YAML_CHARS:
        raise yaml.YAMLError(f"{len(text)} characters; expected at most {MAX_YAML_CHARS}")
    loader = _Loader(text)  # a SafeLoader subclass: no arbitrary objects
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise yaml.YAMLError(f"aliases expand to more than {MAX_YAML_NODES} values; expected a plain recipe")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _yaml_reason(exc: yaml.YAMLError) -> str:
    """One line: the parser's problem and where (YAML's own message spans several lines)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{exc.problem}{where}"
    return " ".join(str(exc).split())


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["epochs=3", "seeds=[0,1]"]`` -> ``{"epochs": 3, "seeds": [0, 1]}`` (values parsed as YAML).

    Raises:
        ConfigError: an item is not ``key=value`` or its value is not valid YAML.
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"overrides: {item!r}: expected key=value")
        try:
            out[key] = load_yaml(value)
        except yaml.YAMLError as exc:
            shown = repr(value) if len(value) <= 200 else f"{value[:200]!r}..."
            raise ConfigError(f"overrides: {key}={shown}: expected a YAML value ({_yaml_reason(exc)})") from None
    return out


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping",
          list: "a list", type(None): "null", Any: "anything"}


def _bounds(meta: Sequence[Any]) -> str:
    words = []
    for m in meta:
        for attr, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if isinstance(m, getattr(at, attr.capitalize())):
                words.append(f"{op} {getattr(m, attr)}")
    return " and ".join(words)


def _size(meta: Sequence[Any]) -> str:
    lo, hi = 0, None
    for m in meta:
        if isinstance(m, at.Len):
            lo, hi = m.min_length, m.max_length
        elif isinstance(m, at.MinLen):
            lo = m.min_length
        elif isinstance(m, at.MaxLen):
            hi = m.max_length
    if lo == hi:
        return f"{lo} items"
    if hi is None:
        return "at least 1 item" if lo == 1 else (f"at least {lo} items" if lo else "")
    return f"{lo} to {hi} items"


def describe_type(tp: Any) -> str:
    """Plain words for a field annotation, e.g. ``"a list of at least 1 item, each a number > 0 and <= 1"``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    meta: Sequence[Any] = ()
    if origin is Annotated:
        tp, meta = args[0], args[1:]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [describe_type(a) for a in args]
        return " or ".join(f"({p})" if "," in p and len(parts) > 1 else p for p in parts)
    if origin is Literal:
        return repr(args[0]) if len(args) == 1 else "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, dict):
        size = _size(meta)
        text = ("a list" if origin is list else "a mapping") + (f" of {size}" if size else "")
        if args and args[-1] is not Any:
            text += f", each {'item' if origin is list else 'value'} {describe_type(args[-1])}"
        return text
    text = _NAMES.get(tp, getattr(tp, "__name__", str(tp)))
    bounds = _bounds(meta)
    return f"{text} {bounds}" if bounds else text


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


@functools.lru_cache(maxsize=None)
def _adapter(cls: type, key: str) -> TypeAdapter:
    return TypeAdapter(_field_types(cls)[key], config=_RECIPE_CONFIG)


def _check(cls: type, key: str, value: Any, where: str) -> Any:
    """``value`` checked (strictly) against field ``key`` of ``cls``; raises a one-line ConfigError."""
    try:
        return _adapter(cls, key).validate_python(value, strict=True)
    except _ValidationError as exc:
        expected = describe_type(_field_types(cls)[key])
        reasons = sorted({str(e["ctx"]["error"]) for e in exc.errors() if e["type"] == "value_error"} |
                         {"finite: inf and nan are not allowed" for e in exc.errors() if e["type"] == "finite_number"})
        if reasons:
            expected += f" ({'; '.join(reasons)})"
        shown = repr(value)
        shown = shown if len(shown) <= 200 else f"{shown[:200]}... ({len(shown)} characters)"
        raise ConfigError(f"{where}: {key}={shown}: expected {expected}") from None


def window_samples(seconds: float, fs: float, key: str = "window") -> int:
    """``seconds`` at ``fs`` Hz as a whole number of samples, checked to be between 1 and :data:`MAX_INT`.

    Args:
        seconds: a length the recipe gives in seconds.
        fs: the sampling rate (Hz) it is read at.
        key: the recipe key holding ``seconds``, named in the error.

    Raises:
        ConfigError: naming ``key`` and ``fs`` when the length rounds to no sample or is absurdly long.
    """
    n = seconds * fs
    if not (math.isfinite(n) and 0.5 <= n < MAX_INT):
        shown = f"{n:.3g} samples" if math.isfinite(n) else "no finite number of samples"
        raise ConfigError(f"{key}={seconds!r} s at fs={fs!r} Hz is {shown}; expected at least one sample "
                          f"(and at most {MAX_INT})")
    return int(round(n))


def load_recipe(cls: type[T], path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
                defaults: dict[str, Any] | None = None) -> T:
    """Build dataclass ``cls`` from ``defaults``, then a YAML file, then overrides.

    Every given value is checked against its field's annotation (pydantic, strict mode) before the
    dataclass is built; the dataclass's own defaults are not re-checked.

    Args:
        cls: the recipe dataclass, e.g. ``PretrainConfig``.
        path: a YAML recipe; ``None`` for the defaults plus overrides.
        overrides: ``key -> value`` (from :func:`parse_overrides`), applied last.
        defaults: ``key -> value`` applied first (e.g. a command's own defaults).

    Returns:
        The dataclass, holding the checked values.

    Raises:
        ConfigError: the file is missing or not a YAML mapping, a key is unknown, or a value does not fit
            its field; the one-line message names the recipe file (or ``overrides``), the key, the value
            and what was expected.
    """
    file_values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: recipe not found")
        if path.stat().st_size > MAX_YAML_CHARS * 4:  # before reading: a huge file is not read into memory
            raise ConfigError(f"{path}: {path.stat().st_size} bytes; expected a recipe of at most "
                              f"{MAX_YAML_CHARS} characters")
        try:
            file_values = load_yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: expected a YAML mapping of recipe keys ({_yaml_reason(exc)})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: expected a UTF-8 YAML text file ({exc.reason} at byte {exc.start})") from None
        if not isinstance(file_values, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(file_values).__name__}")
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    for source, layer in (("defaults", defaults), (str(path), file_values), ("overrides", overrides)):
        for key, value in (layer or {}).items():
            values[key], where[key] = value, source
    fields = _field_types(cls)
    unknown = [k for k in values if k not in fields]
    if unknown:
        sources = sorted({where[k] for k in unknown})
        raise ConfigError(f"{', '.join(sources)}: unknown keys {sorted(map(str, unknown))}; "
                          f"expected some of {sorted(fields)}")
    checked = {key: _check(cls, key, value, where[key]) for key, value in values.items()}
    try:
        return cls(**checked)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or 'overrides'}: {exc}") from exc
