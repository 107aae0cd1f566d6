"""The pair's first packets under the VCM's new SA go through the home agents (the reference's steps 214/216)
while the MN–MN bindings are not live yet, public plan with default links (so that there is such a time):
on the office LAN, behind the SG, the pair's packets are the HA's tunnels around ESP of the new SA, never the
payload; then care-of to care-of. A packet too big for that longer path gets an ICMPv6 Packet Too Big, and
no fragment is made on the way."""
import os
import time

from tests.integration.helpers import esp_drops, start_capture, vcm_paths, wait_for


def _office_frames(path, spis, marker, after):
    """(frames that are the HA's IPv6-in-IPv6 around ESP of one of ``spis``, fragments, frames carrying
    ``marker`` in clear from time ``after`` on)."""
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
    from scapy.layers.ipsec import ESP
    from scapy.utils import rdpcap
    seeded = fragments = clear = 0
    for frame in rdpcap(path):
        if IPv6ExtHdrFragment in frame:
            fragments += 1
        inner = frame[IPv6].payload if IPv6 in frame else None
        if isinstance(inner, IPv6) and ESP in inner and inner[ESP].spi in spis:
            seeded += 1
        if float(frame.time) >= after and marker in bytes(frame):
            clear += 1
    return seeded, fragments, clear


def test_first_packets_under_the_new_sa_go_through_the_home_agents_then_care_of_to_care_of():
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "wlan2"], links="default",
                  mobility=True, vcm="in-sg", seed=4)
    try:
        lab.start()
        h1, h2 = (lab.plan.mobile(n).home_address for n in ("mn1", "mn2"))
        drops_before = {n: esp_drops(lab, n) for n in ("mn1", "mn2")}
        _proc, office = start_capture(lab, "sg", "sg-lan", "office.pcap")
        marker = "5a5a0ff1ce5a5a"
        lab.popen("mn1", ["ping", "-6", "-n", "-i", "0.02", "-p", marker, h2], "ping.log")
        # Larger than the seed path's limit, smaller than the TUN's MTU: a Packet Too Big, then the kernel's
        # own (end-to-end) fragments; never a fragment made by a node on the way.
        lab.popen("mn2", ["ping", "-6", "-n", "-i", "0.05", "-s", "1350", "-M", "do", h1], "big.log")
        wait_for(lambda: vcm_paths(lab, "mn1").get("mn2", {}).get("path") == "direct", 10.0,
                 what="mn1 direct to mn2")
        time.sleep(1.0)
        row = vcm_paths(lab, "mn1")["mn2"]
        counters = {n: lab.status(n)["counters"] for n in ("mn1", "mn2")}
        events = lab.events()
        assert {n: esp_drops(lab, n) for n in ("mn1", "mn2")} == drops_before
        assert counters["mn1"]["seed_out"] >= 3 and counters["mn2"]["seed_in"] >= 3, counters
        first = {e["event"]: e["time"] for e in reversed(events) if e["node"] == "mn1"
                 and e["event"] in ("data_first_protected", "data_first_direct")}
        assert first["data_first_protected"] < first["data_first_direct"]
        # Once both MNs switched outbound the SG relays nothing it can read: before the bindings are live
        # it passes the HA's tunnels with the pair's ESP inside (allow 0.1 s for packets in flight).
        switched = max(e["time"] for e in events if e["event"] == "switch_outbound")
        seeded, fragments, clear = _office_frames(os.path.join(lab.run_dir, "office.pcap"),
                                                  {row["spi_out"], row["spi_in"]}, bytes.fromhex(marker),
                                                  switched + 0.1)
        assert seeded >= 3 and fragments == 0 and clear == 0, (seeded, fragments, clear)
        with open(os.path.join(lab.run_dir, "big.log")) as f:
            big = f.read()
        assert "mtu=" in big or "too long" in big, big[-400:]   # ping -M do reports the Packet Too Big
    finally:
        lab.stop()
