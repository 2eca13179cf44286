"""Which positives should CMSC use? The ablation behind the README's "Positives" section.

Arms, all with the CLOCS CNN (E = 128), two adjacent 5 s segments at 100 Hz, tau = 0.1, lr 1e-3, and the same
number of encoder forward passes per epoch (each (record, lead) gives two views):

- ``cmsc``: CLOCS's CMSC. Every (record, lead) is its own instance, shuffled independently over the pool;
  positives are the instance's other segment plus any other instance of the same patient that happens to share
  the batch (a cross-lead positive only by chance: the expected rate is printed).
- ``cmsc_patient_lead``: as ``cmsc``, but positives must also share the lead (``positives: patient_lead``).
- ``cmsmlc``: every lead and segment of a record in one batch, all of them positives of each other.

Protocol. Each arm is pretrained with 2 seeds on LUDB (40 epochs) and 1 on PTB-XL (10 epochs; the machine's
budget), on the train+val patients of the dataset's
split (LUDB: seeded 60/20/20; PTB-XL sample: the official folds). Probes: a standardised logistic regression on
frozen record embeddings, C chosen on validation AUROC, at 25% (3 nested label draws) and 100% of the training
patients. Embeddings are read two ways: the 12 lead embeddings concatenated (1,536-d, the library default) and mean-
pooled over leads (128-d, the dimension a multi-lead encoder would give). The arm to recommend is the one with the
best **validation** AUROC; test AUROC is reported for every arm but chooses nothing.

Intervals: 95% percentile intervals of a hierarchical bootstrap (1,000 replicates) that resamples pretraining
seeds, label draws and test patients (clusters), so they cover the finite test set as well as the seeds.

Run: ``SSL_ECG_DATA=../shared/data .venv/bin/python experiments/positives_ablation.py [--quick]``; it writes
``runs/positives_ablation/results.json`` and prints the Markdown tables that the README quotes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from ssl_ecg import load_encoder
from ssl_ecg.data import DataSpec, prepare
from ssl_ecg.data.splits import label_fraction_subsets
from ssl_ecg.evaluate.embed import embed_records
from ssl_ecg.evaluate.probe import ProbeData, fit_probe
from ssl_ecg.evaluate.tasks import patient_labels, task_y
from ssl_ecg.pretrain import PretrainConfig, run_pretrain

ARMS = {  # name -> (method, positives)
    "cmsc": ("cmsc", "patient"),
    "cmsc_patient_lead": ("cmsc", "patient_lead"),
    "cmsmlc": ("cmsmlc", "patient"),
}
# Batch sizes: cmsc counts (record, lead) instances and is kept where its chance cross-lead positive rate is low;
# cmsmlc counts records (12 leads x 2 segments each). Both see every instance once per epoch.
DATASETS = {
    "ludb": {"split": [0.6, 0.2, 0.2], "options": {}, "tasks": ["lad", "lvh"], "epochs": 40, "seeds": (0, 1),
             "batch": {"cmsc": 32, "cmsmlc": 16}},
    "ptbxl": {"split": "official", "options": {"fs": 100}, "tasks": ["superdiagnostic"], "epochs": 10, "seeds": (0,),
              "batch": {"cmsc": 128, "cmsmlc": 16}},
}
FRACTIONS = (0.25, 1.0)
LABEL_SEEDS = (0, 1, 2)
LEAD_FEATURES = ("concat", "mean")


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Binary AUROC, or the macro mean over the classes with both labels present."""
    if y.ndim == 1:
        return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")
    per = [roc_auc_score(y[:, c], s[:, c]) for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    return float(np.mean(per)) if per else float("nan")


def pretrain_arm(dataset: str, arm: str, seed: int, runs: Path, epochs: int) -> tuple[Path, dict]:
    method, positives = ARMS[arm]
    d = DATASETS[dataset]
    cfg = PretrainConfig(name=f"{dataset}_{arm}_s{seed}", dataset=dataset, dataset_options=d["options"],
                         method=method, positives=positives, fs=100.0, segment_len=5.0, n_segments=2,
                         temperature=0.1, embed_dim=128, lr=1e-3, batch_size=d["batch"][method], epochs=epochs,
                         seed=seed, pool="train+val", split=d["split"], split_seed=0, cache_dir="cache")
    result = run_pretrain(cfg, runs=runs, progress=False)
    return runs / cfg.name, result


def evaluate_arm(run: Path, dataset: str) -> dict:
    """Test scores of every (task, lead features, fraction, label seed) cell, plus validation AUROC."""
    enc = load_encoder(run)
    d = DATASETS[dataset]
    prepared = prepare(DataSpec(dataset=dataset, dataset_options=d["options"], fs=100.0, split=d["split"]),
                       split=run / "split.json")
    table = prepared.table
    feats = embed_records(enc, prepared.arrays(500), window=500, per_lead=True)  # (R, 12 * 128)
    views = {"concat": feats, "mean": feats.reshape(len(feats), 12, -1).mean(1)}
    patients = table["patient_key"].astype(str).to_numpy()
    split = table["split"].astype(str).to_numpy()
    out = {}
    for task in d["tasks"]:
        y_all, _ = task_y(table[task], split, task, {})
        labelled = ~np.isnan(y_all if y_all.ndim == 1 else y_all[:, 0])
        idx = {s: np.flatnonzero(labelled & (split == s)) for s in ("train", "val", "test")}
        y = np.nan_to_num(y_all).astype(int)
        train_labels = patient_labels(patients, y, idx["train"])
        for lseed in LABEL_SEEDS:
            subsets = label_fraction_subsets(list(train_labels), FRACTIONS, labels=train_labels, seed=lseed)
            for frac in FRACTIONS:
                chosen = set(subsets[frac])
                tr = np.array([i for i in idx["train"] if patients[i] in chosen])
                for lf, x in views.items():
                    data = ProbeData(x[tr], y[tr], x[idx["val"]], y[idx["val"]], x[idx["test"]], y[idx["test"]],
                                     patients[tr], patients[idx["val"]], patients[idx["test"]], task=task)
                    res = fit_probe("logistic", data, seed=lseed)
                    out[f"{task}|{lf}|{frac}|{lseed}"] = {"val": res.val_auroc, "test": res.test_auroc,
                                                          "scores": np.asarray(res.test_scores).tolist()}
        out[f"{task}|test"] = {"y": y[idx["test"]].tolist(), "patients": patients[idx["test"]].tolist()}
    return out


def bootstrap(cells: dict, task: str, lf: str, frac: float, n_boot: int = 1000, seed: int = 0) -> tuple:
    """Mean test AUROC over pretraining seeds x label draws, with a hierarchical bootstrap 95% interval."""
    rng = np.random.default_rng(seed)
    seeds = sorted(cells)
    y = np.asarray(cells[seeds[0]][f"{task}|test"]["y"])
    groups = np.unique(cells[seeds[0]][f"{task}|test"]["patients"], return_inverse=True)[1]
    members = [np.flatnonzero(groups == g) for g in range(groups.max() + 1)]
    scores = {(s, ls): np.asarray(cells[s][f"{task}|{lf}|{frac}|{ls}"]["scores"]) for s in seeds for ls in LABEL_SEEDS}
    point = float(np.mean([auroc(y, v) for v in scores.values()]))
    reps = []
    for _ in range(n_boot):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        picks = [(seeds[rng.integers(len(seeds))], LABEL_SEEDS[rng.integers(len(LABEL_SEEDS))])
                 for _ in range(len(seeds) * len(LABEL_SEEDS))]
        reps.append(np.nanmean([auroc(y[rows], scores[p][rows]) for p in picks]))
    lo, hi = np.nanpercentile(reps, [2.5, 97.5])
    val = float(np.mean([cells[s][f"{task}|{lf}|{frac}|{ls}"]["val"] for s in seeds for ls in LABEL_SEEDS]))
    return point, float(lo), float(hi), val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/positives_ablation")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs: checks the script, not the result")
    parser.add_argument("--datasets", default="ludb,ptbxl")
    args = parser.parse_args()
    runs = Path(args.runs)
    results: dict = {"arms": {}, "rates": {}, "seconds": {}}
    t0 = time.perf_counter()
    for dataset in args.datasets.split(","):
        for arm in ARMS:
            cells = {}
            for seed in DATASETS[dataset]["seeds"][:1] if args.quick else DATASETS[dataset]["seeds"]:
                epochs = 2 if args.quick else DATASETS[dataset]["epochs"]
                run, summary = pretrain_arm(dataset, arm, seed, runs, epochs)
                results["rates"][f"{dataset}|{arm}"] = summary.get("cross_lead_positive_rate")
                results["seconds"][f"{dataset}|{arm}|{seed}"] = summary.get("seconds")
                cells[seed] = evaluate_arm(run, dataset)
            for task in DATASETS[dataset]["tasks"]:
                for lf in LEAD_FEATURES:
                    for frac in FRACTIONS:
                        results["arms"][f"{dataset}|{task}|{arm}|{lf}|{frac}"] = bootstrap(cells, task, lf, frac)
            print(f"{dataset} {arm}: done at {time.perf_counter() - t0:.0f} s", flush=True)
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "results.json").write_text(json.dumps(results, indent=2))
    print_tables(results)


def print_tables(results: dict) -> None:
    rows = results["arms"]
    for dataset in DATASETS:
        for task in DATASETS[dataset]["tasks"]:
            keys = [k for k in rows if k.startswith(f"{dataset}|{task}|")]
            if not keys:
                continue
            print(f"\n{dataset} {task}: test AUROC, mean [95% bootstrap CI]; validation AUROC in brackets ()")
            print("| arm | cross-lead rate | " + " | ".join(f"{lf} @ {f:g}" for lf in LEAD_FEATURES for f in FRACTIONS)
                  + " |")
            print("|---|---|" + "---|" * (len(LEAD_FEATURES) * len(FRACTIONS)))
            for arm in ARMS:
                rate = results["rates"].get(f"{dataset}|{arm}")
                cells = []
                for lf in LEAD_FEATURES:
                    for f in FRACTIONS:
                        p, lo, hi, val = rows[f"{dataset}|{task}|{arm}|{lf}|{f}"]
                        cells.append(f"{p:.3f} [{lo:.3f}, {hi:.3f}] ({val:.3f})")
                rate_text = "-" if rate is None else f"{100 * rate:.0f}%"
                print(f"| `{arm}` | {rate_text} | " + " | ".join(cells) + " |")
            for lf in LEAD_FEATURES:
                for f in FRACTIONS:
                    best = max(ARMS, key=lambda a: rows[f"{dataset}|{task}|{a}|{lf}|{f}"][3])
                    print(f"chosen on validation ({lf}, {f:g}): {best}")
    print(f"\nwall time: {results['wall_seconds']} s")


if __name__ == "__main__":
    main()
