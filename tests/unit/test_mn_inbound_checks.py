"""The mobile node's inbound checks without root: RA validation (RFC 4861 §6.1.2) and damping (RFC 6275
§11.5.1), the signed office announcement with freshness, and the inbound policy after decapsulation (RFC
4301 §5.2) on packets as the mobility cores hand them over."""
import subprocess
import shutil

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_RA, ICMPv6NDOptAdvInterval, ICMPv6NDOptPrefixInfo, IPv6

from nodeapps import ipv6
from nodeapps.esp.inbound_policy import VpnPrefixes, vpn_source_allowed
from nodeapps.esp.spd import SPD
from nodeapps.mobility import announcement as ann
from nodeapps.mobility import messages as m
from nodeapps.mobility.mobile import MobileNode
from nodeapps.mobility.router_discovery import MovementDamper, RaDecision, hop_limit_from_ancillary, ra_invalid_reason
from tests.unit.test_mobility_mn_to_mn import EXT, both_out, udp

RA = bytes(ICMPv6ND_RA(routerlifetime=1800) / ICMPv6NDOptPrefixInfo(prefix="2001:db8:21::", prefixlen=64)
           / ICMPv6NDOptAdvInterval(advint=70))


# ---- RA validation ---------------------------------------------------------------------------------------

def test_a_link_local_ra_with_hop_limit_255_is_valid():
    assert ra_invalid_reason(RA, "fe80::1", 255) is None
    assert ra_invalid_reason(RA, "fe80::1%mn1-eth0", 255) is None


@pytest.mark.parametrize("message,source,hop_limit,reason", [
    (RA, "fe80::1", 64, "hop limit 64"),                        # forwarded: sent from beyond the link
    (RA, "fe80::1", None, "hop limit None"),                    # no IPV6_HOPLIMIT: cannot tell, refuse
    (RA, "2001:db8:ff::1", 255, "not link-local"),              # global source (the Internet core attack)
    (RA, "2001:db8:ff::1", 64, "not link-local"),
    (RA[:1] + b"\x01" + RA[2:], "fe80::1", 255, "code 1"),
    (RA[:12], "fe80::1", 255, "fewer than 16"),
    (RA + b"\x03\x00" + bytes(6), "fe80::1", 255, "length 0"),
    (RA + b"\x03", "fe80::1", 255, "truncated option"),
    (RA + b"\x03\x04" + bytes(6), "fe80::1", 255, "past the message"),
    (bytes(ICMPv6ND_NA()), "fe80::1", 255, "type 136"),
])
def test_invalid_router_advertisements_are_named(message, source, hop_limit, reason):
    assert reason in ra_invalid_reason(message, source, hop_limit)


def test_hop_limit_comes_from_the_ipv6_hoplimit_control_message():
    assert hop_limit_from_ancillary([(41, 50, bytes(20)), (41, 52, (255).to_bytes(4, "little"))]) == 255
    assert hop_limit_from_ancillary([(41, 50, bytes(20))]) is None


# ---- damping ---------------------------------------------------------------------------------------------

def attached(now=0.0):
    damper = MovementDamper(hold_down=1.0)
    assert damper.router_advertisement(("fe80::1", "wlan1"), "fe80::1", now, 70) is RaDecision.MOVE
    return damper


def test_a_flood_of_new_routers_does_not_move_a_node_whose_router_keeps_advertising():
    damper, moves = attached(), 0
    for i in range(40):   # 40 rogue routers, 10 ms apart; the real one advertises every 50 ms
        now = 0.01 * (i + 1)
        if i % 5 == 0:
            assert damper.router_advertisement(("fe80::1", "wlan1"), "fe80::1", now, 70) is RaDecision.CURRENT
        verdict = damper.router_advertisement((f"fe80::bad:{i}", "rogue"), f"fe80::bad:{i}", now, 70)
        moves += verdict is RaDecision.MOVE
    assert moves == 0 and damper.damped == 40 and damper.link == ("fe80::1", "wlan1")


def test_a_flood_after_the_router_went_quiet_makes_at_most_one_link_decision():
    damper, moves = attached(), 0
    for i in range(40):   # the real router is gone (no RA since 0.0 s), the hold-down over
        now = 1.3 + 0.01 * i
        moves += damper.router_advertisement((f"fe80::bad:{i}", "rogue"), f"fe80::bad:{i}", now, 70) \
            is RaDecision.MOVE
    assert moves == 1 and damper.damped == 39


def test_a_carrier_change_lets_the_first_ra_decide_at_once():
    damper = attached()
    damper.router_advertisement(("fe80::1", "wlan1"), "fe80::1", 0.05, 70)
    damper.carrier_changed(0.06)
    damper.carrier_changed(0.07)
    # The lab's moves: the new link's RA right after the carrier came back, well inside the hold-down.
    assert damper.router_advertisement(("fe80::2", "cell"), "fe80::2", 0.08, 70) is RaDecision.MOVE
    assert damper.router_advertisement(("fe80::3", "rogue"), "fe80::3", 0.09, 70) is RaDecision.DAMPED
    assert damper.decisions == 2


def test_the_hold_down_spaces_decisions_without_a_carrier_change():
    damper = attached()
    assert damper.router_advertisement(("fe80::2", "b"), "fe80::2", 0.5, 70) is RaDecision.DAMPED  # hold-down
    assert damper.router_advertisement(("fe80::2", "b"), "fe80::2", 1.1, 70) is RaDecision.MOVE  # 1 quiet
    assert damper.router_advertisement(("fe80::3", "c"), "fe80::3", 1.5, 70) is RaDecision.DAMPED  # hold-down
    assert damper.router_advertisement(("fe80::3", "c"), "fe80::3", 2.5, 70) is RaDecision.MOVE


def test_a_lost_link_is_detected_again_from_the_next_ra():
    damper = attached()
    damper.link_lost(0.1)
    assert damper.router_advertisement(("fe80::1", "wlan1b"), "fe80::1", 0.11, 70) is RaDecision.MOVE


# ---- signed office announcement --------------------------------------------------------------------------

HA = ipv6.pton("fdc0:ffee:0:1::2")
PREFIX = ipv6.pton("fdc0:ffee:0:1::")
PRIVATE, PUBLIC = ann.generate_key_pair()
SIGNER, VERIFIER = ann.load_private_key(PRIVATE), ann.load_public_key(PUBLIC)
NOW = 1_800_000_000.0


def announcement(at=NOW, counter=1, key=SIGNER, source=HA):
    return ann.build(key, source, PREFIX, int(at * 1e9), counter)


def test_a_good_announcement_names_the_prefix_and_its_stamp():
    checked = ann.verify(VERIFIER, announcement(), NOW + 0.01)
    assert checked.verdict is ann.Verdict.OK and checked.prefix == PREFIX
    assert checked.stamp == (int(NOW * 1e9), 1)


def test_an_announcement_signed_with_another_key_is_bad():
    other = ann.load_private_key(ann.generate_key_pair()[0])
    checked = ann.verify(VERIFIER, announcement(key=other), NOW)
    assert checked.verdict is ann.Verdict.BAD and checked.reason == "bad signature"


def test_a_changed_source_prefix_or_timestamp_breaks_the_signature():
    packet = announcement()
    for offset in (8, 40 + 16, 40 + 32, 40 + 40):   # source, prefix, timestamp, counter
        forged = bytearray(packet)
        forged[offset] ^= 1
        assert ann.verify(VERIFIER, bytes(forged), NOW).verdict is ann.Verdict.BAD


def test_a_replayed_announcement_is_stale():
    first = ann.verify(VERIFIER, announcement(), NOW)
    again = ann.verify(VERIFIER, announcement(), NOW + 0.01, last=first.stamp)
    assert again.verdict is ann.Verdict.STALE and "replayed" in again.reason
    older = ann.verify(VERIFIER, announcement(at=NOW - 0.05, counter=9), NOW, last=first.stamp)
    assert older.verdict is ann.Verdict.STALE
    newer = ann.verify(VERIFIER, announcement(at=NOW + 0.05, counter=2), NOW + 0.06, last=first.stamp)
    assert newer.verdict is ann.Verdict.OK


def test_an_old_announcement_is_stale_and_one_from_the_future_is_bad():
    assert ann.verify(VERIFIER, announcement(at=NOW - ann.MAX_AGE_S - 0.1), NOW).verdict is ann.Verdict.STALE
    assert ann.verify(VERIFIER, announcement(at=NOW - ann.MAX_AGE_S + 0.1), NOW).verdict is ann.Verdict.OK
    assert ann.verify(VERIFIER, announcement(at=NOW + 5), NOW).verdict is ann.Verdict.BAD


@pytest.mark.parametrize("cut", [0, 39, 40, 41, 80, len(announcement()) - 1])
def test_a_truncated_announcement_is_bad(cut):
    assert ann.verify(VERIFIER, announcement()[:cut], NOW).verdict is ann.Verdict.BAD


def test_a_forwarded_or_unicast_announcement_is_bad():
    packet = bytearray(announcement())
    packet[7] = 254
    assert "hop limit" in ann.verify(VERIFIER, bytes(packet), NOW).reason
    packet = bytearray(announcement())
    packet[24:40] = ipv6.pton("2001:db8::1")
    assert ann.verify(VERIFIER, bytes(packet), NOW).verdict is ann.Verdict.BAD


@pytest.mark.parametrize("text", ["zz" * 32, "00" * 31, ""])
def test_bad_keys_get_a_one_line_error(text):
    with pytest.raises(ValueError, match="private_key"):
        ann.load_private_key(text)


def test_the_announcement_is_a_clean_ipv6_packet_for_scapy_and_tshark(tmp_path):
    packet = announcement()
    parsed = IPv6(packet)
    assert parsed.nh == 253 and parsed.hlim == 255 and parsed.dst == "ff02::1" and parsed.plen == ann.PAYLOAD_LEN == 112
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap
    path = str(tmp_path / "announcement.pcap")
    wrpcap(path, [Ether(dst="33:33:00:00:00:01") / parsed])
    out = subprocess.run(["tshark", "-r", path, "-V"], capture_output=True, text=True, timeout=60).stdout
    assert "(253)" in out and "[Length: 112]" in out   # the IPv6 header, then the payload as data
    assert "Malformed" not in out and "Expert Info (Error" not in out


# ---- inbound policy after decapsulation ------------------------------------------------------------------

VPN = ["fdc0:ffee::/32"]
OFFICE_FS = ipv6.pton("fdc0:ffee:0:1::10")
OFFICE_HA = ipv6.pton("fdc0:ffee:0:1::2")
HOME = ipv6.pton("fdc0:ffee:0:1::a:1")
COA = ipv6.pton("2001:db8:21::a:1")
INTERNET_HOST = ipv6.pton("2001:db8:99::7")


class FakeSa:
    def __init__(self, name):
        self.name = name


DOWN = FakeSa("sg->mn1")


def external_spd():
    """The MN's SPD outside the office, as the lab writes it: VPN traffic only in the SG tunnel SA pair."""
    return SPD([{"direction": "out", "src": "::/0", "dst": p, "action": "protect", "sa": "mn1->sg"} for p in VPN]
               + [{"direction": "in", "src": p, "dst": "::/0", "action": "protect", "sa": DOWN.name} for p in VPN],
               VPN)


def internal_spd():
    return SPD([{"direction": d, "src": "::/0" if d == "out" else p, "dst": p if d == "out" else "::/0",
                 "action": "bypass"} for p in VPN for d in ("out", "in")], VPN)


def away_core():
    core = MobileNode(HOME, OFFICE_HA)
    core.move_to(COA, 0.0)
    return core


def test_rh2_data_with_a_forged_office_source_is_refused_in_clear():
    core = away_core()
    forged = m.insert_routing_header(udp(OFFICE_FS, HOME), COA)   # RH2 naming our home address
    delivered = core.incoming(forged, 0.1)
    assert delivered is not None and delivered[8:24] == OFFICE_FS   # the core alone would deliver it
    assert not vpn_source_allowed(delivered, VpnPrefixes(VPN), spd=external_spd(), sa=None)


def test_rh2_data_from_an_internet_correspondent_passes():
    core = away_core()
    delivered = core.incoming(m.insert_routing_header(udp(INTERNET_HOST, HOME), COA), 0.1)
    assert vpn_source_allowed(delivered, VpnPrefixes(VPN), spd=external_spd(), sa=None)


def test_a_clear_tunnel_claiming_the_home_agent_is_refused_outer_and_inner():
    core = away_core()
    forged = m.encapsulate(udp(OFFICE_FS, HOME), OFFICE_HA, COA)
    delivered = core.incoming(forged, 0.1)
    assert delivered is not None   # outer source = our home agent: the core alone accepts it
    vpn, spd = VpnPrefixes(VPN), external_spd()
    assert not vpn_source_allowed(forged, vpn, spd=spd, sa=None)
    assert not vpn_source_allowed(delivered, vpn, spd=spd, sa=None)


def test_the_home_agents_tunnel_out_of_the_sg_tunnel_sa_passes():
    core = away_core()
    inner = m.encapsulate(udp(OFFICE_FS, HOME), OFFICE_HA, COA)   # what the SG tunnel SA handed over
    delivered = core.incoming(inner, 0.1)
    vpn, spd = VpnPrefixes(VPN), external_spd()
    assert vpn_source_allowed(inner, vpn, spd=spd, sa=DOWN)
    assert vpn_source_allowed(delivered, vpn, spd=spd, sa=DOWN)


def test_an_office_source_out_of_an_sa_whose_selectors_do_not_cover_it_is_refused():
    vcm_direct = FakeSa("vcm-7-in")   # e.g. a peer MN's direct SA: it may carry only that peer's address
    spd = SPD([{"name": "peer", "direction": "in", "src": "fdc0:ffee:0:1::a:2/128", "dst": "::/0",
                "action": "protect", "sa": vcm_direct.name}] + list(external_spd().rules), VPN)
    vpn = VpnPrefixes(VPN)
    assert vpn_source_allowed(udp(ipv6.pton("fdc0:ffee:0:1::a:2"), HOME), vpn, spd=spd, sa=vcm_direct)
    assert not vpn_source_allowed(udp(OFFICE_FS, HOME), vpn, spd=spd, sa=vcm_direct)


def test_inside_the_office_clear_office_sources_pass_by_the_bypass_policy():
    assert vpn_source_allowed(udp(OFFICE_FS, HOME), VpnPrefixes(VPN), spd=internal_spd(), sa=None)


def test_without_vpn_rules_a_vpn_source_never_passes_in_clear():
    """The correspondent: no SA, no VPN rules; a HAO claiming a VPN home address is refused."""
    assert not vpn_source_allowed(udp(OFFICE_FS, INTERNET_HOST), VpnPrefixes(VPN), spd=SPD([], []), sa=None)
    assert vpn_source_allowed(udp(EXT["a"], INTERNET_HOST), VpnPrefixes(VPN), spd=SPD([], []), sa=None)


def test_hao_data_from_a_route_optimised_peer_passes_only_for_the_insecure_mode_and_its_peers():
    net = both_out(public=True)     # embodiment 2: the peers' home addresses are VPN addresses
    wire = net.node["a"].wrap(udp(EXT["a"], EXT["b"]), net.now)
    assert wire is not None
    delivered = net.node["b"].receive(wire, net.now)
    assert delivered is not None and delivered[8:24] == EXT["a"]
    vpn, spd = VpnPrefixes(["2001:db8:e0::/64"]), SPD([], ["2001:db8:e0::/64"])
    peers = frozenset({EXT["a"]})
    assert vpn_source_allowed(delivered, vpn, spd=spd, insecure_peers=peers, insecure_path=True)
    # vcm-esp: the peers' data must come out of the VCM's SA; clear HAO data is refused
    assert not vpn_source_allowed(delivered, vpn, spd=spd, insecure_peers=frozenset(), insecure_path=True)
    # a configured peer's address that did not come by the binding check (e.g. RH2 only)
    assert not vpn_source_allowed(delivered, vpn, spd=spd, insecure_peers=peers, insecure_path=False)


def test_hao_data_claiming_another_vpn_address_is_refused_even_in_the_insecure_mode():
    spoof = udp(OFFICE_FS, HOME)
    assert not vpn_source_allowed(spoof, VpnPrefixes(VPN), spd=external_spd(),
                                  insecure_peers=frozenset({ipv6.pton("fdc0:ffee:0:1::a:2")}), insecure_path=True)


def test_short_packets_never_pass():
    assert not vpn_source_allowed(b"\x60" + bytes(20), VpnPrefixes(VPN), spd=external_spd())


# ---- configuration ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("addressing", ["private", "public"])
def test_the_lab_gives_the_ha_the_only_private_key_and_every_mn_the_public_key(tmp_path, addressing):
    from nodeapps.runtime.config import NodeConfig
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing=addressing, mobile_nodes=2, attachments=["wlan1", "office"], mobility=True,
                  correspondent=addressing == "private")
    lab.run_dir = str(tmp_path)
    configs = lab._make_configs()
    private = configs["ha"]["mobility"]["announcement"]["private_key"]
    public = ann.load_private_key(private).public_key().public_bytes_raw().hex()
    for mn in ("mn1", "mn2"):
        section = configs[mn]["mobility"]["announcement"]
        assert section == {"public_key": public}
        assert private not in str(configs[mn])     # no MN can sign, and no group secret is left
        NodeConfig.from_dict(configs[mn])
    NodeConfig.from_dict(configs["ha"])
    if addressing == "private":
        assert configs["cn"]["mobility"]["vpn_prefixes"] == list(lab.plan.vpn_prefixes)
    # a new lab, a new key pair
    other = SvpnLab(addressing=addressing, mobile_nodes=2, attachments=["wlan1", "office"], mobility=True)
    other.run_dir = str(tmp_path)
    assert other._make_configs()["ha"]["mobility"]["announcement"]["private_key"] != private


@pytest.mark.parametrize("role,announce,named", [
    ("home-agent", {"prefix": "fdc0::/64"}, "announcement.private_key is missing"),
    ("home-agent", {"private_key": "xyz"}, "announcement.private_key: not hexadecimal"),
    ("mobile-node", {"public_key": "00" * 16}, "announcement.public_key: expected 32 bytes"),
    ("mobile-node", {"sa": {}}, "announcement.public_key is missing"),
    ("mobile-node", {"public_key": PUBLIC, "max_age": -1}, "announcement.max_age"),
])
def test_bad_announcement_keys_get_a_one_line_config_error(role, announce, named):
    from nodeapps.runtime.config import ConfigError, _mobility
    with pytest.raises(ConfigError, match=named) as info:
        _mobility({"address": "fdc0::2", "peers": [], "announcement": announce}, role)
    assert "\n" not in str(info.value)


def test_a_peer_rule_ahead_of_the_tunnel_rule_does_not_refuse_the_peers_traffic_through_the_sg_tunnel():
    """After a VCM KEYS the peer's home address has its own inbound rule (the direct SA) first in the SPD;
    its return routability via the home agent and its data before the switch still come out of the SG
    tunnel SA, whose selectors cover the whole VPN."""
    peer = ipv6.pton("fdc0:ffee:0:1::a:2")
    spd = SPD([{"name": "vcm-in", "direction": "in", "src": "fdc0:ffee:0:1::a:2/128", "dst": "::/0",
                "action": "protect", "sa": "vcm-7-in"}] + list(external_spd().rules), VPN)
    assert vpn_source_allowed(udp(peer, HOME), VpnPrefixes(VPN), spd=spd, sa=DOWN)
    assert vpn_source_allowed(udp(peer, HOME), VpnPrefixes(VPN), spd=spd, sa=FakeSa("vcm-7-in"))
    assert not vpn_source_allowed(udp(peer, HOME), VpnPrefixes(VPN), spd=spd, sa=None)
