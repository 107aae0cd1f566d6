"""UDP encapsulation of ESP (RFC 3948), pure functions over bytes.

An SA configured with ``"encap": "udp"`` sends its ESP packets as the payload of UDP datagrams between
port 4500 on both ends, instead of directly after the IPv6 header (next header 50):

    native:  | IPv6 (nh 50) | ESP ... |
    encap:   | IPv6 (nh 17) | UDP 4500 -> 4500 | ESP ... |

RFC 3948 was made for NAT traversal; here it serves a userspace ESP: the runtime sends the datagrams from
a UDP socket with UDP segmentation offload (one send for a whole TCP super-packet's worth of equal-size
ESP packets) and receives them with UDP GRO, so the kernel carries them across every hop as one large
buffer instead of one wire-sized packet at a time. On the wire they stay ordinary, separately
checksummed datagrams that any ESP-in-UDP peer (and tshark) reads.

Receive rules (RFC 3948 §2.2, §4): a payload whose first four octets are zero is not ESP (the
"non-ESP marker" that precedes IKE messages on the same port); a single 0xFF octet is a NAT-keepalive;
anything else starts with the ESP header (SPI, never zero, RFC 4303 §2.1). :func:`classify` says which.
Decapsulation (RFC 3948 §3.2) removes the UDP header, sets the next header to 50 and fixes the payload
length; ESP processing then proceeds as for a native packet.

Only tunnel mode is encapsulated here: in transport mode the inner TCP/UDP checksum fix-ups of RFC 3948
§3.1.2 are for NATs this lab does not have, and the Mobility Header SAs stay native.
"""
from __future__ import annotations

import struct

from ..ipv6 import HEADER_LEN, NH_ESP, NH_UDP, ParseError

PORT = 4500                 # RFC 3948 §2: the IKE NAT-traversal port
UDP_HEADER_LEN = 8
NON_ESP_MARKER = b"\0\0\0\0"  # RFC 3948 §2.2
KEEPALIVE = b"\xff"          # RFC 3948 §2.3
# Octets encapsulation adds to every ESP packet: size inner MTUs with this.
OVERHEAD = UDP_HEADER_LEN
ENCAPS = ("udp",)

ESP, NON_ESP, KEEPALIVE_KIND, INVALID = "esp", "non-esp", "keepalive", "invalid"

_UDP = struct.Struct("!HHHH")
_IPV6 = struct.Struct("!IHBB16s16s")


class EncapError(ParseError):
    """A packet that cannot be UDP-encapsulated or decapsulated."""


def classify(payload) -> str:
    """What a UDP/4500 payload carries (RFC 3948 §2.2, §2.3)."""
    if len(payload) == 1 and payload[0] == 0xFF:
        return KEEPALIVE_KIND
    if len(payload) < 8:  # RFC 3948 §2.2: an ESP header is at least SPI + sequence number
        return INVALID
    if payload[:4] == NON_ESP_MARKER:
        return NON_ESP
    return ESP


def _ones_sum(data) -> int:
    if len(data) & 1:
        data = bytes(data) + b"\0"
    return int.from_bytes(data, "big") % 0xFFFF


def udp_checksum(src: bytes, dst: bytes, udp: bytes) -> int:
    """UDP checksum over the IPv6 pseudo-header (RFC 8200 §8.1); 0 is sent as 0xFFFF (RFC 768), because
    IPv6 forbids a zero UDP checksum (RFC 3948 §2.1 allows one only over IPv4)."""
    total = (_ones_sum(src) + _ones_sum(dst) + len(udp) + NH_UDP + _ones_sum(udp)) % 0xFFFF
    return (~total) & 0xFFFF or 0xFFFF


def encapsulate(packet: bytes, sport: int = PORT, dport: int = PORT) -> bytes:
    """Native ESP packet (ESP directly after the IPv6 header) -> the same ESP inside UDP (RFC 3948 §3.1.1)."""
    if len(packet) < HEADER_LEN or packet[0] >> 4 != 6:
        raise EncapError("not an IPv6 packet")
    if packet[6] != NH_ESP:
        raise EncapError(f"next header {packet[6]} is not ESP directly after the IPv6 header")
    esp = packet[HEADER_LEN:]
    udp_len = UDP_HEADER_LEN + len(esp)
    if udp_len > 0xFFFF:
        raise EncapError("ESP packet too large for UDP")
    src, dst = packet[8:24], packet[24:40]
    header = _UDP.pack(sport, dport, udp_len, 0)
    check = udp_checksum(src, dst, header + esp)
    return (packet[:4] + udp_len.to_bytes(2, "big") + bytes((NH_UDP,)) + packet[7:HEADER_LEN]
            + _UDP.pack(sport, dport, udp_len, check) + esp)


def decapsulate(packet: bytes, port: int = PORT) -> bytes | None:
    """IPv6 + UDP (to ``port``) + ESP -> the native ESP packet (RFC 3948 §3.2); None for a keepalive or
    a non-ESP-marked payload (not ours). EncapError for anything else that is not well formed."""
    if len(packet) < HEADER_LEN + UDP_HEADER_LEN or packet[0] >> 4 != 6 or packet[6] != NH_UDP:
        raise EncapError("not UDP directly after an IPv6 header")
    _sport, dport, udp_len, check = _UDP.unpack_from(packet, HEADER_LEN)
    end = HEADER_LEN + ((packet[4] << 8) | packet[5])
    if end > len(packet) or udp_len != end - HEADER_LEN or udp_len < UDP_HEADER_LEN:
        raise EncapError("UDP length does not match the IPv6 payload length")
    if dport != port:
        raise EncapError(f"UDP destination port {dport} is not {port}")
    udp = packet[HEADER_LEN:end]
    # RFC 8200 §8.1: a zero checksum is invalid over IPv6; otherwise the sum over everything is zero.
    if check == 0 or (_ones_sum(packet[8:40]) + udp_len + NH_UDP + _ones_sum(udp)) % 0xFFFF != 0:
        raise EncapError("bad UDP checksum")
    payload = udp[UDP_HEADER_LEN:]
    kind = classify(payload)
    if kind in (KEEPALIVE_KIND, NON_ESP):
        return None
    if kind == INVALID:
        raise EncapError(f"UDP payload of {len(payload)} octets is neither ESP nor a keepalive")
    return native(packet[8:24], packet[24:40], payload, hop_limit=packet[7], first_word=packet[:4])


def native(src: bytes, dst: bytes, esp, hop_limit: int = 64, first_word: bytes | None = None) -> bytes:
    """The native ESP packet for an ESP payload that arrived in UDP from ``src`` to ``dst``
    (RFC 3948 §3.2: UDP header removed, next header 50, payload length adjusted)."""
    word = 0x60000000 if first_word is None else int.from_bytes(first_word, "big")
    return _IPV6.pack(word, len(esp), NH_ESP, hop_limit, src, dst) + bytes(esp)


def segments(data, gso_size: int):
    """The datagrams of one UDP GRO read: ``gso_size`` octets each, the last possibly shorter
    (udp(7) UDP_GRO); the whole buffer when the kernel did not coalesce."""
    if gso_size <= 0 or gso_size >= len(data):
        return [data]
    view = memoryview(data)
    return [view[i:i + gso_size] for i in range(0, len(data), gso_size)]


def batches(sizes: list[int], max_segments: int, max_bytes: int = 0xFFFF - UDP_HEADER_LEN):
    """Split consecutive datagram sizes into UDP GSO sends: (start, end) index pairs such that within a
    send every datagram but the last has the first one's size and the last is no longer (udp(7)
    UDP_SEGMENT), at most ``max_segments`` datagrams and ``max_bytes`` octets."""
    out, i, n = [], 0, len(sizes)
    while i < n:
        size, j, total = sizes[i], i + 1, sizes[i]
        while j < n and j - i < max_segments and total + sizes[j] <= max_bytes:
            if sizes[j] > size:
                break
            total += sizes[j]
            j += 1
            if sizes[j - 1] < size:
                break  # a shorter one ends the send
        out.append((i, j))
        i = j
    return out
