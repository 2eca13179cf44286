"""Package boundaries and public API."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["losses", "augmentations"])
def test_standalone_packages_do_not_import_ssl_ecg(package):
    code = (f"import sys, {package}; bad = [m for m in sys.modules if m.split('.')[0] == 'ssl_ecg']; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("package", ["losses", "augmentations", "ssl_ecg", "ssl_ecg.data", "ssl_ecg.evaluate"])
def test_all_names_exist(package):
    mod = __import__(package, fromlist=["__all__"])
    assert mod.__all__
    for name in mod.__all__:
        assert hasattr(mod, name), f"{package}.{name}"


def test_fixed_names_present():
    from ssl_ecg.data import load_index, read_record  # noqa: F401
    from ssl_ecg.data.index import DATASETS

    assert set(DATASETS) == {"ptbxl", "ludb", "cinc2020", "cinc2021", "cpsc2018", "chapman", "incart", "mitdb",
                             "cinc2017"}
