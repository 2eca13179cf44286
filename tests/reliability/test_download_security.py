"""The downloader against a hostile HTTP server on 127.0.0.1 (issue 17).

Each test starts its own ``ThreadingHTTPServer`` on port 0 whose routes misbehave on purpose:
paths that escape the destination, planted links, endless or dripping bodies, huge lengths,
wrong schemes, short bodies and bad hashes. Every test is bounded in time (small deadlines and
timeouts) and talks only to 127.0.0.1.
"""

import hashlib
import os
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from ssl_ecg.cli import main
from ssl_ecg.data import download as dl
from ssl_ecg.data.download import download
from ssl_ecg.errors import DatasetError, SslEcgError

PREFIX = "/ludb/1.0.1/"


class Handler(BaseHTTPRequestHandler):
    """Dispatches GET to ``server.routes[path](handler)``; 404 otherwise. Records (path, Range)."""

    protocol_version = "HTTP/1.0"  # one request per connection; close-delimited bodies allowed

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Range")))
        route = self.server.routes.get(self.path)
        try:
            if route is None:
                self.send_error(404)
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should


class Site:
    """A local server and helpers to publish files under ``/ludb/1.0.1/``."""

    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.routes, self.httpd.requests = {}, []
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.sums_url = f"{self.url}ludb/1.0.1/SHA256SUMS.txt"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def routes(self):
        return self.httpd.routes

    @property
    def requests(self):
        return self.httpd.requests

    def publish(self, files: dict, listed: dict | None = None) -> None:
        """Serve ``files`` (rel -> bytes) and a SHA256SUMS.txt listing ``listed`` (rel -> bytes; default files)."""
        listed = files if listed is None else listed
        for rel, data in files.items():
            self.routes[PREFIX + rel] = body(data)
        sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {rel}\n" for rel, data in listed.items())
        self.routes[PREFIX + "SHA256SUMS.txt"] = body(sums.encode())

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def site():
    s = Site()
    yield s
    s.close()


def body(data: bytes):
    """A static file with single-range support (206 + Content-Range)."""

    def route(h):
        start = 0
        if h.headers.get("Range"):
            start = int(h.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(data) - start))
        h.end_headers()
        h.wfile.write(data[start:])

    return route


def huge_length(h):
    """Claims 10**15 bytes, sends 1 MiB, then hangs up."""
    h.send_response(200)
    h.send_header("Content-Length", str(10**15))
    h.end_headers()
    h.wfile.write(b"0" * (1 << 20))


def endless(h):
    """No Content-Length; 64 KiB blocks until the client hangs up (at most ~1 GiB)."""
    h.send_response(200)
    h.end_headers()
    block = b"a" * (1 << 16)
    for _ in range(1 << 14):
        h.wfile.write(block)


def drip(in_headers: bool, period: float = 0.05, seconds: float = 20.0):
    """One byte every ``period`` s, in an endless header or in the body of a 1 MB file."""

    def route(h):
        if in_headers:
            h.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
        else:
            h.send_response(200)
            h.send_header("Content-Length", str(10**6))
            h.end_headers()
        h.wfile.flush()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(period)

    return route


def silent(seconds: float):
    def route(h):
        time.sleep(seconds)

    return route


def short(data: bytes, claimed: int):
    def route(h):
        h.send_response(200)
        h.send_header("Content-Length", str(claimed))
        h.end_headers()
        h.wfile.write(data)

    return route


def status(code: int):
    def route(h):
        h.send_error(code)

    return route


def redirect(location: str):
    def route(h):
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def ludb_files(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"ludb.csv": b"ID,Sex\n1,F\n", "RECORDS": b"data/1\n", "data/1.hea": b"1 12 500 5000\n",
            "data/1.dat": rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()}


def tree(folder):
    """Every path under ``folder`` (links not followed), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# --- 1. path traversal --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry, reason", [
    ("../../escape.txt", "'..' segment"),
    ("data/../../../escape.txt", "'..' segment"),
    ("..\\..\\escape.txt", "backslash"),
    ("C:/escape.txt", "drive letter"),
    ("data//escape.txt", "empty segment"),
    ("./escape.txt", "'.' segment"),
    ("data/a\x00b", "NUL"),
])
def test_traversal_in_sha256sums_is_refused_before_any_file_is_fetched(site, tmp_path, entry, reason):
    site.publish({"ludb.csv": b"ok\n", entry: b"pwned\n"})  # served too, so a trusting client would write it
    to = tmp_path / "work" / "to"
    with pytest.raises(DatasetError) as err:
        download("ludb", to, base_url=site.url, timeout=5)
    msg = str(err.value)
    assert site.sums_url in msg and repr(entry) in msg and reason in msg and "\n" not in msg
    assert [p for p, _ in site.requests] == [PREFIX + "SHA256SUMS.txt"]  # nothing else was fetched
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "work" / "escape.txt").exists()
    assert tree(to / "ludb") == []


def test_absolute_path_in_sha256sums_is_refused(site, tmp_path):
    outside = tmp_path / "abs" / "x.txt"
    site.publish({"ludb.csv": b"ok\n", str(outside): b"pwned\n"})
    with pytest.raises(DatasetError, match=rf"SHA256SUMS\.txt: entry '{outside}' is absolute; expected a relative"):
        download("ludb", tmp_path / "to", base_url=site.url, timeout=5)
    assert not outside.exists() and not outside.parent.exists()


def test_traversal_through_a_planted_directory_link_is_refused(site, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "to" / "ludb").mkdir(parents=True)
    (tmp_path / "to" / "ludb" / "data").symlink_to(outside, target_is_directory=True)
    site.publish(ludb_files())
    with pytest.raises(DatasetError, match=r"entry 'data/1\.hea' resolves to .*outside.* symbolic link"):
        download("ludb", tmp_path / "to", base_url=site.url, timeout=5)
    assert tree(outside) == []


@pytest.mark.parametrize("already_there", [False, True])
def test_traversal_in_records_is_refused_and_records_not_kept(site, tmp_path, already_there):
    files = ludb_files()
    files["RECORDS"] = b"data/1\n../../../escape\n"
    site.publish(files)
    dest = tmp_path / "to" / "ludb"
    if already_there:  # e.g. left by an earlier version of the downloader
        dest.mkdir(parents=True)
        (dest / "RECORDS").write_bytes(files["RECORDS"])
    records_url = f"{site.url}ludb/1.0.1/RECORDS"
    with pytest.raises(DatasetError, match=rf"{records_url}: entry '\.\./\.\./\.\./escape' has a '\.\.' segment"):
        download("ludb", tmp_path / "to", base_url=site.url, timeout=5)
    assert not (dest / "RECORDS").exists() and not (dest / "RECORDS.part").exists()
    assert not (dest / "SHA256SUMS.txt").exists()


def test_malformed_and_conflicting_sums_lines_are_errors(site, tmp_path):
    site.routes[PREFIX + "SHA256SUMS.txt"] = body(b"not-a-hash ludb.csv\n")
    with pytest.raises(DatasetError, match=r"SHA256SUMS\.txt line 1: .*expected '<64 hex digits> <path>'"):
        download("ludb", tmp_path, base_url=site.url, timeout=5)
    h1, h2 = "a" * 64, "b" * 64
    site.routes[PREFIX + "SHA256SUMS.txt"] = body(f"{h1} x\n{h2} x\n".encode())
    with pytest.raises(DatasetError, match=r"line 2: 'x' listed twice with different hashes"):
        download("ludb", tmp_path, base_url=site.url, timeout=5)


# --- 2. planted links and special files -------------------------------------------------------------------------

def test_planted_part_symlink_leaves_its_target_untouched(site, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    dest = tmp_path / "to" / "ludb"
    (dest / "data").mkdir(parents=True)
    part = dest / "data" / "1.dat.part"
    part.symlink_to(victim)
    site.publish(ludb_files())
    with pytest.raises(DatasetError, match=r"1\.dat\.part: is a symbolic link; expected a regular file or nothing"):
        download("ludb", tmp_path / "to", base_url=site.url, timeout=5)
    assert victim.read_bytes() == b"precious\n"
    assert part.is_symlink() and not (dest / "data" / "1.dat").exists()
    assert PREFIX + "data/1.dat" not in [p for p, _ in site.requests]


def test_planted_final_file_symlink_is_refused(site, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    dest = tmp_path / "to" / "ludb"
    dest.mkdir(parents=True)
    (dest / "ludb.csv").symlink_to(victim)
    site.publish(ludb_files())
    with pytest.raises(DatasetError, match=r"entry 'ludb\.csv' resolves to .*victim\.txt \(through a symbolic link"):
        download("ludb", tmp_path / "to", base_url=site.url, timeout=5)
    assert victim.read_bytes() == b"precious\n"


def test_planted_fifo_part_is_refused_without_blocking(site, tmp_path):
    dest = tmp_path / "to" / "ludb"
    dest.mkdir(parents=True)
    os.mkfifo(dest / "ludb.csv.part")
    site.publish(ludb_files())
    with pytest.raises(DatasetError, match=r"ludb\.csv\.part: is not a regular file"):
        download("ludb", tmp_path / "to", base_url=site.url, timeout=5)


def test_partial_files_open_without_following_links(tmp_path):
    """The open itself refuses a link or FIFO, so a link planted after the lstat check is refused too."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(DatasetError, match=r"link: cannot open without following links"):
        dl._open_nofollow(tmp_path / "link", os.O_WRONLY | os.O_TRUNC)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(DatasetError, match=r"fifo: (cannot open|not a regular file)"):
        dl._open_nofollow(tmp_path / "fifo", os.O_WRONLY)
    assert victim.read_bytes() == b"precious"


def test_planted_sums_symlink_is_replaced_not_written_through(site, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    dest = tmp_path / "to" / "ludb"
    dest.mkdir(parents=True)
    (dest / "SHA256SUMS.txt").symlink_to(victim)
    site.publish(ludb_files())
    download("ludb", tmp_path / "to", base_url=site.url, timeout=5)
    assert victim.read_bytes() == b"precious\n"
    assert not (dest / "SHA256SUMS.txt").is_symlink() and (dest / "SHA256SUMS.txt").is_file()


# --- 5. unbounded reads, deadlines, schemes, HTTP errors -----------------------------------------------------------

def test_huge_content_length_on_sums_fails_fast_with_bounded_memory(site, tmp_path):
    site.routes[PREFIX + "SHA256SUMS.txt"] = huge_length
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(DatasetError, match=r"SHA256SUMS\.txt: Content-Length 1000000000000000 exceeds "
                                               r"max_index_bytes=33554432; expected at most 33554432 bytes"):
            download("ludb", tmp_path, base_url=site.url, timeout=5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < 5
    assert peak < 4 << 20  # no attempt to buffer the claimed body


def test_huge_content_length_on_a_data_file_leaves_no_part(site, tmp_path):
    files = ludb_files()
    site.publish(files)
    site.routes[PREFIX + "data/1.dat"] = huge_length
    with pytest.raises(DatasetError, match=r"data/1\.dat: Content-Length 1000000000000000 exceeds "
                                           r"max_file_bytes=1000000;"):
        download("ludb", tmp_path, base_url=site.url, timeout=5, max_file_bytes=10**6)
    assert not (tmp_path / "ludb" / "data" / "1.dat.part").exists()
    assert not (tmp_path / "ludb" / "data" / "1.dat").exists()


def test_endless_body_without_length_is_capped(site, tmp_path):
    site.routes[PREFIX + "SHA256SUMS.txt"] = endless
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=r"SHA256SUMS\.txt: more than max_index_bytes=1048576 bytes"):
            download("ludb", tmp_path, base_url=site.url, timeout=5, max_index_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 << 20
    site.publish(ludb_files())
    site.routes[PREFIX + "data/1.dat"] = endless
    with pytest.raises(DatasetError, match=r"data/1\.dat: more than max_file_bytes=300000 bytes"):
        download("ludb", tmp_path, base_url=site.url, timeout=5, max_file_bytes=300_000)
    assert not (tmp_path / "ludb" / "data" / "1.dat.part").exists()


@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_slow_drip_is_stopped_by_the_file_deadline(site, tmp_path, in_headers):
    site.publish(ludb_files())
    site.routes[PREFIX + "data/1.dat"] = drip(in_headers)
    t0 = time.monotonic()
    with pytest.raises(DatasetError, match=r"data/1\.dat: not finished within the per-file deadline of 1 s "
                                           r"\(file_deadline\)") as err:
        download("ludb", tmp_path, base_url=site.url, timeout=5, file_deadline=1.0)
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 4, elapsed  # well before the 20 s drip ends; the 5 s per-read timeout never fires
    assert "\n" not in str(err.value)
    part = tmp_path / "ludb" / "data" / "1.dat.part"
    if not in_headers:  # what arrived stays as a regular .part to resume; it is hash-checked before use
        assert part.is_file() and not part.is_symlink() and 0 < part.stat().st_size < 1000
    assert not (tmp_path / "ludb" / "data" / "1.dat").exists()


def test_slow_drip_is_stopped_by_the_download_deadline(site, tmp_path):
    site.publish(ludb_files())
    site.routes[PREFIX + "data/1.dat"] = drip(False)
    t0 = time.monotonic()
    with pytest.raises(DatasetError, match=r"not finished within the download's deadline of 1\.5 s \(deadline\)"):
        download("ludb", tmp_path, base_url=site.url, timeout=5, deadline=1.5)
    assert time.monotonic() - t0 < 4


def test_silent_server_hits_the_read_timeout(site, tmp_path):
    site.publish(ludb_files())
    site.routes[PREFIX + "ludb.csv"] = silent(5)
    t0 = time.monotonic()
    with pytest.raises(DatasetError, match=r"ludb\.csv: no data for 0\.5 s \(timeout\); .* run again to resume"):
        download("ludb", tmp_path, base_url=site.url, timeout=0.5)
    assert time.monotonic() - t0 < 4


@pytest.mark.parametrize("url, scheme", [("ftp://127.0.0.1/", "ftp"), ("file:///etc/", "file"),
                                         ("javascript:alert(1)", "javascript")])
def test_bad_scheme_is_named(tmp_path, url, scheme):
    with pytest.raises(DatasetError, match=rf"base_url \(--base-url\) .*: scheme {scheme}: is not allowed; "
                                           "expected an http:// or https:// URL"):
        download("ludb", tmp_path, base_url=url)
    assert tree(tmp_path) == []


def test_bad_scheme_from_the_environment_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_ECG_PHYSIONET_URL", "gopher://127.0.0.1/")
    with pytest.raises(DatasetError, match=r"\$SSL_ECG_PHYSIONET_URL 'gopher://127\.0\.0\.1/': scheme gopher:"):
        download("ludb", tmp_path)


def test_redirect_to_another_scheme_is_refused(site, tmp_path):
    site.routes[PREFIX + "SHA256SUMS.txt"] = redirect("ftp://127.0.0.1/etc/passwd")
    with pytest.raises(DatasetError, match=r"SHA256SUMS\.txt: redirect to 'ftp://127\.0\.0\.1/etc/passwd': "
                                           "scheme ftp: is not allowed"):
        download("ludb", tmp_path, base_url=site.url, timeout=5)


@pytest.mark.parametrize("where", ["SHA256SUMS.txt", "data/1.dat"])
def test_http_errors_are_one_line(site, tmp_path, where):
    site.publish(ludb_files())
    site.routes[PREFIX + where] = status(500 if where == "SHA256SUMS.txt" else 404)
    code = 500 if where == "SHA256SUMS.txt" else 404
    with pytest.raises(DatasetError, match=rf"{site.url}ludb/1\.0\.1/{where}: HTTP {code} ") as err:
        download("ludb", tmp_path, base_url=site.url, timeout=5)
    assert "\n" not in str(err.value) and "offline" not in str(err.value)


def test_short_body_keeps_a_resumable_part_and_the_next_run_completes(site, tmp_path):
    files = ludb_files()
    site.publish(files)
    data = files["data/1.dat"]
    site.routes[PREFIX + "data/1.dat"] = short(data[:120_000], len(data))
    with pytest.raises(DatasetError, match=rf"data/1\.dat: received 120000 bytes; expected Content-Length {len(data)}"):
        download("ludb", tmp_path, base_url=site.url, timeout=5)
    part = tmp_path / "ludb" / "data" / "1.dat.part"
    assert part.read_bytes() == data[:120_000] and not (tmp_path / "ludb" / "data" / "1.dat").exists()
    site.routes[PREFIX + "data/1.dat"] = body(data)
    site.requests.clear()
    download("ludb", tmp_path, base_url=site.url, timeout=5)
    assert (PREFIX + "data/1.dat", "bytes=120000-") in site.requests
    assert (tmp_path / "ludb" / "data" / "1.dat").read_bytes() == data and not part.exists()


def test_hash_mismatch_leaves_nothing_to_trust(site, tmp_path):
    files = ludb_files()
    site.publish(files)
    site.routes[PREFIX + "data/1.dat"] = body(files["data/1.dat"][::-1])
    with pytest.raises(DatasetError, match=r"1\.dat: SHA-256 .* does not match the published"):
        download("ludb", tmp_path, base_url=site.url, timeout=5)
    assert not (tmp_path / "ludb" / "data" / "1.dat").exists()
    assert not (tmp_path / "ludb" / "data" / "1.dat.part").exists()


def test_resume_at_the_wrong_offset_is_refused(site, tmp_path):
    files = ludb_files()
    site.publish(files)
    data = files["data/1.dat"]
    part = tmp_path / "ludb" / "data" / "1.dat.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])

    def wrong_range(h):
        h.send_response(206)
        h.send_header("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    site.routes[PREFIX + "data/1.dat"] = wrong_range
    with pytest.raises(DatasetError, match=r"1\.dat: Content-Range 'bytes 0-.*'; expected bytes 1000-"):
        download("ludb", tmp_path, base_url=site.url, timeout=5)
    assert part.read_bytes() == data[:1000]


def test_bad_limits_are_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"download: file_deadline=0; expected a positive number"):
        download("ludb", tmp_path, base_url="http://127.0.0.1:9/", file_deadline=0)


# --- the CLI and the happy path ----------------------------------------------------------------------------------

def test_cli_prints_one_line_on_hostile_servers(site, tmp_path, capsys):
    site.publish({}, listed={"../../escape.txt": b"x"})
    assert main(["download", "ludb", "--to", str(tmp_path / "to"), "--base-url", site.url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ssl-ecg download: error: ") and "'../../escape.txt'" in err
    assert main(["download", "ludb", "--to", str(tmp_path / "to"), "--base-url", "ftp://127.0.0.1/"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scheme ftp:" in err


def test_everything_raised_is_an_ssl_ecg_error():
    assert issubclass(DatasetError, SslEcgError)
    for cls in (dl._TooBig, dl._ShortBody, dl._FetchError):
        assert issubclass(cls, DatasetError)


def test_happy_path_downloads_resumes_and_skips(site, tmp_path):
    files = ludb_files()
    site.publish(files)
    dest = tmp_path / "to" / "ludb"
    (dest / "data").mkdir(parents=True)
    (dest / "data" / "1.dat.part").write_bytes(files["data/1.dat"][:50_000])
    assert download("ludb", tmp_path / "to", base_url=site.url, timeout=5) == dest.resolve()
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
    assert (PREFIX + "data/1.dat", "bytes=50000-") in site.requests
    assert tree(dest) == sorted(["SHA256SUMS.txt", "data", *files])
    site.requests.clear()
    download("ludb", tmp_path / "to", base_url=site.url, timeout=5)
    assert [p for p, _ in site.requests] == [PREFIX + "SHA256SUMS.txt"]  # verified files are skipped


def test_cli_limits_reach_the_downloader(site, tmp_path, capsys):
    site.publish(ludb_files())
    site.routes[PREFIX + "data/1.dat"] = drip(False)
    t0 = time.monotonic()
    assert main(["download", "ludb", "--to", str(tmp_path), "--base-url", site.url, "--timeout", "5",
                 "--file-deadline", "1"]) == 2
    assert time.monotonic() - t0 < 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "per-file deadline of 1 s (file_deadline)" in err
    site.routes[PREFIX + "data/1.dat"] = body(ludb_files()["data/1.dat"])
    (tmp_path / "ludb" / "data" / "1.dat.part").unlink()
    assert main(["download", "ludb", "--to", str(tmp_path), "--base-url", site.url, "--max-file-mb", "0.1"]) == 2
    assert "exceeds max_file_bytes=104857;" in capsys.readouterr().err
