"""Inbound rules that live in the role shells, driven through the shells' own packet handlers with
synthetic packets (``shell_harness``): regression tests for what the fuzz properties found."""
from __future__ import annotations

import struct

import pytest

from nodeapps import ipv6
from nodeapps.mobility import messages as mh
from nodeapps.roles import vcm_shell
from shell_harness import ShellHarness, lab_configs

OUTSIDER = ipv6.pton("2001:db8:99::5")
SOME_HOME = ipv6.pton("2001:db8:99::6")


def _udp(payload: bytes = b"abcd") -> bytes:
    return struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload


def _clear_packets(dst: bytes) -> dict[str, bytes]:
    padn = bytes((ipv6.NH_UDP, 0, 1, 4, 0, 0, 0, 0))
    hao = mh.encode_home_address_destopts(ipv6.NH_UDP, SOME_HOME)
    return {
        "destination options (PadN) + UDP": ipv6.build_header(OUTSIDER, dst, ipv6.NH_DSTOPTS, 8 + 12) + padn + _udp(),
        "home address option + UDP": ipv6.build_header(OUTSIDER, dst, ipv6.NH_DSTOPTS, 24 + 12) + hao + _udp(),
        "binding update without ESP": mh.build_mobility_packet(OUTSIDER, dst, mh.BindingUpdate(1, 10, ack=True),
                                                               home_address=SOME_HOME),
    }


@pytest.mark.parametrize("variant", ["private-vcm-in-sg", "public-vcm-in-sg", "private-vcm-host",
                                     "public-vcm-host-direct"])
@pytest.mark.parametrize("kind", list(_clear_packets(bytes(16))))
def test_clear_packet_to_the_sg_public_address_does_not_stop_the_vcm_observer(variant, kind):
    """Found by the fuzz properties: a packet without ESP left the processor with no SA, and the SG's VCM
    observer asked that SA its name (AttributeError) before any other check could drop the packet."""
    h = ShellHarness.for_node("sg", variant)
    try:
        sg = ipv6.pton(h.config.mobility["address"])
        h.network(_clear_packets(sg)[kind])
        assert h.counters["net_rx"] == 1
        assert h.handler_errors == 0
        assert h.runtime.monitor.flow_count() == 0   # nothing observed: it came out of no MN's tunnel SA
    finally:
        h.close()


# ---- the harness itself reaches the real paths ----------------------------------------------------------

def test_harness_esp_from_a_mobile_node_reaches_the_sg_tun_and_its_vcm_observer():
    configs = lab_configs("private-vcm-in-sg")
    h = ShellHarness(configs["sg"])
    try:
        tunnel_in = next(sa for sa in h.inbound_sas() if sa["name"] == "mn1->sg")
        mn1_home = ipv6.pton(configs["mn1"]["mobility"]["address"])
        mn2_home = ipv6.pton(configs["mn2"]["mobility"]["address"])
        care_of, sg_key = tunnel_in["remote"], configs["mn1"]["mobility"]["sg_home_address"]
        # mn1 registers its care-of address (BU in the ESP transport SA, HAO ahead of ESP) ...
        bu_sa = next(sa for sa in h.inbound_sas() if sa["name"] == "mn1->sg mh")
        sg_public = ipv6.pton(h.config.mobility["address"])
        bu = mh.encode_message(mh.BindingUpdate(1, 100, ack=True), ipv6.pton(sg_key), sg_public)
        h.network(h.esp(bu_sa, ipv6.NH_MOBILITY, bu, src=care_of, home_address=sg_key))
        assert h.runtime.care_of[ipv6.pton(sg_key)] == care_of
        # ... then reverse-tunnels a packet for mn2 to the home agent inside its SG tunnel SA.
        home_agent = ipv6.pton(configs["mn1"]["mobility"]["home_agent"])
        inner = mh.encapsulate(vcm_shell.build_udp(mn1_home, mn2_home, 5000, 5001, b"hello"), ipv6.pton(care_of),
                               home_agent)
        h.network(h.esp(tunnel_in, ipv6.NH_IPV6, inner))
        assert h.tun_written() == [inner]
        assert h.counters["relayed_mn_mn_packets"] == 1
        assert h.runtime.monitor.flow_count() == 1
    finally:
        h.close()


def test_harness_mobile_node_starts_away_and_registers_with_the_sg_first():
    h = ShellHarness.for_node("mn1", "private-mobility")
    try:
        assert h.runtime.state == "away"
        sg_public = h.config.mobility["security_gateway"]
        destinations = [address[0] for _packet, address in h.sent]
        assert destinations and destinations[0] == sg_public
        assert any(c[:3] == ("ip-batch", "addr", "replace") for c in h.ip_commands)
    finally:
        h.close()


def test_harness_packets_from_the_tun_leave_sealed_in_the_tunnel_sa():
    configs = lab_configs("private")
    h = ShellHarness(configs["mn1"])
    try:
        home = ipv6.pton(configs["mn1"]["tun"]["addresses"][0].split("/")[0])
        office = ipv6.pton(configs["mn1"]["spd"]["vpn_prefixes"][0].split("/")[0]) [:15] + b"\x09"
        h.tun(vcm_shell.build_udp(home, office, 1, 2, b"x" * 20))
        (packet, address), = h.sent
        assert address[0] == configs["mn1"]["sas"][0]["remote"] and packet[40:44] == struct.pack(
            "!I", configs["mn1"]["sas"][0]["spi"])
    finally:
        h.close()
