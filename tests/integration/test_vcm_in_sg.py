"""VCM built into the SG, in the running lab: two external MNs pinging each other's home address at 50 Hz
go direct, stay direct when MN1 moves, and fall back to the SG path when MN2 returns to the office, with the
pings continuing throughout. Default pair (``home-ro``, both plans): a tunnel between the route-optimised
home addresses (external ones in the private plan, the home addresses in the public plan), sent care-of to
care-of with RH2 + HAO over the MN–MN binding, moves followed by the MNs' BUs; those BUs authenticated by
return routability or (``vcm_binding="static-key"``) by a key the VCM hands out with the KEYS. Public-plan
option ``care-of``: a tunnel between the care-of addresses, moves followed through the SG's care-of notices."""
import os
import time

import pytest

from experiments import records
from tests.integration.helpers import esp_drops, ping_reply_times, sa_packets, start_capture, vcm_paths, wait_for

DIRECT_WITHIN_S = 10.0
INBOUND_GRACE_S = 2.0


def _esp_spis(path):
    return _esp_frames(path)[0]


def _esp_frames(path):
    """({SPI: ESP frames straight behind the IPv6 header}, {SPI: ESP frames behind a type 2 routing header
    and a Home Address option, in that order: (RH2 home address, HAO home address) -> count})."""
    from scapy.layers.inet6 import HAO, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting
    from scapy.layers.ipsec import ESP
    from scapy.utils import rdpcap
    plain, routed = {}, {}
    for frame in rdpcap(path):
        if IPv6 not in frame:
            continue
        if frame[IPv6].nh == 50:
            spi = int.from_bytes(bytes(frame[IPv6].payload)[:4], "big")
            plain[spi] = plain.get(spi, 0) + 1
        elif frame[IPv6].nh == 43 and IPv6ExtHdrRouting in frame and frame[IPv6ExtHdrRouting].type == 2 \
                and frame[IPv6ExtHdrRouting].nh == 60 and HAO in frame and ESP in frame \
                and frame[IPv6ExtHdrDestOpt].nh == 50:    # RFC 6275 §6.3/§6.4: IPv6 | RH2 | DestOpt(HAO) | ESP
            key = (frame[ESP].spi, frame[IPv6ExtHdrRouting].addresses[0], frame[HAO].hoa)
            routed[key] = routed.get(key, 0) + 1
    return plain, routed


def _routed(routed, spi):
    return sum(n for (s, _rh2, _hao), n in routed.items() if s == spi)


@pytest.mark.parametrize("addressing, pair, binding", [
    ("public", "home-ro", "return-routability"), ("public", "care-of", "return-routability"),
    ("private", "home-ro", "return-routability"), ("public", "home-ro", "static-key")])
def test_vcm_in_sg_direct_path_follows_moves_and_falls_back(addressing, pair, binding):
    run_direct_path_scenario(addressing, "in-sg", pair=pair, binding=binding)


def run_direct_path_scenario(addressing, variant, vcm_control="encapsulated", pair=None,
                             binding="return-routability"):
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing=addressing, mobile_nodes=2, attachments=["wlan1", "wlan2"], links="ideal",
                  mobility=True, vcm=variant, vcm_control=vcm_control, vcm_inbound_grace=INBOUND_GRACE_S,
                  vcm_pair=pair, vcm_binding=binding)
    try:
        lab.start()
        h2 = lab.plan.mobile("mn2").home_address
        drops_before = {n: esp_drops(lab, n) for n in ("mn1", "mn2")}
        captures = {name: start_capture(lab, node, name, f"{name}.pcap")[1]
                    for node, name in (("sg", "sg-wan"), ("ar1", "ar1-up"), ("ar2", "ar2-up"), ("ar3", "ar3-up"))}
        marker = "5a5a0ff1ce5a5a"
        lab.popen("mn1", ["ping", "-6", "-n", "-D", "-i", "0.02", "-p", marker, h2], "ping.log")
        ping_log = os.path.join(lab.run_dir, "ping.log")

        # 1. Direct within a bounded time, on both ends.
        wait_for(lambda: vcm_paths(lab, "mn1").get("mn2", {}).get("path") == "direct",
                 DIRECT_WITHIN_S, what="mn1 direct to mn2")
        wait_for(lambda: vcm_paths(lab, "mn2").get("mn1", {}).get("path") == "direct",
                 3.0, what="mn2 direct to mn1")
        row = vcm_paths(lab, "mn1")["mn2"]
        spi_out, spi_in = row["spi_out"], row["spi_in"]
        assert spi_out and spi_in and spi_out != spi_in
        time.sleep(0.3)
        sg_before, mn2_before = sa_packets(lab, "sg"), sa_packets(lab, "mn2")
        time.sleep(1.0)
        sg_after, mn2_after = sa_packets(lab, "sg"), sa_packets(lab, "mn2")
        relayed = (sg_after["mn1->sg"] - sg_before["mn1->sg"]) + (sg_after["sg->mn2"] - sg_before["sg->mn2"])
        assert relayed <= 4, f"SG still relays mn1->mn2 traffic: {relayed} packets in 1 s"
        direct_in = [n for n in mn2_after if n.endswith("-in") and n.startswith("vcm-")]
        grown = sum(mn2_after[n] - mn2_before.get(n, 0) for n in direct_in)
        assert grown >= 30, f"mn2 direct inbound SA carried {grown} packets in 1 s"
        assert {n: esp_drops(lab, n) for n in ("mn1", "mn2")} == drops_before
        # ESP with the new SPIs on both access links, never on the SG's WAN link; no marker in clear.
        time.sleep(0.2)
        home_ro = lab.vcm_pair == "home-ro"
        frames = {name: _esp_frames(path) for name, path in captures.items()}
        seen = {name: f[0] for name, f in frames.items()}
        if home_ro:
            # ESP between the route-optimised home addresses, on the wire care-of to care-of with RH2 (peer's
            # home address) and HAO (own) in front of it; never bare ESP.
            assert lab.status("mn1")["vcm"]["pair"] == "home-ro"
            x1, x2 = (lab.plan.mobile(n).external_home_address or lab.plan.mobile(n).home_address
                      for n in ("mn1", "mn2"))
            for link in ("ar1-up", "ar2-up"):
                routed = frames[link][1]
                assert routed.get((spi_out, x2, x1), 0) >= 30 and routed.get((spi_in, x1, x2), 0) >= 30, \
                    (link, routed)
                assert spi_out not in seen[link] and spi_in not in seen[link], (link, seen[link])
            assert not _routed(frames["sg-wan"][1], spi_out) and not _routed(frames["sg-wan"][1], spi_in)
        else:
            for link in ("ar1-up", "ar2-up"):
                assert seen[link].get(spi_out, 0) >= 30 and seen[link].get(spi_in, 0) >= 30, (link, seen[link])
        assert spi_out not in seen["sg-wan"] and spi_in not in seen["sg-wan"]
        for path in captures.values():
            with open(path, "rb") as f:
                assert bytes.fromhex(marker) not in f.read(), f"payload marker in clear on {path}"

        if binding == "static-key":
            # RFC 4449: the MN–MN BUs went without any home or care-of test, and both verified.
            tests = [e for e in lab.events() if e["event"] == "mobility_sent" and e["what"][:4] in ("HoTI", "CoTI")]
            assert not tests, tests[:3]
            for node in ("mn1", "mn2"):
                counters = lab.status(node)["counters"]
                assert not counters.get("dropped_bad_authenticator") and not counters.get("dropped_missing_rr_options")

        # 2. MN1 moves: the direct path recovers (both ends' SAs follow the care-of address).
        move_events = lab.move("mn1", "cell")
        wait_for(lambda: vcm_paths(lab, "mn1").get("mn2", {}).get("path") == "direct",
                 3.0, what="mn1 still direct after its move")
        coa1 = lab.status("mn1")["mobility"]["care_of_address"]
        if home_ro:
            # Followed by mn1's own BU to mn2 (no SG care-of notice is sent at all): mn2's binding for mn1's
            # route-optimised home address names the new care-of address, and its direct SAs never moved.
            def mn2_binding():
                rows = lab.status("mn2")["mobility"].get("peers", [])
                return any(r["peer"] == "mn1" and r["peer_care_of"] == coa1 for r in rows)
            wait_for(mn2_binding, 3.0, what="mn2's binding of mn1 at the new care-of address")
            t0 = move_events[0]["time"] if move_events else 0.0
            events = [e for e in lab.events() if e["time"] >= t0]
            coa2 = lab.status("mn2")["mobility"]["care_of_address"]   # the BU carries RH2 (§9.3.2): sent there
            assert [e for e in events if e["node"] == "mn1" and e["event"] == "mobility_sent"
                    and e["what"].startswith("BU") and e["what"].endswith("correspondent") and e["dst"] == coa2], \
                "no BU from mn1 to mn2 after the move"
            assert not [e for e in lab.events() if e["event"] == "peer_care_of"]
            assert lab.status("sg")["counters"]["care_of_notices"] == 0
            sas = {sa["name"]: sa for sa in lab.status("mn2")["ipsec"]["sas"]}
            assert {sa["remote"] for n, sa in sas.items() if n.startswith("vcm-")} == {x1}
        else:
            wait_for(lambda: lab.status("mn2")["vcm"]["peer_care_of"].get("mn1") == coa1,
                     3.0, what="mn2 learnt mn1's new care-of address")
        time.sleep(0.5)
        sg_before, mn2_before = sa_packets(lab, "sg"), sa_packets(lab, "mn2")
        replies_before = len(ping_reply_times(ping_log))
        time.sleep(1.0)
        sg_after, mn2_after = sa_packets(lab, "sg"), sa_packets(lab, "mn2")
        relayed = (sg_after["mn1->sg"] - sg_before["mn1->sg"]) + (sg_after["sg->mn2"] - sg_before["sg->mn2"])
        assert relayed <= 4, f"after the move the SG relays {relayed} packets in 1 s"
        assert len(ping_reply_times(ping_log)) - replies_before >= 30
        assert {n: esp_drops(lab, n) for n in ("mn1", "mn2")} == drops_before
        if home_ro:   # the direct SPIs with RH2 + HAO on mn1's new access link, from its new care-of address
            routed = _esp_frames(captures["ar3-up"])[1]
            assert routed.get((spi_out, x2, x1), 0) >= 30 and routed.get((spi_in, x1, x2), 0) >= 30, routed

        # 3. MN2 returns to the office: MN1 falls back to the SG path, pings continue.
        lab.move("mn2", "office")
        wait_for(lambda: vcm_paths(lab, "mn1").get("mn2", {}).get("path") == "via-sg",
                 5.0, what="mn1 back on the SG path")
        time.sleep(0.5)
        sg_before = sa_packets(lab, "sg")
        replies_before = len(ping_reply_times(ping_log))
        time.sleep(1.0)
        sg_after = sa_packets(lab, "sg")
        assert sg_after["mn1->sg"] - sg_before["mn1->sg"] >= 30
        assert len(ping_reply_times(ping_log)) - replies_before >= 30

        # Stale direct SAs go: outbound at the fall-back, inbound once the grace has passed, on both MNs.
        assert not [n for n in sa_packets(lab, "mn1") if n.startswith("vcm-") and n.endswith("-out")]
        wait_for(lambda: not [n for node in ("mn1", "mn2") for n in sa_packets(lab, node) if n.startswith("vcm-")],
                 INBOUND_GRACE_S + 3.0, what="direct SAs removed after the grace")

        # No plaintext of the pings on any public link at any time (captures ran throughout).
        time.sleep(0.2)
        for path in captures.values():
            with open(path, "rb") as f:
                assert bytes.fromhex(marker) not in f.read(), f"payload marker in clear on {path}"

        if variant == "host":
            # Where the MN–VCM SAs travel: straight between care-of address and VCM ("direct"), or only
            # inside the MN–SG tunnel, never as outer ESP on a public link ("encapsulated").
            vcm_spis = {sa["spi"]: name for name in ("mn1", "mn2")
                        for sa in lab.node_configs[name]["mobility"]["vcm"]["sa"].values()}
            outer = {name: {spi: n for spi, n in seen.items() if spi in vcm_spis}
                     for name, seen in ((name, _esp_spis(path)) for name, path in captures.items())}
            if vcm_control == "direct":
                assert len(outer["sg-wan"]) == 4, outer   # both MNs' pairs, both directions
                assert outer["ar3-up"], "the fall-back never reached mn1 at its cellular care-of address"
            else:
                assert not any(outer.values()), outer

        # The nodes' signalling events read as the sequence chart's steps.
        kinds = {m["kind"] for m in map(records.signalling_message, lab.events()) if m}
        assert {"report_202", "ack_204", "keys_206", "keys_210", "ack_208", "ack_212", "fallback"} <= kinds

        # Every MN spoke only for itself: the SA and inner-source checks refused nothing legitimate.
        for node in ("sg", "ha") + (("vcm",) if variant == "host" else ()):
            counters = lab.status(node)["counters"]
            refused = {k: counters.get(k, 0) for k in ("mh_wrong_sa", "inner_source_mismatch", "unprotected_vpn_source")}
            assert not any(refused.values()), (node, refused)
    finally:
        lab.stop()


def test_vcm_rekey_in_the_running_lab_keeps_the_path_direct_without_drops():
    """Lifetime 8 s: the VCM rekeys at 6 s (make-before-break); the pings never fall back to the SG."""
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "wlan2"], links="ideal",
                  mobility=True, vcm="in-sg", vcm_lifetime=8)
    try:
        lab.start()
        h2 = lab.plan.mobile("mn2").home_address
        drops_before = {n: esp_drops(lab, n) for n in ("mn1", "mn2")}
        lab.popen("mn1", ["ping", "-6", "-n", "-D", "-i", "0.02", h2], "ping.log")
        wait_for(lambda: vcm_paths(lab, "mn1").get("mn2", {}).get("path") == "direct",
                 DIRECT_WITHIN_S, what="mn1 direct to mn2")
        first = vcm_paths(lab, "mn1")["mn2"]
        sg_before = sa_packets(lab, "sg")
        wait_for(lambda: all(vcm_paths(lab, n).get(p, {}).get("generation") == 2
                             for n, p in (("mn1", "mn2"), ("mn2", "mn1"))), 12.0, what="second generation on both ends")
        second = vcm_paths(lab, "mn1")["mn2"]
        assert second["path"] == "direct" and second["spi_out"] != first["spi_out"]
        time.sleep(0.5)
        replies_before = len(ping_reply_times(os.path.join(lab.run_dir, "ping.log")))
        time.sleep(1.0)
        assert len(ping_reply_times(os.path.join(lab.run_dir, "ping.log"))) - replies_before >= 30
        sg_after = sa_packets(lab, "sg")
        assert sg_after["mn1->sg"] - sg_before["mn1->sg"] <= 10   # control only, never the pings
        assert {n: esp_drops(lab, n) for n in ("mn1", "mn2")} == drops_before
        mn1_events = [e["event"] for e in lab.events() if e["node"] == "mn1"]
        assert "fall_back_to_sg" not in mn1_events
    finally:
        lab.stop()


def test_vcm_one_way_traffic_goes_direct():
    """UDP from mn1 to mn2 only (mn2 listens and never answers): detected at the SG and switched direct."""
    import sys
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "wlan2"], links="ideal",
                  mobility=True, vcm="in-sg")
    try:
        lab.start()
        h2 = lab.plan.mobile("mn2").home_address
        lab.popen("mn2", [sys.executable, "-c", "import socket\n"
                          "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
                          f"s.bind(('{h2}', 9009))\n"
                          "while True: s.recv(2048)\n"], "sink.log")
        lab.popen("mn1", [sys.executable, "-c", "import socket, time\n"
                          "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
                          f"while True: s.sendto(b'x' * 100, ('{h2}', 9009)); time.sleep(0.02)\n"], "source.log")
        wait_for(lambda: vcm_paths(lab, "mn1").get("mn2", {}).get("path") == "direct",
                 DIRECT_WITHIN_S, what="mn1 direct to mn2")
        time.sleep(0.3)
        sg_before, mn2_before = sa_packets(lab, "sg"), sa_packets(lab, "mn2")
        time.sleep(1.0)
        sg_after, mn2_after = sa_packets(lab, "sg"), sa_packets(lab, "mn2")
        assert sg_after["mn1->sg"] - sg_before["mn1->sg"] <= 4
        grown = sum(mn2_after[n] - mn2_before.get(n, 0) for n in mn2_after if n.startswith("vcm-") and n.endswith("-in"))
        assert grown >= 30
        assert lab.status("mn1")["counters"]["direct_out"] >= 30
    finally:
        lab.stop()
