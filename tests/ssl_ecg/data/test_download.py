"""The downloader against a local HTTP server on 127.0.0.1 serving a LUDB-shaped copy."""

import hashlib
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ssl_ecg.data import load_index
from ssl_ecg.data.download import download, download_ludb
from ssl_ecg.errors import DatasetError


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single-range support, counting requests."""

    ranges = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        header = self.headers.get("Range")
        if not header:
            return super().do_GET()
        start = int(header.split("=")[1].split("-")[0])
        path = self.translate_path(self.path)
        with open(path, "rb") as f:
            data = f.read()
        RangeHandler.ranges.append((self.path, start))
        if start >= len(data):
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(tmp_path, ludb_root):
    site = tmp_path / "site" / "ludb" / "1.0.1"
    (site / "data").mkdir(parents=True)
    files = ["ludb.csv", "RECORDS"] + [f"data/{i}.{ext}" for i in (1, 2, 3) for ext in ("hea", "dat")]
    for rel in files:
        shutil.copy(ludb_root / rel, site / rel)
    (site / "RECORDS").write_text("data/1\ndata/2\ndata/3\n")
    sums = "".join(f"{hashlib.sha256((site / r).read_bytes()).hexdigest()} {r}\n" for r in files)
    (site / "SHA256SUMS.txt").write_text(sums)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(tmp_path / "site")))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", site
    httpd.shutdown()


@pytest.mark.realdata
def test_download_verifies_and_reads(server, tmp_path):
    url, site = server
    dest = download_ludb(tmp_path / "dl", base_url=url)
    assert (dest / "data" / "2.dat").read_bytes() == (site / "data" / "2.dat").read_bytes()
    idx = load_index("ludb", dest)
    assert len(idx) == 3 and idx.read(2).signal.shape == (12, 5000)


@pytest.mark.realdata
def test_download_resumes_a_partial_file(server, tmp_path):
    url, site = server
    dest = tmp_path / "dl" / "ludb"
    (dest / "data").mkdir(parents=True)
    full = (site / "data" / "1.dat").read_bytes()
    (dest / "data" / "1.dat.part").write_bytes(full[:50000])
    RangeHandler.ranges.clear()
    download("ludb", tmp_path / "dl", base_url=url)
    assert ("/ludb/1.0.1/data/1.dat", 50000) in RangeHandler.ranges
    assert (dest / "data" / "1.dat").read_bytes() == full and not (dest / "data" / "1.dat.part").exists()


@pytest.mark.realdata
def test_checksum_mismatch_is_an_error(server, tmp_path):
    url, site = server
    (site / "data" / "3.hea").write_text("tampered\n")
    with pytest.raises(DatasetError, match=r"3\.hea: SHA-256 .* does not match"):
        download("ludb", tmp_path / "dl", base_url=url)


def test_offline_and_unknown(tmp_path):
    with pytest.raises(DatasetError, match="cannot download ludb.*offline"):
        download("ludb", tmp_path, base_url="http://127.0.0.1:9/", timeout=5)
    with pytest.raises(DatasetError, match="not downloadable"):
        download("nosuch", tmp_path)


def test_safe_relative_path(tmp_path):
    from ssl_ecg.data.download import safe_relative_path

    base = tmp_path.resolve()
    assert safe_relative_path(base, "data/1.dat", "SUMS") == base / "data" / "1.dat"
    for bad, why in [("", "is empty"), ("/etc/passwd", "is absolute"), ("a/../../b", r"'\.\.' segment"),
                     ("a\\b", "backslash"), ("c:x", "drive letter"), ("a//b", "empty segment"),
                     ("a/./b", r"'\.' segment"), ("a\nb", "control character"), ("a\x00b", "NUL")]:
        with pytest.raises(DatasetError, match=rf"^SUMS: entry .* {why}; expected a relative path inside"):
            safe_relative_path(base, bad, "SUMS")
    (base / "out").symlink_to(tmp_path.parent, target_is_directory=True)
    with pytest.raises(DatasetError, match=r"entry 'out/x' resolves to .* \(through a symbolic link\)"):
        safe_relative_path(base, "out/x", "SUMS")
