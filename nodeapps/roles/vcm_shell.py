"""Glue between the VCM cores (``nodeapps.vcm``) and the node shells: UDP framing of control datagrams
inside the MN–SG tunnel SAs, the care-of address notice the SG sends to peers, and what a node logs
about a control message.

Control datagrams (VCM built into the SG, issue item 5) are UDP between the MN's home address and the SG's
inner (office) address, port 7420, protected by the MN's existing tunnel SA pair with the SG: the SG's SPD
holds, per MN, one rule each way naming exactly those two addresses and UDP, so the SA a datagram arrived
on proves which MN sent it (RFC 4301 §5.2 inbound policy check).

Care-of notice (port 7421): the direct MN–MN tunnel SAs have the MNs' care-of addresses as outer ends, and
the VCM protocol carries only home addresses. The SG accepted each MN's binding, so it tells the other MNs,
inside their SG SA, where that MN is now: before every KEYS naming it and after every change of its binding.
Format: ``b"SVCO"``, node id (4), flags (1: 0x1 care-of present), home address (16), care-of address (16).
"""
from __future__ import annotations

import secrets
import struct
import time

from nodeapps import ipv6
from nodeapps.vcm import protocol as p

VCM_PORT = p.DEFAULT_PORT
CARE_OF_PORT = p.DEFAULT_PORT + 1
SG_NODE_ID = 1
VCM_NODE_ID = 2
_UDP = struct.Struct("!HHHH")


def new_process_channel() -> dict:
    """Where a new process's control channel starts: message counters at the wall-clock millisecond << 20
    (they grow across restarts, and peers read the process from them), transaction ids at a random point (a
    peer that remembers the earlier process's requests would answer from its cache instead of acting)."""
    return {"initial_counter": p.first_counter(int(time.time() * 1000)),
            "initial_txid": 1 + secrets.randbelow(0xFFFFFFFF)}
_CARE_OF = struct.Struct("!4sIB16s16s")
_CARE_OF_MAGIC = b"SVCO"


class CareOfParseError(ValueError):
    pass


def mn_node_id(index: int) -> int:
    """VCM node id of the lab's mobile node ``mn<index>``."""
    return 10 + index


def build_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """IPv6 + UDP datagram with its checksum (RFC 8200 §8.1: mandatory over IPv6)."""
    length = _UDP.size + len(payload)
    header = _UDP.pack(sport, dport, length, 0)
    csum = ipv6.checksum(src, dst, ipv6.NH_UDP, header + payload)
    return ipv6.build_header(src, dst, ipv6.NH_UDP, length) + _UDP.pack(sport, dport, length, csum) + payload


def parse_udp(packet: bytes):
    """(src, dst, sport, dport, payload) of a UDP datagram right after the IPv6 header, else None."""
    if len(packet) < 48 or packet[0] >> 4 != 6 or packet[6] != ipv6.NH_UDP:
        return None
    sport, dport, length, _csum = _UDP.unpack_from(packet, 40)
    if length < _UDP.size or 40 + length > len(packet):
        return None
    return packet[8:24], packet[24:40], sport, dport, packet[48:40 + length]


def innermost_addresses(packet: bytes) -> tuple[bytes, bytes]:
    """Source and destination the SG monitor classifies: the home addresses inside the home agent's
    IPv6-in-IPv6 tunnel (RFC 6275 §10.4.5) when there is one, else the packet's own."""
    if len(packet) >= 80 and packet[6] == ipv6.NH_IPV6:
        return packet[48:64], packet[64:80]
    return packet[8:24], packet[24:40]


def encode_care_of(node_id: int, home: str, care_of: str | None) -> bytes:
    return _CARE_OF.pack(_CARE_OF_MAGIC, node_id, 1 if care_of else 0, ipv6.pton(home),
                         ipv6.pton(care_of) if care_of else bytes(16))


def decode_care_of(data: bytes) -> tuple[int, str, str | None]:
    if len(data) != _CARE_OF.size:
        raise CareOfParseError(f"care-of notice of {len(data)} octets, expected {_CARE_OF.size}")
    magic, node_id, flags, home, care_of = _CARE_OF.unpack(data)
    if magic != _CARE_OF_MAGIC:
        raise CareOfParseError("care-of notice: bad magic")
    return node_id, ipv6.ntop(home), ipv6.ntop(care_of) if flags & 1 else None


def message_fields(data: bytes) -> dict:
    """What a node logs about a control message it sends or receives (event ``vcm_message``, together with
    ``node`` = sender and ``peer`` = receiver): the protocol's type name and the size."""
    return {"type": p.TYPE_NAMES.get(message_type(data)), "bytes": len(data)}


def message_type(data: bytes) -> int | None:
    """The type octet of an encoded control message (the header is fixed: RFC-style version, type)."""
    return data[1] if len(data) >= 2 else None
