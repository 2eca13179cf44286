"""Run by test_ddp.py: PCLR pretraining on 2 CPU processes (gloo) where every positive is on the other rank."""

import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from ssl_ecg.models import build_encoder
from ssl_ecg.pretrain import ContrastivePretrainer, MethodSpec, build_method
from ssl_ecg.pretrain.train import fit


def main(out: Path) -> None:
    n_patients = 8
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2 * n_patients, 2, 500, generator=gen)
    ids = torch.arange(n_patients).repeat(2)  # record i and i + 8 belong to patient i

    def loader(world_size: int, rank: int) -> DataLoader:
        assert world_size == 2
        mine = list(range(rank * n_patients, (rank + 1) * n_patients))  # rank 0: first records, rank 1: second
        return DataLoader(TensorDataset(x, ids), batch_size=n_patients, sampler=mine)

    method = build_method("pclr", MethodSpec(fs=100.0, segment_len=4.0, gather_distributed=True))
    torch.manual_seed(0)
    encoder = build_encoder({"name": "clocs", "in_channels": 2, "input_len": 400, "embed_dim": 16})
    module = ContrastivePretrainer(encoder, method, lr=1e-3, seed=0)
    losses, _ = fit(module, loader, out, epochs=2, accelerator="cpu", devices=2, strategy="ddp", progress=False)
    rank = module.global_rank
    weights = {k: v.sum().item() for k, v in encoder.named_parameters()}  # BN running stats stay per rank
    (out / f"rank{rank}.json").write_text(json.dumps({"losses": losses, "weights": weights}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
