"""Sans-IO probe cores: no sockets, no clock; every input carries ``now`` (seconds since the epoch).

Sender (aioquic style)::

    sender = ProbeSender(session=7, rate_hz=50, start=now)
    loop:  for d in sender.datagrams_to_send(now): sock.send(d)
           sender.receive_datagram(data, now)          # an echo arrived
           sender.handle_timer(now)                    # at sender.get_timer(): loss deadlines
           for r in sender.pop_records(): write(r.as_dict())
    end:   sender.stop_sending(); ...drain until sender.done or a deadline...; sender.finish(now)

Probe ``k`` is due at ``start + k / rate_hz``. If the shell was stalled for more than one interval the
schedule restarts from ``now`` (no burst of catch-up probes) and ``stats()["skipped_slots"]`` counts it.

A probe is **lost** when no echo came back within ``loss_timeout_s`` of sending it; an echo after that
is counted as ``late`` and does not change the record. Probes still in flight when the sender finishes
get status ``pending`` (neither delivered nor known lost). An echo for an already answered sequence number
is a ``duplicate``; an echo whose sequence number is below the highest one answered so far is
``reordered``. Echoes of another session (an earlier run) and malformed datagrams are counted and dropped.

Handover gap: the longest interval in which nothing was delivered. The sender tracks it online over the
arrival times of echoes (from the first send on); :func:`longest_gap` computes it for any window of
arrival times, which is how an experiment measures the gap around one move.

Record fields (``ProbeRecord.as_dict()``, one JSON line per probe): ``seq``, ``status`` (ok | lost |
pending), ``t_sent``, ``t_recv_remote`` (echo's arrival stamp), ``t_echo_remote`` (echo's send stamp),
``t_back`` (echo's arrival here), ``rtt_ms`` (``t_back - t_sent`` minus the echo's hold time),
``owd_ms`` (forward one-way delay), ``back_owd_ms`` (return one-way delay), ``lost`` (true, false, or
null when pending). Times are seconds since the epoch; absent values are null.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from nodeapps.probe.packet import (
    DEFAULT_MARKER, TYPE_ECHO, TYPE_PROBE, ProbePacket, ProbeParseError, from_ns, make_echo, padding_for,
    parse, to_ns,
)

STATUS_OK = "ok"
STATUS_LOST = "lost"
STATUS_PENDING = "pending"


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds * 1000.0, 4)


@dataclass(frozen=True)
class ProbeRecord:
    seq: int
    status: str
    t_sent: float
    t_recv_remote: Optional[float] = None
    t_echo_remote: Optional[float] = None
    t_back: Optional[float] = None

    @property
    def rtt_ms(self) -> Optional[float]:
        if self.t_back is None:
            return None
        hold = (self.t_echo_remote - self.t_recv_remote) if self.t_recv_remote is not None else 0.0
        return _ms(self.t_back - self.t_sent - max(0.0, hold))

    @property
    def owd_ms(self) -> Optional[float]:
        return None if self.t_recv_remote is None else _ms(self.t_recv_remote - self.t_sent)

    @property
    def back_owd_ms(self) -> Optional[float]:
        if self.t_back is None or self.t_echo_remote is None:
            return None
        return _ms(self.t_back - self.t_echo_remote)

    @property
    def lost(self) -> Optional[bool]:
        return None if self.status == STATUS_PENDING else self.status == STATUS_LOST

    def as_dict(self) -> dict:
        return {"seq": self.seq, "status": self.status, "t_sent": round(self.t_sent, 6),
                "t_recv_remote": None if self.t_recv_remote is None else round(self.t_recv_remote, 6),
                "t_echo_remote": None if self.t_echo_remote is None else round(self.t_echo_remote, 6),
                "t_back": None if self.t_back is None else round(self.t_back, 6),
                "rtt_ms": self.rtt_ms, "owd_ms": self.owd_ms, "back_owd_ms": self.back_owd_ms,
                "lost": self.lost}


def longest_gap(arrivals: Iterable[float], start: Optional[float] = None,
                end: Optional[float] = None) -> tuple[float, float, float]:
    """Longest interval without a delivery in [start, end]: (length_s, from_t, to_t).

    ``arrivals`` are delivery times in any order; those outside the window are ignored. The window's own
    edges count as boundaries when given, so a path that never recovers yields the time until ``end``.
    """
    times = sorted(t for t in arrivals if (start is None or t >= start) and (end is None or t <= end))
    points = ([start] if start is not None else []) + times + ([end] if end is not None else [])
    best = (0.0, points[0] if points else 0.0, points[0] if points else 0.0)
    for a, b in zip(points, points[1:]):
        if b - a > best[0]:
            best = (b - a, a, b)
    return best


class ProbeSender:
    def __init__(self, *, session: int, rate_hz: float = 50.0, start: float, count: Optional[int] = None,
                 size: int = 64, marker: bytes = DEFAULT_MARKER, loss_timeout_s: float = 2.0):
        if not 1 <= session <= 0xFFFFFFFF:
            raise ValueError("session must be a non-zero 32-bit number")
        if not 0 < rate_hz <= 10000:
            raise ValueError(f"rate must be above 0 and at most 10000 Hz, not {rate_hz}")
        if not loss_timeout_s > 0:
            raise ValueError("loss timeout must be positive")
        self.session = session
        self.interval = 1.0 / rate_hz
        self.loss_timeout_s = loss_timeout_s
        self._padding = padding_for(size, marker)
        self._count = count
        self._schedule_start = start
        self._schedule_index = 0
        self._next_seq = 0
        self._sending = count is None or count > 0
        self._outstanding: dict[int, float] = {}     # seq -> t_sent, in send order
        self._answered: set[int] = set()
        self._lost: set[int] = set()
        self._records: list[ProbeRecord] = []
        self._highest_answered = -1
        self._first_send: Optional[float] = None
        self._last_send: Optional[float] = None
        self._last_delivery: Optional[float] = None
        self._gap = (0.0, None, None)
        self.counters = {"sent": 0, "received": 0, "lost": 0, "pending": 0, "late": 0, "duplicates": 0,
                         "reordered": 0, "malformed": 0, "foreign": 0, "skipped_slots": 0}

    # -- inputs ----------------------------------------------------------------------------------------
    def datagrams_to_send(self, now: float) -> list[bytes]:
        if not self._sending:
            return []
        due = self._schedule_start + self._schedule_index * self.interval
        if now < due:
            return []
        if now - due > self.interval:   # stalled: restart the schedule rather than burst
            self.counters["skipped_slots"] += int((now - due) / self.interval)
            self._schedule_start, self._schedule_index = now, 0
        seq = self._next_seq
        self._next_seq += 1
        self._schedule_index += 1
        self._outstanding[seq] = now
        self.counters["sent"] += 1
        if self._first_send is None:
            self._first_send = now
        self._last_send = now
        if self._count is not None and self._next_seq >= self._count:
            self._sending = False
        return [ProbePacket(TYPE_PROBE, self.session, seq, to_ns(now), padding=self._padding).encode()]

    def receive_datagram(self, data: bytes, now: float) -> None:
        try:
            packet = parse(data)
        except ProbeParseError:
            self.counters["malformed"] += 1
            return
        if packet.type != TYPE_ECHO or packet.session != self.session or packet.seq >= self._next_seq:
            self.counters["foreign"] += 1
            return
        seq = packet.seq
        if seq in self._answered:
            self.counters["duplicates"] += 1
            return
        if seq in self._lost:
            self.counters["late"] += 1
            return
        t_sent = self._outstanding.pop(seq, None)
        if t_sent is None:   # finished as pending
            self.counters["late"] += 1
            return
        self._answered.add(seq)
        self.counters["received"] += 1
        if seq < self._highest_answered:
            self.counters["reordered"] += 1
        self._highest_answered = max(self._highest_answered, seq)
        self._note_delivery(now)
        self._records.append(ProbeRecord(seq, STATUS_OK, t_sent, from_ns(packet.t_recv_ns),
                                         from_ns(packet.t_echo_ns), now))

    def handle_timer(self, now: float) -> None:
        for seq, t_sent in list(self._outstanding.items()):
            if now - t_sent < self.loss_timeout_s:
                break   # dict keeps send order, so the rest are younger
            del self._outstanding[seq]
            self._lost.add(seq)
            self.counters["lost"] += 1
            self._records.append(ProbeRecord(seq, STATUS_LOST, t_sent))

    def get_timer(self) -> Optional[float]:
        timers = []
        if self._sending:
            timers.append(self._schedule_start + self._schedule_index * self.interval)
        if self._outstanding:
            timers.append(next(iter(self._outstanding.values())) + self.loss_timeout_s)
        return min(timers) if timers else None

    def stop_sending(self) -> None:
        self._sending = False

    def finish(self, now: float) -> None:
        """Stop; probes without an echo so far become ``pending`` records (or ``lost`` if overdue)."""
        self._sending = False
        self.handle_timer(now)
        for seq, t_sent in self._outstanding.items():
            self.counters["pending"] += 1
            self._records.append(ProbeRecord(seq, STATUS_PENDING, t_sent))
        self._outstanding.clear()
        if self._last_send is not None:
            self._note_delivery(self._last_send, final=True)

    # -- outputs ---------------------------------------------------------------------------------------
    @property
    def sending(self) -> bool:
        return self._sending

    @property
    def done(self) -> bool:
        return not self._sending and not self._outstanding

    def pop_records(self) -> list[ProbeRecord]:
        records, self._records = self._records, []
        return records

    def stats(self) -> dict:
        gap, gap_from, gap_to = self._gap
        return {**self.counters, "session": self.session, "max_gap_ms": _ms(gap),
                "max_gap_from": gap_from, "max_gap_to": gap_to}

    def _note_delivery(self, t: float, final: bool = False) -> None:
        previous = self._last_delivery if self._last_delivery is not None else self._first_send
        if previous is not None and t - previous > self._gap[0]:
            self._gap = (t - previous, previous, t)
        if not final:
            self._last_delivery = t


@dataclass(frozen=True)
class ArrivalRecord:
    """One probe seen by the echo side (forward direction)."""
    session: int
    peer: object
    seq: int
    t_sent: float
    t_recv: float
    duplicate: bool
    reordered: bool

    def as_dict(self) -> dict:
        return {"session": self.session, "peer": str(self.peer) if self.peer is not None else None,
                "seq": self.seq, "t_sent": round(self.t_sent, 6), "t_recv": round(self.t_recv, 6),
                "owd_ms": _ms(self.t_recv - self.t_sent), "duplicate": self.duplicate, "reordered": self.reordered}


class ProbeEcho:
    """Stamps and returns every probe; records forward arrivals per sender session.

    ``receive_datagram(data, addr, now)`` queues the echo; ``datagrams_to_send(now)`` returns
    ``[(bytes, addr)]`` with the echoed stamp set to ``now``.
    """

    def __init__(self):
        self._queue: list[tuple[ProbePacket, object, float]] = []
        self._records: list[ArrivalRecord] = []
        self._seen: dict[int, set[int]] = {}
        self._highest: dict[int, int] = {}
        self.counters = {"received": 0, "echoed": 0, "duplicates": 0, "reordered": 0, "malformed": 0}

    def receive_datagram(self, data: bytes, addr: object, now: float) -> None:
        try:
            packet = parse(data)
        except ProbeParseError:
            self.counters["malformed"] += 1
            return
        if packet.type != TYPE_PROBE:
            self.counters["malformed"] += 1
            return
        seen = self._seen.setdefault(packet.session, set())
        duplicate = packet.seq in seen
        reordered = not duplicate and packet.seq < self._highest.get(packet.session, -1)
        seen.add(packet.seq)
        self._highest[packet.session] = max(self._highest.get(packet.session, -1), packet.seq)
        self.counters["received"] += 1
        self.counters["duplicates"] += duplicate
        self.counters["reordered"] += reordered
        self._records.append(ArrivalRecord(packet.session, addr, packet.seq, from_ns(packet.t_sent_ns), now,
                                           duplicate, reordered))
        self._queue.append((packet, addr, now))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, object]]:
        out = [(make_echo(packet, t_recv, now), addr) for packet, addr, t_recv in self._queue]
        self._queue.clear()
        self.counters["echoed"] += len(out)
        return out

    def pop_records(self) -> list[ArrivalRecord]:
        records, self._records = self._records, []
        return records

    def stats(self) -> dict:
        return {**self.counters, "sessions": len(self._seen)}
