"""Keyed deadlines with the earliest one at hand (sans-IO, no clock).

A core that owns many timers (one per SA generation, one per cached flow) sets, moves and drops them by
key and asks for the earliest after every datagram. A scan of every timer per datagram grows with the
table; here :meth:`DeadlineQueue.earliest` costs O(1) amortised and a change O(log n).

The heap holds (deadline, sequence, key); the dict holds each key's live (deadline, sequence). A moved or
dropped key leaves its old heap entry behind, recognised by its sequence and dropped when it reaches the
top. Left-behind entries are bounded: the heap is rebuilt from the dict when they outnumber the live ones
(plus a small slack), so the heap never holds more than about twice the keys set.
"""
from __future__ import annotations

import heapq
import math
from typing import Hashable, Optional

_SLACK = 64   # left-behind entries tolerated before the first rebuild, so small queues never rebuild


class DeadlineQueue:
    def __init__(self) -> None:
        self._live: dict = {}     # key -> (deadline, sequence) of its newest set()
        self._heap: list = []     # (deadline, sequence, key); entries not in _live are left-behind
        self._sequence = 0        # ties in deadline come out in the order they were set
        self.rebuilds = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._live

    def deadline(self, key: Hashable) -> Optional[float]:
        entry = self._live.get(key)
        return None if entry is None else entry[0]

    def set(self, key: Hashable, when: float) -> None:
        """Arm ``key`` at ``when`` (replacing its earlier deadline, earlier or later)."""
        if math.isnan(when):   # unordered: it would break the heap order for every other key
            raise ValueError("deadline NaN is not a time")
        entry = self._live.get(key)
        if entry is not None and entry[0] == when:
            return
        self._sequence += 1
        self._live[key] = (when, self._sequence)
        heapq.heappush(self._heap, (when, self._sequence, key))
        self._bound()

    def discard(self, key: Hashable) -> None:
        if self._live.pop(key, None) is not None:
            self._bound()

    def earliest(self) -> Optional[float]:
        heap, live = self._heap, self._live
        while heap:
            when, sequence, key = heap[0]
            if live.get(key) == (when, sequence):
                return when
            heapq.heappop(heap)   # moved or dropped since it was pushed
        return None

    def pop_due(self, now: float) -> list:
        """Keys whose deadline is at or before ``now``, earliest first (ties: first set first); they are
        no longer armed."""
        due = []
        heap, live = self._heap, self._live
        while heap and heap[0][0] <= now:
            when, sequence, key = heapq.heappop(heap)
            if live.get(key) == (when, sequence):
                del live[key]
                due.append(key)
        return due

    def _bound(self) -> None:
        if len(self._heap) > 2 * len(self._live) + _SLACK:
            self._heap = [(when, sequence, key) for key, (when, sequence) in self._live.items()]
            heapq.heapify(self._heap)
            self.rebuilds += 1
