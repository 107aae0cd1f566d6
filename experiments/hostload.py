"""What the emulation host gave a lab's processes: CPU time, run-queue wait and memory, sampled from /proc.

Every delay a starved process adds is the host's, not the network's: an experiment records how long its
node apps and link emulators sat runnable without a CPU, so a result measured on an overloaded machine is
marked as such instead of being read as the protocol's.
"""
from __future__ import annotations

import os
import threading
import time

import pandas as pd

RESOURCE_COLUMNS = ["t", "node", "role", "pid", "cpu_s", "wait_s", "rss_kib", "pss_kib"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The most starved process of the lab waited longer than this share of the time for a CPU: the host, not
# the links, set the delays (an idle 2-core host stays below 1 %).
STARVED_PCT = 10.0


def read_proc(pid: int, memory: bool = True) -> dict | None:
    """CPU seconds (user + system), seconds spent runnable but waiting for a CPU, RSS and PSS in KiB (None
    without ``memory``: smaps_rollup walks the process's page tables) of a live process, or None if it is
    gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime, stime: fields 14, 15 of stat(5)
        wait = None
        try:   # run-queue wait in ns, 2nd field (kernel scheduler statistics, sched-stats.rst)
            with open(f"/proc/{pid}/schedstat", encoding="ascii") as f:
                wait = int(f.read().split()[1]) / 1e9
        except OSError:
            pass
        rss = pss = None
        if not memory:
            return {"cpu_s": cpu, "wait_s": wait, "rss_kib": rss, "pss_kib": pss}
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return {"cpu_s": cpu, "wait_s": wait, "rss_kib": rss, "pss_kib": pss}


def role_of(node: str) -> str:
    """The role of a lab process by its name (``SvpnLab.processes``)."""
    if node.startswith("mn"):
        return "mn"
    if node.startswith("radvd-"):
        return "radvd"
    if node in ("sg", "vcm", "ha", "xha", "cn"):
        return node
    return "emulator"


def cpu_wait_shares(resources: pd.DataFrame, window: tuple[float, float] | None = None,
                    across: str = "median") -> pd.Series | None:
    """Per sampling interval (ending inside ``window``, seconds of the run, if given), the share of the
    interval (%) the processes spent runnable but waiting for a CPU, combined over the processes by
    ``across`` ("median": the typical process; "max": the most starved one); None without run-queue
    samples."""
    if "wait_s" not in resources or resources.wait_s.isna().all():
        return None
    r = resources.dropna(subset=["wait_s"]).sort_values(["node", "t"])
    if window is not None:   # the interval ending first in the window starts before it: keep one sample more
        before = r[r.t < window[0]].groupby("node").tail(1)
        r = pd.concat([before, r[(r.t >= window[0]) & (r.t <= window[1])]]).sort_values(["node", "t"])
    step = r.groupby("node")[["t", "wait_s"]].diff()
    share = (100.0 * step.wait_s / step.t).where(step.t > 0)
    # one pass over the processes is one interval, whatever its length (rows are in pass order per node)
    passes = r.groupby("node").cumcount()
    per_interval = share.groupby(passes).agg(across).dropna()
    return per_interval if not per_interval.empty else None


class Sampler(threading.Thread):
    """Reads /proc for every tracked process each ``period`` seconds into ``rows`` (RESOURCE_COLUMNS;
    ``t`` in seconds since ``t0``, a time.time() value); without ``memory`` only CPU time and wait."""

    def __init__(self, processes: dict[str, int], period: float, t0: float, memory: bool = True):
        super().__init__(daemon=True)
        self.processes, self.period, self.t0, self.memory = processes, period, t0, memory
        self.rows: list[dict] = []
        self.halt = threading.Event()

    def sample(self) -> None:
        for node, pid in self.processes.items():
            now = time.time() - self.t0   # per process: on a starved host one pass can take seconds
            values = read_proc(pid, self.memory)
            if values is not None:
                self.rows.append({"t": now, "node": node, "role": role_of(node), "pid": pid, **values})

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.period)

    def stop(self) -> pd.DataFrame:
        """Stop sampling (after one last pass) and return the rows."""
        self.halt.set()
        self.join(timeout=10)
        self.sample()
        return pd.DataFrame(self.rows, columns=RESOURCE_COLUMNS)
