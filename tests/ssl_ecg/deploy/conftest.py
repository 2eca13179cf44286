"""A tiny synthetic LUDB, an encoder 'pretrained' on its train+val patients (with the provenance pretraining
writes) and an evaluation recipe naming it: what ``ssl-ecg export --probe`` and ``ssl-ecg quantize`` run on."""

import csv

import numpy as np
import pytest
import torch
import wfdb

from ssl_ecg.checkpoint import save_encoder
from ssl_ecg.data.prepare import DataSpec, prepare
from ssl_ecg.models import build_encoder

LUDB_LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
FS, WINDOW_S, LEADS = 100.0, 4.0, ("II", "V1")


def _ecg_like(n_leads: int, n: int, seed: int, hr: float) -> np.ndarray:
    """Periodic QRS-and-T-like beats (mV) with lead gains and noise (as tests/conftest.py's ecg_like)."""
    rng = np.random.default_rng(seed)
    phase = ((np.arange(n) / FS) % (60.0 / hr)) / (60.0 / hr)
    beat = np.exp(-((phase - 0.3) ** 2) / (2 * 0.012**2)) + 0.3 * np.exp(-((phase - 0.6) ** 2) / (2 * 0.05**2))
    return rng.uniform(-1.5, 1.5, size=(n_leads, 1)) * beat[None] + 0.02 * rng.standard_normal((n_leads, n))


@pytest.fixture(scope="module")
def ludb_recipe(tmp_path_factory):
    """``(recipe path, run folder, prepared)``: 24 ten-second 12-lead records at 100 Hz (lad alternating), an
    encoder run whose provenance pool is the train+val patients of the prepared split, and a recipe on it."""
    tmp = tmp_path_factory.mktemp("ludb_deploy")
    root = tmp / "ludb"
    (root / "data").mkdir(parents=True)
    n = 24
    for i in range(1, n + 1):
        mv = _ecg_like(12, 1000, seed=i, hr=60 + i)
        wfdb.wrsamp(str(i), fs=FS, units=["mV"] * 12, sig_name=LUDB_LEADS,
                    d_signal=np.round(mv.T * 1000).astype(np.int64), fmt=["16"] * 12, adc_gain=[1000.0] * 12,
                    baseline=[0] * 12, write_dir=str(root / "data"))
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in range(1, n + 1)))
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies"])
        for i in range(1, n + 1):
            axis = "left axis deviation" if i % 2 else "normal"
            w.writerow([i, "M", 50, "Sinus rhythm", f"Electric axis of the heart: {axis}", ""])
    spec = DataSpec(dataset="ludb", root=str(root), fs=FS, leads=LEADS, cache_dir=str(tmp / "cache"))
    prepared = prepare(spec)
    rows = prepared.rows("train", "val")
    provenance = {"version": 1, "datasets": ["ludb"], "cache_keys": [prepared.split.cache_key or "k"],
                  "pool_patients": sorted(prepared.patients(rows)),
                  "pool_fingerprints": sorted(prepared.fingerprints(rows)), "label_patients": [],
                  "split": prepared.split.to_dict()}
    torch.manual_seed(0)
    enc = build_encoder({"name": "clocs", "in_channels": 1, "input_len": int(FS * WINDOW_S), "embed_dim": 8})
    run = tmp / "run"
    save_encoder(enc, run / "encoder.pt", extra={
        "method": "cmsc", "provenance": provenance,
        "pretraining": {"config": {"fs": FS, "leads": list(LEADS), "normalization": "record", "band": None,
                                   "segment_len": WINDOW_S}}})
    recipe = tmp / "eval.yaml"
    recipe.write_text(f"name: dep\nroot: {root}\nfs: {FS:g}\nwindow: {WINDOW_S}\nleads: [II, V1]\n"
                      f"cache_dir: {tmp / 'cache'}\nencoders: {{cmsc: {run}}}\n")
    return recipe, run, prepared
