"""ESP in UDP (RFC 3948): encapsulation, the non-ESP marker and keepalives, GSO batching, scapy as oracle."""
import os

import pytest
from scapy.all import ESP, UDP, IPv6, Raw, raw
from scapy.layers.ipsec import NAT_KEEPALIVE, NON_ESP
from scapy.layers.ipsec import SecurityAssociation as ScapySA

from nodeapps.esp import SAD, SPD, ConfigError, IPsecProcessor, SecurityAssociation, udpencap

KEY, SALT = bytes(range(0x40, 0x50)), bytes.fromhex("01020304")
OUTER_A, OUTER_B = "2001:db8:a::1", "2001:db8:b::1"
INNER = raw(IPv6(src="fd00:1::10", dst="fd00:2::20") / UDP(sport=4000, dport=53) / Raw(b"SVPN-INNER-MARK" * 5))


def pair(encap="udp"):
    config = dict(name="a->b", spi=0x2002, key=KEY, salt=SALT, mode="tunnel", encap=encap)
    out_sa = SecurityAssociation(direction="out", local=OUTER_A, remote=OUTER_B, **config)
    in_sa = SecurityAssociation(direction="in", local=OUTER_B, remote=OUTER_A, **config)
    rule = {"src": "fd00:1::/32", "dst": "fd00:2::/32", "action": "protect", "sa": "a->b"}
    sender = IPsecProcessor(SPD.from_config({"rules": [dict(rule, direction="out")]}), SAD([out_sa]))
    receiver = IPsecProcessor(SPD.from_config({"rules": [dict(rule, direction="in")]}), SAD([in_sa]))
    return sender, receiver


def scapy_sa():
    return ScapySA(ESP, spi=0x2002, crypt_algo="AES-GCM", crypt_key=KEY + SALT, auth_algo="NULL",
                   tunnel_header=IPv6(src=OUTER_A, dst=OUTER_B), nat_t_header=UDP(sport=4500, dport=4500))


def test_encapsulated_packet_is_udp_4500_with_a_valid_checksum_and_decapsulates_to_the_native_one():
    sender, receiver = pair()
    _verdict, _sa, native = sender.outbound(INNER)
    wire = udpencap.encapsulate(native)
    assert len(wire) == len(native) + udpencap.OVERHEAD
    pkt = IPv6(wire)
    assert pkt.nh == 17 and (pkt[UDP].sport, pkt[UDP].dport) == (4500, 4500) and pkt.haslayer(ESP)
    assert pkt[ESP].spi == 0x2002
    check = pkt[UDP].chksum
    del pkt[UDP].chksum
    assert check != 0 and IPv6(raw(pkt))[UDP].chksum == check  # scapy computes the same checksum
    assert udpencap.decapsulate(wire) == native
    assert receiver.inbound(udpencap.decapsulate(wire))[2] == INNER


def test_scapy_decrypts_our_encapsulated_packets():
    sender, _ = pair()
    sa = scapy_sa()
    for seq in (1, 2, 3):
        wire = udpencap.encapsulate(sender.outbound(INNER)[2])
        assert IPv6(wire)[ESP].seq == seq
        assert raw(sa.decrypt(IPv6(wire))) == INNER


def test_we_decrypt_scapy_encapsulated_packets():
    _, receiver = pair()
    sa = scapy_sa()
    for seq in (4, 2, 7):
        pkt = sa.encrypt(IPv6(INNER), seq_num=seq)
        assert pkt.nh == 17 and pkt[UDP].dport == 4500
        del pkt[UDP].chksum  # scapy leaves it 0 (RFC 3948 §2.1 allows that only over IPv4)
        verdict, _, inner = receiver.inbound(udpencap.decapsulate(raw(pkt)))
        assert verdict == "accept" and inner == INNER


def _udp(payload, dport=4500, chksum=None):
    pkt = IPv6(src=OUTER_A, dst=OUTER_B) / UDP(sport=4500, dport=dport) / Raw(payload)
    if chksum is not None:
        pkt[UDP].chksum = chksum
    return raw(pkt)


def test_non_esp_marker_and_keepalive_are_not_esp():
    ike = b"\0\0\0\0" + os.urandom(28)  # RFC 3948 §2.2: IKE after the non-ESP marker
    assert udpencap.classify(ike) == udpencap.NON_ESP
    assert udpencap.classify(b"\xff") == udpencap.KEEPALIVE_KIND
    assert udpencap.classify(b"\0\0\x20\x02" + bytes(4)) == udpencap.ESP
    assert udpencap.classify(b"\x01\x02\x03") == udpencap.INVALID
    assert udpencap.decapsulate(_udp(ike)) is None
    assert udpencap.decapsulate(_udp(b"\xff")) is None
    # scapy's dissector agrees on what each payload is
    assert IPv6(_udp(ike)).haslayer(NON_ESP) and IPv6(_udp(b"\xff")).haslayer(NAT_KEEPALIVE)


@pytest.mark.parametrize("wire, reason", [
    (_udp(bytes(range(40)), dport=4501), "port"),
    (_udp(bytes(range(40)), chksum=0x1234), "checksum"),
    (_udp(b"\x01\x02\x03"), "neither"),
    (raw(IPv6(src=OUTER_A, dst=OUTER_B) / Raw(b"x" * 20)), "not UDP"),
])
def test_malformed_datagrams_raise_one_parse_error(wire, reason):
    with pytest.raises(udpencap.EncapError, match=reason):
        udpencap.decapsulate(wire)


def test_a_zero_udp_checksum_is_refused_over_ipv6():
    sender, _ = pair()
    wire = bytearray(udpencap.encapsulate(sender.outbound(INNER)[2]))
    wire[46:48] = b"\0\0"
    with pytest.raises(udpencap.EncapError, match="checksum"):
        udpencap.decapsulate(bytes(wire))


def test_only_native_esp_directly_after_the_header_is_encapsulated():
    with pytest.raises(udpencap.EncapError):
        udpencap.encapsulate(INNER)


def test_native_rebuilds_what_decapsulation_gives():
    sender, _ = pair()
    native = sender.outbound(INNER)[2]
    src, dst = native[8:24], native[24:40]
    assert udpencap.native(src, dst, native[40:]) == native  # hop limit 64, traffic class 0


def test_segments_split_a_gro_buffer_at_the_segment_size():
    data = bytes(range(250))
    assert [bytes(s) for s in udpencap.segments(data, 100)] == [data[:100], data[100:200], data[200:]]
    assert udpencap.segments(data, 0) == [data]


@pytest.mark.parametrize("sizes, expected", [
    ([1400] * 5, [(0, 5)]),
    ([1400, 1400, 900, 1400], [(0, 3), (3, 4)]),       # a shorter datagram ends a send
    ([900, 1400, 1400], [(0, 1), (1, 3)]),             # a longer one cannot follow
    ([1400] * 70, [(0, 46), (46, 70)]),                # 64 KB per send
    ([100] * 130, [(0, 64), (64, 128), (128, 130)]),   # at most 64 datagrams per send
])
def test_gso_batches_follow_the_udp_segment_rules(sizes, expected):
    assert udpencap.batches(sizes, 64) == expected
    for start, end in udpencap.batches(sizes, 64):
        run = sizes[start:end]
        assert all(s == run[0] for s in run[:-1]) and run[-1] <= run[0]
        assert sum(run) <= 0xFFFF - 8 and len(run) <= 64


def test_sa_encap_option_is_validated_and_reported():
    config = {"name": "x", "direction": "out", "spi": 0x300, "algorithm": "aes128gcm16", "key": KEY.hex(),
              "salt": SALT.hex(), "mode": "tunnel", "local": OUTER_A, "remote": OUTER_B}
    assert SecurityAssociation.from_config(config).encap is None
    assert SecurityAssociation.from_config(dict(config, encap="udp")).status()["encap"] == "udp"
    with pytest.raises(ConfigError, match="encap"):
        SecurityAssociation.from_config(dict(config, encap="tcp"))
    with pytest.raises(ConfigError, match="tunnel mode only"):
        SecurityAssociation.from_config(dict(config, encap="udp", mode="transport"))
