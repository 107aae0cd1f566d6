"""SG monitor core on its own: flow cache, location learning, session triggers, REPORT retransmission."""
import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from nodeapps.vcm import protocol as p
from nodeapps.vcm.channel import ControlPath
from nodeapps.vcm.sg_monitor import MnBinding, MnLocationChanged, MonitorConfig, SessionDetected, SgMonitor

VCM_PATH = ControlPath("sg-vcm-sa", "fd00:10::2")   # also the path the VCM's messages arrive on
MN1_INT, MN2_INT, HOST = (ipaddress.IPv6Address(a).packed for a in ("fd00:10::11", "fd00:10::12", "fd00:10::99"))


def monitor(**options):
    mns = (MnBinding(11, "2001:db8:1::11", "fd00:10::11"), MnBinding(12, "2001:db8:1::12", "fd00:10::12"))
    return SgMonitor(MonitorConfig(1, 2, VCM_PATH, mns, **options))


def sent(mon, now):
    return [p.decode(data) for data, path in mon.datagrams_to_send(now) if path == VCM_PATH]


def ack(mon, report, now, counter):
    mon.receive(p.encode(p.Message(p.REPORT_ACK, 2, counter, report.txid, ())), VCM_PATH, now)


def test_known_flows_cost_nothing_new():
    mon = monitor()
    mon.observe(0.0, MN1_INT, HOST, "in", 11)
    first = sent(mon, 0.0)
    events = mon.pop_events()
    assert len(first) == 1 and [type(e) for e in events] == [MnLocationChanged]
    flows = mon.flow_count()
    for i in range(1000):
        mon.observe(0.001 * i, MN1_INT, HOST, "in", 11)
    assert mon.flow_count() == flows and mon.pop_events() == [] and sent(mon, 1.0) == []
    assert mon.correspondents(11) == {"fd00:10::99"}


def test_session_between_external_mns_detected_once_with_trigger_and_initiator():
    mon = monitor()
    mon.update_binding(0.0, 12, "2001:db8:b::12")
    mon.observe(0.0, MN1_INT, MN2_INT, "in", None)       # MN1 in the office talks to MN2 outside
    mon.observe(0.0, MN1_INT, MN2_INT, "out", 12)
    mon.update_binding(1.0, 11, "2001:db8:a::11")
    mon.pop_events()
    for _ in range(3):
        mon.observe(1.1, MN2_INT, MN1_INT, "in", 12)
        mon.observe(1.1, MN2_INT, MN1_INT, "out", 11)
    detected = [e for e in mon.pop_events() if isinstance(e, SessionDetected)]
    assert detected == [SessionDetected(12, 11, "existing-session")]
    assert mon.correspondents(12) == {"fd00:10::11"} and mon.location(11) == "outside"


def test_reports_wait_for_the_ack_and_go_out_in_order():
    mon = monitor()
    mon.update_binding(0.0, 11, "2001:db8:a::11")
    mon.update_binding(0.0, 12, "2001:db8:b::12")
    first = sent(mon, 0.0)
    assert [m.one(p.MnInfo).node_id for m in first] == [11]   # one REPORT in flight at a time
    ack(mon, first[0], 0.01, 1)
    second = sent(mon, 0.01)
    assert [m.one(p.MnInfo).node_id for m in second] == [12]


def test_report_retransmitted_with_backoff_until_acknowledged():
    mon = monitor()
    mon.update_binding(0.0, 11, "2001:db8:a::11")
    report = sent(mon, 0.0)[0]
    timers = []
    for _ in range(3):
        timers.append(mon.get_timer())
        mon.handle_timer(timers[-1])
        again = sent(mon, timers[-1])
        assert [m.txid for m in again] == [report.txid] and again[0].flags & p.FLAG_RETRANSMIT
    assert [round(t, 3) for t in timers] == [0.25, 0.75, 1.75]
    ack(mon, report, 2.0, 1)
    assert mon.channel.get_timer() is None


def test_plain_traffic_in_the_office_means_inside_and_flows_are_reclassified():
    mon = monitor()
    mon.observe(0.0, MN1_INT, HOST, "in", 11)
    assert mon.location(11) == "outside"
    mon.observe(5.0, MN1_INT, HOST, "in", None)
    assert mon.location(11) == "inside"
    mon.observe(9.0, MN1_INT, HOST, "in", 11)          # same flow key as before: must be seen again
    assert mon.location(11) == "outside"
    reasons = [e.reason for e in mon.pop_events()]
    assert reasons == ["SG SA carries its traffic", "seen in clear in the office", "SG SA carries its traffic"]


def test_packets_to_an_mn_from_the_office_do_not_mark_it_inside():
    mon = monitor()
    mon.update_binding(0.0, 12, "2001:db8:b::12")
    mon.observe(0.1, HOST, MN2_INT, "in", None)
    assert mon.location(12) == "outside"


def test_binding_changes_report_care_of_and_deregistration():
    mon = monitor()
    mon.update_binding(0.0, 11, "2001:db8:a::11")
    ack(mon, sent(mon, 0.0)[0], 0.01, 1)
    mon.update_binding(1.0, 11, "2001:db8:c::11")
    moved = sent(mon, 1.0)[0].one(p.MnInfo)
    assert (moved.location, moved.care_of) == (p.LOCATION_OUTSIDE, "2001:db8:c::11")
    ack(mon, p.Message(p.REPORT, 1, 1, 2, ()), 1.01, 2)
    mon.update_binding(2.0, 11, None)
    home = sent(mon, 2.0)[0].one(p.MnInfo)
    assert (home.location, home.care_of) == (p.LOCATION_INSIDE, None)


def test_idle_sg_sa_means_inside_only_when_enabled():
    for idle, expected in ((None, "outside"), (5.0, "inside")):
        mon = monitor(idle_timeout=idle)
        mon.observe(0.0, MN1_INT, HOST, "in", 11)
        while (timer := mon.get_timer()) is not None and timer < 20.0:
            mon.handle_timer(timer)
            if mon.channel.get_timer() is not None:
                mon.datagrams_to_send(timer)
        assert mon.location(11) == expected


def test_flows_are_forgotten_after_the_flow_timeout():
    mon = monitor(flow_timeout=10.0)
    mon.observe(0.0, MN1_INT, HOST, "in", 11)
    mon.observe(0.0, HOST, MN1_INT, "out", 11)
    assert mon.flow_count() == 2
    while (timer := mon.get_timer()) is not None and timer < 30.0:
        mon.handle_timer(timer)
    assert mon.flow_count() == 0 and mon.get_timer() == mon.channel.get_timer()   # no more sweeps


def test_unknown_mn_and_stray_requests_are_counted_not_raised():
    mon = monitor()
    mon.update_binding(0.0, 99, "2001:db8::1")
    mon.observe(0.0, HOST, HOST, "in", 99)
    assert mon.stats["unknown-mn"] == 2
    stray = p.encode(p.Message(p.FALLBACK, 2, 5, 5, (p.SessionRef(1, 1), p.Peer(11))))
    mon.receive(stray, VCM_PATH, 0.0)
    answer = sent(mon, 0.0)
    assert answer[0].type == p.FALLBACK_ACK and answer[0].status == p.STATUS_BAD_REQUEST


def test_the_external_home_address_is_learned_from_the_sg_binding():
    # Configured with one external HoA, the SG's binding names another: reports and flow attribution follow
    # the binding (embodiment 1 keys the SG's binding by the external HoA).
    mon = monitor()
    mon.update_binding(0.0, 11, "2001:db8:a::11", home_address="2001:db8:e0::a:1")
    (report,) = sent(mon, 0.0)
    info = report.one(p.MnInfo)
    assert info.node_id == 11 and info.external_hoa == "2001:db8:e0::a:1" and info.care_of == "2001:db8:a::11"
    assert mon.stats["external-hoa-learned"] == 1
    mon.update_binding(1.0, 11, "2001:db8:b::11", home_address="2001:db8:e0::a:1")   # same address: nothing new
    assert mon.stats["external-hoa-learned"] == 1
    learned = ipaddress.IPv6Address("2001:db8:e0::a:1").packed
    ack(mon, report, 0.01, 1)
    mon.update_binding(2.0, 12, "2001:db8:b::12")
    mon.pop_events()
    mon.observe(2.1, MN2_INT, learned, "in", 12)      # MN2 talks to MN1's learned external HoA
    mon.observe(2.1, learned, MN2_INT, "in", 11)
    assert [e for e in mon.pop_events() if isinstance(e, SessionDetected)]


MN3_INT = ipaddress.IPv6Address("fd00:10::13").packed


def three_outside():
    mns = tuple(MnBinding(10 + i, f"2001:db8:1::1{i}", f"fd00:10::1{i}") for i in (1, 2, 3))
    mon = SgMonitor(MonitorConfig(1, 2, VCM_PATH, mns))
    for node in (11, 12, 13):
        mon.update_binding(0.0, node, f"2001:db8:a::{node}")
    mon.pop_events()
    return mon


def test_a_packet_on_one_mns_sa_never_makes_a_session_for_two_others():
    mon = three_outside()
    for _ in range(3):
        mon.observe(1.0, MN1_INT, MN2_INT, "in", 13)    # MN3's SA claims MN1 -> MN2
        mon.observe(1.0, MN2_INT, MN1_INT, "out", 13)   # and the answer into MN3's SA
    assert [e for e in mon.pop_events() if isinstance(e, SessionDetected)] == []
    assert mon.stats["inner_source_mismatch"] == 6 and mon.flow_count() == 0
    assert mon.correspondents(13) == set()
    # MN3 speaking for itself still counts.
    mon.observe(1.1, MN3_INT, MN1_INT, "in", 13)
    assert [e for e in mon.pop_events() if isinstance(e, SessionDetected)] == [SessionDetected(13, 11, "external-initiator")]


def test_flow_cache_is_bounded_and_evicts_the_oldest_flow():
    mon = monitor(max_flows=4)
    hosts = [ipaddress.IPv6Address(f"fd00:10::1:{i}").packed for i in range(10)]
    for i, host in enumerate(hosts):
        mon.observe(0.01 * i, MN1_INT, host, "in", 11)
    assert mon.flow_count() == 4 and mon.stats["flows_evicted"] == 6
    # The newest flows are the ones kept; a kept flow is not classified again.
    mon.pop_events()
    mon.observe(1.0, MN1_INT, hosts[-1], "in", 11)
    assert mon.stats["flows_evicted"] == 6


def test_default_flow_bound_fits_the_scale_experiment():
    assert MonitorConfig(1, 2, VCM_PATH, ()).max_flows >= 100 * 20


# -- the sweep looks only at flows that changed, with the same outcome as a scan of every flow ---------

class ScanningMonitor(SgMonitor):
    """The reference: every sweep scans every cached flow."""

    def _sweep(self, now, full=False):
        super()._sweep(now, full=True)


MNS4 = tuple(MnBinding(10 + i, f"2001:db8:1::1{i}", f"fd00:10::1{i}") for i in (1, 2, 3, 4))
ADDRESSES = [ipaddress.IPv6Address(a).packed for a in
             ("fd00:10::11", "fd00:10::12", "fd00:10::13", "fd00:10::14", "2001:db8:1::12", "fd00:10::99")]
OP = st.one_of(
    st.tuples(st.just("observe"), st.sampled_from(range(len(ADDRESSES))), st.sampled_from(range(len(ADDRESSES))),
              st.sampled_from(["in", "out"]), st.sampled_from([None, 11, 12, 13, 14, 77])),
    st.tuples(st.just("bind"), st.sampled_from([11, 12, 13, 14]), st.booleans()),
    # wait: how long, and whether the timers due at the very end run before the next ops at that time
    st.tuples(st.just("wait"), st.sampled_from([0.0, 0.25, 1.0, 2.0, 3.5, 9.0]), st.booleans()))


def _drive(mon, ops, acks):
    now, out = 0.0, []

    def settle(until, inclusive=True):
        nonlocal now
        while (timer := mon.get_timer()) is not None and (timer <= until if inclusive else timer < until):
            now = max(now, timer)
            mon.handle_timer(now)
            emit()
        now = until

    def emit():
        for data, _ in mon.datagrams_to_send(now):
            out.append((now, data))
            msg = p.decode(data)
            if acks:   # the VCM answers at once
                mon.receive(p.encode(p.Message(p.REPORT_ACK, 2, len(out), msg.txid, ())), VCM_PATH, now)
        out.extend((now, repr(e)) for e in mon.pop_events())

    for op in ops:
        if op[0] == "observe":
            mon.observe(now, ADDRESSES[op[1]], ADDRESSES[op[2]], op[3], op[4])
        elif op[0] == "bind":
            mon.update_binding(now, op[1], f"2001:db8:a::{op[1]}" if op[2] else None)
        else:
            settle(now + op[1], op[2])
        emit()
        reported = sorted((sorted(pair), when, sorted(r[0] for r in records))
                          for pair, (when, records) in mon._reported.items())
        out.append((now, mon.flow_count(), reported, mon.get_timer()))
    settle(now + 30.0)
    return out


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(OP, max_size=80), idle=st.sampled_from([None, 4.0]), acks=st.booleans())
def test_sweeping_changed_flows_matches_a_scan_of_every_flow(ops, idle, acks):
    options = dict(flow_timeout=5.0, re_report_after=3.0, max_flows=5, idle_timeout=idle)
    incremental = SgMonitor(MonitorConfig(1, 2, VCM_PATH, MNS4, **options))
    scanning = ScanningMonitor(MonitorConfig(1, 2, VCM_PATH, MNS4, **options))
    assert _drive(incremental, ops, acks) == _drive(scanning, ops, acks)
    assert len(incremental._expiry) == incremental.flow_count() and incremental._touched <= set(incremental._flows)


def test_a_sweep_looks_at_the_flows_seen_since_not_at_every_flow():
    mon = monitor(flow_timeout=1000.0)
    hosts = [ipaddress.IPv6Address(f"fd00:10::1:{i}").packed for i in range(500)]
    for host in hosts:
        mon.observe(0.0, MN1_INT, host, "in", 11)
    mon.handle_timer(1.0)                          # the first sweep
    mon.observe(1.5, MN1_INT, hosts[7], "in", 11)
    assert mon._touched == {(MN1_INT, hosts[7], 11)}
    assert len(mon._expiry) == 500 and mon._expiry.earliest() == 0.0   # nothing due before t = 1000


def test_a_flow_seen_just_before_a_sweep_at_the_same_time_counts_for_the_next_sweep_too():
    # Flow 11->12 last seen at 0.5; 12->11 seen at 5.0 before that instant's sweep. The scan counts the
    # second flow seen since both the sweep at 5 and the one at 6, which drops the first flow's record
    # (older than the 5 s flow timeout) from the reported pair at 6, not 7.
    ops = [("bind", 11, True), ("bind", 12, True), ("observe", 0, 1, "in", 11), ("wait", 0.5, True),
           ("observe", 0, 1, "in", 11), ("wait", 4.5, False), ("observe", 1, 0, "in", 12), ("wait", 1.5, True),
           ("wait", 0.0, True)]
    options = dict(flow_timeout=5.0, re_report_after=3.0)
    incremental = SgMonitor(MonitorConfig(1, 2, VCM_PATH, MNS4, **options))
    scanning = ScanningMonitor(MonitorConfig(1, 2, VCM_PATH, MNS4, **options))
    trace = _drive(incremental, ops, True)
    assert trace == _drive(scanning, ops, True)
    at_6_5 = [entry for entry in trace if entry[0] == 6.5 and len(entry) == 4]
    assert at_6_5 and at_6_5[0][2] == [([11, 12], 5.0, [5.0])]   # re-reported at 5; 0.5 dropped at 6
