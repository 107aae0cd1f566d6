"""Embodiment 2 (public addresses) with the VCM built into the SG: the direct SA pair rides on Mobile IPv6
route optimisation between the two MNs' home addresses, whose home agent is the office HA behind the SG.

Where the signalling goes is the point here: HoTI/HoT through the office HA, and the first CoTI/CoT/BU/BA
inside the MN–SG tunnels (the MN's policy sends everything for the VPN prefix there), so no home keygen
token, no care-of test and nothing addressed to a home address crosses the Internet in clear. Once an MN
holds its peer's binding, its CoTI and BU go straight to the peer's care-of address (type 2 routing
header). Then: a move, a return to the office (the binding at the peer is deleted by a plain BU from the
office) and a second departure to the same network, after which the pair is direct again."""
import os
import subprocess
import time

import pytest

from tests.integration.helpers import ping_reply_times, start_capture, vcm_paths, wait_for

MARKER = "5a5a0ff1ce5a5b"
HOME_TEST_INIT, HOME_TEST, CARE_OF_TEST = 1, 3, 4


def _path(lab, node, peer):
    return vcm_paths(lab, node).get(peer, {}).get("path")


def _peer_binding(lab, node, peer):
    """The care-of address ``node`` holds for ``peer``'s home address (None without a binding)."""
    rows = lab.status(node)["mobility"].get("peers", [])
    return next((r["peer_care_of"] for r in rows if r["peer"] == peer), None)


def _clear_mobility(path):
    """(MH type, destination, RH2 present) of every Mobility Header packet in clear in a capture."""
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrRouting
    from scapy.utils import rdpcap
    from nodeapps.mobility.mn_to_mn import mobility_type
    out = []
    for frame in rdpcap(path):
        if IPv6 not in frame:
            continue
        packet = bytes(frame[IPv6])
        kind = mobility_type(packet)
        if kind is not None:
            routed = IPv6ExtHdrRouting in frame[IPv6] and frame[IPv6ExtHdrRouting].type == 2
            out.append((kind, frame[IPv6].dst, routed))
    return out


def test_public_plan_direct_pair_over_home_address_route_optimisation():
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "wlan2"], links="ideal",
                  mobility=True, vcm="in-sg", vcm_inbound_grace=2.0)
    try:
        lab.start()
        mn1, mn2 = lab.plan.mobile("mn1"), lab.plan.mobile("mn2")
        core_cap, core_path = start_capture(lab, "ir", "any", "core.pcap")
        office_cap, office_path = start_capture(lab, "ha", "ha-eth0", "office.pcap")
        ping_log = os.path.join(lab.run_dir, "ping.log")
        lab.popen("mn1", ["ping", "-6", "-n", "-D", "-i", "0.02", "-p", MARKER, mn2.home_address], "ping.log")

        # Direct both ways, each MN holding the other's binding at its care-of address.
        wait_for(lambda: _path(lab, "mn1", "mn2") == "direct" and _path(lab, "mn2", "mn1") == "direct",
                 timeout=10, what="direct both ways")
        coa1, coa2 = (lab.status(n)["mobility"]["care_of_address"] for n in ("mn1", "mn2"))
        assert _peer_binding(lab, "mn1", "mn2") == coa2 and _peer_binding(lab, "mn2", "mn1") == coa1
        assert lab.status("mn1")["vcm"]["pair"] == "home-ro"

        # A move: mn1's own BU moves mn2's binding, the pair stays direct.
        lab.move("mn1", "cell")
        new_coa1 = lab.status("mn1")["mobility"]["care_of_address"]
        wait_for(lambda: _peer_binding(lab, "mn2", "mn1") == new_coa1 and _path(lab, "mn1", "mn2") == "direct",
                 timeout=5, what="mn2's binding of mn1 at the cellular care-of address")

        # mn2 goes into the office: its plain lifetime-0 BU deletes its binding at mn1, which falls back.
        back = time.time()
        lab.move("mn2", "office")
        wait_for(lambda: _path(lab, "mn1", "mn2") == "via-sg" and _peer_binding(lab, "mn1", "mn2") is None,
                 timeout=5, what="mn1 back on the SG path without mn2's binding")
        removed = [e for e in lab.events() if e["node"] == "mn1" and e["event"] == "binding_removed"
                   and e["time"] >= back and e.get("home_address") == mn2.home_address]
        assert removed, "mn2's binding at mn1 was not deleted by its deregistration"
        replies = len(ping_reply_times(ping_log))
        time.sleep(1.0)
        assert len(ping_reply_times(ping_log)) - replies >= 30, "pings stopped after the fall-back"

        # Out again to the same network (same care-of address): detected again, keyed again, direct again.
        lab.move("mn2", "wlan2")
        wait_for(lambda: _path(lab, "mn1", "mn2") == "direct" and _path(lab, "mn2", "mn1") == "direct",
                 timeout=10, what="direct again after mn2 left the office")
        assert _peer_binding(lab, "mn1", "mn2") == coa2
        time.sleep(0.5)
        replies = len(ping_reply_times(ping_log))
        time.sleep(1.0)
        assert len(ping_reply_times(ping_log)) - replies >= 30
        for proc in (core_cap, office_cap):
            lab.stop_helper(proc)
        time.sleep(0.2)

        # On the Internet: no home test, home test init or care-of test in clear, and every clear mobility
        # message goes to a care-of address with a type 2 routing header (none to a home address).
        clear = _clear_mobility(core_path)
        assert not [c for c in clear if c[0] in (HOME_TEST_INIT, HOME_TEST, CARE_OF_TEST)], clear
        assert clear and all(routed and dst != mn1.home_address and dst != mn2.home_address
                             for _kind, dst, routed in clear), clear
        with open(core_path, "rb") as f:
            assert bytes.fromhex(MARKER) not in f.read(), "payload marker in clear on the Internet core"
        core = subprocess.run(["tshark", "-r", core_path, "-V"], capture_output=True, text=True, timeout=120).stdout
        for name in ("Care-of Test Init", "Binding Update", "Binding Acknowledgement", "Type: Type 2 Routing (2)",
                     "MIPv6 Home Address: " + mn1.home_address, "Encapsulating Security Payload"):
            assert name in core, name
        assert "Malformed" not in core and "Expert Info (Error" not in core
        # The home test went through the office HA (plain on the office LAN, the VPN's trusted side).
        office = subprocess.run(["tshark", "-r", office_path, "-V"], capture_output=True, text=True,
                                timeout=120).stdout
        assert "Home Test Init" in office and "Home Test (" in office
        assert "Malformed" not in office and "Expert Info (Error" not in office
        drops = [lab.status(n)["ipsec"]["counters"] for n in ("mn1", "mn2")]
        assert all(c.get("unknown_spi", 0) == 0 and c.get("icv", 0) == 0 for c in drops), drops
    finally:
        lab.stop()


def test_a_peer_that_lost_our_binding_stops_the_direct_pair_with_a_binding_error_and_it_recovers():
    """mn2 forgets mn1's binding (fault injection, as after an early expiry): mn1's next direct packet draws
    a Binding Error (RFC 6275 §9.3.1), on which mn1 stops using the direct SA at once and redoes return
    routability and its BU (§11.3.6); the pair is direct again and the pings never stall."""
    from nodeapps.runtime.control import request
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "wlan2"], links="ideal",
                  mobility=True, vcm="in-sg", fault_injection=True)
    try:
        lab.start()
        mn1, mn2 = lab.plan.mobile("mn1"), lab.plan.mobile("mn2")
        ping_log = os.path.join(lab.run_dir, "ping.log")
        lab.popen("mn1", ["ping", "-6", "-n", "-D", "-i", "0.02", mn2.home_address], "ping.log")
        wait_for(lambda: _path(lab, "mn1", "mn2") == "direct" and _path(lab, "mn2", "mn1") == "direct",
                 timeout=10, what="direct both ways")
        time.sleep(0.3)
        drops = [lab.status(n)["ipsec"]["counters"] for n in ("mn1", "mn2")]
        with pytest.raises(OSError, match="not an IPv6 address"):
            request(lab.control_socket("mn2"), "forget-peer-binding", home_address="mn1")
        forgotten = time.time()
        assert request(lab.control_socket("mn2"), "forget-peer-binding",
                       home_address=mn1.home_address) == {"removed": True}
        wait_for(lambda: [e for e in lab.events() if e["node"] == "mn1" and e["event"] == "binding_error_received"
                          and e["time"] >= forgotten], timeout=3, what="a Binding Error at mn1")
        events = [e for e in lab.events() if e["time"] >= forgotten]
        assert [e for e in events if e["node"] == "mn1" and e["event"] == "route_optimisation_stopped"
                and e.get("reason") == "binding error"]
        # (On ideal links the new return routability is done before the next ping, so no packet need take
        # the SG path in between.)
        assert lab.status("mn2")["mobility"]["peer_counters"].get("dropped_hao_without_binding", 0) >= 1
        wait_for(lambda: _path(lab, "mn1", "mn2") == "direct" and _peer_binding(lab, "mn2", "mn1") is not None,
                 timeout=5, what="direct again after return routability")
        time.sleep(1.0)
        around = [t for t in ping_reply_times(ping_log) if forgotten - 0.5 <= t]
        gaps = [b - a for a, b in zip(around, around[1:])]
        assert len(around) >= 50 and max(gaps) < 0.3, (len(around), max(gaps, default=None))
        after = [lab.status(n)["ipsec"]["counters"] for n in ("mn1", "mn2")]
        for b, a in zip(drops, after):
            assert (a.get("unknown_spi", 0), a.get("icv", 0)) == (b.get("unknown_spi", 0), b.get("icv", 0))
    finally:
        lab.stop()
