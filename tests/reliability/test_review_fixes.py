"""Fixes from the review of issue 17: cases that still stalled, escaped a folder or ended as an internal error.

* the per-file deadline covers the TLS handshake (a server dripping its ServerHello);
* a symbolic link planted for the dataset folder itself is refused;
* a local write error while downloading is named as such (file and OS error), not as a network failure;
* recipe numbers that are infinite, absurdly large, or too short for one sample are one-line errors (exit 2);
* paths listed inside a dataset's own files (PTB-XL filenames, RECORDS entries) stay inside its root;
* a header (.hea) larger than the cap is refused before it is read.

Servers run on 127.0.0.1 only, and each test is bounded in time.
"""

import errno
import hashlib
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ssl_ecg.data import download as dl
from ssl_ecg.data.download import download
from ssl_ecg.errors import DatasetError

PREFIX = "/ludb/1.0.1/"


# ---------------------------------------------------------------- downloads


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def site():
    """A well-behaved HTTP server publishing ``files`` under ``/ludb/1.0.1/`` with their SHA256SUMS.txt."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.files = {}
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"

    def publish(files: dict) -> None:
        for rel, data in files.items():
            httpd.files[PREFIX + rel] = data
        sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {rel}\n" for rel, data in files.items())
        httpd.files[PREFIX + "SHA256SUMS.txt"] = sums.encode()

    httpd.publish = publish
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


class TlsDripServer:
    """Accepts TCP connections on 127.0.0.1 and drips a TLS record that never completes a ServerHello.

    It sends a handshake record header announcing 16 KiB, then one byte every ``period`` seconds for
    ``seconds``, so each read gets data well within any per-read timeout and the handshake never ends.
    """

    def __init__(self, period: float = 0.05, seconds: float = 15.0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.period, self.seconds = period, seconds
        self.accepted = 0
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        end = time.monotonic() + self.seconds
        try:
            conn.sendall(b"\x16\x03\x03\x40\x00")  # handshake record, TLS 1.2, 16384 bytes to follow
            while time.monotonic() < end and not self.stop.is_set():
                conn.sendall(b"\x02")
                time.sleep(self.period)
        except OSError:
            pass  # the client hung up, as it should
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


def test_file_deadline_covers_a_dripping_tls_handshake(tmp_path):
    server = TlsDripServer()
    outcome = {}

    def run():
        try:
            download("ludb", tmp_path, base_url=f"https://127.0.0.1:{server.port}/", timeout=30,
                     file_deadline=1.0)
        except Exception as exc:  # noqa: BLE001 - inspected below
            outcome["error"] = exc

    t0 = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(10)  # the drip lasts 15 s; a handshake outside the deadline would still be running here
    elapsed = time.monotonic() - t0
    server.close()
    assert not worker.is_alive(), "the download was still in the TLS handshake after 10 s (file_deadline=1)"
    assert server.accepted >= 1
    err = outcome.get("error")
    assert isinstance(err, DatasetError), err
    assert "SHA256SUMS.txt: not finished within the per-file deadline of 1 s (file_deadline)" in str(err)
    assert "\n" not in str(err)
    assert 1.0 <= elapsed < 4, elapsed


def test_dripping_tls_handshake_also_stops_at_the_download_deadline(tmp_path):
    server = TlsDripServer()
    t0 = time.monotonic()
    try:
        with pytest.raises(DatasetError, match=r"not finished within the download's deadline of 1\.5 s"):
            download("ludb", tmp_path, base_url=f"https://127.0.0.1:{server.port}/", timeout=5, deadline=1.5)
    finally:
        server.close()
    assert time.monotonic() - t0 < 4


def test_symlinked_dataset_folder_is_refused(site, tmp_path):
    site.publish({"ludb.csv": b"id\n1\n"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    to = tmp_path / "to"
    to.mkdir()
    (to / "ludb").symlink_to(elsewhere)
    with pytest.raises(DatasetError, match=r"to/ludb: the dataset folder is a symbolic link .*elsewhere.*; "
                                           r"expected a real folder or nothing") as err:
        download("ludb", to, base_url=site.url, timeout=5)
    assert "\n" not in str(err.value)
    assert list(elsewhere.iterdir()) == []  # nothing was written through the link
    (to / "ludb").unlink()  # a real folder works
    assert (download("ludb", to, base_url=site.url, timeout=5) / "ludb.csv").read_bytes() == b"id\n1\n"


def test_dataset_path_that_is_a_file_is_refused(site, tmp_path):
    site.publish({"ludb.csv": b"id\n1\n"})
    (tmp_path / "ludb").write_text("not a folder")
    with pytest.raises(DatasetError, match=r"ludb: exists and is not a folder"):
        download("ludb", tmp_path, base_url=site.url, timeout=5)


def test_disk_full_while_writing_is_a_local_error_not_a_network_one(site, tmp_path, monkeypatch):
    site.publish({"ludb.csv": b"id\n1\n" * 1000})

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dl, "_write_all", full)
    with pytest.raises(DatasetError) as err:
        download("ludb", tmp_path, base_url=site.url, timeout=5)
    msg = str(err.value)
    assert "ludb/ludb.csv.part: cannot write (No space left on device, errno 28)" in msg
    assert "local error, not the network" in msg
    assert "http://" not in msg and "\n" not in msg
    monkeypatch.undo()  # room again: the next run completes
    assert (download("ludb", tmp_path, base_url=site.url, timeout=5) / "ludb.csv").stat().st_size == 5000


def test_unbuffered_writer_writes_everything(tmp_path):
    part = tmp_path / "x.part"
    fd = dl._open_nofollow(part, dl.os.O_WRONLY | dl.os.O_CREAT)
    try:
        dl._part_writer(fd, part)(b"abc" * 100_000)
    finally:
        dl.os.close(fd)
    assert part.read_bytes() == b"abc" * 100_000


# ---------------------------------------------------------------- recipes through the CLI

from ssl_ecg.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _one_line_exit_2(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and "internal error" not in err, err
    return err


@pytest.mark.parametrize("override, expected", [
    ("fs=.inf", r"fs=inf: expected a number > 0 \(finite: inf and nan are not allowed\)"),
    ("fs=.nan", r"fs=nan: expected a number > 0 \(finite: inf and nan are not allowed\)"),
    ("lr=.inf", r"lr=inf: expected a number > 0 \(finite: inf and nan are not allowed\)"),
    ("temperature=-.inf", r"temperature=-inf: expected a number > 0 \(finite: inf and nan are not allowed\)"),
    ("segment_len=1e-9", r"segment_len=1e-09, fs=100\.0, n_segments=2: .*shorter than one sample; "
                         r"expected segments of at least one sample"),
    ("devices=-3", r"devices=-3: expected an integer > 0 or 'auto'$"),
    ("devices=0", r"devices=0: expected an integer > 0"),
    ("devices=gpu", r"devices='gpu': expected an integer > 0 or 'auto'$"),
    ("epochs=99999999999999999999", r"epochs=99999999999999999999: expected an integer > 0 \(at most 2147483647\)"),
    ("max_steps=4294967296", r"max_steps=4294967296: expected -1 or an integer > 0 \(at most 2147483647\)"),
    ("seed=4294967296", r"seed=4294967296: expected an integer >= 0 \(at most 2147483647\)"),
])
def test_pretrain_recipe_mistakes_are_one_line_exit_2(capsys, tmp_path, override, expected):
    err = _one_line_exit_2(capsys, ["pretrain", str(REPO / "experiments" / "ludb_cmsc.yaml"), override,
                                    "--runs", str(tmp_path / "runs"), "--quiet"])
    assert re.search(expected, err), err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_devices_auto_and_counts_are_accepted():
    from ssl_ecg.pretrain import PretrainConfig
    from ssl_ecg.recipe import load_recipe

    assert load_recipe(PretrainConfig, overrides={"devices": "auto"}).devices == "auto"
    assert load_recipe(PretrainConfig, overrides={"devices": 2, "epochs": 2**31 - 1}).devices == 2


@pytest.mark.parametrize("command, recipe, overrides", [
    ("curve", "eval_ludb_curve.yaml", ["window=1e-9"]),
    ("probe", "eval_ludb_curve.yaml", ["window=0.001"]),
    ("fewshot", "fewshot_ludb.yaml", ["window=1e-9"]),
    ("fewshot", "fewshot_mitdb.yaml", ["window=0.001", "fs=100"]),
    ("curve", "eval_ludb_curve.yaml", ["window=1e300"]),
])
def test_evaluation_window_under_one_sample_is_one_line_exit_2(capsys, tmp_path, command, recipe, overrides):
    err = _one_line_exit_2(capsys, [command, str(REPO / "experiments" / recipe), *overrides,
                                    "--runs", str(tmp_path / "runs")])
    assert re.search(r"window=\S+ s at fs=\S+ Hz is .*; expected at least one sample", err), err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_evaluation_floats_must_be_finite(capsys, tmp_path):
    err = _one_line_exit_2(capsys, ["curve", str(REPO / "experiments" / "eval_ludb_curve.yaml"), "lr=.inf",
                                    "--runs", str(tmp_path / "runs")])
    assert "lr=inf: expected a number > 0 (finite: inf and nan are not allowed)" in err


# ---------------------------------------------------------------- dependency floor


def test_lightning_requirement_admits_only_versions_with_fit_weights_only():
    import configparser
    import inspect

    import pytorch_lightning as pl
    from packaging.requirements import Requirement
    from packaging.version import Version

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    reqs = [Requirement(line) for line in cfg["options"]["install_requires"].split("\n") if line.strip()]
    (lightning,) = [r for r in reqs if r.name.replace("-", "_") == "pytorch_lightning"]
    assert "weights_only" in inspect.signature(pl.Trainer.fit).parameters  # what train.py passes to fit
    assert Version(pl.__version__) in lightning.specifier
    assert Version("2.5.5") not in lightning.specifier  # fit() has no weights_only before 2.6
    assert Version("3.0.0") not in lightning.specifier


# ---------------------------------------------------------------- paths listed inside a dataset's own files

import importlib.util  # noqa: E402

import pandas as pd  # noqa: E402

from ssl_ecg.data import load_index  # noqa: E402


def _sibling(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "ssl_ecg" / "data" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def outside(tmp_path, write_wfdb, ecg_like):
    """A valid WFDB record ``evil`` outside every dataset folder (what an escaping entry would read)."""
    folder = tmp_path / "outside"
    folder.mkdir()
    write_wfdb(folder, "evil", ecg_like(12, 1000, 100.0), 100.0, ["I", "II", "III", "aVR", "aVL", "aVF",
                                                                 "V1", "V2", "V3", "V4", "V5", "V6"])
    return folder


@pytest.fixture
def ptbxl(tmp_path, write_wfdb, ecg_like):
    root = tmp_path / "ptbxl"
    root.mkdir()
    _sibling("test_ptbxl").make_fake_ptbxl(root, write_wfdb, ecg_like)
    return root


def _set_filename(root, row, value):
    db = pd.read_csv(root / "ptbxl_database.csv", dtype=str)
    db.loc[row, "filename_lr"] = value
    db.to_csv(root / "ptbxl_database.csv", index=False)
    return db.loc[row, "ecg_id"]


@pytest.mark.parametrize("entry, reason", [
    ("ABS", r"is absolute"),
    ("../outside/evil", r"has a '\.\.' segment"),
    ("records100/../../outside/evil", r"has a '\.\.' segment"),
    ("records100\\..\\..\\outside\\evil", r"contains a backslash"),
    ("records100//00000/x", r"has an empty segment"),
])
def test_ptbxl_filename_outside_the_root_is_refused(ptbxl, outside, entry, reason):
    entry = str(outside / "evil") if entry == "ABS" else entry
    ecg_id = _set_filename(ptbxl, 1, entry)
    with pytest.raises(DatasetError, match=rf"ptbxl_database\.csv: filename_lr '.*' leaves the dataset folder "
                                           rf"\({reason}\) at row 2 \(ecg_id {ecg_id}\); expected a relative path "
                                           rf"inside") as err:
        load_index("ptbxl", ptbxl)
    assert entry in str(err.value) or repr(entry) in str(err.value)


def test_ptbxl_filename_through_a_planted_folder_link_is_refused(ptbxl, outside):
    (ptbxl / "records100" / "escape").symlink_to(outside)
    ecg_id = _set_filename(ptbxl, 0, "records100/escape/evil")
    with pytest.raises(DatasetError, match=rf"filename_lr 'records100/escape/evil' leaves the dataset folder "
                                           rf"\(resolves to {outside}/evil\.hea through a symbolic link\) at row 1 "
                                           rf"\(ecg_id {ecg_id}\)"):
        load_index("ptbxl", ptbxl)


def test_ptbxl_header_linked_outside_is_refused(ptbxl, outside):
    db = pd.read_csv(ptbxl / "ptbxl_database.csv", dtype=str)
    header = ptbxl / (db.loc[0, "filename_lr"] + ".hea")
    header.unlink()
    header.symlink_to(outside / "evil.hea")
    with pytest.raises(DatasetError, match=r"leaves the dataset folder \(resolves to .*outside/evil\.hea"):
        load_index("ptbxl", ptbxl)


def test_ptbxl_links_inside_the_root_are_fine(ptbxl):
    before = load_index("ptbxl", ptbxl).table["path"].tolist()
    link = ptbxl.parent / "ptbxl_link"
    link.symlink_to(ptbxl)  # the root itself may be a link (a shared data folder)
    after = load_index("ptbxl", link).table["path"].tolist()
    assert [p.replace(str(link), str(ptbxl)) for p in after] == before


@pytest.fixture
def ludb(tmp_path):
    root = tmp_path / "ludb"
    root.mkdir()
    _sibling("test_ludb").make_fake_ludb(root, n=3)
    return root


@pytest.mark.parametrize("entry, reason", [
    ("ABS", "is absolute"),
    ("data/../../outside/evil", r"has a '\.\.' segment"),
    ("./data/2", r"has a '\.' segment"),
])
def test_ludb_records_entries_are_confined(ludb, outside, entry, reason):
    entry = str(outside / "evil") if entry == "ABS" else entry
    (ludb / "RECORDS").write_text(f"data/1\n\n{entry}\n")
    with pytest.raises(DatasetError, match=rf"RECORDS: record path '.*' leaves the dataset folder \({reason}\) "
                                           rf"at line 3; expected a relative path inside {ludb}"):
        load_index("ludb", ludb)


def test_ludb_records_through_a_linked_folder_is_refused(ludb, outside):
    (ludb / "elsewhere").symlink_to(outside)
    (ludb / "RECORDS").write_text("data/1\nelsewhere/evil\n")
    with pytest.raises(DatasetError, match=r"RECORDS: record path 'elsewhere/evil' leaves the dataset folder "
                                           r"\(resolves to .*outside/evil\.hea through a symbolic link\) at line 2"):
        load_index("ludb", ludb)


def test_mitdb_records_header_linked_outside_is_refused(tmp_path, outside, write_wfdb, ecg_like):
    root = tmp_path / "mitdb"
    root.mkdir()
    write_wfdb(root, "100", ecg_like(2, 720, 360.0), 360.0, ["MLII", "V5"])
    (root / "101.hea").symlink_to(outside / "evil.hea")
    (root / "RECORDS").write_text("100\n101\n")
    with pytest.raises(DatasetError, match=r"mitdb/RECORDS: record '101' leaves the dataset folder \(resolves to "
                                           r".*outside/evil\.hea through a symbolic link\) at line 2"):
        load_index("mitdb", root)
    (root / "RECORDS").write_text("100\n")
    assert load_index("mitdb", root).table["record_id"].tolist() == ["100"]


# ---------------------------------------------------------------- header size cap

from ssl_ecg.data import read_record  # noqa: E402
from ssl_ecg.data.record import MAX_HEADER_BYTES, read_tolerant  # noqa: E402
from ssl_ecg.errors import RecordError  # noqa: E402


@pytest.mark.parametrize("reader", [read_record, read_tolerant], ids=["read_record", "read_tolerant"])
def test_a_2_mib_header_is_refused_before_it_is_read(tmp_path, write_wfdb, ecg_like, reader, monkeypatch):
    write_wfdb(tmp_path, "r1", ecg_like(1, 500, 100.0), 100.0, ["I"])
    header = tmp_path / "r1.hea"
    with header.open("a") as f:  # a valid header padded with 2 MiB of comment lines
        f.write(("#" + "x" * 1023 + "\n") * 2048)
    size = header.stat().st_size
    assert size > 2 << 20 and MAX_HEADER_BYTES == 1 << 20
    read = []
    real_open = open

    def spy_open(file, mode="r", *args, **kwargs):  # noqa: A002 - records what is read from the header
        fh = real_open(file, mode, *args, **kwargs)
        if str(file) == str(header):
            orig = fh.read
            fh.read = lambda n=-1: read.append(n) or orig(n)
        return fh

    monkeypatch.setattr("builtins.open", spy_open)
    with pytest.raises(RecordError) as err:
        reader(str(tmp_path / "r1"))
    monkeypatch.undo()
    assert str(err.value) == (f"{header}: header is {size} bytes; expected a WFDB header of at most 1048576 bytes "
                              "(MAX_HEADER_BYTES)")
    assert read == []  # refused on its size, not after reading it


def test_a_header_under_the_cap_still_reads(tmp_path, write_wfdb, ecg_like):
    write_wfdb(tmp_path, "r1", ecg_like(1, 500, 100.0), 100.0, ["I"])
    with (tmp_path / "r1.hea").open("a") as f:
        f.write(("#" + "x" * 1023 + "\n") * 512)  # 512 KiB of comments
    assert read_record(str(tmp_path / "r1")).signal.shape == (1, 500)
