"""Locating datasets on disk and downloading them from PhysioNet's official file URLs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ssl_ecg.errors import DatasetError

__all__ = ["user_data_dir", "locate_dataset", "dataset_root", "download", "download_ludb", "MARKERS", "PHYSIONET"]

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


def dataset_root(name: str, root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else :func:`locate_dataset`; a clear error when neither finds it."""
    found = Path(root) if root else locate_dataset(name)
    if found is None:
        raise DatasetError(f"dataset {name!r} not found: set root= or SSL_ECG_DATA")
    return found


# name -> (PhysioNet project, version, marker file)
PHYSIONET = {
    "ludb": ("ludb", "1.0.1"),
    "mitdb": ("mitdb", "1.0.0"),
    "ptbxl": ("ptb-xl", "1.0.3"),
    "incart": ("incartdb", "1.0.0"),
}
DEFAULT_BASE_URL = "https://physionet.org/files/"


def _base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get("SSL_ECG_PHYSIONET_URL") or DEFAULT_BASE_URL
    return url if url.endswith("/") else url + "/"


def _fetch(url: str, timeout: float) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_file(url: str, dest: Path, expected: str, timeout: float) -> None:
    """Download ``url`` to ``dest``, resuming a ``.part`` file with an HTTP Range request."""
    import urllib.error
    import urllib.request

    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            mode = "ab" if have and r.status == 206 else "wb"  # a server that ignores Range restarts the file
            with open(part, mode) as f:
                shutil.copyfileobj(r, f, 1 << 20)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch
            pass
        else:
            raise
    got = _sha256(part)
    if got != expected:
        part.unlink()
        raise DatasetError(f"{dest}: SHA-256 {got[:12]}... does not match the published {expected[:12]}...; "
                           "the partial file was removed, run the download again")
    os.replace(part, dest)


def download(name: str, to: str | os.PathLike, base_url: str | None = None, timeout: float = 60.0,
             files: list[str] | None = None) -> Path:
    """Download a PhysioNet dataset into ``to/<name>`` from its official file URLs.

    The published ``SHA256SUMS.txt`` lists the files; each is downloaded (resuming
    a ``.part`` file if present), checked against its SHA-256 and renamed into
    place. Files already present with the right hash are skipped.

    Args:
        name: one of :data:`PHYSIONET` (``ludb``, ``mitdb``, ``ptbxl``, ``incart``).
        to: destination folder; the dataset lands in ``to/<name>``.
        base_url: PhysioNet's file index (default ``$SSL_ECG_PHYSIONET_URL`` or
            ``https://physionet.org/files/``), for mirrors and tests.
        files: only these files (paths as in SHA256SUMS.txt).

    Raises:
        DatasetError: unknown name, no connection (offline), or a checksum mismatch.
    """
    import urllib.error

    if name not in PHYSIONET:
        raise DatasetError(f"download: {name!r} is not downloadable here; expected one of {sorted(PHYSIONET)}")
    project, version = PHYSIONET[name]
    url = f"{_base_url(base_url)}{project}/{version}/"
    dest = Path(to) / name
    try:
        sums = _fetch(url + "SHA256SUMS.txt", timeout).decode()
    except (urllib.error.URLError, OSError) as exc:
        raise DatasetError(f"cannot download {name} from {url} ({type(exc).__name__}: {exc}); are you offline? "
                           f"Pass --data or set SSL_ECG_DATA to a folder holding {name}/") from exc
    listing = {}
    for line in sums.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            listing[parts[1].lstrip("*")] = parts[0]
    wanted = files if files is not None else list(listing)
    missing = [f for f in wanted if f not in listing]
    if missing:
        raise DatasetError(f"{url}SHA256SUMS.txt does not list {missing[:5]}")
    for rel in wanted:
        target = dest / rel
        if target.is_file() and _sha256(target) == listing[rel]:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            _download_file(url + rel, target, listing[rel], timeout)
        except (urllib.error.URLError, OSError) as exc:
            raise DatasetError(f"cannot download {url + rel} ({type(exc).__name__}: {exc}); "
                               "run again to resume") from exc
    (dest / "SHA256SUMS.txt").write_text(sums)
    return dest


def download_ludb(to: str | os.PathLike, base_url: str | None = None) -> Path:
    """Download LUDB 1.0.1 into ``to/ludb`` (see :func:`download`)."""
    dest = download("ludb", to, base_url=base_url)
    if not (dest / "ludb.csv").is_file():
        raise DatasetError(f"{dest}: download finished without ludb.csv")
    return dest
