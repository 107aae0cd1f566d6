"""Interoperability with scapy's independent ESP implementation (AES-GCM, RFC 4106), both ways."""
import pytest
from scapy.all import ESP, UDP, IPv6, IPv6ExtHdrHopByHop, Raw, raw
from scapy.layers.inet6 import ICMPv6EchoRequest
from scapy.layers.ipsec import SecurityAssociation as ScapySA

from nodeapps.esp import SAD, SPD, IPsecProcessor, SecurityAssociation

SALT = bytes.fromhex("01020304")
KEYS = {"aes128": bytes(range(0x40, 0x50)), "aes256": bytes(range(0x60, 0x80))}
OUTER_A, OUTER_B = "2001:db8:a::1", "2001:db8:b::1"
INNERS = {
    "udp": IPv6(src="fd00:1::10", dst="fd00:2::20") / UDP(sport=4000, dport=53) / Raw(b"q" * 37),
    "icmp": IPv6(src="fd00:1::10", dst="fd00:2::20") / ICMPv6EchoRequest(id=7, seq=9, data=b"ping"),
    "hbh": IPv6(src="fd00:1::10", dst="fd00:2::20") / IPv6ExtHdrHopByHop() / UDP(sport=1, dport=2) / Raw(b"x" * 99),
}


def ours(mode, key, esn=False):
    """Sender A and receiver B processors sharing one SA in direction A -> B."""
    out_sa = SecurityAssociation(name="a->b", direction="out", spi=0x2002, key=key, salt=SALT, mode=mode,
                                 local=OUTER_A, remote=OUTER_B, esn=esn)
    in_sa = SecurityAssociation(name="a->b", direction="in", spi=0x2002, key=key, salt=SALT, mode=mode,
                                local=OUTER_B, remote=OUTER_A, esn=esn)
    rule = {"src": "fd00:1::/32", "dst": "fd00:2::/32", "action": "protect", "sa": "a->b"}
    sender = IPsecProcessor(SPD.from_config({"rules": [dict(rule, direction="out")]}), SAD([out_sa]))
    receiver = IPsecProcessor(SPD.from_config({"rules": [dict(rule, direction="in")]}), SAD([in_sa]))
    return out_sa, sender, receiver


def theirs(mode, key, esn=False):
    tunnel = IPv6(src=OUTER_A, dst=OUTER_B) if mode == "tunnel" else None
    return ScapySA(ESP, spi=0x2002, crypt_algo="AES-GCM", crypt_key=key + SALT, auth_algo="NULL",
                   tunnel_header=tunnel, esn_en=esn)


CASES = [(mode, keyname, inner) for mode in ("tunnel", "transport") for keyname in KEYS for inner in INNERS]


@pytest.mark.parametrize("mode, keyname, inner_name", CASES)
def test_scapy_decrypts_ours(mode, keyname, inner_name):
    inner = raw(INNERS[inner_name])
    _, sender, _ = ours(mode, KEYS[keyname])
    sa = theirs(mode, KEYS[keyname])
    for seq in (1, 2, 3):
        verdict, _, wire = sender.outbound(inner)
        assert verdict == "protect"
        esp = IPv6(wire)[ESP]
        assert (esp.spi, esp.seq) == (0x2002, seq)
        decrypted = IPv6(raw(sa.decrypt(IPv6(wire))))
        assert raw(decrypted) == inner


@pytest.mark.parametrize("mode, keyname, inner_name", CASES)
def test_we_decrypt_scapy(mode, keyname, inner_name):
    inner = raw(INNERS[inner_name])
    _, _, receiver = ours(mode, KEYS[keyname])
    sa = theirs(mode, KEYS[keyname])
    for seq in (5, 3, 9):  # reordered within the window
        wire = raw(sa.encrypt(IPv6(inner), seq_num=seq))  # scapy draws a random IV
        verdict, got_sa, decrypted = receiver.inbound(wire)
        assert verdict == "accept"
        assert got_sa.name == "a->b"
        assert decrypted == inner


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_esn_both_ways(mode):
    key = KEYS["aes128"]
    out_sa, sender, receiver = ours(mode, key, esn=True)
    sa = theirs(mode, key, esn=True)
    inner = raw(INNERS["udp"])
    out_sa.seq = (5 << 32) + 10  # next packet carries 5:11
    verdict, _, wire = sender.outbound(inner)
    assert IPv6(wire)[ESP].seq == 11
    assert raw(IPv6(raw(sa.decrypt(IPv6(wire), esn=5)))) == inner
    # Our receiver starts at 0, so it accepts the high half 0 only; jump its window first.
    receiver.sad.get("a->b").window.commit((5 << 32) + 1)
    wire = raw(sa.encrypt(IPv6(inner), seq_num=12, esn=5))
    assert receiver.inbound(wire)[0] == "accept"
    wire = raw(sa.encrypt(IPv6(inner), seq_num=13, esn=4))  # wrong high half: ICV fails
    assert receiver.inbound(wire)[0] == "discard"
    assert receiver.counters["icv"] == 1
