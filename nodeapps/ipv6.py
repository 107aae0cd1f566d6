"""IPv6 packet helpers shared by every core: header build/parse, extension-header walk, checksums.

Pure functions over ``bytes``; addresses are 16-byte strings on the hot path and text only at the edges.
"""
from __future__ import annotations

import ipaddress
import struct

# Next Header values (IANA "Assigned Internet Protocol Numbers").
NH_HOPOPTS = 0
NH_TCP = 6
NH_UDP = 17
NH_IPV6 = 41
NH_ROUTING = 43
NH_FRAGMENT = 44
NH_ESP = 50
NH_AH = 51
NH_ICMPV6 = 58
NH_NONE = 59
NH_DSTOPTS = 60
NH_MOBILITY = 135

HEADER_LEN = 40
_HEADER = struct.Struct("!IHBB16s16s")
# Headers that use the generic (next header, length in 8-octet units minus one) layout. RFC 8200 §4.
_GENERIC_EXT = frozenset({NH_HOPOPTS, NH_ROUTING, NH_DSTOPTS, NH_MOBILITY})
_PORT_PROTOCOLS = frozenset({NH_TCP, NH_UDP, 132})


class ParseError(ValueError):
    """A packet (from the network or a TUN device) that is not well formed."""


def pton(text: str) -> bytes:
    """Text IPv6 address to its 16 bytes."""
    return ipaddress.IPv6Address(text).packed


def ntop(packed: bytes) -> str:
    """16 bytes to compressed text."""
    return str(ipaddress.IPv6Address(packed))


def build_header(src: bytes, dst: bytes, next_header: int, payload_len: int, *, hop_limit: int = 64,
                 traffic_class: int = 0, flow_label: int = 0) -> bytes:
    """A 40-byte IPv6 header. RFC 8200 §3."""
    first_word = (6 << 28) | (traffic_class << 20) | flow_label
    return _HEADER.pack(first_word, payload_len, next_header, hop_limit, src, dst)


def parse_header(packet: bytes) -> tuple[int, bytes, bytes, int]:
    """(next header, source, destination, payload length) of an IPv6 packet, checked for size."""
    if len(packet) < HEADER_LEN or packet[0] >> 4 != 6:
        raise ParseError("not an IPv6 packet")
    payload_len = (packet[4] << 8) | packet[5]
    if HEADER_LEN + payload_len > len(packet):
        raise ParseError("IPv6 payload length exceeds packet")
    return packet[6], packet[8:24], packet[24:40], payload_len


def extension_headers(packet: bytes, start: int = HEADER_LEN, next_header: int | None = None):
    """Yield (header type, offset, length) for each extension header, then (upper type, offset, None).

    Stops at ESP, which hides what follows. RFC 8200 §4.1 order is not enforced here.
    """
    nh = packet[6] if next_header is None else next_header
    offset = start
    end = len(packet)
    while True:
        if nh in _GENERIC_EXT and nh != NH_MOBILITY:
            if offset + 2 > end:
                raise ParseError("truncated extension header")
            length = (packet[offset + 1] + 1) * 8
            if offset + length > end:
                raise ParseError("extension header runs past packet end")
            yield nh, offset, length
            nh = packet[offset]
            offset += length
        elif nh == NH_FRAGMENT:
            if offset + 8 > end:
                raise ParseError("truncated fragment header")
            yield nh, offset, 8
            nh = packet[offset]
            offset += 8
        elif nh == NH_AH:
            if offset + 2 > end:
                raise ParseError("truncated AH")
            length = (packet[offset + 1] + 2) * 4  # RFC 4302 §2.2: 32-bit words minus 2
            if offset + length > end:
                raise ParseError("AH runs past packet end")
            yield nh, offset, length
            nh = packet[offset]
            offset += length
        else:
            yield nh, offset, None
            return


def upper_layer(packet: bytes) -> tuple[int, int]:
    """(protocol, offset) of the upper-layer header (or ESP / No Next Header)."""
    for nh, offset, length in extension_headers(packet):
        if length is None:
            return nh, offset
    raise AssertionError("unreachable")


def ports(packet: bytes, protocol: int, offset: int) -> tuple[int, int] | None:
    """(source port, destination port) for TCP/UDP/SCTP, else None."""
    if protocol in _PORT_PROTOCOLS and offset + 4 <= len(packet):
        return (packet[offset] << 8) | packet[offset + 1], (packet[offset + 2] << 8) | packet[offset + 3]
    return None


def checksum(src: bytes, dst: bytes, next_header: int, upper: bytes) -> int:
    """Internet checksum over the IPv6 pseudo-header and an upper-layer message. RFC 8200 §8.1."""
    data = src + dst + struct.pack("!II", len(upper), next_header) + upper
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF or 0xFFFF


def address_in_prefixes(address: bytes, prefixes) -> bool:
    """Whether a 16-byte address lies in any of ``prefixes`` (``ipaddress.IPv6Network``s), e.g. the VPN
    prefixes an inbound policy check (RFC 4301 §5.2) guards."""
    if len(address) != 16:
        return False
    value = ipaddress.IPv6Address(address)
    return any(value in prefix for prefix in prefixes)


MIN_MTU = 1280   # RFC 8200 §5
ICMPV6_PACKET_TOO_BIG = 2


def packet_too_big(invoking: bytes, mtu: int, src: bytes) -> bytes:
    """An ICMPv6 Packet Too Big (RFC 4443 §3.2) from ``src`` to the source of ``invoking``, carrying as much
    of it as fits in the minimum MTU (§2.4(c))."""
    body = invoking[:MIN_MTU - HEADER_LEN - 8]
    dst = invoking[8:24]
    message = struct.pack("!BBHI", ICMPV6_PACKET_TOO_BIG, 0, 0, mtu) + body
    message = message[:2] + struct.pack("!H", checksum(src, dst, NH_ICMPV6, message)) + message[4:]
    return build_header(src, dst, NH_ICMPV6, len(message), hop_limit=255) + message
