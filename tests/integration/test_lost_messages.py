"""Lost control messages in the running lab (``experiments/lost_messages.py``): the KEYS to mn1 (210), its
KEYS_ACK (212), mn1's BU and its HoTI to mn2 are each lost once at mn1, in both address plans, with the VCM
in the SG. The pair still ends on the direct path, within the no-loss bound plus the first retransmission
timeout of the exchange the message belongs to, and the node counted exactly that one drop."""
import pytest

from experiments.lost_messages import BY_LABEL, run_once

# Session detected -> both MNs direct without loss is about 20 ms on ideal links (benchmarks/README.md);
# the bound leaves room for a loaded machine.
NO_LOSS_BOUND_S = 2.0
# Lost, these wait for their sender's timer; a lost HoTI does not: mn2's BU reaches mn1 first, and mn1 then
# retries its return routability at once (``MobilePeerRouting.receive_mobility``).
WAIT_FOR_TIMER = {"210", "212", "BU"}


@pytest.mark.parametrize("addressing", ["private", "public"])
@pytest.mark.parametrize("label", ["210", "212", "BU", "HoTI"])
def test_a_lost_message_delays_the_direct_path_by_its_retransmission_timer_only(addressing, label):
    drop = BY_LABEL[label]
    result = run_once(addressing, drop)
    assert result["ended_direct"], f"{label} lost at {drop.where}: the pair never went direct"
    assert result["dropped"] == 1 and result["pending"] == {}, result
    bound = NO_LOSS_BOUND_S + 2 * drop.retransmit_s
    assert result["to_direct_s"] is not None and result["to_direct_s"] <= bound, \
        f"{label} lost at {drop.where}: direct after {result['to_direct_s']} s, bound {bound} s"
    if label in WAIT_FOR_TIMER:   # the drop hit the session's own message, not some other one
        assert result["to_direct_s"] >= 0.9 * drop.retransmit_s, result


def test_drop_next_errors_are_one_line():
    from topologies.lab import LabError, SvpnLab
    lab = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "wlan2"], links="ideal",
                  mobility=True, vcm="in-sg", fault_injection=True)
    try:
        lab.start()
        with pytest.raises(LabError, match=r"^no node app on 'mn9' \(node apps: "):
            lab.drop_next("mn9", "KEYS")
        with pytest.raises(LabError, match=r"^mn1: node refused 'drop-next': drop-next: unknown message 'KEYZ' "):
            lab.drop_next("mn1", "KEYZ")
        with pytest.raises(LabError, match=r"^ha: node refused 'drop-next': drop-next: this node carries no KEYS"):
            lab.drop_next("ha", "KEYS")
        assert lab.drop_next("sg", "report", "out", count=2) == {"message": "REPORT", "direction": "out",
                                                                  "pending": 2}
    finally:
        lab.stop()
