"""VCM control protocol, version 1: message format, encoder and decoder.

The wire format is specified in docs/vcm-protocol.md. A message is a 24-byte fixed header followed by
TLVs. Messages travel as UDP payloads inside ESP SAs the nodes already trust, so this layer does no
cryptography; it only guarantees that every byte string either decodes into a fully checked
:class:`Message` or raises :class:`VcmParseError`.

Addresses are IPv6 text in the dataclasses (they end up in SA configuration dicts) and 16 bytes on the wire.
"""
from __future__ import annotations

import functools
import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Optional, Union

VERSION = 1
DEFAULT_PORT = 7420

HEADER = struct.Struct("!BBHIQIH2x")  # version, type, flags, sender, counter, txid, body length
HEADER_LEN = HEADER.size  # 24
_TLV = struct.Struct("!HH")
_TLV_LEN = _TLV.size
MAX_MESSAGE_LEN = 1200  # fits one ESP-protected UDP datagram on a 1280-byte IPv6 path

# Message types. Requests are odd; the response to request t is t + 1.
REPORT = 1           # SG -> VCM ("202": MN external HoA / location, session indication)
REPORT_ACK = 2       # VCM -> SG ("204")
KEYS = 3             # VCM -> MN ("206" to MN2, "210" to MN1; with FLAG_REKEY for a rekey)
KEYS_ACK = 4         # MN -> VCM (first leg of "208" / "212": inbound SA and SPD entry installed)
PEER_READY = 5       # VCM -> MN (relayed "208" / "212": the peer can now decrypt)
PEER_READY_ACK = 6   # MN -> VCM
FALLBACK = 7         # VCM -> MN (peer went back inside: use the SG SA again, delete direct SAs)
FALLBACK_ACK = 8     # MN -> VCM
RESTARTED = 9        # MN -> VCM (its process started holding no direct SA: the VCM ends its sessions, sets them up anew)
RESTARTED_ACK = 10   # VCM -> MN
UNKEYED_PEER = 11    # MN -> VCM (a peer's direct ESP arrives under an SA this process does not hold)
UNKEYED_PEER_ACK = 12   # VCM -> MN

TYPE_NAMES = {
    REPORT: "REPORT", REPORT_ACK: "REPORT_ACK", KEYS: "KEYS", KEYS_ACK: "KEYS_ACK",
    PEER_READY: "PEER_READY", PEER_READY_ACK: "PEER_READY_ACK", FALLBACK: "FALLBACK",
    FALLBACK_ACK: "FALLBACK_ACK", RESTARTED: "RESTARTED", RESTARTED_ACK: "RESTARTED_ACK",
    UNKEYED_PEER: "UNKEYED_PEER", UNKEYED_PEER_ACK: "UNKEYED_PEER_ACK",
}
REQUEST_TYPES = frozenset({REPORT, KEYS, PEER_READY, FALLBACK, RESTARTED, UNKEYED_PEER})
RESPONSE_TYPES = frozenset({REPORT_ACK, KEYS_ACK, PEER_READY_ACK, FALLBACK_ACK, RESTARTED_ACK, UNKEYED_PEER_ACK})

# Header flags. Unknown flags are ignored by receivers.
FLAG_REKEY = 0x0001        # KEYS: a further generation for an existing session (make-before-break)
FLAG_RETRANSMIT = 0x0002   # a retransmission, re-encoded with a fresh counter; informational

# TLV types. Types with bit 15 set must be understood: an unknown one fails the message.
TLV_CRITICAL = 0x8000
TLV_MN_INFO = 1
TLV_SESSION_SEEN = 2
TLV_SESSION = 3
TLV_PEER = 4
TLV_SA = 5
TLV_STATUS = 6
TLV_BINDING_KEY = 7   # not critical: an MN that lacks it runs return routability instead

# MN_INFO location
LOCATION_OUTSIDE = 1
LOCATION_INSIDE = 2
# SESSION_SEEN trigger
TRIGGER_EXISTING_SESSION = 1     # a session between two MNs that are both external now
TRIGGER_EXTERNAL_INITIATOR = 2   # an external MN opened a session to an external destination
# SA direction, from the point of view of the MN receiving the KEYS message
DIR_OUT = 1
DIR_IN = 2
# STATUS codes
STATUS_OK = 0
STATUS_UNKNOWN_NODE = 1
STATUS_BAD_REQUEST = 2
STATUS_STALE = 3

ALGORITHMS = {1: ("aes128gcm16", 16), 2: ("aes256gcm16", 32)}
ALGORITHM_IDS = {name: (ident, key_len) for ident, (name, key_len) in ALGORITHMS.items()}
MODES = {1: "tunnel", 2: "transport"}
MODE_IDS = {name: ident for ident, name in MODES.items()}
SALT_LEN = 4  # RFC 4106 §4: the salt half of the GCM nonce
_ADDR_PRESENT_EXT, _ADDR_PRESENT_INT, _ADDR_PRESENT_COA = 0x01, 0x02, 0x04
BINDING_KEY_LEN = 20   # as long as an RFC 6275 Kbm (a SHA-1 output)
_ZERO_ADDR = bytes(16)
_U32 = 0xFFFFFFFF


class VcmParseError(ValueError):
    """A control message that is not well formed (wrong version, length, field value or TLV set)."""


def _addr_bytes(text: Optional[str]) -> bytes:
    return _ZERO_ADDR if text is None else _packed(text)


def _addr_text(raw: bytes, present: bool) -> Optional[str]:
    return _text(raw) if present else None


# Address conversions dominate encoding and decoding, and a node talks about the same few addresses
# again and again: remember the latest ones (bounded, so hostile input cannot grow them).
@functools.lru_cache(maxsize=1 << 16)
def _packed(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


@functools.lru_cache(maxsize=1 << 16)
def _text(raw: bytes) -> str:
    return str(ipaddress.IPv6Address(raw))


def check_spi(spi: int) -> None:
    """RFC 4303 §2.1: SPI 0 is reserved for local use and 1-255 are reserved by IANA."""
    if not 256 <= spi <= _U32:
        raise VcmParseError(f"SPI {spi} outside 256..2^32-1 (RFC 4303 §2.1)")


@dataclass(frozen=True)
class MnInfo:
    """Where a mobile node is and under which addresses (SG -> VCM)."""
    node_id: int
    location: int
    external_hoa: Optional[str] = None
    internal_hoa: Optional[str] = None
    care_of: Optional[str] = None

    _FMT = struct.Struct("!IBBH16s16s16s")

    def pack(self) -> bytes:
        present = ((self.external_hoa is not None) * _ADDR_PRESENT_EXT
                   | (self.internal_hoa is not None) * _ADDR_PRESENT_INT
                   | (self.care_of is not None) * _ADDR_PRESENT_COA)
        return self._FMT.pack(self.node_id, self.location, present, 0, _addr_bytes(self.external_hoa),
                              _addr_bytes(self.internal_hoa), _addr_bytes(self.care_of))

    @classmethod
    def unpack(cls, value: bytes) -> "MnInfo":
        if len(value) != cls._FMT.size:
            raise VcmParseError("MN_INFO length")
        node_id, location, present, _, ext, internal, coa = cls._FMT.unpack(value)
        if location not in (LOCATION_OUTSIDE, LOCATION_INSIDE):
            raise VcmParseError(f"MN_INFO location {location}")
        return cls(node_id, location, _addr_text(ext, present & _ADDR_PRESENT_EXT),
                   _addr_text(internal, present & _ADDR_PRESENT_INT), _addr_text(coa, present & _ADDR_PRESENT_COA))


@dataclass(frozen=True)
class SessionSeen:
    """The SG saw a session between two external MNs (SG -> VCM)."""
    node_a: int  # the initiator when known ("MN1")
    node_b: int
    trigger: int = TRIGGER_EXISTING_SESSION

    _FMT = struct.Struct("!IIB3x")

    def pack(self) -> bytes:
        return self._FMT.pack(self.node_a, self.node_b, self.trigger)

    @classmethod
    def unpack(cls, value: bytes) -> "SessionSeen":
        if len(value) != cls._FMT.size:
            raise VcmParseError("SESSION_SEEN length")
        node_a, node_b, trigger = cls._FMT.unpack(value)
        if node_a == node_b:
            raise VcmParseError("SESSION_SEEN names one node twice")
        if trigger not in (TRIGGER_EXISTING_SESSION, TRIGGER_EXTERNAL_INITIATOR):
            raise VcmParseError(f"SESSION_SEEN trigger {trigger}")
        return cls(node_a, node_b, trigger)


@dataclass(frozen=True)
class SessionRef:
    """Which VCM session and which key generation a message is about."""
    session_id: int
    generation: int

    _FMT = struct.Struct("!II")

    def pack(self) -> bytes:
        return self._FMT.pack(self.session_id, self.generation)

    @classmethod
    def unpack(cls, value: bytes) -> "SessionRef":
        if len(value) != cls._FMT.size:
            raise VcmParseError("SESSION length")
        session_id, generation = cls._FMT.unpack(value)
        if session_id == 0 or generation == 0:
            raise VcmParseError("SESSION id and generation start at 1")
        return cls(session_id, generation)


@dataclass(frozen=True)
class Peer:
    """The other MN of a session and its addresses."""
    node_id: int
    external_hoa: Optional[str] = None
    internal_hoa: Optional[str] = None

    _FMT = struct.Struct("!IB3x16s16s")

    def pack(self) -> bytes:
        present = ((self.external_hoa is not None) * _ADDR_PRESENT_EXT
                   | (self.internal_hoa is not None) * _ADDR_PRESENT_INT)
        return self._FMT.pack(self.node_id, present, _addr_bytes(self.external_hoa),
                              _addr_bytes(self.internal_hoa))

    @classmethod
    def unpack(cls, value: bytes) -> "Peer":
        if len(value) != cls._FMT.size:
            raise VcmParseError("PEER length")
        node_id, present, ext, internal = cls._FMT.unpack(value)
        return cls(node_id, _addr_text(ext, present & _ADDR_PRESENT_EXT),
                   _addr_text(internal, present & _ADDR_PRESENT_INT))


@dataclass(frozen=True)
class SaParams:
    """Key material of one unidirectional ESP SA; direction as seen by the receiving MN."""
    direction: int
    spi: int
    algorithm: str
    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    lifetime: int
    mode: str = "tunnel"

    _FMT = struct.Struct("!BBBxII4s")

    def pack(self) -> bytes:
        algorithm_id, _ = ALGORITHM_IDS[self.algorithm]
        return self._FMT.pack(self.direction, algorithm_id, MODE_IDS[self.mode], self.spi, self.lifetime,
                              self.salt) + self.key

    @classmethod
    def unpack(cls, value: bytes) -> "SaParams":
        if len(value) < cls._FMT.size:
            raise VcmParseError("SA too short")
        direction, algorithm_id, mode_id, spi, lifetime, salt = cls._FMT.unpack_from(value)
        key = bytes(value[cls._FMT.size:])
        if direction not in (DIR_OUT, DIR_IN):
            raise VcmParseError(f"SA direction {direction}")
        if algorithm_id not in ALGORITHMS:
            raise VcmParseError(f"SA algorithm {algorithm_id}")
        if mode_id not in MODES:
            raise VcmParseError(f"SA mode {mode_id}")
        name, key_len = ALGORITHMS[algorithm_id]
        if len(key) != key_len:  # RFC 4106 §8.1: 16 or 32 key bytes, plus the 4-byte salt
            raise VcmParseError(f"{name} needs a {key_len}-byte key, got {len(key)}")
        check_spi(spi)
        if lifetime == 0:
            raise VcmParseError("SA lifetime 0")
        return cls(direction, spi, name, key, salt, lifetime, MODES[mode_id])


@dataclass(frozen=True)
class Status:
    code: int = STATUS_OK

    _FMT = struct.Struct("!H2x")

    def pack(self) -> bytes:
        return self._FMT.pack(self.code)

    @classmethod
    def unpack(cls, value: bytes) -> "Status":
        if len(value) != cls._FMT.size:
            raise VcmParseError("STATUS length")
        return cls(cls._FMT.unpack(value)[0])


@dataclass(frozen=True)
class BindingKey:
    """A static binding management key for the pair's MN–MN bindings (RFC 4449), the same at both MNs, and
    the peer's care-of address when the VCM knows one (VCM -> MN, inside KEYS): the first BU needs no
    return routability and can go straight to the peer."""
    key: bytes = field(repr=False)
    peer_care_of: Optional[str] = None

    _FMT = struct.Struct("!B3x16s")

    def pack(self) -> bytes:
        return self._FMT.pack((self.peer_care_of is not None) * _ADDR_PRESENT_COA,
                              _addr_bytes(self.peer_care_of)) + self.key

    @classmethod
    def unpack(cls, value: bytes) -> "BindingKey":
        if len(value) != cls._FMT.size + BINDING_KEY_LEN:
            raise VcmParseError("BINDING_KEY length")
        present, care_of = cls._FMT.unpack_from(value)
        return cls(bytes(value[cls._FMT.size:]), _addr_text(care_of, present & _ADDR_PRESENT_COA))


Tlv = Union[MnInfo, SessionSeen, SessionRef, Peer, SaParams, Status, BindingKey]
_TLV_CLASSES = {TLV_MN_INFO: MnInfo, TLV_SESSION_SEEN: SessionSeen, TLV_SESSION: SessionRef, TLV_PEER: Peer,
                TLV_SA: SaParams, TLV_STATUS: Status, TLV_BINDING_KEY: BindingKey}
_TLV_CODES = {cls: code for code, cls in _TLV_CLASSES.items()}

# Which TLVs each message type needs: (TLV class, minimum count, maximum count or None).
_SHAPES = {
    REPORT: ((MnInfo, 0, None), (SessionSeen, 0, None)),
    REPORT_ACK: ((Status, 0, 1),),
    KEYS: ((SessionRef, 1, 1), (Peer, 1, 1), (SaParams, 2, 2), (BindingKey, 0, 1)),
    KEYS_ACK: ((SessionRef, 1, 1), (Status, 0, 1)),
    PEER_READY: ((SessionRef, 1, 1), (Peer, 1, 1)),
    PEER_READY_ACK: ((SessionRef, 1, 1), (Status, 0, 1)),
    FALLBACK: ((SessionRef, 1, 1), (Peer, 1, 1)),
    FALLBACK_ACK: ((SessionRef, 1, 1), (Status, 0, 1)),
    RESTARTED: (),
    RESTARTED_ACK: ((Status, 0, 1),),
    UNKEYED_PEER: ((Peer, 1, 1),),
    UNKEYED_PEER_ACK: ((Status, 0, 1),),
}


@dataclass(frozen=True)
class Message:
    type: int
    sender: int
    counter: int
    txid: int
    tlvs: tuple = ()
    flags: int = 0

    def all(self, cls) -> list:
        return [tlv for tlv in self.tlvs if isinstance(tlv, cls)]

    def one(self, cls):
        """The single TLV of a class, or None (the decoder has checked the counts)."""
        for tlv in self.tlvs:
            if isinstance(tlv, cls):
                return tlv
        return None

    @property
    def status(self) -> int:
        status = self.one(Status)
        return STATUS_OK if status is None else status.code

    @property
    def name(self) -> str:
        return TYPE_NAMES.get(self.type, str(self.type))


_ALLOWED = {msg_type: frozenset(cls for cls, _, _ in shape) for msg_type, shape in _SHAPES.items()}
# Shapes found valid, by (message type, TLV classes in order): a node sends and receives the same few
# shapes again and again, so each is counted against _SHAPES once. Bounded, so hostile input cannot grow it
# (a shape beyond the bound is counted every time).
_VALID_SHAPES: set = set()
_MAX_VALID_SHAPES = 4096


def _check_shape(msg_type: int, tlvs) -> None:
    signature = (msg_type, *map(type, tlvs))
    if signature not in _VALID_SHAPES:
        _count_shape(msg_type, tlvs)
        if len(_VALID_SHAPES) < _MAX_VALID_SHAPES:
            _VALID_SHAPES.add(signature)
    if msg_type == KEYS:
        sas = [tlv for tlv in tlvs if type(tlv) is SaParams]   # exactly two: the shape says so
        if {sas[0].direction, sas[1].direction} != {DIR_OUT, DIR_IN}:
            raise VcmParseError("KEYS needs one outbound and one inbound SA")
        if sas[0].spi == sas[1].spi:
            raise VcmParseError("KEYS gives both directions the same SPI")
        peer = next(tlv for tlv in tlvs if type(tlv) is Peer)
        if peer.external_hoa is None:
            raise VcmParseError("KEYS without the peer's external home address")


def _count_shape(msg_type: int, tlvs) -> None:
    """Which TLVs, how many of each: raises VcmParseError unless the shape is one _SHAPES allows."""
    shape = _SHAPES.get(msg_type)
    if shape is None:
        raise VcmParseError(f"unknown message type {msg_type}")
    allowed = _ALLOWED[msg_type]
    counts: dict = {}
    for tlv in tlvs:
        kind = type(tlv)
        if kind not in allowed:
            raise VcmParseError(f"{TYPE_NAMES[msg_type]} may not carry {kind.__name__}")
        counts[kind] = counts.get(kind, 0) + 1
    for cls, low, high in shape:
        count = counts.get(cls, 0)
        if count < low or (high is not None and count > high):
            raise VcmParseError(f"{TYPE_NAMES[msg_type]} carries {count} {cls.__name__}")
    if msg_type == REPORT and not tlvs:
        raise VcmParseError("REPORT carries nothing")


def encode(message: Message) -> bytes:
    """Bytes of a message; raises VcmParseError if the message would not decode."""
    _check_shape(message.type, message.tlvs)
    parts = [b""]   # the header's place
    for tlv in message.tlvs:
        kind = type(tlv)   # the shape check allows exactly these classes
        if kind is SaParams:
            check_spi(tlv.spi)
            if len(tlv.salt) != SALT_LEN or len(tlv.key) != ALGORITHM_IDS[tlv.algorithm][1]:
                raise VcmParseError("SA key or salt length")
        elif kind is BindingKey and len(tlv.key) != BINDING_KEY_LEN:
            raise VcmParseError("BINDING_KEY length")
        value = tlv.pack()
        parts.append(_TLV.pack(_TLV_CODES[kind], len(value)))
        parts.append(value)
    body_len = sum(map(len, parts))
    parts[0] = HEADER.pack(VERSION, message.type, message.flags, message.sender, message.counter,
                           message.txid, body_len)
    data = b"".join(parts)
    if len(data) > MAX_MESSAGE_LEN:
        raise VcmParseError("message too long")
    return data


def decode(data: bytes) -> Message:
    """Parse and check one message; any defect raises VcmParseError."""
    size = len(data)
    if size < HEADER_LEN:
        raise VcmParseError("shorter than the header")
    if size > MAX_MESSAGE_LEN:
        raise VcmParseError("message too long")
    version, msg_type, flags, sender, counter, txid, body_len = HEADER.unpack_from(data)
    if version != VERSION:
        raise VcmParseError(f"unsupported version {version}")
    if msg_type not in _SHAPES:
        raise VcmParseError(f"unknown message type {msg_type}")
    if HEADER_LEN + body_len != size:
        raise VcmParseError("body length does not match the datagram")
    if sender == 0 or counter == 0 or txid == 0:
        raise VcmParseError("sender, counter and transaction id must be non-zero")
    tlvs = []
    offset = HEADER_LEN
    while offset < size:
        if offset + _TLV_LEN > size:
            raise VcmParseError("truncated TLV header")
        code, length = _TLV.unpack_from(data, offset)
        offset += _TLV_LEN
        if offset + length > size:
            raise VcmParseError("TLV runs past the message")
        value = data[offset:offset + length]
        offset += length
        cls = _TLV_CLASSES.get(code)
        if cls is None:
            if code & TLV_CRITICAL:
                raise VcmParseError(f"unknown critical TLV {code:#06x}")
            continue  # unknown non-critical TLVs are skipped (forward compatibility)
        try:
            tlvs.append(cls.unpack(value))
        except (struct.error, ValueError) as exc:  # ValueError covers VcmParseError and address errors
            raise VcmParseError(f"{cls.__name__}: {exc}") from None
    _check_shape(msg_type, tlvs)
    return Message(msg_type, sender, counter, txid, tuple(tlvs), flags)


COUNTER_SHIFT = 20   # a process's first counter: its start time in milliseconds, shifted by this


def first_counter(start_ms: int) -> int:
    """The message counter a process started at ``start_ms`` (wall clock, milliseconds) begins at."""
    return start_ms << COUNTER_SHIFT


def process_start(counter: int) -> int:
    """Which process of a node sent a message: nodes start their counters at their wall-clock start in
    milliseconds << 20 (docs/vcm-protocol.md), so a message's counter >> 20 is its process's start
    millisecond (a process overtakes one started t ms later only after t * 2^20 messages). Milliseconds, not
    seconds: a node restarted within the second it started in is another process."""
    return counter >> COUNTER_SHIFT
