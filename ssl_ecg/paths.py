"""Safe output folders: a run's ``name`` becomes exactly one folder inside the runs folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ssl_ecg.errors import ConfigError

__all__ = ["MAX_NAME_LEN", "NAME_RULE", "check_run_name", "run_folder"]

MAX_NAME_LEN = 100
NAME_RULE = (f"a simple folder name: 1-{MAX_NAME_LEN} letters, digits, '_', '-' or '.', "
             "not '.' or '..', no path separators")
_NAME = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_NAME_LEN}}}")


def check_run_name(name: str) -> str:
    """Return ``name`` if it is a simple folder name, else raise :class:`ValueError` stating the rule.

    Args:
        name: a run name from a recipe (``name: ludb_cmsc``).

    Returns:
        ``name`` unchanged.

    Raises:
        ValueError: ``name`` is not a string, is ``.`` or ``..``, is too long, or holds a
            character other than letters, digits, ``_``, ``-`` and ``.`` (so no ``/``, ``\\``
            or drive letters).
    """
    if not isinstance(name, str) or name in (".", "..") or not _NAME.fullmatch(name):
        raise ValueError(NAME_RULE)
    return name


def run_folder(runs: str | os.PathLike, name: str) -> Path:
    """The output folder ``runs/name``, refusing any name that would write elsewhere.

    Nothing is created; call this before writing anything so a bad name fails first.

    Args:
        runs: the runs folder (any user path, relative or absolute).
        name: the run's name; must pass :func:`check_run_name`.

    Returns:
        ``Path(runs) / name`` (not resolved, so relative runs folders stay relative).

    Raises:
        ConfigError: ``name`` is not a simple folder name, or ``runs/name`` resolves (through
            an existing link) to a place outside ``runs``.
    """
    try:
        check_run_name(name)
    except ValueError as exc:
        raise ConfigError(f"name={name!r}: expected {exc}, so the run stays inside the runs folder {runs}") from None
    out = Path(runs) / name
    base, target = Path(runs).resolve(), out.resolve()
    if target.parent != base:
        raise ConfigError(f"name={name!r}: {out} resolves to {target}, outside the runs folder {base}; "
                          f"expected a folder inside it")
    return out
