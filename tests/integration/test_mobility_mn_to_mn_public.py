"""Route optimisation between two mobile nodes in the public plan (embodiment 2) without an SA: the MNs'
home addresses are public and their home agent is the office HA behind the SG. Return routability and the
first binding updates ride the SG tunnels; afterwards the pings go care-of address to care-of address with
the Home Address option and the type 2 routing header on the application packet itself, and the SG relays
none of them."""
import time

from tests.integration.helpers import start_capture, wait_for
from topologies.measurements import ping


def _optimised(lab, node, peer):
    rows = lab.status(node)["mobility"].get("peers", [])
    return any(r["peer"] == peer and r["optimised"] for r in rows)


def test_public_plan_mobile_nodes_route_optimise_on_their_home_addresses():
    from scapy.all import HAO, ICMPv6EchoRequest, IPv6, IPv6ExtHdrRouting, rdpcap
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "wlan2"], links="ideal",
                  mobility=True, route_optimisation=[("mn1", "mn2")])
    try:
        lab.start()
        mn1, mn2 = lab.plan.mobile("mn1"), lab.plan.mobile("mn2")
        wait_for(lambda: _optimised(lab, "mn1", "mn2") and _optimised(lab, "mn2", "mn1"), timeout=10,
                 what="route optimisation both ways")
        capture, path = start_capture(lab, "ir", "any", "core.pcap")
        relayed = lab.status("sg")["counters"]["relayed_mn_mn_packets"]
        result = ping(lab.host("mn1"), mn2.home_address, count=40, interval=0.05)
        time.sleep(0.3)
        lab.stop_helper(capture)
        assert result["received"] >= 38, result
        assert lab.status("sg")["counters"]["relayed_mn_mn_packets"] - relayed <= 2
        counters = [lab.status(n)["counters"] for n in ("mn1", "mn2")]
        assert all(c["ro_data_out"] >= 38 and c["ro_data_in"] >= 38 for c in counters), counters
        coa1, coa2 = (lab.status(n)["mobility"]["care_of_address"] for n in ("mn1", "mn2"))
        requests = [p[IPv6] for p in rdpcap(path) if ICMPv6EchoRequest in p and HAO in p]
        assert len(requests) >= 38
        for p in requests:   # one IPv6 header: no IPv6-in-IPv6 between the home addresses
            assert (p.src, p.dst, p[HAO].hoa) == (coa1, coa2, mn1.home_address)
            assert p[IPv6ExtHdrRouting].type == 2 and p[IPv6ExtHdrRouting].addresses == [mn2.home_address]
            assert IPv6 not in p.payload
    finally:
        lab.stop()
