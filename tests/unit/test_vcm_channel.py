"""Control channel: per-peer counters, replay drops, idempotent handling of repeated requests, retransmission with backoff."""
from nodeapps.vcm import protocol as p
from nodeapps.vcm.channel import ControlChannel, ControlDrop, ControlPath, RequestGaveUp

A_PATH = ControlPath("sg-vcm-sa", "fd00::1")
B_PATH = ControlPath("sg-vcm-sa", "fd00::2")
REPORT_TLVS = [p.MnInfo(11, p.LOCATION_OUTSIDE, "2001:db8::11")]


def pair(**options):
    a = ControlChannel(1, {2: B_PATH}, **options)
    b = ControlChannel(2, {1: A_PATH}, **options)
    return a, b


def only(datagrams):
    assert len(datagrams) == 1
    return datagrams[0][0]


def test_request_response_completes_and_stops_retransmission():
    a, b = pair()
    txid = a.send_request(2, p.REPORT, REPORT_TLVS, now=0.0)
    msg, request = b.receive(only(a.datagrams_to_send()), A_PATH, 0.01)
    assert (msg.type, msg.txid, request) == (p.REPORT, txid, None)
    b.respond(msg, [])
    ack, request = a.receive(only(b.datagrams_to_send()), B_PATH, 0.02)
    assert ack.type == p.REPORT_ACK and request.txid == txid and request.tlvs == tuple(REPORT_TLVS)
    assert a.get_timer() is None


def test_retransmission_backs_off_exponentially_then_gives_up():
    a, _ = pair(initial_rto=0.25, max_rto=2.0, max_attempts=5)
    a.send_request(2, p.REPORT, REPORT_TLVS, now=0.0)
    first = p.decode(only(a.datagrams_to_send()))
    times, counters = [], [first.counter]
    while (timer := a.get_timer()) is not None:
        a.handle_timer(timer)
        times.append(timer)
        for data, _ in a.datagrams_to_send():
            msg = p.decode(data)
            assert msg.txid == first.txid and msg.flags & p.FLAG_RETRANSMIT
            counters.append(msg.counter)
    assert times == [0.25, 0.75, 1.75, 3.75, 5.75]   # 0.25, 0.5, 1, 2, then capped at 2
    assert counters == [1, 2, 3, 4, 5]                # each retransmission takes a fresh counter
    gave_up = [e for e in a.events if isinstance(e, RequestGaveUp)]
    assert len(gave_up) == 1 and gave_up[0].request.type == p.REPORT and a.stats["gave-up"] == 1


def test_exact_duplicate_is_answered_again_not_processed_again():
    a, b = pair()
    a.send_request(2, p.REPORT, REPORT_TLVS, now=0.0)
    data = only(a.datagrams_to_send())
    msg, _ = b.receive(data, A_PATH, 0.0)
    b.respond(msg, [p.Status(p.STATUS_OK)])
    first_ack = p.decode(only(b.datagrams_to_send()))
    assert b.receive(data, A_PATH, 0.1) is None
    again = p.decode(only(b.datagrams_to_send()))
    assert (again.type, again.txid, again.tlvs) == (first_ack.type, first_ack.txid, first_ack.tlvs)
    assert again.counter > first_ack.counter
    assert b.stats["duplicate"] == 1 and b.stats["replay"] == 0


def test_retransmission_with_fresh_counter_is_deduplicated_by_transaction():
    a, b = pair()
    a.send_request(2, p.REPORT, REPORT_TLVS, now=0.0)
    msg, _ = b.receive(only(a.datagrams_to_send()), A_PATH, 0.0)
    b.respond(msg, [])
    b.datagrams_to_send()                     # the ACK is lost
    a.handle_timer(a.get_timer())
    assert b.receive(only(a.datagrams_to_send()), A_PATH, 0.3) is None
    ack, request = a.receive(only(b.datagrams_to_send()), B_PATH, 0.31)
    assert ack.type == p.REPORT_ACK and request is not None


def test_replayed_old_counter_is_dropped_with_event():
    a, b = pair()
    a.send_request(2, p.REPORT, REPORT_TLVS, now=0.0)
    old = only(a.datagrams_to_send())
    a.send_request(2, p.REPORT, [p.MnInfo(12, p.LOCATION_INSIDE)], now=0.0)
    new = only(a.datagrams_to_send())
    assert b.receive(new, A_PATH, 0.0) is not None
    # The older message arrives late (reordered): dropped, and recovered by its retransmission.
    assert b.receive(old, A_PATH, 0.01) is None
    assert b.stats["replay"] == 1
    assert [e.reason for e in b.events] == ["replay"]
    a.handle_timer(0.25)
    retransmitted = [d for d, _ in a.datagrams_to_send() if p.decode(d).txid == p.decode(old).txid]
    msg, _ = b.receive(retransmitted[0], A_PATH, 0.26)
    assert msg.one(p.MnInfo).node_id == 11


def test_forged_copy_with_an_old_counter_is_a_replay_not_a_duplicate():
    a, b = pair()
    a.send_request(2, p.REPORT, REPORT_TLVS, now=0.0)
    data = only(a.datagrams_to_send())
    msg, _ = b.receive(data, A_PATH, 0.0)
    b.respond(msg, [])
    b.datagrams_to_send()
    forged = p.encode(p.Message(p.REPORT, 1, msg.counter, msg.txid, (p.MnInfo(11, p.LOCATION_INSIDE),)))
    assert b.receive(forged, A_PATH, 0.1) is None
    assert b.stats["replay"] == 1 and b.datagrams_to_send() == []


def test_unknown_node_wrong_path_and_garbage_are_counted_drops():
    _, b = pair()
    stranger = p.encode(p.Message(p.REPORT, 99, 1, 1, tuple(REPORT_TLVS)))
    impostor = p.encode(p.Message(p.REPORT, 1, 1, 1, tuple(REPORT_TLVS)))
    assert b.receive(stranger, A_PATH, 0.0) is None
    assert b.receive(impostor, ControlPath("vcm-sa", "fd00::66"), 0.0) is None
    assert b.receive(b"\x01\x02garbage", A_PATH, 0.0) is None
    reasons = [e.reason for e in b.events if isinstance(e, ControlDrop)]
    assert reasons == ["unknown-node", "wrong-path", "malformed"]
    assert (b.stats["unknown-node"], b.stats["wrong-path"], b.stats["malformed"]) == (1, 1, 1)
    # The impostor did not advance the real peer's counter.
    assert b.receive(impostor, A_PATH, 0.0) is not None


def test_late_response_for_a_finished_request_is_ignored():
    a, b = pair()
    a.send_request(2, p.REPORT, REPORT_TLVS, now=0.0)
    msg, _ = b.receive(only(a.datagrams_to_send()), A_PATH, 0.0)
    b.respond(msg, [])
    first_ack = only(b.datagrams_to_send())
    a.handle_timer(a.get_timer())                 # the ACK is slow: A retransmits
    assert b.receive(only(a.datagrams_to_send()), A_PATH, 0.3) is None
    second_ack = only(b.datagrams_to_send())      # answered again, not processed again
    assert a.receive(first_ack, B_PATH, 0.31) is not None
    assert a.receive(second_ack, B_PATH, 0.32) is None
    assert a.stats["stale-response"] == 1 and a.get_timer() is None


def test_initial_counter_survives_restart():
    a, b = pair()
    a.send_request(2, p.REPORT, REPORT_TLVS, now=0.0)
    assert b.receive(only(a.datagrams_to_send()), A_PATH, 0.0) is not None
    restarted = ControlChannel(1, {2: B_PATH})
    restarted.send_request(2, p.REPORT, REPORT_TLVS, now=1.0)
    assert b.receive(only(restarted.datagrams_to_send()), A_PATH, 1.0) is None   # counter 1 again: replay
    restarted = ControlChannel(1, {2: B_PATH}, initial_counter=1 << 20)
    restarted.send_request(2, p.REPORT, REPORT_TLVS, now=2.0)
    assert b.receive(only(restarted.datagrams_to_send()), A_PATH, 2.0) is not None


# -- state machine against a reference model --------------------------------------------------------

from hypothesis import settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule  # noqa: E402


class ChannelOverLossyLink(RuleBasedStateMachine):
    """Model: every request is handed to the receiving core at most once, and once the link turns
    perfect, every request is handed over exactly once and answered (the sender's timers stop)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = pair(max_attempts=50, max_rto=1.0)
        self.now = 0.0
        self.in_flight = []       # (data, towards "a" or "b")
        self.sent_txids = set()
        self.processed = []       # txids the receiving core saw

    def _collect(self):
        self.in_flight += [(d, "b") for d, _ in self.a.datagrams_to_send()]
        self.in_flight += [(d, "a") for d, _ in self.b.datagrams_to_send()]

    def _deliver(self, index):
        data, towards = self.in_flight.pop(index)
        if towards == "b":
            got = self.b.receive(data, A_PATH, self.now)
            if got is not None:
                self.processed.append(got[0].txid)
                self.b.respond(got[0], [])
        else:
            self.a.receive(data, B_PATH, self.now)
        self._collect()

    @rule(node=st.integers(1, 2 ** 32 - 1))
    def send(self, node):
        txid = self.a.send_request(2, p.REPORT, [p.MnInfo(node, p.LOCATION_OUTSIDE)], self.now)
        self.sent_txids.add(txid)
        self._collect()

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 1000))
    def deliver_any(self, pick):          # any order: reordering
        self._deliver(pick % len(self.in_flight))

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 1000))
    def duplicate(self, pick):
        self.in_flight.append(self.in_flight[pick % len(self.in_flight)])

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 1000))
    def drop(self, pick):
        self.in_flight.pop(pick % len(self.in_flight))

    @rule(dt=st.floats(0.01, 2.0))
    def advance(self, dt):
        self.now += dt
        self.a.handle_timer(self.now)
        self._collect()

    @invariant()
    def at_most_once(self):
        assert len(self.processed) == len(set(self.processed))
        assert set(self.processed) <= self.sent_txids

    def teardown(self):
        # The link turns perfect: everything still pending gets through exactly once.
        for _ in range(200):
            while self.in_flight:
                self._deliver(0)
            timer = self.a.get_timer()
            if timer is None:
                break
            self.now = max(self.now, timer)
            self.a.handle_timer(self.now)
            self._collect()
        assert self.a.get_timer() is None
        assert sorted(self.processed) == sorted(self.sent_txids)


ChannelOverLossyLink.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_channel_over_lossy_link = ChannelOverLossyLink.TestCase
