"""Route optimisation between two mobile nodes in Mininet (private plan, embodiment 1): both MNs leave the
office, each runs return routability and a binding update towards the other's external home address, and
traffic between their internal home addresses then goes care-of address to care-of address (HAO + RH2,
IPv6-in-IPv6 between the external home addresses) with neither the SG nor the external home agent
carrying it; after a move the MN's own binding update makes the path direct again."""
import subprocess
import time

import pytest

from tests.integration.helpers import start_capture, wait_for
from tests.integration.test_mobility_route_optimisation import events_of
from topologies.measurements import ping


@pytest.fixture(scope="module")
def lab():
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="private", mobile_nodes=2, attachments=["office", "office"], links="ideal",
                  mobility=True, route_optimisation=[("mn1", "mn2")])
    try:
        lab.start()
        for mn in ("mn1", "mn2"):
            wait_for(lambda: lab.status(mn)["mobility"]["state"] == "home", what=f"{mn} proven home")
        yield lab
    finally:
        lab.stop()


def optimised(lab, mn, peer, since):
    """``mn`` has the peer's binding acknowledgement for its current care-of address, and holds the peer's."""
    ext_peer = lab.plan.mobile(peer).external_home_address
    if not events_of(lab, mn, "route_optimisation_started", since, correspondent=ext_peer):
        return False
    rows = lab.status(mn)["mobility"].get("peers", [])
    return any(r["external"] == ext_peer and r["optimised"] for r in rows)


def data_packets(path, since):
    """(time, packet bytes) of captured IPv6 packets after ``since``."""
    from scapy.all import IPv6, rdpcap
    return [(float(p.time), bytes(p[IPv6])) for p in rdpcap(path) if IPv6 in p and float(p.time) >= since]


def innermost_upper(packet):
    """Upper protocol after any IPv6-in-IPv6; ICMPv6 as ("icmpv6", type)."""
    from nodeapps import ipv6
    from nodeapps.mobility import messages as mh
    while True:
        _hao, _rh2, upper, offset = mh.packet_summary(packet)
        if upper == ipv6.NH_ICMPV6:
            return ("icmpv6", packet[offset])
        if upper != ipv6.NH_IPV6:
            return upper
        packet = mh.decapsulate(packet)[2]


def test_route_optimised_between_mobile_nodes_and_after_a_move(lab):
    from scapy.all import HAO, IPv6, IPv6ExtHdrRouting
    from nodeapps import ipv6
    mn1, mn2 = lab.plan.mobile("mn1"), lab.plan.mobile("mn2")
    ir_cap, ir_path = start_capture(lab, "ir", "any", "ir.pcap")
    start = time.time()
    lab.move("mn2", "wlan2")
    lab.move("mn1", "wlan1")
    wait_for(lambda: optimised(lab, "mn1", "mn2", start) and optimised(lab, "mn2", "mn1", start), timeout=10,
             what="route optimisation both ways")
    xha_cap, xha_path = start_capture(lab, "xha", "xha-up", "xha.pcap")
    sg_cap, sg_path = start_capture(lab, "sg", "sg-wan", "sg.pcap")
    rr_done = time.time()
    first = ping(lab.host("mn1"), mn2.home_address, count=40, interval=0.05)
    first_end = time.time()
    moved = time.time()
    lab.move("mn1", "cell")
    wait_for(lambda: optimised(lab, "mn1", "mn2", moved) and lab.status("mn2")["mobility"]["peers"][0][
        "peer_care_of"] == mn1.address_in(lab.plan.access["cell"]), timeout=10, what="route optimisation after the move")
    second_start = time.time()
    second = ping(lab.host("mn1"), mn2.home_address, count=40, interval=0.05)
    time.sleep(0.3)
    for proc in (xha_cap, sg_cap, ir_cap):
        lab.stop_helper(proc)
    assert first["received"] >= 38 and second["received"] >= 38, (first["received"], second["received"])

    # Neither the SG nor the external home agent carries the pings: the SG's link sees no ESP while the
    # route is optimised and no move happens (each ping would be ESP there otherwise)...
    sg = data_packets(sg_path, rr_done)
    steady = [p for t, p in sg if rr_done <= t <= first_end or t >= second_start + 0.5]
    assert len([p for p in steady if innermost_upper(p) == ipv6.NH_ESP]) <= 4, len(steady)
    # ... and the external HA's link only signalling (BU/BA in ESP, reverse-tunnelled HoT/CoT, CoTI).
    xha = data_packets(xha_path, rr_done)
    uppers = {innermost_upper(p) for _, p in xha} - {("icmpv6", t) for t in range(133, 138)}   # ND
    assert uppers <= {ipv6.NH_ESP, ipv6.NH_MOBILITY}, uppers
    counters = [lab.status(mn)["counters"] for mn in ("mn1", "mn2")]
    assert all(c["ro_data_out"] >= 70 and c["ro_data_in"] >= 70 for c in counters), counters

    # On the public core: data between the care-of addresses with RH2 and HAO, from both of MN1's CoAs.
    coa1 = {mn1.address_in(lab.plan.access[n]) for n in ("wlan1", "cell")}
    coa2 = mn2.address_in(lab.plan.access["wlan2"])
    core = [IPv6(p) for t, p in data_packets(ir_path, rr_done)]
    to_mn2 = {p.src for p in core if p.dst == coa2 and IPv6ExtHdrRouting in p and p[IPv6ExtHdrRouting].type == 2
              and HAO in p and p[HAO].hoa == mn1.external_home_address}
    from_mn2 = {p.dst for p in core if p.src == coa2 and HAO in p and p[HAO].hoa == mn2.external_home_address
                and IPv6ExtHdrRouting in p}
    assert coa1 <= to_mn2 and coa1 <= from_mn2, (to_mn2, from_mn2)

    # tshark dissects the return routability, the binding messages and the HAO/RH2 data without errors.
    # (The home keygen token never crosses the core in clear: HoTI and HoT travel MN -> external HA and
    # HA -> peer in the tunnel SAs, also the HoT a node sends as its peer's correspondent, since that leg
    # starts on its own access link next to the CoT. The CoT is seen on the HA -> peer leg.)
    out = subprocess.run(["tshark", "-r", ir_path, "-V"], capture_output=True, text=True, timeout=120).stdout
    assert "Home Test Init" not in out and "Home Test (" not in out
    for name in ("Care-of Test Init", "Care-of Test (", "Binding Update",
                 "Binding Acknowledgement", "MIPv6 Home Address: " + mn1.external_home_address,
                 "MIPv6 Home Address: " + mn2.external_home_address, "Type: Type 2 Routing (2)",
                 "Echo (ping) request"):
        assert name in out, name
    assert "Malformed" not in out and "Expert Info (Error" not in out


def test_return_to_the_office_deletes_the_binding_and_traffic_goes_through_the_sg(lab):
    if lab.attachment["mn1"] == "office" or lab.attachment["mn2"] == "office":
        pytest.skip("needs both nodes outside (runs after the first test)")
    mn2 = lab.plan.mobile("mn2")
    back = time.time()
    lab.move("mn2", "office")
    wait_for(lambda: events_of(lab, "mn1", "binding_removed", back, home_address=mn2.external_home_address),
             what="mn2's binding deleted at mn1")
    before = lab.status("mn1")["counters"]["ro_data_out"]
    result = ping(lab.host("mn1"), mn2.home_address, count=20, interval=0.05)
    assert result["received"] >= 18
    assert lab.status("mn1")["counters"]["ro_data_out"] == before
    assert events_of(lab, "mn1", "data_via_sg", back)
