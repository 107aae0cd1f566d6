"""Handover gap per move type: the file server pings the mobile node's home address at 50 Hz while the
node cycles wlan1 -> wlan2 -> cell -> office -> wlan1 ...; the gap of a move is the silence between the
last echo reply over the old path and the first over the new one (``topologies.handover``).

Run as root:  .venv/bin/python benchmarks/handover_gap.py [--rounds 10] [--addressing public]
              [--links ideal|default] [--path home-agent|route-optimised|vcm] [--pair home-ro|care-of]
              [--json FILE]

--path home-agent (default): fs pings the internal home address, which the office HA tunnels through the
SG. --path route-optimised: private plan with the correspondent cn pinging the external home address,
route-optimised (HAO/RH2) after return routability; the cycle then stays outside the office
(wlan2 -> cell -> wlan1), since the external home address is not used from inside. --path vcm: a second
MN (mn2, at wlan2) pings mn1's home address over the VCM's direct SA pair (``--pair``, default home-ro:
followed by mn1's own BU to mn2; care-of: by the SG's care-of notice), in either address plan; the same
outside cycle, and the gap includes the time until the pair is direct again or the replies take the SG path.

RA intervals are at their RFC 6275 §7.5 fast setting (0.03-0.07 s). Goal: <= 150 ms. This is a benchmark,
not a test: the 2 CPUs are shared, so numbers vary from run to run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from topologies import runs  # noqa: E402
from topologies.handover import handover_gap, reply_times, summarise  # noqa: E402
from topologies.lab import SvpnLab  # noqa: E402

CYCLE = ("wlan2", "cell", "office", "wlan1")
RO_CYCLE = ("wlan2", "cell", "wlan1")
KIND = {"wlan": "WLAN", "cell": "cellular", "office": "office"}


def kind(network: str) -> str:
    return KIND["wlan" if network.startswith("wlan") else network]


def timeline(events: list[dict], mn: str = "mn1") -> dict:
    """Where one move's time went, from the events ``lab.move`` returned (wall clock, one machine), in ms
    from the link coming back up: the RA that made the node detect the link, its first BU, the SG moving
    the tunnel, the HA intercepting (away) and the HA's BA reaching the node."""
    def first(node, name, after, **match):
        for e in events:
            if e["node"] == node and e["event"] == name and e["time"] >= after \
                    and all(e.get(k) == v for k, v in match.items()):
                return e["time"]
        return None

    up = first("lab", "link_up", 0)
    if up is None:
        return {}
    marks = {"flap": first("lab", "link_down", 0)}
    marks["new_link"] = first(mn, "new_link", up)
    marks["bu_sent"] = first(mn, "mobility_sent", marks["new_link"] or up)
    marks["sg_follows"] = first("sg", "tunnel_follows", up)
    marks["ha_intercepts"] = first("ha", "intercepting", up)
    marks["ha_acked"] = first(mn, "binding_acknowledged", up, kind="home-agent")
    out = {k: round(1000 * (v - up), 1) for k, v in marks.items() if v is not None and k != "flap"}
    if marks["flap"] is not None:
        out["flap"] = round(1000 * (up - marks["flap"]), 1)
    return out


def wait_direct(lab, timeout: float = 20.0) -> None:
    """Until both MNs use the VCM's direct pair (the SG detected the probe session and handed out keys)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(any(r["path"] == "direct" for r in lab.status(n).get("vcm", {}).get("paths", []))
               for n in ("mn1", "mn2")):
            return
        time.sleep(0.05)
    raise SystemExit(f"handover_gap: the pair did not go direct within {timeout:.0f} s")


def main(argv=None) -> int:
    runs.stop_signals_interrupt()   # SIGTERM / SIGHUP tear the lab down like Ctrl-C
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="cycles of 4 moves (default 10)")
    parser.add_argument("--addressing", choices=("public", "private"), default="public")
    parser.add_argument("--links", choices=("ideal", "default"), default="ideal")
    parser.add_argument("--dwell", type=float, default=1.2, help="seconds between moves (default 1.2)")
    parser.add_argument("--path", choices=("home-agent", "route-optimised", "vcm"), default="home-agent")
    parser.add_argument("--pair", choices=("home-ro", "care-of"), default=None,
                        help="--path vcm: the VCM's direct pair (default home-ro)")
    parser.add_argument("--binding", choices=("return-routability", "static-key"), default="return-routability",
                        help="--path vcm with the home-ro pair: how the MN–MN BUs are authenticated (static-key: "
                             "a key from the VCM, RFC 4449; no tests after a move)")
    parser.add_argument("--json", help="write the per-move results here")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.pair and args.path != "vcm":
        parser.error("--pair needs --path vcm")
    if args.binding != "return-routability" and (args.path != "vcm" or args.pair == "care-of"):
        parser.error("--binding static-key needs --path vcm with the home-ro pair")
    optimised = args.path == "route-optimised"
    vcm = args.path == "vcm"
    if optimised:
        args.addressing = "private"
    if vcm:
        lab = SvpnLab(addressing=args.addressing, mobile_nodes=2, attachments=["wlan1", "wlan2"], links=args.links,
                      mobility=True, vcm="in-sg", vcm_pair=args.pair, vcm_binding=args.binding)
    else:
        lab = SvpnLab(addressing=args.addressing, mobile_nodes=1, attachments=["wlan1"], links=args.links,
                      mobility=True, correspondent=optimised)
    moves = []
    try:
        lab.start()
        time.sleep(1.0)
        mn = lab.plan.mobile("mn1")
        prober, target = ("cn", mn.external_home_address) if optimised else ("fs", mn.home_address)
        if vcm:
            prober = "mn2"
        ping = lab.popen(prober, ["ping", "-6", "-n", "-D", "-i", "0.02", target], "probe.txt")
        if vcm:
            wait_direct(lab)
        time.sleep(1.0)
        where = "wlan1"
        for _ in range(args.rounds):
            for network in (RO_CYCLE if optimised or vcm else CYCLE):
                start = time.time()
                events = lab.move("mn1", network)
                registered = max(e["time"] for e in events)
                moves.append({"from": where, "to": network, "start": start, "registered_s": registered - start,
                              "timeline_ms": timeline(events)})
                where = network
                time.sleep(args.dwell)
        lab.stop_helper(ping)
        times = reply_times(open(os.path.join(lab.run_dir, "probe.txt")).read())
    finally:
        lab.stop()
    by_type: dict[str, list[float]] = {}
    lost = 0
    for move in moves:
        gap = handover_gap(times, move["start"], window=args.dwell)
        move["gap_s"] = gap["gap_s"] if gap else None
        if gap is None:
            lost += 1
            continue
        by_type.setdefault(f"{kind(move['from'])} -> {kind(move['to'])}", []).append(gap["gap_s"])
    path = f"vcm {lab.vcm_pair}{' static-key' if args.binding == 'static-key' else ''}" if vcm else args.path
    print(f"handover gap, {path} path, {args.addressing} addressing, links {args.links}, 50 Hz probe, "
          f"{len(moves)} moves ({lost} without recovery inside {args.dwell} s)")
    print("| move | moves | median | max |")
    print("|---|---|---|---|")
    everything = []
    for name, gaps in sorted(by_type.items()):
        everything += gaps
        s = summarise(gaps)
        print(f"| {name} | {s['moves']} | {s['median_ms']} ms | {s['max_ms']} ms |")
    s = summarise(everything)
    print(f"| all | {s['moves']} | {s['median_ms']} ms | {s['max_ms']} ms |")
    print("\nmedian timeline per move type, ms after the link came back up (flap: down -> up)")
    marks = ("flap", "new_link", "bu_sent", "sg_follows", "ha_intercepts", "ha_acked")
    print("| move | " + " | ".join(marks) + " |")
    print("|---" * (len(marks) + 1) + "|")
    for name in sorted(by_type):
        rows = [m["timeline_ms"] for m in moves if f"{kind(m['from'])} -> {kind(m['to'])}" == name]
        cells = []
        for mark in marks:
            values = [r[mark] for r in rows if mark in r]
            cells.append(f"{statistics.median(values):.1f}" if values else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")
    overloaded = lab.link_metadata()["overloaded_links"]
    if overloaded:
        print(f"link emulators that reported overload: {', '.join(sorted(overloaded))}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "moves": moves}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
