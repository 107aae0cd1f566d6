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
