"""Benchmark the contrastive losses against the matmul floor and a CLOCS-style loop.

Run: ``.venv/bin/python benchmarks/bench_losses.py`` (add ``--quick`` for fewer repeats,
``--no-large`` to skip the N*V = 24,576 case).

Every timing is forward + backward, medians of interleaved repeats in one
process. Peak memory is measured in a fresh subprocess per implementation, as
the growth of the peak RSS over the RSS after the inputs are allocated.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys

import torch
import torch.nn.functional as F
from _timing import interleaved_medians

from losses import ClocsLoss, PatientNTXentLoss

TAU = 0.1


def make_inputs(n, v, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, v, d, generator=g)
    ids = torch.arange(n) // 2  # two instances per patient
    return z, ids


def floor(z, ids):
    """The bare similarity matmul e @ e.T and its backward."""
    e = z.reshape(-1, z.shape[-1]).detach().requires_grad_(True)
    s = e @ e.T
    s.backward(torch.ones_like(s))
    return e.grad


def ours(z, ids):
    z = z.detach().requires_grad_(True)
    PatientNTXentLoss(TAU)(z, ids).backward()
    return z.grad


def ours_clocs(z, ids):
    z = z.detach().requires_grad_(True)
    ClocsLoss(TAU)(z, ids).backward()
    return z.grad


def naive(z, ids):
    """Full (NV)^2 masked log-softmax through autograd."""
    z = z.detach().requires_grad_(True)
    n, v, d = z.shape
    e = F.normalize(z.reshape(n * v, d), dim=1)
    owner = ids.repeat_interleave(v)
    eye = torch.eye(n * v, dtype=torch.bool)
    logp = (e @ e.T / TAU).masked_fill(eye, float("-inf")).log_softmax(1).masked_fill(eye, 0.0)
    pos = (owner[:, None] == owner[None, :]) & ~eye
    (-(logp * pos).sum(1) / pos.sum(1)).mean().backward()
    return z.grad


def clocs_loop(z, ids):
    """CLOCS-style: a Python loop over ordered view pairs, one N x N block each (bugs fixed)."""
    z = z.detach().requires_grad_(True)
    n, v, _ = z.shape
    e = F.normalize(z, dim=-1)
    same = ids[:, None] == ids[None, :]
    off = same & ~torch.eye(n, dtype=torch.bool)
    n_off = off.sum()
    total = 0.0
    for a, b in itertools.permutations(range(v), 2):
        logp = (e[:, a] @ e[:, b].T / TAU).log_softmax(1)
        total = total + (-logp.diagonal().mean() - (logp * off).sum() / n_off) / 2
    (total / (v * (v - 1))).backward()
    return z.grad


IMPLS = {"floor": floor, "ours": ours, "ours_clocs": ours_clocs, "clocs_loop": clocs_loop, "naive": naive}


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def reset_peak():
    """Reset the kernel's peak-RSS mark (VmHWM); ru_maxrss would carry the parent's RSS across fork."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def peak_memory(impl, n, v, d):
    """Peak extra memory (MB) of one forward+backward, measured in a fresh process."""
    code = (
        "import json, sys, time; sys.path.insert(0, 'benchmarks');"
        "import bench_losses as b;"
        f"z, ids = b.make_inputs({n}, {v}, {d}); base = b.rss_mb(); b.reset_peak();"
        f"t0 = time.perf_counter(); b.IMPLS['{impl}'](z, ids); t = time.perf_counter() - t0;"
        "peak = b.peak_rss_mb();"
        "print(json.dumps({'peak_extra_mb': peak - base, 'seconds': t}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return {"peak_extra_mb": float("nan"), "seconds": float("nan"), "error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-large", action="store_true")
    args = parser.parse_args()
    repeats = 5 if args.quick else 15
    n, d = 256, 128
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, N={n}, D={d}, tau={TAU}")
    print(f"{'V':>3} {'impl':<11} {'median ms':>10} {'x floor':>8} {'loop/impl':>10} {'peak MB':>8}")
    rows = []
    for v in (2, 4, 12):
        z, ids = make_inputs(n, v, d)
        med = interleaved_medians({k: (lambda f=f: f(z, ids)) for k, f in IMPLS.items()}, repeats)
        for name in IMPLS:
            mem = peak_memory(name, n, v, d)["peak_extra_mb"]
            row = {"V": v, "impl": name, "ms": med[name] * 1e3, "x_floor": med[name] / med["floor"],
                   "loop_over_impl": med["clocs_loop"] / med[name], "peak_mb": mem}
            rows.append(row)
            print(f"{v:>3} {name:<11} {row['ms']:>10.2f} {row['x_floor']:>8.2f} {row['loop_over_impl']:>10.2f} "
                  f"{mem:>8.1f}")
    if not args.no_large:
        print("\nlarge case: N=1024, V=24 (N*V = 24,576), D=128, one run each in a fresh process")
        for name in ("ours", "clocs_loop"):
            res = peak_memory(name, 1024, 24, 128)
            print(f"    {name:<11} {res['seconds']:>8.2f} s   peak extra {res['peak_extra_mb']:>9.1f} MB"
                  + (f"   ({res['error']})" if "error" in res else ""))


if __name__ == "__main__":
    main()
