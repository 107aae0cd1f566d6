"""The MN shell's link side (nodeapps/roles/mn_attachment.py) driven through the shell harness: what an RA,
a carrier change or an office announcement makes the node configure, log and send. No root, no sockets."""
import struct

import pytest
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptAdvInterval, ICMPv6NDOptPrefixInfo

from nodeapps import ipv6
from nodeapps.mobility import announcement
from shell_harness import harness_of

NEW_PREFIX = "2001:db8:77::/64"
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000


def router_advertisement(prefix: str, interval_ms: int = 1000) -> bytes:
    return bytes(ICMPv6ND_RA(routerlifetime=1800)
                 / ICMPv6NDOptPrefixInfo(prefix=prefix.split("/")[0], prefixlen=64)
                 / ICMPv6NDOptAdvInterval(advint=interval_ms))


def carrier(h, up: bool) -> bytes:
    """RTM_NEWLINK for the node's interface (rtnetlink(7))."""
    body = struct.pack("=BxHiII", 10, 1, h.runtime.ifindex, IFF_UP | (IFF_LOWER_UP if up else 0), 0)
    return struct.pack("=IHHII", 16 + len(body), 16, 0, 0, 0) + body


def office_announcement(h, configs, private_key: str | None = None, prefix: str | None = None) -> bytes:
    ha = configs["ha"]["mobility"]
    key = announcement.load_private_key(private_key or ha["announcement"]["private_key"])
    prefix = prefix or ha["announcement"]["prefix"]
    return announcement.build(key, ipv6.pton(ha["address"]), ipv6.pton(prefix.split("/")[0]),
                              int(h.clock.time() * 1e9), 1)


def names(h) -> list[str]:
    return [e["event"] for e in h.events()]


def since(h, count: int) -> list[dict]:
    return h.events()[count:]


def test_an_ra_for_a_new_link_moves_the_care_of_address_and_the_sg_hears_first():
    with harness_of("private-mobility", "mn1") as (h, configs):
        old = h.runtime.care_of
        before = len(h.events())
        h.clock.advance(5)
        h.router_advertisement(router_advertisement(NEW_PREFIX), source="fe80::9")
        events = since(h, before)
        assert [e["event"] for e in events][:2] == ["new_link", "care_of_address"]
        assert events[0]["previous"] == "2001:db8:21::/64" and events[0]["adv_interval_ms"] == 1000
        assert events[1]["address"] == "2001:db8:77::a:1"
        batch = [c[1:] for c in h.ip_commands if c[0] == "ip-batch"]
        assert ("addr", "replace", "2001:db8:77::a:1/64", "dev", "mn1-eth0", "nodad") in batch
        assert ("route", "replace", "default", "via", "fe80::9", "dev", "mn1-eth0") in batch
        assert batch[-1] == ("addr", "del", f"{old}/64", "dev", "mn1-eth0")
        sent = [e for e in events if e["event"] == "mobility_sent"]
        assert sent[0]["dst"] == configs["mn1"]["mobility"]["security_gateway"]
        mobility = h.control({"cmd": "status"})["mobility"]
        assert (mobility["state"], mobility["prefix"], mobility["care_of_address"]) == \
            ("away", NEW_PREFIX, "2001:db8:77::a:1")


def test_an_ra_with_a_forwarded_hop_limit_is_counted_and_moves_nothing():
    with harness_of("private-mobility", "mn1") as (h, _configs):
        h.router_advertisement(router_advertisement(NEW_PREFIX), source="fe80::9", hop_limit=64)
        assert h.counters["ra_invalid"] == 1
        assert h.events("ra_invalid")[-1]["reason"] == "hop limit 64"
        assert h.control({"cmd": "status"})["mobility"]["prefix"] == "2001:db8:21::/64"


def test_a_second_router_is_damped_while_the_first_keeps_advertising():
    with harness_of("private-mobility", "mn1") as (h, _configs):
        h.clock.advance(5)
        h.router_advertisement(router_advertisement(NEW_PREFIX), source="fe80::9")
        h.clock.advance(0.5)
        h.router_advertisement(router_advertisement("2001:db8:78::/64"), source="fe80::8")
        assert h.counters["ra_damped"] == 1
        damped = h.events("ra_damped")[-1]
        assert (damped["prefix"], damped["current"]) == ("2001:db8:78::/64", "fe80::9")
        assert h.control({"cmd": "status"})["mobility"]["prefix"] == NEW_PREFIX


def test_the_office_is_dark_until_proven_home_after_and_detached_without_carrier():
    with harness_of("private-office", "mn1") as (h, configs):
        home = configs["mn1"]["mobility"]["address"]
        office = configs["mn1"]["mobility"]["home_prefix"]
        h.router_advertisement(router_advertisement(office))
        assert "office_prefix_unproven" in names(h)
        assert h.control({"cmd": "status"})["mobility"]["state"] == "unproven"
        assert ("ip", "-6", "addr", "del", f"{home}/64", "dev", "mn1-eth0") in h.ip_commands

        before = len(h.events())
        h.beacon(office_announcement(h, configs))
        events = since(h, before)
        assert [e["event"] for e in events][:3] == ["location", "spd_switched", "home"]
        assert events[0]["location"] == "internal" and events[1]["policy"] == "internal"
        assert ("na", "mn1-eth0", home) in h.ip_commands
        assert h.control({"cmd": "status"})["mobility"]["state"] == "home"

        before = len(h.events())
        h.netlink(carrier(h, False))
        events = since(h, before)
        assert [e["event"] for e in events] == ["carrier_lost", "location", "spd_switched"]
        assert events[1]["location"] == "external" and events[2]["policy"] == "external"
        assert ("ip", "-6", "addr", "del", f"{home}/64", "dev", "mn1-eth0") == h.ip_commands[-2]
        assert h.control({"cmd": "status"})["mobility"]["state"] == "detached"
        h.netlink(carrier(h, True))
        assert h.ip_commands[-1] == ("rs", "mn1-eth0") and h.counters["rs_tx"] == 1


@pytest.mark.parametrize("forgery", ["another key", "another prefix"])
def test_an_announcement_signed_by_another_key_or_for_another_prefix_is_refused_and_proves_nothing(forgery):
    with harness_of("private-office", "mn1") as (h, configs):
        h.router_advertisement(router_advertisement(configs["mn1"]["mobility"]["home_prefix"]))
        if forgery == "another key":
            packet = office_announcement(h, configs, private_key=announcement.generate_key_pair()[0])
        else:
            packet = office_announcement(h, configs, prefix="fdc0:ffee:0:99::/64")
        h.beacon(packet)
        assert h.counters["announcements_bad"] == 1 and h.counters["announcements_ok"] == 0
        refused = h.events("announcement_refused")
        assert len(refused) == 1
        if forgery == "another prefix":
            assert refused[0]["reason"] == "another prefix"
        assert h.control({"cmd": "status"})["mobility"]["state"] == "unproven"


def address_deleted(h, address: str) -> bytes:
    """RTM_DELADDR of a global address on the node's interface (rtnetlink(7), struct ifaddrmsg)."""
    attr = struct.pack("=HH", 20, 1) + ipv6.pton(address)   # IFA_ADDRESS
    body = struct.pack("=BBBBI", 10, 64, 0x80, 0, h.runtime.ifindex) + attr
    return struct.pack("=IHHII", 16 + len(body), 21, 0, 0, 0) + body


def test_a_care_of_address_the_kernel_drops_with_the_carrier_is_no_hint_even_read_after_the_carrier_is_back():
    with harness_of("private-mobility", "mn1") as (h, configs):
        care_of = h.runtime.care_of
        # All three queued before the node reads them: down, the kernel's deletion, up again.
        h.netlink(carrier(h, False), address_deleted(h, care_of), carrier(h, True))
        assert not h.events("address_hint") and h.counters["address_hints"] == 0
        h.netlink(address_deleted(h, care_of))   # removed with the carrier up: our care-of address is gone
        assert [e["verdict"] for e in h.events("address_hint")] == ["lost"]
