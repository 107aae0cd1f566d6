"""Every role's shell, built from the lab's own node configurations, with all I/O replaced by fakes.

Theory of operation: ``lab_configs(variant)`` asks ``topologies.lab.SvpnLab`` for the node configurations
it would write for a lab (``_make_configs``, which needs no network: Mininet is never started). A
``ShellHarness`` then builds the node's real runtime from one of them (``runtime_class`` picks
``NodeRuntime`` or the mobility role: ``MobileNodeRuntime``, ``GatewayRuntime`` with the VCM in the SG or
as a host, ``HomeAgentRuntime`` for ``ha`` and ``xha``, ``VcmHostRuntime``, ``CorrespondentRuntime``) and
runs its real ``setup()``, but every name a shell uses to reach the kernel is swapped, at the module that
imported it, for a fake while the harness is working:

* no sockets: packet captures, the raw sender, the UDP port 4500 socket, the router advertisement and
  solicitation sockets, the netlink link monitor and the control server are in-memory fakes; what the node
  sends is recorded in ``sent`` as ``(packet, address)``;
* no TUN: the TUN is one end of a datagram socketpair (``os.read`` / ``os.write`` keep packet boundaries);
  ``tun_written()`` returns what the node wrote into it;
* no subprocesses: ``run_ip``, ``run_ip6_batch``, ``nft``, ``/proc/sys`` writes and the address/route
  queries are recorded in ``ip_commands`` instead;
* no real time: ``clock`` (``FakeClock``) is what ``time.monotonic()`` and ``time.time()`` return inside
  the shells, and the ``now`` the harness passes to handlers.

Feeding it (each call runs the role's real handler directly, so an exception reaches the test; the daemon
loop's catch is not in the way)::

    h = ShellHarness.for_node("sg", "private-vcm-in-sg")
    h.network(packet)                 # IPv6 packet(s) on the first outer interface -> on_network
    h.network(packet, interface="sg-lan")
    h.udp(esp, source, destination)   # ESP-in-UDP datagram(s) on port 4500 (labs with esp_encap="udp")
    h.tun(packet)                     # packet(s) the kernel routed into the TUN -> on_tun
    h.control({"cmd": "status"})      # on_control
    h.router_advertisement(message)   # MN: attachment.on_router_advertisement (HA: on_router_solicitation)
    h.beacon(packet)                  # MN: attachment.on_beacon (office announcements)
    h.netlink(data)                   # MN: attachment.on_link_change
    h.timer(0.5)                      # advance the clock, then on_timer if it is due
    h.handler_errors                  # the node's counter (0 unless something was caught)
    h.esp(sa_config, next_header, payload)   # a packet the SA's peer would send (valid ICV)
    h.close()

Packets that look like a peer's need the keys: ``inbound_sas()`` lists every inbound SA configuration of
the node (SPD SAs, mobility peers, tunnel peers, VCM SAs) and ``esp()``
seals with the peer's copy, sequence numbers counting up.
"""
from __future__ import annotations

import atexit
import shutil
import socket
import struct
import contextlib
import tempfile
from dataclasses import dataclass, field

from nodeapps import ipv6
from nodeapps.esp.sa import SecurityAssociation
from nodeapps.mobility import messages as mh
from nodeapps.runtime.config import NodeConfig, build_processor
from nodeapps.node import runtime_class

# Lab configurations the harness knows, by name: SvpnLab keyword arguments.
LAB_VARIANTS = {
    "private": {"addressing": "private"},
    "public": {"addressing": "public"},
    "private-mobility": {"addressing": "private", "mobility": True, "correspondent": True},
    "public-mobility": {"addressing": "public", "mobility": True, "route_optimisation": [("mn1", "mn2")]},
    "private-ro": {"addressing": "private", "mobility": True, "route_optimisation": [("mn1", "mn2")]},
    "private-vcm-in-sg": {"addressing": "private", "mobility": True, "vcm": "in-sg", "correspondent": True},
    "public-vcm-in-sg": {"addressing": "public", "mobility": True, "vcm": "in-sg"},
    "private-vcm-care-of": {"addressing": "private", "mobility": True, "vcm": "in-sg", "vcm_pair": "care-of"},
    "private-vcm-host": {"addressing": "private", "mobility": True, "vcm": "host"},
    "public-vcm-host-direct": {"addressing": "public", "mobility": True, "vcm": "host", "vcm_control": "direct"},
    "private-udp": {"addressing": "private", "mobility": True, "esp_encap": "udp"},
    "private-office": {"addressing": "private", "mobility": True, "attachments": ["office", "wlan1"]},
    "private-mesh": {"addressing": "private", "mobility": True, "mesh": True, "mobile_nodes": 3,
                     "attachments": ["wlan1", "wlan2", "office"]},
}

# Node configurations name files in a run directory; none is ever written there. One folder for the whole
# test session, removed at exit, and not named like a lab's (svpnlab-clean-net and leftover checks look
# for those).
_RUN_ROOT = tempfile.mkdtemp(prefix="shell-harness-")
atexit.register(shutil.rmtree, _RUN_ROOT, True)

ETHERNET_HEADER = bytes(6) + bytes.fromhex("02000000aa01") + b"\x86\xdd"
_IPV6_PKTINFO = 50
_IPV6_HOPLIMIT = 52


def lab_configs(variant: str, run_dir: str | None = None, **overrides) -> dict[str, dict]:
    """The node configurations ``SvpnLab(**LAB_VARIANTS[variant], **overrides)`` would start its nodes with."""
    from topologies.lab import SvpnLab
    lab = SvpnLab(**{**LAB_VARIANTS[variant], **overrides})
    lab.run_dir = run_dir or tempfile.mkdtemp(prefix="run-", dir=_RUN_ROOT)
    return lab._make_configs()


@contextlib.contextmanager
def harness_of(variant: str, node: str, **overrides):
    """(harness running ``node`` of the lab ``variant``, every node's configuration); closed afterwards."""
    configs = lab_configs(variant, **overrides)
    h = ShellHarness(configs[node])
    try:
        yield h, configs
    finally:
        h.close()


# ---- fakes ---------------------------------------------------------------------------------------------

class FakeClock:
    """Monotonic seconds (``now``) and a wall clock that moves with it."""

    WALL_OFFSET = 1_800_000_000.0

    def __init__(self, start: float = 1000.0):
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self.WALL_OFFSET


class _FakeTimeModule:
    def __init__(self, clock: FakeClock):
        self.monotonic = clock.monotonic
        self.time = clock.time

        def time_ns():
            return int(clock.time() * 1e9)
        self.time_ns = time_ns

    @staticmethod
    def sleep(_seconds):
        raise AssertionError("a shell must not sleep")


_fds = iter(range(10_000, 1 << 30))


class FakeSocket:
    """A non-blocking socket: ``recv``/``recvmsg`` pop what ``push`` queued (then BlockingIOError);
    ``sendto``/``sendmsg`` append to ``sent``."""

    def __init__(self, kind: str, name: str = "", sent: list | None = None):
        self.kind, self.name = kind, name
        self.queue: list = []
        self.sent = sent if sent is not None else []
        self.options: list = []
        self._fileno = next(_fds)
        self.closed = False

    def fileno(self) -> int:
        return self._fileno

    def push(self, item) -> None:
        self.queue.append(item)

    def recv(self, _size: int):
        if not self.queue:
            raise BlockingIOError
        return self.queue.pop(0)

    def recvmsg(self, _size: int, _ancsize: int = 0):
        if not self.queue:
            raise BlockingIOError
        return self.queue.pop(0)

    def sendto(self, data, address):
        self.sent.append((bytes(data), address))
        return len(data)

    def sendmsg(self, buffers, ancdata=(), flags=0, address=None):
        for buf in buffers:
            self.sent.append((bytes(buf), address))
        return sum(len(b) for b in buffers)

    def setsockopt(self, *args):
        self.options.append(args)

    def setblocking(self, _flag):
        pass

    def close(self):
        self.closed = True


class FakeEpoll:
    def __init__(self):
        self.registered: dict[int, int] = {}

    def register(self, fd, mask=0):
        self.registered[fd] = mask

    def unregister(self, fd):
        self.registered.pop(fd, None)

    def poll(self, timeout=None):
        return []

    def close(self):
        pass


class FakeControlServer:
    def __init__(self, path, handler, on_error=None):
        self.path, self.handler, self.on_error = path, handler, on_error
        self._fileno = next(_fds)

    def fileno(self):
        return self._fileno

    def on_readable(self):
        pass

    def close(self):
        pass


class _SocketModule:
    """``socket`` as the role modules see it: the real module, except interface indexes."""

    def __init__(self, indexes: dict[str, int]):
        self._indexes = indexes

    def if_nametoindex(self, name: str) -> int:
        return self._indexes.setdefault(name, len(self._indexes) + 2)

    def __getattr__(self, name):
        return getattr(socket, name)


@dataclass
class _Patch:
    target: object
    name: str
    value: object
    had: bool = False
    old: object = None


@dataclass
class _Io:
    """Everything the fakes recorded."""
    sent: list = field(default_factory=list)          # (packet, address) from every sending socket
    ip_commands: list = field(default_factory=list)   # ("ip", ...), ("ip-batch", ...), ("nft", ...), ("sysctl", ...)
    captures: dict = field(default_factory=dict)      # interface -> FakeSocket
    udp: FakeSocket | None = None
    ra: FakeSocket | None = None
    link_monitor: FakeSocket | None = None
    beacon: FakeSocket | None = None


# ---- the harness ---------------------------------------------------------------------------------------

class ShellHarness:
    def __init__(self, config: dict, *, clock: FakeClock | None = None, offload: bool = False,
                 addresses: list[str] | None = None):
        """Build and set up the runtime of ``config`` (a node configuration dict). ``offload``: the TUN
        speaks virtio-net headers; ``addresses``: the MN's global addresses at start (default: where the lab
        attached it, the local end of its tunnel SA)."""
        config = dict(config, event_log=None)
        config["tun"] = dict(config["tun"], offload=offload)
        self.config_dict = config
        self.config = NodeConfig.from_dict(config)
        self.clock = clock or FakeClock()
        self.io = _Io()
        self.indexes: dict[str, int] = {}
        if addresses is None and config["role"] == "mobile-node":
            addresses = [config["sas"][0]["local"]] if config["sas"] else []
        self._addresses = list(addresses or [])
        self._peer_sas: dict[tuple, SecurityAssociation] = {}
        self._tun_ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._tun_ours.setblocking(False)
        theirs.setblocking(False)
        self._tun_fd = theirs.detach()   # the runtime owns (and closes) it, like a TUN fd
        self._offload = offload
        self._patches = self._make_patches()
        processor = build_processor(self.config, now=self.clock.time)
        with self:
            self.runtime = runtime_class(self.config)(self.config, processor)
            self.runtime.epoll.close()
            self.runtime.epoll = FakeEpoll()
            self.runtime.setup()
        self._closed = False

    @classmethod
    def for_node(cls, node: str, variant: str, **kwargs) -> "ShellHarness":
        return cls(lab_configs(variant)[node], **kwargs)

    # ---- patching ----
    def _make_patches(self) -> list[_Patch]:
        from nodeapps.roles import (common, correspondent, home_agent, mn_attachment, mn_data_plane, mn_pairs,
                                    mobile_node, security_gateway, vcm_host)
        from nodeapps.runtime import daemon
        io, fake_time = self.io, _FakeTimeModule(self.clock)
        sockets = _SocketModule(self.indexes)

        def run_ip(*args):
            io.ip_commands.append(("ip", *args))
            return ""

        def run_ip6_batch(*commands):
            io.ip_commands.extend(("ip-batch", *c) for c in commands)
            return [""] * len(commands)

        def forget_path_mtu(destination, interface):
            io.ip_commands.append(("ip", "-6", "route", "flush", "cache", "to", destination, "dev", interface))
            return ""

        def open_capture(interface, next_headers, rcvbuf=0, host_only=True):
            sock = FakeSocket("capture", interface, io.sent)
            if host_only:
                io.captures.setdefault(interface, sock)
            else:
                io.beacon = sock
            return sock

        def open_udp_encap(port, *args, **kwargs):
            io.udp = FakeSocket("udp", str(port), io.sent)
            return io.udp

        def open_ra_socket(icmp_type=134):
            io.ra = FakeSocket("icmpv6", str(icmp_type), io.sent)
            return io.ra

        def open_link_monitor(addresses=False):
            io.link_monitor = FakeSocket("netlink", "", io.sent)
            return io.link_monitor

        def send_na(interface, target, mac, count=2):
            io.ip_commands.append(("na", interface, target))
            return ""

        def send_rs(interface):
            io.ip_commands.append(("rs", interface))
            return ""

        class _Nft:
            @staticmethod
            def install(owned, mobility=False):
                io.ip_commands.append(("nft", "install", tuple(owned), mobility))

            @staticmethod
            def remove():
                io.ip_commands.append(("nft", "remove"))

        class _ProcSys:
            def __init__(self, path, mode="r", **_kwargs):
                if not str(path).startswith("/proc/sys/"):
                    raise AssertionError(f"a shell opened {path!r}")
                self.path = path

            def write(self, text):
                io.ip_commands.append(("sysctl", self.path, text))

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        def open_tun(name, offload=True):
            return self._tun_fd, self._offload and offload

        patches = [
            (daemon, "nft", _Nft), (daemon, "open_tun", open_tun), (daemon, "configure_tun", lambda *a: None),
            (daemon, "open_sender", lambda *a, **k: FakeSocket("sender", "raw", io.sent)),
            (daemon, "open_capture", open_capture), (daemon, "open_udp_encap", open_udp_encap),
            (daemon, "ControlServer", FakeControlServer), (daemon, "time", fake_time),
            (daemon, "_addresses", lambda: [{"interface": "fake", "address": a} for a in self._addresses]),
            (common, "time", fake_time),
        ]
        for module in (mobile_node, mn_attachment, mn_data_plane, mn_pairs, home_agent, security_gateway, vcm_host,
                       correspondent):
            patches.append((module, "time", fake_time))
            for name, value in (("run_ip", run_ip), ("run_ip6_batch", run_ip6_batch),
                                ("forget_path_mtu", forget_path_mtu),
                                ("interface_mac", lambda interface: "02:00:00:00:aa:01"),
                                ("open_router_advertisement_socket", open_ra_socket),
                                ("send_unsolicited_na", send_na), ("socket", sockets)):
                if hasattr(module, name):
                    patches.append((module, name, value))
        patches += [
            (mn_attachment, "open_link_monitor", open_link_monitor), (mn_attachment, "open_capture", open_capture),
            (mn_pairs, "open_sender", lambda *a, **k: FakeSocket("sender", "bound", io.sent)),
            (mn_attachment, "send_router_solicitation", send_rs),
            (mobile_node, "_global_addresses", lambda interface: list(self._addresses)),
            (mobile_node, "_default_router", lambda interface: "fe80::1"),
            (home_agent, "open", _ProcSys),
        ]
        return [_Patch(target, name, value) for target, name, value in patches]

    def __enter__(self):
        for p in self._patches:
            p.had = p.name in vars(p.target)
            p.old = vars(p.target).get(p.name)
            setattr(p.target, p.name, p.value)
        return self

    def __exit__(self, *exc):
        for p in reversed(self._patches):
            if p.had:
                setattr(p.target, p.name, p.old)
            else:
                delattr(p.target, p.name)
        return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self:
            self.runtime.close()
        self._tun_ours.close()

    # ---- what the node did ----
    @property
    def counters(self) -> dict:
        return self.runtime.counters

    @property
    def handler_errors(self) -> int:
        return self.runtime.counters.get("handler_errors", 0)

    @property
    def sent(self) -> list:
        return self.io.sent

    @property
    def ip_commands(self) -> list:
        return self.io.ip_commands

    def events(self, name: str | None = None) -> list[dict]:
        return [e for e in self.runtime.log.recent if name is None or e["event"] == name]

    def tun_written(self) -> list[bytes]:
        """Packets written into the TUN since the last call (virtio-net header kept when offloads are on)."""
        out = []
        while True:
            try:
                out.append(self._tun_ours.recv(1 << 17))
            except BlockingIOError:
                return out

    # ---- inputs ----
    def network(self, *packets: bytes, interface: str | None = None) -> None:
        """IPv6 packets arriving on an outer interface (default: the first), then ``on_network``."""
        sock = self.io.captures[interface or self.config.outer_interfaces[0]]
        for packet in packets:
            sock.push(ETHERNET_HEADER + bytes(packet))
        with self:
            self.runtime.on_network(sock, self.clock.now)

    def udp(self, *datagrams: bytes, source: str, destination: str, segment_size: int = 0) -> None:
        """UDP payloads arriving on port 4500 (one recvmsg each), then ``on_network`` of that socket."""
        sock = self.io.udp
        if sock is None:
            raise AssertionError("this node has no ESP-in-UDP socket (lab option esp_encap='udp')")
        from nodeapps.runtime.packet_io import IPV6_PKTINFO, SOL_UDP, UDP_GRO
        for data in datagrams:
            ancdata = [(socket.IPPROTO_IPV6, IPV6_PKTINFO, ipv6.pton(destination) + bytes(4))]
            if segment_size:
                ancdata.append((SOL_UDP, UDP_GRO, struct.pack("=i", segment_size)))
            sock.push((bytes(data), ancdata, 0, (source, 4500, 0, 0)))
        with self:
            self.runtime.on_network(sock, self.clock.now)

    def tun(self, *packets: bytes) -> None:
        """Packets the kernel routed into the TUN, then ``on_tun``."""
        for packet in packets:
            self._tun_ours.send(bytes(packet))
        with self:
            self.runtime.on_tun(self.clock.now)

    def control(self, request: dict) -> dict:
        with self:
            return self.runtime.on_control(request)

    def router_advertisement(self, *messages: bytes, source: str = "fe80::1", interface: str | None = None,
                             hop_limit: int | None = 255) -> None:
        """ICMPv6 messages on the node's RA socket (MN: RAs; office HA: RSs) from ``source`` received on
        ``interface`` (default: the node's own) with IP ``hop_limit`` (None: no such control message),
        then the handler."""
        sock = self.io.ra
        if sock is None:
            raise AssertionError("this node has no router advertisement socket")
        ifindex = _SocketModule(self.indexes).if_nametoindex(interface or self.runtime.section["interface"])
        for message in messages:
            ancdata = [(socket.IPPROTO_IPV6, _IPV6_PKTINFO, ipv6.pton("fe80::2") + struct.pack("I", ifindex))]
            if hop_limit is not None:
                ancdata.append((socket.IPPROTO_IPV6, _IPV6_HOPLIMIT, struct.pack("i", hop_limit)))
            sock.push((bytes(message), ancdata, 0, (source, 0, 0, ifindex)))
        attachment = getattr(self.runtime, "attachment", None)
        handler = attachment.on_router_advertisement if attachment else self.runtime.on_router_solicitation
        with self:
            handler(self.clock.now)

    def beacon(self, *packets: bytes) -> None:
        """Multicast ESP frames on the MN's link (office announcements), then ``attachment.on_beacon``."""
        for packet in packets:
            self.io.beacon.push(ETHERNET_HEADER + bytes(packet))
        with self:
            self.runtime.attachment.on_beacon(self.clock.now)

    def netlink(self, *datagrams: bytes) -> None:
        for data in datagrams:
            self.io.link_monitor.push(bytes(data))
        with self:
            self.runtime.attachment.on_link_change(self.clock.now)

    def timer(self, advance: float = 0.0) -> bool:
        """Advance the clock; run ``on_timer`` if the node's timer is due. True if it ran."""
        self.clock.advance(advance)
        with self:
            deadline = self.runtime.next_timer()
            if deadline is not None and deadline <= self.clock.now:
                self.runtime.on_timer(self.clock.now)
                return True
        return False

    # ---- packets a peer would send ----
    def inbound_sas(self) -> list[dict]:
        """Every inbound SA configuration in the node's configuration, wherever it sits."""
        found = []

        def walk(value):
            if isinstance(value, dict):
                if value.get("direction") == "in" and {"spi", "key", "salt", "mode"} <= set(value):
                    found.append(value)
                    return
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)
        walk(self.config_dict)
        unique = {}
        for sa in found:
            unique.setdefault((sa["spi"], sa["name"]), sa)
        return list(unique.values())

    def esp(self, sa_config: dict, next_header: int, payload: bytes, *, src: str | bytes | None = None,
            dst: str | bytes | None = None, home_address: str | bytes | None = None) -> bytes:
        """IPv6 + ESP as the SA's peer sends it: sealed with the same key, the next sequence number,
        from the SA's remote end (or ``src``) to its local end (or ``dst``); with ``home_address``, a Home
        Address option ahead of the ESP header (a mobile node's BU, RFC 3776 §3.1)."""
        key = (sa_config["spi"], sa_config["name"])
        peer = self._peer_sas.get(key)
        if peer is None:
            peer = SecurityAssociation.from_config({**sa_config, "direction": "out", "local": sa_config["remote"],
                                                    "remote": sa_config["local"]})
            self._peer_sas[key] = peer
        body = peer.seal(next_header, bytes(payload))
        source = _packed(src) if src is not None else ipv6.pton(sa_config["remote"])
        target = _packed(dst) if dst is not None else ipv6.pton(sa_config["local"])
        if home_address is not None:
            body = mh.encode_home_address_destopts(ipv6.NH_ESP, _packed(home_address)) + body
            return ipv6.build_header(source, target, ipv6.NH_DSTOPTS, len(body)) + body
        return ipv6.build_header(source, target, ipv6.NH_ESP, len(body)) + body

    # ---- addresses ----
    def own_addresses(self) -> list[bytes]:
        """Addresses packets to this node arrive at: its mobility address, SG local addresses, SA ends."""
        out = []
        section = self.config.mobility or {}
        for text in [section.get("address")] + list(section.get("local_addresses", [])):
            if text:
                out.append(ipv6.pton(text))
        for sa in self.inbound_sas():
            if sa["local"] != "ff02::1":
                out.append(ipv6.pton(sa["local"]))
        for text in self._addresses:
            out.append(ipv6.pton(text))
        return list(dict.fromkeys(out))


def _packed(address) -> bytes:
    return address if isinstance(address, bytes) else ipv6.pton(address)


# Every (variant, node) whose shell the fuzz suite drives: each role, both plans, VCM in the SG and as a
# host, the external HA and the correspondent.
ROLE_CASES = [
    ("private", "mn1"), ("private", "sg"),
    ("public", "sg"),
    ("private-mobility", "mn1"), ("private-mobility", "sg"), ("private-mobility", "ha"),
    ("private-mobility", "xha"), ("private-mobility", "cn"),
    ("public-mobility", "mn1"), ("public-mobility", "sg"), ("public-mobility", "ha"),
    ("private-vcm-in-sg", "mn1"), ("private-vcm-in-sg", "sg"),
    ("public-vcm-in-sg", "mn2"), ("public-vcm-in-sg", "sg"),
    ("private-vcm-care-of", "mn1"), ("private-vcm-care-of", "sg"),
    ("private-vcm-host", "mn1"), ("private-vcm-host", "sg"), ("private-vcm-host", "vcm"),
    ("public-vcm-host-direct", "mn1"), ("public-vcm-host-direct", "sg"), ("public-vcm-host-direct", "vcm"),
    ("private-udp", "mn1"), ("private-udp", "sg"),
    ("private-office", "mn1"),
    ("private-mesh", "mn1"), ("private-mesh", "sg"),
]
