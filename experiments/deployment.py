"""The deployment table: what each efficiency technique costs in labels and AUROC, on one bundled task.

Run: ``SSL_ECG_DATA=../shared/data .venv/bin/python experiments/deployment.py [--runs runs/deployment]
[--task lad] [--quick]``

Every arm is pretrained with CMSC on the same LUDB split (``experiments/ludb_cmsc.yaml``, only the encoder
changed), then probed by the curve's logistic probe at 10% and 100% of the training patients:

- 12-lead encoders, each lead embedded alone (CMSC) and concatenated: the CLOCS CNN, a small ResNet1d, and the
  lightweight ``mobilenet1d`` / ``mobilenetv2_1d``;
- 1-lead (II) students: the CLOCS CNN distilled from the 12-lead CLOCS teacher (``ssl-ecg distill``), and the same
  architecture pretrained directly on lead II;
- the 12-lead CLOCS encoder + probe quantised to INT8 (ONNX Runtime static QDQ, calibrated on training windows).

Intervals: the encoder rows come from ``run_evaluation`` (hierarchical bootstrap over 3 label draws and the test
patients). The FP32/INT8 rows are a second table: one label draw (seed 0), both scored by ONNX Runtime on the same
test records, each with a patient bootstrap of its test AUROC and their paired difference; they are not comparable
with the first table's intervals (one draw, not three). Costs: parameters, MACs (ptflops) and single-thread CPU latency
per 10 s record (every window and lead the arm embeds, in one call; the ONNX rows include the probe), float32
weight size (ONNX rows: the file, graph included).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ssl_ecg.deploy.export import load_onnx_encoder
from ssl_ecg.deploy.quantize import quantize_probe_model
from ssl_ecg.evaluate.head import fit_probe_model
from ssl_ecg.evaluate.runner import EvalConfig, evaluation_inputs, run_evaluation
from ssl_ecg.evaluate.stats import patient_bootstrap, percentile_interval
from ssl_ecg.models.summary import encoder_summary
from ssl_ecg.pretrain.distill import DistillConfig, run_distill
from ssl_ecg.pretrain.run import PretrainConfig, run_pretrain
from ssl_ecg.recipe import load_recipe

HERE = Path(__file__).resolve().parent
ENCODERS = {
    "clocs": None,  # the recipe's default: the CLOCS CNN
    "resnet1d_small": {"name": "resnet1d", "widths": [32, 64], "depth": [1, 1]},
    "mobilenet1d": {"name": "mobilenet1d"},
    "mobilenetv2_1d": {"name": "mobilenetv2_1d"},
}
FRACTIONS = [0.1, 1.0]
SEEDS = [0, 1, 2]


def pretrain(runs: Path, quick: bool) -> dict[str, str]:
    budget = {"epochs": 1, "max_steps": 2} if quick else {}
    paths = {}
    for arm, encoder in ENCODERS.items():
        overrides = {"name": arm, "monitor_label": None, **budget, **({"encoder": encoder} if encoder else {})}
        run_pretrain(load_recipe(PretrainConfig, HERE / "ludb_cmsc.yaml", overrides), runs=runs, progress=False)
        paths[arm] = str(runs / arm)
    direct = {"name": "lead2_direct", "leads": ["II"], "monitor_label": None, **budget}
    run_pretrain(load_recipe(PretrainConfig, HERE / "ludb_cmsc.yaml", direct), runs=runs, progress=False)
    paths["lead2_direct"] = str(runs / "lead2_direct")
    distill = {"name": "lead2_distilled", "teacher": str(runs / "clocs"), **({"epochs": 1} if quick else {})}
    run_distill(load_recipe(DistillConfig, HERE / "distill_ludb_lead2.yaml", distill), runs=runs, progress=False)
    paths["lead2_distilled"] = str(runs / "lead2_distilled")
    return paths


def curve(runs: Path, name: str, encoders: dict[str, str], task: str, leads: list[str] | None, quick: bool) -> dict:
    cfg = EvalConfig(name=name, dataset="ludb", fs=100.0, window=5.0, leads=leads, encoders=encoders,
                     random_init=False, supervised=False, tasks=[task], fractions=FRACTIONS,
                     seeds=SEEDS[:1] if quick else SEEDS, probes=["logistic"])
    return run_evaluation(cfg, runs=runs, progress=False)["summary"][task]


def cost(path: str, n_leads: int, repeats: int = 30) -> dict:
    """Parameters, MACs, size and latency for one 10 s record at 100 Hz: two 5 s windows of every lead, embedded
    in one call (a per-lead encoder sees a batch of windows x leads single-lead items), one CPU thread."""
    import torch

    from ssl_ecg.checkpoint import load_encoder

    enc = load_encoder(path)
    per_lead = enc.config.get("in_channels") == 1
    s = encoder_summary(enc, 1 if per_lead else n_leads, 500, repeats=3)
    items = 2 * (n_leads if per_lead else 1)  # windows x leads through the encoder per record
    x = torch.randn(items, 1 if per_lead else n_leads, 500, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for _ in range(3):
                enc(x)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                enc(x)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return {"params": s["params"], "macs": s["macs"] * items, "size_mb": s["size_mb"],
            "latency_ms": float(np.median(times) * 1e3)}


def int8_rows(runs: Path, encoder: str, task: str, quick: bool) -> dict:
    """FP32 vs INT8 of the CLOCS encoder + probe at each fraction (label draw 0), on the same test patients."""
    cfg = EvalConfig(name="int8", dataset="ludb", fs=100.0, window=5.0, encoders={"clocs": encoder},
                     random_init=False, supervised=False, tasks=[task], fractions=FRACTIONS, seeds=[0])
    inputs = evaluation_inputs(cfg)
    out = {}
    for fraction in FRACTIONS:
        fitted = fit_probe_model(inputs.arms["clocs"], inputs.signals, inputs.table, inputs.splits, task,
                                 inputs.window, inputs.per_lead["clocs"], fraction=fraction, seed=0)
        report = quantize_probe_model(fitted, inputs.signals, inputs.window, runs / "int8" / f"f{fraction:g}")
        test = fitted.rows["test"]
        x = inputs.signals[test]
        n_win = x.shape[-1] // inputs.window
        windows = x[..., : n_win * inputs.window].reshape(len(x), x.shape[1], n_win, inputs.window)
        windows = windows.transpose(0, 2, 1, 3).reshape(len(x) * n_win, x.shape[1], inputs.window)

        def onnx_scores(model: str) -> np.ndarray:  # record score = the probe's function of the mean window logit
            session = load_onnx_encoder(report.models[model]["path"])
            return fitted.model.scores(session(windows.astype(np.float32)).reshape(len(x), n_win, -1).mean(1))

        int8_scores, fp32_scores = onnx_scores("onnx_int8"), onnx_scores("onnx_fp32")
        y = fitted.y[test]
        patients = inputs.table["patient_id"].astype(str).to_numpy()[test]
        kind = fitted.model.kind
        b8 = patient_bootstrap(y, int8_scores, patients, kind, n_boot=1000, seed=0)
        b32 = patient_bootstrap(y, fp32_scores, patients, kind, n_boot=1000, seed=0)
        diff = percentile_interval(b8.replicates - b32.replicates)
        out[f"{fraction:g}"] = {"int8": [b8.estimate, *percentile_interval(b8.replicates)],
                                "fp32": [b32.estimate, *percentile_interval(b32.replicates)],
                                "int8_minus_fp32": [b8.estimate - b32.estimate, *diff],
                                "int8_bytes": report.models["onnx_int8"]["bytes"],
                                "fp32_bytes": report.models["onnx_fp32"]["bytes"],
                                "int8_latency_ms": report.models["onnx_int8"]["latency_ms"],
                                "fp32_latency_ms": report.models["onnx_fp32"]["latency_ms"],
                                "int8_max_abs_diff_logits": report.int8_max_abs_diff_logits}
    return out


def _cell(c: dict | list) -> str:
    if isinstance(c, list):
        return f"{c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}]"
    return f"{c['mean']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/deployment")
    parser.add_argument("--task", default="lad")
    parser.add_argument("--quick", action="store_true", help="1-step pretraining, one label draw (a smoke test)")
    args = parser.parse_args()
    runs = Path(args.runs)
    t0 = time.perf_counter()
    paths = pretrain(runs, args.quick)
    twelve = {a: paths[a] for a in ENCODERS}
    single = {a: paths[a] for a in ("lead2_distilled", "lead2_direct")}
    summary = {**curve(runs, "curve_12lead", twelve, args.task, None, args.quick),
               **curve(runs, "curve_lead2", single, args.task, ["II"], args.quick)}
    costs = {a: cost(p, 12) for a, p in twelve.items()} | {a: cost(p, 1) for a, p in single.items()}
    int8 = int8_rows(runs, paths["clocs"], args.task, args.quick)
    names = {"resnet1d_small": "resnet1d (widths [32, 64], depth [1, 1])",
             "lead2_distilled": "clocs, lead II, distilled from the 12-lead clocs",
             "lead2_direct": "clocs, lead II, CMSC on lead II"}
    rows = ["| encoder (CMSC on LUDB) | leads | params | MACs / record | CPU latency / record | float32 weights | "
            f"{args.task} AUROC at 10% | at 100% |", "|---|---|---|---|---|---|---|---|"]
    for arm in [*twelve, *single]:
        c = costs[arm]
        rows.append(f"| {names.get(arm, arm)} | {12 if arm in twelve else 1} | {c['params']:,} | "
                    f"{c['macs'] / 1e6:.2f} M | {c['latency_ms']:.2f} ms | {c['params'] * 4 / 1024:.0f} KB | "
                    f"{_cell(summary[arm]['0.1'])} | {_cell(summary[arm]['1'])} |")
    rows += ["", "| clocs encoder + probe, one label draw | ONNX file | CPU latency / record | "
             f"{args.task} AUROC at 10% | at 100% |", "|---|---|---|---|---|"]
    for label, key in (("FP32 (ONNX Runtime)", "fp32"), ("INT8 (static QDQ, calibrated on training windows)",
                                                          "int8")):
        rows.append(f"| {label} | {int8['1'][key + '_bytes'] / 1024:.0f} KB | "
                    f"{int8['1'][key + '_latency_ms']:.2f} ms | {_cell(int8['0.1'][key])} | {_cell(int8['1'][key])} |")
    rows.append("| INT8 - FP32 (paired) | | | " + " | ".join(_cell(int8[f]["int8_minus_fp32"]) for f in ("0.1", "1"))
                + " |")
    text = "\n".join(rows)
    print(text)
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    (runs / "deployment.json").write_text(json.dumps({"summary": summary, "costs": costs, "int8": int8,
                                                      "table": text, "quick": args.quick}, indent=2, default=str))


if __name__ == "__main__":
    main()
