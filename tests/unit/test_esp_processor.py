"""IPsecProcessor: the outbound / inbound pipelines, drops as verdicts, events and status."""
import json
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeapps.esp import SAD, SPD, IPsecProcessor, SecurityAssociation
from nodeapps.esp.processor import MAX_TRANSPORT_OVERHEAD, MAX_TUNNEL_OVERHEAD
from nodeapps.ipv6 import build_header, pton

KEY = bytes(range(16))
SALT = bytes.fromhex("11223344")
MN, SG = "2001:db8:1::1", "2001:db8:2::1"  # outer (public) addresses
VPN = ["fd00::/16"]


def udp_packet(src="fd00:1::5", dst="fd00:2::9", sport=1000, dport=53, body=b"data", ext=b"", first_nh=None,
               traffic_class=0):
    upper = struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body
    nh = 17 if first_nh is None else first_nh
    return build_header(pton(src), pton(dst), nh, len(ext) + len(upper), traffic_class=traffic_class) + ext + upper


def sa_pair(mode, name="mn->sg", spi=0x1001, **kw):
    out_sa = SecurityAssociation(name=name, direction="out", spi=spi, key=KEY, salt=SALT, mode=mode,
                                 local=MN, remote=SG, **kw)
    in_sa = SecurityAssociation(name=name, direction="in", spi=spi, key=KEY, salt=SALT, mode=mode,
                                local=SG, remote=MN, **kw)
    return out_sa, in_sa


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def link(mode, **kw):
    """Processor of the sender (MN) and the receiver (SG) for traffic fd00:1::/64 -> fd00:2::/64."""
    out_sa, in_sa = sa_pair(mode, **kw)
    rule = {"src": "fd00:1::/64", "dst": "fd00:2::/64", "action": "protect", "sa": "mn->sg"}
    clock = Clock()
    sender = IPsecProcessor(SPD.from_config({"vpn_prefixes": VPN, "rules": [dict(rule, direction="out")]}),
                            SAD([out_sa]), now=clock)
    receiver = IPsecProcessor(SPD.from_config({"vpn_prefixes": VPN, "rules": [dict(rule, direction="in")]}),
                              SAD([in_sa]), now=clock)
    return sender, receiver, clock


def hop_by_hop(next_header):
    return bytes((next_header, 0, 1, 4, 0, 0, 0, 0))  # PadN


def dest_opts_with_hao(next_header, home):
    # Pad to 8n: 2 (header) + 4 (PadN) + 18 (HAO type 201, length 16) = 24.
    return bytes((next_header, 2, 1, 2, 0, 0, 201, 16)) + pton(home)


def dest_opts_plain(next_header):
    return bytes((next_header, 0, 1, 4, 0, 0, 0, 0))


# -- outbound ------------------------------------------------------------------------------------------------

def test_tunnel_outbound_builds_outer_header_and_round_trips():
    sender, receiver, _ = link("tunnel")
    inner = udp_packet(traffic_class=0xB8)
    verdict, sa, wire = sender.outbound(inner)
    assert (verdict, sa.name) == ("protect", "mn->sg")
    assert wire[0] >> 4 == 6
    assert ((wire[0] & 0x0F) << 4 | wire[1] >> 4) == 0xB8  # traffic class copied, RFC 4301 §5.1.2.2
    assert struct.unpack("!H", wire[4:6])[0] == len(wire) - 40
    assert (wire[6], wire[7]) == (50, 64)
    assert (wire[8:24], wire[24:40]) == (pton(MN), pton(SG))
    assert receiver.inbound(wire) == ("accept", receiver.sad.get("mn->sg"), inner)
    assert sender.counters["out_protect"] == 1 and receiver.counters["in_accept"] == 1


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
@pytest.mark.parametrize("size", [40 + 8, 41 + 8, 42 + 8, 43 + 8, 1400])
def test_overhead_never_exceeds_the_published_maximum(mode, size):
    sender, _, _ = link(mode)
    inner = udp_packet(body=bytes(size - 48))
    wire = sender.outbound(inner)[2]
    limit = MAX_TUNNEL_OVERHEAD if mode == "tunnel" else MAX_TRANSPORT_OVERHEAD
    assert len(wire) - len(inner) <= limit
    assert len(wire) % 4 == 0  # 40-octet header + a 4-aligned ESP packet


def test_transport_outbound_inserts_esp_after_ip_header():
    sender, receiver, _ = link("transport")
    inner = udp_packet()
    verdict, _, wire = sender.outbound(inner)
    assert wire[:4] == inner[:4] and wire[7:40] == inner[7:40]
    assert wire[6] == 50
    assert struct.unpack("!H", wire[4:6])[0] == len(wire) - 40
    assert receiver.inbound(wire)[2] == inner


@pytest.mark.parametrize("ext, first_nh, clear_len, nh_pos", [
    (hop_by_hop(17), 0, 8, 40),  # hop-by-hop stays in clear
    (hop_by_hop(60) + dest_opts_with_hao(17, "fd00:1::5"), 0, 32, 48),  # the peer must read the HAO
    (dest_opts_plain(17), 60, 0, 6),  # an ordinary destination options header is protected
    # Destination options before a type 2 routing header: both in clear.
    (dest_opts_plain(43) + bytes((17, 2, 2, 1, 0, 0, 0, 0)) + pton("fd00:2::9"), 60, 32, 48),
])
def test_transport_keeps_the_right_headers_in_clear(ext, first_nh, clear_len, nh_pos):
    sender, receiver, _ = link("transport")
    inner = udp_packet(ext=ext, first_nh=first_nh)
    verdict, _, wire = sender.outbound(inner)
    assert verdict == "protect"
    esp_at = 40 + clear_len
    expected = bytearray(inner[:esp_at])
    expected[4:6] = (len(wire) - 40).to_bytes(2, "big")
    expected[nh_pos] = 50  # RFC 4303 §3.1.1: the chain now points at ESP
    assert wire[:esp_at] == bytes(expected)
    assert wire[esp_at:esp_at + 4] == (0x1001).to_bytes(4, "big")
    verdict, _, back = receiver.inbound(wire)
    assert verdict == "accept"
    assert back == inner


def test_outbound_bypass_discard_and_missing_sa():
    sender, _, clock = link("tunnel")
    clear = udp_packet("2001:db8:9::1", "2001:db8:8::1")
    assert sender.outbound(clear) == ("bypass", None, clear)
    assert sender.outbound(udp_packet("fd00:1::5", "fd00:3::1")) == ("discard", None, None)  # VPN default
    sender.spd.insert({"direction": "out", "dst": "fd00:4::/64", "action": "protect", "sa": "later"}, 0)
    assert sender.outbound(udp_packet("fd00:1::5", "fd00:4::1")) == ("discard", None, None)
    c = sender.counters
    assert (c["out_bypass"], c["policy"], c["no_sa"], c["out_discard"]) == (1, 1, 1, 2)
    events = sender.pop_events()
    assert [(e["event"], e["reason"]) for e in events] == [("esp_drop", "policy"), ("esp_drop", "no_sa")]
    assert events[0]["at"] == 1000.0 and events[0]["dst"] == "fd00:3::1"
    assert sender.pop_events() == []


def test_outbound_malformed_is_counted():
    sender, _, _ = link("tunnel")
    assert sender.outbound(b"\x60" + bytes(10)) == ("discard", None, None)
    assert sender.counters["parse"] == 1


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_outbound_too_large_for_esp_is_dropped(mode):
    sender, _, _ = link(mode)
    largest = udp_packet(body=bytes(65535 - 8))  # IPv6 payload length 65535
    assert sender.outbound(largest)[0] == "discard"  # ESP would need a jumbogram
    assert sender.counters["parse"] == 1
    assert sender.outbound(udp_packet(body=bytes(65535 - 8 - 120)))[0] == "protect"


def test_soft_limit_and_exhaustion_through_processor():
    sender, receiver, clock = link("tunnel", soft_limit=2 ** 32 - 2)
    sa = sender.sad.get("mn->sg")
    sa.seq = 2 ** 32 - 3
    assert sender.outbound(udp_packet())[0] == "protect"
    clock.t = 1001.0
    assert sender.outbound(udp_packet())[0] == "protect"  # seq 2**32 - 1
    assert sender.outbound(udp_packet()) == ("discard", sa, None)
    assert sender.outbound(udp_packet()) == ("discard", sa, None)
    assert sender.counters["seq_exhausted"] == 2
    events = sender.pop_events()
    assert [e["event"] for e in events] == ["sa_soft_limit", "seq_exhausted"]
    assert events[0]["seq"] == 2 ** 32 - 2 and events[0]["at"] == 1000.0
    assert events[1]["at"] == 1001.0


def test_soft_limit_event_from_direct_seal_is_collected():
    sender, _, _ = link("tunnel", soft_limit=1)
    sender.sad.get("mn->sg").seal(41, b"x")
    assert [e["event"] for e in sender.pop_events()] == ["sa_soft_limit"]


# -- inbound -------------------------------------------------------------------------------------------------

def drop_reason(receiver, wire):
    before = dict(receiver.counters)
    verdict, _, inner = receiver.inbound(wire)
    assert (verdict, inner) == ("discard", None)
    changed = [k for k in receiver.counters if receiver.counters[k] != before[k] and k != "in_discard"]
    assert receiver.counters["in_discard"] == before["in_discard"] + 1
    return changed[0] if len(changed) == 1 else changed


def test_inbound_drops_by_reason():
    sender, receiver, _ = link("tunnel")
    wire = [sender.outbound(udp_packet(body=bytes([i]))) [2] for i in range(4)]
    assert receiver.inbound(wire[1])[0] == "accept"
    assert drop_reason(receiver, wire[1]) == "replay"
    tampered = bytearray(wire[2])
    tampered[-1] ^= 0x80
    assert drop_reason(receiver, bytes(tampered)) == "icv"
    assert receiver.inbound(wire[2])[0] == "accept"  # the failed ICV did not use up seq 3
    assert receiver.inbound(wire[0])[0] == "accept"  # reordered within the window
    unknown = wire[3][:40] + (0x7777).to_bytes(4, "big") + wire[3][44:]
    assert drop_reason(receiver, unknown) == "unknown_spi"
    truncated = wire[3][:4] + (30).to_bytes(2, "big") + wire[3][6:70]
    assert drop_reason(receiver, truncated) == "parse"
    assert drop_reason(receiver, wire[3][:60]) == "parse"  # payload length beyond packet end
    sa = receiver.sad.get("mn->sg")
    assert (sa.counters.replay_drops, sa.counters.icv_failures, sa.counters.packets) == (1, 1, 3)
    reasons = [e["reason"] for e in receiver.pop_events()]
    assert reasons == ["replay", "icv", "unknown_spi", "parse", "parse"]


def test_inbound_dummy_packet_is_dropped_not_an_error():
    sender, receiver, _ = link("tunnel")
    sa = sender.sad.get("mn->sg")
    wire = build_header(pton(MN), pton(SG), 50, 0)
    esp = sa.seal(59, b"")
    wire = build_header(pton(MN), pton(SG), 50, len(esp)) + esp
    assert drop_reason(receiver, wire) == "dummy"
    assert receiver.sad.get("mn->sg").counters.dummy_drops == 1


def test_inbound_bad_padding_counted_as_parse():
    _, receiver, _ = link("tunnel")
    header_iv = bytes.fromhex("00001001" "00000001" "0000000000000001")
    plain = b"abc" + bytes((1, 1, 2, 41))
    esp = header_iv + AESGCM(KEY).encrypt(SALT + header_iv[8:], plain, header_iv[:8])
    wire = build_header(pton(MN), pton(SG), 50, len(esp)) + esp
    assert drop_reason(receiver, wire) == "parse"


def test_inbound_policy_check_after_decryption():
    sender, receiver, _ = link("tunnel")
    # The SA carries a packet the inbound SPD does not assign to it (RFC 4301 §5.2): discarded.
    sender.spd.insert({"direction": "out", "action": "protect", "sa": "mn->sg"})
    wire = sender.outbound(udp_packet("2001:db8:5::1", "fd00:2::9"))[2]
    assert drop_reason(receiver, wire) == "policy"
    # A rule naming another SA for the inner packet is also a policy violation.
    receiver.spd.insert({"direction": "in", "src": "fd00:1::/64", "action": "protect", "sa": "other"}, 0)
    assert drop_reason(receiver, sender.outbound(udp_packet())[2]) == "policy"


def test_tunnel_sa_must_carry_ipv6():
    sender, receiver, _ = link("tunnel")
    esp = sender.sad.get("mn->sg").seal(17, b"\0" * 12)
    assert drop_reason(receiver, build_header(pton(MN), pton(SG), 50, len(esp)) + esp) == "policy"


def test_tunnel_inbound_strips_tfc_padding_and_rejects_bad_inner():
    sender, receiver, _ = link("tunnel")
    sa = sender.sad.get("mn->sg")
    inner = udp_packet()
    esp = sa.seal(41, inner + bytes(13))  # RFC 4303 §2.7 traffic flow confidentiality padding
    assert receiver.inbound(build_header(pton(MN), pton(SG), 50, len(esp)) + esp)[2] == inner
    esp = sa.seal(41, inner[:-3])  # inner payload length says more than there is
    assert drop_reason(receiver, build_header(pton(MN), pton(SG), 50, len(esp)) + esp) == "parse"
    esp = sa.seal(41, b"\x45" + bytes(50))
    assert drop_reason(receiver, build_header(pton(MN), pton(SG), 50, len(esp)) + esp) == "parse"


def test_inbound_esp_after_extension_headers_tunnel_mode():
    sender, receiver, _ = link("tunnel")
    wire = sender.outbound(udp_packet())[2]
    ext = dest_opts_with_hao(50, "2001:db8:1::99")
    with_hao = build_header(wire[8:24], wire[24:40], 60, len(ext) + len(wire) - 40) + ext + wire[40:]
    assert receiver.inbound(with_hao)[0] == "accept"


def test_inbound_clear_traffic_bypass_or_policy_drop():
    _, receiver, _ = link("tunnel")
    public = udp_packet("2001:db8:7::1", "2001:db8:2::1")
    assert receiver.inbound(public) == ("bypass", None, public)
    # Clear traffic that the SPD wants protected must not get in (RFC 4301 §5.2).
    assert drop_reason(receiver, udp_packet()) == "policy"
    assert receiver.counters["in_bypass"] == 1


def test_events_bounded_and_time_as_number():
    out_sa, in_sa = sa_pair("tunnel")
    receiver = IPsecProcessor(SPD(vpn_prefixes=VPN), SAD([in_sa]), now=5.0, max_events=3)
    for _ in range(5):
        receiver.inbound(udp_packet())
    receiver.now = 6.0
    events = receiver.pop_events()
    assert len(events) == 3 and {e["at"] for e in events} == {5.0}
    assert receiver.counters["events_lost"] == 2 and receiver.counters["policy"] == 5
    receiver.inbound(udp_packet())
    assert receiver.pop_events()[0]["at"] == 6.0


def test_status_is_json_without_keys():
    sender, receiver, _ = link("transport", created_at=42.0)
    receiver.inbound(sender.outbound(udp_packet())[2])
    status = receiver.status()
    text = json.dumps(status)
    assert KEY.hex() not in text and SALT.hex() not in text
    assert status["sas"][0]["counters"]["packets"] == 1
    assert status["sas"][0]["created_at"] == 42.0
    assert status["spd"]["rules"][0]["sa"] == "mn->sg"
    assert status["counters"]["in_accept"] == 1


def test_rule_swap_moves_traffic_to_new_sa():
    # The VCM case: traffic first goes via the gateway SA, then via a direct SA after a rule swap.
    sender, _, _ = link("tunnel")
    direct_out, _ = sa_pair("tunnel", name="mn1->mn2", spi=0x5005)
    sender.sad.add(direct_out)
    sender.spd.insert({"name": "peer", "direction": "out", "dst": "fd00:2::9/128", "action": "protect",
                       "sa": "mn->sg"}, 0)
    assert sender.outbound(udp_packet())[1].name == "mn->sg"
    sender.spd.replace("peer", {"name": "peer", "direction": "out", "dst": "fd00:2::9/128", "action": "protect",
                                "sa": "mn1->mn2"})
    assert sender.outbound(udp_packet())[1].name == "mn1->mn2"


# -- fuzz ----------------------------------------------------------------------------------------------------

_SENDER, _RECEIVER, _ = link("tunnel")
_VALID = [_SENDER.outbound(udp_packet(body=bytes(i)))[2] for i in range(8)]
_T_SENDER, _T_RECEIVER, _ = link("transport")
_T_VALID = [_T_SENDER.outbound(udp_packet(body=bytes(i), ext=hop_by_hop(17), first_nh=0))[2] for i in range(8)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_any_bytes_inbound_gives_a_verdict(data):
    for receiver in (_RECEIVER, _T_RECEIVER):
        verdict, _, inner = receiver.inbound(data)
        assert verdict in ("accept", "bypass", "discard")
        assert (inner is None) == (verdict == "discard")
    verdict, _, _ = _SENDER.outbound(data)
    assert verdict in ("protect", "bypass", "discard")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 7), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
       st.integers(0, 400), st.booleans())
def test_fuzz_mutated_esp_gives_a_verdict(index, flips, cut, transport):
    receiver, valid = (_T_RECEIVER, _T_VALID) if transport else (_RECEIVER, _VALID)
    data = bytearray(valid[index])
    for position, value in flips:
        if position < len(data):
            data[position] = value
    data = bytes(data[:max(cut, 1)]) if cut < len(data) else bytes(data)
    verdict, _, inner = receiver.inbound(data)
    assert verdict in ("accept", "bypass", "discard")  # bypass: the flip turned it into clear traffic
    if verdict == "accept":
        assert inner[0] >> 4 == 6
