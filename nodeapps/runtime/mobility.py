"""Runtime pieces the mobility roles share: router advertisements, neighbour advertisements, per-peer
ESP transport processors for Mobility Header messages and SA endpoint moves (the office announcement is
``nodeapps.mobility.announcement``; netlink, address and route changes are ``nodeapps.runtime.netlink``).

Parsers here are pure functions (tested without root); the socket helpers are thin.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from nodeapps import ipv6
from nodeapps.esp.processor import IPsecProcessor
from nodeapps.esp.sa import SecurityAssociation
from nodeapps.esp.sad import SAD
from nodeapps.esp.spd import SPD
from nodeapps.mobility import messages as mh
from nodeapps.runtime import sequences
from nodeapps.runtime.netlink import RT_SCOPE_UNIVERSE, AddressChange
from nodeapps.mobility.router_discovery import hop_limit_from_ancillary

ICMPV6_RA = 134
ICMPV6_RS = 133
ICMPV6_NA = 136
_ICMP6_FILTER = 1
_IPV6_RECVPKTINFO = 49
_IPV6_PKTINFO = 50
_IPV6_RECVHOPLIMIT = 51
_IPV6_UNICAST_HOPS = 16
_IPV6_MULTICAST_HOPS = 18
_IPV6_MULTICAST_IF = 17
RA_FIXED_LEN = 16
OPT_PREFIX_INFO = 3
OPT_ADV_INTERVAL = 7
class RouterAdvertisementError(ValueError):
    """An ICMPv6 message that is not a usable router advertisement."""


@dataclass(frozen=True)
class RouterAdvertisement:
    router: str                      # source (link-local) address
    router_lifetime: int             # seconds
    prefixes: tuple                  # ((prefix text "2001:db8:21::/64", autonomous flag), ...)
    interval_ms: int | None          # Advertisement Interval option (RFC 6275 §7.3)


def parse_router_advertisement(message: bytes, source: str) -> RouterAdvertisement:
    """RFC 4861 §4.2 / §4.6.2 (prefix information) and RFC 6275 §7.3 (advertisement interval)."""
    if len(message) < RA_FIXED_LEN or message[0] != ICMPV6_RA or message[1] != 0:
        raise RouterAdvertisementError("not a router advertisement")
    lifetime = struct.unpack_from("!H", message, 6)[0]
    prefixes, interval = [], None
    pos = RA_FIXED_LEN
    while pos < len(message):
        if pos + 2 > len(message):
            raise RouterAdvertisementError("truncated option")
        kind, units = message[pos], message[pos + 1]
        if units == 0:  # RFC 4861 §4.6: length 0 is invalid, the whole message is dropped
            raise RouterAdvertisementError("option of length 0")
        end = pos + 8 * units
        if end > len(message):
            raise RouterAdvertisementError("option runs past the message")
        if kind == OPT_PREFIX_INFO and units == 4:
            plen, flags = message[pos + 2], message[pos + 3]
            if plen <= 128:
                network = ipaddress.IPv6Network((message[pos + 16:pos + 32], plen), strict=False)
                prefixes.append((str(network), bool(flags & 0x40)))
        elif kind == OPT_ADV_INTERVAL and units == 1:
            interval = struct.unpack_from("!I", message, pos + 4)[0]
        pos = end
    return RouterAdvertisement(source, lifetime, tuple(prefixes), interval)


def address_hint(change: AddressChange, *, ifindex: int, host_id: int, home: str, care_of: str | None,
                 prefix: str | None) -> tuple[str, str | None]:
    """What an address change on the node's interfaces means for movement detection:
    ("candidate", prefix) — a usable global address in a prefix other than the current one appeared (made by
    the kernel's SLAAC, DHCPv6 or an operator): the link may have changed; ("lost", None) — our care-of
    address was removed; ("ignore", None) otherwise. The addresses the node makes itself (its home address
    and its host id in any prefix) are ignored, so its own changes cannot feed back into detection."""
    if change.ifindex != ifindex or change.scope != RT_SCOPE_UNIVERSE:
        return "ignore", None
    address = ipaddress.IPv6Address(change.address)
    if not change.added:
        if care_of is not None and address == ipaddress.IPv6Address(care_of):
            return "lost", None
        return "ignore", None
    if not change.usable or address == ipaddress.IPv6Address(home) or int(address) & ((1 << 64) - 1) == host_id:
        return "ignore", None
    network = ipaddress.IPv6Network((address, 64), strict=False)  # the lab's links are /64 (RFC 4291 §2.5.1)
    if prefix is not None and network == ipaddress.IPv6Network(prefix):
        return "ignore", None
    return "candidate", str(network)


def router_solicitation() -> bytes:
    """RFC 4861 §4.1, without a source link-layer address option (allowed from any source, including the
    unspecified one while the link-local address is not back yet). Checksum left 0: the kernel fills it."""
    return struct.pack("!BBHI", ICMPV6_RS, 0, 0, 0)


def send_router_solicitation(interface: str) -> str:
    """One RS to all-routers on ``interface``; the error text, or "" when sent."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        ifindex = socket.if_nametoindex(interface)
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_HOPS, 255)  # RFC 4861 §6.1.1
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_IF, ifindex)
        sock.sendto(router_solicitation(), ("ff02::2", 0, 0, ifindex))
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        sock.close()
    return ""


def care_of_address(prefix: str, host_id: int) -> str:
    """The node's address in ``prefix``: the same host id in every network (no DAD needed: the lab
    guarantees ids are unique; RFC 4862 §5.4 allows skipping DAD when DupAddrDetectTransmits is 0)."""
    network = ipaddress.IPv6Network(prefix)
    return str(network.network_address + host_id)


def open_router_advertisement_socket(icmp_type: int = ICMPV6_RA) -> socket.socket:
    """Raw ICMPv6 socket that receives only router advertisements (the kernel copies them to raw
    sockets even with accept_ra=0), or only ``icmp_type``, with the receiving interface in IPV6_PKTINFO."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    words = [0xFFFFFFFF] * 8
    words[icmp_type >> 5] &= ~(1 << (icmp_type & 31))  # RFC 3542 §3.2: a set bit blocks the type
    sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("8I", *words))
    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVHOPLIMIT, 1)   # RFC 4861 §6.1.2 wants the hop limit
    sock.setblocking(False)
    return sock


def receive_router_advertisement(sock: socket.socket):
    """(message, source address, interface index, IP hop limit or None) for one waiting message."""
    data, ancdata, _flags, address = sock.recvmsg(2048, 256)
    ifindex = 0
    for level, kind, value in ancdata:
        if level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(value) >= 20:
            ifindex = struct.unpack_from("I", value, 16)[0]
    return data, address[0].split("%")[0], ifindex, hop_limit_from_ancillary(ancdata)


def neighbour_advertisement(target: str, mac: str) -> bytes:
    """Unsolicited NA (RFC 4861 §4.4, §7.2.6) with the Override flag, target ``target``, our link-layer
    address: what a home agent sends when it starts defending an away node's home address (RFC 6275
    §10.4.1) and what the node sends when it is back (§11.5.4). Checksum left 0: the kernel fills it."""
    flags = 0x20000000  # Override
    option = bytes((2, 1)) + bytes.fromhex(mac.replace(":", ""))
    return struct.pack("!BBHI", ICMPV6_NA, 0, 0, flags) + ipv6.pton(target) + option


def send_unsolicited_na(interface: str, target: str, mac: str, count: int = 2) -> str:
    """Send it ``count`` times; the error text, or "" when sent."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        ifindex = socket.if_nametoindex(interface)
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_HOPS, 255)  # RFC 4861 §7.1.2
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_IF, ifindex)
        message = neighbour_advertisement(target, mac)
        for _ in range(count):
            sock.sendto(message, ("ff02::1", 0, 0, ifindex))
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        sock.close()
    return ""


def interface_mac(interface: str) -> str:
    with open(f"/sys/class/net/{interface}/address", encoding="ascii") as f:
        return f.read().strip()


# ---- ESP for Mobility Header messages (RFC 3776) -------------------------------------------------------

class TransportPeer:
    """The ESP transport-mode SA pair with one mobility peer, as its own small processor: everything to the
    peer that the shell marks ESP_TRANSPORT is sealed with ``out``, everything in with ``in`` is opened.
    Which peer a packet belongs to is decided by the caller (by address or SPI), so the SPD is one rule."""

    def __init__(self, address: str, out_config: dict, in_config: dict):
        self.address = ipv6.pton(address)
        self.out_sa = SecurityAssociation.from_config(out_config)
        self.in_sa = SecurityAssociation.from_config(in_config)
        sequences.track(self.out_sa, self.in_sa)
        spd = SPD([{"direction": "out", "src": "::/0", "dst": "::/0", "action": "protect", "sa": self.out_sa.name},
                   {"direction": "in", "src": "::/0", "dst": "::/0", "action": "protect", "sa": self.in_sa.name}])
        self.sad = SAD([self.out_sa, self.in_sa])
        self.processor = IPsecProcessor(spd, self.sad)

    def seal(self, packet: bytes) -> bytes | None:
        verdict, _sa, out = self.processor.outbound(packet)
        return out if verdict == "protect" else None

    def open(self, packet: bytes) -> bytes | None:
        verdict, _sa, inner = self.processor.inbound(packet)
        return inner if verdict == "accept" else None


class TunnelPeer(TransportPeer):
    """An ESP tunnel-mode SA pair with one peer for the messages RFC 3776 §3.1 wants tunnelled between MN
    and HA (HoTI / HoT): ``seal(inner)`` wraps a whole packet (outer addresses from the SA, which the shell
    moves with the care-of address), ``open(packet)`` returns the inner packet. The mode is the SAs'."""

    def move(self, *, local: str | None = None, remote: str | None = None) -> None:
        """Follow the mobile node: the outbound SA's outer addresses (and the inbound SA's SAD key)."""
        move_sa(self.sad, self.out_sa.name, local=local, remote=remote)
        move_sa(self.sad, self.in_sa.name, local=local, remote=remote)


def esp_spi(packet: bytes) -> int | None:
    """SPI of the ESP header of a packet (after any extension headers), or None without ESP."""
    try:
        _hao, _rh2, upper, offset = mh.packet_summary(packet)
    except mh.MobilityParseError:
        return None
    if upper != ipv6.NH_ESP or offset + 8 > len(packet):
        return None
    return int.from_bytes(packet[offset:offset + 4], "big")


def move_sa(sad: SAD, name: str, *, local: str | None = None, remote: str | None = None) -> bool:
    """Change an installed SA's endpoint addresses, keeping its keys, sequence number and replay window
    (the MN–SG tunnel follows the node, issue item 5). Re-indexed in the SAD. False if not installed."""
    sa = sad.get(name)
    if sa is None:
        return False
    sad.remove(sa)
    if local is not None:
        sa.local_bytes = ipv6.pton(local)
        sa.local = str(ipaddress.IPv6Address(sa.local_bytes))
    if remote is not None:
        sa.remote_bytes = ipv6.pton(remote)
        sa.remote = str(ipaddress.IPv6Address(sa.remote_bytes))
    sad.add(sa)
    return True
