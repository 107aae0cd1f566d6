"""Movement detection from netlink address events: an address in a prefix that no router announced
(renumbering, DHCPv6, an operator) moves the node's care-of address into that prefix; removing the node's
care-of address by hand makes it detect its link again; its own address changes never count. Also: the
carrier coming back makes the node solicit an RA."""
import ipaddress
import time

import pytest

from tests.integration.helpers import wait_for

NEW_PREFIX = "2001:db8:21:1::/64"   # a second prefix on WLAN 1, routed to ar1 but not in its RAs


@pytest.fixture(scope="module")
def lab():
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="public", mobile_nodes=1, attachments=["wlan1"], links="ideal", mobility=True)
    try:
        lab.start()
        wait_for(lambda: lab.status("mn1")["mobility"]["home_registered"], what="mn1 registered")
        yield lab
    finally:
        lab.stop()


def mn_events(lab, since, name=None):
    return [e for e in lab.events() if e["node"] == "mn1" and e["time"] >= since
            and (name is None or e["event"] == name)]


def registered_at(lab, since, care_of):
    return any(e.get("kind") == "home-agent" and e.get("care_of_address") == care_of
               for e in mn_events(lab, since, "binding_acknowledged"))


def test_carrier_up_solicits_a_router_advertisement(lab):
    events = lab.move("mn1", "wlan2")
    solicitations = [e for e in events if e["node"] == "mn1" and e["event"] == "router_solicitation"]
    assert solicitations and solicitations[-1]["error"] is None, solicitations
    assert lab.status("mn1")["counters"]["rs_tx"] >= 1
    # The kernel dropping the old care-of address with the carrier, and the node's own new one, are no hints.
    assert not [e for e in events if e["node"] == "mn1" and e["event"] == "address_hint"], events
    lab.move("mn1", "wlan1")


def test_an_unannounced_prefix_becomes_the_care_of_prefix_and_a_removed_care_of_address_is_detected_again(lab):
    plan = lab.plan
    mn = plan.mobile("mn1")
    wlan1 = plan.access["wlan1"]
    new_coa = str(ipaddress.IPv6Network(NEW_PREFIX).network_address + 0xA0001)
    old_coa = mn.address_in(wlan1)
    assert lab.host("ar1").cmd(f"ip -6 addr add {NEW_PREFIX.replace('::/64', '::1/64')} dev ar1-lan nodad").strip() == ""
    assert lab.host("ir").cmd(f"ip -6 route replace {NEW_PREFIX} via {wlan1.uplink.network_address + 1}").strip() == ""
    hints_before = lab.status("mn1")["counters"]["address_hints"]

    start = time.time()
    out = lab.host("mn1").cmd(f"ip -6 addr add {NEW_PREFIX.replace('::/64', '::5/64')} dev mn1-eth0 nodad")
    assert out.strip() == ""
    wait_for(lambda: registered_at(lab, start, new_coa), what="registration of the care-of address in the new prefix")
    hints = mn_events(lab, start, "address_hint")
    assert [(h["verdict"], h["prefix"]) for h in hints] == [("candidate", NEW_PREFIX)], hints
    ping = lab.host("fs").cmd(f"ping -6 -n -c 3 -i 0.2 -W 1 {mn.home_address}")
    assert " 0% packet loss" in ping, ping

    # The node's own care-of address removed by someone else: detect again (RS, RA of ar1's prefix).
    start = time.time()
    assert lab.host("mn1").cmd(f"ip -6 addr del {new_coa}/64 dev mn1-eth0").strip() == ""
    wait_for(lambda: registered_at(lab, start, old_coa), what="registration back in the announced prefix")
    hints = mn_events(lab, start, "address_hint")
    assert [h["verdict"] for h in hints] == ["lost"], hints
    assert mn_events(lab, start, "router_solicitation")

    # No feedback: the node's own address changes (care-of added and removed) produced no further hints.
    time.sleep(1.0)
    assert lab.status("mn1")["counters"]["address_hints"] == hints_before + 2
    ping = lab.host("fs").cmd(f"ping -6 -n -c 3 -i 0.2 -W 1 {mn.home_address}")
    assert " 0% packet loss" in ping, ping
