"""Locating datasets on disk and downloading them from PhysioNet's official file URLs.

The downloader does not trust the server (PhysioNet, or a mirror named by ``--base-url`` or
``$SSL_ECG_PHYSIONET_URL``): the same server publishes the files and their hashes, so a hash check
proves nothing about where a file may be written or how long it may take. Therefore

* every path in ``SHA256SUMS.txt`` and every entry of a downloaded ``RECORDS`` file must be a plain
  relative path (no absolute path, ``..``, ``.``, empty segment, backslash, drive letter, NUL or
  control character) that resolves inside the destination;
* partial files are opened with ``O_NOFOLLOW`` (and ``O_NONBLOCK``, so a planted FIFO cannot block) and
  must be regular files; a symbolic link or other non-regular file where a ``.part`` or final file
  goes is refused, so a planted link cannot redirect a write;
* index files (``SHA256SUMS.txt``, ``RECORDS``) are capped at ``max_index_bytes`` and data files at
  ``max_file_bytes``, both checked against ``Content-Length`` before reading and while streaming;
* each file has a wall-clock deadline (``file_deadline``) and the whole download another
  (``deadline``); a watchdog shuts the connection down when one passes, so a server that drips one
  byte at a time (in the TLS handshake, the headers or the body) is stopped on time, not only by the
  per-read ``timeout``;
* the dataset folder ``to/<name>`` must not be a symbolic link (a planted link would redirect every write);
* a local write failure (disk full, read-only folder) is reported as such, naming the ``.part`` file
  and the OS error, not as a network failure;
* only ``http`` and ``https`` URLs are opened, redirects included.

Every failure is one :class:`~ssl_ecg.errors.DatasetError` line naming the URL or file and what was
expected. A download stopped midway leaves at most a regular ``.part`` file inside the destination,
which the next run resumes and still checks against the published SHA-256 before using it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import ssl
import stat
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ssl_ecg.errors import DatasetError

__all__ = ["user_data_dir", "locate_dataset", "dataset_root", "download", "download_ludb", "MARKERS", "PHYSIONET",
           "safe_relative_path", "unsafe_reason"]

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


# name -> (PhysioNet project, version)
PHYSIONET = {
    "ludb": ("ludb", "1.0.1"),
    "mitdb": ("mitdb", "1.0.0"),
    "ptbxl": ("ptb-xl", "1.0.3"),
    "incart": ("incartdb", "1.0.0"),
}
DEFAULT_BASE_URL = "https://physionet.org/files/"
DEFAULT_TIMEOUT = 60.0  # seconds without any data before a read gives up
DEFAULT_FILE_DEADLINE = 3600.0  # seconds for one file, however the server paces it
DEFAULT_DEADLINE = 24 * 3600.0  # seconds for a whole dataset
DEFAULT_MAX_FILE_BYTES = 2 << 30  # PhysioNet's ECG files are a few MiB; 2 GiB leaves room
DEFAULT_MAX_INDEX_BYTES = 32 << 20  # PTB-XL's SHA256SUMS.txt is about 9 MiB
INDEX_NAMES = ("SHA256SUMS.txt", "RECORDS")  # files held in memory and parsed, capped at max_index_bytes

_SCHEMES = ("http", "https")
_CHUNK = 1 << 16
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_DRIVE = re.compile(r"[A-Za-z]:")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)


def _base_url(base_url: str | None) -> str:
    """The base URL from the argument, ``$SSL_ECG_PHYSIONET_URL`` or PhysioNet; only http(s) is accepted."""
    source = ("base_url (--base-url)" if base_url else
              "$SSL_ECG_PHYSIONET_URL" if os.environ.get("SSL_ECG_PHYSIONET_URL") else "the default")
    url = base_url or os.environ.get("SSL_ECG_PHYSIONET_URL") or DEFAULT_BASE_URL
    _check_scheme(url, f"download: {source} {url!r}")
    return url if url.endswith("/") else url + "/"


def _check_scheme(url: str, what: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in _SCHEMES or not parts.netloc:
        raise DatasetError(f"{what}: scheme {parts.scheme + ':' if parts.scheme else 'none'} is not allowed; "
                           "expected an http:// or https:// URL with a host")


def unsafe_reason(rel: str) -> str | None:
    """Why ``rel`` is not a plain relative path, or ``None`` when it is one."""
    if not rel:
        return "is empty"
    if "\x00" in rel:
        return "contains NUL"
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        return "contains a control character"
    if "\\" in rel:
        return "contains a backslash"
    if _DRIVE.match(rel):
        return "starts with a drive letter"
    if rel.startswith("/"):
        return "is absolute"
    segments = rel.split("/")
    if "" in segments:
        return "has an empty segment"
    if ".." in segments:
        return "has a '..' segment"
    if "." in segments:
        return "has a '.' segment"
    return None


def safe_relative_path(base: Path, rel: str, source: str) -> Path:
    """``base / rel`` after checking that ``rel`` is a plain relative path resolving inside ``base``.

    Args:
        base: the destination folder, already resolved.
        rel: a path as listed by the server (``/``-separated).
        source: the URL that listed it, named in the error.

    Returns:
        ``base / rel`` (not resolved, so the final component is what gets written).

    Raises:
        DatasetError: naming the entry and ``source`` when ``rel`` is unsafe or resolves outside ``base``
            (through a symbolic link already in the destination).
    """
    reason = unsafe_reason(rel)
    if reason is None:
        target = base / rel
        resolved = target.resolve()
        if resolved != base and resolved.is_relative_to(base):
            return target
        reason = f"resolves to {resolved} (through a symbolic link)"
    raise DatasetError(f"{source}: entry {rel!r} {reason}; expected a relative path inside {base}")


class _Watch:
    """A deadline for one request: when it passes, every socket the request opened is shut down.

    Shutting the socket down wakes a read blocked on it, so a server dripping bytes in the headers
    or the body is stopped at the deadline rather than after the last of many per-read timeouts.
    """

    def __init__(self, end: float, label: str):
        self.end, self.label = end, label
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(end - time.monotonic(), 0.0), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watch:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            _shutdown(sock)

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def check(self) -> None:
        if self.expired or time.monotonic() >= self.end:
            self.expired = True
            raise TimeoutError("deadline")


def _shutdown(sock: socket.socket) -> None:
    try:  # the plain socket method also works on an SSL socket without touching its TLS state
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _WatchedOpen:
    """Mixin for urllib's HTTP(S) handlers: registers each connection's socket with a :class:`_Watch`."""

    def __init__(self, watch: _Watch):
        super().__init__()
        self.watch = watch

    def do_open(self, http_class, req, **kwargs):  # noqa: ANN001 (urllib's signature)
        watch = self.watch

        def connection(host, **kw):  # noqa: ANN001
            conn = http_class(host, **kw)
            connect = conn.connect
            if isinstance(getattr(conn, "_context", None), ssl.SSLContext):  # https: watch the handshake too
                conn._context = _WatchedContext(conn._context, watch)

            def watched_connect() -> None:
                connect()
                watch.attach(conn.sock)

            conn.connect = watched_connect
            return conn

        return super().do_open(connection, req, **kwargs)


class _WatchedContext:
    """An :class:`ssl.SSLContext` stand-in whose ``wrap_socket`` registers the TLS socket before the handshake.

    ``HTTPSConnection.connect`` wraps the TCP socket and completes the handshake in one call; a server
    dripping its ServerHello would hold that call for as long as each byte arrives within the per-read
    timeout. Here the socket is wrapped without the handshake, attached to the :class:`_Watch`, and only
    then shaken hands with, so the deadline shuts it down mid-handshake like mid-body.
    """

    def __init__(self, context: ssl.SSLContext, watch: _Watch):
        self._context, self._watch = context, watch

    def __getattr__(self, name: str) -> object:
        return getattr(self._context, name)

    def wrap_socket(self, sock: socket.socket, **kwargs: object) -> ssl.SSLSocket:
        kwargs["do_handshake_on_connect"] = False
        tls = self._context.wrap_socket(sock, **kwargs)
        try:
            self._watch.attach(tls)
            self._watch.check()
            tls.do_handshake()  # checks the certificate and host name, as the implicit handshake would
        except BaseException:
            tls.close()
            raise
        return tls


class _WatchedHTTP(_WatchedOpen, urllib.request.HTTPHandler):
    pass


class _WatchedHTTPS(_WatchedOpen, urllib.request.HTTPSHandler):
    pass


class _Redirect(urllib.request.HTTPRedirectHandler):
    """Follows redirects only to http(s) URLs (urllib alone would also follow one to ftp)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        _check_scheme(newurl, f"{req.full_url}: redirect to {newurl!r}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@contextmanager
def _get(url: str, headers: dict[str, str], timeout: float, watch: _Watch) -> Iterator[http.client.HTTPResponse]:
    """Open ``url`` (http or https only) under ``watch``; the response is closed on exit."""
    _check_scheme(url, url)
    opener = urllib.request.build_opener(_Redirect, _WatchedHTTP(watch), _WatchedHTTPS(watch))
    with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        yield response


def _failure(url: str, exc: BaseException, watch: _Watch, timeout: float) -> str:
    """One line saying why fetching ``url`` failed."""
    if watch.expired:
        return (f"{url}: not finished within {watch.label}; expected the whole file by then "
                "(the server is too slow or stalled)")
    if isinstance(exc, urllib.error.HTTPError):
        return f"{url}: HTTP {exc.code} {exc.reason}; expected 200 OK (or 206 when resuming)"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"{url}: no data for {timeout:g} s (timeout); expected the server to keep sending"
    if isinstance(exc, urllib.error.URLError):
        return f"{url}: cannot connect ({reason})"
    return f"{url}: {type(exc).__name__}: {exc}"


def _content_length(url: str, response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise DatasetError(f"{url}: Content-Length {value!r}; expected a non-negative integer")
    return int(value)


def _declared_length(url: str, response: http.client.HTTPResponse, have: int, limit: int,
                     limit_name: str) -> int | None:
    """The body's ``Content-Length`` (``None`` when absent), refused before reading when ``have`` + it > ``limit``."""
    length = _content_length(url, response)
    if length is not None and have + length > limit:
        raise _TooBig(f"{url}: Content-Length {length}" + (f" (+{have} bytes already here)" if have else "") +
                      f" exceeds {limit_name}={limit}; expected at most {limit} bytes")
    return length


def _stream(url: str, response: http.client.HTTPResponse, write: Callable[[bytes], object], have: int,
            length: int | None, limit: int, limit_name: str, watch: _Watch) -> int:
    """Copy the body to ``write``, keeping ``have`` + bytes under ``limit``; returns the byte count.

    Checks the running total against ``limit`` while reading (bodies without a length), the deadline
    before every read, and the total against the declared ``length`` at the end.
    """
    got = 0
    while True:
        watch.check()
        chunk = response.read1(_CHUNK)
        if not chunk:
            break
        got += len(chunk)
        if have + got > limit:
            raise _TooBig(f"{url}: more than {limit_name}={limit} bytes" + (f" (with {have} already here)" if have
                          else "") + f"; expected at most {limit} bytes")
        write(chunk)
    if length is None or got != length:
        watch.check()  # the watchdog's shut-down socket reads as the end of the body
    if length is not None and got != length:
        raise _ShortBody(f"{url}: received {got} bytes; expected Content-Length {length}; run again to resume")
    return got


class _TooBig(DatasetError):
    """The body exceeded its cap (the partial file is removed)."""


class _ShortBody(DatasetError):
    """The body ended before its declared length (the partial file is kept to resume)."""


def _fetch_index(url: str, timeout: float, limit: int, end: float, label: str) -> bytes:
    """The whole of a small index file, at most ``limit`` bytes, before ``end``."""
    data = bytearray()
    with _Watch(end, label) as watch:
        try:
            with _get(url, {}, timeout, watch) as response:
                length = _declared_length(url, response, 0, limit, "max_index_bytes")
                _stream(url, response, data.extend, 0, length, limit, "max_index_bytes", watch)
        except DatasetError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise _FetchError(_failure(url, exc, watch, timeout), exc) from exc
    return bytes(data)


class _FetchError(DatasetError):
    """A network failure; ``cause`` is what urllib raised."""

    def __init__(self, message: str, cause: BaseException):
        super().__init__(message)
        self.cause = cause


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _regular_or_missing(path: Path) -> os.stat_result | None:
    """``lstat(path)``, ``None`` when absent; an error for a symbolic link or any other non-regular file."""
    st = _lstat(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise DatasetError(f"{path}: is {kind}; expected a regular file or nothing (remove it and run again)")
    return st


def _open_nofollow(path: Path, flags: int) -> int:
    """``os.open`` without following a link in the last component; the result must be a regular file."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | _BINARY, 0o644)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot open without following links ({exc.strerror}); "
                           "expected a regular file or nothing (remove it and run again)") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DatasetError(f"{path}: not a regular file; expected a regular file or nothing")
    return fd


class _WriteError(DatasetError):
    """Writing the ``.part`` file failed locally (disk full, read-only folder, I/O error)."""


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (unbuffered, so a full disk is noticed at this write)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _part_writer(fd: int, part: Path) -> Callable[[bytes], None]:
    """A writer for :func:`_stream` that turns a local ``OSError`` into a :class:`_WriteError` naming ``part``."""

    def write(chunk: bytes) -> None:
        try:
            _write_all(fd, chunk)
        except OSError as exc:
            raise _WriteError(f"{part}: cannot write ({os.strerror(exc.errno) if exc.errno else exc}"
                              f"{f', errno {exc.errno}' if exc.errno else ''}); this is a local error, not the "
                              "network: expected a writable folder with free space (free some, then run again "
                              "to resume)") from exc

    return write


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with os.fdopen(_open_nofollow(path, os.O_RDONLY), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_file(url: str, dest: Path, expected: str, timeout: float, limit: int, limit_name: str, end: float,
                   label: str, check: Callable[[Path], None] | None = None) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming it with an HTTP Range request.

    The ``.part`` file is opened without following links and must be a regular file. The finished
    file is checked against ``expected`` (SHA-256) and then by ``check`` before it is renamed into place.
    A bad hash, a ``check`` failure or an over-large body removes the ``.part`` file; a timeout or a
    short body keeps it to resume.
    """
    part = dest.with_name(dest.name + ".part")
    st = _regular_or_missing(part)
    have = st.st_size if st is not None else 0
    with _Watch(end, label) as watch:
        try:
            with _get(url, {"Range": f"bytes={have}-"} if have else {}, timeout, watch) as response:
                resumed = bool(have) and response.status == 206
                if response.status not in (200, 206):
                    raise DatasetError(f"{url}: HTTP {response.status}; expected 200 OK (or 206 when resuming)")
                if resumed:
                    _check_content_range(url, response, have, limit, limit_name)
                else:
                    have = 0  # a server that ignores Range restarts the file
                length = _declared_length(url, response, have, limit, limit_name)
                flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if resumed else os.O_TRUNC)
                fd = _open_nofollow(part, flags)
                try:
                    _stream(url, response, _part_writer(fd, part), have, length, limit, limit_name, watch)
                finally:
                    os.close(fd)
        except _TooBig:
            if _regular_or_missing(part) is not None:  # a file over the cap is of no use to resume
                part.unlink()
            raise
        except urllib.error.HTTPError as exc:
            if not (exc.code == 416 and have):  # 416 on a resume: nothing left to fetch
                raise DatasetError(_failure(url, exc, watch, timeout) + "; run again to resume") from exc
        except DatasetError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise DatasetError(_failure(url, exc, watch, timeout) + "; run again to resume") from exc
    got = _sha256(part)
    if got != expected:
        part.unlink()
        raise DatasetError(f"{dest}: SHA-256 {got[:12]}... does not match the published {expected[:12]}...; "
                           "the partial file was removed, run the download again")
    if check is not None:
        try:
            check(part)
        except DatasetError:
            part.unlink()
            raise
    os.replace(part, dest)  # renames over a link or file at dest; never writes through one


def _check_content_range(url: str, response: http.client.HTTPResponse, have: int, limit: int,
                         limit_name: str) -> None:
    """A 206 reply must continue at ``have`` (when it says where it starts) and fit under ``limit``."""
    value = response.headers.get("Content-Range")
    if value is None:
        return
    m = _CONTENT_RANGE.fullmatch(value.strip())
    if m is None or int(m.group(1)) != have:
        raise DatasetError(f"{url}: Content-Range {value!r}; expected bytes {have}-... (the partial file is kept)")
    if m.group(3) != "*" and int(m.group(3)) > limit:
        raise _TooBig(f"{url}: Content-Range total {m.group(3)} exceeds {limit_name}={limit}; "
                      f"expected at most {limit} bytes")


def _parse_sums(text: str, source: str, base: Path) -> dict[str, str]:
    """``SHA256SUMS.txt`` as {relative path: lowercase hex}; every path checked with :func:`safe_relative_path`."""
    listing: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(None, 1)
        if len(parts) != 2 or not _HEX64.fullmatch(parts[0]):
            raise DatasetError(f"{source} line {n}: {line[:80]!r}; expected '<64 hex digits> <path>'")
        digest, rel = parts[0].lower(), parts[1]
        rel = rel[1:] if rel.startswith("*") else rel  # binary-mode marker
        safe_relative_path(base, rel, source)
        if listing.setdefault(rel, digest) != digest:
            raise DatasetError(f"{source} line {n}: {rel!r} listed twice with different hashes; expected one")
    return listing


def _records_check(source: str, limit: int) -> Callable[[Path], None]:
    """A check that every whitespace-separated entry of a ``RECORDS`` file stays inside the destination.

    Entries are relative to the folder holding ``RECORDS``, as the dataset loaders read them.
    """

    def check(path: Path) -> None:
        st = _regular_or_missing(path)
        if st is not None and st.st_size > limit:
            raise DatasetError(f"{path}: {st.st_size} bytes; expected at most max_index_bytes={limit}")
        with os.fdopen(_open_nofollow(path, os.O_RDONLY), "rb") as f:
            try:
                text = f.read().decode()
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{source}: not UTF-8 text ({exc.reason}); expected one record per line") from exc
        folder = path.parent.resolve()  # inside the destination, checked before the download
        for entry in text.split():
            safe_relative_path(folder, entry, source)

    return check


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fresh temporary file (``O_EXCL``) and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _refuse_linked_folder(folder: Path) -> None:
    """An error when the dataset folder ``folder`` is a symbolic link or exists as something other than a folder."""
    st = _lstat(folder)
    if st is None or stat.S_ISDIR(st.st_mode):
        return
    if stat.S_ISLNK(st.st_mode):
        raise DatasetError(f"{folder}: the dataset folder is a symbolic link (to {os.readlink(folder)!r}); "
                           "expected a real folder or nothing (remove the link, or pass its target as --to)")
    raise DatasetError(f"{folder}: exists and is not a folder; expected a folder or nothing")


def download(name: str, to: str | os.PathLike, base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT,
             files: list[str] | None = None, *, file_deadline: float = DEFAULT_FILE_DEADLINE,
             deadline: float = DEFAULT_DEADLINE, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
             max_index_bytes: int = DEFAULT_MAX_INDEX_BYTES) -> Path:
    """Download a PhysioNet dataset into ``to/<name>`` from its official file URLs.

    The published ``SHA256SUMS.txt`` lists the files; each is downloaded (resuming
    a ``.part`` file if present), checked against its SHA-256 and renamed into
    place. Files already present with the right hash are skipped. The server is not
    trusted with paths, sizes or time; see the module docstring.

    Args:
        name: one of :data:`PHYSIONET` (``ludb``, ``mitdb``, ``ptbxl``, ``incart``).
        to: destination folder; the dataset lands in ``to/<name>``.
        base_url: PhysioNet's file index (default ``$SSL_ECG_PHYSIONET_URL`` or
            ``https://physionet.org/files/``), for mirrors and tests; http or https only.
        timeout: seconds a connection or a single read may wait for data.
        files: only these files (paths as in SHA256SUMS.txt).
        file_deadline: seconds one file (index or data) may take in all.
        deadline: seconds the whole download may take.
        max_file_bytes: largest data file accepted.
        max_index_bytes: largest ``SHA256SUMS.txt`` or ``RECORDS`` accepted.

    Raises:
        DatasetError: unknown name, a URL that is not http(s), no connection (offline), an
            unsafe path in SHA256SUMS.txt or RECORDS, a symbolic link or non-regular file where a
            file goes, a body over its cap or shorter than its Content-Length, an HTTP error, a
            timeout or a passed deadline, or a checksum mismatch.
    """
    if name not in PHYSIONET:
        raise DatasetError(f"download: {name!r} is not downloadable here; expected one of {sorted(PHYSIONET)}")
    for arg, value in (("timeout", timeout), ("file_deadline", file_deadline), ("deadline", deadline),
                       ("max_file_bytes", max_file_bytes), ("max_index_bytes", max_index_bytes)):
        if not value > 0:
            raise DatasetError(f"download: {arg}={value!r}; expected a positive number")
    start = time.monotonic()
    end_all = start + deadline
    project, version = PHYSIONET[name]
    url = f"{_base_url(base_url)}{project}/{version}/"

    def file_clock() -> tuple[float, str]:
        now = time.monotonic()
        if now + file_deadline <= end_all:
            return now + file_deadline, f"the per-file deadline of {file_deadline:g} s (file_deadline)"
        return end_all, f"the download's deadline of {deadline:g} s (deadline)"

    sums_url = url + "SHA256SUMS.txt"
    try:
        raw = _fetch_index(sums_url, timeout, max_index_bytes, *file_clock())
    except _FetchError as exc:
        offline = isinstance(exc.cause, urllib.error.URLError) and not isinstance(exc.cause, urllib.error.HTTPError)
        hint = (f"; are you offline? Pass --data or set SSL_ECG_DATA to a folder holding {name}/" if offline else "")
        raise DatasetError(f"cannot download {name}: {exc}{hint}") from exc
    try:
        sums = raw.decode()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{sums_url}: not UTF-8 text ({exc.reason}); expected '<sha256> <path>' lines") from exc

    folder = Path(to, name)
    _refuse_linked_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"{folder}: cannot create the destination ({exc.strerror})") from exc
    _refuse_linked_folder(folder)  # again, in case one was planted meanwhile
    dest = folder.resolve()
    listing = _parse_sums(sums, sums_url, dest)
    wanted = files if files is not None else list(listing)
    missing = [f for f in wanted if f not in listing]
    if missing:
        raise DatasetError(f"{sums_url} does not list {missing[:5]}")
    for rel in wanted:
        file_url = url + urllib.parse.quote(rel, safe="/")
        target = safe_relative_path(dest, rel, sums_url)
        is_index = target.name in INDEX_NAMES
        limit, limit_name = (max_index_bytes, "max_index_bytes") if is_index else (max_file_bytes, "max_file_bytes")
        check = _records_check(file_url, max_index_bytes) if target.name == "RECORDS" else None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            safe_relative_path(dest, rel, sums_url)  # again, now that the folders exist
            if _regular_or_missing(target) is not None and _sha256(target) == listing[rel]:
                if check is not None:
                    try:
                        check(target)
                    except DatasetError:
                        target.unlink()
                        raise
                continue
            end, label = file_clock()
            if time.monotonic() >= end_all:
                raise DatasetError(f"{file_url}: not started within the download's deadline of {deadline:g} s "
                                   "(deadline); run again to resume")
            _download_file(file_url, target, listing[rel], timeout, limit, limit_name, end, label, check)
        except OSError as exc:
            raise DatasetError(f"{target}: {exc.strerror or exc}; expected a writable regular file inside "
                               f"{dest}") from exc
    try:
        _write_atomic(dest / "SHA256SUMS.txt", raw)
    except OSError as exc:
        raise DatasetError(f"{dest / 'SHA256SUMS.txt'}: cannot write ({exc.strerror or exc})") from exc
    return dest


def download_ludb(to: str | os.PathLike, base_url: str | None = None) -> Path:
    """Download LUDB 1.0.1 into ``to/ludb`` (see :func:`download`)."""
    dest = download("ludb", to, base_url=base_url)
    if not (dest / "ludb.csv").is_file():
        raise DatasetError(f"{dest}: download finished without ludb.csv")
    return dest
