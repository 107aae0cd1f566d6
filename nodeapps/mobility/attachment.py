"""Which link the mobile node is on, and where that puts it, decided without I/O.

Contract (like the other cores): the shell reports what it observed and acts on the answer.

    tracker.router_advertisement(router, prefixes, router_lifetime, interval_ms, now) -> RaAction
    tracker.carrier_event(up, now) -> CarrierAction   # netlink carrier events
    tracker.address_hint(verdict, prefix, ...) -> HintAction, then forget_link / address_link
    tracker.announcement(authentic, now) -> bool      # an office announcement; True: the location changed
    tracker.placement() -> LinkState                  # HOME, UNPROVEN or AWAY: what the shell configures

The tracker holds the link (an identifier that changes when the network changes: (router, prefix) from an
RA, ("address", prefix) from an address nobody announced, ("initial", prefix) where the lab put the node),
its prefix and router, the carrier, whether a router solicitation is owed, and an early office proof. It
drives ``MovementDamper`` (RFC 6275 §11.5.1) and ``PresenceDetector`` (inside or outside); the shell pops
the detector's events to log them.
"""
from __future__ import annotations

import enum
import ipaddress
from typing import Callable, Hashable, Optional, Sequence

from nodeapps.mobility.location import Location, PresenceDetector
from nodeapps.mobility.paths import LinkState
from nodeapps.mobility.router_discovery import MovementDamper, RaDecision

# An authentic announcement heard before the RA that names the link counts for that link this long: our
# solicitation prompted both, and the announcement can win the race.
EARLY_PROOF_S = 0.5


class RaAction(enum.Enum):
    UNUSABLE = "unusable"     # no prefix, or router lifetime 0 (RFC 4861 §6.3.4: not a default router)
    CURRENT = "current"       # the link we are on
    DAMPED = "damped"         # another link, refused by the damper: count it
    ADOPT_ROUTER = "adopt"    # the router of the prefix we took from an address: set the default route
    NEW_LINK = "new-link"     # a new link: place the node again


class CarrierAction(enum.Enum):
    NONE = "none"   # no change
    UP = "up"       # back: solicit an RA now
    DOWN = "down"   # lost: the link is gone; drop what only a proven office allows


class HintAction(enum.Enum):
    IGNORE = "ignore"   # not ours, or the carrier event deals with it
    LOST = "lost"       # our care-of address went away: forget the link, solicit
    ASK = "ask"         # at home, or an office prefix: only the routers can say what this is; solicit
    MOVE = "move"       # a prefix no router announced: the care-of address moves into it


def chosen_prefix(prefixes: Sequence[tuple[str, bool]]) -> Optional[str]:
    """The prefix an RA's (prefix, autonomous) pairs name the link by: the first autonomous one, else the
    first (a prefix for addresses the node forms itself is what it would move into)."""
    usable = [p for p, autonomous in prefixes if autonomous] or [p for p, _ in prefixes]
    return usable[0] if usable else None


class LinkTracker:
    def __init__(self, home_prefix: ipaddress.IPv6Network, presence: PresenceDetector,
                 damper: Optional[MovementDamper] = None):
        self.home_prefix = home_prefix
        self.presence = presence
        self.damper = damper or MovementDamper()
        self.link: Optional[Hashable] = None
        self.prefix: Optional[str] = None
        self.router: Optional[str] = None
        self.carrier = True
        self.rs_pending = False                   # carrier back, RS not sent yet (no source address yet)
        self.early_proof: Optional[float] = None  # when an authentic announcement came with no link yet

    # ---- inputs ----
    def start_away(self, prefix: str, router: Optional[str], now: float) -> None:
        """The node started with an address in the visited ``prefix``."""
        self.link = ("initial", prefix)
        self.presence.link_up(self.link, now)
        self.prefix, self.router = prefix, router

    def router_advertisement(self, router: str, prefixes: Sequence[tuple[str, bool]], router_lifetime: int,
                             interval_ms: Optional[int], now: float) -> RaAction:
        """A valid RA (the shell checked it, RFC 4861 §6.1.2) from ``router`` with (prefix, autonomous)
        pairs."""
        prefix = chosen_prefix(prefixes)
        if prefix is None or router_lifetime == 0:
            return RaAction.UNUSABLE
        link = (router, prefix)
        # RFC 6275 §11.5.1: while the current router keeps advertising, others do not move us.
        decision = self.damper.router_advertisement(link, router, now, interval_ms)
        if decision is RaDecision.DAMPED and link != self.link:
            return RaAction.DAMPED
        if link == self.link:
            return RaAction.CURRENT
        if self.link == ("address", prefix):
            # The prefix we already use from an address hint: the same link, now with its router.
            self.link, self.router = link, router
            self.presence.link_up(link, now)
            return RaAction.ADOPT_ROUTER
        self.link, self.prefix, self.router = link, prefix, router
        self.presence.link_up(link, now)
        if self.early_proof is not None and now - self.early_proof < EARLY_PROOF_S:
            self.presence.office_announcement(link, True, now)
        self.early_proof = None
        return RaAction.NEW_LINK

    def carrier_event(self, up: bool, now: float) -> CarrierAction:
        """Carrier lost: whatever network comes next is unproven until its RA (and announcement) say so.
        Carrier back: an RA is owed (RFC 6275 §11.5.1: a link-layer event may start movement detection)."""
        if up == self.carrier:
            return CarrierAction.NONE
        self.carrier = up
        self.damper.carrier_changed(now)
        if up:
            self.rs_pending = True
            return CarrierAction.UP
        self.early_proof = None
        if self.link is not None:
            self.link = None
            self.presence.link_down(now)
        return CarrierAction.DOWN

    def solicited(self) -> None:
        """The owed router solicitation left."""
        self.rs_pending = False

    def address_hint(self, verdict: str, prefix: Optional[str], *, state: LinkState) -> HintAction:
        """What an address event means (``verdict`` from ``runtime.mobility.address_hint``: "ignore",
        "lost" or "candidate"). Only ASK changes state (an RA is owed): the shell logs the hint, then calls
        ``forget_link`` or ``address_link``. Carrier and address events come in the kernel's order on one
        netlink socket, so ``self.carrier`` is the carrier as it was when this change was queued."""
        if verdict == "ignore":
            return HintAction.IGNORE
        if verdict == "lost":
            # The kernel drops addresses with the carrier; the carrier event handles that.
            return HintAction.LOST if self.carrier else HintAction.IGNORE
        # The office verdict rests on announcements only: a second prefix there is no reason to leave, and
        # an office-prefix address is no proof.
        if state is LinkState.HOME or ipaddress.IPv6Network(prefix) == self.home_prefix:
            self.rs_pending = True
            return HintAction.ASK
        return HintAction.MOVE

    def forget_link(self, now: float) -> None:
        """Our care-of address is gone (not by us): detect again from the next RA, which is owed."""
        self.link = None
        self.damper.link_lost(now)
        self.presence.link_down(now)
        self.presence.pop_events()
        self.rs_pending = True

    def address_link(self, prefix: str, now: float, default_router: Callable[[], Optional[str]]) -> None:
        """Our care-of address moves into ``prefix``. With a known link (router) it is that link, and its
        RAs of the older prefix do not move us back; without one it is a link of its own until an RA names
        the router (``default_router()``: the kernel's, asked only then)."""
        if self.link is None:
            self.link = ("address", prefix)
            self.router = self.router or default_router()
        self.prefix = prefix
        self.presence.link_up(self.link, now)

    def announcement(self, authentic: bool, now: float) -> bool:
        """An office announcement (``authentic``: the shell's signature, prefix and freshness checks).
        True if it changed the node's location."""
        if self.link is None:
            if authentic and self.carrier:
                self.early_proof = now   # our RS prompted it, ahead of the RA: same link, no carrier loss since
            return False
        before = self.presence.location
        self.presence.office_announcement(self.link, authentic, now)
        return self.presence.location is not before

    def handle_timer(self, now: float) -> bool:
        """The announcement lifetime; True if the location changed."""
        before = self.presence.location
        self.presence.handle_timer(now)
        return self.presence.location is not before

    # ---- outputs ----
    def placement(self) -> LinkState:
        """Where the verdict puts the node: HOME only on proof; an office prefix without proof is UNPROVEN
        (no address: nothing may leave in clear); anything else is AWAY."""
        if self.presence.location is Location.INTERNAL:
            return LinkState.HOME
        if ipaddress.IPv6Network(self.prefix) == self.home_prefix:
            return LinkState.UNPROVEN
        return LinkState.AWAY
