"""Probe wire format: a 40-byte header and marker padding, all integers in network byte order.

::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     Magic "SVPR" (0x53565052)                 |
    +---------------+---------------+-------------------------------+
    |  Version = 1  | Type 1=probe  |          Reserved (0)         |
    |               |      2=echo   |                               |
    +---------------+---------------+-------------------------------+
    |                   Session (non-zero, per sender run)          |
    +---------------------------------------------------------------+
    |                   Sequence number (from 0)                    |
    +---------------------------------------------------------------+
    |          Sent: sender's clock, ns since the Unix epoch (64)   |
    +---------------------------------------------------------------+
    |          Received: echo's arrival stamp, ns (64; 0 in probes) |
    +---------------------------------------------------------------+
    |          Echoed: echo's send stamp, ns (64; 0 in probes)      |
    +---------------------------------------------------------------+
    |          Padding: the marker text repeated to the size        |

The echo returns the whole datagram with the type, the received and echoed stamps changed, so the
padding travels both ways. The padding carries a marker (default ``SVPNLAB-PROBE-PLAINTEXT``) that a
capture of a public link finds only if the probe crossed it unencrypted. Every malformed datagram raises
:class:`ProbeParseError` and nothing else.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"SVPR"
VERSION = 1
TYPE_PROBE = 1
TYPE_ECHO = 2
HEADER = struct.Struct("!4sBBHIIQQQ")
HEADER_LEN = HEADER.size  # 40
MAX_SIZE = 1400  # fits a 1500-byte link inside an ESP tunnel
DEFAULT_MARKER = b"SVPNLAB-PROBE-PLAINTEXT"
_U64 = (1 << 64) - 1


class ProbeParseError(ValueError):
    """A datagram that is not a well-formed probe or echo."""


def to_ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def from_ns(ns: int) -> float:
    return ns / 1e9


@dataclass(frozen=True)
class ProbePacket:
    type: int
    session: int
    seq: int
    t_sent_ns: int
    t_recv_ns: int = 0
    t_echo_ns: int = 0
    padding: bytes = b""

    def encode(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.type, 0, self.session, self.seq, self.t_sent_ns,
                           self.t_recv_ns, self.t_echo_ns) + self.padding


def padding_for(size: int, marker: bytes = DEFAULT_MARKER) -> bytes:
    """Marker text repeated (and cut) so that header + padding is ``size`` bytes."""
    if not HEADER_LEN <= size <= MAX_SIZE:
        raise ValueError(f"probe size must be from {HEADER_LEN} to {MAX_SIZE} bytes, not {size}")
    length = size - HEADER_LEN
    if not marker:
        return bytes(length)
    return (marker * (length // len(marker) + 1))[:length]


def parse(data: bytes) -> ProbePacket:
    if len(data) < HEADER_LEN:
        raise ProbeParseError(f"datagram of {len(data)} bytes is shorter than the {HEADER_LEN}-byte header")
    if len(data) > MAX_SIZE:
        raise ProbeParseError(f"datagram of {len(data)} bytes is longer than {MAX_SIZE}")
    magic, version, ptype, _reserved, session, seq, t_sent, t_recv, t_echo = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProbeParseError("bad magic")
    if version != VERSION:
        raise ProbeParseError(f"unknown version {version}")
    if ptype not in (TYPE_PROBE, TYPE_ECHO):
        raise ProbeParseError(f"unknown type {ptype}")
    if session == 0:
        raise ProbeParseError("session 0")
    if ptype == TYPE_PROBE and (t_recv or t_echo):
        raise ProbeParseError("probe with echo stamps")
    if ptype == TYPE_ECHO and (not t_recv or not t_echo):
        raise ProbeParseError("echo without its stamps")
    return ProbePacket(ptype, session, seq, t_sent, t_recv, t_echo, bytes(data[HEADER_LEN:]))


def make_echo(probe: ProbePacket, t_recv: float, t_echo: float) -> bytes:
    """The echo of a parsed probe: same session, sequence, send stamp and padding."""
    return ProbePacket(TYPE_ECHO, probe.session, probe.seq, probe.t_sent_ns, max(1, to_ns(t_recv)) & _U64,
                       max(1, to_ns(t_echo)) & _U64, probe.padding).encode()
