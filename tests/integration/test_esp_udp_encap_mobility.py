"""ESP in UDP (RFC 3948) with Mobile IPv6: the encapsulated MN–SG tunnel follows the node's care-of
address (its own lab: one Mininet network at a time)."""

from topologies.measurements import ping
from tests.integration.helpers import start_capture
from tests.integration.test_esp_udp_encap import stop_capture, tshark_esp, tunnel_spis
from tests.integration.helpers import wait_for


def test_the_encapsulated_tunnel_follows_a_mobile_node_between_networks():
    """Mobile IPv6 with encapsulated tunnel SAs: after a move the SG sends to the new care-of address in
    UDP, and the MN sends from it; the binding updates themselves stay native ESP transport."""
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="public", mobile_nodes=1, attachments=["wlan1"], links="ideal", mobility=True,
                  esp_encap="udp")
    try:
        lab.start()
        wait_for(lambda: lab.status("mn1")["mobility"]["state"] == "away"
                 and lab.status("mn1")["mobility"]["home_registered"], what="mn1 registered from wlan1")
        hoa, fs = lab.plan.mobile("mn1").home_address, lab.plan.office["fs"]
        assert ping(lab.host("fs"), hoa, count=5, interval=0.05)["received"] == 5
        lab.move("mn1", "wlan2")
        care_of = lab.status("mn1")["mobility"]["care_of_address"]
        sg_sas = {s["name"]: s for s in lab.status("sg")["ipsec"]["sas"]}
        assert sg_sas["sg->mn1"]["remote"] == care_of and sg_sas["sg->mn1"]["encap"] == "udp"
        proc, path = start_capture(lab, "mn1", "mn1-eth0", "moved.pcap")
        assert ping(lab.host("mn1"), fs, count=5, interval=0.05)["received"] == 5
        assert ping(lab.host("fs"), hoa, count=5, interval=0.05)["received"] == 5
        stop_capture(lab, proc)
        rows = tshark_esp(path)
        spis = set(tunnel_spis(lab, "mn1"))
        tunnel = [r for r in rows if r[4] in spis]
        assert len(tunnel) >= 20  # 2 x 5 requests and 5 replies each way
        assert all(r[2] == r[3] == 4500 for r in tunnel)
        assert {(r[0], r[1]) for r in tunnel} == {(care_of, lab.plan.sg_public), (lab.plan.sg_public, care_of)}
        lab.check_nodes()
    finally:
        lab.stop()
