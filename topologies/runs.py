"""Run directories and what a crashed lab leaves behind (``svpnlab-clean-net``, ``sudo make clean-net``).

Every lab owns one run directory under /tmp (``svpnlab-*``). When the lab starts it writes an owner
file there (the experiment's PID and that process's start time, so a reused PID is not mistaken for the
owner) and puts the directory's path into its own environment as ``SVPNLAB_RUN_DIR``. Every process the
lab starts afterwards — Mininet's host shells, node apps, link emulators, radvd, tcpdump, probes, iperf3,
whatever a shell command starts — inherits that variable, so the lab's processes can be found by
``/proc/PID/environ`` alone, without guessing from command names.

A run directory whose owner is gone (``kill -9`` of the experiment, a crash) is a leftover. Cleaning it
up means: kill the processes that carry its tag or name it on their command line (which also frees the
network namespaces they held), delete the lab's bridges — only while no live lab exists, since every lab
uses the same bridge names — and remove the directory. Nothing that is not tagged or named ours is touched.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

RUN_ENV = "SVPNLAB_RUN_DIR"
# Tests point a whole experiment at a private root, so what they check for is only their own.
RUN_ROOT = os.environ.get("SVPNLAB_RUN_ROOT", "/tmp")
# Signals that end an experiment: Ctrl-C, kill, and the terminal or SSH session going away.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
RUN_PREFIX = "svpnlab-"
OWNER_FILE = "owner.json"
# Bridges every lab creates in the root namespace (topologies/svpn.py names them).
BRIDGES = ("soffice", "swlan1", "swlan2", "scell", "sxhome")
KILL_GRACE_S = 2.0


def new_run_dir(kind: str = "") -> str:
    """A fresh private run directory, ``/tmp/svpnlab-<kind>XXXX``."""
    os.makedirs(RUN_ROOT, exist_ok=True)
    path = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{kind}", dir=RUN_ROOT)
    os.chmod(path, 0o700)
    return path


@contextlib.contextmanager
def signals_held():
    """Hold back the stop signals while a teardown runs (they are delivered, once, when it is done).
    Only the main thread receives Python's signals, so only there is there anything to hold."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def on_stop_signals(handler) -> None:
    """Route SIGINT, SIGTERM and SIGHUP to ``handler(signum, frame)``."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def stop_signals_interrupt() -> None:
    """SIGTERM and SIGHUP end the program the way Ctrl-C does (KeyboardInterrupt), so its ``finally``
    blocks tear the lab down whichever way it was stopped."""
    on_stop_signals(_interrupt)


def kill_tagged(run_dir: str) -> list[int]:
    """Stop every process (but us) that carries ``run_dir`` as its tag; returns their PIDs."""
    me = os.getpid()
    pids = [pid for pid in _pids() if pid != me and _tag_of(pid) == run_dir]
    if pids:
        _kill(pids)
    return pids


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (proc(5) stat field 22), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def write_owner(run_dir: str) -> None:
    """Record this process as ``run_dir``'s owner: while it lives, nothing there is a leftover."""
    owner = {"pid": os.getpid(), "start_ticks": _start_ticks(os.getpid()), "since": time.time()}
    with open(os.path.join(run_dir, OWNER_FILE), "w", encoding="utf-8") as f:
        json.dump(owner, f)


def claim(run_dir: str) -> str | None:
    """Mark ``run_dir`` as owned by this process and tag our environment with it, so every process we
    start from now on carries it. Returns the previous tag (for ``release``)."""
    write_owner(run_dir)
    previous = os.environ.get(RUN_ENV)
    os.environ[RUN_ENV] = run_dir
    return previous


def release(previous: str | None) -> None:
    """Undo ``claim``'s environment tag."""
    if previous is None:
        os.environ.pop(RUN_ENV, None)
    else:
        os.environ[RUN_ENV] = previous


def owner_alive(run_dir: str) -> bool:
    """True if the process that claimed ``run_dir`` still runs. A directory without an owner file is
    being set up right now if it is young; older than a minute, nobody will claim it any more."""
    try:
        with open(os.path.join(run_dir, OWNER_FILE), encoding="utf-8") as f:
            owner = json.load(f)
        pid, ticks = int(owner["pid"]), owner.get("start_ticks")
    except FileNotFoundError:
        try:
            return time.time() - os.stat(run_dir).st_mtime < 60
        except OSError:
            return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return _start_ticks(pid) is not None and (ticks is None or _start_ticks(pid) == ticks)


def _tag_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return None
    key = RUN_ENV.encode() + b"="
    for item in environ.split(b"\0"):
        if item.startswith(key):
            return item[len(key):].decode(errors="replace")
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _netns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


@dataclass
class Leftovers:
    run_dirs: list[str] = field(default_factory=list)
    processes: dict[int, str] = field(default_factory=dict)   # pid -> command line
    namespaces: set[str] = field(default_factory=set)         # net namespaces those processes hold
    bridges: list[str] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)             # veth ends on those bridges
    live_labs: list[str] = field(default_factory=list)        # run directories whose owner still runs

    def empty(self) -> bool:
        return not (self.run_dirs or self.processes or self.bridges or self.ports)


def _existing_bridges() -> list[str]:
    return [name for name in BRIDGES if os.path.exists(f"/sys/class/net/{name}")]


def _bridge_ports() -> list[str]:
    """Our bridges' veth ends (Mininet names them ``<bridge>-ethN``). The kernel destroys a dead
    namespace's veths asynchronously; deleting our end now frees the names for the next lab at once."""
    prefixes = tuple(f"{name}-eth" for name in BRIDGES)
    return sorted(name for name in os.listdir("/sys/class/net") if name.startswith(prefixes))


def find_leftovers(root: str = RUN_ROOT) -> Leftovers:
    """What dead labs left: their run directories, tagged processes and (with no live lab) our bridges."""
    found = Leftovers()
    dirs = sorted(d for d in glob.glob(os.path.join(root, RUN_PREFIX + "*")) if os.path.isdir(d))
    for run_dir in dirs:
        (found.live_labs if owner_alive(run_dir) else found.run_dirs).append(run_dir)
    dead = set(found.run_dirs)
    me = os.getpid()
    alive: dict[str, bool] = {}
    for pid in _pids():
        if pid == me:
            continue
        tag = _tag_of(pid)
        # A tag whose directory is gone is a leftover too (its owner removed it and then died).
        if tag is not None and tag not in alive:
            alive[tag] = tag not in dead and owner_alive(tag)
        ours = tag is not None and not alive[tag]
        if not ours:
            cmd = _cmdline(pid)
            ours = any(d + "/" in cmd for d in dead)
        if ours:
            found.processes[pid] = _cmdline(pid) or f"pid {pid}"
            ns = _netns(pid)
            if ns is not None and ns != _netns(me):
                found.namespaces.add(ns)
    if not found.live_labs:
        found.bridges, found.ports = _existing_bridges(), _bridge_ports()
    return found


def _kill(pids: list[int]) -> None:
    """SIGTERM, a short wait, then SIGKILL for whoever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline:
            pids = [p for p in pids if _start_ticks(p) is not None and not _zombie(p)]
            if not pids:
                return
            time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
        return stat[stat.rfind(")") + 2:].split()[0] == "Z"
    except OSError:
        return False


def remove(found: Leftovers) -> list[str]:
    """Remove what ``find_leftovers`` found; returns one line per thing removed."""
    lines = []
    if found.processes:
        _kill(list(found.processes))
        lines += [f"process {pid}: {cmd[:100]}" for pid, cmd in sorted(found.processes.items())]
    if found.namespaces:
        lines.append(f"{len(found.namespaces)} network namespace(s) held by those processes")
    if found.bridges or found.ports:
        ports = sorted(set(found.ports) | set(_bridge_ports()))   # more may show up as namespaces die
        for port in ports:
            subprocess.run(["ip", "link", "del", "dev", port], capture_output=True)
        if ports:
            lines.append(f"{len(ports)} bridge port(s): {', '.join(ports[:6])}{' …' if len(ports) > 6 else ''}")
    for bridge in found.bridges:
        result = subprocess.run(["ip", "link", "del", "dev", bridge], capture_output=True, text=True)
        if result.returncode == 0:
            lines.append(f"bridge {bridge}")
    for run_dir in found.run_dirs:
        shutil.rmtree(run_dir, ignore_errors=True)
        lines.append(f"run directory {run_dir}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="svpnlab-clean-net",
        description="Remove what crashed svpnlab labs left behind (processes, namespaces, bridges, run "
                    "directories) and nothing else.")
    parser.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("svpnlab-clean-net: needs root (it removes network interfaces and other users' processes)",
              file=sys.stderr)
        return 2
    found = find_leftovers()
    for run_dir in found.live_labs:
        print(f"kept: {run_dir} (its lab is still running)")
    if found.live_labs and _existing_bridges():
        print(f"kept: bridges {', '.join(_existing_bridges())} (a running lab uses them)")
    if found.empty():
        print("nothing of svpnlab's to remove")
        return 0
    if args.dry_run:
        for pid, cmd in sorted(found.processes.items()):
            print(f"would remove process {pid}: {cmd[:100]}")
        for name in found.ports + found.bridges:
            print(f"would remove interface {name}")
        for run_dir in found.run_dirs:
            print(f"would remove run directory {run_dir}")
        return 0
    for line in remove(found):
        print(f"removed {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
