"""Link fidelity: configured vs measured delay, jitter, loss, rate and trace capacity on EmulatedLink.

Run as root:  .venv/bin/python benchmarks/link_fidelity.py [--backend userspace] [--quick] [--json FILE]

Two hosts (leb1, leb2) joined by one EmulatedLink per case; a fresh network per case. Targets:
RTT error <= max(0.5 ms, 3 % of configured RTT); TCP goodput within 5 % of expected; configured loss inside
the 95 % (Wilson) interval of the measured loss; RTT std within 10 % of expected. Each row also shows the
emulator's lateness (share of frames sent > 0.5 ms after their release time, and the maximum).
This is a benchmark, not a test: the CPU is shared, so numbers vary from run to run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mininet.log import setLogLevel  # noqa: E402
from mininet.net import Mininet  # noqa: E402

from nodeapps.linkemu.netem import detect_netem  # noqa: E402
from nodeapps.linkemu.traces import MarkovModel, markov_trace, mean_rate_mbit, trace_text  # noqa: E402
from topologies import runs  # noqa: E402
from topologies.links import EmulatedLink  # noqa: E402

MSS_OVER_FRAME = 1448 / 1514     # TCP payload per Ethernet frame (timestamps on), as tc/our rate counts
MSS_OVER_PACKET = 1448 / 1500    # per IP packet, as Mahimahi traces count
H1, H2 = "leb1", "leb2"
IP2 = "10.78.0.2"


@dataclass
class Row:
    quantity: str
    configured: str
    expected: float
    measured: float
    unit: str
    target: str
    ok: bool
    detail: str = ""
    late: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


SEED: Optional[int] = None  # None: each link's default seed (a hash of its interface names)


def run_case(backend: str, link_kwargs: dict[str, Any], action):
    net = Mininet(controller=None, build=False)
    h1 = net.addHost(H1, ip="10.78.0.1/24")
    h2 = net.addHost(H2, ip=f"{IP2}/24")
    link = net.addLink(h1, h2, cls=EmulatedLink, backend=backend, seed=SEED, **link_kwargs)
    try:
        net.build()
        h1.cmd(f"ping -n -c 2 -i 0.2 -W 2 {IP2}")  # resolve ARP (delayed and maybe lost too)
        result = action(h1, h2)
    finally:
        net.stop()
    stats = link.stats() or {}
    late = ""
    if stats:
        late = f"{100 * stats['late_fraction']:.2f} % / {stats['max_late_ms']:.2f} ms"
        if stats.get("overloaded"):
            late += " OVERLOADED"
    return result, late, link.backend


def ping_times(host, count: int, interval: float) -> tuple[list[float], int]:
    out = host.cmd(f"ping -n -c {count} -i {interval} -W 3 {IP2}")
    times = [float(v) for v in re.findall(r"time=([\d.]+) ms", out)]
    match = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    sent = int(match.group(1)) if match else count
    return times, sent


def iperf_goodput(h1, h2, seconds: int, omit: int = 2) -> float:
    h2.cmd("iperf3 -s -1 -D -p 5302 --logfile /dev/null")
    time.sleep(0.3)
    out = h1.cmd(f"iperf3 -c {IP2} -p 5302 -t {seconds} -O {omit} -J")
    data = json.loads(out[out.index("{"):])
    return data["end"]["sum_received"]["bits_per_second"] / 1e6


def iperf_udp_delivered(h1, h2, seconds: int, offered_mbit: float) -> float:
    """Delivered UDP payload rate (Mbit/s) when offering more than the link carries."""
    h2.cmd("iperf3 -s -1 -D -p 5303 --logfile /dev/null")
    time.sleep(0.3)
    out = h1.cmd(f"iperf3 -c {IP2} -p 5303 -u -l 1472 -b {offered_mbit}M -t {seconds} -O 1 -J")
    end = json.loads(out[out.index("{"):])["end"]
    if "sum_received" in end:
        return end["sum_received"]["bits_per_second"] / 1e6
    total = end["sum"]
    return total["bits_per_second"] * (1 - total["lost_percent"] / 100) / 1e6


def wilson(lost: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = lost / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def delay_rows(backend: str, quick: bool) -> list[Row]:
    rows = []
    for one_way in (1, 10, 50, 100):
        count = 30 if quick else 100
        (times, _), late, used = run_case(backend, {"delay": f"{one_way}ms"},
                                          lambda h1, h2: ping_times(h1, count, 0.05))
        configured = 2 * one_way
        mean = statistics.mean(times)
        tolerance = max(0.5, 0.03 * configured)
        rows.append(Row("RTT", f"delay {one_way} ms each way", configured, mean, "ms",
                        f"error ≤ {tolerance:g} ms", abs(mean - configured) <= tolerance,
                        f"err {mean - configured:+.3f} ms, median {statistics.median(times):.3f}, "
                        f"n={len(times)}", late, {"backend": used}))
    return rows


def baseline_row(quick: bool) -> Row:
    net = Mininet(controller=None, build=False)
    h1 = net.addHost(H1, ip="10.78.0.1/24")
    h2 = net.addHost(H2, ip=f"{IP2}/24")
    net.addLink(h1, h2)
    try:
        net.build()
        h1.cmd(f"ping -n -c 2 -i 0.2 {IP2}")
        times, _ = ping_times(h1, 30 if quick else 100, 0.05)
    finally:
        net.stop()
    mean = statistics.mean(times)
    return Row("RTT", "plain veth (no emulation)", 0.0, mean, "ms", "reference", True,
               f"median {statistics.median(times):.3f}")


def jitter_row(backend: str, quick: bool) -> Row:
    jitter = 5.0
    count = 200 if quick else 600
    (times, _), late, used = run_case(
        backend, {"delay": "50ms", "jitter": f"{jitter}ms", "distribution": "normal"},
        lambda h1, h2: ping_times(h1, count, 0.03))
    expected = math.sqrt(2) * jitter  # both directions, independent
    std = statistics.stdev(times)
    return Row("RTT std", f"50 ms ± {jitter:g} ms normal each way", expected, std, "ms", "within 10 %",
               abs(std - expected) <= 0.1 * expected,
               f"{100 * (std / expected - 1):+.1f} %, mean RTT {statistics.mean(times):.2f}, n={len(times)}",
               late, {"backend": used})


def loss_row(backend: str, quick: bool) -> Row:
    loss = 2.0
    count = 1000 if quick else 3000
    (times, sent), late, used = run_case(backend, {"delay": "1ms", "forward": {"loss": loss}},
                                         lambda h1, h2: ping_times(h1, count, 0.005))
    lost = sent - len(times)
    low, high = wilson(lost, sent)
    measured = 100 * lost / sent
    return Row("loss", f"{loss:g} % one way (random)", loss, measured, "%", "configured in 95 % CI",
               low * 100 <= loss <= high * 100, f"95 % CI [{100 * low:.2f}, {100 * high:.2f}] %, "
               f"{lost}/{sent} lost", late, {"backend": used})


def rate_rows(backend: str, quick: bool) -> list[Row]:
    rows = []
    for rate in (10, 50, 100):
        goodput, late, used = run_case(backend, {"delay": "2ms", "rate": f"{rate}mbit"},
                                       lambda h1, h2: iperf_goodput(h1, h2, 6 if quick else 12))
        expected = rate * MSS_OVER_FRAME
        rows.append(Row("TCP goodput", f"rate {rate} Mbit/s", expected, goodput, "Mbit/s", "within 5 %",
                        abs(goodput - expected) <= 0.05 * expected,
                        f"{100 * (goodput / expected - 1):+.1f} %", late, {"backend": used}))
    return rows


def trace_rows(backend: str, quick: bool) -> list[Row]:
    """A Markov trace with a 2 s period (a run covers whole laps): UDP offered above capacity measures the
    emulated capacity itself; TCP goodput also depends on how TCP copes with the swings (shown, not judged
    against the 5 % target, which is for fixed rates)."""
    model = MarkovModel((8.0, 20.0, 35.0), 1 / 200, 0.5, 2000, 77)
    stamps = markov_trace(model)
    capacity = mean_rate_mbit(tuple(stamps))
    with tempfile.NamedTemporaryFile("w", suffix=".trace", delete=False) as handle:
        handle.write(trace_text(stamps))
        path = handle.name
    seconds = 8 if quick else 16
    rows = []
    try:
        kwargs = {"delay": "5ms", "trace": path, "queue_packets": 200}
        udp, late, used = run_case(backend, kwargs,
                                   lambda h1, h2: iperf_udp_delivered(h1, h2, seconds, 2 * max(model.states_mbit)))
        expected = capacity * 1472 / 1500
        rows.append(Row("UDP delivered", f"Markov trace, mean {capacity:.2f} Mbit/s", expected, udp, "Mbit/s",
                        "within 5 %", abs(udp - expected) <= 0.05 * expected,
                        f"{100 * (udp / expected - 1):+.1f} %", late, {"backend": used}))
        tcp, late, used = run_case(backend, kwargs, lambda h1, h2: iperf_goodput(h1, h2, seconds))
        expected = capacity * MSS_OVER_PACKET
        rows.append(Row("TCP goodput", f"Markov trace, mean {capacity:.2f} Mbit/s", expected, tcp, "Mbit/s",
                        "informative", True, f"{100 * (tcp / expected - 1):+.1f} % (TCP vs varying capacity)",
                        late, {"backend": used}))
    finally:
        os.unlink(path)
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| quantity | configured | expected | measured | target | ok | detail | late frames / max |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.quantity} | {r.configured} | {r.expected:.3f} {r.unit} | {r.measured:.3f} {r.unit} "
                     f"| {r.target} | {'yes' if r.ok else '**NO**'} | {r.detail} | {r.late} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    runs.stop_signals_interrupt()   # SIGTERM / SIGHUP tear the lab down like Ctrl-C
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="userspace", choices=["auto", "netem", "userspace"])
    parser.add_argument("--quick", action="store_true", help="fewer samples, shorter transfers")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    parser.add_argument("--seed", type=int, help="random seed of every link (default: per-link default)")
    parser.add_argument("--only", choices=["delay", "jitter", "loss", "rate", "trace"], action="append")
    args = parser.parse_args(argv)
    global SEED
    SEED = args.seed
    if os.geteuid() != 0:
        print("error: run as root (Mininet)", file=sys.stderr)
        return 2
    setLogLevel("warning")
    started = time.time()
    load_before = os.getloadavg()
    parts = args.only or ["delay", "jitter", "loss", "rate", "trace"]
    rows: list[Row] = []
    if "delay" in parts:
        rows.append(baseline_row(args.quick))
        rows += delay_rows(args.backend, args.quick)
    if "jitter" in parts:
        rows.append(jitter_row(args.backend, args.quick))
    if "loss" in parts:
        rows.append(loss_row(args.backend, args.quick))
    if "rate" in parts:
        rows += rate_rows(args.backend, args.quick)
    if "trace" in parts:
        rows += trace_rows(args.backend, args.quick)
    used = sorted({r.extra.get("backend") for r in rows if r.extra.get("backend")})
    netem = detect_netem()
    print(f"backend requested: {args.backend}; used: {', '.join(used)}; netem: {netem.detail}; "
          f"took {time.time() - started:.0f} s; load average (1/5/15 min) before "
          f"{' '.join(f'{v:.2f}' for v in load_before)}, after {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([vars(r) for r in rows], handle, indent=1)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
