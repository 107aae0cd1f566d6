"""Two mobile nodes with mobility in both address plans: away, each reaches the other's home address and
the office through the home agent; after one comes home and the other moves, still."""
import pytest

from topologies.measurements import ping


@pytest.mark.parametrize("addressing", ["private", "public"])
def test_two_mobile_nodes_reach_each_other_through_moves(addressing):
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing=addressing, mobile_nodes=2, attachments=["wlan1", "cell"], links="ideal",
                  mobility=True)
    try:
        lab.start()
        h1, h2 = lab.plan.mobile("mn1").home_address, lab.plan.mobile("mn2").home_address
        fs = lab.plan.office["fs"]

        def check(pairs):
            for src, dst in pairs:
                result = ping(lab.host(src), dst, count=10, interval=0.03)
                assert result["received"] >= 9, f"{src} -> {dst}: {result['received']}/10"

        lab.move("mn2", "wlan2")  # also waits until mn2 is registered
        check([("mn1", h2), ("mn2", h1), ("mn1", fs), ("fs", h2)])
        lab.move("mn1", "office")
        check([("mn1", h2), ("mn2", h1), ("fs", h1), ("lap", h2)])
        assert lab.attachment == {"mn1": "office", "mn2": "wlan2"}
        ha = lab.status("ha")["mobility"]["counters"]
        assert ha["received_BU"] >= 3  # registrations of both nodes, and mn1's deregistration
    finally:
        lab.stop()
