"""Mobile IPv6 wire formats (RFC 6275 §6): Mobility Header messages and options, the Home Address
destination option, the type 2 routing header, and IPv6-in-IPv6 tunnelling (RFC 2473).

Messages are frozen dataclasses; ``encode_message`` turns one into Mobility Header bytes and
``parse_message`` does the reverse. ``build_mobility_packet`` / ``parse_mobility_packet`` work on whole
IPv6 packets. The data-plane helpers insert or strip a Home Address option or a type 2 routing header in
an existing packet, so a shell can route user traffic optimised without knowing the layouts.

Checksum addresses (RFC 6275 §6.1.1 with RFC 8200 §8.1): the pseudo-header uses the home address when a
Home Address option is present and the final destination (the home address) when a type 2 routing header
is present, so the checksum is the one the upper layer sees after the receiver has swapped the addresses.

Padding: options are placed at their alignment (x*n + y, RFC 6275 §6.2) with Pad1/PadN, and the message is
padded to a multiple of 8 octets (§6.1.1). Parsing drops the padding and keeps unknown options (§6.2.1:
unknown options are skipped).

Every malformed input raises ``MobilityParseError`` and nothing else.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Optional, Union

from nodeapps import ipv6
from nodeapps.mobility.constants import (
    COOKIE_LENGTH, HOME_ADDRESS_OPTION, LIFETIME_UNIT, MH_BA, MH_BE, MH_BRR, MH_BU, MH_COT, MH_COTI,
    MH_HOT, MH_HOTI, OPT_ALTERNATE_COA, OPT_BINDING_AUTH_DATA, OPT_BINDING_REFRESH_ADVICE,
    OPT_NONCE_INDICES, OPT_PAD1, OPT_PADN, ROUTING_TYPE_2, TOKEN_LENGTH,
)

MH_PAYLOAD_PROTO = ipv6.NH_NONE  # RFC 6275 §6.1.1: Payload Proto is IPPROTO_NONE (59)


class MobilityParseError(ValueError):
    """A Mobility Header, mobility option, HAO, type 2 routing header or tunnel packet that is not well formed."""


# ---------------------------------------------------------------------------------------------------------
# Mobility options. RFC 6275 §6.2.

@dataclass(frozen=True)
class BindingRefreshAdvice:
    """RFC 6275 §6.2.4. ``interval`` in 4-second units."""
    interval: int
    TYPE = OPT_BINDING_REFRESH_ADVICE
    ALIGN = (2, 0)

    def _data(self) -> bytes:
        return struct.pack("!H", self.interval)


@dataclass(frozen=True)
class AlternateCareOfAddress:
    """RFC 6275 §6.2.5."""
    address: bytes
    TYPE = OPT_ALTERNATE_COA
    ALIGN = (8, 6)

    def _data(self) -> bytes:
        return self.address


@dataclass(frozen=True)
class NonceIndices:
    """RFC 6275 §6.2.6."""
    home_nonce_index: int
    care_of_nonce_index: int
    TYPE = OPT_NONCE_INDICES
    ALIGN = (2, 0)

    def _data(self) -> bytes:
        return struct.pack("!HH", self.home_nonce_index, self.care_of_nonce_index)


@dataclass(frozen=True)
class BindingAuthorizationData:
    """RFC 6275 §6.2.7. Must be the last option; implicit alignment 8n+2."""
    authenticator: bytes
    TYPE = OPT_BINDING_AUTH_DATA
    ALIGN = (8, 2)

    def _data(self) -> bytes:
        return self.authenticator


@dataclass(frozen=True)
class UnknownOption:
    """An option this implementation does not interpret (kept so it can be re-encoded)."""
    option_type: int
    data: bytes
    ALIGN = (1, 0)

    @property
    def TYPE(self) -> int:  # noqa: N802 - mirrors the class attribute of known options
        return self.option_type

    def _data(self) -> bytes:
        return self.data


MobilityOption = Union[BindingRefreshAdvice, AlternateCareOfAddress, NonceIndices, BindingAuthorizationData,
                       UnknownOption]

# Fixed option lengths checked on parse; None = any length.
_OPTION_LENGTHS = {OPT_BINDING_REFRESH_ADVICE: 2, OPT_ALTERNATE_COA: 16, OPT_NONCE_INDICES: 4}


def _encode_options(options, offset: int) -> bytes:
    """Options starting at ``offset`` within the MH, each at its alignment, then padded to 8 octets."""
    out = bytearray()
    for option in options:
        data = option._data()
        if len(data) > 255:
            raise ValueError("mobility option data longer than 255 octets")
        x, y = option.ALIGN
        _append_padding(out, (y - (offset + len(out))) % x)
        out += bytes((option.TYPE, len(data))) + data
    _append_padding(out, -(offset + len(out)) % 8)
    return bytes(out)


def _append_padding(out: bytearray, count: int) -> None:
    if count == 1:
        out.append(OPT_PAD1)
    elif count >= 2:
        out += bytes((OPT_PADN, count - 2)) + bytes(count - 2)


def _parse_options(data: bytes, offset: int, end: int) -> tuple:
    options = []
    seen_auth = False
    while offset < end:
        option_type = data[offset]
        if option_type == OPT_PAD1:
            offset += 1
            continue
        if offset + 2 > end:
            raise MobilityParseError("truncated mobility option")
        length = data[offset + 1]
        body = data[offset + 2:offset + 2 + length]
        if offset + 2 + length > end:
            raise MobilityParseError("mobility option %d runs past the message" % option_type)
        offset += 2 + length
        if option_type == OPT_PADN:
            continue
        expected = _OPTION_LENGTHS.get(option_type)
        if expected is not None and length != expected:
            raise MobilityParseError("mobility option %d has length %d, expected %d" % (option_type, length, expected))
        if seen_auth:
            # RFC 6275 §6.2.7: Binding Authorization Data must be the last option.
            raise MobilityParseError("option after Binding Authorization Data")
        if option_type == OPT_BINDING_REFRESH_ADVICE:
            options.append(BindingRefreshAdvice(struct.unpack("!H", body)[0]))
        elif option_type == OPT_ALTERNATE_COA:
            options.append(AlternateCareOfAddress(body))
        elif option_type == OPT_NONCE_INDICES:
            options.append(NonceIndices(*struct.unpack("!HH", body)))
        elif option_type == OPT_BINDING_AUTH_DATA:
            options.append(BindingAuthorizationData(body))
            seen_auth = True
        else:
            options.append(UnknownOption(option_type, body))
    return tuple(options)


# ---------------------------------------------------------------------------------------------------------
# Mobility Header messages. RFC 6275 §6.1.

class _Message:
    MH_TYPE: int
    options: tuple

    def option(self, kind):
        """The first option of class ``kind``, or None."""
        for option in self.options:
            if isinstance(option, kind):
                return option
        return None

    @property
    def name(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class BindingRefreshRequest(_Message):
    """RFC 6275 §6.1.2."""
    options: tuple = ()
    MH_TYPE = MH_BRR

    def _fixed(self) -> bytes:
        return b"\0\0"


@dataclass(frozen=True)
class HomeTestInit(_Message):
    """RFC 6275 §6.1.3."""
    cookie: bytes
    options: tuple = ()
    MH_TYPE = MH_HOTI

    def _fixed(self) -> bytes:
        return b"\0\0" + _fixed_len(self.cookie, COOKIE_LENGTH, "cookie")


@dataclass(frozen=True)
class CareOfTestInit(_Message):
    """RFC 6275 §6.1.4."""
    cookie: bytes
    options: tuple = ()
    MH_TYPE = MH_COTI

    def _fixed(self) -> bytes:
        return b"\0\0" + _fixed_len(self.cookie, COOKIE_LENGTH, "cookie")


@dataclass(frozen=True)
class HomeTest(_Message):
    """RFC 6275 §6.1.5."""
    nonce_index: int
    cookie: bytes
    token: bytes
    options: tuple = ()
    MH_TYPE = MH_HOT

    def _fixed(self) -> bytes:
        return (struct.pack("!H", self.nonce_index) + _fixed_len(self.cookie, COOKIE_LENGTH, "cookie")
                + _fixed_len(self.token, TOKEN_LENGTH, "token"))


@dataclass(frozen=True)
class CareOfTest(_Message):
    """RFC 6275 §6.1.6."""
    nonce_index: int
    cookie: bytes
    token: bytes
    options: tuple = ()
    MH_TYPE = MH_COT

    def _fixed(self) -> bytes:
        return (struct.pack("!H", self.nonce_index) + _fixed_len(self.cookie, COOKIE_LENGTH, "cookie")
                + _fixed_len(self.token, TOKEN_LENGTH, "token"))


_BU_ACK, _BU_HOME, _BU_LINK_LOCAL, _BU_KEY_MANAGEMENT = 0x8000, 0x4000, 0x2000, 0x1000
_BA_KEY_MANAGEMENT = 0x80


@dataclass(frozen=True)
class BindingUpdate(_Message):
    """RFC 6275 §6.1.7. ``lifetime`` in 4-second units (see ``lifetime_seconds``)."""
    sequence: int
    lifetime: int
    ack: bool = False
    home_registration: bool = False
    link_local: bool = False
    key_management: bool = False
    options: tuple = ()
    reserved_flags: int = 0  # bits defined by later RFCs (M, R, P, ...); kept, not interpreted
    MH_TYPE = MH_BU

    @property
    def lifetime_seconds(self) -> int:
        return self.lifetime * LIFETIME_UNIT

    def _fixed(self) -> bytes:
        flags = ((_BU_ACK if self.ack else 0) | (_BU_HOME if self.home_registration else 0)
                 | (_BU_LINK_LOCAL if self.link_local else 0) | (_BU_KEY_MANAGEMENT if self.key_management else 0)
                 | (self.reserved_flags & 0x0FFF))
        return struct.pack("!HHH", self.sequence, flags, self.lifetime)


@dataclass(frozen=True)
class BindingAcknowledgement(_Message):
    """RFC 6275 §6.1.8. ``lifetime`` in 4-second units."""
    status: int
    sequence: int
    lifetime: int
    key_management: bool = False
    options: tuple = ()
    reserved_flags: int = 0
    MH_TYPE = MH_BA

    @property
    def lifetime_seconds(self) -> int:
        return self.lifetime * LIFETIME_UNIT

    @property
    def accepted(self) -> bool:
        return self.status < 128

    def _fixed(self) -> bytes:
        flags = (_BA_KEY_MANAGEMENT if self.key_management else 0) | (self.reserved_flags & 0x7F)
        return struct.pack("!BBHH", self.status, flags, self.sequence, self.lifetime)


@dataclass(frozen=True)
class BindingError(_Message):
    """RFC 6275 §6.1.9."""
    status: int
    home_address: bytes = bytes(16)
    options: tuple = ()
    MH_TYPE = MH_BE

    def _fixed(self) -> bytes:
        return struct.pack("!BB", self.status, 0) + _fixed_len(self.home_address, 16, "home address")


@dataclass(frozen=True)
class UnknownMobilityMessage(_Message):
    """A well-formed Mobility Header of a type we do not know; answered with BE status 2 (§9.2)."""
    mh_type: int
    data: bytes = b""
    options: tuple = field(default=(), repr=False)

    @property
    def MH_TYPE(self) -> int:  # noqa: N802
        return self.mh_type

    def _fixed(self) -> bytes:
        return self.data


MobilityMessage = Union[BindingRefreshRequest, HomeTestInit, CareOfTestInit, HomeTest, CareOfTest, BindingUpdate,
                        BindingAcknowledgement, BindingError, UnknownMobilityMessage]

# Length of the fixed message data after the 6-octet common header, per type (RFC 6275 §6.1.2-§6.1.9).
_FIXED_LENGTH = {MH_BRR: 2, MH_HOTI: 10, MH_COTI: 10, MH_HOT: 18, MH_COT: 18, MH_BU: 6, MH_BA: 6, MH_BE: 18}


def _fixed_len(value: bytes, length: int, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != length:
        raise ValueError("%s must be %d bytes" % (what, length))
    return bytes(value)


def encode_message(message, checksum_src: Optional[bytes] = None, checksum_dst: Optional[bytes] = None) -> bytes:
    """Mobility Header bytes for ``message``; the checksum is filled in when both addresses are given.

    The addresses are the pseudo-header ones: home address if a HAO is present, final destination if a type 2
    routing header is present.
    """
    fixed = message._fixed()
    if isinstance(message, UnknownMobilityMessage):
        body = fixed + bytes(-(6 + len(fixed)) % 8)
    else:
        body = fixed + _encode_options(message.options, 6 + len(fixed))
    total = 6 + len(body)
    if total < 8 or total % 8:
        raise ValueError("mobility header length %d is not a multiple of 8" % total)
    header_len = total // 8 - 1
    if header_len > 255:
        raise ValueError("mobility header too long")
    mh = bytes((MH_PAYLOAD_PROTO, header_len, message.MH_TYPE, 0)) + b"\0\0" + body
    if checksum_src is not None and checksum_dst is not None:
        mh = set_checksum(mh, checksum_src, checksum_dst)
    return mh


def set_checksum(mh: bytes, checksum_src: bytes, checksum_dst: bytes) -> bytes:
    """``mh`` with its checksum field computed over the pseudo-header. RFC 6275 §6.1.1."""
    zeroed = mh[:4] + b"\0\0" + mh[6:]
    value = ipv6.checksum(checksum_src, checksum_dst, ipv6.NH_MOBILITY, zeroed)
    return mh[:4] + struct.pack("!H", value) + mh[6:]


def checksum_ok(mh: bytes, checksum_src: bytes, checksum_dst: bytes) -> bool:
    if len(mh) < 6:
        return False
    zeroed = mh[:4] + b"\0\0" + mh[6:]
    expected = ipv6.checksum(checksum_src, checksum_dst, ipv6.NH_MOBILITY, zeroed)
    received = (mh[4] << 8) | mh[5]
    # 0x0000 and 0xFFFF are the same one's-complement value.
    return received == expected or {received, expected} == {0, 0xFFFF}


def parse_message(mh: bytes, checksum_src: Optional[bytes] = None, checksum_dst: Optional[bytes] = None):
    """Parse exactly one Mobility Header. The checksum is verified when both addresses are given."""
    mh = bytes(mh)
    if len(mh) < 8:
        raise MobilityParseError("mobility header shorter than 8 octets")
    if mh[0] != MH_PAYLOAD_PROTO:
        raise MobilityParseError("mobility header payload proto %d, expected 59" % mh[0])  # RFC 6275 §9.2
    total = (mh[1] + 1) * 8
    if total != len(mh):
        raise MobilityParseError("mobility header length field says %d octets, have %d" % (total, len(mh)))
    if checksum_src is not None and checksum_dst is not None and not checksum_ok(mh, checksum_src, checksum_dst):
        raise MobilityParseError("mobility header checksum mismatch")
    mh_type = mh[2]
    fixed_len = _FIXED_LENGTH.get(mh_type)
    if fixed_len is None:
        return UnknownMobilityMessage(mh_type, mh[6:])
    if 6 + fixed_len > total:
        # RFC 6275 §9.2: Header Len smaller than the type requires.
        raise MobilityParseError("%s shorter than its fixed part" % mh_type)
    fixed = mh[6:6 + fixed_len]
    options = _parse_options(mh, 6 + fixed_len, total)
    if mh_type == MH_BRR:
        return BindingRefreshRequest(options)
    if mh_type == MH_HOTI:
        return HomeTestInit(fixed[2:10], options)
    if mh_type == MH_COTI:
        return CareOfTestInit(fixed[2:10], options)
    if mh_type in (MH_HOT, MH_COT):
        index = struct.unpack("!H", fixed[:2])[0]
        cls = HomeTest if mh_type == MH_HOT else CareOfTest
        return cls(index, fixed[2:10], fixed[10:18], options)
    if mh_type == MH_BU:
        sequence, flags, lifetime = struct.unpack("!HHH", fixed)
        return BindingUpdate(sequence, lifetime, ack=bool(flags & _BU_ACK), home_registration=bool(flags & _BU_HOME),
                             link_local=bool(flags & _BU_LINK_LOCAL), key_management=bool(flags & _BU_KEY_MANAGEMENT),
                             options=options, reserved_flags=flags & 0x0FFF)
    if mh_type == MH_BA:
        status, flags, sequence, lifetime = struct.unpack("!BBHH", fixed)
        return BindingAcknowledgement(status, sequence, lifetime, key_management=bool(flags & _BA_KEY_MANAGEMENT),
                                      options=options, reserved_flags=flags & 0x7F)
    status = fixed[0]
    return BindingError(status, fixed[2:18], options)


def authenticator_span(mh: bytes) -> tuple[int, int]:
    """(start, end) of the authenticator inside an encoded BU/BA (the data of its Binding Authorization
    Data option)."""
    if len(mh) < 8:
        raise MobilityParseError("mobility header shorter than 8 octets")
    fixed_len = _FIXED_LENGTH.get(mh[2])
    if fixed_len is None:
        raise MobilityParseError("message type %d carries no authenticator" % mh[2])
    offset, end = 6 + fixed_len, min(len(mh), (mh[1] + 1) * 8)
    while offset < end:
        option_type = mh[offset]
        if option_type == OPT_PAD1:
            offset += 1
            continue
        if offset + 2 > end or offset + 2 + mh[offset + 1] > end:
            raise MobilityParseError("truncated mobility option")
        length = mh[offset + 1]
        if option_type == OPT_BINDING_AUTH_DATA:
            return offset + 2, offset + 2 + length
        offset += 2 + length
    raise MobilityParseError("no Binding Authorization Data option")


def authenticator_input(mh: bytes) -> bytes:
    """The "MH Data" of RFC 6275 §6.2.7: the message with checksum zeroed and the authenticator left out.

    The option's type and length octets stay in (the Header Len already counts the authenticator).
    """
    start, end = authenticator_span(mh)
    return mh[:4] + b"\0\0" + mh[6:start] + mh[end:]


def with_option(message, option):
    """A copy of ``message`` with ``option`` appended (replacing any option of the same class)."""
    kept = tuple(o for o in message.options if not isinstance(o, type(option)))
    return replace(message, options=kept + (option,))


# ---------------------------------------------------------------------------------------------------------
# Home Address destination option and type 2 routing header.

_HAO_PAD = bytes((OPT_PADN, 2, 0, 0))  # brings the HAO to 8n+6 within the header (RFC 6275 §6.3)


def encode_home_address_destopts(next_header: int, home_address: bytes) -> bytes:
    """A 24-octet Destination Options header holding PadN then the Home Address option. RFC 6275 §6.3."""
    return bytes((next_header, 2)) + _HAO_PAD + bytes((HOME_ADDRESS_OPTION, 16)) + _fixed_len(home_address, 16,
                                                                                                 "home address")


def encode_type2_routing_header(next_header: int, home_address: bytes) -> bytes:
    """RFC 6275 §6.4: Hdr Ext Len 2, Routing Type 2, Segments Left 1, reserved, home address."""
    return bytes((next_header, 2, ROUTING_TYPE_2, 1)) + bytes(4) + _fixed_len(home_address, 16, "home address")


def _destopts_home_address(packet: bytes, offset: int, length: int) -> Optional[tuple[bytes, int]]:
    """(home address, option offset) of a HAO inside the destination options header, or None."""
    pos, end = offset + 2, offset + length
    found = None
    while pos < end:
        option_type = packet[pos]
        if option_type == OPT_PAD1:
            pos += 1
            continue
        if pos + 2 > end or pos + 2 + packet[pos + 1] > end:
            raise MobilityParseError("truncated destination option")
        option_len = packet[pos + 1]
        if option_type == HOME_ADDRESS_OPTION:
            if option_len != 16:
                raise MobilityParseError("home address option length %d" % option_len)
            if found is not None:
                raise MobilityParseError("two home address options")  # RFC 6275 §6.3: at most one
            found = (packet[pos + 2:pos + 18], pos)
        pos += 2 + option_len
    return found


def _type2_home_address(packet: bytes, offset: int, length: int) -> Optional[bytes]:
    if packet[offset + 2] != ROUTING_TYPE_2:
        return None
    # RFC 6275 §6.4: exactly one address, Hdr Ext Len 2, Segments Left 1.
    if length != 24 or packet[offset + 3] != 1:
        raise MobilityParseError("malformed type 2 routing header")
    return packet[offset + 8:offset + 24]


@dataclass(frozen=True)
class MobilityPacket:
    """A parsed IPv6 packet that carries a Mobility Header."""
    src: bytes
    dst: bytes
    message: object
    home_address: Optional[bytes] = None    # from a Home Address option (the packet came from a CoA)
    routing_address: Optional[bytes] = None  # from a type 2 routing header (the final destination)
    hop_limit: int = 64
    mh: bytes = b""

    @property
    def checksum_src(self) -> bytes:
        return self.home_address or self.src

    @property
    def checksum_dst(self) -> bytes:
        return self.routing_address or self.dst


def _walk(packet: bytes):
    try:
        ipv6.parse_header(packet)
        return list(ipv6.extension_headers(packet))
    except ipv6.ParseError as exc:
        raise MobilityParseError(str(exc)) from None


def _trim(packet: bytes) -> bytes:
    """The packet cut to its IPv6 payload length (drops link-layer padding)."""
    packet = bytes(packet)
    try:
        _, _, _, payload_len = ipv6.parse_header(packet)
    except ipv6.ParseError as exc:
        raise MobilityParseError(str(exc)) from None
    return packet[:ipv6.HEADER_LEN + payload_len]


def packet_summary(packet: bytes):
    """(home address from HAO or None, type 2 address or None, upper protocol, upper offset) of a packet."""
    packet = _trim(packet)
    home_address = routing_address = None
    for nh, offset, length in _walk(packet):
        if length is None:
            return home_address, routing_address, nh, offset
        if nh == ipv6.NH_DSTOPTS:
            found = _destopts_home_address(packet, offset, length)
            if found is not None:
                if home_address is not None:
                    raise MobilityParseError("two home address options")
                home_address = found[0]
        elif nh == ipv6.NH_ROUTING:
            address = _type2_home_address(packet, offset, length)
            if address is not None:
                if routing_address is not None:
                    raise MobilityParseError("two type 2 routing headers")
                routing_address = address
    raise AssertionError("unreachable")


def parse_mobility_packet(packet: bytes, *, verify_checksum: bool = True) -> MobilityPacket:
    """Parse an IPv6 packet whose upper layer is a Mobility Header (after any ESP has been removed)."""
    packet = _trim(packet)
    home_address, routing_address, nh, offset = packet_summary(packet)
    if nh != ipv6.NH_MOBILITY:
        raise MobilityParseError("not a mobility header packet (next header %d)" % nh)
    src, dst = packet[8:24], packet[24:40]
    mh = packet[offset:]
    pseudo_src, pseudo_dst = home_address or src, routing_address or dst
    if verify_checksum:
        message = parse_message(mh, pseudo_src, pseudo_dst)
    else:
        message = parse_message(mh)
    return MobilityPacket(src, dst, message, home_address, routing_address, packet[7], mh)


def build_mobility_packet(src: bytes, dst: bytes, message, *, home_address: Optional[bytes] = None,
                          routing_address: Optional[bytes] = None, hop_limit: int = 64) -> bytes:
    """A whole IPv6 packet: header, [type 2 routing header], [HAO destination options], Mobility Header.

    Header order per RFC 8200 §4.1 and RFC 6275 §6.3/§6.4. An ESP header, when the runtime adds one,
    goes between the destination options and the Mobility Header (RFC 3776 §3).
    """
    mh = encode_message(message, home_address or src, routing_address or dst)
    chain = mh
    nh = ipv6.NH_MOBILITY
    if home_address is not None:
        chain = encode_home_address_destopts(nh, home_address) + chain
        nh = ipv6.NH_DSTOPTS
    if routing_address is not None:
        chain = encode_type2_routing_header(nh, routing_address) + chain
        nh = ipv6.NH_ROUTING
    return ipv6.build_header(src, dst, nh, len(chain), hop_limit=hop_limit) + chain


# ---------------------------------------------------------------------------------------------------------
# Data-plane helpers: put HAO / type 2 routing header into user packets and take them out again.

def _splice(packet: bytes, nh_field: int, insert_at: int, header: bytes, header_type: int) -> bytes:
    """Insert an extension header whose next-header byte already holds the old value of ``nh_field``."""
    out = bytearray(packet[:insert_at] + header + packet[insert_at:])
    out[nh_field] = header_type
    payload_len = len(out) - ipv6.HEADER_LEN
    if payload_len > 0xFFFF:
        raise MobilityParseError("packet too long for an extra header")
    out[4:6] = struct.pack("!H", payload_len)
    return bytes(out)


def _cut(packet: bytes, nh_field: int, offset: int, length: int) -> bytes:
    out = bytearray(packet[:offset] + packet[offset + length:])
    out[nh_field] = packet[offset]
    out[4:6] = struct.pack("!H", len(out) - ipv6.HEADER_LEN)
    return bytes(out)


def insert_home_address_option(packet: bytes, care_of_address: bytes) -> bytes:
    """MN -> CN route optimisation (RFC 6275 §6.3, §11.3.1): the source (the home address) moves into a HAO
    and the care-of address becomes the source. The HAO goes after hop-by-hop and routing headers."""
    packet = _trim(packet)
    headers = _walk(packet)
    nh_field, insert_at = 6, ipv6.HEADER_LEN
    for index, (nh, offset, length) in enumerate(headers):
        following = headers[index + 1][0] if index + 1 < len(headers) else None
        if nh in (ipv6.NH_HOPOPTS, ipv6.NH_ROUTING) or (nh == ipv6.NH_DSTOPTS and following == ipv6.NH_ROUTING):
            nh_field, insert_at = offset, offset + length
            continue
        if nh == ipv6.NH_DSTOPTS and _destopts_home_address(packet, offset, length) is not None:
            raise MobilityParseError("packet already carries a home address option")
        break
    home_address = packet[8:24]
    header = encode_home_address_destopts(packet[nh_field], home_address)
    out = _splice(packet, nh_field, insert_at, header, ipv6.NH_DSTOPTS)
    return out[:8] + _fixed_len(care_of_address, 16, "care-of address") + out[24:]


def remove_home_address_option(packet: bytes) -> tuple[bytes, bytes, bytes]:
    """Receiver side of a HAO (RFC 6275 §9.3.1): (packet as the upper layer should see it, home address,
    care-of address). The source becomes the home address; the HAO is removed (the header too if nothing
    but padding is left), so a kernel without Mobile IPv6 accepts the packet."""
    packet = _trim(packet)
    nh_field = 6
    for nh, offset, length in _walk(packet):
        if length is None:
            break
        if nh == ipv6.NH_DSTOPTS:
            found = _destopts_home_address(packet, offset, length)
            if found is not None:
                home_address, option_at = found
                care_of = packet[8:24]
                if _only_padding_besides(packet, offset, length, option_at):
                    out = _cut(packet, nh_field, offset, length)
                else:
                    # Keep the other options in place; the 18 octets of the HAO become PadN.
                    out = packet[:option_at] + bytes((OPT_PADN, 16)) + bytes(16) + packet[option_at + 18:]
                return out[:8] + home_address + out[24:], home_address, care_of
        nh_field = offset
    raise MobilityParseError("no home address option")


def _only_padding_besides(packet: bytes, offset: int, length: int, option_at: int) -> bool:
    pos, end = offset + 2, offset + length
    while pos < end:
        if packet[pos] == OPT_PAD1:
            pos += 1
            continue
        if pos != option_at and packet[pos] != OPT_PADN:
            return False
        pos += 2 + packet[pos + 1]
    return True


def insert_routing_header(packet: bytes, care_of_address: bytes) -> bytes:
    """CN/HA -> MN route optimisation (RFC 6275 §6.4, §9.3.2): the destination (home address) moves into a
    type 2 routing header and the care-of address becomes the destination. Upper-layer checksums stay valid
    because the pseudo-header uses the final destination."""
    packet = _trim(packet)
    headers = _walk(packet)
    nh_field, insert_at = 6, ipv6.HEADER_LEN
    if headers and headers[0][0] == ipv6.NH_HOPOPTS:
        nh_field, insert_at = headers[0][1], headers[0][1] + headers[0][2]
    home_address = packet[24:40]
    header = encode_type2_routing_header(packet[nh_field], home_address)
    out = _splice(packet, nh_field, insert_at, header, ipv6.NH_ROUTING)
    return out[:24] + _fixed_len(care_of_address, 16, "care-of address") + out[40:]


def remove_routing_header(packet: bytes) -> tuple[bytes, bytes, bytes]:
    """MN side of a type 2 routing header (RFC 6275 §11.3.3): (packet addressed to the home address with the
    routing header removed, home address, care-of address it arrived at)."""
    packet = _trim(packet)
    nh_field = 6
    for nh, offset, length in _walk(packet):
        if length is None:
            break
        if nh == ipv6.NH_ROUTING:
            home_address = _type2_home_address(packet, offset, length)
            if home_address is not None:
                care_of = packet[24:40]
                out = _cut(packet, nh_field, offset, length)
                return out[:24] + home_address + out[40:], home_address, care_of
        nh_field = offset
    raise MobilityParseError("no type 2 routing header")


# ---------------------------------------------------------------------------------------------------------
# IPv6-in-IPv6 (RFC 2473): bidirectional tunnel between MN and HA (RFC 6275 §10.4.1, §11.3.1).

def encapsulate(inner: bytes, src: bytes, dst: bytes, *, hop_limit: int = 64) -> bytes:
    """``inner`` behind a new IPv6 header with next header 41. RFC 2473 §3."""
    inner = bytes(inner)
    if len(inner) > 0xFFFF:
        raise ValueError("inner packet too long for a plain IPv6 payload")
    return ipv6.build_header(src, dst, ipv6.NH_IPV6, len(inner), hop_limit=hop_limit) + inner


def decapsulate(packet: bytes) -> tuple[bytes, bytes, bytes]:
    """(outer source, outer destination, inner packet) of an IPv6-in-IPv6 packet. RFC 2473 §3.2."""
    packet = _trim(packet)
    headers = _walk(packet)
    nh, offset, _ = headers[-1]
    if nh != ipv6.NH_IPV6:
        raise MobilityParseError("not an IPv6-in-IPv6 packet")
    inner = packet[offset:]
    _trim(inner)  # the inner packet must itself be IPv6
    return packet[8:24], packet[24:40], inner
