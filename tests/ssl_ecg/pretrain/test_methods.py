import math
from pathlib import Path

import pytest
import torch

from ssl_ecg import load_encoder
from ssl_ecg.errors import ConfigError
from ssl_ecg.pretrain import METHODS, MethodSpec, PretrainConfig, build_method, run_pretrain
from ssl_ecg.recipe import load_recipe

EXPERIMENTS = Path(__file__).parents[3] / "experiments"


@pytest.mark.parametrize("name,views,channels", [("cmsc", 24, 1), ("cmlc", 12, 1), ("cmsmlc", 24, 1),
                                                 ("clocs", 24, 1), ("simclr", 2, 12), ("sclst", 2, 12),
                                                 ("vicreg", 2, 12), ("barlowtwins", 2, 12)])
def test_method_shapes_and_finite_gradients(name, views, channels):
    spec = MethodSpec(fs=100.0, segment_len=4.0, n_segments=2)
    method = build_method(name, spec)
    x = torch.randn(6, 12, 1000)
    v = method.views(x, generator=torch.Generator().manual_seed(0))
    per_instance = 2 if name == "cmsc" else views
    assert v.shape[1] == per_instance and v.shape[2] == channels and v.shape[3] == 400
    assert method.in_channels(12) == channels
    ids = method.instance_ids(torch.tensor([0, 0, 1, 2, 3, 3]), x)
    z = torch.randn(v.shape[0], v.shape[1], 16, requires_grad=True)
    head = method.make_head(16)
    loss = method.loss(z if head is None else head(z.flatten(0, 1)).reshape(*z.shape[:2], -1), ids)
    assert (head is not None) == (name in ("vicreg", "barlowtwins"))
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_bad_method_options():
    with pytest.raises(ConfigError, match="unknown"):
        build_method("byol2", MethodSpec(fs=100.0))
    with pytest.raises(ConfigError, match="cmsc only"):
        build_method("cmlc", MethodSpec(fs=100.0, positives="patient_lead"))


@pytest.mark.parametrize("recipe", sorted(p.name for p in EXPERIMENTS.glob("ludb_*.yaml")))
def test_bundled_recipes_validate(recipe):
    cfg = load_recipe(PretrainConfig, EXPERIMENTS / recipe)
    assert cfg.method in METHODS and cfg.pool == "train+val"


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_on_real_ludb(name, ludb_root, tmp_path):
    cfg = PretrainConfig(name=name, dataset="ludb", root=str(ludb_root), method=name, fs=100.0, segment_len=4.0,
                         epochs=4, batch_size=16, lr=1e-3, cache_dir=str(tmp_path / "cache"),
                         label="lvh" if name == "sclst" else None)
    result = run_pretrain(cfg, runs=tmp_path, progress=False)
    assert len(result["losses"]) == 4 and all(math.isfinite(v) for v in result["losses"])
    if name in ("cmsc", "cmsmlc", "clocs"):
        assert result["losses"][-1] < result["losses"][0]
    enc = load_encoder(result["encoder"])
    assert enc(torch.randn(2, build_method(name, MethodSpec(fs=100.0)).in_channels(12), 400)).shape \
        == (2, 128)
    assert result["split_sizes"]["test"] > 0  # test patients held out of the pool


def test_supervised_method_needs_labels(tmp_path):
    with pytest.raises(ConfigError, match="supervised: set label"):
        run_pretrain(PretrainConfig(method="sclst", root=str(tmp_path)), runs=tmp_path)


@pytest.mark.slow
@pytest.mark.realdata
def test_resume_after_a_mid_epoch_kill_equals_an_uninterrupted_run(ludb_root, tmp_path):
    from dataclasses import replace

    from pytorch_lightning.callbacks import Callback

    class Kill(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == 2 and batch_idx == 3:
                raise RuntimeError("simulated kill")

    cfg = PretrainConfig(name="full", dataset="ludb", root=str(ludb_root), method="cmsc", fs=100.0, segment_len=4.0,
                         epochs=4, batch_size=16, lr=1e-3, cache_dir=str(tmp_path / "cache"))
    full = run_pretrain(cfg, runs=tmp_path, progress=False)
    part = replace(cfg, name="part")
    with pytest.raises(RuntimeError, match="simulated kill"):
        run_pretrain(part, runs=tmp_path, progress=False, callbacks=[Kill()])
    resumed = run_pretrain(replace(part, resume=True), runs=tmp_path, progress=False)
    a, b = load_encoder(full["encoder"]).state_dict(), load_encoder(resumed["encoder"]).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    with pytest.raises(ConfigError, match="no checkpoint"):
        run_pretrain(replace(cfg, name="never", resume=True), runs=tmp_path, progress=False)


@pytest.mark.realdata
def test_recipe_can_choose_the_encoder(ludb_root, tmp_path):
    cfg = PretrainConfig(name="rn", dataset="ludb", root=str(ludb_root), method="cmlc", fs=100.0, segment_len=4.0,
                         epochs=1, max_steps=2, batch_size=8, embed_dim=16, cache_dir=str(tmp_path / "cache"),
                         encoder={"name": "resnet1d", "widths": [8, 16], "depth": [1, 1]})
    result = run_pretrain(cfg, runs=tmp_path, progress=False)
    enc = load_encoder(result["encoder"])
    assert enc.config["name"] == "resnet1d" and enc(torch.randn(2, 1, 400)).shape == (2, 16)
