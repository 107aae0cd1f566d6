"""The node process: one per VPN node (mobile node, security gateway), one thread, one epoll loop.

Theory of operation: inner traffic (addressed between VPN addresses) is routed by the kernel into a TUN
device; the loop reads it, asks the IPsec processor what to do, and sends the resulting ESP packet with a
raw HDRINCL socket. ESP arriving on an outer interface is picked up by an AF_PACKET socket (the nftables
table keeps the ESP-less kernel from answering it), decrypted, checked against the SPD and written into
the TUN, from where the kernel delivers or forwards the inner packet. The protocol cores never see a
socket or a clock: this shell passes `now` in and carries bytes between them and the kernel.

SAs configured with ``"encap": "udp"`` (RFC 3948, docs/esp.md) use a UDP socket on port 4500 instead:
the ESP packets of one TUN read leave in as few UDP_SEGMENT sends as their sizes allow, and datagrams
arrive GRO-coalesced, are split, and are rebuilt into native ESP packets for the same inbound path.

Started by ``nodeapps.node`` (``python -m nodeapps.node CONFIG.json``), which picks the role's runtime.
"""
from __future__ import annotations

import json
import os
import select
import socket
import time

from nodeapps import ipv6
from nodeapps.esp.processor import IPsecProcessor
from nodeapps.runtime import nft, sequences
from nodeapps.runtime.config import NodeConfig
from nodeapps.runtime.control import ControlServer
from nodeapps.runtime.events import EventLog
from nodeapps.runtime.faults import MessageDrops, mobility_message, vcm_message
from nodeapps.runtime.netlink import RT_SCOPE_HOST, SCOPE_NAMES, ipv6_addresses
from nodeapps.runtime.offload import VNET_HDR_LEN, Coalescer, OffloadError, from_tun
from nodeapps.esp import udpencap
from nodeapps.runtime.packet_io import (ETH_HEADER_LEN, UDP_MAX_SEGMENTS, gso, open_capture, open_sender,
                                        open_udp_encap, parse_udp_cmsgs, pktinfo)
from nodeapps.runtime.tun import configure_tun, open_tun

# Packets handled per readiness event before the loop looks at its other sockets.
BATCH = 64
# UDP GRO reads per readiness event (each may hold dozens of ESP packets).
UDP_BATCH = 8
_CMSG_SPACE = 256
OWNED_PROTOCOLS = (ipv6.NH_ESP,)
FAULT_INJECTION_DISABLED = "fault injection is disabled (start the lab with fault_injection=True)"
# How long a timer that raised is held off, so a timer failing every time costs a hundred errors a
# second, not a busy loop.
TIMER_HOLD_S = 0.01
# Octets of a failed packet shown (in hex) in its handler_error event.
SUMMARY_OCTETS = 48
class NodeRuntime:
    # Next headers (first after the IPv6 header) this node's AF_PACKET sockets take from the kernel.
    owned_protocols = OWNED_PROTOCOLS
    mobility = False

    def __init__(self, config: NodeConfig, processor: IPsecProcessor):
        self.config = config
        self.processor = processor
        self.log = EventLog(config.node, config.event_log, per_second=config.event_rate_limit)
        self.started = time.time()
        self.stopping = False
        self.tun_fd = -1
        self.offload = False
        self.coalescer = Coalescer()
        self.sender = None
        self.udp_sock = None      # RFC 3948 ESP-in-UDP, opened when an SA asks for it
        self._udp_queue = None    # (ESP packet, SA) waiting for one GSO send; a list only inside on_tun
        self.captures = []
        self.control = None
        self.epoll = select.epoll()
        self.handlers = {}
        self.handler_names = {}
        self.last_packet = None   # the packet the current handler took last (for handler_error events)
        self._timer_hold = 0.0
        # drop-next faults; the roles name the Mobility Header and VCM messages their shells carry.
        self.message_drops = MessageDrops()
        self.counters = {"handler_errors": 0, "tun_rx": 0, "tun_tx": 0, "net_rx": 0, "net_tx": 0, "send_errors": 0,
                         "tun_ignored": 0, "bypass_from_tun": 0, "tun_super_packets": 0, "offload_errors": 0,
                         "udp_rx": 0, "udp_tx": 0, "udp_gso_sends": 0, "udp_not_esp": 0,
                         "fault_dropped": 0}

    # ---- set-up and tear-down -------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.config
        nft.install(self.owned_protocols, self.mobility)
        self.tun_fd, self.offload = open_tun(cfg.tun_name, cfg.tun_offload)
        configure_tun(cfg.tun_name, cfg.tun_mtu, cfg.tun_addresses, cfg.tun_routes)
        self.sender = open_sender()
        for interface in cfg.outer_interfaces:
            self.captures.append(open_capture(interface, self.owned_protocols))
        if any(sa.encap == "udp" for sa in self.processor.sad):
            self.udp_sock = open_udp_encap(udpencap.PORT)
            self.captures.append(self.udp_sock)
        self.control = ControlServer(cfg.control_socket, self.on_control, on_error=self.control_error)
        self._watch(self.tun_fd, self.on_tun, "tun")
        names = [f"network {i}" for i in cfg.outer_interfaces] + ["udp-encap"]
        for sock, name in zip(self.captures, names):
            self._watch(sock.fileno(), lambda now, s=sock: self.on_network(s, now), name)
        self._watch(self.control.fileno(), lambda now: self.control.on_readable(), "control")
        self.setup_role()
        self.log.emit(time.time(), "node_started", role=cfg.role, pid=os.getpid(), tun=cfg.tun_name,
                      inner_addresses=cfg.tun_addresses, outer_interfaces=cfg.outer_interfaces,
                      tun_offload=self.offload)
        for sa in self.processor.status()["sas"]:
            self.log.emit(time.time(), "sa_installed", name=sa.get("name"), spi=sa.get("spi"),
                          direction=sa.get("direction"), mode=sa.get("mode"))
        self._drain_core_events()

    def setup_role(self) -> None:
        """Role-specific sockets and state (mobility roles override)."""

    def next_timer(self) -> float | None:
        """Monotonic time the role wants ``on_timer`` called, or None."""
        return None

    def on_timer(self, now: float) -> None:
        pass

    def _watch(self, fd: int, handler, name: str | None = None) -> None:
        self.epoll.register(fd, select.EPOLLIN)
        self.handlers[fd] = handler
        self.handler_names[fd] = name or getattr(handler, "__name__", str(fd))

    def close(self) -> None:
        if self.control:
            self.control.close()
        for sock in self.captures:  # the UDP socket included
            sock.close()
        if self.sender:
            self.sender.close()
        if self.tun_fd >= 0:
            os.close(self.tun_fd)  # a non-persistent TUN (and its routes) disappears with its last fd
        nft.remove()
        self.log.emit(time.time(), "node_stopped", **self.counters)
        self.log.close()

    # ---- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        """The loop. Each input (one readiness event of one fd, one timer expiry) runs inside its own
        boundary: an exception no handler anticipated costs that input, is counted in ``handler_errors`` and
        logged as ``handler_error``, and the node goes on (Python's try is free until something raises)."""
        poll = self.epoll.poll
        handlers = self.handlers
        store = sequences.active()
        next_upkeep = 0.0
        while not self.stopping:
            try:
                deadline = self.next_timer()
            except Exception as exc:
                self.handler_error("next_timer", exc)
                deadline = None
            if deadline is not None and deadline < self._timer_hold:
                deadline = self._timer_hold
            timeout = 1.0
            if deadline is not None:
                timeout = min(1.0, max(0.0, deadline - time.monotonic()))
            try:
                ready = poll(timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            for fd, _mask in ready:
                self.last_packet = None
                try:
                    handlers[fd](now)
                except Exception as exc:
                    self._input_failed(fd, exc, now)
            if deadline is not None and now >= deadline:
                self.last_packet = None
                try:
                    self.on_timer(now)
                except Exception as exc:
                    self.handler_error("timer", exc)
                    self._timer_hold = now + TIMER_HOLD_S
            try:
                self._drain_core_events()
            except Exception as exc:
                self.handler_error("core events", exc)
            if store is not None and now >= next_upkeep:
                next_upkeep = now + sequences.MAINTAIN_EVERY_S
                self._keep_sequences(store, now)

    def _keep_sequences(self, store, now: float) -> None:
        try:
            if store.maintain(now):
                self.counters["sequence_store_writes"] = store.writes
        except sequences.SequenceStoreError as exc:
            # The SAs stop at their reservation rather than risk a repeated nonce; say why.
            self.counters["sequence_store_errors"] = self.counters.get("sequence_store_errors", 0) + 1
            self.log.emit(time.time(), "sequence_store_error", reason=str(exc))

    def _input_failed(self, fd: int, exc: Exception, now: float) -> None:
        """One input of ``fd`` raised: count it, then call the handler once more, so the rest of its batch
        (still waiting in the socket) and the role's post-batch work (flushes of the cores) still run."""
        name = self.handler_names.get(fd, str(fd))
        self.handler_error(name, exc)
        self.last_packet = None
        try:
            self.handlers[fd](now)
        except Exception as again:
            self.handler_error(name, again)

    def handler_error(self, where: str, exc: BaseException, **fields) -> None:
        """Count and log one input that raised: which handler, the exception, and the packet (length and
        first octets) when the handler had taken one."""
        self.counters["handler_errors"] += 1
        packet = self.last_packet
        if packet is not None and "bytes" not in fields:
            fields["bytes"] = len(packet)
            fields["head"] = bytes(packet[:SUMMARY_OCTETS]).hex()
        self.log.emit(time.time(), "handler_error", handler=where, reason=error_text(exc), **fields)

    def control_error(self, cmd, exc: BaseException) -> None:
        """A control request whose handler raised something other than a refusal (ValueError)."""
        self.last_packet = None
        self.handler_error("control", exc, cmd=str(cmd)[:64])

    def log_key(self, sa_config: dict) -> None:
        """Append an SA made at run time (keys included) to the node's key log, for the run's Wireshark
        profile: the lab's keys are lab keys (topologies/wireshark.py)."""
        if not self.config.key_log:
            return
        try:
            with open(self.config.key_log, "a", encoding="utf-8") as f:
                f.write(json.dumps(sa_config, sort_keys=True) + "\n")
        except OSError as exc:
            self.log.emit(time.time(), "key_log_error", reason=exc.strerror)

    def _drain_core_events(self) -> None:
        for event in self.processor.pop_events():
            fields = dict(event)
            name = fields.pop("event", "core_event")
            self.log.emit(time.time(), name, **fields)

    # ---- per-packet paths -----------------------------------------------------------------------
    def on_tun(self, now: float) -> None:
        # UDP-encapsulated output waits until the end of each read, then leaves in GSO sends.
        self._udp_queue = [] if self.udp_sock is not None else None
        try:
            self._read_tun()
        finally:
            if self._udp_queue:
                self._flush_udp()
            self._udp_queue = None

    def _read_tun(self) -> None:
        read, fd = os.read, self.tun_fd
        offload = self.offload
        counters = self.counters
        for _ in range(BATCH):
            try:
                data = read(fd, 65535 + VNET_HDR_LEN)
            except BlockingIOError:
                return
            except OSError:  # e.g. ENETDOWN while the link is down (a move)
                return
            counters["tun_rx"] += 1
            self.last_packet = data
            if not offload:
                self._send_out(data)
                continue
            try:
                packets = from_tun(data)
            except OffloadError as exc:
                counters["offload_errors"] += 1
                self.log.emit(time.time(), "offload_error", reason=str(exc))
                continue
            if len(packets) > 1:
                counters["tun_super_packets"] += 1
            for packet in packets:
                self._send_out(packet)
            if self._udp_queue:
                self._flush_udp()

    def _send_out(self, packet: bytes) -> None:
        counters = self.counters
        # The kernel sends its own link-local and multicast chatter into a TUN: not ours to carry.
        if len(packet) < 40 or packet[0] >> 4 != 6 or packet[24] == 0xFF or \
                (packet[24] == 0xFE and packet[25] & 0xC0 == 0x80):
            counters["tun_ignored"] += 1
            return
        verdict, sa, out = self.processor.outbound(packet)
        if out is None:
            return
        if verdict != "protect":
            # Bypass for a packet the routes steered into the TUN would loop straight back here.
            counters["bypass_from_tun"] += 1
            return
        self.on_protected(packet, sa)
        self.send_protected(out, sa)

    def send_protected(self, out: bytes, sa) -> None:
        """Send what the processor protected with ``sa``: natively by the raw socket, or (``encap``
        "udp") its ESP part from our UDP port 4500 to the peer's (RFC 3948 §2.1); the kernel adds the UDP
        header and checksum. Inside ``on_tun`` UDP output is queued for GSO sends."""
        if sa.encap is None or self.udp_sock is None:
            try:
                self.sender.sendto(out, (sa.remote, 0))
                self.counters["net_tx"] += 1
            except OSError as exc:
                self.counters["send_errors"] += 1
                self.log.emit(time.time(), "send_error", reason=exc.strerror, sa=sa.name)
            return
        esp = memoryview(out)[40:]  # tunnel mode: the outer header is exactly 40 octets
        if self._udp_queue is not None:
            self._udp_queue.append((esp, sa))
            return
        self._send_udp([esp], sa)

    def _flush_udp(self) -> None:
        """Queued ESP packets -> as few UDP_SEGMENT sends as possible (runs of one SA, equal sizes)."""
        queue, self._udp_queue = self._udp_queue, []
        start, n = 0, len(queue)
        while start < n:
            sa = queue[start][1]
            end = start + 1
            while end < n and queue[end][1] is sa:
                end += 1
            run = [esp for esp, _sa in queue[start:end]]
            for i, j in udpencap.batches([len(esp) for esp in run], UDP_MAX_SEGMENTS):
                self._send_udp(run[i:j], sa)
            start = end

    def _send_udp(self, datagrams: list, sa) -> None:
        ancdata = [pktinfo(sa.local_bytes)]
        if len(datagrams) > 1:
            ancdata.append(gso(len(datagrams[0])))
        try:
            self.udp_sock.sendmsg(datagrams, ancdata, 0, (sa.remote, udpencap.PORT))
        except OSError as exc:
            self.counters["send_errors"] += 1
            self.log.emit(time.time(), "send_error", reason=exc.strerror, sa=sa.name, encap="udp")
            return
        counters = self.counters
        counters["net_tx"] += len(datagrams)
        counters["udp_tx"] += len(datagrams)
        if len(datagrams) > 1:
            counters["udp_gso_sends"] += 1

    def received_packets(self, sock, batch: int = BATCH):
        """IPv6 packets waiting on a packet socket, at most ``batch``; a link that is down (ENETDOWN
        during a move) just ends the batch."""
        if sock is self.udp_sock:
            yield from self._udp_packets(sock)
            return
        for _ in range(batch):
            try:
                frame = sock.recv(65535)
            except OSError:  # BlockingIOError included: nothing more waiting
                return
            self.counters["net_rx"] += 1
            packet = self.last_packet = frame[ETH_HEADER_LEN:]
            yield packet

    def _udp_packets(self, sock):
        """Native ESP packets rebuilt from the datagrams on our UDP port 4500 (RFC 3948 §3.2), so every
        role's inbound path treats both encapsulations alike."""
        counters = self.counters
        native, classify, ESP = udpencap.native, udpencap.classify, udpencap.ESP
        for _ in range(UDP_BATCH):
            try:
                data, ancdata, _flags, address = sock.recvmsg(1 << 16, _CMSG_SPACE)
            except OSError:
                return
            size, destination = parse_udp_cmsgs(ancdata)
            if destination is None:
                continue
            source = socket.inet_pton(socket.AF_INET6, address[0].split("%")[0])
            for datagram in udpencap.segments(data, size):
                counters["udp_rx"] += 1
                if classify(datagram) != ESP:  # IKE (non-ESP marker), keepalive, runt: not ours
                    counters["udp_not_esp"] += 1
                    continue
                counters["net_rx"] += 1
                packet = self.last_packet = native(source, destination, datagram)
                yield packet

    def on_protected(self, inner: bytes, sa) -> None:
        """Hook for roles that watch what they send into an SA (the SG's VCM monitor); default: nothing."""

    def on_network(self, sock, now: float) -> None:
        inbound = self.processor.inbound
        counters = self.counters
        coalescer = self.coalescer if self.offload else None
        batch = []
        for packet in self.received_packets(sock):
            try:
                _verdict, _sa, inner = inbound(packet)
            except Exception as exc:  # this packet only: the batch gathered so far still goes out
                self.handler_error("network", exc)
                continue
            if inner is None:
                continue
            if coalescer is not None:
                coalescer.add(inner)
            else:
                batch.append(inner)
        if coalescer is not None:
            batch = coalescer.flush()
        write, fd = os.write, self.tun_fd
        for buf in batch:
            try:
                write(fd, buf)
                counters["tun_tx"] += 1
            except OSError as exc:
                counters["send_errors"] += 1
                self.log.emit(time.time(), "tun_write_error", reason=exc.strerror)

    # ---- control --------------------------------------------------------------------------------
    def on_control(self, request: dict) -> dict:
        cmd = request.get("cmd")
        if cmd == "status":
            return self.status()
        if cmd == "events":
            last = request.get("last", 50)
            if isinstance(last, bool) or not isinstance(last, int) or last < 1:
                raise ValueError(f"last {last!r}: a whole number of events, at least 1")
            return {"events": list(self.log.recent)[-last:]}
        if cmd == "drop-next":
            self.check_fault_injection()
            armed = self.message_drops.arm(request)
            self.log.emit(time.time(), "fault_armed", **armed)
            return armed
        raise ValueError(f"unknown command {cmd!r} (status, events, drop-next)")

    def check_fault_injection(self) -> None:
        """Commands that break a node on purpose answer only on a node started with fault injection on."""
        if not self.config.fault_injection:
            raise ValueError(FAULT_INJECTION_DISABLED)

    # ---- drop-next: the shell's boundary with its cores asks before it hands over or sends ----
    def drop_mobility(self, packet: bytes, direction: str) -> bool:
        """True if a drop-next fault takes this Mobility Header packet (then counted and logged)."""
        return self.message_drops.armed and self._fault_drop(mobility_message(packet), direction)

    def drop_vcm(self, data: bytes, direction: str) -> bool:
        """True if a drop-next fault takes this VCM control datagram (then counted and logged)."""
        return self.message_drops.armed and self._fault_drop(vcm_message(data), direction)

    def _fault_drop(self, name: str | None, direction: str) -> bool:
        left = self.message_drops.take(name, direction)
        if left is None:
            return False
        self.counters["fault_dropped"] += 1
        self.log.emit(time.time(), "fault_dropped", message=name, direction=direction, pending=left)
        return True

    def status(self) -> dict:
        return {
            "node": self.config.node,
            "role": self.config.role,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "addresses": _addresses(),
            "tun": {"name": self.config.tun_name, "mtu": self.config.tun_mtu,
                    "routes": self.config.tun_routes},
            "counters": {**self.counters, "tun_segments_merged": self.coalescer.merged},
            "ipsec": self.processor.status(),
            "recent_events": list(self.log.recent)[-20:],
            "faults": self.message_drops.status(),
        }


def error_text(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one line, at most ``limit`` characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _addresses() -> list[dict]:
    """The namespace's IPv6 addresses but loopback's, named as `ip` names them (one netlink dump)."""
    result = []
    for index, address, prefixlen, scope in ipv6_addresses():
        if scope == RT_SCOPE_HOST:
            continue
        try:
            interface = socket.if_indextoname(index)
        except OSError:   # gone since the dump
            continue
        result.append({"interface": interface, "address": f"{address}/{prefixlen}",
                       "scope": SCOPE_NAMES.get(scope, str(scope))})
    return result