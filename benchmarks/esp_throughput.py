#!/usr/bin/env python3
"""TCP throughput MN1 -> file server through the userspace ESP tunnel vs plain forwarding, same path, same run.

Both flows cross the same links and routers (MN1 - WLAN hotspot - access router - Internet core - SG -
office LAN - file server); the plain flow goes to an address outside the VPN that the SG forwards in clear.
Rounds alternate (ESP, plain, ESP, plain, ...) so machine noise hits both alike; the table gives each
round and the median ratio. No link delay emulation. Not a test: run it by hand as root.

    sudo .venv/bin/python benchmarks/esp_throughput.py [--rounds 3] [--seconds 5] [--mtu 1500]
"""
import argparse
import os
import platform
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from topologies.lab import SvpnLab  # noqa: E402
from topologies.measurements import iperf3  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--mtu", type=int, default=1500, help="MTU of every link (default 1500)")
    args = parser.parse_args()
    with SvpnLab(addressing="private", mobile_nodes=2, plain_service=True, mtu=args.mtu) as lab:
        fs_vpn = lab.plan.office["fs"]
        fs_plain = str(lab.plan.plain_prefix.network_address + 0x10)
        rows = []
        for i in range(args.rounds):
            esp = iperf3(lab.host("mn1"), lab.host("fs"), fs_vpn, seconds=args.seconds)["mbit_s"]
            plain = iperf3(lab.host("mn1"), lab.host("fs"), fs_plain, seconds=args.seconds)["mbit_s"]
            rows.append((esp, plain))
            print(f"round {i + 1}: ESP {esp:8.1f} Mbit/s   plain {plain:8.1f} Mbit/s   ratio {esp / plain:.3f}",
                  flush=True)
        lab.check_nodes()
    esp_median = statistics.median(r[0] for r in rows)
    plain_median = statistics.median(r[1] for r in rows)
    ratio = statistics.median(r[0] / r[1] for r in rows)
    print(f"\nmedian: ESP {esp_median:.1f} Mbit/s, plain {plain_median:.1f} Mbit/s, ESP/plain {ratio:.3f}")
    print(f"({os.cpu_count()} CPUs, Python {platform.python_version()}, kernel {platform.release()}, "
          f"{args.rounds} rounds x {args.seconds:g} s, link MTU {args.mtu})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
