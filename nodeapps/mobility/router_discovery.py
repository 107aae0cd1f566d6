"""Router advertisements before the mobile node uses them: validation (RFC 4861 §6.1.2) and movement
damping (RFC 6275 §11.5.1). Sans-IO: the shell passes the message, its IP source and hop limit, and ``now``.

Damping. A link decision (attach to the link an RA names) is taken

* at once for the first RA after a carrier change (or at start, or after the shell lost its link): the
  lab's moves flap the carrier, so they stay as fast as the RA that answers the node's solicitation;
* otherwise only when the current router has gone quiet (RFC 6275 §11.5.1: movement needs the current
  router to be unreachable, or a link-layer event), i.e. missed ``missed_intervals`` of its advertisement
  intervals (RFC 6275 §7.3 option, else ``default_interval``), and at most once per ``hold_down``.

While the current router keeps advertising, RAs from other routers do not move the node: a burst of rogue
RAs on a visited link costs one counter each (``damped``), not a care-of address and binding updates each.
"""
from __future__ import annotations

import enum
import struct
from typing import Hashable, Optional

ICMPV6_RA = 134
RA_MIN_LEN = 16


def ra_invalid_reason(message: bytes, source: str, hop_limit: Optional[int]) -> Optional[str]:
    """Why an ICMPv6 message with this IP source and hop limit is not a valid RA, or None if it is.
    (The ICMPv6 checksum is checked by the kernel for raw ICMPv6 sockets.)"""
    # RFC 4861 §6.1.2: source link-local, so the RA comes from a router on this link ...
    try:
        first = int(source.split("%")[0].split(":")[0] or "0", 16)
    except ValueError:
        return f"source {source!r} is not an IPv6 address"
    if first & 0xFFC0 != 0xFE80:
        return f"source {source} is not link-local"
    # ... and hop limit 255: no router forwarded it (a unicast RA from afar arrives with less).
    if hop_limit != 255:
        return f"hop limit {hop_limit}"
    if len(message) < RA_MIN_LEN:
        return f"{len(message)} octets, fewer than {RA_MIN_LEN}"
    if message[0] != ICMPV6_RA:
        return f"ICMPv6 type {message[0]}"
    if message[1] != 0:
        return f"ICMPv6 code {message[1]}"
    pos = RA_MIN_LEN
    while pos < len(message):
        if pos + 2 > len(message):
            return "truncated option"
        units = message[pos + 1]
        if units == 0:   # RFC 4861 §6.1.2 / §4.6: every option's length is greater than zero
            return "option of length 0"
        pos += 8 * units
        if pos > len(message):
            return "option runs past the message"
    return None


class RaDecision(enum.Enum):
    CURRENT = "current"   # from the link we are on: refreshes it
    MOVE = "move"         # a link decision: attach to the RA's link
    DAMPED = "damped"     # valid, but ignored by the hold-down / current-router rule


class MovementDamper:
    """One link decision per carrier change, or per new router once the current one is unreachable."""

    def __init__(self, *, hold_down: float = 1.0, default_interval: float = 1.0, missed_intervals: int = 3):
        self.hold_down = hold_down
        self.default_interval = default_interval
        self.missed_intervals = missed_intervals
        self.link: Optional[Hashable] = None
        self.router: Optional[Hashable] = None
        self.heard: float = float("-inf")        # last RA from the current router
        self.interval: float = default_interval  # the current router's advertisement interval
        self.armed = True                        # start, carrier change, lost link: next RA decides
        self.last_decision = float("-inf")
        self.decisions = 0
        self.damped = 0

    def carrier_changed(self, now: float) -> None:
        """Carrier down or up (a link-layer event, RFC 6275 §11.5.1): the next RA decides at once."""
        self.armed = True

    def link_lost(self, now: float) -> None:
        """The shell forgot its link (e.g. its care-of address was removed): detect again."""
        self.link = self.router = None
        self.armed = True

    def adopt(self, link: Hashable, router: Hashable, now: float, interval_ms: Optional[int] = None) -> None:
        """The shell attached to ``link`` by other means (an address event, then its router's RA)."""
        self._attach(link, router, now, interval_ms)

    def current_router_unreachable(self, now: float) -> bool:
        return now - self.heard > self.missed_intervals * self.interval

    def router_advertisement(self, link: Hashable, router: Hashable, now: float,
                             interval_ms: Optional[int] = None) -> RaDecision:
        """A valid RA naming ``link`` (e.g. (router, prefix)) from ``router``."""
        if link == self.link:
            self._heard(router, now, interval_ms)
            return RaDecision.CURRENT
        if router == self.router and self.link is not None:
            # The current router, a new prefix (renumbering): it is alive; the link follows after hold-down.
            self._heard(router, now, interval_ms)
            if now - self.last_decision < self.hold_down:
                self.damped += 1
                return RaDecision.DAMPED
        elif not self.armed and (not self.current_router_unreachable(now)
                                 or now - self.last_decision < self.hold_down):
            self.damped += 1
            return RaDecision.DAMPED
        self._attach(link, router, now, interval_ms)
        self.armed = False
        self.last_decision = now
        self.decisions += 1
        return RaDecision.MOVE

    def _attach(self, link, router, now: float, interval_ms) -> None:
        self.link, self.router = link, router
        self._heard(router, now, interval_ms)

    def _heard(self, router, now: float, interval_ms) -> None:
        self.heard = now
        if interval_ms:
            self.interval = interval_ms / 1000.0


def hop_limit_from_ancillary(ancdata) -> Optional[int]:
    """The IPV6_HOPLIMIT control message (RFC 3542 §6.3) of a recvmsg, or None if absent."""
    for level, kind, value in ancdata:
        if level == 41 and kind == 52 and len(value) >= 4:   # IPPROTO_IPV6, IPV6_HOPLIMIT
            return struct.unpack("i", value[:4])[0]
    return None
