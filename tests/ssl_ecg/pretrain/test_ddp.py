import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).with_name("ddp_script.py")


@pytest.mark.slow
def test_two_process_gloo_pretraining_finds_positives_across_ranks(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3]), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = pd.read_csv(next((tmp_path / "logs").rglob("metrics.csv")))
    # Each rank holds one record of each of 8 patients, so every positive lies on the other rank:
    # 8 per rank and step, summed over 2 ranks -> 16 per epoch.
    assert logs["cross_rank_positives"].dropna().tolist() == [16.0, 16.0]
    assert logs["positives_per_view"].dropna().tolist() == [1.0, 1.0]
    assert all(math.isfinite(v) for v in logs["train_loss_epoch"].dropna())
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights"] == pytest.approx(ranks[1]["weights"], rel=1e-6)  # DDP kept the replicas equal
