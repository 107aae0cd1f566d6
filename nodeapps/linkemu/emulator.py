"""The userspace link emulator: the I/O shell around :class:`nodeapps.linkemu.model.LinkCore`.

Runs inside a hidden namespace between two veth ends (``--side-a`` towards node1, ``--side-b`` towards
node2). One thread: ``select`` on one AF_PACKET socket per side, a heap of release times in the core.

- ``PACKET_IGNORE_OUTGOING`` so a socket never reads back the frames it sends.
- ``PACKET_VNET_HDR`` so checksum-offload metadata travels with each frame (frames with unfinished
  checksums stay valid) and GSO super-frames are passed intact when a link only delays; for links with
  loss or a rate the link class turns segmentation offload off on the hosts' ends, so frames are real.
- arrival times are the kernel's receive timestamps (``SO_TIMESTAMPNS``), so the time this process
  takes to wake up for a frame is not added to the link's delay;
- timer slack 1 ns, and waking early by the measured timer overshoot (an average, starting from
  ``--early-us``, at most ``MAX_EARLY_NS``) keep release times within tens of µs.
- lateness (time sent - release time) is counted; when more than ``--late-fraction`` of the frames (and
  at least ``MIN_LATE_FRAMES``) leave more than ``--late-ms`` late, the run is marked overloaded, said
  on stderr and in the stats file.
- it runs as SCHED_FIFO (``--priority``) when allowed, so other load on a shared CPU does not delay
  its wake-ups;
- the process dies with its parent (``PR_SET_PDEATHSIG`` plus a parent-pid check) and on SIGTERM.

Stats are written as JSON to ``--stats`` when ready, every second and at exit (atomically).
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import gc
import json
import os
import select
import shutil
import signal
import socket
import struct
import sys
import time
from typing import Any, Optional

from nodeapps.linkemu.errors import LinkConfigError
from nodeapps.linkemu.model import FORWARD, REVERSE, LinkCore
from nodeapps.linkemu.params import LinkConfig

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
SO_TIMESTAMPNS = 35        # kernel receive time of each frame (CLOCK_REALTIME timespec)
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29
VNET_HDR_LEN = 10           # struct virtio_net_hdr
MAX_FRAME = 65_536 + VNET_HDR_LEN + 64
BATCH = 32                  # frames read per socket before looking at the heap again
STATS_PERIOD_NS = 1_000_000_000
MAX_EARLY_NS = 500_000
_TIMESPEC = struct.Struct("@qq")
_ANC_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
IDLE_WAIT_S = 0.2


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def open_side(ifname: str) -> socket.socket:
    # Protocol 0 until bound, so no frame from another interface slips in before bind().
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((ifname, ETH_P_ALL))
    return sock


MIN_LATE_FRAMES = 20         # a handful of late frames (start-up, one scheduler hiccup) is not overload


def is_overloaded(late: int, released: int, late_fraction_limit: float,
                  min_late: int = MIN_LATE_FRAMES) -> bool:
    """The run's verdict: too large a share of frames left late, and not just a few stragglers."""
    return released > 0 and late >= min_late and late / released > late_fraction_limit


class Lateness:
    def __init__(self, threshold_ns: int) -> None:
        self.threshold_ns = threshold_ns
        self.released = 0
        self.late = 0
        self.max_ns = 0
        self.sum_ns = 0

    def record(self, late_ns: int) -> None:
        self.released += 1
        if late_ns > 0:
            self.sum_ns += late_ns
            if late_ns > self.max_ns:
                self.max_ns = late_ns
            if late_ns > self.threshold_ns:
                self.late += 1

    def to_dict(self) -> dict[str, Any]:
        return {"released": self.released, "late": self.late, "max_late_ms": self.max_ns / 1e6,
                "mean_late_ms": self.sum_ns / self.released / 1e6 if self.released else 0.0}


class Emulator:
    def __init__(self, side_a: str, side_b: str, config: LinkConfig, stats_path: Optional[str],
                 parent_pid: Optional[int], late_ms: float, late_fraction: float, early_us: float) -> None:
        self.names = (side_a, side_b)
        self.socks = (open_side(side_a), open_side(side_b))
        self.core = LinkCore(config, epoch_ns=time.monotonic_ns())
        self.config = config
        self.stats_path = stats_path
        self.parent_pid = parent_pid
        self.late_fraction = late_fraction
        self.early_ns = int(early_us * 1000)
        self.lateness = (Lateness(int(late_ms * 1e6)), Lateness(int(late_ms * 1e6)))
        self.send_errors = 0
        self.max_in_flight = 0
        self.stopping = False
        self.interface_gone = False
        self.scheduling = "normal"
        self.started = time.time()

    # -- stats --------------------------------------------------------------------------------------------
    def stats(self, running: bool) -> dict[str, Any]:
        directions = {}
        for name, index in (("forward", FORWARD), ("reverse", REVERSE)):
            counters = vars(self.core.directions[index].counters).copy()
            counters.update(self.lateness[index].to_dict())
            directions[name] = counters
        released = sum(d.released for d in self.lateness)
        late = sum(d.late for d in self.lateness)
        fraction = late / released if released else 0.0
        return {
            "ready": True, "running": running, "pid": os.getpid(), "interfaces": list(self.names),
            "started": self.started, "directions": directions, "released": released, "late": late,
            "late_fraction": fraction, "late_threshold_ms": self.lateness[0].threshold_ns / 1e6,
            "late_fraction_limit": self.late_fraction,
            "overloaded": is_overloaded(late, released, self.late_fraction),
            "max_late_ms": max(d.max_ns for d in self.lateness) / 1e6,
            "send_errors": self.send_errors, "max_in_flight": self.max_in_flight,
            "scheduling": self.scheduling,
        }

    def write_stats(self, running: bool) -> dict[str, Any]:
        stats = self.stats(running)
        if self.stats_path:
            tmp = f"{self.stats_path}.tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(stats, handle)
            os.replace(tmp, self.stats_path)
        return stats

    # -- loop ---------------------------------------------------------------------------------------------
    def _send_due(self) -> None:
        now = time.monotonic_ns()
        due = self.core.due(now + self.early_ns)
        for count, (release, side, frame) in enumerate(due):
            if count and count % 16 == 0:
                now = time.monotonic_ns()
            try:
                self.socks[side].send(frame)
            except OSError as exc:
                if exc.errno in (errno.ENXIO, errno.ENODEV, errno.ENETDOWN):
                    self.stopping = self.interface_gone = True  # the link is being torn down
                    return
                self.send_errors += 1
            # The frame went out `side`, so it travelled in direction (1 - side).
            self.lateness[1 - side].record(now - release)

    def _drain(self, side: int) -> None:
        sock = self.socks[side]
        core = self.core
        now = time.monotonic_ns()
        realtime_offset = time.time_ns() - now
        for _ in range(BATCH):
            try:
                frame, ancdata, _, _ = sock.recvmsg(MAX_FRAME, _ANC_SPACE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.ENXIO, errno.ENODEV, errno.ENETDOWN):
                    self.stopping = self.interface_gone = True
                    return
                raise
            if len(frame) <= VNET_HDR_LEN:
                continue
            arrival = now
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                    arrival = min(now, seconds * 1_000_000_000 + nanoseconds - realtime_offset)
            core.receive(side, arrival, frame, len(frame) - VNET_HDR_LEN)

    def run(self, wakeup_fd: int) -> dict[str, Any]:
        fds = [self.socks[0], self.socks[1], wakeup_fd]
        next_stats = time.monotonic_ns() + STATS_PERIOD_NS
        self.write_stats(True)
        while not self.stopping:
            self._send_due()
            in_flight = self.core.in_flight()
            if in_flight > self.max_in_flight:
                self.max_in_flight = in_flight
            now = time.monotonic_ns()
            release = self.core.next_release()
            if release is None:
                timeout = IDLE_WAIT_S
            else:
                timeout = min(IDLE_WAIT_S, max(0.0, (release - self.early_ns - now) / 1e9))
            readable, _, _ = select.select(fds, [], [], timeout)
            if not readable and release is not None and 0 < timeout < IDLE_WAIT_S:
                # Timer wake-up: learn how late select() returns and wake that much earlier next time.
                overshoot = time.monotonic_ns() - (now + int(timeout * 1e9))
                self.early_ns += (min(max(overshoot, 0), MAX_EARLY_NS) - self.early_ns) // 8
            for item in readable:
                if item is wakeup_fd:
                    try:
                        os.read(wakeup_fd, 512)
                    except BlockingIOError:
                        pass
                else:
                    self._drain(0 if item is self.socks[0] else 1)
            upcoming = self.core.next_release()
            quiet = upcoming is None or upcoming - now > 2_000_000
            if now >= next_stats and (quiet or now >= next_stats + STATS_PERIOD_NS):
                # Written while no frame is due soon, so the file I/O does not make frames late.
                next_stats = now + STATS_PERIOD_NS
                self.write_stats(True)
                if self.parent_pid is not None and os.getppid() != self.parent_pid:
                    self.stopping = True
        return self.write_stats(False)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nodeapps.linkemu.emulator",
                                     description="Userspace link emulator between two interfaces.")
    parser.add_argument("--side-a", required=True, help="interface towards node1 (forward input)")
    parser.add_argument("--side-b", required=True, help="interface towards node2 (reverse input)")
    parser.add_argument("--config", required=True, help="LinkConfig as JSON (see params.LinkConfig.to_dict)")
    parser.add_argument("--stats", help="path of the JSON stats file")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is no longer our parent")
    parser.add_argument("--late-ms", type=float, default=0.5, help="a frame later than this is late")
    parser.add_argument("--late-fraction", type=float, default=0.01,
                        help="share of late frames above which the run is overloaded")
    parser.add_argument("--early-us", type=float, default=50.0, help="send this much before release time")
    parser.add_argument("--priority", type=int, default=10,
                        help="SCHED_FIFO priority (0: normal scheduling); needs root, else ignored")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        config = LinkConfig.from_dict(json.loads(args.config))
    except (ValueError, TypeError) as exc:  # LinkConfigError is a ValueError
        print(f"linkemu: error: bad --config: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.parent_pid is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != args.parent_pid:  # the parent died before the line above
            return 1
    try:
        emulator = Emulator(args.side_a, args.side_b, config, args.stats, args.parent_pid,
                            args.late_ms, args.late_fraction, args.early_us)
    except (OSError, LinkConfigError) as exc:
        print(f"linkemu: error: cannot start on {args.side_a}/{args.side_b}: {exc}", file=sys.stderr)
        return 1
    # Process-wide settings only once the sockets are open (a failed start changes nothing).
    _prctl(PR_SET_TIMERSLACK, 1)
    if args.priority > 0:
        # A busy shared CPU otherwise delays our wake-ups by milliseconds; we sleep in select() between
        # frames, and the kernel's real-time throttling keeps the rest of the machine alive under overload.
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.priority))
            emulator.scheduling = f"fifo:{args.priority}"
        except OSError:
            pass
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd)

    def stop(_signum: int, _frame: Any) -> None:
        emulator.stopping = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    # Everything allocated so far lives until exit: keep it out of the collector's full passes, which
    # otherwise stall the loop for milliseconds now and then.
    gc.collect()
    gc.freeze()
    stats = emulator.run(read_fd)
    if emulator.interface_gone and args.parent_pid is not None:
        # Interfaces vanish early when our parent dies (its files close before we are re-parented).
        deadline = time.monotonic() + 2.0
        while os.getppid() == args.parent_pid and time.monotonic() < deadline:
            time.sleep(0.02)
    if args.parent_pid is not None and os.getppid() != args.parent_pid and args.stats:
        # Orphaned: nobody will read the stats, so leave nothing behind.
        workdir = os.path.dirname(os.path.abspath(args.stats))
        if os.path.basename(workdir).startswith("linkemu-"):
            shutil.rmtree(workdir, ignore_errors=True)
    if stats["overloaded"]:
        print(f"linkemu: WARNING: OVERLOADED: {stats['late']} of {stats['released']} frames "
              f"({100 * stats['late_fraction']:.1f} %) left more than {stats['late_threshold_ms']:g} ms late "
              f"(max {stats['max_late_ms']:.1f} ms): delays of this run are inflated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
