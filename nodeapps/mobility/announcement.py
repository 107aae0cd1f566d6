"""The office announcement: the home agent's signed statement "this link is the office", which is what
makes a mobile node believe it is inside (``location.PresenceDetector``).

Pure functions, no clock: bytes, key and ``now`` in, packet or verdict out.

Wire format: IPv6 (HA address -> ff02::1, hop limit 255, next header 253, one of the two values RFC 3692
leaves for experiments, so nothing else on the link takes it for its own traffic) whose payload is::

    magic "svpn-office\\0" (12) | version 1 (1) | reserved (3) | prefix (16) | timestamp, ns since the
    epoch (8) | counter (8) | Ed25519 signature (64) over source address || everything before it

Only the HA holds the private key; each MN's configuration carries the public key, so no MN (and no holder
of a stolen MN's keys) can make another believe it is home. The MN keeps the (timestamp, counter) of the
last announcement it accepted and refuses anything not newer (a replay) or older than ``max_age`` seconds
(stale); the lab's nodes share one clock, so the timestamp needs no synchronisation protocol.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from nodeapps import ipv6

NEXT_HEADER = 253
MAGIC = b"svpn-office\0"
VERSION = 1
_BODY = struct.Struct("!12sB3x16sQQ")
SIGNATURE_LEN = 64
PAYLOAD_LEN = _BODY.size + SIGNATURE_LEN
ALL_NODES = ipv6.pton("ff02::1")
# Default freshness window: 40 announcement intervals (0.05 s) on one shared clock. Long enough for a busy
# 2-CPU machine that stalls the HA or the MN for a second; short enough that a recorded announcement
# replayed on a fake office is refused within 2 s of its capture (a newer one is refused by the counter).
MAX_AGE_S = 2.0
# A timestamp this far ahead of our clock is not from the HA of a lab that shares one clock.
MAX_FUTURE_S = 0.5


class Verdict(enum.Enum):
    OK = "ok"
    BAD = "bad"        # not an announcement, wrong format or signature, implausible timestamp
    STALE = "stale"    # authentic but replayed (not newer than the last accepted) or too old


@dataclass(frozen=True)
class Checked:
    verdict: Verdict
    reason: str = ""
    prefix: bytes | None = None        # 16 bytes, the announced office prefix
    stamp: tuple[int, int] | None = None   # (timestamp ns, counter): pass back as ``last`` next time


def generate_key_pair() -> tuple[str, str]:
    """(private key, public key) as hex of their 32 raw bytes, as the node configurations carry them."""
    private = Ed25519PrivateKey.generate()
    return private.private_bytes_raw().hex(), private.public_key().public_bytes_raw().hex()


def load_private_key(text: str) -> Ed25519PrivateKey:
    """ValueError with a one-line reason for anything but 64 hex digits."""
    return Ed25519PrivateKey.from_private_bytes(_key_bytes(text, "private_key"))


def load_public_key(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_key_bytes(text, "public_key"))


def _key_bytes(text, field: str) -> bytes:
    try:
        raw = bytes.fromhex(str(text))
    except ValueError:
        raise ValueError(f"{field}: not hexadecimal") from None
    if len(raw) != 32:
        raise ValueError(f"{field}: expected 32 bytes (64 hex digits), got {len(raw)}")
    return raw


def build(key: Ed25519PrivateKey, source: bytes, prefix: bytes, timestamp_ns: int, counter: int) -> bytes:
    """The whole IPv6 packet of one announcement from ``source`` naming ``prefix`` (16 bytes each)."""
    body = _BODY.pack(MAGIC, VERSION, prefix, timestamp_ns, counter)
    payload = body + key.sign(source + body)
    return ipv6.build_header(source, ALL_NODES, NEXT_HEADER, len(payload), hop_limit=255) + payload


def verify(key: Ed25519PublicKey, packet: bytes, now: float, last: tuple[int, int] | None = None,
           max_age: float = MAX_AGE_S) -> Checked:
    """Check one received IPv6 packet (``now``: wall-clock seconds; ``last``: the stamp of the last
    accepted announcement)."""
    if len(packet) < ipv6.HEADER_LEN or packet[0] >> 4 != 6 or packet[6] != NEXT_HEADER:
        return Checked(Verdict.BAD, "not an announcement")
    # Link-scoped: a router on the way would have decremented it (cf. RFC 4861 §6.1.2 for RAs).
    if packet[7] != 255:
        return Checked(Verdict.BAD, f"hop limit {packet[7]}")
    if packet[24:40] != ALL_NODES:
        return Checked(Verdict.BAD, "not to all nodes")
    length = (packet[4] << 8) | packet[5]
    payload = packet[ipv6.HEADER_LEN:ipv6.HEADER_LEN + length]
    if length != PAYLOAD_LEN or len(payload) != PAYLOAD_LEN:
        return Checked(Verdict.BAD, f"payload of {len(payload)} octets, expected {PAYLOAD_LEN}")
    body, signature = payload[:_BODY.size], payload[_BODY.size:]
    magic, version, prefix, timestamp_ns, counter = _BODY.unpack(body)
    if magic != MAGIC or version != VERSION:
        return Checked(Verdict.BAD, "unknown magic or version")
    try:
        key.verify(signature, packet[8:24] + body)
    except InvalidSignature:
        return Checked(Verdict.BAD, "bad signature")
    stamp = (timestamp_ns, counter)
    age = now - timestamp_ns / 1e9
    if age < -MAX_FUTURE_S:
        return Checked(Verdict.BAD, f"timestamp {-age:.3f} s in the future")
    if last is not None and stamp <= last:
        return Checked(Verdict.STALE, "replayed: not newer than the last accepted")
    if age > max_age:
        return Checked(Verdict.STALE, f"{age:.3f} s old")
    return Checked(Verdict.OK, prefix=prefix, stamp=stamp)
