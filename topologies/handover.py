"""Handover measurements from a high-rate ping (``ping -D -i 0.02``): reply times in, gaps out.

A move's handover gap is the time from the last reply before the move to the first reply after it. A
reply of the old path may still arrive after the move started, so "before" and "after" are split at the
largest silence in a window around the move, which is where the path changed.
"""
from __future__ import annotations

import re
import statistics

_REPLY = re.compile(r"^\[(?P<ts>[\d.]+)\] .*icmp_seq=(?P<seq>\d+) ")


def reply_times(ping_output: str) -> list[float]:
    """Wall-clock times of the echo replies in the output of ``ping -D`` (sorted)."""
    times = []
    for line in ping_output.splitlines():
        match = _REPLY.match(line.strip())
        if match:
            times.append(float(match["ts"]))
    return sorted(times)


def handover_gap(times: list[float], move_start: float, window: float = 5.0) -> dict | None:
    """The largest silence between consecutive replies in [move_start - 0.5, move_start + window]:
    {"last_old", "first_new", "gap_s"}; None if no reply arrived after the move within the window."""
    lo, hi = move_start - 0.5, move_start + window
    inside = [t for t in times if lo <= t <= hi]
    before = [t for t in times if t < lo]
    if before:
        inside.insert(0, before[-1])
    if len(inside) < 2 or inside[-1] < move_start:
        return None
    inside.append(hi)  # silence until the end of the window counts too: then nothing came back
    best = max(range(1, len(inside)), key=lambda i: inside[i] - inside[i - 1])
    if best == len(inside) - 1:
        return None
    return {"last_old": inside[best - 1], "first_new": inside[best], "gap_s": inside[best] - inside[best - 1]}


def summarise(gaps: list[float]) -> dict:
    return {"moves": len(gaps), "median_ms": round(1000 * statistics.median(gaps), 1) if gaps else None,
            "max_ms": round(1000 * max(gaps), 1) if gaps else None}
