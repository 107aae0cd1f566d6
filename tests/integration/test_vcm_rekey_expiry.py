"""Rekey in the running lab (private plan, VCM in the SG): after the make-before-break switch to the second
generation, the first generation's direct SAs leave both MNs — the outbound one at the switch, the inbound
one when its lifetime plus the inbound grace has passed — while pings at 50 Hz keep flowing on the direct
path without unknown-SPI or ICV drops."""
import os
import re
import time

from tests.integration.helpers import esp_drops, ping_reply_times, sa_packets, vcm_paths, wait_for

LIFETIME_S = 20      # the VCM starts generation 2 at 0.75 x 20 = 15 s, generation 3 only at about 30 s
GRACE_S = 2.0        # inbound SA of the old generation kept this long past its lifetime
SLACK_S = 2.0        # timer, polling and shared-CPU latency allowed on top of lifetime + grace
DIRECT_WITHIN_S = 15.0
PAIRS = (("mn1", "mn2"), ("mn2", "mn1"))


def _vcm_sas(lab, node):
    return {s["name"] for s in lab.status(node)["ipsec"]["sas"] if s["name"].startswith("vcm-")}


def _vcm_rules(lab, node):
    """SPD rules that use a direct SA: the SA name each one points to."""
    return {r["sa"] for r in lab.status(node)["ipsec"]["spd"]["rules"] if str(r.get("sa") or "").startswith("vcm-")}


def _generation_of(name):
    match = re.fullmatch(r"vcm-\d+-\d+-s(\d+)g(\d+)-(in|out)", name)
    assert match, f"unexpected direct SA name {name}"
    return int(match[2])


def _event_time(lab, node, event, generation):
    times = [e["time"] for e in lab.events()
             if e["node"] == node and e["event"] == event and e.get("generation") == generation]
    assert len(times) == 1, (node, event, generation, times)
    return times[0]


def test_retired_generation_leaves_both_mobile_nodes_while_pings_keep_flowing():
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="private", mobile_nodes=2, attachments=["wlan1", "wlan2"], links="ideal",
                  mobility=True, vcm="in-sg", vcm_lifetime=LIFETIME_S, vcm_inbound_grace=GRACE_S)
    try:
        lab.start()
        h2 = lab.plan.mobile("mn2").home_address
        drops_before = {n: esp_drops(lab, n) for n in ("mn1", "mn2")}
        lab.popen("mn1", ["ping", "-6", "-n", "-D", "-i", "0.02", h2], "ping.log")
        ping_log = os.path.join(lab.run_dir, "ping.log")

        # Generation 1 direct on both ends.
        for node, peer in PAIRS:
            wait_for(lambda: vcm_paths(lab, node).get(peer, {}).get("path") == "direct",
                     DIRECT_WITHIN_S, what=f"{node} direct to {peer}")
        direct_at = time.time()
        first = {node: vcm_paths(lab, node)[peer] for node, peer in PAIRS}
        assert all(row["generation"] == 1 for row in first.values()), first
        gen1 = {node: _vcm_sas(lab, node) for node, _ in PAIRS}
        for node, names in gen1.items():
            assert len(names) == 2 and {_generation_of(n) for n in names} == {1}, (node, names)
            assert _vcm_rules(lab, node) == names, (node, _vcm_rules(lab, node))
        installed = {node: _event_time(lab, node, "install_inbound", 1) for node, _ in PAIRS}

        # Generation 2 on both ends (make-before-break): generation 1's outbound SA left at the switch,
        # its inbound SA is still there for packets the peer sealed before it switched.
        wait_for(lambda: all(vcm_paths(lab, n).get(p, {}).get("generation") == 2 for n, p in PAIRS),
                 LIFETIME_S * 0.75 + 10.0, what="second generation on both ends")
        second = {node: vcm_paths(lab, node)[peer] for node, peer in PAIRS}
        for node, peer in PAIRS:
            assert second[node]["path"] == "direct" and second[node]["spi_out"] != first[node]["spi_out"]
            left = gen1[node] & _vcm_sas(lab, node)
            assert {n.rsplit("-", 1)[1] for n in left} == {"in"}, (node, left)

        # Generation 1 is gone from both MNs within lifetime + grace of its installation.
        gone_at = {}
        for node, _ in PAIRS:
            bound = installed[node] + LIFETIME_S + GRACE_S + SLACK_S - time.time()
            wait_for(lambda: not (gen1[node] & _vcm_sas(lab, node)), max(bound, 0.1),
                     what=f"generation 1 SAs gone from {node}")
            gone_at[node] = time.time()
        for node, peer in PAIRS:
            retired = _event_time(lab, node, "retire_inbound", 1)
            # Not before the lifetime plus the grace (the peer may still send on generation 1 until then).
            assert retired - installed[node] >= LIFETIME_S + GRACE_S - 0.1, (node, retired - installed[node])
            # Only generation 2's pair is left, and the path is still direct on it.
            now_sas = _vcm_sas(lab, node)
            assert {_generation_of(n) for n in now_sas} == {2} and len(now_sas) == 2, (node, now_sas)
            assert _vcm_rules(lab, node) == now_sas, (node, _vcm_rules(lab, node))   # no rule left behind
            row = vcm_paths(lab, node)[peer]
            assert (row["path"], row["generation"], row["spi_out"], row["spi_in"]) == \
                ("direct", 2, second[node]["spi_out"], second[node]["spi_in"]), (node, row)
            print(f"{node}: generation 1 installed -> retired {retired - installed[node]:.2f} s, "
                  f"seen gone {gone_at[node] - installed[node]:.2f} s")

        # Pings kept flowing on the direct path: every second since the path went direct had replies,
        # and mn2's replies came back on generation 2's direct SA, not through the SG.
        sg_before, mn1_before = sa_packets(lab, "sg"), sa_packets(lab, "mn1")
        time.sleep(1.0)
        sg_after, mn1_after = sa_packets(lab, "sg"), sa_packets(lab, "mn1")
        replies = ping_reply_times(ping_log)
        windows = [sum(1 for t in replies if start <= t < start + 1.0)
                   for start in [direct_at + i for i in range(int(time.time() - direct_at) - 1)]]
        assert len(windows) >= LIFETIME_S and min(windows) >= 35, windows
        in_window = [t for t in replies if t >= direct_at]
        gap = max(b - a for a, b in zip(in_window, in_window[1:]))
        assert gap < 0.5, f"pings stalled for {gap:.2f} s"
        print(f"replies per second since direct: min {min(windows)} over {len(windows)} s, longest gap {gap:.3f} s")
        gen2_in = next(n for n in mn1_after if n.startswith("vcm-") and n.endswith("-in"))
        assert mn1_after[gen2_in] - mn1_before[gen2_in] >= 35
        assert sg_after["mn1->sg"] - sg_before["mn1->sg"] <= 10   # control only, never the pings
        assert {n: esp_drops(lab, n) for n in ("mn1", "mn2")} == drops_before
        for node in ("mn1", "mn2"):
            events = {e["event"] for e in lab.events() if e["node"] == node}
            assert "fall_back_to_sg" not in events and "vcm_op_error" not in events, (node, events)
    finally:
        lab.stop()
