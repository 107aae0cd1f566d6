"""The pair's first packets under the VCM's new SA go through the home agents (the reference's steps 214/216)
while the MN–MN bindings are not live yet, then care-of to care-of; both plans, default links.

- Public plan: on the office LAN, behind the SG, the pair's packets are the MNs' reverse tunnels to the
  office HA and its tunnels to them, around ESP of the new SA, never the payload (before the switch the SG
  path carries it there in clear, as it should).
- Private plan: the route-optimised home addresses are external home addresses at ``xha``; between the
  Internet and ``xha`` the pair's packets are the reverse tunnel and ``xha``'s tunnel, in clear, around ESP
  of the new SA. No user packet crosses that link otherwise, so the payload must never appear there. With
  ``xha`` one metro link from the Internet router the bindings go live some 40 ms after the switch, one
  packet of a 50 Hz ping: the test loses mn1's first binding update at mn2 once, which holds both MNs'
  paths on the home agents for its 1 s retransmission.

A packet too big for that longer path but within the TUN's MTU gets an ICMPv6 Packet Too Big with the seed
path's limit; no fragment is made on the way."""
import os
import time
from dataclasses import dataclass

import pytest

from tests.integration.helpers import esp_drops, start_capture, vcm_paths, wait_for

MARKER = "5a5a0ff1ce5a5a"
ICMPV6_ECHO_HEADERS = 40 + 8    # IPv6 and ICMPv6 echo headers around ping's -s payload


@dataclass(frozen=True)
class SeedPlan:
    addressing: str
    capture: tuple[str, str]      # (node, interface) the seeded packets cross in both directions
    clear_before_switch: bool     # the SG path carries the payload in clear across that capture
    lose_first_bu: bool           # hold the MN–MN bindings back for one BU retransmission


PLANS = [SeedPlan("public", ("sg", "sg-lan"), clear_before_switch=True, lose_first_bu=False),
         SeedPlan("private", ("xha", "xha-up"), clear_before_switch=False, lose_first_bu=True)]


def _tunnel_frames(path, care_of, spis, marker, after):
    """(frames that are a reverse tunnel from one of the ``care_of`` addresses to its home agent around ESP of
    one of ``spis``, frames that are a home agent's tunnel to one of them around such ESP, fragments, frames
    carrying ``marker`` in clear from time ``after`` on)."""
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
    from scapy.layers.ipsec import ESP
    from scapy.utils import rdpcap
    reverse = forward = fragments = clear = 0
    for frame in rdpcap(path):
        if IPv6ExtHdrFragment in frame:
            fragments += 1
        inner = frame[IPv6].payload if IPv6 in frame else None
        if isinstance(inner, IPv6) and ESP in inner and inner[ESP].spi in spis:
            reverse += frame[IPv6].src in care_of
            forward += frame[IPv6].dst in care_of
        if float(frame.time) >= after and marker in bytes(frame):
            clear += 1
    return reverse, forward, fragments, clear


@pytest.mark.parametrize("plan", PLANS, ids=[p.addressing for p in PLANS])
def test_first_packets_under_the_new_sa_go_through_the_home_agents_then_care_of_to_care_of(plan):
    from nodeapps.esp.processor import MAX_TUNNEL_OVERHEAD
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing=plan.addressing, mobile_nodes=2, attachments=["wlan1", "wlan2"], links="default",
                  mobility=True, vcm="in-sg", seed=4, fault_injection=plan.lose_first_bu)
    try:
        lab.start()
        h1, h2 = (lab.plan.mobile(n).home_address for n in ("mn1", "mn2"))
        drops_before = {n: esp_drops(lab, n) for n in ("mn1", "mn2")}
        if plan.lose_first_bu:
            lab.drop_next("mn2", "BU", "in")
        start_capture(lab, *plan.capture, "seed.pcap")
        lab.popen("mn1", ["ping", "-6", "-n", "-i", "0.02", "-p", MARKER, h2], "ping.log")
        # Larger than the seed path's limit, within the TUN's MTU: a Packet Too Big from the MN itself, never
        # a fragment made by a node on the way.
        seed_limit = lab.tun_mtu - MAX_TUNNEL_OVERHEAD
        big = lab.tun_mtu - 16 - ICMPV6_ECHO_HEADERS
        lab.popen("mn2", ["ping", "-6", "-n", "-i", "0.05", "-s", str(big), "-M", "do", h1], "big.log")
        wait_for(lambda: vcm_paths(lab, "mn1").get("mn2", {}).get("path") == "direct", 10.0,
                 what="mn1 direct to mn2")
        time.sleep(1.0)
        row = vcm_paths(lab, "mn1")["mn2"]
        counters = {n: lab.status(n)["counters"] for n in ("mn1", "mn2")}
        drops_after = {n: esp_drops(lab, n) for n in ("mn1", "mn2")}
        events = lab.events()
        first = {e["event"]: e for e in reversed(events) if e["node"] == "mn1"
                 and e["event"] in ("data_first_protected", "data_first_direct")}
        # Once both MNs switched outbound (allow 0.1 s for packets in flight), or from the start where the
        # SG path does not cross the capture, nothing readable crosses it.
        switched = max(e["time"] for e in events if e["event"] == "switch_outbound")
        care_of = {lab.plan.current_address(lab.plan.mobile(n)) for n in ("mn1", "mn2")}
        reverse, forward, fragments, clear = _tunnel_frames(
            os.path.join(lab.run_dir, "seed.pcap"), care_of, {row["spi_out"], row["spi_in"]},
            bytes.fromhex(MARKER), switched + 0.1 if plan.clear_before_switch else 0.0)
        with open(os.path.join(lab.run_dir, "big.log")) as f:
            big_log = f.read()
        # Every check at once: one lab run shows all that failed.
        checks = {
            "no unknown-SPI or ICV drop": (drops_after == drops_before, (drops_before, drops_after)),
            "seed_out/seed_in >= 3": (counters["mn1"]["seed_out"] >= 3 and counters["mn2"]["seed_in"] >= 3,
                                      {n: {k: c[k] for k in ("seed_out", "seed_in", "seed_too_big")}
                                       for n, c in counters.items()}),
            "first protected via the home agents, before the first direct": (
                first["data_first_protected"]["path"] == "seed-home-agent"
                and first["data_first_protected"]["time"] < first["data_first_direct"]["time"], first),
            ">= 3 of the pair's ESP frames in each tunnel leg, no fragment, no payload": (
                reverse >= 3 and forward >= 3 and fragments == 0 and clear == 0,
                {"reverse": reverse, "forward": forward, "fragments": fragments, "clear": clear}),
            # RFC 4443 §3.2: ping -M do reports the MN's Packet Too Big with the seed path's limit.
            "Packet Too Big": (counters["mn2"]["seed_too_big"] >= 1 and f"mtu={seed_limit}" in big_log,
                               big_log[-400:]),
            # Once direct, the kernel forgets the seed path's MTU: the same size gets through (RFC 8201 §4).
            "full size again once direct": (counters["mn2"]["path_mtu_restored"] >= 1
                                            and f"{big + 8} bytes from" in big_log, big_log[-400:]),
        }
        failed = {name: detail for name, (ok, detail) in checks.items() if not ok}
        assert not failed, failed
    finally:
        lab.stop()
