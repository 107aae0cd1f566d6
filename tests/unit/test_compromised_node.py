"""A compromised MN's packets into the office look like the MN's own: sealed under its SG tunnel SA, the first
header inside from its care-of address to its home agent (the SG's tunnel policy), the forged packet innermost."""
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6

from nodeapps import ipv6
from nodeapps.esp.processor import IPsecProcessor
from nodeapps.esp.sa import SecurityAssociation
from nodeapps.esp.sad import SAD
from nodeapps.esp.spd import SPD
from nodeapps.roles import vcm_shell
from topologies.attacker import CompromisedNode

KEY, SALT = "11" * 16, "22" * 4
CARE_OF, MOVED_TO, SG, HA = "2001:db8:21::a:1", "2001:db8:22::a:1", "2001:db8:0:1::1", "fdc0:ffee:0:1::2"
VPN = "fdc0:ffee::/48"


def sa(direction, local, remote):
    return {"name": "mn1->sg", "spi": 0x1000, "algorithm": "aes128gcm16", "key": KEY, "salt": SALT,
            "mode": "tunnel", "direction": direction, "local": local, "remote": remote}


class FakeLab:
    def __init__(self, care_of):
        self.care_of = care_of
        self.node_configs = {"mn1": {"role": "mobile-node", "sas": [sa("out", CARE_OF, SG)],
                                     "mobility": {"address": "fdc0:ffee:0:1::a:1", "home_agent": HA}}}

    def status(self, node):
        return {"ipsec": {"sas": [{"name": "mn1->sg", "seq": 7}]}, "mobility": {"care_of_address": self.care_of}}


def sg_processor(care_of):
    rule = {"name": "mn1-coa-in", "direction": "in", "src": f"{care_of}/128", "dst": VPN, "action": "protect",
            "sa": "mn1->sg"}
    return IPsecProcessor(SPD.from_config({"vpn_prefixes": [VPN], "rules": [rule]}),
                          SAD([SecurityAssociation.from_config(sa("in", SG, CARE_OF))]))


def forged():
    return IPv6(src="fdc0:ffee:0:1::a:2", dst="fdc0:ffee:0:1::10") / UDP(sport=1, dport=7777) / b"not mine"


def test_reverse_tunnelled_packet_passes_the_tunnel_policy_and_keeps_the_forged_source_innermost():
    node = CompromisedNode(FakeLab(CARE_OF), "mn1")
    (packet,) = node.tunnel(node.reverse_tunnel(forged()))
    verdict, sa_used, inner = sg_processor(CARE_OF).inbound(packet)
    assert verdict == "accept" and sa_used.name == "mn1->sg"
    assert (ipv6.ntop(inner[8:24]), ipv6.ntop(inner[24:40]), inner[6]) == (CARE_OF, HA, ipv6.NH_IPV6)
    assert vcm_shell.innermost_addresses(inner)[0] == ipv6.pton("fdc0:ffee:0:1::a:2")


def test_unwrapped_packet_is_refused_by_the_tunnel_policy():
    node = CompromisedNode(FakeLab(CARE_OF), "mn1")
    (packet,) = node.tunnel(forged())
    assert sg_processor(CARE_OF).inbound(packet)[0] != "accept"


def test_reverse_tunnel_starts_at_the_care_of_address_the_mn_reports_now():
    node = CompromisedNode(FakeLab(MOVED_TO), "mn1")
    (packet,) = node.reverse_tunnel([forged()])
    assert ipv6.ntop(packet[8:24]) == MOVED_TO and packet[6] == ipv6.NH_IPV6
    assert packet[40:] == bytes(forged())
