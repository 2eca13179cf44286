"""Fair baselines: SimCLR-family heads and views, VICReg/Barlow Twins batch checks, the encoder-pass budget."""

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import nn

from ssl_ecg.pretrain import MethodSpec, PretrainConfig, build_method, run_pretrain
from ssl_ecg.recipe import load_recipe

EXPERIMENTS = Path(__file__).parents[3] / "experiments"


class _Identity(nn.Module):
    def forward(self, x, generator=None):
        return x


def _ludb_like(tmp_path, n=10):
    """A tiny LUDB-layout folder: n 10 s 12-lead records at 500 Hz (one patient each)."""
    import wfdb

    root = tmp_path / "ludb"
    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    leads = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
    for i in range(1, n + 1):
        d = rng.integers(-1500, 1500, size=(5000, 12))
        wfdb.wrsamp(str(i), fs=500, units=["mV"] * 12, sig_name=leads, d_signal=d, fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(root / "data"))
    (root / "RECORDS").write_text("".join(f"data/{i}\n" for i in range(1, n + 1)))
    with open(root / "ludb.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Sex", "Age", "Rhythms", "Electric axis of the heart", "Hypertrophies"])
        for i in range(1, n + 1):
            w.writerow([i, "M", 50, "Sinus rhythm" if i % 2 else "Sinus bradycardia",
                        "Electric axis of the heart: normal", ""])
    return root


@pytest.mark.parametrize("name", ["simclr", "sclst"])
def test_simclr_and_supcon_train_through_a_simclr_projection_head(name):
    method = build_method(name, MethodSpec(fs=100.0, segment_len=4.0))
    head = method.make_head(32)
    assert isinstance(head, SimCLRProjectionHead)
    assert head(torch.randn(4, 32)).shape == (4, 128)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(12 * 400, 32))
    views = method.views(torch.randn(8, 12, 800), generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([0, 1, 0, 1, 2, 2, 3, 3])
    loss, z = method.forward_loss(encoder, head, views, ids)
    assert z.shape == (8, 2, 32)  # the encoder's embeddings are returned, not the head's
    torch.testing.assert_close(loss, method.loss(head(z.flatten(0, 1)).reshape(8, 2, -1), ids))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters() if p.dim() == 2)


def test_simclr_views_come_from_independent_crops():
    spec = MethodSpec(fs=100.0, segment_len=4.0, n_segments=2)
    method = build_method("simclr", spec)
    assert method.window_samples() == 800 and method.segment_samples() == 400
    method.augment = _Identity()  # isolate the crops
    b, t, s = 64, 800, 400
    x = (torch.arange(t, dtype=torch.float32) + 10_000 * torch.arange(b, dtype=torch.float32)[:, None])
    x = x[:, None, :].expand(b, 12, t).clone()  # sample value = 10,000 * record + time index
    views = method.views(x, generator=torch.Generator().manual_seed(0))
    assert views.shape == (b, 2, 12, s)
    starts = views[:, :, 0, 0] - 10_000 * torch.arange(b, dtype=torch.float32)[:, None]  # (B, 2)
    for v in range(2):  # each view is one contiguous crop of its own record, shared by all leads
        expected = starts[:, v, None, None] + torch.arange(s, dtype=torch.float32) + \
            10_000 * torch.arange(b, dtype=torch.float32)[:, None, None]
        torch.testing.assert_close(views[:, v], expected.expand(b, 12, s), rtol=0, atol=0)
    assert (starts >= 0).all() and (starts <= t - s).all()
    assert (starts[:, 0] != starts[:, 1]).float().mean() > 0.9  # different start positions per view
    assert starts[:, 0].unique().numel() > 40 and starts[:, 1].unique().numel() > 40
    again = method.views(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(views, again)  # seeded


def test_simclr_family_default_augmentation_is_the_papers():
    from augmentations import RandomResizedCrop, TimeMask

    for name in ("simclr", "byol", "vicreg", "barlowtwins"):
        method = build_method(name, MethodSpec(fs=100.0, segment_len=5.0))
        rrc, timeout = method.augment.transforms
        assert isinstance(rrc, RandomResizedCrop) and rrc.n_samples == 500 and rrc.scale == (0.5, 1.0)
        assert isinstance(timeout, TimeMask) and timeout.duration == pytest.approx((1.0, 2.0))
    views = build_method("simclr", MethodSpec(fs=100.0, segment_len=5.0)).views(
        torch.randn(4, 12, 1000), generator=torch.Generator().manual_seed(0))
    assert views.shape == (4, 2, 12, 500) and (views == 0).any()  # time out applied


@pytest.mark.parametrize("name", ["vicreg", "barlowtwins"])
def test_small_batch_warns_once_naming_method_batch_and_projector(name):
    method = build_method(name, MethodSpec(fs=100.0, segment_len=4.0))
    head = method.make_head(16)
    p = head(torch.randn(16, 16)).reshape(8, 2, -1)
    assert p.shape[-1] == 64  # default projector: 4 x the embedding
    with pytest.warns(UserWarning, match=rf"{name}: batch size 8 is smaller than the projector dimension 64"):
        assert math.isfinite(method.loss(p, torch.arange(8)).item())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method.loss(p, torch.arange(8))  # once per method, not every step
        small = build_method(name, MethodSpec(fs=100.0, segment_len=4.0, projector_dim=8))
        q = small.make_head(16)(torch.randn(16, 16)).reshape(8, 2, -1)
        assert q.shape[-1] == 8
        small.loss(q, torch.arange(8))  # batch 8 >= projector 8: no warning


@pytest.mark.parametrize("recipe", ["ludb_vicreg.yaml", "ludb_barlowtwins.yaml"])
def test_bundled_redundancy_recipes_keep_the_projector_within_the_batch(recipe):
    cfg = load_recipe(PretrainConfig, EXPERIMENTS / recipe)
    assert cfg.projector_dim is not None and cfg.projector_dim <= cfg.batch_size
    method = build_method(cfg.method, MethodSpec(fs=cfg.fs, segment_len=cfg.segment_len,
                                                 projector_dim=cfg.projector_dim))
    head = method.make_head(cfg.embed_dim)
    z = head(torch.randn(2 * cfg.batch_size, cfg.embed_dim)).reshape(cfg.batch_size, 2, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method.loss(z, torch.arange(cfg.batch_size))


@pytest.mark.parametrize("name,per_step", [("simclr", 4 * 2), ("cmlc", 4 * 12), ("byol", 4 * 2)])
def test_run_summary_counts_encoder_passes_and_drops_the_head(name, per_step, tmp_path):
    root = _ludb_like(tmp_path)
    cfg = PretrainConfig(name=name, dataset="ludb", root=str(root), method=name, fs=100.0, segment_len=4.0,
                         n_segments=2, embed_dim=16, batch_size=4, epochs=2, lr=1e-3,
                         cache_dir=str(tmp_path / "cache"), accelerator="cpu")
    result = run_pretrain(cfg, runs=tmp_path / "runs", progress=False)
    pool = result["split_sizes"]["train"] + result["split_sizes"]["val"]
    assert result["records"] == pool == 8  # 10 patients, 60/20/20
    steps = pool // cfg.batch_size  # drop_last
    assert result["encoder_forward_passes_per_epoch"] == [steps * per_step] * 2
    assert result["encoder_forward_passes"] == 2 * steps * per_step
    weights = torch.load(result["encoder"], map_location="cpu", weights_only=True)
    trained = torch.load(tmp_path / "runs" / name / "checkpoints" / "last.ckpt", map_location="cpu",
                         weights_only=False)["state_dict"]
    encoder_keys = {k[len("encoder."):] for k in trained if k.startswith("encoder.")}
    assert set(weights) == encoder_keys  # encoder.pt holds the encoder and nothing else
    head = {k: v for k, v in trained.items() if k.startswith("head.")}
    assert bool(head) == (name != "cmlc")  # trained with a head, which stays out of encoder.pt
    if name == "simclr":
        assert head["head.layers.0.weight"].shape == (16, 16) and head["head.layers.3.weight"].shape == (128, 16)


def test_resumed_run_continues_the_encoder_pass_count(tmp_path):
    from dataclasses import replace

    from pytorch_lightning.callbacks import Callback

    class Kill(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 2 and batch_idx == 1:
                raise RuntimeError("simulated kill")

    root = _ludb_like(tmp_path)
    cfg = PretrainConfig(name="r", dataset="ludb", root=str(root), method="simclr", fs=100.0, segment_len=4.0,
                         embed_dim=16, batch_size=4, epochs=3, lr=1e-3, cache_dir=str(tmp_path / "cache"),
                         accelerator="cpu")
    with pytest.raises(RuntimeError, match="simulated kill"):
        run_pretrain(cfg, runs=tmp_path / "runs", progress=False, callbacks=[Kill()])
    resumed = run_pretrain(replace(cfg, resume=True), runs=tmp_path / "runs", progress=False)
    assert resumed["encoder_forward_passes_per_epoch"] == [16, 16, 16]  # epoch 2 counted once, from its start
    assert resumed["encoder_forward_passes"] == 48
