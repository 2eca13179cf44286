"""The ``ssl-ecg`` command line."""

from __future__ import annotations

import argparse
import sys
import time

from ssl_ecg.errors import SslEcgError

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from ssl_ecg.demo import DemoConfig, format_table, run_demo
    from ssl_ecg.recipe import load_recipe, parse_overrides

    cfg = load_recipe(DemoConfig, args.recipe, parse_overrides(args.overrides))
    t0 = time.perf_counter()
    result = run_demo(cfg, data=args.data, runs=args.runs, progress=not args.quiet)
    print()
    print(format_table(result["summary"]))
    out = result["out"]
    print(f"curve: {out / 'curve.png'}  (table {out / 'curve.csv'}, summary {out / 'curve.json'})")
    print(f"wall time: {time.perf_counter() - t0:.0f} s")
    return 0


def _download(args: argparse.Namespace) -> int:
    from ssl_ecg.data.download import download_ludb

    if args.name != "ludb":
        raise SslEcgError(f"download: only 'ludb' is supported in this version, got {args.name!r}")
    print(download_ludb(args.to))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssl-ecg", description="Self-supervised pretraining on label-scarce ECG")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="CMSC pretraining on LUDB -> label-efficiency curve")
    demo.add_argument("recipe", nargs="?", default=None, help="YAML recipe (default: built-in demo settings)")
    demo.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=10 seeds=[0,1]")
    demo.add_argument("--data", default=None, help="folder holding ludb/ (else $SSL_ECG_DATA, else the user cache)")
    demo.add_argument("--runs", default="runs", help="output folder (default: runs)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)

    dl = sub.add_parser("download", help="download a PhysioNet dataset with wfdb")
    dl.add_argument("name", help="dataset name (ludb)")
    dl.add_argument("--to", required=True, help="destination folder")
    dl.set_defaults(func=_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if getattr(args, "recipe", None) and "=" in args.recipe:
        args.overrides.insert(0, args.recipe)
        args.recipe = None
    try:
        return args.func(args)
    except SslEcgError as exc:
        print(f"ssl-ecg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
