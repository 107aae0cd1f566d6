"""VCM control protocol: golden bytes, round trips, rejection of malformed messages, decoder fuzz."""
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeapps.vcm import protocol as p

KEYS_MSG = p.Message(p.KEYS, 2, 7, 3, (
    p.SessionRef(1, 1),
    p.Peer(11, "2001:db8:1::11", "fd00:10::11"),
    p.SaParams(p.DIR_OUT, 0x1000, "aes128gcm16", bytes(range(16)), b"\xa0\xa1\xa2\xa3", 3600, "tunnel"),
    p.SaParams(p.DIR_IN, 0x2000, "aes128gcm16", bytes(range(16, 32)), b"\xb0\xb1\xb2\xb3", 3600, "tunnel"),
))
KEYS_GOLDEN = bytes.fromhex(
    "01030000" "00000002" "0000000000000007" "00000003" "0080" "0000"      # header, body 128 bytes
    "00030008" "00000001" "00000001"                                       # SESSION 1 / generation 1
    "00040028" "0000000b" "03000000"                                       # PEER node 11, ext+int
    "20010db8000100000000000000000011" "fd000010000000000000000000000011"
    "00050020" "01010100" "00001000" "00000e10" "a0a1a2a3"                 # SA out, SPI 0x1000, 3600 s
    "000102030405060708090a0b0c0d0e0f"
    "00050020" "02010100" "00002000" "00000e10" "b0b1b2b3"                 # SA in, SPI 0x2000
    "101112131415161718191a1b1c1d1e1f")

REPORT_MSG = p.Message(p.REPORT, 1, 1, 1, (
    p.MnInfo(12, p.LOCATION_OUTSIDE, "2001:db8:1::12", "fd00:10::12", "2001:db8:b::12"),
    p.SessionSeen(11, 12, p.TRIGGER_EXISTING_SESSION),
))
REPORT_GOLDEN = bytes.fromhex(
    "01010000" "00000001" "0000000000000001" "00000001" "004c" "0000"
    "00010038" "0000000c" "01070000"
    "20010db8000100000000000000000012" "fd000010000000000000000000000012" "20010db8000b00000000000000000012"
    "0002000c" "0000000b" "0000000c" "01000000")

ACK_GOLDEN = bytes.fromhex("01040000" "0000000b" "0000000000000001" "00000003" "000c" "0000"
                           "00030008" "00000001" "00000001")


def test_keys_golden_bytes():
    assert p.encode(KEYS_MSG) == KEYS_GOLDEN
    assert p.decode(KEYS_GOLDEN) == KEYS_MSG


def test_report_golden_bytes_combined_location_and_session():
    assert p.encode(REPORT_MSG) == REPORT_GOLDEN
    decoded = p.decode(REPORT_GOLDEN)
    assert decoded.one(p.MnInfo).care_of == "2001:db8:b::12"
    assert decoded.one(p.SessionSeen) == p.SessionSeen(11, 12, 1)


def test_keys_ack_golden_bytes():
    msg = p.Message(p.KEYS_ACK, 11, 1, 3, (p.SessionRef(1, 1),))
    assert p.encode(msg) == ACK_GOLDEN
    assert p.decode(ACK_GOLDEN).status == p.STATUS_OK


def test_absent_addresses_round_trip_as_none():
    msg = p.Message(p.REPORT, 1, 5, 9, (p.MnInfo(11, p.LOCATION_INSIDE),))
    decoded = p.decode(p.encode(msg))
    assert decoded.one(p.MnInfo) == p.MnInfo(11, p.LOCATION_INSIDE, None, None, None)


def test_aes256_keys_round_trip():
    sa_out = p.SaParams(p.DIR_OUT, 4096, "aes256gcm16", bytes(32), b"salt", 60, "transport")
    sa_in = p.SaParams(p.DIR_IN, 4097, "aes256gcm16", bytes(range(32)), b"SALT", 60, "transport")
    msg = p.Message(p.KEYS, 2, 1, 1, (p.SessionRef(3, 2), p.Peer(12, "2001:db8::12"), sa_out, sa_in), p.FLAG_REKEY)
    assert p.decode(p.encode(msg)) == msg


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


SA_OUT_OFFSET = 24 + 12 + 44  # header, SESSION TLV, PEER TLV


@pytest.mark.parametrize("bad, why", [
    (KEYS_GOLDEN[:23], "shorter than the header"),
    (_patch(KEYS_GOLDEN, 0, b"\x02"), "unsupported version"),
    (_patch(KEYS_GOLDEN, 1, b"\x0d"), "unknown message type"),
    (KEYS_GOLDEN + b"\x00", "body length"),
    (_patch(KEYS_GOLDEN, 4, bytes(4)), "non-zero"),
    (_patch(KEYS_GOLDEN, 8, bytes(8)), "non-zero"),
    (_patch(KEYS_GOLDEN, SA_OUT_OFFSET + 8, struct.pack("!I", 255)), "RFC 4303"),
    (_patch(KEYS_GOLDEN, SA_OUT_OFFSET + 8, struct.pack("!I", 0)), "RFC 4303"),
    (_patch(KEYS_GOLDEN, SA_OUT_OFFSET + 5, b"\x02"), "32-byte key"),
    (_patch(KEYS_GOLDEN, SA_OUT_OFFSET + 4, b"\x02"), "one outbound and one inbound"),
    (_patch(KEYS_GOLDEN, SA_OUT_OFFSET + 8, struct.pack("!I", 0x2000)), "same SPI"),
    (_patch(KEYS_GOLDEN, SA_OUT_OFFSET + 12, bytes(4)), "lifetime 0"),
    (_patch(KEYS_GOLDEN, SA_OUT_OFFSET + 6, b"\x07"), "mode"),
    (_patch(KEYS_GOLDEN, 24 + 12 + 8, b"\x02"), "external home address"),   # PEER without external HoA
    (_patch(KEYS_GOLDEN, 24 + 4, bytes(4)), "start at 1"),
])
def test_malformed_messages_raise_parse_error(bad, why):
    with pytest.raises(p.VcmParseError, match=why):
        p.decode(bad)


def _with_body(msg_type: int, body: bytes) -> bytes:
    return p.HEADER.pack(1, msg_type, 0, 1, 1, 1, len(body)) + body


def test_unknown_tlvs_skipped_unless_critical():
    ack = _with_body(p.REPORT_ACK, b"\x00\x63\x00\x02hi")
    assert p.decode(ack).tlvs == ()
    with pytest.raises(p.VcmParseError, match="critical"):
        p.decode(_with_body(p.REPORT_ACK, b"\x80\x63\x00\x02hi"))


@pytest.mark.parametrize("body, why", [
    (b"", "REPORT carries nothing"),
    (b"\x00\x01\x00\x04abcd", "MN_INFO length"),
    (b"\x00\x05\x00", "truncated TLV"),
    (b"\x00\x02\x00\x20" + bytes(12), "runs past"),
    (b"\x00\x03\x00\x08" + bytes.fromhex("0000000100000001"), "may not carry"),   # SESSION in a REPORT
    (b"\x00\x02\x00\x0c" + bytes.fromhex("0000000b0000000b01000000"), "one node twice"),
    (b"\x00\x02\x00\x0c" + bytes.fromhex("0000000b0000000c09000000"), "trigger"),
])
def test_malformed_reports(body, why):
    with pytest.raises(p.VcmParseError, match=why):
        p.decode(_with_body(p.REPORT, body))


def test_encoder_refuses_what_the_decoder_would_reject():
    bad_spi = p.SaParams(p.DIR_OUT, 17, "aes128gcm16", bytes(16), bytes(4), 10)
    good_in = p.SaParams(p.DIR_IN, 4096, "aes128gcm16", bytes(16), bytes(4), 10)
    with pytest.raises(p.VcmParseError, match="RFC 4303"):
        p.encode(p.Message(p.KEYS, 2, 1, 1, (p.SessionRef(1, 1), p.Peer(11, "::1"), bad_spi, good_in)))
    with pytest.raises(p.VcmParseError, match="carries 0 SessionRef"):
        p.encode(p.Message(p.KEYS_ACK, 2, 1, 1, ()))


# -- fuzz -------------------------------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_parse_or_raise_parse_error(data):
    try:
        msg = p.decode(data)
    except p.VcmParseError:
        return
    assert p.decode(p.encode(msg)) == msg


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([KEYS_GOLDEN, REPORT_GOLDEN, ACK_GOLDEN]),
       st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, 400))
def test_fuzz_mutated_valid_messages(golden, flips, cut):
    data = bytearray(golden)
    for offset, value in flips:
        data[offset % len(data)] = value
    data = bytes(data[:max(cut, 24)])
    try:
        msg = p.decode(data)
    except p.VcmParseError:
        return
    assert p.decode(p.encode(msg)) == msg   # whatever decodes re-encodes to a message with equal content


addresses = st.one_of(st.none(), st.ip_addresses(v=6).map(str))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2 ** 32 - 1), st.integers(1, 2 ** 64 - 1), st.integers(1, 2 ** 32 - 1),
       st.lists(st.builds(p.MnInfo, st.integers(0, 2 ** 32 - 1), st.sampled_from([1, 2]), addresses, addresses,
                          addresses), max_size=5),
       st.lists(st.builds(p.SessionSeen, st.integers(0, 1000), st.integers(1001, 2000), st.sampled_from([1, 2])),
                max_size=3))
def test_fuzz_reports_round_trip(sender, counter, txid, infos, sessions):
    if not infos and not sessions:
        return
    msg = p.Message(p.REPORT, sender, counter, txid, tuple(infos) + tuple(sessions))
    assert p.decode(p.encode(msg)) == msg


def test_binding_key_rides_in_keys_only_and_only_20_bytes_long():
    sa_out = p.SaParams(p.DIR_OUT, 4096, "aes128gcm16", bytes(16), b"salt", 60)
    sa_in = p.SaParams(p.DIR_IN, 4097, "aes128gcm16", bytes(16), b"SALT", 60)
    base = (p.SessionRef(3, 1), p.Peer(12, "2001:db8::12"), sa_out, sa_in)
    for binding in (p.BindingKey(bytes(range(20)), "2001:db8:31::12"), p.BindingKey(bytes(20))):
        msg = p.Message(p.KEYS, 2, 1, 1, base + (binding,))
        assert p.decode(p.encode(msg)).one(p.BindingKey) == binding
    assert "aa" not in repr(p.BindingKey(b"\xaa" * 20))   # key material stays out of logs
    with pytest.raises(p.VcmParseError, match="BINDING_KEY length"):
        p.encode(p.Message(p.KEYS, 2, 1, 1, base + (p.BindingKey(bytes(16)),)))
    with pytest.raises(p.VcmParseError, match="may not carry BindingKey"):
        p.encode(p.Message(p.PEER_READY, 2, 1, 1, (p.SessionRef(3, 1), p.Peer(12), p.BindingKey(bytes(20)))))
    body = p.encode(p.Message(p.KEYS, 2, 1, 1, base))[p.HEADER_LEN:]
    short = struct.pack("!HH", p.TLV_BINDING_KEY, 39) + bytes(39)
    with pytest.raises(p.VcmParseError, match="BINDING_KEY length"):
        p.decode(_with_body(p.KEYS, body + short))


def test_a_shape_checked_once_still_has_every_keys_value_checked():
    p.decode(KEYS_GOLDEN)                      # the KEYS shape is now known valid
    assert (p.KEYS, p.SessionRef, p.Peer, p.SaParams, p.SaParams) in p._VALID_SHAPES
    same_direction = KEYS_MSG.tlvs[:3] + (p.SaParams(p.DIR_OUT, 0x2000, "aes128gcm16", bytes(16), bytes(4), 60),)
    same_spi = KEYS_MSG.tlvs[:3] + (p.SaParams(p.DIR_IN, 0x1000, "aes128gcm16", bytes(16), bytes(4), 60),)
    no_address = (KEYS_MSG.tlvs[0], p.Peer(11)) + KEYS_MSG.tlvs[2:]
    for tlvs, why in ((same_direction, "one outbound and one inbound"), (same_spi, "same SPI"),
                      (no_address, "external home address")):
        with pytest.raises(p.VcmParseError, match=why):
            p.encode(p.Message(p.KEYS, 2, 7, 3, tlvs))


def test_shapes_found_invalid_are_not_remembered_and_the_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(p, "_VALID_SHAPES", set())
    monkeypatch.setattr(p, "_MAX_VALID_SHAPES", 3)
    for _ in range(2):
        with pytest.raises(p.VcmParseError, match="REPORT carries nothing"):
            p.encode(p.Message(p.REPORT, 1, 1, 1, ()))
    assert p._VALID_SHAPES == set()
    for count in range(1, 7):                  # six valid REPORT shapes, three remembered
        infos = tuple(p.SessionSeen(11, 12) for _ in range(count))
        assert p.decode(p.encode(p.Message(p.REPORT, 1, 1, 1, infos))).tlvs == infos
    assert len(p._VALID_SHAPES) == 3
