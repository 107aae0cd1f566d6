"""The MN's link tracker (nodeapps/mobility/attachment.py): router advertisements, carrier and address
events, office announcements and the placement they lead to, on a fake clock, without root or sockets."""
import ipaddress

import pytest

from nodeapps.mobility.attachment import (EARLY_PROOF_S, CarrierAction, HintAction, LinkTracker, RaAction,
                                          chosen_prefix)
from nodeapps.mobility.location import Location, PresenceDetector
from nodeapps.mobility.paths import LinkState

OFFICE = "fdc0:ffee:0:1::/64"
WLAN = "2001:db8:1::/64"
CELL = "2001:db8:2::/64"
R1, R2 = "fe80::1", "fe80::2"


class Clock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def tracker(lifetime=None) -> LinkTracker:
    return LinkTracker(ipaddress.IPv6Network(OFFICE), PresenceDetector(announcement_lifetime=lifetime))


def ra(t: LinkTracker, router: str, prefix: str, now: float, *, autonomous=True, lifetime=1800, interval_ms=None):
    return t.router_advertisement(router, [(prefix, autonomous)], lifetime, interval_ms, now)


def never_asked():
    raise AssertionError("asked the kernel without need")


# ---- router advertisements ----
@pytest.mark.parametrize("prefixes, lifetime", [([], 1800), ([(WLAN, True)], 0)])
def test_an_ra_without_a_prefix_or_with_router_lifetime_zero_changes_nothing(prefixes, lifetime):
    t = tracker()
    assert t.router_advertisement(R1, prefixes, lifetime, None, 1.0) is RaAction.UNUSABLE
    assert (t.link, t.prefix, t.router) == (None, None, None)


def test_the_link_is_named_by_the_first_autonomous_prefix_else_the_first():
    assert chosen_prefix([(CELL, False), (WLAN, True)]) == WLAN
    assert chosen_prefix([(CELL, False), (WLAN, False)]) == CELL
    assert chosen_prefix([]) is None


def test_first_ra_is_a_new_link_and_its_repeats_are_the_current_one():
    clock, t = Clock(), tracker()
    assert ra(t, R1, WLAN, clock.now) is RaAction.NEW_LINK
    assert (t.link, t.prefix, t.router) == ((R1, WLAN), WLAN, R1)
    assert t.placement() is LinkState.AWAY
    assert ra(t, R1, WLAN, clock.advance(1)) is RaAction.CURRENT


def test_another_router_is_damped_while_the_current_one_advertises_then_moves_us_once_it_is_quiet():
    clock, t = Clock(), tracker()
    ra(t, R1, WLAN, clock.now, interval_ms=1000)
    assert ra(t, R2, CELL, clock.advance(1.5)) is RaAction.DAMPED
    assert t.link == (R1, WLAN)
    clock.advance(3.1)   # three of R1's intervals missed (RFC 6275 §11.5.1: current router unreachable)
    assert ra(t, R2, CELL, clock.now) is RaAction.NEW_LINK
    assert (t.link, t.prefix, t.router) == ((R2, CELL), CELL, R2)


# ---- carrier ----
def test_carrier_loss_drops_the_link_once_and_its_return_owes_a_solicitation():
    clock, t = Clock(), tracker()
    ra(t, R1, WLAN, clock.now)
    assert t.carrier_event(False, clock.advance(0.1)) is CarrierAction.DOWN
    assert t.link is None and not t.carrier
    assert t.carrier_event(False, clock.now) is CarrierAction.NONE
    assert not t.rs_pending
    assert t.carrier_event(True, clock.advance(0.1)) is CarrierAction.UP
    assert t.rs_pending
    assert t.carrier_event(True, clock.now) is CarrierAction.NONE
    t.solicited()
    assert not t.rs_pending


def test_after_a_carrier_change_the_next_ra_moves_us_at_once_even_from_another_router():
    clock, t = Clock(), tracker()
    ra(t, R1, WLAN, clock.now)
    t.carrier_event(False, clock.advance(0.1))
    t.carrier_event(True, clock.advance(0.1))
    assert ra(t, R2, CELL, clock.advance(0.1)) is RaAction.NEW_LINK


def test_carrier_loss_takes_the_office_verdict_with_it():
    clock, t = Clock(), tracker()
    ra(t, R1, OFFICE, clock.now)
    assert t.announcement(True, clock.now)
    assert t.placement() is LinkState.HOME
    t.carrier_event(False, clock.advance(0.1))
    assert t.presence.location is Location.EXTERNAL
    assert [e.reason for e in t.presence.pop_events()][-1] == "link down"


# ---- office announcements and placement ----
def test_an_office_prefix_is_unproven_until_an_authentic_announcement_and_home_after():
    clock, t = Clock(), tracker()
    ra(t, R1, OFFICE, clock.now)
    assert t.placement() is LinkState.UNPROVEN
    assert not t.announcement(False, clock.advance(0.1))
    assert t.placement() is LinkState.UNPROVEN
    assert t.announcement(True, clock.advance(0.1))
    assert t.placement() is LinkState.HOME
    assert not t.announcement(True, clock.advance(0.1))   # no change, no second placement


def test_a_proven_office_stays_home_only_for_the_announcement_lifetime():
    clock, t = Clock(), tracker(lifetime=5.0)
    ra(t, R1, OFFICE, clock.now)
    t.announcement(True, clock.now)
    assert not t.handle_timer(clock.advance(4.9))
    assert t.handle_timer(clock.advance(0.2))
    assert t.placement() is LinkState.UNPROVEN


def test_an_announcement_ahead_of_the_ra_counts_for_the_link_the_ra_then_names_if_soon_enough():
    clock, t = Clock(), tracker()
    assert not t.announcement(True, clock.now)   # no link yet: remembered, nothing decided
    assert ra(t, R1, OFFICE, clock.advance(EARLY_PROOF_S / 2)) is RaAction.NEW_LINK
    assert t.placement() is LinkState.HOME


@pytest.mark.parametrize("case", ["late", "unauthentic", "carrier lost", "no carrier"])
def test_an_early_announcement_proves_nothing_late_unauthentic_or_across_a_carrier_change(case):
    clock, t = Clock(), tracker()
    if case == "no carrier":
        t.carrier_event(False, clock.now)
    t.announcement(case != "unauthentic", clock.now)
    if case == "carrier lost":
        t.carrier_event(False, clock.advance(0.01))
        t.carrier_event(True, clock.advance(0.01))
    if case == "no carrier":
        t.carrier_event(True, clock.advance(0.01))
    ra(t, R1, OFFICE, clock.advance(EARLY_PROOF_S + 0.01 if case == "late" else 0.01))
    assert t.placement() is LinkState.UNPROVEN


def test_start_away_holds_the_lab_given_link_and_router():
    t = tracker()
    t.start_away(WLAN, R1, 1.0)
    assert (t.link, t.prefix, t.router) == (("initial", WLAN), WLAN, R1)
    assert t.placement() is LinkState.AWAY


# ---- address events ----
@pytest.mark.parametrize("verdict, carrier, expected", [
    ("ignore", True, HintAction.IGNORE),
    ("lost", True, HintAction.LOST),
    ("lost", False, HintAction.IGNORE),   # the kernel dropped it with the carrier: the carrier event acts
])
def test_lost_and_ignored_address_hints(verdict, carrier, expected):
    t = tracker()
    t.carrier_event(carrier, 0.0)   # as the netlink stream had it before the address change
    action = t.address_hint(verdict, None, state=LinkState.AWAY)
    assert action is expected


@pytest.mark.parametrize("state, prefix", [(LinkState.HOME, CELL), (LinkState.AWAY, OFFICE)])
def test_a_new_prefix_at_home_or_an_office_prefix_only_asks_the_routers(state, prefix):
    t = tracker()
    assert t.address_hint("candidate", prefix, state=state) is HintAction.ASK
    assert t.rs_pending and t.link is None


def test_an_unannounced_prefix_becomes_a_link_of_its_own_until_its_router_advertises():
    clock, t = Clock(), tracker()
    assert t.address_hint("candidate", CELL, state=LinkState.AWAY) is HintAction.MOVE
    assert not t.rs_pending
    t.address_link(CELL, clock.now, lambda: R2)
    assert (t.link, t.prefix, t.router) == (("address", CELL), CELL, R2)
    assert t.placement() is LinkState.AWAY
    assert ra(t, R2, CELL, clock.advance(0.1)) is RaAction.ADOPT_ROUTER
    assert (t.link, t.prefix, t.router) == ((R2, CELL), CELL, R2)
    assert ra(t, R2, CELL, clock.advance(0.1)) is RaAction.CURRENT


def test_renumbering_on_a_known_link_keeps_the_link_and_its_router():
    clock, t = Clock(), tracker()
    ra(t, R1, WLAN, clock.now)
    t.address_link(CELL, clock.advance(0.1), never_asked)
    assert (t.link, t.prefix, t.router) == ((R1, WLAN), CELL, R1)


def test_a_forgotten_link_is_detected_again_from_the_next_ra_which_is_owed():
    clock, t = Clock(), tracker()
    ra(t, R1, WLAN, clock.now, interval_ms=1000)
    t.forget_link(clock.advance(0.1))
    assert t.link is None and t.rs_pending
    assert ra(t, R2, CELL, clock.advance(0.1)) is RaAction.NEW_LINK   # not damped: the damper was re-armed


def test_a_forgotten_office_link_is_external_at_once_and_leaves_no_location_event_to_log():
    clock, t = Clock(), tracker()
    ra(t, R1, OFFICE, clock.now)
    t.announcement(True, clock.now)
    t.presence.pop_events()
    t.forget_link(clock.advance(0.1))
    assert t.presence.location is Location.EXTERNAL
    assert t.presence.pop_events() == []


def test_an_address_after_a_forgotten_link_keeps_the_router_we_knew():
    clock, t = Clock(), tracker()
    ra(t, R1, WLAN, clock.now)
    t.forget_link(clock.advance(0.1))
    t.address_link(CELL, clock.advance(0.1), never_asked)
    assert (t.link, t.prefix, t.router) == (("address", CELL), CELL, R1)
