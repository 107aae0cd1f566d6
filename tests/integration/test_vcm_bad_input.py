"""Hostile control traffic in the running lab (VCM built into the SG): a mobile node's node app is made to
send (fault injection over its control socket) malformed VCM messages, messages in the name of an unknown
node or of another MN, an old counter, and ESP that fails its ICV. Each is dropped and counted with a reason at the SG, and the direct path the VCM set up
keeps working."""
import os
import subprocess
import sys
import time

from tests.integration.helpers import ping_reply_times, vcm_paths, wait_for
from tests.integration.test_vcm_in_sg import DIRECT_WITHIN_S

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bad_control_messages():
    from nodeapps.vcm import protocol as p
    def ack(sender, counter):
        return p.encode(p.Message(p.REPORT_ACK, sender, counter, 7))
    return [b"\x01\x02 not a control message",   # malformed
            ack(99, 1 << 40),                      # unknown node
            ack(12, 1 << 40),                      # mn2's id over mn1's SA
            ack(11, 1)]                            # mn1's id, counter long since passed


# ESP in mn1's tunnel SA's SPI with a sequence number ahead of the window and a forged ICV.
SEND_FORGED_ESP = """
import sys
from scapy.all import IPv6, Raw, send
from scapy.layers.ipsec import ESP
coa, sg, spi = sys.argv[1], sys.argv[2], int(sys.argv[3])
send(IPv6(src=coa, dst=sg) / ESP(spi=spi, seq=1 << 30) / Raw(bytes(80)), count=3, verbose=False)
"""


def _in_mn1(lab, script, *args):
    out = subprocess.run(["mnexec", "-a", str(lab.host("mn1").pid), sys.executable, "-c", script, *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr


def test_forged_replayed_and_misattributed_control_messages_are_dropped_with_a_reason():
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "wlan2"], links="ideal",
                  mobility=True, vcm="in-sg", fault_injection=True)
    try:
        lab.start()
        plan = lab.plan
        h2 = plan.mobile("mn2").home_address
        lab.popen("mn1", ["ping", "-6", "-n", "-D", "-i", "0.02", h2], "ping.log")
        wait_for(lambda: vcm_paths(lab, "mn1").get("mn2", {}).get("path") == "direct",
                 DIRECT_WITHIN_S, what="mn1 direct to mn2")
        stats_before = dict(lab.status("sg")["vcm"]["manager_stats"])
        icv_before = lab.status("sg")["ipsec"]["counters"].get("icv", 0)
        spi_out_before = vcm_paths(lab, "mn1")["mn2"]["spi_out"]

        # mn1's node app sends them the way its agent sends its own messages: inside its SA with the SG.
        from nodeapps.runtime.control import request
        for data in _bad_control_messages():
            assert request(lab.control_socket("mn1"), "vcm-inject", data=data.hex())["sent"] == len(data)
        reasons = ("malformed", "unknown-node", "wrong-path", "replay")
        wait_for(lambda: all(lab.status("sg")["vcm"]["manager_stats"].get(r, 0) > stats_before.get(r, 0)
                             for r in reasons), 5.0, what="the SG's VCM counted every bad message")
        drops = [e for e in lab.events() if e["node"] == "sg" and e["event"] == "control_drop"]
        assert {e["reason"] for e in drops} >= set(reasons), drops

        coa1 = lab.status("mn1")["mobility"]["care_of_address"]
        spi = next(sa["spi"] for sa in lab.node_configs["mn1"]["sas"] if sa["name"] == "mn1->sg")
        _in_mn1(lab, SEND_FORGED_ESP, coa1, plan.sg_public, str(spi))
        wait_for(lambda: lab.status("sg")["ipsec"]["counters"].get("icv", 0) >= icv_before + 3, 5.0,
                 what="the SG counted the forged ESP as ICV failures")

        # Nothing of it disturbed the session: same SA pair, direct, pings answered.
        time.sleep(0.3)
        row = vcm_paths(lab, "mn1")["mn2"]
        assert row["path"] == "direct" and row["spi_out"] == spi_out_before
        before = len(ping_reply_times(os.path.join(lab.run_dir, "ping.log")))
        time.sleep(1.0)
        assert len(ping_reply_times(os.path.join(lab.run_dir, "ping.log"))) - before >= 30
        # The forged sequence number did not move the window: mn1's real packets still pass.
        assert lab.status("sg")["ipsec"]["counters"].get("replay", 0) == 0
    finally:
        lab.stop()
