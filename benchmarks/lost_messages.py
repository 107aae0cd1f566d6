"""Lost control messages: for each step of a VCM session's setup (202-212) and each message of the MNs'
route optimisation with each other (BU, BA, HoTI, CoTI, HoT, CoT), lose the next one at the node where it
matters (``drop-next``) in a fresh lab, and time session detected -> both MNs direct against the same
without loss. Both address plans, the VCM in the SG, ideal links (the timers, not the links, should show).
What is dropped where: ``experiments/lost_messages.py``.

    sudo .venv/bin/python benchmarks/lost_messages.py --runs 2            # 26 labs per run, about 2 min per run
    sudo .venv/bin/python benchmarks/lost_messages.py --only 210,BU --addressing public --runs 1

Prints a Markdown table (medians over the runs); ``--out FILE`` writes it there too. Exit 1 if a pair did
not end direct or a drop was not counted exactly once at its node.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.lost_messages import BY_LABEL, DROPS, run_once  # noqa: E402
from topologies import runs  # noqa: E402
from topologies.lab import LabError  # noqa: E402


def _median_ms(rows) -> float | None:
    values = [r["to_direct_s"] for r in rows if r["to_direct_s"] is not None]
    return 1000 * statistics.median(values) if values else None


def _ms(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def table(results: dict, addressings: list[str], drops) -> list[str]:
    lines = ["| plan | message | dropped at | timer (ms) | time to direct (ms) | no loss (ms) | ratio | "
             "ended direct | counted drops |",
             "|---|---|---|---|---|---|---|---|---|"]
    for addressing in addressings:
        base = _median_ms(results[(addressing, None)])
        for drop in drops:
            rows = results[(addressing, drop.label)]
            lost = _median_ms(rows)
            ratio = f"{lost / base:.1f}" if lost is not None and base else "-"
            name = drop.message if drop.label == drop.message else f"{drop.label} {drop.message}"
            lines.append(f"| {addressing} | {name} | {drop.where} | {1000 * drop.retransmit_s:.0f} | {_ms(lost)} | "
                         f"{_ms(base)} | {ratio} | {sum(r['ended_direct'] for r in rows)}/{len(rows)} | "
                         f"{'/'.join(str(r['dropped']) for r in rows)} |")
    return lines


def main() -> int:
    runs.stop_signals_interrupt()   # SIGTERM / SIGHUP tear the lab down like Ctrl-C
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="labs per row (default 1)")
    parser.add_argument("--addressing", choices=["both", "private", "public"], default="both")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BY_LABEL)}")
    parser.add_argument("--out", help="also write the Markdown table to this file")
    args = parser.parse_args()
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be from 1 to 20")
    wanted = [w for w in args.only.split(",") if w]
    unknown = [w for w in wanted if w not in BY_LABEL]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)} (known: {', '.join(BY_LABEL)})")
    drops = [BY_LABEL[w] for w in wanted] if wanted else list(DROPS)
    addressings = ["private", "public"] if args.addressing == "both" else [args.addressing]
    results = {}
    try:
        for addressing in addressings:
            for drop in [None] + drops:
                key = (addressing, drop.label if drop else None)
                for _ in range(args.runs):
                    row = run_once(addressing, drop)
                    results.setdefault(key, []).append(row)
                    print(f"{addressing} {key[1] or 'no loss'}: to direct "
                          f"{_ms(row['to_direct_s'] and 1000 * row['to_direct_s'])} ms, ended direct "
                          f"{row['ended_direct']}, dropped {row['dropped']}", file=sys.stderr, flush=True)
    except LabError as exc:
        parser.exit(2, f"lost_messages: {exc}\n")
    lines = table(results, addressings, drops)
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    failed = [k for k, rows in results.items() for r in rows
              if not r["ended_direct"] or (k[1] is not None and r["dropped"] != 1)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
