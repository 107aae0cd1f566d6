"""Socket shell for the probe cores.

    python -m nodeapps.probe echo --bind ADDR [--port 7777] [--duration S] [--out FILE]
    python -m nodeapps.probe send --to ADDR [--bind ADDR] [--port 7777] [--rate 50] [--duration S]
                                  [--size 64] [--timeout 2] [--out FILE] [--summary FILE]

``send`` writes one JSON line per probe (fields in :mod:`nodeapps.probe.core`) to ``--out`` (default
standard output), as soon as each probe is answered or declared lost. ``echo`` answers every probe and, with
``--out``, writes one JSON line per arrival. Both stop after ``--duration`` seconds by themselves (the
sender then waits up to ``--timeout`` for the last echoes) or on SIGTERM / SIGINT, writing what they have
(probes still in flight become ``pending``). A one-line summary goes to standard error; ``--summary FILE``
writes it as JSON. Bad arguments and socket errors end with a one-line message and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import statistics
import sys
import time

from nodeapps.probe.core import ProbeEcho, ProbeSender
from nodeapps.probe.packet import DEFAULT_MARKER, HEADER_LEN, MAX_SIZE

DEFAULT_PORT = 7777
TICK_S = 0.05   # longest sleep, so a signal is noticed quickly


class ShellError(Exception):
    pass


def _address(text: str, port: int) -> tuple:
    try:
        infos = socket.getaddrinfo(text, port, socket.AF_INET6, socket.SOCK_DGRAM, 0,
                                   socket.AI_NUMERICHOST)
    except socket.gaierror:
        raise ShellError(f"{text!r} is not an IPv6 address") from None
    return infos[0][4]


def _socket(bind: str | None, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.bind(_address(bind or "::", port))
    except OSError as exc:
        sock.close()
        raise ShellError(f"cannot bind [{bind or '::'}]:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def _open_out(path: str | None):
    if path in (None, ""):
        return None
    if path == "-":
        return sys.stdout
    try:
        return open(path, "w", buffering=1, encoding="utf-8")
    except OSError as exc:
        raise ShellError(f"cannot write {path}: {exc.strerror}") from None


class _Stop:
    def __init__(self):
        self.requested = False
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handler)

    def _handler(self, _signum, _frame):
        self.requested = True


def run_send(args) -> int:
    stop = _Stop()
    sock = _socket(args.bind, 0)
    destination = _address(args.to, args.port)
    out = _open_out(args.out)
    session = args.session or int.from_bytes(os.urandom(4), "big") or 1
    now = time.time()
    sender = ProbeSender(session=session, rate_hz=args.rate, start=now, count=args.count, size=args.size,
                         marker=args.marker.encode(), loss_timeout_s=args.timeout)
    end = now + args.duration if args.duration else None
    drain_until = None
    rtts = []
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    try:
        while not stop.requested:
            now = time.time()
            if sender.sending and end is not None and now >= end:
                sender.stop_sending()
            if not sender.sending and drain_until is None:
                drain_until = now + args.timeout
            if drain_until is not None and (sender.done or now >= drain_until):
                break
            for datagram in sender.datagrams_to_send(now):
                try:
                    sock.sendto(datagram, destination)
                except OSError:
                    pass   # no route during a handover: the probe counts as lost
            sender.handle_timer(now)
            _write(out, sender.pop_records(), rtts)
            timer = sender.get_timer()
            wait = TICK_S if timer is None else min(TICK_S, max(0.0, timer - time.time()))
            for _key, _mask in sel.select(wait):
                while True:
                    try:
                        data = sock.recv(2048)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break   # e.g. ICMPv6 unreachable reported on the socket
                    sender.receive_datagram(data, time.time())
    finally:
        sender.finish(time.time())
        _write(out, sender.pop_records(), rtts)
        if out is not None and out is not sys.stdout:
            out.close()
        elif out is sys.stdout:
            sys.stdout.flush()
        sel.close()
        sock.close()
    summary = {"role": "send", **sender.stats(),
               "rtt_median_ms": round(statistics.median(rtts), 4) if rtts else None,
               "interrupted": stop.requested}
    _summary(args.summary, summary)
    print(f"probe send: {summary['sent']} sent, {summary['received']} answered, {summary['lost']} lost, "
          f"{summary['pending']} pending, rtt median {summary['rtt_median_ms']} ms, "
          f"longest gap {summary['max_gap_ms']} ms", file=sys.stderr)
    return 0


def _write(out, records, rtts) -> None:
    for record in records:
        if record.rtt_ms is not None:
            rtts.append(record.rtt_ms)
        if out is not None:
            out.write(json.dumps(record.as_dict(), separators=(",", ":")) + "\n")


def _summary(path, summary) -> None:
    if path:
        try:
            with open(path, "w", encoding="utf-8") as f:
                json.dump(summary, f)
        except OSError as exc:
            print(f"probe: cannot write {path}: {exc.strerror}", file=sys.stderr)


def run_echo(args) -> int:
    stop = _Stop()
    sock = _socket(args.bind, args.port)
    out = _open_out(args.out)
    echo = ProbeEcho()
    end = time.time() + args.duration if args.duration else None
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    try:
        while not stop.requested and (end is None or time.time() < end):
            for _key, _mask in sel.select(TICK_S):
                while True:
                    try:
                        data, addr = sock.recvfrom(2048)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    echo.receive_datagram(data, addr, time.time())
                for reply, addr in echo.datagrams_to_send(time.time()):
                    try:
                        sock.sendto(reply, addr)
                    except OSError:
                        pass
            if out is not None:
                for record in echo.pop_records():
                    d = record.as_dict()
                    d["peer"] = record.peer[0] if isinstance(record.peer, tuple) else d["peer"]
                    out.write(json.dumps(d, separators=(",", ":")) + "\n")
            else:
                echo.pop_records()
    finally:
        if out is not None and out is not sys.stdout:
            out.close()
        sel.close()
        sock.close()
    summary = {"role": "echo", **echo.stats(), "interrupted": stop.requested}
    _summary(args.summary, summary)
    print(f"probe echo: {summary['received']} received, {summary['echoed']} echoed, "
          f"{summary['duplicates']} duplicates, {summary['reordered']} reordered", file=sys.stderr)
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m nodeapps.probe", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role", required=True)
    send = sub.add_parser("send", help="send probes and write one record per probe")
    send.add_argument("--to", required=True, help="IPv6 address of the echo")
    send.add_argument("--bind", help="local IPv6 source address (default: chosen by routing)")
    send.add_argument("--rate", type=float, default=50.0, help="probes per second (default 50)")
    send.add_argument("--count", type=int, help="stop after this many probes")
    send.add_argument("--size", type=int, default=64, help=f"datagram size in bytes, {HEADER_LEN}-{MAX_SIZE} (default 64)")
    send.add_argument("--marker", default=DEFAULT_MARKER.decode(), help="padding text (plaintext marker)")
    send.add_argument("--timeout", type=float, default=2.0, help="seconds after which a probe is lost (default 2)")
    send.add_argument("--session", type=int, help="session number (default random)")
    echo = sub.add_parser("echo", help="answer probes")
    echo.add_argument("--bind", default="::", help="IPv6 address to listen on (default ::)")
    for p, out_default in ((send, "-"), (echo, None)):
        p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"echo's UDP port (default {DEFAULT_PORT})")
        p.add_argument("--duration", type=float, help="stop after this many seconds (default: at SIGTERM/SIGINT)")
        p.add_argument("--out", default=out_default,
                       help="JSON-lines records file, '-' for standard output" +
                            (" (default -)" if out_default else " (default: none)"))
        p.add_argument("--summary", help="also write the summary as JSON to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error("--port must be 1-65535")
    if args.duration is not None and not args.duration > 0:
        parser.error("--duration must be positive")
    if args.role == "send":
        if not 0 < args.rate <= 10000:
            parser.error("--rate must be above 0 and at most 10000")
        if not HEADER_LEN <= args.size <= MAX_SIZE:
            parser.error(f"--size must be from {HEADER_LEN} to {MAX_SIZE}")
        if not args.timeout > 0:
            parser.error("--timeout must be positive")
        if args.count is not None and args.count < 1:
            parser.error("--count must be at least 1")
        if args.session is not None and not 1 <= args.session <= 0xFFFFFFFF:
            parser.error("--session must be 1-4294967295")
        if not args.marker.isascii():
            parser.error("--marker must be ASCII text")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run_send(args) if args.role == "send" else run_echo(args)
    except ShellError as exc:
        print(f"probe {args.role}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
