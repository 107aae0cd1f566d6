"""Inside or outside: is the mobile node on the internal portion of the VPN?

The rule is deliberately one-sided: after any link change the node is *external* (everything VPN-bound goes
through its SA with the security gateway) until an announcement from the office arrives on the current link
and the runtime has verified it with an SA it shares with the office. Matching prefixes prove nothing: a
network that copies the office prefixes but cannot authenticate stays external. The verdict can be given a
lifetime, after which a missing fresh announcement makes the node external again.

Sans-IO: the runtime reports link changes and announcements (with the result of its authentication check)
and applies the SPD switch atomically when it pulls a ``LocationChanged`` event.
"""
from __future__ import annotations

import enum
from collections import Counter, deque
from dataclasses import dataclass
from typing import Hashable, Optional


class Location(enum.Enum):
    INTERNAL = "internal"
    EXTERNAL = "external"


@dataclass(frozen=True)
class LocationChanged:
    location: Location
    link: Optional[Hashable]
    reason: str


def decide(link: Optional[Hashable], authenticated_announcement_link: Optional[Hashable]) -> Location:
    """Internal only if an authenticated office announcement was received on the link we are on now."""
    if link is not None and authenticated_announcement_link == link:
        return Location.INTERNAL
    return Location.EXTERNAL


class PresenceDetector:
    def __init__(self, *, announcement_lifetime: Optional[float] = None):
        """``announcement_lifetime``: seconds an authenticated announcement keeps the node internal (None:
        until the link changes)."""
        self.announcement_lifetime = announcement_lifetime
        self.link: Optional[Hashable] = None
        self.location = Location.EXTERNAL
        self._authenticated_link: Optional[Hashable] = None
        self._authenticated_at: Optional[float] = None
        self._events: deque = deque()
        self.counters: Counter = Counter()

    # ---- inputs ----
    def link_up(self, link: Hashable, now: float) -> None:
        """Attached to ``link`` (any identifier that changes when the network changes)."""
        if link == self.link:
            return
        self.link = link
        self._forget()
        self._update("link changed")

    def link_down(self, now: float) -> None:
        self.link = None
        self._forget()
        self._update("link down")

    def office_announcement(self, link: Hashable, authenticated: bool, now: float) -> None:
        """An announcement claiming to come from the office arrived on ``link``; ``authenticated`` is the
        result of the runtime's SA check."""
        if link != self.link:
            self.counters["announcements_other_link"] += 1
            return
        if not authenticated:
            self.counters["announcements_unauthenticated"] += 1
            return
        self.counters["announcements_authenticated"] += 1
        self._authenticated_link, self._authenticated_at = link, now
        self._update("authenticated office announcement")

    def get_timer(self) -> Optional[float]:
        if self.announcement_lifetime is None or self._authenticated_at is None:
            return None
        return self._authenticated_at + self.announcement_lifetime

    def handle_timer(self, now: float) -> None:
        deadline = self.get_timer()
        if deadline is not None and now >= deadline:
            self._forget()
            self._update("office announcement expired")

    # ---- outputs ----
    def next_event(self) -> Optional[LocationChanged]:
        return self._events.popleft() if self._events else None

    def pop_events(self) -> list:
        out = list(self._events)
        self._events.clear()
        return out

    def _forget(self) -> None:
        self._authenticated_link = self._authenticated_at = None

    def _update(self, reason: str) -> None:
        location = decide(self.link, self._authenticated_link)
        if location is not self.location:
            self.location = location
            self._events.append(LocationChanged(location, self.link, reason))
