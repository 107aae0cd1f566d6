"""A clear packet with a Home Address option sent to the SG's public address (what stopped the SG before)
is dropped and counted, and the SG goes on; the fixture in conftest.py checks that no handler raised."""
import sys
import time

from helpers import wait_for


def test_clear_home_address_option_packets_to_the_sg_are_dropped_and_counted():
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "wlan2"], links="ideal",
                  mobility=True, vcm="in-sg")
    try:
        lab.start()
        sg = lab.plan.sg_public
        victim = lab.plan.mobile("mn2").home_address
        script = ("from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, HAO; from scapy.layers.inet import UDP; "
                  "from scapy.sendrecv import send; "
                  f"send(IPv6(dst='{sg}')/IPv6ExtHdrDestOpt(options=[HAO(hoa='{victim}')])/UDP(dport=9)/b'x', "
                  "count=3, verbose=0)")
        lab.host("mn1").cmd(f"{sys.executable} -c \"{script}\"")
        wait_for(lambda: lab.status("sg")["counters"]["clear_dropped"] >= 3, timeout=5, what="3 clear drops")
        time.sleep(0.2)
        counters = lab.status("sg")["counters"]
        assert counters["clear_dropped"] == 3 and counters["handler_errors"] == 0
        lab.check_nodes()
    finally:
        lab.stop()
    assert lab.handler_errors()["sg"] == 0
