"""Two CPU processes with gloo: the gathered loss equals the single-process loss on the full batch."""

import subprocess
import sys
import textwrap

import pytest
import torch

from losses import ClocsLoss, PatientNTXentLoss, SupConLoss

WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    from losses import ClocsLoss, PatientNTXentLoss, SupConLoss

    rank, world, folder, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    data = torch.load(f"{folder}/data.pt")
    n = data["z"].shape[0] // world
    z = data["z"][rank * n:(rank + 1) * n].clone().requires_grad_(True)
    labels = data["labels"][rank * n:(rank + 1) * n]
    if kind == "clocs":
        loss_fn = ClocsLoss(0.2, gather_distributed=True)
    else:
        loss_fn = (PatientNTXentLoss if kind == "ids" else SupConLoss)(0.2, gather_distributed=True, chunk_size=5)
    loss = loss_fn(z, labels)
    loss.backward()
    torch.save({"loss": loss.detach(), "grad": z.grad}, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()
    """
)


@pytest.mark.parametrize("kind", ["ids", "multi_hot", "clocs"])
def test_two_rank_gather_equals_single_process(tmp_path, kind):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 3, 8, generator=g)
    if kind in ("ids", "clocs"):
        labels = torch.randint(0, 6, (16,), generator=g)  # positives cross the rank boundary
        full_fn = PatientNTXentLoss(0.2) if kind == "ids" else ClocsLoss(0.2)
    else:
        labels = (torch.rand(16, 4, generator=g) < 0.4).float()
        full_fn = SupConLoss(0.2)
    torch.save({"z": z, "labels": labels}, tmp_path / "data.pt")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", str(tmp_path), kind],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out.decode()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    zf = z.clone().requires_grad_(True)
    full = full_fn(zf, labels)
    full.backward()
    # Each rank returns its share: the ranks' mean is the global loss.
    assert (ranks[0]["loss"] + ranks[1]["loss"]).item() / 2 == pytest.approx(full.item(), rel=1e-5)
    # DDP averages gradients over ranks, so each rank's gradient / world size is the global one.
    grad = torch.cat([ranks[0]["grad"], ranks[1]["grad"]]) / 2
    torch.testing.assert_close(grad, zf.grad, rtol=1e-4, atol=1e-6)
    # Positives across ranks are found: rank-local losses differ from the distributed ones.
    local = full_fn(z[:8], labels[:8]).item()
    assert local != pytest.approx(ranks[0]["loss"].item(), rel=1e-3)
