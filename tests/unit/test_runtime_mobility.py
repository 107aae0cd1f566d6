"""Runtime helpers of the mobility roles: RA parsing, NA building, announcements, SA moves, handover gaps,
radvd configuration and the mobility config section. No root needed."""
import struct

import pytest
from scapy.layers.inet6 import (ICMPv6ND_NA, ICMPv6ND_RA, ICMPv6NDOptAdvInterval, ICMPv6NDOptDstLLAddr,
                                ICMPv6NDOptPrefixInfo)

from nodeapps import ipv6
from nodeapps.esp.sa import SecurityAssociation
from nodeapps.esp.sad import SAD
from nodeapps.esp.sa_spec import sa_pair
from nodeapps.mobility import messages as mh
from nodeapps.runtime import mobility as rt
from nodeapps.runtime import netlink as nl
from nodeapps.runtime.config import ConfigError, NodeConfig
from topologies.handover import handover_gap, reply_times, summarise
from topologies.lab import radvd_config


def sa_config(name, direction, spi=0x2000, local="2001:db8::1", remote="ff02::1", key="11" * 16):
    return {"name": name, "direction": direction, "spi": spi, "algorithm": "aes128gcm16", "key": key,
            "salt": "22" * 4, "mode": "transport", "local": local, "remote": remote}


def test_router_advertisement_prefixes_lifetime_and_interval_match_scapy():
    ra = ICMPv6ND_RA(routerlifetime=1800) / ICMPv6NDOptPrefixInfo(prefix="2001:db8:21::", prefixlen=64) \
        / ICMPv6NDOptAdvInterval(advint=70)
    parsed = rt.parse_router_advertisement(bytes(ra), "fe80::1")
    assert parsed.router == "fe80::1" and parsed.router_lifetime == 1800
    assert parsed.prefixes == (("2001:db8:21::/64", True),) and parsed.interval_ms == 70


@pytest.mark.parametrize("message", [b"", bytes(ICMPv6ND_NA()), bytes(ICMPv6ND_RA()) + b"\x03\x00" + bytes(6),
                                     bytes(ICMPv6ND_RA()) + b"\x03\x04" + bytes(6)])
def test_bad_router_advertisements_raise_one_error_type(message):
    with pytest.raises(rt.RouterAdvertisementError):
        rt.parse_router_advertisement(message, "fe80::1")


def test_care_of_address_keeps_the_host_id():
    assert rt.care_of_address("2001:db8:31::/64", 0xA0002) == "2001:db8:31::a:2"


def test_unsolicited_na_dissects_with_override_and_our_link_layer_address():
    na = ICMPv6ND_NA(rt.neighbour_advertisement("2001:db8:100:1::a:1", "02:00:00:00:00:0a"))
    assert na.tgt == "2001:db8:100:1::a:1" and na.O == 1 and na.S == 0 and na.R == 0
    assert na[ICMPv6NDOptDstLLAddr].lladdr == "02:00:00:00:00:0a"


def test_move_sa_keeps_keys_and_sequence_and_reindexes_the_sad():
    sa_in = SecurityAssociation.from_config(dict(sa_config("t", "in", local="2001:db8:21::a:1",
                                                           remote="2001:db8:0:1::1"), mode="tunnel"))
    sad = SAD([sa_in])
    key_old = ipv6.pton("2001:db8:21::a:1") + struct.pack("!I", 0x2000)
    assert sad.inbound_key(key_old) is sa_in
    assert rt.move_sa(sad, "t", local="2001:db8:31::a:1")
    assert sad.get("t") is sa_in and sa_in.local == "2001:db8:31::a:1"
    assert sad.inbound(0x2000, ipv6.pton("2001:db8:31::a:1")) is sa_in
    assert not rt.move_sa(sad, "missing", local="2001:db8::9")


def test_transport_peer_protects_a_binding_update_and_finds_it_by_spi():
    mn = ipv6.pton("2001:db8:21::a:1")
    ha = ipv6.pton("2001:db8:100:1::2")
    hoa = ipv6.pton("2001:db8:100:1::a:1")
    ours, theirs = sa_pair("bu", "ba", 0x3000, "2001:db8:100:1::a:1", "2001:db8:100:1::2")
    sender = rt.TransportPeer("2001:db8:100:1::2", ours.out, ours.in_)
    receiver = rt.TransportPeer("2001:db8:100:1::a:1", theirs.out, theirs.in_)
    bu = mh.build_mobility_packet(mn, ha, mh.BindingUpdate(7, 100, ack=True, home_registration=True),
                                  home_address=hoa)
    sealed = sender.seal(bu)
    hao, _rh, upper, _offset = mh.packet_summary(sealed)
    assert hao == hoa and upper == ipv6.NH_ESP  # the HAO stays in clear before ESP (RFC 3776 §3.1)
    assert rt.esp_spi(sealed) == 0x3000
    assert receiver.open(sealed) == bu
    assert receiver.open(sealed) is None  # replay
    assert rt.esp_spi(bu) is None


def test_handover_gap_is_the_largest_silence_around_the_move():
    times = [i * 0.02 for i in range(100)] + [2.5 + i * 0.02 for i in range(50)]
    gap = handover_gap(times, 1.95, window=1.0)
    assert gap["last_old"] == pytest.approx(1.98) and gap["first_new"] == pytest.approx(2.5)
    assert handover_gap(times[:100], 1.95, window=1.0) is None
    assert summarise([0.1, 0.3, 0.2]) == {"moves": 3, "median_ms": 200.0, "max_ms": 300.0}


def test_reply_times_reads_ping_dash_d_output():
    out = "PING x\n[1700000000.123456] 64 bytes from 2001:db8::1: icmp_seq=1 ttl=64 time=0.1 ms\nnoise\n"
    assert reply_times(out) == [1700000000.123456]


def test_radvd_config_carries_fast_intervals_and_the_interval_option():
    text = radvd_config("ar1-lan", "2001:db8:21::/64", 0.03, 0.07)
    assert "MinRtrAdvInterval 0.03;" in text and "MaxRtrAdvInterval 0.07;" in text
    assert "AdvIntervalOpt on;" in text and "prefix 2001:db8:21::/64" in text


def _node(**extra):
    base = {"node": "ha", "role": "home-agent", "tun": {"name": "svpn0", "mtu": 1400, "addresses": [],
                                                         "routes": []},
            "outer_interfaces": ["ha-eth0"], "sas": [], "spd": {}, "control_socket": "/tmp/x.sock"}
    base.update(extra)
    return base


def test_home_agent_config_needs_a_mobility_section_with_peers():
    with pytest.raises(ConfigError, match="mobility is missing"):
        NodeConfig.from_dict(_node())
    with pytest.raises(ConfigError, match="mobility.peers"):
        NodeConfig.from_dict(_node(mobility={"address": "2001:db8::2"}))
    with pytest.raises(ConfigError, match=r"peers\[0\]"):
        NodeConfig.from_dict(_node(mobility={"address": "2001:db8::2", "peers": [{"address": "x"}]}))
    config = NodeConfig.from_dict(_node(mobility={"address": "2001:db8::2", "peers": []}))
    assert config.mobility["address"] == "2001:db8::2"


HINT = dict(ifindex=3, host_id=0xA0001, home="2001:db8:100:1::a:1", care_of="2001:db8:21::a:1",
            prefix="2001:db8:21::/64")


def change(added, address, **kw):
    fields = dict(ifindex=3, prefixlen=64, scope=0, flags=0x80)
    fields.update(kw)
    return nl.AddressChange(added, fields["ifindex"], address, fields["prefixlen"], fields["scope"], fields["flags"])


@pytest.mark.parametrize("event, expected", [
    (change(True, "2001:db8:21:1::5"), ("candidate", "2001:db8:21:1::/64")),   # new prefix: movement hint
    (change(True, "2001:db8:22::5", prefixlen=128), ("candidate", "2001:db8:22::/64")),  # DHCPv6-style /128
    (change(True, "2001:db8:21::5"), ("ignore", None)),          # same prefix (e.g. the kernel's SLAAC)
    (change(True, "2001:db8:31::a:1"), ("ignore", None)),        # our host id: an address we made
    (change(True, "2001:db8:100:1::a:1"), ("ignore", None)),     # our home address
    (change(True, "2001:db8:22::5", flags=nl.IFA_F_TENTATIVE), ("ignore", None)),  # not usable yet
    (change(True, "2001:db8:22::5", ifindex=9), ("ignore", None)),               # another interface
    (change(True, "fe80::5", scope=253), ("ignore", None)),                       # link-local
    (change(False, "2001:db8:21::a:1"), ("lost", None)),          # our care-of address removed
    (change(False, "2001:db8:22::a:1"), ("ignore", None)),        # an old care-of address we removed
])
def test_address_hint_decisions(event, expected):
    assert rt.address_hint(event, **HINT) == expected


def test_address_hint_cannot_loop_on_the_nodes_own_changes():
    # Everything the node does on a move (add its care-of address in the new prefix, delete the old one,
    # put its home address back) comes back from the kernel; none of it may count as a hint.
    echoes = [change(True, "2001:db8:22::a:1"), change(False, "2001:db8:21::a:1"),
              change(True, "2001:db8:100:1::a:1", prefixlen=64)]
    state = dict(HINT, care_of="2001:db8:22::a:1", prefix="2001:db8:22::/64")
    assert [rt.address_hint(e, **state)[0] for e in echoes] == ["ignore"] * 3


def test_router_solicitation_dissects():
    from scapy.layers.inet6 import ICMPv6ND_RS
    rs = ICMPv6ND_RS(rt.router_solicitation())
    assert rs.type == 133 and rs.code == 0 and not rs.payload
