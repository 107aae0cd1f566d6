"""Traffic measurements between lab hosts with unmodified tools: ping (RTT) and iperf3 -J (throughput)."""
from __future__ import annotations

import json
import re
import statistics
import subprocess
import time

_PING_REPLY = re.compile(r"^\[(?P<ts>[\d.]+)\] .*icmp_seq=(?P<seq>\d+) .*time=(?P<rtt>[\d.]+) ms")


class MeasurementError(RuntimeError):
    pass


def ping(host, destination: str, count: int = 20, interval: float = 0.05, deadline: float | None = None) -> dict:
    """ICMPv6 echo from ``host`` to ``destination``; per-reply timestamps and RTTs (ms)."""
    deadline = deadline or count * interval + 3
    out = host.cmd(f"ping -6 -n -D -i {interval} -c {count} -w {deadline:.0f} {destination}")
    replies = []
    for line in out.splitlines():
        m = _PING_REPLY.match(line.strip())
        if m:
            replies.append({"time": float(m["ts"]), "seq": int(m["seq"]), "rtt_ms": float(m["rtt"])})
    rtts = [r["rtt_ms"] for r in replies]
    return {
        "destination": destination, "sent": count, "received": len(replies),
        "loss_pct": 100.0 * (count - len(replies)) / count,
        "rtt_min_ms": min(rtts) if rtts else None,
        "rtt_median_ms": statistics.median(rtts) if rtts else None,
        "rtt_mean_ms": statistics.fmean(rtts) if rtts else None,
        "rtt_max_ms": max(rtts) if rtts else None,
        "replies": replies,
    }


def iperf3(client, server, destination: str, seconds: float = 3.0, udp_rate: str | None = None,
           port: int = 5201, interval: float | None = None) -> dict:
    """TCP (or UDP at ``udp_rate``) from ``client`` to ``server`` listening on ``destination``. With
    ``interval`` (seconds), ``intervals_mbit_s`` holds the rate of each whole reporting interval, the
    samples a confidence interval of a single transfer is computed from."""
    srv = server.popen(["iperf3", "-s", "-1", "-B", destination, "-p", str(port)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)  # let the server bind before the client connects
        args = ["iperf3", "-c", destination, "-p", str(port), "-t", str(seconds), "-J"]
        if interval:
            args += ["-i", f"{interval:g}"]
        if udp_rate:
            args += ["-u", "-b", udp_rate]
        cli = client.popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, _ = cli.communicate(timeout=seconds + 20)
    finally:
        if srv.poll() is None:
            srv.terminate()
        srv.wait(timeout=5)
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        raise MeasurementError(f"iperf3 to {destination} gave no JSON report") from None
    if "error" in report:
        raise MeasurementError(f"iperf3 to {destination}: {report['error']}")
    end = report["end"]
    # The last report may cover a sliver of an interval: its rate is noise, not a sample.
    samples = [r["sum"]["bits_per_second"] / 1e6 for r in report.get("intervals", [])
               if interval and r["sum"].get("seconds", 0) >= 0.9 * interval]
    if udp_rate:
        total = end["sum"]
        return {"destination": destination, "protocol": "udp", "seconds": total["seconds"],
                "mbit_s": total["bits_per_second"] / 1e6, "loss_pct": total.get("lost_percent"),
                "intervals_mbit_s": samples}
    received = end["sum_received"]
    return {"destination": destination, "protocol": "tcp", "seconds": received["seconds"],
            "mbit_s": received["bits_per_second"] / 1e6,
            "retransmits": end["sum_sent"].get("retransmits"), "intervals_mbit_s": samples}


def ping6_all(net, groups, write=print, timeout_s: float = 3.0) -> dict:
    """Every member of each group pings every other member of that group (``groups``: lists of (node
    name, IPv6 address)), all pairs at once. A pair counts as reached on its first echo reply; until then
    a request goes out every 0.2 s for ``timeout_s`` (emulated links lose packets at random). Writes one
    line per source as Mininet's ``pingall`` does (the names it reached, ``X`` for a miss) and a summary;
    returns {"pairs", "reached", "loss_pct", "lost": [(src, dst), ...]}."""
    probes = []
    for group in groups:
        for src, _ in group:
            for dst, address in group:
                if dst != src:
                    proc = net[src].popen(["ping", "-6", "-n", "-q", "-c", "1", "-i", "0.2", "-w", f"{timeout_s:g}",
                                           address], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    probes.append((src, dst, proc))
    lost, lines = [], {}
    for src, dst, proc in probes:
        try:
            code = proc.wait(timeout=timeout_s + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code != 0:
            lost.append((src, dst))
        lines.setdefault(src, []).append("X" if code else dst)
    for src, reached in lines.items():
        write(f"{src} -> {' '.join(reached)}")
    pairs = len(probes)
    loss = 100.0 * len(lost) / pairs if pairs else 0.0
    write(f"*** Results: {loss:.3g}% dropped ({pairs - len(lost)}/{pairs} pairs answered)")
    return {"pairs": pairs, "reached": pairs - len(lost), "loss_pct": loss, "lost": lost}
