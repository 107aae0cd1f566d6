"""Binding cache (HA and CN side, RFC 6275 §9.1/§9.5/§10.1), binding update list (MN side, §11.1),
retransmission with exponential backoff (§11.8), and a token bucket for rate limits.

Pure data structures: every method that depends on time takes ``now``.
"""
from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator, Optional

from nodeapps.mobility.constants import MAX_BINDACK_TIMEOUT, MAX_UPDATE_RATE, SEQUENCE_MODULO

_HALF = SEQUENCE_MODULO // 2


def sequence_newer(received: int, last: int) -> bool:
    """True if ``received`` is after ``last`` modulo 2^16. RFC 6275 §9.5.1: a number is "less than or equal"
    when it lies in ``last`` and the 32768 values before it, so newer means 1..32767 ahead."""
    return 0 < (received - last) % SEQUENCE_MODULO < _HALF


def sequence_next(sequence: int) -> int:
    return (sequence + 1) % SEQUENCE_MODULO


# ---------------------------------------------------------------------------------------------------------
# Binding cache.

@dataclass
class BindingCacheEntry:
    """RFC 6275 §9.1 conceptual fields."""
    home_address: bytes
    care_of_address: bytes
    sequence: int
    lifetime: float          # granted, seconds
    registered_at: float
    home_registration: bool

    @property
    def expires_at(self) -> float:
        return self.registered_at + self.lifetime

    def remaining(self, now: float) -> float:
        return max(0.0, self.expires_at - now)


class BindingCache:
    """Home address -> binding. Expired entries are invisible to ``get`` and removed by ``expire``."""

    def __init__(self, capacity: Optional[int] = None):
        self.capacity = capacity
        self._entries: dict[bytes, BindingCacheEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[BindingCacheEntry]:
        return iter(list(self._entries.values()))

    def get(self, home_address: bytes, now: float) -> Optional[BindingCacheEntry]:
        entry = self._entries.get(home_address)
        if entry is None or now >= entry.expires_at:
            return None
        return entry

    def sequence_acceptable(self, home_address: bytes, sequence: int, now: float) -> tuple[bool, Optional[int]]:
        """(acceptable, last accepted sequence). No live entry: any number is acceptable (§9.5.1)."""
        entry = self.get(home_address, now)
        if entry is None:
            return True, None
        return sequence_newer(sequence, entry.sequence), entry.sequence

    def full(self, home_address: bytes) -> bool:
        return (self.capacity is not None and home_address not in self._entries
                and len(self._entries) >= self.capacity)

    def update(self, home_address: bytes, care_of_address: bytes, sequence: int, lifetime: float, now: float,
               *, home_registration: bool) -> tuple[BindingCacheEntry, Optional[BindingCacheEntry]]:
        """Create or replace the entry; returns (new entry, previous live entry or None)."""
        previous = self.get(home_address, now)
        entry = BindingCacheEntry(home_address, care_of_address, sequence, lifetime, now, home_registration)
        self._entries[home_address] = entry
        return entry, previous

    def remove(self, home_address: bytes) -> Optional[BindingCacheEntry]:
        return self._entries.pop(home_address, None)

    def evict_oldest(self) -> Optional[BindingCacheEntry]:
        """Remove and return the entry registered (or last refreshed) longest ago, to make room."""
        if not self._entries:
            return None
        oldest = min(self._entries.values(), key=lambda e: e.registered_at)
        return self._entries.pop(oldest.home_address)

    def expire(self, now: float) -> list[BindingCacheEntry]:
        """Remove and return every entry whose lifetime has run out (RFC 6275 §9.6)."""
        gone = [e for e in self._entries.values() if now >= e.expires_at]
        for entry in gone:
            del self._entries[entry.home_address]
        return gone

    def next_expiry(self) -> Optional[float]:
        return min((e.expires_at for e in self._entries.values()), default=None)


# ---------------------------------------------------------------------------------------------------------
# Retransmission and rate limits.

class Retransmitter:
    """Exponential backoff (RFC 6275 §11.8): the timeout doubles on every retransmission until it reaches
    ``max_timeout``; when a wait of ``max_timeout`` also runs out the exchange is given up (or, with
    ``keep_retrying``, repeated every ``max_timeout``)."""

    def __init__(self, max_timeout: float = MAX_BINDACK_TIMEOUT, keep_retrying: bool = False):
        self.max_timeout = max_timeout
        self.keep_retrying = keep_retrying
        self.timeout: Optional[float] = None
        self.deadline: Optional[float] = None
        self.transmissions = 0

    @property
    def active(self) -> bool:
        return self.deadline is not None

    def start(self, now: float, initial_timeout: float) -> None:
        self.timeout = min(initial_timeout, self.max_timeout)
        self.deadline = now + self.timeout
        self.transmissions = 1

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def backoff(self, now: float) -> bool:
        """Called when the deadline passed: True = retransmit now (deadline re-armed), False = give up."""
        assert self.timeout is not None
        if self.timeout >= self.max_timeout and not self.keep_retrying:
            self.stop()
            return False
        self.timeout = min(self.timeout * 2, self.max_timeout)
        self.deadline = now + self.timeout
        self.transmissions += 1
        return True

    def stop(self) -> None:
        self.deadline = None


class UpdateRateLimit:
    """At most ``rate`` Binding Updates to one node within any second. RFC 6275 §11.8 (MAX_UPDATE_RATE)."""

    def __init__(self, rate: int = MAX_UPDATE_RATE, window: float = 1.0):
        self.rate = rate
        self.window = window
        self._sent: deque = deque()

    def earliest(self, now: float) -> float:
        while self._sent and now - self._sent[0] >= self.window:
            self._sent.popleft()
        if len(self._sent) < self.rate:
            return now
        return self._sent[0] + self.window

    def record(self, now: float) -> None:
        self._sent.append(now)


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; ``allow`` takes one token or refuses."""

    def __init__(self, rate: float, burst: float):
        if rate <= 0 or burst < 1:
            raise ValueError("token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated: Optional[float] = None

    def allow(self, now: float) -> bool:
        if self._updated is not None and now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        if self._updated is None or now > self._updated:
            self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


# ---------------------------------------------------------------------------------------------------------
# Binding update list.

class PeerKind(enum.Enum):
    HOME_AGENT = "home-agent"        # home registration (H flag), ESP-protected (RFC 3776)
    SECURED = "secured"              # plain binding protected by an ESP SA (e.g. the security gateway)
    CORRESPONDENT = "correspondent"  # route optimisation, authorised by return routability


@dataclass
class BindingUpdateListEntry:
    """RFC 6275 §11.1 conceptual fields for one peer."""
    peer: bytes
    kind: PeerKind
    home_address: bytes
    sequence: int                                 # last sequence number sent
    retransmit: Retransmitter = field(default_factory=Retransmitter)
    rate_limit: UpdateRateLimit = field(default_factory=UpdateRateLimit)
    care_of_address: Optional[bytes] = None       # CoA of the latest BU
    requested_lifetime: float = 0.0               # seconds, of the latest BU
    sent_at: Optional[float] = None               # first transmission of the latest BU
    outstanding: bool = False                     # a BU waits for its BA
    registered_care_of: Optional[bytes] = None    # CoA the peer has acknowledged (None once a BU for
                                                  # another CoA is out: the peer may have taken either)
    peer_has_binding: bool = False                # a BU of ours with a lifetime may be live at the peer
    acked_sent_at: Optional[float] = None         # sent_at of the BU the last positive BA answered
    granted_lifetime: float = 0.0
    expires_at: Optional[float] = None            # when the peer's binding ends (counted from sent_at, §11.7.3)
    refresh_at: Optional[float] = None
    send_pending_at: Optional[float] = None       # a BU waits for the rate limit or for tokens
    pending_initial_timeout: float = 0.0          # initial retransmission timeout of the pending BU
    failed_status: Optional[int] = None           # BA status that stopped BUs to this peer
    kbm: Optional[bytes] = None                   # correspondent only: key of the latest BU (checks its BA)
    nonce_indices: Optional[tuple] = (0, 0)       # correspondent only: (home, care-of) nonce indices used; None: static Kbm

    def new_sequence(self) -> int:
        self.sequence = sequence_next(self.sequence)
        return self.sequence

    def deadlines(self) -> list[float]:
        out = [t for t in (self.retransmit.deadline, self.refresh_at, self.expires_at, self.send_pending_at)
               if t is not None]
        return out


class BindingUpdateList:
    def __init__(self):
        self._entries: dict[bytes, BindingUpdateListEntry] = {}

    def __iter__(self) -> Iterator[BindingUpdateListEntry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, peer: bytes) -> Optional[BindingUpdateListEntry]:
        return self._entries.get(peer)

    def add(self, entry: BindingUpdateListEntry) -> BindingUpdateListEntry:
        self._entries[entry.peer] = entry
        return entry

    def remove(self, peer: bytes) -> Optional[BindingUpdateListEntry]:
        return self._entries.pop(peer, None)

    def next_deadline(self) -> Optional[float]:
        return min((t for e in self._entries.values() for t in e.deadlines()), default=None)
