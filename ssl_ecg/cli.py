"""The ``ssl-ecg`` command line.

Exit codes: 0 success; 2 a user error (a bad recipe, argument, file or folder: one line naming it and what was
expected); 1 an unexpected internal error (one line with its type and message); 130 interrupted (Ctrl-C).
``--debug``, accepted anywhere on the line, also prints the traceback.
"""

from __future__ import annotations

import argparse
import errno
import sys
import time
import traceback
from pathlib import Path

from ssl_ecg.errors import SslEcgError

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from ssl_ecg.demo import load_demo, run_demo
    from ssl_ecg.recipe import parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.overwrite:
        overrides["pretrain.overwrite"] = True
    recipes = load_demo(args.recipe, overrides)
    t0 = time.perf_counter()
    result = run_demo(recipes, data=args.data, runs=args.runs, progress=not args.quiet)
    pre = result["pretrain"]
    losses = pre["losses"]
    trend = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "no epoch finished"
    reused = "; reused the finished run of this recipe (no training)" if pre.get("reused") else ""
    print(f"pretraining: {recipes.pretrain.method} on {recipes.pretrain.dataset} ({pre['records']} records, {trend}"
          f"){reused}; encoder {pre['encoder']}")
    _print_curve(result, t0)
    return 0


def _print_curve(result: dict, t0: float) -> None:
    """The curve table, where its files are, and the wall time."""
    from ssl_ecg.demo import format_table

    print()
    if result.get("allow_flags"):  # allow_overlap / allow_unknown_provenance, with the overlap counts
        print(f"NOTE {result['allow_flags']}")
    print(format_table(result["summary"]))
    if result.get("bad_leads"):  # printed even with --quiet
        from ssl_ecg.data.prepare import bad_leads_line

        print(bad_leads_line(result["bad_leads"]))
    out = result["out"]
    print(f"curve: {out / 'curve.png'}  (table {out / 'curve.csv'}, summary {out / 'curve.json'}, labels needed "
          f"{out / 'labels_needed.png'})")
    print(f"wall time: {time.perf_counter() - t0:.0f} s")


def _pretrain(args: argparse.Namespace) -> int:
    from ssl_ecg.pretrain import PretrainConfig, run_pretrain
    from ssl_ecg.recipe import load_recipe, parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.resume:
        overrides["resume"] = True
    if args.overwrite:
        overrides["overwrite"] = True
    if args.wandb:
        overrides["wandb"] = True
    if args.devices is not None:
        overrides["devices"] = args.devices
    if args.strategy is not None:
        overrides["strategy"] = args.strategy
    cfg = load_recipe(PretrainConfig, args.recipe, overrides)
    result = run_pretrain(cfg, runs=args.runs, progress=not args.quiet)
    losses = result["losses"]
    trend = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "no epoch finished"
    print(f"{cfg.method} on {cfg.dataset} ({result['records']} records, {trend}) in {result['seconds']} s")
    bad = result.get("bad_leads") or {}
    if bad:
        print(f"bad leads ({bad.get('policy')}): {bad.get('zeroed_leads', 0)} leads zeroed, "
              f"{bad.get('dropped_records', 0)} records dropped")
    if result.get("split_hash"):
        print(f"split: {result.get('split')} (hash {result['split_hash'][:12]}, {result.get('pool_patients')} "
              f"patients in the pool, labels of {result.get('label_patients', 0)})")
    if result.get("cross_lead_positive_rate") is not None:
        print(f"anchors with a positive from another lead in their batch (expected): "
              f"{result['cross_lead_positive_rate']:.1%} at batch {result.get('loss_batch_size', cfg.batch_size)}")
    if result.get("record_level_patient_ids") is not None:
        print(f"warning: {result['record_level_patient_ids']['message']}")
    if result.get("reused"):
        print("reused the finished run of this recipe, data and code (no training); --overwrite to retrain")
    print(f"encoder: {result['encoder']}  (load with ssl_ecg.load_encoder)")
    return 0


def _distill(args: argparse.Namespace) -> int:
    from ssl_ecg.pretrain.distill import DistillConfig, run_distill
    from ssl_ecg.recipe import load_recipe, parse_overrides

    overrides = parse_overrides(args.overrides)
    for flag in ("resume", "overwrite", "wandb"):
        if getattr(args, flag):
            overrides[flag] = True
    cfg = load_recipe(DistillConfig, args.recipe, overrides)
    result = run_distill(cfg, runs=args.runs, progress=not args.quiet)
    losses = result["losses"]
    trend = (f"loss {losses[0]:.4f} -> {losses[-1]:.4f} ({' '.join(f'{v:.4f}' for v in losses)})" if losses
             else "no epoch finished")
    logits = f", probe logits of {result['probe']['task']}" if result.get("probe") else ""
    print(f"distill {result['teacher']} -> leads {cfg.student_leads} ({result['records']} records of "
          f"{result['distill_pool_patients']} {cfg.pool} patients, {cfg.loss}{logits}; {trend}) "
          f"in {result['seconds']} s")
    print(f"provenance: {result['pool_patients']} pool patients (with the teacher's), labels of "
          f"{result['label_patients']}; split {result['split']} (hash {result['split_hash'][:12]})")
    if result.get("reused"):
        print("reused the finished run of this recipe, data, teacher and code (no training); --overwrite to retrain")
    print(f"student: {result['encoder']}  (evaluate with leads: {list(cfg.student_leads)})")
    return 0


_EVAL_DEFAULTS = {
    "probe": {"fractions": [1.0], "supervised": False},
    "finetune": {"fractions": [1.0], "supervised": False, "random_init": False, "probes": ["finetune"]},
    "curve": {},
}


def _evaluate(args: argparse.Namespace) -> int:
    from ssl_ecg.evaluate.runner import EvalConfig, run_evaluation
    from ssl_ecg.recipe import load_recipe, parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.wandb:
        overrides["wandb"] = True
    cfg = load_recipe(EvalConfig, args.recipe, overrides, defaults=_EVAL_DEFAULTS[args.command])
    t0 = time.perf_counter()
    result = run_evaluation(cfg, runs=args.runs, progress=not args.quiet)
    _print_curve(result, t0)
    return 0


def _reduced_leads(args: argparse.Namespace) -> int:
    from ssl_ecg.evaluate.reduced_leads import ReducedLeadsConfig, format_reduced_table, run_reduced_leads
    from ssl_ecg.recipe import load_recipe, parse_overrides

    cfg = load_recipe(ReducedLeadsConfig, args.recipe, parse_overrides(args.overrides))
    t0 = time.perf_counter()
    result = run_reduced_leads(cfg, runs=args.runs, progress=not args.quiet)
    print(format_reduced_table(result["table"]))
    out = result["out"]
    print(f"reduced leads: {out / 'reduced_leads.png'}  (table {out / 'reduced_leads.csv'}, curves "
          f"{out}/leads_<n>/)")
    print(f"wall time: {time.perf_counter() - t0:.0f} s")
    return 0


def _fewshot(args: argparse.Namespace) -> int:
    from ssl_ecg.evaluate.runner import FewShotConfig, run_fewshot_recipe
    from ssl_ecg.recipe import load_recipe, parse_overrides

    cfg = load_recipe(FewShotConfig, args.recipe, parse_overrides(args.overrides))
    result = run_fewshot_recipe(cfg, runs=args.runs)
    print(f"{cfg.ways}-way episodes on {cfg.dataset}: {result['items']} items, head patients "
          f"{result['head_patients']}, episode patients {result['episode_patients']}, {cfg.episodes} episodes")
    if result.get("allow_flags"):
        print(f"NOTE {result['allow_flags']}")
    if result.get("bad_leads"):
        from ssl_ecg.data.prepare import bad_leads_line

        print(bad_leads_line(result["bad_leads"]))
    print("95% CIs: patient bootstrap over the query patients; t over episodes: the old, too narrow interval")
    print(f"{'arm':<14}{'shots':<8}{'method':<19}{'accuracy [95% CI]':>26}{'t over episodes':>18}"
          f"{'macro F1 [95% CI]':>26}")
    for arm, by_shots in result["results"].items():
        for shots, methods in by_shots.items():
            for method, m in methods.items():
                if method == "fingerprint":  # the result's fingerprint, not a method
                    continue
                acc, f1, t = m["accuracy"], m["macro_f1"], m["accuracy_t_over_episodes"]
                print(f"{arm:<14}{shots:<8}{method:<19}{acc[0]:>12.3f} [{acc[1]:.3f},{acc[2]:.3f}]"
                      f"    [{t[1]:.3f},{t[2]:.3f}]{f1[0]:>12.3f} [{f1[1]:.3f},{f1[2]:.3f}]")
    print(f"results: {result['out'] / 'fewshot.json'}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from ssl_ecg.data.download import download

    limits = {k: v for k, v in (("timeout", args.timeout), ("file_deadline", args.file_deadline),
                                ("deadline", args.deadline)) if v is not None}
    if args.max_file_mb is not None:
        limits["max_file_bytes"] = int(args.max_file_mb * 2**20)
    print(download(args.name, args.to, base_url=args.base_url, **limits))
    return 0


def _cache(args: argparse.Namespace) -> int:
    from ssl_ecg.data import load_index
    from ssl_ecg.data.cache import CacheParams, open_cache

    options = {"fs": int(args.source_fs)} if args.source_fs else {}
    band = (args.highpass, args.lowpass) if args.highpass or args.lowpass else None
    params = CacheParams(fs=args.fs, leads=tuple(args.leads.split(",")) if args.leads else None,
                         normalization=args.normalization, bad_lead_policy=args.bad_leads, band=band)
    index = load_index(args.dataset, args.root, **options)  # after the arguments: those fail first
    t0 = time.perf_counter()
    if args.format == "shards":
        return _cache_shards(args, index, params, t0)
    cache = open_cache(index, args.out, params, rebuild=args.rebuild, verify=args.verify,
                       skip_bad_records=args.skip_bad_records)
    m = cache.manifest
    print(f"{cache.folder}: {m['n_records']} records, {cache.n_leads} leads at {cache.fs:g} Hz "
          f"({m['dropped_bad_leads']} dropped for bad leads, {m['zeroed_leads']} leads zeroed, "
          f"{m['dropped_short']} too short, {m.get('n_skipped', 0)} skipped as unreadable) "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def _cache_shards(args: argparse.Namespace, index, params, t0: float) -> int:
    from dataclasses import replace

    from ssl_ecg.data.shard_build import build_shards

    params = replace(params, skip_bad_records=bool(args.skip_bad_records))
    built = build_shards(index, args.out, params, dtype=args.dtype, shard_records=args.shard_records,
                         workers=args.workers, node_rank=args.node_rank, num_nodes=args.num_nodes,
                         rebuild=args.rebuild, verify=args.verify)
    took = time.perf_counter() - t0
    if built.cache is None:
        print(f"{built.folder}: built shards {len(built.built)} of {built.n_shards} (node {args.node_rank} of "
              f"{args.num_nodes}); {built.pending} shards of other nodes pending: the last node to finish merges "
              f"them (or run this command again once they are done) in {took:.1f} s")
        return 0
    m = built.cache.manifest
    print(f"{built.folder}: {m['n_records']} records, {built.cache.n_leads} leads at {built.cache.fs:g} Hz in "
          f"{built.n_shards} {m['dtype']} shards ({len(built.built)} built now, {built.reused} reused; "
          f"{m['dropped_bad_leads']} dropped for bad leads, {m['zeroed_leads']} leads zeroed, {m['dropped_short']} "
          f"too short, {m['n_skipped']} skipped as unreadable) in {took:.1f} s")
    return 0


def _models(args: argparse.Namespace) -> int:
    from ssl_ecg.models.summary import summarize_registry

    table = summarize_registry(fs=args.fs, seconds=args.seconds, leads=args.leads, threads=args.threads,
                               in_channels=args.in_channels)
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
    shown = table.assign(params=table["params"].map("{:,}".format), trainable_params=table["trainable_params"].map(
        "{:,}".format), macs=table["macs"].map(lambda m: f"{m / 1e6:.3f} M"))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"MACs and latency per record of {args.leads} lead(s) x {args.seconds:g} s at {args.fs:g} Hz (batch 1, "
          f"{args.threads} CPU thread(s), median of 20); size = float32 weights in MB"
          + (f"; table {args.csv}" if args.csv else ""))
    return 0


def _report(args: argparse.Namespace) -> int:
    from ssl_ecg.report import run_report

    out = run_report(results=args.results, runs=args.runs, out=args.out, full=args.full, quick=args.quick,
                     n_boot=args.n_boot, seed=args.seed, progress=not args.quiet, only=args.block)
    for result in out["blocks"]:
        failed = "".join(f"; {m} FAILED ({why})" for m, why in result["failed"].items())
        print(f"{result['block'].name}: {len(result['splits'])} split(s){failed}")
    print(f"wrote {out['out']} (figures in {out['out'].with_name(out['out'].stem + '_figures')}); wall time "
          f"{out['wall_seconds'] / 60:.1f} min")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from ssl_ecg.evaluate.runner import EvalConfig
    from ssl_ecg.evaluate.saliency import run_explain
    from ssl_ecg.recipe import load_recipe, parse_overrides

    cfg = load_recipe(EvalConfig, args.recipe, parse_overrides(args.overrides))
    result = run_explain(cfg, args.task, records=args.record, top_k=args.top_k, method=args.method,
                         fraction=args.fraction, seed=args.seed, arm=args.arm, target=args.target, out=args.out,
                         runs=args.runs, n_steps=args.n_steps, progress=not args.quiet)
    print(f"{result['method']} on {result['arm']}'s {result['task']} probe ({result['selection']}; probe test "
          f"AUROC {result['probe']['test_auroc']:.3f}):")
    for entry in result["records"]:
        print(f"  record {entry['record_id']} (patient {entry['patient_id']}): score {entry['score']:.3f}, label "
              f"{entry['label']}, {entry['r_peaks']} R peaks -> {result['out'] / entry['file']}")
    print(f"summary: {result['out'] / 'saliency.json'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ssl_ecg.deploy.export import export_encoder

    both = not (args.onnx or args.safetensors)
    result = export_encoder(args.encoder, args.out, onnx=args.onnx or both, safetensors=args.safetensors or both,
                            probe_recipe=args.probe, task=args.task, fraction=args.fraction, seed=args.seed)
    for name, rep in result["onnx"].items():
        real = f", real windows {rep['max_abs_diff_real']:.3g}" if rep["max_abs_diff_real"] is not None else ""
        print(f"{name}.onnx: max |ONNX - PyTorch| random {rep['max_abs_diff_random']:.3g}{real} (bound "
              f"{rep['bound']:.3g})")
    for name, f in result["files"].items():
        print(f"{f['path']}: {f['bytes']:,} bytes")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    import json

    from ssl_ecg.deploy.export import confined, fit_recipe_probe
    from ssl_ecg.deploy.quantize import check_calibration, quantize_probe_model

    check_calibration(args.calibration)  # before the probe is fitted
    rp = fit_recipe_probe(args.recipe, args.task, args.fraction, args.seed, encoder=args.encoder)
    report = quantize_probe_model(rp.fitted, rp.inputs.signals, rp.inputs.window, args.out,
                                  calibration=args.calibration, seed=args.seed, per_channel=args.per_channel,
                                  card=rp.card)
    path = confined(args.out, "quantization.json")
    path.write_text(json.dumps({"report": report.to_dict(), "probe": rp.probe_meta, "card": rp.card}, indent=2,
                               default=str))
    print(f"{rp.arm} ({rp.encoder_path}) + {args.task} probe: {report.test_records} test records x "
          f"{report.windows_per_record} windows; calibration {report.calibration['windows']} training windows")
    for name, m in report.models.items():
        size = f"{m['bytes']:>10,} bytes" if m["bytes"] is not None else f"{'-':>16}"
        latency = f"{m['latency_ms']:8.3f} ms/record" if m["latency_ms"] is not None else f"{'-':>17}"
        print(f"{name:<10} {size}  {latency}  test AUROC {m['test_auroc']:.4f}")
    print(f"results: {path}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``ssl-ecg pretrain: error: ...``), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``ssl-ecg`` parser. Overrides may also follow flags; :func:`main` collects them."""
    parser = _Parser(prog="ssl-ecg", description="Self-supervised pretraining on label-scarce ECG")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error (accepted anywhere on the command line)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="two recipes: CMSC pretraining on LUDB, then its label-efficiency curve")
    demo.add_argument("recipe", nargs="?", default=None,
                      help="YAML file naming the two recipes, e.g. experiments/demo.yaml (default: built-in copies)")
    demo.add_argument("overrides", nargs="*",
                      help="pretrain.KEY=VALUE / curve.KEY=VALUE overrides, e.g. pretrain.epochs=10 curve.seeds=[0,1]")
    demo.add_argument("--data", default=None, help="folder holding ludb/ (else $SSL_ECG_DATA, else the user cache)")
    demo.add_argument("--runs", default="runs", help="output folder (default: runs)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--overwrite", action="store_true",
                      help="replace a pretraining run of this name made by another recipe (pretrain.overwrite=true)")
    demo.set_defaults(func=_demo)

    pre = sub.add_parser("pretrain", help="pretrain an encoder from a recipe (experiments/*.yaml)")
    pre.add_argument("recipe", help="YAML recipe")
    pre.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=5 method=cmlc")
    pre.add_argument("--runs", default="runs", help="output folder (default: runs)")
    pre.add_argument("--quiet", action="store_true", help="no progress bar")
    pre.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    pre.add_argument("--overwrite", action="store_true",
                     help="replace an existing run of this name (its checkpoints are removed first)")
    pre.add_argument("--wandb", action="store_true", help="also log to wandb (offline unless WANDB_MODE=online)")
    pre.add_argument("--devices", type=int, default=None, help="number of devices (GPUs, or CPU processes)")
    pre.add_argument("--strategy", default=None, help="Lightning strategy, e.g. ddp")
    pre.set_defaults(func=_pretrain)

    helps = {"probe": "frozen linear probe of encoder checkpoints (all labels by default)",
             "finetune": "fine-tune encoder checkpoints end to end (all labels by default)",
             "curve": "label-efficiency curve: encoders x label fractions x seeds x probes"}
    for name, text in helps.items():
        ev = sub.add_parser(name, help=text)
        ev.add_argument("recipe", nargs="?", default=None, help="YAML recipe (ssl_ecg.evaluate.runner.EvalConfig)")
        ev.add_argument("overrides", nargs="*", help="key=value overrides, e.g. encoders={cmsc: runs/x} seeds=[0,1]")
        ev.add_argument("--runs", default="runs", help="output folder (default: runs)")
        ev.add_argument("--quiet", action="store_true", help="no progress bar")
        ev.add_argument("--wandb", action="store_true", help="also log to wandb (offline unless WANDB_MODE=online)")
        ev.set_defaults(func=_evaluate)

    fs = sub.add_parser("fewshot", help="N-way K-shot episodes with a Siamese head on frozen embeddings")
    fs.add_argument("recipe", nargs="?", default=None, help="YAML recipe (ssl_ecg.evaluate.runner.FewShotConfig)")
    fs.add_argument("overrides", nargs="*", help="key=value overrides, e.g. encoder=runs/x/encoder.pt shots=[1,5]")
    fs.add_argument("--runs", default="runs", help="output folder (default: runs)")
    fs.set_defaults(func=_fewshot)

    cache = sub.add_parser("cache", help="preprocess a dataset once into a memory-mapped cache")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    build = cache_sub.add_parser("build", help="build (or reuse) the cache of one dataset")
    build.add_argument("--dataset", required=True, help="dataset name, e.g. ludb, ptbxl, mitdb")
    build.add_argument("--root", required=True, help="the dataset's folder")
    build.add_argument("--out", default="cache", help="cache root folder (default: cache)")
    build.add_argument("--fs", type=float, default=250.0, help="target sampling rate in Hz (default 250)")
    build.add_argument("--leads", default=None, help="comma-separated lead names to keep, in order")
    build.add_argument("--normalization", default="record", choices=["record", "lead", "none"])
    build.add_argument("--bad-leads", default="zero_lead", choices=["error", "zero_lead", "drop_record"])
    build.add_argument("--highpass", type=float, default=None, help="high-pass cut-off in Hz (baseline removal)")
    build.add_argument("--lowpass", type=float, default=None, help="low-pass cut-off in Hz")
    build.add_argument("--source-fs", default=None, type=int, help="adapter option: source rate (PTB-XL: 100 or 500)")
    build.add_argument("--rebuild", action="store_true", help="rebuild even if the key matches")
    build.add_argument("--verify", action="store_true",
                       help="re-hash every source file instead of trusting unchanged (size, mtime, ctime, inode)")
    build.add_argument("--skip-bad-records", action="store_true",
                       help="skip unreadable records (listed with reasons in manifest.json) instead of stopping")
    build.add_argument("--format", default="memmap", choices=["memmap", "shards"],
                       help="memmap: one float32 file (default, fastest for small sets); shards: int16/float16 "
                            "safetensors shards built in parallel and resumably, for large sets")
    build.add_argument("--workers", type=int, default=1, help="shards: processes building shards (default 1)")
    build.add_argument("--dtype", default="int16", choices=["int16", "float16"], help="shards: storage dtype")
    build.add_argument("--shard-records", type=int, default=1024, help="shards: index rows per shard (default 1024)")
    build.add_argument("--node-rank", type=int, default=0, help="shards: this node's rank in a multi-node build")
    build.add_argument("--num-nodes", type=int, default=1,
                       help="shards: nodes sharing the build (node r builds shards k with k %% num_nodes == r)")
    build.set_defaults(func=_cache)

    dl = sub.add_parser("download", help="download a PhysioNet dataset (resumable, SHA-256 checked)")
    dl.add_argument("name", help="dataset name: ludb, mitdb, ptbxl or incart")
    dl.add_argument("--to", required=True, help="destination folder (the dataset lands in TO/NAME)")
    dl.add_argument("--base-url", default=None, help="PhysioNet file index or a mirror")
    dl.add_argument("--timeout", type=float, default=None, help="seconds without data before giving up (60)")
    dl.add_argument("--file-deadline", type=float, default=None, help="seconds one file may take (3600)")
    dl.add_argument("--deadline", type=float, default=None, help="seconds the whole download may take (86400)")
    dl.add_argument("--max-file-mb", type=float, default=None, help="largest data file accepted, MiB (2048)")
    dl.set_defaults(func=_download)

    models = sub.add_parser("models", help="parameters, MACs, size and CPU latency of every registered encoder")
    models.add_argument("--fs", type=float, default=250.0, help="sampling rate in Hz (default 250)")
    models.add_argument("--seconds", type=float, default=10.0, help="record length in seconds (default 10)")
    models.add_argument("--leads", type=int, default=12, help="leads per record (default 12)")
    models.add_argument("--threads", type=int, default=1, help="CPU threads for the latency (default 1)")
    models.add_argument("--in-channels", type=int, default=None,
                        help="build every encoder with this many channels: 1 (per lead) or LEADS (whole records); "
                             "default: each encoder's own (1)")
    models.add_argument("--csv", default=None, help="also write the table to this CSV file")
    models.set_defaults(func=_models)

    rep = sub.add_parser("report", help="run or resume the results grid (experiments/results) and write RESULTS.md")
    rep.add_argument("--results", default="experiments/results", help="folder of block recipes (*.yaml)")
    rep.add_argument("--runs", default="runs/results", help="where the grid's runs go (default: runs/results)")
    rep.add_argument("--out", default="RESULTS.md", help="the Markdown file to write (default: RESULTS.md)")
    rep.add_argument("--full", action="store_true",
                     help="also the full tier (reduced-lead, transfer, few-shot and CinC 2021 blocks) and every "
                          "block's full_methods")
    rep.add_argument("--quick", action="store_true", help="a smoke test on tiny settings (not results)")
    rep.add_argument("--n-boot", type=int, default=4000,
                     help="bootstrap replicates (default 4000: enough for a Holm-adjusted p below 0.05 in a family of "
                          "up to ~100 comparisons)")
    rep.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    rep.add_argument("--block", action="append", default=None, help="run only this block (repeatable)")
    rep.add_argument("--quiet", action="store_true", help="no progress bars")
    rep.set_defaults(func=_report)

    ex = sub.add_parser("explain", help="saliency maps (integrated gradients or Grad-CAM) of a probe's decisions, "
                                        "R peaks marked")
    ex.add_argument("recipe", nargs="?", default=None, help="YAML evaluation recipe (EvalConfig)")
    ex.add_argument("overrides", nargs="*", help="key=value overrides of the recipe, e.g. encoders={cmsc: runs/x}")
    ex.add_argument("--task", required=True, help="the task column whose probe is explained, e.g. lad")
    ex.add_argument("--record", nargs="+", default=None, help="record ids to explain (test records)")
    ex.add_argument("--top-k", type=int, default=None, help="else the K test records with the highest score (3)")
    ex.add_argument("--method", default="ig", help="ig (integrated gradients, default) or gradcam")
    ex.add_argument("--target", default=None, help="class to explain for multiclass/multi-label tasks")
    ex.add_argument("--arm", default=None, help="encoder arm of the recipe (default: its first encoder)")
    ex.add_argument("--fraction", type=float, default=1.0, help="labelled fraction of training patients (1.0)")
    ex.add_argument("--seed", type=int, default=0, help="seed of the label draw and the probe (0)")
    ex.add_argument("--n-steps", type=int, default=64, help="integrated-gradient steps (64)")
    ex.add_argument("--out", default="explain", help="folder inside the run folder runs/<name>/ (explain)")
    ex.add_argument("--runs", default="runs", help="runs folder (default: runs)")
    ex.add_argument("--quiet", action="store_true", help="no progress bars")
    ex.set_defaults(func=_explain)

    exp = sub.add_parser("export", help="export an encoder (and its probe) as ONNX and safetensors with a model card")
    exp.add_argument("encoder", help="encoder checkpoint (.pt) or run folder")
    exp.add_argument("--out", required=True, help="output folder (every file is written inside it)")
    exp.add_argument("--onnx", action="store_true", help="write ONNX (default: both forms)")
    exp.add_argument("--safetensors", action="store_true", help="write safetensors (default: both forms)")
    exp.add_argument("--probe", default=None, help="evaluation recipe (YAML) to fit the probe through; the encoder "
                                                   "must be one of its encoders")
    exp.add_argument("--task", default=None, help="the probe's task column (with --probe)")
    exp.add_argument("--fraction", type=float, default=1.0, help="labelled fraction of training patients (1.0)")
    exp.add_argument("--seed", type=int, default=0, help="seed of the label draw and the checks (0)")
    exp.set_defaults(func=_export)

    qu = sub.add_parser("quantize", help="INT8 static quantisation (ONNX Runtime, QDQ) of an encoder + probe")
    qu.add_argument("recipe", help="evaluation recipe (YAML) giving the encoder, data and split")
    qu.add_argument("--task", required=True, help="the probe's task column")
    qu.add_argument("--out", required=True, help="output folder (ONNX files and quantization.json)")
    qu.add_argument("--encoder", default=None, help="which of the recipe's encoders (default: the first)")
    qu.add_argument("--fraction", type=float, default=1.0, help="labelled fraction of training patients (1.0)")
    qu.add_argument("--seed", type=int, default=0, help="seed of the label draw and the calibration windows (0)")
    qu.add_argument("--calibration", type=int, default=256, help="calibration windows from training records (256)")
    qu.add_argument("--per-channel", action="store_true", help="per-output-channel weight scales")
    qu.set_defaults(func=_quantize)
    dis = sub.add_parser("distill", help="distil a pretrained 12-lead teacher into a student on a lead subset")
    dis.add_argument("recipe", help="YAML recipe (ssl_ecg.pretrain.distill.DistillConfig)")
    dis.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=5 student_leads=[II]")
    dis.add_argument("--runs", default="runs", help="output folder (default: runs)")
    dis.add_argument("--quiet", action="store_true", help="no progress bar")
    dis.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    dis.add_argument("--overwrite", action="store_true", help="replace an existing run of this name")
    dis.add_argument("--wandb", action="store_true", help="also log to wandb (offline unless WANDB_MODE=online)")
    dis.set_defaults(func=_distill)
    rl = sub.add_parser("reduced-leads", help="label-efficiency curves at the CinC 2021 lead sets (12, 6, 4, 3, 2, 1)")
    rl.add_argument("recipe", nargs="?", default=None,
                    help="YAML recipe (ssl_ecg.evaluate.reduced_leads.ReducedLeadsConfig)")
    rl.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lead_sets=[12,2,1] seeds=[0,1]")
    rl.add_argument("--runs", default="runs", help="output folder (default: runs)")
    rl.add_argument("--quiet", action="store_true", help="no progress bar")
    rl.set_defaults(func=_reduced_leads)
    return parser


def _place_extras(args: argparse.Namespace, extras: list[str]) -> str | None:
    """Put the tokens argparse left over (those after a flag) where they belong; a message if one fits nowhere.

    ``key=value`` tokens are overrides; a lone token is the recipe if the command takes one and has none yet.
    """
    takes_overrides = hasattr(args, "overrides")
    if getattr(args, "recipe", None) and "=" in args.recipe and not Path(args.recipe).is_file():
        args.overrides.insert(0, args.recipe)  # `ssl-ecg probe seeds=[0,1]`: no recipe, only overrides
        args.recipe = None
    for token in extras:
        if token.startswith("-"):
            return f"unrecognized flag {token!r}"
        if takes_overrides and "=" in token:
            args.overrides.append(token)
        elif takes_overrides and hasattr(args, "recipe") and args.recipe is None and not args.overrides:
            args.recipe = token
        elif takes_overrides:
            return f"{token!r}: expected a key=value override or a flag"
        else:
            return f"unexpected argument {token!r}"
    return None


_OS_EXPECTED = {
    errno.EACCES: "a file or folder this user may read and write (check --runs, cache_dir, root)",
    errno.EPERM: "a file or folder this user may read and write (check --runs, cache_dir, root)",
    errno.EROFS: "a writable file system (choose another --runs or cache_dir)",
    errno.ENOSPC: "free disk space (free some, or choose another --runs or cache_dir)",
    errno.ENOTDIR: "a folder, but a file is in the way",
    errno.EEXIST: "a folder, but a file is in the way",
    errno.EISDIR: "a file, but found a folder",
    errno.ENOENT: "an existing file or folder",
}


def _os_message(exc: OSError) -> str:
    """``<file>: <reason>; expected <what>`` for an OSError."""
    names = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = exc.strerror or str(exc)
    expected = _OS_EXPECTED.get(exc.errno)
    return (f"{names}: " if names else "") + reason + (f"; expected {expected}" if expected else "")


def main(argv: list[str] | None = None) -> int:
    """Run ``ssl-ecg`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code (see the module doc)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    argv = [a for i, a in enumerate(argv) if not (a == "--debug" and i < end)]
    args, extras = build_parser().parse_known_args(argv)
    prog = f"ssl-ecg {args.command}" + (f" {args.cache_command}" if getattr(args, "cache_command", None) else "")
    problem = _place_extras(args, extras)
    if problem:
        print(f"{prog}: error: {problem} (see {prog} --help)", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure becomes one line; --debug adds the traceback
        if debug:
            traceback.print_exc()
        if isinstance(exc, SslEcgError):
            code, text = 2, str(exc)
        elif isinstance(exc, OSError):
            code, text = 2, _os_message(exc)
        else:
            code = 1
            text = f"internal error {type(exc).__name__}: {exc}" + ("" if debug else
                                                                     " (run with --debug for the traceback)")
        print(f"{prog}: error: {' '.join(text.split())}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
