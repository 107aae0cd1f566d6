"""Pieces shared by the integration tests: polling (a lab changes state asynchronously) and captures."""
import os
import re
import time

from topologies import runs


def wait_for(predicate, timeout=5.0, what="condition"):
    """The predicate's first true value, polled until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def vcm_paths(lab, node):
    """An MN's VCM path rows by peer name (``svpnlab-status``'s ``vcm paths`` table)."""
    return {row["peer"]: row for row in lab.status(node).get("vcm", {}).get("paths", [])}


def sa_packets(lab, node):
    """Packets each installed SA of a node has carried, by SA name."""
    return {s["name"]: s["counters"]["packets"] for s in lab.status(node)["ipsec"]["sas"]}


def esp_drops(lab, node):
    """A node's ESP packets dropped for an unknown SPI or a failed ICV (none may occur while a pair switches)."""
    counters = lab.status(node)["ipsec"]["counters"]
    return {"unknown_spi": counters.get("unknown_spi", 0), "icv": counters.get("icv", 0)}


def ping_reply_times(path):
    """Times of the replies in the log of ``ping -D``."""
    with open(path, encoding="utf-8") as f:
        return [float(m[1]) for m in re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes from", f.read(), re.M)]


def start_capture(lab, node, interface, name):
    """tcpdump of IPv6 on ``node``'s ``interface`` into ``<run dir>/<name>``, once it is listening."""
    path = os.path.join(lab.run_dir, name)
    proc = lab.popen(node, ["tcpdump", "--immediate-mode", "-U", "-n", "-s", "0", "-i", interface, "-w", path,
                            "ip6"], name + ".log")
    wait_for(lambda: b"listening on" in open(os.path.join(lab.run_dir, name + ".log"), "rb").read(),
             what=f"tcpdump on {interface}")
    return proc, path


def tagged_processes(root):
    """Processes tagged with a run directory under ``root`` (an experiment run with SVPNLAB_RUN_ROOT=root),
    with their command lines: what of that experiment still runs."""
    out = {}
    for pid in runs._pids():
        tag = runs._tag_of(pid)
        if tag is not None and tag.startswith(root + os.sep):
            out[pid] = runs._cmdline(pid)
    return out
