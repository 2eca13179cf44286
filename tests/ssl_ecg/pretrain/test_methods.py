import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ssl_ecg import load_encoder
from ssl_ecg.errors import ConfigError, DatasetError
from ssl_ecg.pretrain import METHODS, MethodSpec, PretrainConfig, build_method, run_pretrain
from ssl_ecg.recipe import load_recipe

EXPERIMENTS = Path(__file__).parents[3] / "experiments"


@pytest.mark.parametrize("name,views,channels", [("cmsc", 24, 1), ("cmlc", 12, 1), ("cmsmlc", 24, 1),
                                                 ("clocs", 24, 1), ("simclr", 2, 12), ("sclst", 2, 12),
                                                 ("vicreg", 2, 12), ("barlowtwins", 2, 12), ("byol", 2, 12),
                                                 ("pclr", 1, 12)])
def test_method_shapes_and_finite_gradients(name, views, channels):
    spec = MethodSpec(fs=100.0, segment_len=4.0, n_segments=2)
    method = build_method(name, spec)
    x = torch.randn(6, 12, 1000)
    v = method.views(x, generator=torch.Generator().manual_seed(0))
    per_instance = 2 if name == "cmsc" else views
    assert v.shape[1] == per_instance and v.shape[2] == channels and v.shape[3] == 400
    assert method.in_channels(12) == channels
    ids = method.instance_ids(torch.tensor([0, 0, 1, 2, 3, 3]), x)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels * 400, 16))
    head = method.make_head(16)
    method.attach(encoder, head)
    loss, z = method.forward_loss(encoder, head, v, ids, step=0, max_steps=10)
    assert (head is not None) == (name in ("simclr", "sclst", "vicreg", "barlowtwins", "byol"))
    assert z.shape == (v.shape[0], v.shape[1], 16)
    loss.backward()
    grad = encoder[1].weight.grad
    assert math.isfinite(loss.item()) and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_byol_target_is_a_momentum_copy_that_follows_the_online_encoder():
    method = build_method("byol", MethodSpec(fs=100.0, segment_len=4.0))
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12 * 400, 8))
    head = method.make_head(8)
    method.attach(encoder, head)
    assert not any(p.requires_grad for p in method.momentum_encoder.parameters())
    torch.testing.assert_close(method.momentum_encoder[1].weight, encoder[1].weight)
    before = method.momentum_encoder[1].weight.detach().clone()
    with torch.no_grad():
        encoder[1].weight.add_(1.0)
    v = method.views(torch.randn(4, 12, 1000), generator=torch.Generator().manual_seed(0))
    method.forward_loss(encoder, head, v, torch.arange(4), step=0, max_steps=100)
    # momentum 0.99 at step 0: target = 0.99 * target + 0.01 * online
    torch.testing.assert_close(method.momentum_encoder[1].weight, before + 0.01, rtol=0, atol=1e-5)


def test_pclr_positives_are_other_records_of_the_patient():
    method = build_method("pclr", MethodSpec(fs=100.0, segment_len=4.0, temperature=0.5))
    z = torch.nn.functional.normalize(torch.randn(6, 1, 8, dtype=torch.float64), dim=-1)
    ids = torch.tensor([0, 0, 1, 1, 1, 2])
    expected, count = 0.0, 0
    for i in range(6):  # float64 loop reference: mean over anchors of the mean over positives
        others = [j for j in range(6) if j != i]
        pos = [j for j in others if ids[j] == ids[i]]
        if not pos:
            continue
        lse = torch.logsumexp(torch.stack([z[i, 0] @ z[j, 0] / 0.5 for j in others]), 0)
        expected += float(lse - sum(z[i, 0] @ z[j, 0] / 0.5 for j in pos) / len(pos))
        count += 1
    torch.testing.assert_close(method.loss(z.float(), ids).double(), torch.tensor(expected / count,
                                                                                  dtype=torch.float64),
                               rtol=1e-5, atol=1e-5)


def test_bad_method_options():
    with pytest.raises(ConfigError, match="unknown"):
        build_method("byol2", MethodSpec(fs=100.0))
    with pytest.raises(ConfigError, match="cmsc only"):
        build_method("cmlc", MethodSpec(fs=100.0, positives="patient_lead"))


PRETRAIN_RECIPES = sorted(p.name for p in EXPERIMENTS.glob("*.yaml")
                          if p.name not in ("demo.yaml", "demo_curve.yaml")
                          and not p.name.startswith(("eval_", "fewshot_", "distill_", "reduced_leads_")))


@pytest.mark.parametrize("recipe", PRETRAIN_RECIPES)
def test_bundled_recipes_validate(recipe):
    cfg = load_recipe(PretrainConfig, EXPERIMENTS / recipe)
    assert cfg.method in METHODS and cfg.name == recipe[:-5]
    # the pool is the split's train+val patients; MIT-BIH beat recipes pretrain on DS1 only (DS2 is few-shot test)
    assert cfg.pool == ("DS1" if recipe.startswith("mitdb_beats_") else "train+val")
    build_method(cfg.method, MethodSpec(fs=cfg.fs, segment_len=cfg.segment_len, positives=cfg.positives))


def test_clocs_protocol_recipes_match_the_paper():
    for name in ("clocs_chapman_4lead", "clocs_chapman_12lead", "clocs_cinc2020_4lead", "clocs_cinc2020_12lead"):
        cfg = load_recipe(PretrainConfig, EXPERIMENTS / f"{name}.yaml")
        assert round(cfg.fs * cfg.segment_len) == 2500 and cfg.embed_dim == 128 and cfg.temperature == 0.1
        assert cfg.lr == 1e-4 and cfg.batch_size == 256 and cfg.early_stopping_patience == 15
        assert cfg.leads == (["II", "V2", "aVL", "aVR"] if "4lead" in name else None)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("recipe", [r for r in PRETRAIN_RECIPES if r.split("_")[0] in ("ludb", "ptbxl", "mitdb")])
def test_bundled_recipes_run_on_the_real_data(recipe, tmp_path, real_dataset):
    cfg = load_recipe(PretrainConfig, EXPERIMENTS / recipe, {"epochs": 1, "max_steps": 2, "batch_size": 8,
                                                             "cache_dir": str(tmp_path / "cache")})
    cfg.root = str(real_dataset(cfg.dataset))  # skips, saying why, without the bundled data
    result = run_pretrain(cfg, runs=tmp_path, progress=False)
    assert result["losses"] and all(math.isfinite(v) for v in result["losses"])
    assert load_encoder(result["encoder"]).config["embed_dim"] == cfg.embed_dim


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(set(METHODS) - {"pclr"}))
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


@pytest.mark.realdata
def test_pclr_trains_on_real_ptbxl_patients_with_several_records(ptbxl_root, ludb_root, tmp_path):
    from dataclasses import replace

    cfg = PretrainConfig(name="pclr", dataset="ptbxl", root=str(ptbxl_root), method="pclr", fs=100.0,
                         segment_len=5.0, epochs=3, batch_size=16, lr=1e-3, pool="all",
                         cache_dir=str(tmp_path / "cache"))
    result = run_pretrain(cfg, runs=tmp_path, progress=False)
    assert len(result["losses"]) == 3 and all(math.isfinite(v) for v in result["losses"])
    assert 0 < result["records"] < 500  # only patients with 2+ records
    import pandas as pd

    logs = pd.read_csv(next((tmp_path / "pclr" / "logs").rglob("metrics.csv")))
    assert (logs["positives_per_view"].dropna() > 0.9).all()  # every record has a same-patient partner
    with pytest.raises(DatasetError, match="lower batch_size"):
        run_pretrain(replace(cfg, name="big", batch_size=4096), runs=tmp_path, progress=False)
    with pytest.raises(DatasetError, match="2 or more records"):  # LUDB: one record per patient
        run_pretrain(PretrainConfig(name="p2", dataset="ludb", root=str(ludb_root), method="pclr",
                                    cache_dir=str(tmp_path / "cache")), runs=tmp_path, progress=False)


@pytest.mark.realdata
def test_online_monitor_lr_and_positives_are_logged(ludb_root, tmp_path):
    import pandas as pd

    cfg = PretrainConfig(name="mon", dataset="ludb", root=str(ludb_root), method="cmsc", fs=100.0, segment_len=4.0,
                         epochs=2, batch_size=16, lr=1e-3, monitor_label="rhythm", embed_dim=16,
                         cache_dir=str(tmp_path / "cache"))
    run_pretrain(cfg, runs=tmp_path, progress=False)
    logs = pd.read_csv(next((tmp_path / "mon" / "logs").rglob("metrics.csv")))
    for col in ("train_online_cls_loss", "train_online_cls_top1", "lr-Adam", "positives_per_view"):
        assert logs[col].notna().sum() == 2, col
    top1 = logs["train_online_cls_top1"].dropna()
    assert ((top1 >= 0) & (top1 <= 1)).all()
    assert (logs["lr-Adam"].dropna() == 1e-3).all()
    ckpts = tmp_path / "mon" / "checkpoints"
    assert (ckpts / "last.ckpt").is_file() and (ckpts / "best.ckpt").is_file()  # every epoch, plus the best


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


@pytest.mark.realdata
def test_wandb_logging_is_offline_by_default(ludb_root, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = PretrainConfig(name="wb", dataset="ludb", root=str(ludb_root), method="cmsc", fs=100.0, segment_len=4.0,
                         epochs=1, max_steps=2, batch_size=8, embed_dim=16, wandb=True,
                         cache_dir=str(tmp_path / "cache"))
    run_pretrain(cfg, runs=tmp_path, progress=False)
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))


@pytest.mark.realdata
def test_early_stopping_on_validation_patients_keeps_the_best_weights(ludb_root, tmp_path):
    import pandas as pd

    cfg = PretrainConfig(name="es", dataset="ludb", root=str(ludb_root), method="cmlc", fs=100.0, segment_len=4.0,
                         epochs=30, batch_size=32, lr=3e-2, embed_dim=16, early_stopping_patience=1,
                         leads=["II", "V2", "aVL", "aVR"], cache_dir=str(tmp_path / "cache"))
    result = run_pretrain(cfg, runs=tmp_path, progress=False)
    assert 0 < result["val_records"] < result["records"]
    logs = pd.read_csv(next((tmp_path / "es" / "logs").rglob("metrics.csv")))
    val = logs["val_loss"].dropna().to_numpy()
    assert len(val) < 30  # stopped early
    assert val[-1] >= val.min() and len(val) - 1 - val.argmin() == 1  # stopped after `patience` bad epochs
    best = torch.load(tmp_path / "es" / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"]
    enc = load_encoder(result["encoder"])
    for key, value in enc.state_dict().items():
        assert torch.equal(value, best[f"encoder.{key}"]), key
    assert enc.config["in_channels"] == 1
    with pytest.raises(ConfigError, match="pool"):
        run_pretrain(PretrainConfig(root=str(ludb_root), pool="all", early_stopping_patience=3), runs=tmp_path)
    # a budget that ends before the first validation epoch: one line saying so, not Lightning's missing-metric error
    from ssl_ecg.errors import TrainingError

    short = replace(cfg, name="es_short", max_steps=1)
    with pytest.raises(TrainingError, match="no best checkpoint was written"):
        run_pretrain(short, runs=tmp_path, progress=False)


@pytest.mark.realdata
def test_pool_can_name_an_official_subset(mitdb_root, tmp_path):
    from dataclasses import replace

    cfg = PretrainConfig(name="ds1", dataset="mitdb", root=str(mitdb_root), method="cmsc", fs=100.0,
                         segment_len=4.0, leads=["#0"], pool="DS1", epochs=1, max_steps=1, batch_size=8,
                         embed_dim=8, cache_dir=str(tmp_path / "cache"))
    result = run_pretrain(cfg, runs=tmp_path, progress=False)
    assert result["records"] == 22 and result["split_sizes"] == {"DS1": 22}
    with pytest.raises(ConfigError, match=r"'DS1', 'DS2'.*got 'DS9'"):
        run_pretrain(replace(cfg, pool="DS9"), runs=tmp_path, progress=False)
