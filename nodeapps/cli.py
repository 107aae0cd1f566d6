"""svpnlab-status: show a running node's addresses, SAs, SPD and recent events as readable tables.

    svpnlab-status mn1                 # newest running lab
    svpnlab-status --run-dir DIR sg    # a given lab run
    svpnlab-status /path/to/node.sock --json
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

from tabulate import tabulate

from nodeapps.runtime.control import request

RUN_DIR_GLOB = "/tmp/svpnlab-*"


def find_socket(target: str, run_dir: str | None) -> str:
    if target.endswith(".sock") or os.sep in target:
        return target
    dirs = [run_dir] if run_dir else sorted(glob.glob(RUN_DIR_GLOB), key=os.path.getmtime, reverse=True)
    for d in dirs:
        path = os.path.join(d, f"{target}.sock")
        if os.path.exists(path):
            return path
    where = run_dir or RUN_DIR_GLOB
    raise FileNotFoundError(f"no running node {target!r} under {where}")


def table(headers: list[str], rows: list[list]) -> str:
    """Left-aligned plain-text columns; an empty cell for a missing value."""
    return tabulate(rows, headers, tablefmt="simple", missingval="", disable_numparse=True,
                    numalign="left", stralign="left")


def render(status: dict) -> str:
    out = [f"node {status['node']} ({status['role']}), pid {status['pid']}, up {status['uptime_s']:.1f} s", ""]
    out.append(table(["interface", "address", "scope"],
                     [[a.get("interface"), a.get("address"), a.get("scope")] for a in status.get("addresses", [])]))
    ipsec = status.get("ipsec", {})
    sas = ipsec.get("sas", [])
    out += ["", "security associations"]
    out.append(table(
        ["name", "dir", "spi", "mode", "local", "remote", "packets", "bytes", "replay", "icv"],
        [[s.get("name"), s.get("direction"), s.get("spi"), s.get("mode"), s.get("local"), s.get("remote"),
          s.get("counters", {}).get("packets"), s.get("counters", {}).get("bytes"),
          s.get("counters", {}).get("replay_drops"), s.get("counters", {}).get("icv_failures")]
         for s in sas]))
    rules = ipsec.get("spd", {}).get("rules", [])
    out += ["", "security policy (first match wins)"]
    out.append(table(["#", "dir", "src", "dst", "proto", "action", "sa"],
                     [[i, r.get("direction"), r.get("src"), r.get("dst"), r.get("proto") or "any",
                       r.get("action"), r.get("sa") or ""] for i, r in enumerate(rules, 1)]))
    out += _mobility_sections(status.get("mobility") or {})
    out += _vcm_sections(status.get("vcm") or {})
    counters = {**status.get("counters", {}), **ipsec.get("counters", {})}
    out += ["", "counters: " + ", ".join(f"{k}={v}" for k, v in counters.items() if v)]
    events = status.get("recent_events", [])[-8:]
    if events:
        out += ["", "recent events"]
        for e in events:
            fields = {k: v for k, v in e.items() if k not in ("time", "node", "event")}
            out.append(f"  {e['time']:.3f} {e['event']} {json.dumps(fields, default=str)}")
    return "\n".join(out)


def _mobility_sections(mobility: dict) -> list[str]:
    """Mobile IPv6: the node's own state (MN), its binding cache (HA, SG, correspondents), the RFC 3776 SA
    pairs its mobility messages travel in, and route optimisation with peer MNs."""
    out = []
    if "state" in mobility:
        out += ["", f"mobility: {mobility.get('state')}, location {mobility.get('location')}, care-of "
                    f"{mobility.get('care_of_address') or '-'} (prefix {mobility.get('prefix') or '-'}), home "
                    f"registration {'yes' if mobility.get('home_registered') else 'no'}"]
    bindings = mobility.get("bindings") or []
    if bindings:
        out += ["", "binding cache"]
        out.append(table(["home address", "care-of address", "seq", "home reg", "expires in s"],
                         [[b.get("home_address"), b.get("care_of_address"), b.get("sequence"),
                           "yes" if b.get("home_registration") else "no", b.get("remaining_s")] for b in bindings]))
    sa_peers = mobility.get("sa_peers") or {}
    if sa_peers:
        out += ["", "mobility message SAs (ESP transport, RFC 3776)"]
        out.append(table(["peer", "spi out", "spi in", "sent", "received"],
                         [[peer, sas.get("out", {}).get("spi"), sas.get("in", {}).get("spi"),
                           sas.get("out", {}).get("counters", {}).get("packets"),
                           sas.get("in", {}).get("counters", {}).get("packets")] for peer, sas in sa_peers.items()]))
    peers = mobility.get("peers") or []
    if peers:
        out += ["", "route optimisation with mobile nodes (Mobile IPv6 between their home addresses)"]
        out.append(table(["peer", "internal home", "external home", "optimised", "peer care-of"],
                         [[p.get("peer"), p.get("internal"), p.get("external"), "yes" if p.get("optimised") else "no",
                           p.get("peer_care_of")] for p in peers]))
    return out


def _vcm_sections(vcm: dict) -> list[str]:
    """The VCM as an MN sees it (paths per peer), as the SG sees it (where each MN is), and its sessions."""
    out = []
    paths = vcm.get("paths") or []
    if paths:
        out += ["", "vcm paths (per peer: via the SG or direct)"]
        out.append(table(["peer", "home", "path", "since", "session", "gen", "spi out", "spi in", "pending"],
                         [[r.get("peer"), r.get("peer_home"), r.get("path"), _clock(r.get("since")),
                           r.get("session"), r.get("generation"), _spi(r.get("spi_out")), _spi(r.get("spi_in")),
                           "yes" if r.get("pending") else ""] for r in paths]))
    locations = vcm.get("locations") or {}
    if locations:
        out += ["", f"vcm monitor ({vcm.get('variant')}): {vcm.get('flows', 0)} flows"]
        out.append(table(["mobile node", "location"], [[name, where or "unknown"] for name, where in locations.items()]))
    sessions = vcm.get("sessions") or []
    if sessions:
        out += ["", "vcm sessions"]
        out.append(table(["session", "a", "b", "state", "gen"],
                         [[s.get("session"), s.get("a"), s.get("b"), s.get("state"), s.get("generation")]
                          for s in sessions]))
    for name in ("stats", "monitor_stats", "manager_stats"):
        stats = {k: v for k, v in (vcm.get(name) or {}).items() if v}
        if stats:
            out += ["", f"vcm {name.replace('_', ' ')}: " + ", ".join(f"{k}={v}" for k, v in stats.items())]
    return out


def _spi(value) -> str:
    return "" if value is None else f"0x{value:08x}"


def _clock(wall) -> str:
    if wall is None:
        return ""
    import datetime
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="svpnlab-status", description=__doc__.splitlines()[0])
    parser.add_argument("node", help="node name (e.g. mn1, sg) or a control socket path")
    parser.add_argument("--run-dir", help="lab run directory holding the nodes' control sockets")
    parser.add_argument("--json", action="store_true", help="print the raw status as JSON")
    args = parser.parse_args(argv)
    try:
        status = request(find_socket(args.node, args.run_dir), "status")
    except (OSError, ValueError) as exc:
        print(f"svpnlab-status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2, default=str) if args.json else render(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
