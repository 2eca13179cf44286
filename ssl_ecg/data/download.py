"""Locating datasets on disk and downloading them from PhysioNet with wfdb."""

from __future__ import annotations

import os
from pathlib import Path

from ssl_ecg.errors import DatasetError

__all__ = ["user_data_dir", "locate_dataset", "download_ludb", "MARKERS"]

# A file that proves a folder holds the dataset.
MARKERS = {"ludb": "ludb.csv", "ptbxl": "ptbxl_database.csv", "mitdb": "RECORDS"}


def user_data_dir() -> Path:
    """``$XDG_CACHE_HOME/ssl-ecg/data`` (default ``~/.cache/ssl-ecg/data``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ssl-ecg" / "data"


def locate_dataset(name: str, data: str | os.PathLike | None = None) -> Path | None:
    """Find dataset ``name`` under ``data``, then ``$SSL_ECG_DATA``, then the user cache.

    Each candidate may be the dataset folder itself or a folder holding ``<name>/``.
    Returns ``None`` when none holds it.
    """
    marker = MARKERS.get(name)
    if marker is None:
        raise DatasetError(f"dataset {name!r}: no locator marker known")
    candidates = [data, os.environ.get("SSL_ECG_DATA"), user_data_dir()]
    for cand in candidates:
        if not cand:
            continue
        cand = Path(cand)
        for folder in (cand, cand / name):
            if (folder / marker).is_file():
                return folder
    return None


def download_ludb(to: str | os.PathLike) -> Path:
    """Download LUDB 1.0.1 from PhysioNet into ``to/ludb`` with wfdb's downloader.

    Raises:
        DatasetError: when PhysioNet cannot be reached (offline) or the files are incomplete.
    """
    import wfdb

    dest = Path(to) / "ludb"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        wfdb.io.download.dl_files("ludb", str(dest), ["ludb.csv", "RECORDS"])
        wfdb.dl_database("ludb", dl_dir=str(dest), annotators=None)
    except Exception as exc:
        raise DatasetError(
            f"cannot download LUDB from PhysioNet into {dest} ({type(exc).__name__}: {exc}); "
            "are you offline? Pass --data or set SSL_ECG_DATA to a folder holding ludb/"
        ) from exc
    if not (dest / "ludb.csv").is_file():
        raise DatasetError(f"{dest}: download finished without ludb.csv")
    return dest
