"""The link model, sans-IO: frames and arrival times in, release times and drops out.

Times are integer nanoseconds on the caller's clock (``now`` is always an argument), so results are exact
and the same for the same seed. Each direction applies, in order:

1. loss: independent (``loss`` %) or Gilbert–Elliott (two states; the loss chance of the current state
   applies, then the state moves, as in netem's ``gemodel``);
2. a drop-tail queue in front of the bottleneck, limited in packets or bytes; it holds every accepted
   frame that has not finished its transmission (the frame being sent included);
3. the bottleneck: a fixed rate (serialisation of the Ethernet frame, as tc counts it) or a Mahimahi trace
   (1500-byte delivery opportunities, counted against the IP packet, looping; bytes of an opportunity that
   no queued packet uses are lost, a packet larger than one opportunity takes several);
4. propagation delay plus jitter (``uniform``: delay ± jitter like netem; ``normal``: std = jitter),
   optionally correlated; clipped at zero. Unless ``reorder`` is set a frame never leaves before the one
   in front of it (its release time is raised to that frame's).

:class:`LinkCore` joins two directions and keeps the frames in a heap of release times.
"""
from __future__ import annotations

import bisect
import collections
import heapq
import math
import random
from dataclasses import dataclass
from typing import Optional, Sequence

from nodeapps.linkemu.params import LinkConfig, LinkParams
from nodeapps.linkemu.traces import OPPORTUNITY_BYTES, load_trace

NS_PER_MS = 1_000_000
ETHERNET_HEADER = 14


@dataclass
class DirectionCounters:
    offered: int = 0
    accepted: int = 0
    lost: int = 0           # loss stage
    queue_drops: int = 0    # drop-tail queue full
    bytes_accepted: int = 0
    max_frame: int = 0


class _GaussianStream:
    """Standard normal samples from ``random()`` only (stable across Python versions), optionally AR(1)
    correlated with coefficient ``rho`` while keeping a unit variance."""

    def __init__(self, rng: random.Random, rho: float) -> None:
        self._rng = rng
        self._rho = rho
        self._spare: Optional[float] = None
        self._last: Optional[float] = None

    def _normal(self) -> float:
        if self._spare is not None:
            value, self._spare = self._spare, None
            return value
        u1 = 1.0 - self._rng.random()  # (0, 1]
        u2 = self._rng.random()
        radius = math.sqrt(-2.0 * math.log(u1))
        self._spare = radius * math.sin(2 * math.pi * u2)
        return radius * math.cos(2 * math.pi * u2)

    def next(self) -> float:
        fresh = self._normal()
        if self._last is None or self._rho == 0:
            self._last = fresh
        else:
            self._last = self._rho * self._last + math.sqrt(1 - self._rho ** 2) * fresh
        return self._last


class DirectionModel:
    """One direction of a link. ``offer(now, frame_len)`` returns the release time, or None if dropped."""

    def __init__(self, params: LinkParams, seed: int, epoch_ns: int = 0,
                 trace: Optional[Sequence[int]] = None) -> None:
        self.params = params
        self.counters = DirectionCounters()
        self._loss_rng = random.Random(f"{seed}:loss")
        self._jitter_rng = random.Random(f"{seed}:jitter")
        self._gauss = _GaussianStream(self._jitter_rng, params.jitter_correlation / 100)
        self._ge_bad = False
        self._delay_ns = round(params.delay_ms * NS_PER_MS)
        self._jitter_ns = params.jitter_ms * NS_PER_MS
        self._queue_packets, self._queue_bytes = params.queue_limit
        self._in_queue: collections.deque[tuple[int, int]] = collections.deque()  # (tx done, size)
        self._queued_bytes = 0
        self._last_done = 0           # rate mode: end of the last transmission
        self._last_release = -1       # order keeping
        self._rate_bps = params.rate_mbit * 1e6 if params.rate_mbit is not None else None
        self._epoch = epoch_ns
        self._trace: Optional[tuple[int, ...]] = None
        if params.trace is not None:
            stamps = tuple(trace) if trace is not None else load_trace(params.trace)
            self._trace = tuple(t * NS_PER_MS for t in stamps)
            self._period = self._trace[-1]
            self._cursor: Optional[tuple[int, int]] = None  # (opportunity index, bytes left in it)

    # -- stages -------------------------------------------------------------------------------------------
    def _lose(self) -> bool:
        p = self.params
        if p.ge_p is not None:
            chance = p.ge_loss_bad if self._ge_bad else p.ge_loss_good
            lost = chance > 0 and self._loss_rng.random() * 100 < chance
            switch = p.ge_r if self._ge_bad else p.ge_p
            if self._loss_rng.random() * 100 < switch:
                self._ge_bad = not self._ge_bad
            return lost
        return p.loss > 0 and self._loss_rng.random() * 100 < p.loss

    def _queue_full(self, now: int, size: int) -> bool:
        while self._in_queue and self._in_queue[0][0] <= now:
            self._queued_bytes -= self._in_queue.popleft()[1]
        if self._queue_packets is not None and len(self._in_queue) >= self._queue_packets:
            return True
        return self._queue_bytes is not None and self._queued_bytes + size > self._queue_bytes

    def _opportunity(self, index: int) -> int:
        lap, position = divmod(index, len(self._trace))
        return self._epoch + lap * self._period + self._trace[position]

    def _first_opportunity(self, now: int) -> int:
        """Index of the first opportunity at or after ``now``."""
        relative = max(0, now - self._epoch)
        lap, offset = divmod(relative, self._period)
        position = bisect.bisect_left(self._trace, offset)
        if position == len(self._trace):
            lap, position = lap + 1, 0
        return lap * len(self._trace) + position

    def _trace_done(self, now: int, size: int) -> int:
        if self._cursor is None or self._opportunity(self._cursor[0]) < now:
            index, left = self._first_opportunity(now), OPPORTUNITY_BYTES  # idle: unused bytes are gone
        else:
            index, left = self._cursor
        need = max(1, size - ETHERNET_HEADER)  # Mahimahi counts IP packets
        while need > left:
            need -= left
            index, left = index + 1, OPPORTUNITY_BYTES
        done = self._opportunity(index)
        left -= need
        self._cursor = (index, left) if left else (index + 1, OPPORTUNITY_BYTES)
        return done

    def _rate_done(self, now: int, size: int) -> int:
        start = max(now, self._last_done)
        self._last_done = start + math.ceil(size * 8 * 1e9 / self._rate_bps)
        return self._last_done

    def _delay_sample(self) -> int:
        if not self._jitter_ns:
            return self._delay_ns
        p = self.params
        if p.distribution == "normal":
            offset = self._gauss.next() * self._jitter_ns
        elif p.jitter_correlation:
            z = self._gauss.next()  # correlated normal -> uniform through its CDF, so the marginal stays flat
            offset = math.erf(z / math.sqrt(2)) * self._jitter_ns
        else:
            offset = (2 * self._jitter_rng.random() - 1) * self._jitter_ns
        return max(0, round(self._delay_ns + offset))

    # -- API ----------------------------------------------------------------------------------------------
    def offer(self, now: int, size: int) -> Optional[int]:
        """A frame of ``size`` bytes (Ethernet header included) arrives at ``now``: its release time
        (ns), or None if it is dropped (counted as ``lost`` or ``queue_drops``)."""
        c = self.counters
        c.offered += 1
        c.max_frame = max(c.max_frame, size)
        if self._lose():
            c.lost += 1
            return None
        done = now
        if self.params.limited:
            if self._queue_full(now, size):
                c.queue_drops += 1
                return None
            done = self._trace_done(now, size) if self._trace is not None else self._rate_done(now, size)
            self._in_queue.append((done, size))
            self._queued_bytes += size
        release = done + self._delay_sample()
        if not self.params.reorder:
            release = max(release, self._last_release)
        self._last_release = max(release, self._last_release)
        c.accepted += 1
        c.bytes_accepted += size
        return release


FORWARD, REVERSE = 0, 1  # side a (node1) -> side b (node2), and back


class LinkCore:
    """Two directions and the frames in flight. Inputs: ``receive(side, now, frame)``; outputs:
    ``next_release()`` (the timer) and ``due(now)`` (frames to send, with their release times)."""

    def __init__(self, config: LinkConfig, epoch_ns: int = 0, seed: Optional[int] = None) -> None:
        seed = config.seed if seed is None else seed
        seed = 0 if seed is None else seed
        self.directions = (DirectionModel(config.forward, seed * 2 + 1, epoch_ns),
                           DirectionModel(config.reverse, seed * 2 + 2, epoch_ns))
        self._heap: list[tuple[int, int, int, bytes]] = []
        self._sequence = 0

    def receive(self, side: int, now: int, frame: bytes, size: Optional[int] = None) -> Optional[int]:
        """A frame read on ``side`` (0: node1's end, 1: node2's end); ``size`` defaults to its length.
        Returns its release time or None if dropped."""
        release = self.directions[side].offer(now, len(frame) if size is None else size)
        if release is not None:
            self._sequence += 1
            heapq.heappush(self._heap, (release, self._sequence, 1 - side, frame))
        return release

    def next_release(self) -> Optional[int]:
        return self._heap[0][0] if self._heap else None

    def due(self, now: int) -> list[tuple[int, int, bytes]]:
        """(release time, output side, frame) of every frame due at or before ``now``, in release order."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            release, _, side, frame = heapq.heappop(heap)
            out.append((release, side, frame))
        return out

    def in_flight(self) -> int:
        return len(self._heap)
