"""Crashed nodes come back, in the running lab (both address plans, the VCM in the SG): while MN1 pings MN2
(over their direct VCM pair) and the file server at 50 Hz, the SG, the office HA and MN2 are each killed
with SIGKILL and started again, and MN2 once more after the SG. The restarted SG or HA asks the MN to
register again (a Binding Refresh Request); the restarted MN tells the VCM (RESTARTED), which moves MN1 back
to the SG path and sets the pair up anew; when the VCM restarted with the SG since it keyed the pair, MN1's
first packet under the lost SA makes MN2 report it (UNKEYED_PEER) and the VCM moves MN1 back all the same. Each ping stream resumes within RESUME_WITHIN_S; the pair is direct again with fresh SPIs; and at
no moment does a ping cross the Internet in clear (their payload pattern is never seen on the Internet
router, while MN1's own TUN shows it)."""
import contextlib
import os
import time

import pytest

from tests.integration.helpers import esp_drops, ping_reply_times, start_capture, vcm_paths, wait_for
from topologies.pcap import pcap_frames

# Longest silence of either ping stream after a restart (README "Crashed nodes come back"): measured 0.26-0.38 s
# for the SG and the HA; 0.34-0.47 s for MN2 in most runs, up to 2.1 s in about one run in four on a quiet
# machine and about 3 s (the whole window then) in the full suite's clean-clone run.
RESUME_WITHIN_S = {"sg": 1.0, "ha": 1.0, "mn2": 6.0}
PING_HZ = 50
# MN2 is restarted right after the pair went direct: within the second its process started in, which its
# peers once took for the same process (counters from the start second; README "Crashed nodes come back").
SETTLE_S = 0.0
# MN1's direct packets MN2's new process meets before MN1 falls back: at most the pings of the allowed silence
# (measured 8 on an idle machine, 71 under the full suite's load)
OBSERVE_S = 8.0   # longer than every bound: a silence up to the window's end is a failure, not a cut-off
# Every ping's payload repeats this pattern (ping -p): found in a frame, the ping crossed that link in clear.
PATTERN = b"svpnlab-restart"


def pattern_frames(path):
    return sum(1 for _t, frame in pcap_frames(path) if PATTERN in frame)


def longest_silence(path, start, end):
    """The longest time without a reply between ``start`` and ``end`` (wall clock, seconds)."""
    times = [start] + [t for t in ping_reply_times(path) if start < t < end] + [end]
    return max(b - a for a, b in zip(times, times[1:]))


@contextlib.contextmanager
def pinging_lab(addressing, vcm):
    """A running lab whose MN1 pings MN2 (over their direct pair, once it is up) and the file server."""
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing=addressing, mobile_nodes=2, attachments=["wlan1", "wlan2"], links="ideal",
                  mobility=True, vcm=vcm)
    try:
        lab.start()
        lab.captures = {where: start_capture(lab, node, interface, f"{where}.pcap")[1]
                        for where, node, interface in (("internet", "ir", "any"), ("mn1-tun", "mn1", "svpn0"))}
        for name, address in (("mn2", lab.plan.mobile("mn2").home_address), ("fs", lab.plan.office["fs"])):
            lab.popen("mn1", ["ping", "-6", "-n", "-D", "-i", "0.02", "-s", "64", "-p", PATTERN.hex(), address],
                      f"ping-{name}.log")
        wait_for(lambda: vcm_paths(lab, "mn1").get("mn2", {}).get("path") == "direct", 10.0, what="direct pair")
        wait_for(lambda: vcm_paths(lab, "mn2").get("mn1", {}).get("path") == "direct", 5.0, what="direct back")
        time.sleep(SETTLE_S)
        yield lab
    finally:
        lab.stop()


def restart_and_watch(lab, node):
    """Restart ``node``, watch OBSERVE_S; the longest silence of each ping stream since the kill."""
    killed = time.time()
    lab.restart(node)
    time.sleep(OBSERVE_S)
    return {name: longest_silence(os.path.join(lab.run_dir, f"ping-{name}.log"), killed, time.time())
            for name in ("mn2", "fs")}


@pytest.mark.parametrize("addressing", ["private", "public"])
def test_restarted_sg_ha_and_mn_bring_the_traffic_back(addressing):
    with pinging_lab(addressing, "in-sg") as lab:
        # MN2 last again: the SG's new VCM knows nothing of the pair its predecessor keyed; MN2's new process
        # reports MN1's packets under the lost SA (UNKEYED_PEER) and the VCM moves MN1 back.
        for node in ("mn2", "ha", "sg", "mn2"):
            spis_before = vcm_paths(lab, "mn1")["mn2"]["spi_out"]
            for name, silence in restart_and_watch(lab, node).items():
                assert silence <= RESUME_WITHIN_S[node], f"after restarting {node}: no reply to {name} for {silence:.2f} s"
            row = wait_for(lambda: (r := vcm_paths(lab, "mn1").get("mn2", {})).get("path") == "direct" and r,
                           5.0, what=f"direct pair after restarting {node}")
            if node == "mn2":
                assert row["spi_out"] != spis_before   # a new generation: MN2's new process has no old keys
                assert esp_drops(lab, "mn2")["unknown_spi"] <= PING_HZ * RESUME_WITHIN_S["mn2"]
        assert lab.status("mn1")["mobility"]["state"] == "away"
        time.sleep(0.5)   # tcpdump writes with -U: the last packets reach the file
        assert pattern_frames(lab.captures["mn1-tun"]) > 1000            # the pattern is there to be found
        assert pattern_frames(lab.captures["internet"]) == 0, "a ping crossed the Internet in clear"


def test_restarted_vcm_host_leaves_the_direct_pair_and_the_office_traffic_alone():
    """The VCM on its own host holds no key an MN needs: the pair stays direct, nothing pauses."""
    with pinging_lab("private", "host") as lab:
        spi = vcm_paths(lab, "mn1")["mn2"]["spi_out"]
        for name, silence in restart_and_watch(lab, "vcm").items():
            assert silence <= 0.5, f"after restarting the VCM host: no reply to {name} for {silence:.2f} s"
        assert vcm_paths(lab, "mn1")["mn2"] == {**vcm_paths(lab, "mn1")["mn2"], "path": "direct", "spi_out": spi}
