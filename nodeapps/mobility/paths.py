"""Where the mobile node sends what its applications give it, decided without I/O.

The MN's data plane (nodeapps/roles/mn_data_plane.py) reads a packet from its TUN, asks ``PathSelector.outbound``
and carries the answer out; the selector also holds the MN's link state, a named state machine whose
transitions are checked. Decisions, in order:

- ``IGNORE``: not the MN's to route (runt, not IPv6, multicast, link-local destination).
- ``BYPASS``: not away from the office: at home the kernel's plain routes carry it; on an unproven or lost
  link nothing may leave in clear, so nothing leaves.
- ``DIRECT_SA``: a VCM pair between care-of addresses: the direct SA (the SPD's /128 rule picks it).
- ``DIRECT_RO``: a VCM pair over the MN–MN binding (home-ro) with both bindings live: the direct SA, sent
  care-of to care-of with a Home Address option and a type 2 routing header.
- ``SEED_VIA_HOME_AGENT``: a VCM pair over the MN–MN binding whose bindings are not live yet, the peer
  ready for our keys: the pair's SA seals it and it goes to the peer's home address through the home agents
  (the reference's first packets under the new SA), if it fits that longer path (``seed_limit``);
- ``TOO_BIG_FOR_SEED``: ... and it does not: an ICMPv6 Packet Too Big to the application, never a fragment;
- ``AWAIT_BINDING``: such a pair without seeding (``seed_limit`` None): the SG path.
- ``RO_WRAP``: route optimisation in clear with a peer MN (the insecure baseline), binding live.
- ``CORE``: the mobility core's choice, inside the SG tunnel (reverse tunnel to the home agent).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Optional


class LinkState(str, enum.Enum):
    """Where the MN is, as far as sending goes. A ``str``, so status reports and comparisons keep the
    words."""
    STARTING = "starting"             # no link decision yet
    HOME_UNPROVEN = "home-unproven"   # started with its home address on an office prefix; proof pending
    HOME = "home"                     # inside the office, proven: plain routes, no ESP
    AWAY = "away"                     # outside: a care-of address, the VPN only under ESP
    DETACHED = "detached"             # carrier lost while home: the home address is gone
    UNPROVEN = "unproven"             # an office prefix without proof: no address, nothing leaves


# Which states each state may be entered from. Moving, proving the office and doubting it can happen from
# anywhere (a restart, a lost carrier, a new RA); the rest have one way in.
ENTERED_FROM: dict[LinkState, frozenset[LinkState]] = {
    LinkState.STARTING: frozenset(),
    LinkState.HOME_UNPROVEN: frozenset({LinkState.STARTING}),
    LinkState.HOME: frozenset(LinkState),
    LinkState.AWAY: frozenset(LinkState),
    LinkState.DETACHED: frozenset({LinkState.HOME}),
    LinkState.UNPROVEN: frozenset(LinkState),
}


class Route(enum.Enum):
    IGNORE = "ignore"
    BYPASS = "bypass"
    DIRECT_SA = "direct-sa"
    DIRECT_RO = "direct-ro"
    SEED_VIA_HOME_AGENT = "seed-via-home-agent"
    TOO_BIG_FOR_SEED = "too-big-for-seed"
    AWAIT_BINDING = "await-binding"
    RO_WRAP = "ro-wrap"
    CORE = "core"


class TransitionError(ValueError):
    pass


@dataclass
class PathSelector:
    """``direct_out``: destination home addresses that have a VCM (or mesh) direct SA; the shell's own set,
    changed as the VCM's operations arrive. ``vcm_ro``: those pairs ride the MN–MN binding (home-ro) instead
    of a tunnel between care-of addresses. ``clear_ro_source``: with insecure route optimisation between
    peer MNs, the address whose packets are wrapped in clear (None: never). ``seed_limit``: largest packet
    that may go under the pair's SA through the home agents before the bindings are live (None: no seeding)."""
    direct_out: set[bytes] = field(default_factory=set)
    vcm_ro: bool = False
    clear_ro_source: Optional[bytes] = None
    seed_limit: Optional[int] = None
    state: LinkState = LinkState.STARTING
    # Destinations the application was told the seed path's MTU for (a Packet Too Big): the kernel keeps it
    # for ten minutes (RFC 8201 §4). ``widened``: those whose path is no longer the seed's, for the shell to
    # make the kernel forget it (taken with ``take_widened``).
    narrowed: set[bytes] = field(default_factory=set)
    widened: list[bytes] = field(default_factory=list)

    def enter(self, state: LinkState) -> bool:
        """Move to ``state``; True if it changed. TransitionError for a transition the MN never makes."""
        state = LinkState(state)
        if state is self.state:
            return False
        if self.state not in ENTERED_FROM[state]:
            raise TransitionError(f"link state {self.state.value} -> {state.value} is not a transition")
        self.state = state
        return True

    def outbound(self, packet: bytes, peer_ready: Callable[[bytes], bool]) -> Route:
        """The path of one packet from the TUN. ``peer_ready(destination)``: both MN–MN bindings with the
        peer MN whose internal home address that is are live."""
        route = self._route(packet, peer_ready)
        if route is Route.TOO_BIG_FOR_SEED:
            self.narrowed.add(packet[24:40])
        elif self.narrowed and route is not Route.SEED_VIA_HOME_AGENT and packet[24:40] in self.narrowed:
            self.narrowed.discard(packet[24:40])
            self.widened.append(packet[24:40])
        return route

    def take_widened(self) -> list[bytes]:
        widened, self.widened = self.widened, []
        return widened

    def _route(self, packet: bytes, peer_ready: Callable[[bytes], bool]) -> Route:
        if len(packet) < 40 or packet[0] >> 4 != 6 or packet[24] == 0xFF or \
                (packet[24] == 0xFE and packet[25] & 0xC0 == 0x80):
            return Route.IGNORE
        if self.state is not LinkState.AWAY:
            return Route.BYPASS
        destination = packet[24:40]
        waiting = False
        if destination in self.direct_out:
            if not self.vcm_ro:
                return Route.DIRECT_SA
            if peer_ready(destination):
                return Route.DIRECT_RO
            waiting = True
        if self.clear_ro_source is not None and packet[8:24] == self.clear_ro_source and peer_ready(destination):
            return Route.RO_WRAP
        if not waiting:
            return Route.CORE
        if self.seed_limit is None:
            return Route.AWAIT_BINDING
        return Route.SEED_VIA_HOME_AGENT if len(packet) <= self.seed_limit else Route.TOO_BIG_FOR_SEED
