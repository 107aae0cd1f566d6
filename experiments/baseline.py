#!/usr/bin/env python3
"""Baseline VPN behaviour, no mobility: two external mobile nodes reach the office and each other
through the security gateway (hub and spoke), every packet on the public side inside ESP.

Measures, per address plan: RTT (ping) and TCP throughput (iperf3 -J) from MN1 to the file server's
office address and from MN1 to MN2's home address, plus a plain in-office reference (laptop -> file
server). Prints a table and writes results/baseline-<timestamp>/ (config.json, measurements.csv,
events.jsonl).

    sudo python3 experiments/baseline.py [--addressing private|public|both] [--seconds 3]
"""
import _venv  # noqa: F401  (re-executes inside .venv)

import argparse
import csv
import datetime
import json
import os
import platform
import sys

from experiments.cli import OneLineErrorParser, add_link_options, add_output_options, apply_link_options, not_root
from nodeapps.linkemu.errors import LinkConfigError
from topologies import runs
from topologies.addressing import ACCESS_NETWORKS, PlanError
from topologies.lab import LabError, SvpnLab
from topologies.measurements import MeasurementError, iperf3, ping

FIELDS = ["addressing", "flow", "path", "source", "destination", "rtt_median_ms", "rtt_min_ms", "rtt_max_ms",
          "ping_loss_pct", "tcp_mbit_s", "tcp_retransmits"]


def parse_args(argv):
    parser = OneLineErrorParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addressing", choices=["private", "public", "both"], default="private",
                        help="address plan: private = embodiment 1, public = embodiment 2 (default private)")
    parser.add_argument("--seconds", type=float, default=3.0, help="iperf3 duration per flow (default 3)")
    parser.add_argument("--pings", type=int, default=50, help="echo requests per flow, 20 per second (default 50)")
    parser.add_argument("--attachments", default="wlan1,cell",
                        help=f"network of MN1,MN2 (from {', '.join(ACCESS_NETWORKS)}; default wlan1,cell)")
    add_output_options(parser, plots=False)
    add_link_options(parser)
    args = parser.parse_args(argv)
    apply_link_options(parser, args)
    if not 0.5 <= args.seconds <= 600:
        parser.error("--seconds must be between 0.5 and 600")
    if not 1 <= args.pings <= 100000:
        parser.error("--pings must be between 1 and 100000")
    args.attachments = [a.strip() for a in args.attachments.split(",")]
    return args


def measure(lab: SvpnLab, rows: list, addressing: str, seconds: float, pings: int) -> None:
    plan = lab.plan
    mn2 = plan.mobile_nodes[1]
    flows = [
        ("mn1->fs", "via-sg", "mn1", "fs", plan.office["fs"]),
        ("mn1->mn2", "via-sg", "mn1", "mn2", mn2.home_address),
        ("lap->fs", "office", "lap", "fs", plan.office["fs"]),
    ]
    for flow, path, src, dst, address in flows:
        lab.check_nodes()
        print(f"  {addressing:8s} {flow:9s} ping ...", end="", flush=True)
        p = ping(lab.host(src), address, count=pings, interval=0.05)
        lab.check_nodes()
        print(" iperf3 ...", end="", flush=True)
        t = iperf3(lab.host(src), lab.host(dst), address, seconds=seconds)
        print(" done", flush=True)
        rows.append({"addressing": addressing, "flow": flow, "path": path, "source": src,
                     "destination": address, "rtt_median_ms": p["rtt_median_ms"], "rtt_min_ms": p["rtt_min_ms"],
                     "rtt_max_ms": p["rtt_max_ms"], "ping_loss_pct": p["loss_pct"],
                     "tcp_mbit_s": round(t["mbit_s"], 1), "tcp_retransmits": t["retransmits"]})


def describe_links(meta: dict) -> str:
    """One line telling the user which emulation mechanism this run's links use, and why."""
    backends = ", ".join(f"{count} {name}" for name, count in sorted(meta["backends"].items()))
    netem = "kernel netem available" if meta["netem_available"] else "no kernel netem: delays emulated in userspace"
    return f"links: {backends} ({netem})"


def write_results(out_dir: str, args, rows: list, events: list, complete: bool, links: dict,
                  handler_errors: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "measurements.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(out_dir, "events.jsonl"), "w") as f:
        for record in events:
            f.write(json.dumps(record) + "\n")
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump({"experiment": "baseline", "complete": complete, "argv": sys.argv,
                   "addressing": args.addressing, "seconds": args.seconds, "pings": args.pings,
                   "attachments": args.attachments, "python": platform.python_version(),
                   "kernel": platform.release(), "link_overrides": args.link_params,
                   "ideal_links": args.ideal_links, "link_emulation": links,
                   "handler_errors": handler_errors},
                  f, indent=2)


def print_table(rows: list) -> None:
    print(f"\n{'plan':8s} {'flow':9s} {'path':7s} {'RTT median':>11s} {'min':>7s} {'max':>7s} {'loss':>6s} {'TCP':>12s}")
    for r in rows:
        print(f"{r['addressing']:8s} {r['flow']:9s} {r['path']:7s} {r['rtt_median_ms'] or float('nan'):9.3f}ms "
              f"{r['rtt_min_ms'] or float('nan'):7.3f} {r['rtt_max_ms'] or float('nan'):7.3f} "
              f"{r['ping_loss_pct']:5.1f}% {r['tcp_mbit_s']:7.1f} Mbit/s")


def main(argv=None) -> int:
    args = parse_args(argv)
    if not_root("baseline.py"):
        return 2
    plans = ["private", "public"] if args.addressing == "both" else [args.addressing]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = os.path.join(args.results, f"baseline-{stamp}")
    rows, events, complete, interrupted, code = [], [], False, False, 0
    links = {}
    handler_errors = {}   # plan -> {node: handler_errors as it exited}

    runs.stop_signals_interrupt()
    try:
        for addressing in plans:
            print(f"building the SVPN lab ({addressing} addressing) ...", flush=True)
            lab = SvpnLab(addressing=addressing, mobile_nodes=2, attachments=args.attachments,
                          link_params=args.link_params, links="ideal" if args.ideal_links else "default")
            try:
                lab.start()
                print("network up; VPN nodes running: " + ", ".join(lab.vpn_nodes()), flush=True)
                print("  " + describe_links(lab.link_metadata()), flush=True)
                measure(lab, rows, addressing, args.seconds, args.pings)
                events += lab.events()
            finally:
                lab.stop()
                links[addressing] = lab.link_metadata()
                handler_errors[addressing] = lab.handler_errors()
        complete = True
    except KeyboardInterrupt:
        print("\ninterrupted: network torn down; keeping what was measured", file=sys.stderr)
        interrupted, code = True, 130
    except (PlanError, LabError, MeasurementError, LinkConfigError) as exc:
        print(f"baseline.py: {exc}", file=sys.stderr)
        code = 1
    if rows or complete or interrupted:
        write_results(out_dir, args, rows, events, complete, links, handler_errors)
        print_table(rows)
        print(f"\nresults: {out_dir}" + ("" if complete else " (incomplete)"))
    return code


if __name__ == "__main__":
    sys.exit(main())
