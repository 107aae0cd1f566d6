"""The lab on one server against the same lab with its mobile nodes on a second server (docs/scaling.md):
``experiments/handover.py --quick`` alternately without and with ``--loopback-server`` (a temporary sshd in
namespaces of its own on this machine, each MN linked to its access link's emulator by an SSH Ethernet
tunnel). Per strategy and phase: median MN–MN RTT, handover gaps and TCP throughput, one server beside two.

Run as root:  .venv/bin/python benchmarks/two_servers.py [--rounds 3] [--strategies sg,vcm] [--json FILE]

A benchmark, not a test: the 2 CPUs are shared by both "servers", so the second one costs CPU (ssh
encrypts every tunnelled frame) that a real second machine would not.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANDOVER = os.path.join(ROOT, "experiments", "handover.py")
RATE_COLUMN = "mbit_s"
PLACEMENTS = {"one server": [], "two servers": ["--loopback-server"]}


def run_once(extra: list[str], strategies: str, results: str) -> tuple[str, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, HANDOVER, "--quick", "--strategies", strategies, "--no-plots",
                           "--results", results, *extra], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise SystemExit(f"two_servers.py: handover.py {' '.join(extra)} failed: {' '.join(tail)}")
    (folder,) = sorted(glob.glob(os.path.join(results, "handover-*")))[-1:]
    return folder, time.monotonic() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--strategies", default="sg,vcm")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds must be 1..100")
    if os.geteuid() != 0:
        print("two_servers.py: needs root (Mininet)", file=sys.stderr)
        return 2
    rtts, gaps, rates, walls = [], [], [], {name: [] for name in PLACEMENTS}
    with tempfile.TemporaryDirectory(prefix="two-servers-") as results:
        for round_no in range(args.rounds):
            for name, extra in PLACEMENTS.items():
                folder, wall = run_once(extra, args.strategies, os.path.join(results, f"{round_no}-{name}"))
                walls[name].append(wall)
                rtt = pd.read_csv(os.path.join(folder, "rtt.csv"))
                rtt = rtt[rtt["lost"] == 0].assign(placement=name, round=round_no)
                rtts.append(rtt)
                gaps.append(pd.read_csv(os.path.join(folder, "handovers.csv")).assign(placement=name))
                rates.append(pd.read_csv(os.path.join(folder, "throughput.csv")).assign(placement=name))
                print(f"round {round_no + 1}: {name} {wall:.1f} s", flush=True)
    rtt = pd.concat(rtts)
    table = rtt.pivot_table(index=["strategy", "phase"], columns="placement", values="rtt_ms", aggfunc="median", sort=False)
    gap = pd.concat(gaps).pivot_table(index=["strategy", "phase"], columns="placement", values="gap_ms",
                                      aggfunc="median", sort=False)
    print("\nMedian MN-MN RTT, ms, over all rounds:\n")
    print(table[list(PLACEMENTS)].round(2).to_markdown())
    print("\nMedian handover gap, ms:\n")
    print(gap[list(PLACEMENTS)].round(1).to_markdown())
    rate = pd.concat(rates).pivot_table(index=["strategy", "phase"], columns="placement", values=RATE_COLUMN,
                                        aggfunc="mean", sort=False)
    print("\nMN-MN TCP throughput, Mbit/s (iperf3's rate per transfer, mean over the rounds):\n")
    print(rate[list(PLACEMENTS)].round(1).to_markdown())
    print("\nWhole handover.py run, s (median): " + ", ".join(
        f"{name} {pd.Series(w).median():.1f}" for name, w in walls.items()))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rtt_ms": {" / ".join(k): v for k, v in table.to_dict(orient="index").items()},
                       "gap_ms": {" / ".join(k): v for k, v in gap.to_dict(orient="index").items()},
                       "mbit_s": {" / ".join(k): v for k, v in rate.to_dict(orient="index").items()},
                       "wall_s": walls, "rounds": args.rounds, "strategies": args.strategies}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
