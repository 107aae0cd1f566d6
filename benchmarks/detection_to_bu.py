"""Time from movement detection to the first Binding Update at the mobile node, read from event logs.

Detection is the node's ``new_link`` event (an RA named a new router/prefix; the lab's first link of a
run, ``previous`` null, is not a move) or an ``address_hint`` of verdict ``candidate``; the BU is the next
``mobility_sent`` BU of the same node before its next detection. What lies between is the node's own work:
the address, route and policy changes (netlink requests) and building the BUs. Moves out (BU lifetime
> 0) and into the office (deregistration, lifetime 0) are told apart: the second path changes more.

Reads only records (no network): a results folder of experiments/handover.py (its events.jsonl) or a
node's own ``<run_dir>/mnN.events.jsonl``.

    .venv/bin/python benchmarks/detection_to_bu.py RESULTS_DIR_OR_EVENTS_FILE ... [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

WINDOW_S = 1.0   # a BU later than this after detection belongs to something else (a retransmission)


def read_events(path: str) -> list[dict]:
    """The events of a results folder (its events.jsonl) or of one event file; unreadable lines skipped."""
    if os.path.isdir(path):
        path = os.path.join(path, "events.jsonl")
    node = os.path.basename(path).split(".")[0] if path.endswith(".events.jsonl") else None
    events = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("time"), (int, float)):
                event.setdefault("node", node)
                events.append(event)
    return sorted(events, key=lambda e: e["time"])


def _is_detection(event: dict) -> bool:
    if event.get("event") == "new_link":
        return event.get("previous") is not None
    return event.get("event") == "address_hint" and event.get("verdict") == "candidate"


def moves(events: list[dict]) -> list[dict]:
    """One row per detection that a BU followed: node, detection time, delay (ms), out or home."""
    rows, pending = [], {}
    for event in events:
        node = event.get("node")
        if _is_detection(event):
            pending[node] = event
        elif event.get("event") == "mobility_sent" and str(event.get("what", "")).startswith("BU") \
                and node in pending:
            detected = pending.pop(node)
            delay = event["time"] - detected["time"]
            if delay <= WINDOW_S:
                rows.append({"node": node, "time": detected["time"], "delay_ms": delay * 1e3,
                             "kind": "home" if "lifetime 0 " in str(event["what"]) else "out"})
    return rows


def summary(rows: list[dict]) -> dict:
    out = {}
    for kind in ("out", "home", "all"):
        delays = [r["delay_ms"] for r in rows if kind == "all" or r["kind"] == kind]
        if delays:
            out[kind] = {"moves": len(delays), "median_ms": round(statistics.median(delays), 3),
                         "max_ms": round(max(delays), 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="results folders or *.events.jsonl files")
    parser.add_argument("--json", help="write the rows and the summary here")
    args = parser.parse_args(argv)
    rows = []
    for path in args.paths:
        try:
            rows += moves(read_events(path))
        except OSError as exc:
            print(f"detection_to_bu.py: {path}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    result = summary(rows)
    for kind, figures in result.items():
        print(f"{kind:5} {figures['moves']:3} moves  median {figures['median_ms']:7.3f} ms  "
              f"max {figures['max_ms']:7.3f} ms")
    if not rows:
        print("no detection followed by a BU in these events")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "summary": result}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
