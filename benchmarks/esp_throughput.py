#!/usr/bin/env python3
"""TCP throughput MN1 -> file server through the userspace ESP tunnel vs plain forwarding, same path, same run.

Both flows cross the same links and routers (MN1 - WLAN hotspot - access router - Internet core - SG -
office LAN - file server); the plain flow goes to an address outside the VPN that the SG forwards in clear.
One lab per tunnel encapsulation: native ESP (next header 50) and ESP in UDP port 4500 (RFC 3948, sent
with UDP segmentation offload). In each lab the rounds alternate (ESP, plain, ESP, plain, ...) so machine
noise hits both alike; the summary gives min / median / max per mode and the median ESP/plain ratio.
Ideal links (plain veth pairs, no emulation). Not a test: run it by hand as root.

    sudo .venv/bin/python benchmarks/esp_throughput.py [--rounds 5] [--seconds 4] [--mtu 1500] [--encap none,udp]
"""
import argparse
import os
import platform
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from topologies import runs  # noqa: E402
from topologies.lab import ESP_ENCAPS, LabError, SvpnLab  # noqa: E402
from topologies.measurements import iperf3  # noqa: E402

LABELS = {"none": "native ESP", "udp": "ESP-in-UDP"}
COUNTERS = ("net_tx", "udp_tx", "udp_gso_sends", "net_rx", "udp_rx", "tun_rx", "tun_tx", "tun_super_packets",
            "tun_segments_merged", "send_errors")


def run_mode(encap: str, args) -> list[tuple[float, float]]:
    rows = []
    with SvpnLab(addressing="private", mobile_nodes=2, plain_service=True, mtu=args.mtu, links="ideal",
                 esp_encap=encap) as lab:
        fs_vpn = lab.plan.office["fs"]
        fs_plain = str(lab.plan.plain_prefix.network_address + 0x10)
        for i in range(args.rounds):
            esp = iperf3(lab.host("mn1"), lab.host("fs"), fs_vpn, seconds=args.seconds)["mbit_s"]
            plain = iperf3(lab.host("mn1"), lab.host("fs"), fs_plain, seconds=args.seconds)["mbit_s"]
            rows.append((esp, plain))
            print(f"{LABELS[encap]:>10} round {i + 1}: ESP {esp:8.1f} Mbit/s   plain {plain:8.1f} Mbit/s   "
                  f"ratio {esp / plain:.3f}", flush=True)
        lab.check_nodes()
        if args.counters:
            for node in ("mn1", "sg"):
                counters = lab.status(node)["counters"]
                print(f"  {node}: " + ", ".join(f"{k}={counters.get(k, 0)}" for k in COUNTERS), flush=True)
    return rows


def main() -> int:
    runs.stop_signals_interrupt()   # SIGTERM / SIGHUP tear the lab down like Ctrl-C
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--mtu", type=int, default=1500, help="MTU of every link (default 1500)")
    parser.add_argument("--encap", default="none,udp",
                        help="comma-separated tunnel encapsulations: none (native ESP), udp (RFC 3948)")
    parser.add_argument("--counters", action="store_true", help="print the MN1 and SG packet counters per mode")
    args = parser.parse_args()
    modes = [m.strip() for m in args.encap.split(",") if m.strip()]
    bad = [m for m in modes if m not in ESP_ENCAPS]
    if bad or not modes:
        print(f"esp_throughput: --encap {args.encap!r}: choose from {', '.join(ESP_ENCAPS)}", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.seconds <= 0:
        print("esp_throughput: --rounds must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    results = {}
    try:
        for encap in modes:
            results[encap] = run_mode(encap, args)
    except LabError as exc:
        print(f"esp_throughput: {exc}", file=sys.stderr)
        return 1
    print(f"\n| tunnel | ESP min / median / max (Mbit/s) | plain median (Mbit/s) | ESP/plain (median) |")
    print("|---|---|---|---|")
    for encap, rows in results.items():
        esp = [r[0] for r in rows]
        plain = [r[1] for r in rows]
        ratio = statistics.median(r[0] / r[1] for r in rows)
        print(f"| {LABELS[encap]} | {min(esp):.1f} / {statistics.median(esp):.1f} / {max(esp):.1f} | "
              f"{statistics.median(plain):.1f} | {ratio:.3f} |")
    if "none" in results and "udp" in results:
        gain = statistics.median(r[0] for r in results["udp"]) / statistics.median(r[0] for r in results["none"])
        print(f"\nESP-in-UDP / native ESP (medians): {gain:.2f}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"({os.cpu_count()} CPUs, Python {platform.python_version()}, kernel {platform.release()}, "
          f"{args.rounds} rounds x {args.seconds:g} s per mode, link MTU {args.mtu}, load average after {load})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
