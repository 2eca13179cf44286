"""Shared fixtures: the real-data locator and small WFDB writers."""

import os
from pathlib import Path

import numpy as np
import pytest
import wfdb

os.environ.setdefault("WANDB_MODE", "disabled")

MARKERS = {"ludb": "ludb.csv", "mitdb": "RECORDS", "ptbxl": "ptbxl_database.csv", "cinc2021_sample": "E07500.hea",
           "cpsc2018_sample": "A1980.mat", "ptbxl_cinc2024": "records100/00000/00841_lr.hea"}


def real_dataset(name: str) -> Path:
    """The real copy of ``name`` under $SSL_ECG_DATA.

    Skips (printing why) on a machine without it; fails instead when
    SSL_ECG_REQUIRE_DATA=1, as .ci/run sets.
    """
    base = os.environ.get("SSL_ECG_DATA")
    strict = os.environ.get("SSL_ECG_REQUIRE_DATA") == "1"
    if not base:
        reason = f"real dataset {name!r} needed: set SSL_ECG_DATA to the folder holding {name}/"
    else:
        folder = Path(base) / name
        if (folder / MARKERS[name]).is_file():
            return folder
        reason = f"real dataset {name!r} not found at {folder} (no {MARKERS[name]})"
    if strict:
        pytest.fail(reason + " [SSL_ECG_REQUIRE_DATA=1]")
    pytest.skip(reason)


@pytest.fixture(name="real_dataset")
def _real_dataset_fixture():
    """The locator itself, for tests that pick the dataset at run time (e.g. from a recipe)."""
    return real_dataset


@pytest.fixture
def ludb_root():
    return real_dataset("ludb")


def write_wfdb(folder: Path, name: str, signal_mv: np.ndarray, fs: float, leads, units="mV", fmt="16", **kw):
    """Write (leads, time) millivolts as a WFDB record; returns the path without extension."""
    folder.mkdir(parents=True, exist_ok=True)
    n = signal_mv.shape[0]
    wfdb.wrsamp(name, fs=fs, units=[units] * n, sig_name=list(leads), p_signal=signal_mv.T.astype(np.float64),
                fmt=[fmt] * n, write_dir=str(folder), **kw)
    return folder / name


def ecg_like(n_leads: int, n: int, fs: float, seed: int = 0, hr: float = 72.0) -> np.ndarray:
    """A crude periodic ECG-ish signal (mV) with lead-specific gains and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    period = 60.0 / hr
    phase = (t % period) / period
    qrs = np.exp(-((phase - 0.3) ** 2) / (2 * 0.012**2))
    twave = 0.3 * np.exp(-((phase - 0.6) ** 2) / (2 * 0.05**2))
    base = qrs + twave
    gains = rng.uniform(-1.5, 1.5, size=(n_leads, 1))
    return (gains * base[None, :] + 0.02 * rng.standard_normal((n_leads, n))).astype(np.float64)


@pytest.fixture(name="write_wfdb")
def _write_wfdb_fixture():
    return write_wfdb


@pytest.fixture(name="ecg_like")
def _ecg_like_fixture():
    return ecg_like


@pytest.fixture
def mitdb_root():
    return real_dataset("mitdb")


def synthetic_beats(fs=250.0, seconds=10.0, rr_s=(0.8, 0.95, 0.7, 1.05, 0.85, 0.9, 0.75, 1.0, 0.8, 0.9, 0.95, 0.8),
                    n_leads=2, seed=0):
    """Beats with distinct amplitudes and irregular RR; returns (x (1, L, T) float64, R indices)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    r, pos = [], 0.4
    for rr in rr_s:
        if pos > seconds - 0.3:
            break
        r.append(pos)
        pos += rr
    x = np.zeros((n_leads, len(t)))
    gains = np.linspace(1.0, -0.6, n_leads)[:, None]
    for k, rk in enumerate(r):
        amp = 1.0 + 0.15 * k
        qrs = amp * np.exp(-((t - rk) ** 2) / (2 * 0.012**2))
        tw = 0.25 * amp * np.exp(-((t - rk - 0.25) ** 2) / (2 * 0.04**2))
        x += gains * (qrs + tw)
    x += 0.01 * rng.standard_normal(x.shape)
    return x[None], np.round(np.asarray(r) * fs).astype(int)


@pytest.fixture(name="synthetic_beats")
def _synthetic_beats_fixture():
    return synthetic_beats


@pytest.fixture
def ptbxl_root():
    return real_dataset("ptbxl")


@pytest.fixture
def cinc2021_root():
    return real_dataset("cinc2021_sample")


@pytest.fixture
def cpsc2018_root():
    return real_dataset("cpsc2018_sample")


@pytest.fixture(autouse=True)
def _seed_global_rngs():
    """Every test starts from the same global RNG state, so no result depends on which tests ran first."""
    import torch

    torch.manual_seed(0)
    np.random.seed(0)
