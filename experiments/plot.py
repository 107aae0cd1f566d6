#!/usr/bin/env python3
"""Re-draw every figure of a results folder, without starting a network (Mininet is not needed).

    python3 experiments/plot.py results/handover-20260101-120000 [--out DIR] [--format png,svg]

Reads config.json, events.jsonl and the CSV tables (see experiments/records.py), writes the figures listed
in experiments/plotting.py into DIR (default: <results folder>/plots) and prints their paths. Runs with
the project's virtualenv when there is one, otherwise with any Python 3.11 that has pandas and matplotlib.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.exists(os.path.join(ROOT, ".venv", "bin", "python")):
    import _venv  # noqa: F401  (re-executes inside .venv)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("folder", metavar="DIR", help="a results folder (holds config.json)")
    parser.add_argument("--out", help="where to write the figures (default DIR/plots)")
    parser.add_argument("--format", default="png,svg", help="comma-separated: png, svg, pdf (default png,svg)")
    args = parser.parse_args(argv)
    args.formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in args.formats if f not in ("png", "svg", "pdf")]
    if bad or not args.formats:
        parser.error(f"--format: {', '.join(bad) or 'nothing'} is not png, svg or pdf")
    if not os.path.isdir(args.folder):
        parser.error(f"{args.folder} is not a folder")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from experiments import plotting, records
    except ImportError as exc:
        print(f"plot.py: {exc.name} is missing; install pandas and matplotlib (or run `make install`)",
              file=sys.stderr)
        return 2
    try:
        written = plotting.draw_all(args.folder, args.out, args.formats, workers=min(4, os.cpu_count() or 1))
    except records.RecordsError as exc:
        print(f"plot.py: {exc}", file=sys.stderr)
        return 1
    for name, paths in written.items():
        shown = [os.path.relpath(p) if not os.path.relpath(p).startswith("..") else p for p in paths]
        print(f"{name:20s} " + "  ".join(shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
