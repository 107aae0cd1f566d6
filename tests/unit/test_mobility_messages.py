"""Mobile IPv6 wire formats: golden bytes, scapy as the independent oracle, data-plane helpers, fuzzing."""
import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet6 import (
    HAO, ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, MIP6MH_BA, MIP6MH_BE, MIP6MH_BRR, MIP6MH_BU,
    MIP6MH_CoT, MIP6MH_CoTI, MIP6MH_HoT, MIP6MH_HoTI, MIP6OptAltCoA, MIP6OptBindingAuthData, MIP6OptBRAdvice,
    MIP6OptNonceIndices,
)
from scapy.layers.inet import UDP

from nodeapps import ipv6
from nodeapps.mobility import messages as m
from nodeapps.mobility import rr

HOA_T, COA_T, HA_T, CN_T = "2001:db8:1::10", "2001:db8:2::10", "2001:db8:1::1", "2001:db8:3::5"
HOA, COA, HA, CN = (ipv6.pton(a) for a in (HOA_T, COA_T, HA_T, CN_T))
COOKIE = bytes.fromhex("0102030405060708")
TOKEN = bytes.fromhex("a1a2a3a4a5a6a7a8")
AUTH = bytes(range(1, 13))


def ref_checksum(src: bytes, dst: bytes, upper: bytes, next_header: int = 135) -> int:
    """Independent one's-complement checksum over the IPv6 pseudo-header (RFC 8200 §8.1)."""
    data = src + dst + struct.pack("!I3xB", len(upper), next_header) + upper
    data += b"\0" * (len(data) % 2)
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF) or 0xFFFF


# ------------------------------------------------------------------------------------------- golden bytes

GOLDEN = [
    # (message, Mobility Header bytes with checksum zero) laid out by hand from RFC 6275 §6.1
    (m.BindingRefreshRequest(), "3b 00 00 00 0000 0000"),
    (m.HomeTestInit(COOKIE), "3b 01 01 00 0000 0000 0102030405060708"),
    (m.CareOfTestInit(COOKIE), "3b 01 02 00 0000 0000 0102030405060708"),
    (m.HomeTest(0x1234, COOKIE, TOKEN), "3b 02 03 00 0000 1234 0102030405060708 a1a2a3a4a5a6a7a8"),
    (m.CareOfTest(0x00ff, COOKIE, TOKEN), "3b 02 04 00 0000 00ff 0102030405060708 a1a2a3a4a5a6a7a8"),
    # BU: seq, A|H flags 0xc000, lifetime 0x0069 (420 s), then PadN(4 octets) to a multiple of 8.
    (m.BindingUpdate(0xbeef, 105, ack=True, home_registration=True), "3b 01 05 00 0000 beef c000 0069 01 02 0000"),
    # BU with Nonce Indices (2n, at 12) and Binding Authorization Data (8n+2, at 18).
    (m.BindingUpdate(1, 105, ack=True, options=(m.NonceIndices(7, 9), m.BindingAuthorizationData(AUTH))),
     "3b 03 05 00 0000 0001 8000 0069 04 04 0007 0009 05 0c" + AUTH.hex()),
    # BU with Alternate CoA (8n+6): PadN of 2 octets at 12, option at 14.
    (m.BindingUpdate(2, 0, home_registration=True, options=(m.AlternateCareOfAddress(COA),)),
     "3b 03 05 00 0000 0002 4000 0000 01 00 03 10" + COA.hex()),
    # BA status 135, K flag, seq, lifetime, padded.
    (m.BindingAcknowledgement(135, 0x0102, 0, key_management=True), "3b 01 06 00 0000 87 80 0102 0000 01 02 0000"),
    # BA with Binding Refresh Advice (2n at 12): exactly 16 octets.
    (m.BindingAcknowledgement(0, 3, 75, options=(m.BindingRefreshAdvice(60),)),
     "3b 01 06 00 0000 00 00 0003 004b 02 02 003c"),
    (m.BindingError(1, HOA), "3b 02 07 00 0000 01 00" + HOA.hex()),
]


@pytest.mark.parametrize("message,hexbytes", GOLDEN, ids=[g[0].name for g in GOLDEN])
def test_golden_encoding_and_parse(message, hexbytes):
    expected = bytes.fromhex(hexbytes.replace(" ", ""))
    assert m.encode_message(message) == expected
    assert len(expected) % 8 == 0
    assert m.parse_message(expected) == message


def test_checksum_uses_pseudo_header_and_is_verified():
    message = m.BindingUpdate(9, 10, ack=True, home_registration=True)
    mh = m.encode_message(message, HOA, HA)
    assert struct.unpack("!H", mh[4:6])[0] == ref_checksum(HOA, HA, mh[:4] + b"\0\0" + mh[6:])
    assert m.parse_message(mh, HOA, HA) == message
    with pytest.raises(m.MobilityParseError, match="checksum"):
        m.parse_message(mh, COA, HA)


def test_unknown_type_and_unknown_option_are_kept():
    raw = bytes.fromhex("3b 00 2a 00 0000 0102".replace(" ", ""))
    assert m.parse_message(raw) == m.UnknownMobilityMessage(42, b"\x01\x02")
    bu = bytes.fromhex("3b 01 05 00 0000 0001 8000 0001 63 02 abcd".replace(" ", ""))
    assert m.parse_message(bu).options == (m.UnknownOption(0x63, b"\xab\xcd"),)


@pytest.mark.parametrize("hexbytes,reason", [
    ("3b 00 05 00 0000 0001", "fixed part"),                       # BU needs 12 octets
    ("3a 00 00 00 0000 0000", "payload proto"),                    # RFC 6275 §9.2
    ("3b 01 00 00 0000 0000", "length"),                           # header len says 16
    ("3b 01 05 00 0000 0001 8000 0001 04 02 0001", "length 2"),    # nonce indices must be 4
    ("3b 01 05 00 0000 0001 8000 0001 02 05 0001", "runs past"),   # option overruns
    ("3b 02 05 00 0000 0001 8000 0001 05 02 0000 04 04 0001 0002 01 00", "after Binding Authorization"),
])
def test_malformed_messages_raise_parse_error(hexbytes, reason):
    with pytest.raises(m.MobilityParseError, match=reason):
        m.parse_message(bytes.fromhex(hexbytes.replace(" ", "")))


# --------------------------------------------------------------------------------- scapy as the oracle

def test_scapy_dissects_home_binding_update_with_equal_fields():
    bu = m.BindingUpdate(0x1234, 105, ack=True, home_registration=True, options=(m.AlternateCareOfAddress(COA),))
    packet = m.build_mobility_packet(COA, HA, bu, home_address=HOA)
    s = IPv6(packet)
    assert s[IPv6ExtHdrDestOpt].options[-1].hoa == HOA_T
    assert isinstance(s[IPv6ExtHdrDestOpt].options[-1], HAO)
    mh = s[MIP6MH_BU]
    assert (mh.seq, mh.mhtime, mh.len) == (0x1234, 105, 3)
    assert "A" in mh.flags and "H" in mh.flags and "L" not in mh.flags and "K" not in mh.flags
    assert mh[MIP6OptAltCoA].acoa == COA_T
    # Checksum: pseudo-header source is the home address from the HAO.
    raw_mh = packet[-32:]
    assert mh.cksum == ref_checksum(HOA, HA, raw_mh[:4] + b"\0\0" + raw_mh[6:])


def test_scapy_dissects_correspondent_bu_and_ba():
    bu = m.BindingUpdate(7, 100, ack=True, options=(m.NonceIndices(3, 4), m.BindingAuthorizationData(AUTH)))
    s = IPv6(m.build_mobility_packet(COA, CN, bu, home_address=HOA))
    assert s[MIP6OptNonceIndices].hni == 3 and s[MIP6OptNonceIndices].coni == 4 and s[MIP6OptNonceIndices].olen == 4
    assert s[MIP6OptBindingAuthData].authenticator == int.from_bytes(AUTH, "big")
    assert s[MIP6OptBindingAuthData].olen == 12
    ba = m.BindingAcknowledgement(0, 7, 100, options=(m.BindingAuthorizationData(AUTH),))
    packet = m.build_mobility_packet(CN, COA, ba, routing_address=HOA)
    s = IPv6(packet)
    rh = s[IPv6ExtHdrRouting]
    assert (rh.type, rh.segleft, rh.addresses, rh.len) == (2, 1, [HOA_T], 2)
    assert (s[MIP6MH_BA].status, s[MIP6MH_BA].seq, s[MIP6MH_BA].mhtime) == (0, 7, 100)
    # Checksum: pseudo-header destination is the final one, the home address in the routing header.
    raw_mh = packet[-32:]
    assert s[MIP6MH_BA].cksum == ref_checksum(CN, HOA, raw_mh[:4] + b"\0\0" + raw_mh[6:])


@pytest.mark.parametrize("ours,scapy_layer,fields", [
    (m.HomeTestInit(COOKIE), MIP6MH_HoTI, {"cookie": COOKIE}),
    (m.CareOfTestInit(COOKIE), MIP6MH_CoTI, {"cookie": COOKIE}),
    (m.HomeTest(513, COOKIE, TOKEN), MIP6MH_HoT, {"index": 513, "cookie": COOKIE, "token": TOKEN}),
    (m.CareOfTest(65535, COOKIE, TOKEN), MIP6MH_CoT, {"index": 65535, "cookie": COOKIE, "token": TOKEN}),
    (m.BindingRefreshRequest(), MIP6MH_BRR, {}),
    (m.BindingError(2, HOA), MIP6MH_BE, {"status": 2, "ha": HOA_T}),
    (m.BindingAcknowledgement(135, 65535, 0, key_management=True), MIP6MH_BA, {"status": 135, "seq": 65535}),
])
def test_scapy_dissects_every_message_type(ours, scapy_layer, fields):
    packet = m.build_mobility_packet(HOA, CN, ours)
    s = IPv6(packet)
    assert s.haslayer(scapy_layer) and s[scapy_layer].mhtype == ours.MH_TYPE
    for name, value in fields.items():
        assert getattr(s[scapy_layer], name) == value
    # scapy recomputes the same checksum when it rebuilds the packet.
    layer = s[scapy_layer]
    stored = layer.cksum
    layer.cksum = None
    assert IPv6(bytes(s))[scapy_layer].cksum == stored


def _scapy_packets():
    base = IPv6(src=COA_T, dst=HA_T)
    hao = IPv6ExtHdrDestOpt(options=[HAO(hoa=HOA_T)])
    rh2 = IPv6ExtHdrRouting(type=2, addresses=[HOA_T], segleft=1)
    return [
        (base / hao / MIP6MH_BU(seq=5, flags="AH", mhtime=105, options=[MIP6OptAltCoA(acoa=COA_T)]),
         m.BindingUpdate(5, 105, ack=True, home_registration=True, options=(m.AlternateCareOfAddress(COA),))),
        (base / hao / MIP6MH_BU(seq=6, flags="A", mhtime=0, options=[
            MIP6OptNonceIndices(olen=4, hni=1, coni=2),
            MIP6OptBindingAuthData(olen=12, authenticator=int.from_bytes(AUTH, "big"))]),
         m.BindingUpdate(6, 0, ack=True, options=(m.NonceIndices(1, 2), m.BindingAuthorizationData(AUTH)))),
        (IPv6(src=HA_T, dst=COA_T) / rh2 / MIP6MH_BA(status=0, flags=0, seq=5, mhtime=75,
                                                      options=[MIP6OptBRAdvice(rinter=60)]),
         m.BindingAcknowledgement(0, 5, 75, options=(m.BindingRefreshAdvice(60),))),
        (IPv6(src=HOA_T, dst=CN_T) / MIP6MH_HoTI(cookie=COOKIE), m.HomeTestInit(COOKIE)),
        (IPv6(src=COA_T, dst=CN_T) / MIP6MH_CoTI(cookie=COOKIE), m.CareOfTestInit(COOKIE)),
        (IPv6(src=CN_T, dst=HOA_T) / MIP6MH_HoT(index=9, cookie=COOKIE, token=TOKEN), m.HomeTest(9, COOKIE, TOKEN)),
        (IPv6(src=CN_T, dst=COA_T) / MIP6MH_CoT(index=8, cookie=COOKIE, token=TOKEN), m.CareOfTest(8, COOKIE, TOKEN)),
        (IPv6(src=CN_T, dst=HOA_T) / MIP6MH_BRR(), m.BindingRefreshRequest()),
        (IPv6(src=CN_T, dst=COA_T) / MIP6MH_BE(status=1, ha=HOA_T), m.BindingError(1, HOA)),
    ]


@pytest.mark.parametrize("index", range(len(_scapy_packets())))
def test_scapy_built_messages_parse_with_ours(index):
    scapy_packet, expected = _scapy_packets()[index]
    wire = bytes(scapy_packet)
    parsed = m.parse_mobility_packet(wire)  # includes checksum verification with HAO / RH2 addresses
    assert parsed.message == expected
    if scapy_packet.haslayer(HAO):
        assert parsed.home_address == HOA
    if scapy_packet.haslayer(IPv6ExtHdrRouting):
        assert parsed.routing_address == HOA
    # ... and we build the very same bytes.
    assert m.build_mobility_packet(parsed.src, parsed.dst, expected, home_address=parsed.home_address,
                                   routing_address=parsed.routing_address) == wire


# ------------------------------------------------------------------------------ data-plane helpers

def _udp_packet(src, dst, payload=b"hello"):
    return bytes(IPv6(src=src, dst=dst, hlim=61) / UDP(sport=1000, dport=2000) / payload)


def test_home_address_option_round_trip_keeps_udp_checksum_valid():
    original = _udp_packet(HOA_T, CN_T)
    with_hao = m.insert_home_address_option(original, COA)
    s = IPv6(with_hao)
    assert s.src == COA_T and s[IPv6ExtHdrDestOpt].options[-1].hoa == HOA_T
    # The UDP checksum is still right for the upper layer's view: source = home address (RFC 6275 §6.3).
    udp = bytes(s[UDP])
    assert s[UDP].chksum == ref_checksum(HOA, CN, udp[:6] + b"\0\0" + udp[8:], 17)
    restored, home, care_of = m.remove_home_address_option(with_hao)
    assert (restored, home, care_of) == (original, HOA, COA)


def test_remove_hao_keeps_other_destination_options():
    from scapy.layers.inet6 import PadN
    other = PadN(otype=0x1E, optdata=b"ab")  # an unknown, skippable option type
    packet = bytes(IPv6(src=COA_T, dst=CN_T) / IPv6ExtHdrDestOpt(options=[HAO(hoa=HOA_T), other]) / UDP() / b"x")
    restored, home, care_of = m.remove_home_address_option(packet)
    assert (home, care_of) == (HOA, COA) and len(restored) == len(packet)
    s = IPv6(restored)
    assert s.src == HOA_T and not any(isinstance(o, HAO) for o in s[IPv6ExtHdrDestOpt].options)
    assert any(o.otype == 0x1E and o.optdata == b"ab" for o in s[IPv6ExtHdrDestOpt].options)
    assert bytes(s[UDP]) == bytes(IPv6(packet)[UDP])


def test_routing_header_round_trip():
    original = _udp_packet(CN_T, HOA_T)
    with_rh = m.insert_routing_header(original, COA)
    s = IPv6(with_rh)
    assert s.dst == COA_T and s[IPv6ExtHdrRouting].type == 2 and s[IPv6ExtHdrRouting].addresses == [HOA_T]
    assert m.remove_routing_header(with_rh) == (original, HOA, COA)


def test_routing_header_after_hop_by_hop_and_hao_after_routing():
    from scapy.layers.inet6 import IPv6ExtHdrHopByHop
    original = bytes(IPv6(src=HOA_T, dst=CN_T) / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest())
    with_hao = m.insert_home_address_option(original, COA)
    layers = [type(layer).__name__ for layer in IPv6(with_hao).iterpayloads()]
    assert layers[:3] == ["IPv6", "IPv6ExtHdrHopByHop", "IPv6ExtHdrDestOpt"]
    with_rh = m.insert_routing_header(bytes(IPv6(src=CN_T, dst=HOA_T) / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest()),
                                      COA)
    layers = [type(layer).__name__ for layer in IPv6(with_rh).iterpayloads()]
    assert layers[:3] == ["IPv6", "IPv6ExtHdrHopByHop", "IPv6ExtHdrRouting"]


def test_type2_routing_header_must_have_segments_left_1():
    with_rh = bytearray(m.insert_routing_header(_udp_packet(CN_T, HOA_T), COA))
    with_rh[43] = 0
    with pytest.raises(m.MobilityParseError, match="type 2"):
        m.remove_routing_header(bytes(with_rh))
    with pytest.raises(m.MobilityParseError, match="type 2"):
        m.packet_summary(bytes(with_rh))


def test_tunnel_round_trip():
    inner = _udp_packet(CN_T, HOA_T)
    outer = m.encapsulate(inner, HA, COA)
    s = IPv6(outer)
    assert (s.nh, s.src, s.dst, s.plen) == (41, HA_T, COA_T, len(inner))
    assert m.decapsulate(outer) == (HA, COA, inner)
    with pytest.raises(m.MobilityParseError):
        m.decapsulate(inner)


def test_helpers_reject_packets_without_the_header():
    packet = _udp_packet(HOA_T, CN_T)
    with pytest.raises(m.MobilityParseError):
        m.remove_home_address_option(packet)
    with pytest.raises(m.MobilityParseError):
        m.remove_routing_header(packet)
    with pytest.raises(m.MobilityParseError):
        m.parse_mobility_packet(packet)
    with pytest.raises(m.MobilityParseError, match="already"):
        m.insert_home_address_option(m.insert_home_address_option(packet, COA), COA)


# ------------------------------------------------------------------------------------------- fuzzing

_PARSERS = [
    lambda b: m.parse_message(b),
    lambda b: m.parse_message(b, HOA, CN),
    lambda b: m.parse_mobility_packet(b),
    lambda b: m.packet_summary(b),
    lambda b: m.remove_home_address_option(b),
    lambda b: m.remove_routing_header(b),
    lambda b: m.decapsulate(b),
    lambda b: m.authenticator_input(b),
]


def _run_all(data: bytes) -> None:
    for parser in _PARSERS:
        try:
            parser(data)
        except m.MobilityParseError:
            pass


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_any_bytes_parse_or_raise_parse_error(data):
    _run_all(data)


_VALID = [
    m.build_mobility_packet(COA, CN, m.BindingUpdate(6, 0, ack=True, options=(m.NonceIndices(1, 2),
                                                                            m.BindingAuthorizationData(AUTH))),
                            home_address=HOA),
    m.build_mobility_packet(CN, COA, m.BindingAcknowledgement(0, 5, 75, options=(m.BindingRefreshAdvice(1),)),
                            routing_address=HOA),
    m.encapsulate(m.build_mobility_packet(HOA, CN, m.HomeTestInit(COOKIE)), COA, HA),
]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_VALID), st.lists(st.tuples(st.integers(0, 500), st.integers(0, 255)), max_size=6),
       st.integers(0, 200))
def test_fuzz_mutated_valid_packets(packet, flips, cut):
    data = bytearray(packet)
    for position, value in flips:
        data[position % len(data)] = value
    data = bytes(data[:len(data) - cut % len(data)])
    _run_all(data)
    _run_all(data[40:])  # the bare Mobility Header / inner packet


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.booleans(), st.booleans(), st.booleans(), st.booleans(),
       st.lists(st.sampled_from([m.BindingRefreshAdvice(5), m.AlternateCareOfAddress(COA), m.NonceIndices(1, 2),
                                 m.UnknownOption(99, b"abc")]), max_size=3))
def test_binding_update_round_trip(sequence, lifetime, a, h, l, k, options):
    bu = m.BindingUpdate(sequence, lifetime, a, h, l, k, tuple(options))
    mh = m.encode_message(bu, COA, CN)
    assert len(mh) % 8 == 0
    assert m.parse_message(mh, COA, CN) == bu
    # Options sit at their alignment (RFC 6275 §6.2): check with scapy's reading of the same bytes.
    s = IPv6(m.build_mobility_packet(COA, CN, bu))
    assert s[MIP6MH_BU].seq == sequence and s[MIP6MH_BU].mhtime == lifetime


# ------------------------------------------------------------------------------------------- tshark

@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_dissects_every_message_without_errors(tmp_path):
    from scapy.utils import wrpcap
    kbm = bytes(20)
    packets = [
        m.build_mobility_packet(COA, HA, m.BindingUpdate(5, 105, ack=True, home_registration=True,
                                                         options=(m.AlternateCareOfAddress(COA),)), home_address=HOA),
        m.build_mobility_packet(HA, COA, m.BindingAcknowledgement(0, 5, 105, options=(m.BindingRefreshAdvice(60),)),
                                routing_address=HOA),
        m.encapsulate(m.build_mobility_packet(HOA, CN, m.HomeTestInit(COOKIE)), COA, HA),
        m.build_mobility_packet(COA, CN, m.CareOfTestInit(COOKIE)),
        m.build_mobility_packet(CN, HOA, m.HomeTest(3, COOKIE, TOKEN)),
        m.build_mobility_packet(CN, COA, m.CareOfTest(4, COOKIE, TOKEN)),
        m.build_mobility_packet(COA, CN, rr.sign(m.BindingUpdate(7, 105, ack=True, options=(m.NonceIndices(1, 2),)),
                                                 kbm, COA, CN), home_address=HOA),
        m.build_mobility_packet(CN, COA, rr.sign(m.BindingAcknowledgement(0, 7, 105), kbm, COA, CN),
                                routing_address=HOA),
        m.build_mobility_packet(CN, COA, m.BindingError(1, HOA)),
        m.build_mobility_packet(CN, HOA, m.BindingRefreshRequest()),
        m.insert_home_address_option(_udp_packet(HOA_T, CN_T), COA),
        m.insert_routing_header(_udp_packet(CN_T, HOA_T), COA),
    ]
    path = tmp_path / "mobility.pcap"
    wrpcap(str(path), [IPv6(p) for p in packets])
    out = subprocess.run(["tshark", "-r", str(path), "-o", "udp.check_checksum:TRUE", "-T", "fields",
                          "-e", "mip6.mhtype", "-e", "udp.checksum.status", "-e", "_ws.expert.message",
                          "-e", "_ws.malformed"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert [r[0] for r in rows] == ["5", "6", "1", "2", "3", "4", "5", "6", "7", "0", "", ""]
    assert [r[1] for r in rows[-2:]] == ["1", "1"]          # UDP checksums good under HAO / RH2
    assert all(r[2] == "" and r[3] == "" for r in rows), rows
