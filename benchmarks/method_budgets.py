"""Every bundled LUDB pretraining recipe's budget in one unit: encoder forward passes (and wall time).

For each ``experiments/ludb_*.yaml`` it runs ``run_pretrain`` for ``--epochs`` epochs (default 2) in a temporary
runs folder and reads the run summary: instances per epoch, encoder forward passes per epoch (samples through the
encoder: N x V per step, summed), and seconds per epoch. The recipe's own epoch count then gives its total
budget in passes, and an estimated wall time (measured seconds per epoch x recipe epochs).

Run: ``SSL_ECG_DATA=../shared/data .venv/bin/python benchmarks/method_budgets.py`` (prints a Markdown table).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ssl_ecg.pretrain import PretrainConfig, run_pretrain
from ssl_ecg.recipe import load_recipe

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cache", default="cache")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for path in sorted(EXPERIMENTS.glob("ludb_*.yaml")):
            recipe = load_recipe(PretrainConfig, path)
            cfg = load_recipe(PretrainConfig, path, {"epochs": args.epochs, "cache_dir": args.cache})
            s = run_pretrain(cfg, runs=runs, progress=False)
            per_epoch = s["encoder_forward_passes_per_epoch"]
            passes = int(per_epoch[-1]) if isinstance(per_epoch, list) else int(per_epoch)
            sec = s["seconds"] / args.epochs
            rows.append((recipe.method, recipe.batch_size, s.get("instances", s["records"]), passes, recipe.epochs,
                         passes * recipe.epochs, sec, sec * recipe.epochs, s.get("cross_lead_positive_rate")))
    print("| method | batch | instances / epoch | encoder passes / epoch | epochs | encoder passes | s / epoch | "
          "est. wall time | cross-lead positive rate |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, b, n, p, e, total, sec, wall, rate in rows:
        rate_text = "-" if rate is None else f"{100 * rate:.0f}%"
        print(f"| `{m}` | {b} | {n:,} | {p:,} | {e} | {total:,} | {sec:.1f} | {wall / 60:.1f} min | {rate_text} |")


if __name__ == "__main__":
    main()
