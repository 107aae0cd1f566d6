"""Probe format and sans-IO cores on a fake clock: RTT, one-way delay, loss, duplicates, reordering, gaps."""
import json
import struct

import pytest
from hypothesis import given, strategies as st

from nodeapps.probe import packet
from nodeapps.probe.__main__ import main as probe_main
from nodeapps.probe.core import ProbeEcho, ProbeSender, longest_gap
from nodeapps.probe.packet import ProbeParseError

T0 = 1_800_000_000.0


def test_probe_golden_bytes_and_marker_padding():
    p = packet.ProbePacket(packet.TYPE_PROBE, 0x01020304, 5, 1_000_000_007,
                           padding=packet.padding_for(64, b"MARK"))
    data = p.encode()
    assert len(data) == 64
    assert data[:16] == b"SVPR\x01\x01\x00\x00\x01\x02\x03\x04\x00\x00\x00\x05"
    assert data[16:24] == struct.pack("!Q", 1_000_000_007) and data[24:40] == bytes(16)
    assert data[40:] == b"MARK" * 6
    assert packet.parse(data) == p


def test_echo_keeps_sequence_stamp_and_padding():
    probe = packet.parse(packet.ProbePacket(packet.TYPE_PROBE, 9, 3, packet.to_ns(T0),
                                            padding=b"xyz").encode())
    echo = packet.parse(packet.make_echo(probe, T0 + 0.01, T0 + 0.011))
    assert (echo.type, echo.session, echo.seq, echo.t_sent_ns, echo.padding) == (packet.TYPE_ECHO, 9, 3,
                                                                                 probe.t_sent_ns, b"xyz")
    assert packet.from_ns(echo.t_recv_ns) == pytest.approx(T0 + 0.01, abs=1e-6)


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: d[:39], "shorter"),
    (lambda d: b"XVPR" + d[4:], "magic"),
    (lambda d: d[:4] + b"\x02" + d[5:], "version"),
    (lambda d: d[:5] + b"\x07" + d[6:], "type"),
    (lambda d: d[:8] + bytes(4) + d[12:], "session 0"),
    (lambda d: d[:24] + b"\x00" * 7 + b"\x01" + d[32:], "probe with echo stamps"),
    (lambda d: d[:5] + b"\x02" + d[6:], "echo without"),
    (lambda d: d + bytes(1400), "longer"),
])
def test_parse_errors(mutate, reason):
    good = packet.ProbePacket(packet.TYPE_PROBE, 1, 1, 5).encode()
    with pytest.raises(ProbeParseError, match=reason):
        packet.parse(mutate(good))


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_the_parse_error(data):
    try:
        packet.parse(data)
    except ProbeParseError:
        pass


def test_padding_size_limits():
    with pytest.raises(ValueError):
        packet.padding_for(39)
    with pytest.raises(ValueError):
        packet.padding_for(1401)
    assert packet.padding_for(40) == b"" and packet.padding_for(45, b"") == bytes(5)


class Link:
    """Sender and echo joined on a fake clock with a fixed one-way delay each way."""

    def __init__(self, forward=0.010, back=0.015, rate=50.0, count=None, timeout=1.0):
        self.now = T0
        self.forward, self.back = forward, back
        self.sender = ProbeSender(session=77, rate_hz=rate, start=T0, count=count, loss_timeout_s=timeout)
        self.echo = ProbeEcho()
        self.in_flight = []   # (arrival time, side, data)
        self.drop_forward = lambda seq: False
        self.records = []

    def run_until(self, end, step=0.001):
        while self.now < end:
            for d in self.sender.datagrams_to_send(self.now):
                seq = packet.parse(d).seq
                if not self.drop_forward(seq):
                    self.in_flight.append((self.now + self.forward, "echo", d))
            for item in sorted(i for i in self.in_flight if i[0] <= self.now):
                self.in_flight.remove(item)
                if item[1] == "echo":
                    self.echo.receive_datagram(item[2], ("mn2", 7777), item[0])
                    for reply, _addr in self.echo.datagrams_to_send(item[0]):
                        self.in_flight.append((item[0] + self.back, "sender", reply))
                else:
                    self.sender.receive_datagram(item[2], item[0])
            self.sender.handle_timer(self.now)
            self.records += self.sender.pop_records()
            self.now = round(self.now + step, 6)


def test_rtt_and_one_way_delays_at_50_hz():
    link = Link()
    link.run_until(T0 + 2.0)
    ok = [r for r in link.records if r.status == "ok"]
    assert len(ok) >= 98
    assert [r.seq for r in ok] == list(range(len(ok)))
    for r in ok:
        assert r.rtt_ms == pytest.approx(25.0, abs=1.01)
        assert r.owd_ms == pytest.approx(10.0, abs=1.01) and r.back_owd_ms == pytest.approx(15.0, abs=1.01)
        assert r.lost is False
    sent = [r.t_sent for r in ok]
    assert all(abs((b - a) - 0.02) < 0.0011 for a, b in zip(sent, sent[1:]))
    stats = link.sender.stats()
    assert stats["lost"] == 0 and stats["duplicates"] == 0 and stats["max_gap_ms"] == pytest.approx(25.0, abs=1.01)  # first send to first echo


def test_loss_after_timeout_and_gap_covers_the_outage():
    link = Link(timeout=0.5)
    link.drop_forward = lambda seq: 50 <= seq < 75   # 0.5 s outage starting at 1.0 s
    link.run_until(T0 + 3.0)
    lost = sorted(r.seq for r in link.records if r.status == "lost")
    assert lost == list(range(50, 75))
    assert all(r.rtt_ms is None and r.lost is True for r in link.records if r.status == "lost")
    stats = link.sender.stats()
    assert stats["lost"] == 25
    # Nothing delivered from the echo of probe 49 to the echo of probe 75: 26 intervals of 20 ms.
    assert stats["max_gap_ms"] == pytest.approx(520, abs=2)
    assert stats["max_gap_from"] == pytest.approx(T0 + 49 * 0.02 + 0.025, abs=0.002)


def test_duplicates_reordering_late_and_foreign_echoes():
    s = ProbeSender(session=5, rate_hz=10, start=T0, loss_timeout_s=1.0)
    e = ProbeEcho()
    probes = []
    for i in range(4):
        probes += s.datagrams_to_send(T0 + i * 0.1)
    echoes = []
    for d in probes:
        e.receive_datagram(d, "peer", T0 + 0.5)
        echoes += [r for r, _ in e.datagrams_to_send(T0 + 0.5)]
    s.receive_datagram(echoes[1], T0 + 0.6)
    s.receive_datagram(echoes[0], T0 + 0.61)     # reordered
    s.receive_datagram(echoes[0], T0 + 0.62)     # duplicate
    s.handle_timer(T0 + 1.25)                    # probe 2 (sent at 0.2) is lost now, probe 3 not yet
    assert s.counters["lost"] == 1
    s.handle_timer(T0 + 1.35)                    # and probe 3 (sent at 0.3)
    s.receive_datagram(echoes[2], T0 + 1.36)     # late
    other = ProbeSender(session=6, rate_hz=10, start=T0)
    e.receive_datagram(other.datagrams_to_send(T0)[0], "x", T0)
    s.receive_datagram(e.datagrams_to_send(T0)[0][0], T0 + 1.3)   # another session
    s.receive_datagram(b"garbage", T0 + 1.3)
    s.receive_datagram(probes[0], T0 + 1.3)      # a probe, not an echo
    records = {r.seq: r.status for r in s.pop_records()}
    assert records == {0: "ok", 1: "ok", 2: "lost", 3: "lost"}
    c = s.counters
    assert (c["received"], c["reordered"], c["duplicates"], c["late"], c["lost"]) == (2, 1, 1, 1, 2)
    assert c["foreign"] == 2 and c["malformed"] == 1


def test_echo_records_duplicates_and_reordering_per_session():
    s = ProbeSender(session=5, rate_hz=10, start=T0)
    d0, d1 = s.datagrams_to_send(T0)[0], s.datagrams_to_send(T0 + 0.1)[0]
    e = ProbeEcho()
    for d, t in ((d1, T0 + 0.2), (d0, T0 + 0.21), (d0, T0 + 0.22)):
        e.receive_datagram(d, ("a", 1), t)
    e.receive_datagram(b"\x00" * 50, ("a", 1), T0)
    echoed = e.datagrams_to_send(T0 + 0.3)
    e.receive_datagram(echoed[0][0], ("a", 1), T0 + 0.3)   # an echo sent to the echo side is not a probe
    records = e.pop_records()
    assert [(r.seq, r.duplicate, r.reordered) for r in records] == [(1, False, False), (0, False, True),
                                                                      (0, True, False)]
    assert records[0].as_dict()["owd_ms"] == pytest.approx(100.0, abs=0.001)
    assert e.stats() == {"received": 3, "echoed": 3, "duplicates": 1, "reordered": 1, "malformed": 2,
                         "sessions": 1}
    assert len(echoed) == 3 and all(addr == ("a", 1) for _, addr in echoed)


def test_schedule_restarts_after_a_stall_instead_of_bursting():
    s = ProbeSender(session=1, rate_hz=50, start=T0)
    assert len(s.datagrams_to_send(T0)) == 1
    assert s.datagrams_to_send(T0 + 0.005) == []
    assert s.get_timer() == pytest.approx(T0 + 0.02)
    assert len(s.datagrams_to_send(T0 + 1.0)) == 1          # stalled for ~1 s: one probe, not fifty
    assert s.counters["skipped_slots"] >= 48
    assert s.get_timer() == pytest.approx(T0 + 1.02)


def test_count_finish_and_pending():
    s = ProbeSender(session=1, rate_hz=100, start=T0, count=3, loss_timeout_s=5)
    for i in range(5):
        s.datagrams_to_send(T0 + i * 0.01)
    assert s.counters["sent"] == 3 and not s.sending and not s.done
    assert s.get_timer() == pytest.approx(T0 + 5)            # only the loss deadline is left
    s.finish(T0 + 0.1)
    records = s.pop_records()
    assert [r.status for r in records] == ["pending"] * 3 and all(r.lost is None for r in records)
    assert s.done and s.get_timer() is None
    d = records[0].as_dict()
    assert d["rtt_ms"] is None and d["lost"] is None and json.dumps(d)


def test_sender_argument_checks():
    with pytest.raises(ValueError):
        ProbeSender(session=0, start=T0)
    with pytest.raises(ValueError):
        ProbeSender(session=1, rate_hz=0, start=T0)
    with pytest.raises(ValueError):
        ProbeSender(session=1, start=T0, loss_timeout_s=0)


def test_longest_gap_in_windows():
    arrivals = [0.0, 0.02, 0.04, 0.5, 0.52, 2.0]
    assert longest_gap(arrivals) == pytest.approx((1.48, 0.52, 2.0))
    length, a, b = longest_gap(arrivals, start=0.0, end=1.0)
    assert (length, a, b) == pytest.approx((0.48, 0.52, 1.0))
    assert longest_gap([], start=3.0, end=4.0) == (1.0, 3.0, 4.0)
    assert longest_gap([]) == (0.0, 0.0, 0.0)
    assert longest_gap([5.0, 1.0, 3.5]) == (2.5, 1.0, 3.5)


@pytest.mark.parametrize("argv, message", [
    (["send", "--to", "::1", "--rate", "0"], "--rate"),
    (["send", "--to", "::1", "--size", "20"], "--size"),
    (["send", "--to", "::1", "--port", "70000"], "--port"),
    (["echo", "--duration", "-1"], "--duration"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        probe_main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_cli_one_line_errors_for_addresses(capsys):
    assert probe_main(["send", "--to", "not-an-address", "--duration", "0.1"]) == 2
    assert capsys.readouterr().err.strip() == "probe send: 'not-an-address' is not an IPv6 address"
    assert probe_main(["echo", "--bind", "2001:db8::dead", "--duration", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("probe echo: cannot bind [2001:db8::dead]:7777") and "\n" not in err
