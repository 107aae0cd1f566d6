"""Route optimisation in Mininet (private plan, embodiment 1): the MN's external home address is served by
the external home agent xha; after return routability the correspondent cn and the MN talk directly with
HAO / type 2 routing header, and still after the MN moves: the HA's link sees no data any more."""
import os
import subprocess
import time

import pytest

from nodeapps.runtime.events import read_json_lines
from tests.integration.helpers import start_capture, wait_for
from topologies.measurements import ping


def events_of(lab, node, name, since=0.0, **fields):
    return [record for record in read_json_lines(os.path.join(lab.run_dir, f"{node}.events.jsonl"))
            if record.get("event") == name and record.get("time", 0) >= since
            and all(record.get(k) == v for k, v in fields.items())]


@pytest.fixture(scope="module")
def lab():
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="private", mobile_nodes=1, attachments=["office"], links="ideal", mobility=True,
                  correspondent=True)
    try:
        lab.start()
        wait_for(lambda: lab.status("mn1")["mobility"]["state"] == "home", what="mn1 proven home")
        yield lab
    finally:
        lab.stop()


def test_route_optimised_path_skips_the_external_home_agent_and_survives_a_move(lab):
    from scapy.all import IPv6, rdpcap, IPv6ExtHdrRouting, HAO
    from nodeapps import ipv6
    from nodeapps.mobility import messages as mh
    from topologies.svpn import CORRESPONDENT_ADDRESS
    ehoa = lab.plan.mobile("mn1").external_home_address
    cn_cap, cn_path = start_capture(lab, "cn", "cn-eth0", "cn.pcap")
    start = time.time()
    lab.move("mn1", "wlan1")
    wait_for(lambda: events_of(lab, "mn1", "route_optimisation_started", start,
                               correspondent=CORRESPONDENT_ADDRESS), what="route optimisation")
    xha_cap, xha_path = start_capture(lab, "xha", "xha-up", "xha.pcap")
    rr_done = time.time()
    first = ping(lab.host("cn"), ehoa, count=30, interval=0.05)
    moved = time.time()
    lab.move("mn1", "cell")
    wait_for(lambda: events_of(lab, "mn1", "route_optimisation_started", moved,
                               correspondent=CORRESPONDENT_ADDRESS), what="route optimisation after the move")
    second = ping(lab.host("cn"), ehoa, count=30, interval=0.05)
    time.sleep(0.3)
    lab.stop_helper(xha_cap)
    lab.stop_helper(cn_cap)
    assert first["received"] >= 28 and second["received"] >= 28, (first["received"], second["received"])

    # The HA's link after RR: the re-registration of the new care-of address (ESP), and no data. Neighbour
    # discovery between xha and its router (RFC 4861 reachability checks) may come at any time.
    xha = [bytes(p[IPv6]) for p in rdpcap(xha_path) if IPv6 in p and p.time >= rr_done]
    assert xha, "the move's BU/BA should pass the external HA's link"
    summaries = [mh.packet_summary(r) for r in xha]
    upper = [s[2] if s[2] != ipv6.NH_ICMPV6 else ("icmpv6", r[s[3]]) for s, r in zip(summaries, xha)]
    neighbour_discovery = {("icmpv6", t) for t in range(133, 138)}
    assert set(upper) - neighbour_discovery <= {ipv6.NH_ESP}, upper

    # On the correspondent's link: RH2 data out, HAO data in, from both care-of addresses.
    cn = [p for p in rdpcap(cn_path) if IPv6 in p]
    coas = {lab.plan.mobile("mn1").address_in(lab.plan.access[n]) for n in ("wlan1", "cell")}
    rh2 = {p[IPv6].dst for p in cn if IPv6ExtHdrRouting in p and p[IPv6ExtHdrRouting].type == 2}
    hao = {p[IPv6].src for p in cn if HAO in p and p[HAO].hoa == ehoa}
    assert coas <= rh2 and coas <= hao

    # tshark reads the RR messages and the HAO/RH2 data packets without errors.
    out = subprocess.run(["tshark", "-r", cn_path, "-V"], capture_output=True, text=True, timeout=60).stdout
    for name in ("Home Test Init", "Care-of Test Init", "Home Test (", "Care-of Test (", "Binding Update",
                 "Binding Acknowledgement", "MIPv6 Home Address: " + ehoa, "Type: Type 2 Routing (2)"):
        assert name in out, name
    assert "Malformed" not in out and "Expert Info (Error" not in out


def test_malformed_and_unprotected_mobility_packets_are_counted_not_fatal(lab):
    """From the Internet core: a BU flood without ESP, a truncated IPv6-in-IPv6 packet and ESP garbage with
    a real SPI to the external HA; a broken Mobility Header and a HAO without binding to the correspondent."""
    import sys
    from scapy.all import HAO, IPv6, IPv6ExtHdrDestOpt, MIP6MH_BU, Raw, ICMPv6EchoRequest
    from topologies.svpn import CORRESPONDENT_ADDRESS
    xha, cn = lab.plan.xha_address, CORRESPONDENT_ADDRESS
    ehoa = lab.plan.mobile("mn1").external_home_address
    xha_spi = lab.node_configs["xha"]["mobility"]["peers"][0]["in"]["spi"]
    bu = bytes(IPv6(src="2001:db8:0:e0::2", dst=xha) / IPv6ExtHdrDestOpt(options=[HAO(hoa=ehoa)])
               / MIP6MH_BU(seq=1, flags="AH", mhtime=10))
    packets = [bu] * 100 + [
        bytes(IPv6(src="2001:db8:0:e0::2", dst=xha, nh=41) / Raw(b"\x60" + bytes(9))),
        bytes(IPv6(src="2001:db8:0:e0::2", dst=xha, nh=50) / Raw(xha_spi.to_bytes(4, "big") + bytes(60))),
        bytes(IPv6(src="2001:db8:0:e0::2", dst=cn, nh=135) / Raw(bytes([59, 9, 5, 0]) + bytes(8))),
        bytes(IPv6(src="2001:db8:0:e0::2", dst=cn) / IPv6ExtHdrDestOpt(options=[HAO(hoa=ehoa)])
              / ICMPv6EchoRequest()),
    ]
    script = os.path.join(lab.run_dir, "bad-input.py")
    with open(script, "w") as f:
        f.write("import sys\nsys.path.insert(0, %r)\n" % os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))))
        f.write("from nodeapps.runtime.packet_io import open_sender\nfrom nodeapps import ipv6\ns = open_sender()\n")
        f.write("for h in %r:\n    p = bytes.fromhex(h)\n    s.sendto(p, (ipv6.ntop(p[24:40]), 0))\n"
                % [p.hex() for p in packets])
    before_xha = lab.status("xha")
    out = lab.host("ir").cmd(f"{sys.executable} {script}")
    assert "Error" not in out, out
    time.sleep(0.5)
    lab.check_nodes()  # nobody died
    after_xha, after_cn = lab.status("xha"), lab.status("cn")
    assert after_xha["counters"]["not_for_us"] >= before_xha["counters"]["not_for_us"] + 100  # no ESP: no core
    assert after_xha["counters"]["mh_esp_failures"] > before_xha["counters"]["mh_esp_failures"]
    assert after_xha["mobility"]["counters"]["dropped_malformed"] >= 1
    cn_core = after_cn["mobility"]["counters"]
    assert cn_core["dropped_malformed"] >= 1 and cn_core["dropped_hao_without_binding"] >= 1
    names = {e["event"] for e in after_cn["recent_events"]}
    assert "message_dropped" in names
