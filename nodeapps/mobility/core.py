"""Plumbing shared by the mobility cores: event/datagram queues, counted drops, and the binding-cache side
that home agents and correspondent nodes have in common (BA/BE sending, HAO checks, expiry).

Shape (as in aioquic): inputs are API calls, ``receive(packet, now)`` and ``handle_timer(now)``; outputs are
pulled with ``datagrams_to_send(now)``, ``get_timer()`` and ``next_event()`` / ``pop_events()``.
"""
from __future__ import annotations

import ipaddress
from collections import Counter, deque
from typing import Iterable, Optional

from nodeapps import ipv6
from nodeapps.mobility import messages as m
from nodeapps.mobility.bindings import BindingCache, TokenBucket
from nodeapps.mobility.constants import (
    BE_UNKNOWN_BINDING_FOR_HAO, BE_UNRECOGNIZED_MH_TYPE, MH_NAMES,
)
from nodeapps.mobility.events import (
    BindingAdded, BindingRejected, BindingRemoved, BindingUpdated, Datagram, MessageDropped, MobilityWrongSa,
    Protection,
)


class Core:
    def __init__(self):
        self._events: deque = deque()
        self._datagrams: list[Datagram] = []
        self.counters: Counter = Counter()

    # ---- outputs ----
    def datagrams_to_send(self, now: float) -> list[Datagram]:
        out, self._datagrams = self._datagrams, []
        return out

    def next_event(self):
        return self._events.popleft() if self._events else None

    def pop_events(self) -> list:
        out = list(self._events)
        self._events.clear()
        return out

    # ---- helpers ----
    def _emit(self, event) -> None:
        self._events.append(event)

    def _drop(self, reason: str, detail: str = "", *, event: bool = True) -> None:
        self.counters["dropped_" + reason] += 1
        if event:
            self._emit(MessageDropped(reason, detail))

    def _queue(self, packet: bytes, description: str, protection: Protection = Protection.NONE,
               esp_peer: Optional[bytes] = None) -> None:
        self.counters["sent_" + description.split()[0]] += 1
        self._datagrams.append(Datagram(packet, protection, esp_peer, description))

    def _parse(self, packet: bytes) -> Optional[m.MobilityPacket]:
        try:
            return m.parse_mobility_packet(packet)
        except m.MobilityParseError as exc:
            self._drop("malformed", str(exc))
            return None


class BindingCacheNode(Core):
    """Common part of the home agent and correspondent node cores.

    ``addresses``: this node's own addresses (mobility messages to other destinations are dropped).
    ``bu_rate``/``bu_burst``: token bucket for Binding Updates (a flood is dropped and counted, one event
    per run of drops). ``be_rate``: Binding Errors per second (RFC 6275 §9.3.3 asks for a rate limit).
    """

    def __init__(self, addresses: Iterable[bytes], *, bu_rate: float = 50.0, bu_burst: float = 20.0,
                 be_rate: float = 10.0, cache_capacity: Optional[int] = None):
        super().__init__()
        self.addresses = frozenset(bytes(a) for a in addresses)
        if not self.addresses or any(len(a) != 16 for a in self.addresses):
            raise ValueError("need at least one 16-byte IPv6 address")
        self.cache = BindingCache(cache_capacity)
        self._bu_limit = TokenBucket(bu_rate, bu_burst)
        self._be_limit = TokenBucket(be_rate, max(1.0, be_rate))
        self._bu_limiting = False

    # ---- timers ----
    def get_timer(self) -> Optional[float]:
        return self.cache.next_expiry()

    def handle_timer(self, now: float) -> None:
        for entry in self.cache.expire(now):  # RFC 6275 §9.6: an expired entry is deleted
            self.counters["bindings_expired"] += 1
            self._emit(BindingRemoved(entry.home_address, entry.care_of_address, "expired",
                                      entry.home_registration))

    # ---- receive ----
    def receive(self, packet: bytes, now: float, *, esp_protected: bool = False,
                esp_home_address: Optional[bytes] = None) -> None:
        """A packet whose upper layer is a Mobility Header (ESP, if any, already removed by the shell;
        ``esp_protected`` says whether it was). ``esp_home_address``: the home address the configuration
        binds to the SA the packet came out of (None: not under a per-MN SA, e.g. return routability)."""
        self.handle_timer(now)
        parsed = self._parse(packet)
        if parsed is None:
            return
        if parsed.dst not in self.addresses:
            self._drop("not_for_us", ipv6.ntop(parsed.dst))
            return
        message = parsed.message
        if esp_home_address is not None and not self._sa_speaks_for(parsed, message, esp_home_address):
            return
        self.counters["received_" + MH_NAMES.get(message.MH_TYPE, "unknown")] += 1
        if isinstance(message, m.UnknownMobilityMessage):
            # RFC 6275 §9.2: unknown MH type -> Binding Error status 2 to the source.
            self._drop("unknown_mh_type", str(message.mh_type))
            self._send_binding_error(parsed.dst, parsed.src, BE_UNRECOGNIZED_MH_TYPE,
                                     parsed.home_address or bytes(16), now)
            return
        if isinstance(message, m.BindingUpdate):
            self._on_binding_update(parsed, message, now, esp_protected)
            return
        self._on_other_message(parsed, message, now, esp_protected)

    def _sa_speaks_for(self, parsed: m.MobilityPacket, message, sa_home_address: bytes) -> bool:
        """RFC 3776 §4.2 / RFC 4877 §4.2: a mobility message under an MN's SA may concern only the home address
        the configuration binds to that SA (the SA's selectors), whatever the packet claims. No BA answers a
        refusal: a BA for home address H can only be protected with H's own SA, which the sender does not
        hold, and none of the RFC 6275 §6.1.8 statuses means "not your home address"; as an inbound policy
        failure (RFC 4301 §5.2) the message is discarded and counted."""
        if isinstance(message, m.BindingUpdate):
            home_address = self._addresses_of(parsed, message)[0]
        else:
            home_address = parsed.home_address or parsed.src
        if home_address == sa_home_address:
            return True
        self.counters["mh_wrong_sa"] += 1
        self._emit(MobilityWrongSa(home_address, sa_home_address, MH_NAMES.get(message.MH_TYPE, "unknown")))
        return False

    def _binding_update_allowed(self, now: float) -> bool:
        """The BU token bucket; called only once a BU is authenticated, so a flood of forged BUs cannot
        spend the tokens of the real mobile nodes."""
        if not self._bu_limit.allow(now):
            self._drop("rate_limited", "binding update flood", event=not self._bu_limiting)
            self._bu_limiting = True
            return False
        self._bu_limiting = False
        return True

    def _on_binding_update(self, parsed, bu, now, esp_protected) -> None:
        raise NotImplementedError

    def _on_other_message(self, parsed, message, now, esp_protected) -> None:
        self._drop("unexpected_message", message.name)

    # ---- binding update helpers ----
    @staticmethod
    def _addresses_of(parsed: m.MobilityPacket, bu: m.BindingUpdate) -> tuple[bytes, bytes]:
        """(home address, care-of address) of a BU. RFC 6275 §9.5.1: home address from the HAO (or the
        source if there is none); care-of address from an Alternate Care-of Address option, else the source."""
        home_address = parsed.home_address or parsed.src
        alternate = bu.option(m.AlternateCareOfAddress)
        return home_address, alternate.address if alternate is not None else parsed.src

    def _usable_addresses(self, home_address: bytes, care_of: bytes) -> bool:
        """RFC 6275 §9.5.1: the home address must be unicast routable and the care-of address must not be
        multicast, loopback, link-local or unspecified; otherwise the BU is silently discarded."""
        for address in (home_address, care_of):
            parsed = ipaddress.IPv6Address(address)
            if parsed.is_multicast or parsed.is_loopback or parsed.is_link_local or parsed.is_unspecified:
                self._drop("bad_binding_address", str(parsed))
                return False
        return True

    def _store_binding(self, home_address: bytes, care_of: bytes, sequence: int, lifetime: float, now: float,
                       home_registration: bool) -> None:
        entry, previous = self.cache.update(home_address, care_of, sequence, lifetime, now,
                                            home_registration=home_registration)
        if previous is None:
            self._emit(BindingAdded(home_address, care_of, lifetime, home_registration))
        else:
            self._emit(BindingUpdated(home_address, previous.care_of_address, care_of, lifetime, home_registration))

    def _delete_binding(self, home_address: bytes) -> None:
        entry = self.cache.remove(home_address)
        if entry is not None:
            self._emit(BindingRemoved(home_address, entry.care_of_address, "deregistered", entry.home_registration))

    def _send_ack(self, parsed: m.MobilityPacket, home_address: bytes, ack: m.BindingAcknowledgement,
                  protection: Protection = Protection.NONE, esp_peer: Optional[bytes] = None) -> None:
        """RFC 6275 §9.5.4: to the source of the BU, with a type 2 routing header holding the home address
        unless the BU came from the home address itself."""
        if ack.status >= 128:
            self.counters["ba_status_%d" % ack.status] += 1
            self._emit(BindingRejected(home_address, ack.status))
        routing = home_address if parsed.src != home_address else None
        packet = m.build_mobility_packet(parsed.dst, parsed.src, ack, routing_address=routing)
        self._queue(packet, "BA status %d seq %d" % (ack.status, ack.sequence), protection, esp_peer)

    def _send_binding_error(self, src: bytes, dst: bytes, status: int, home_address: bytes, now: float) -> None:
        if not self._be_limit.allow(now):
            self.counters["be_suppressed"] += 1
            return
        packet = m.build_mobility_packet(src, dst, m.BindingError(status, home_address))
        self._queue(packet, "BE status %d" % status)

    # ---- data plane ----
    def route(self, home_address: bytes, now: float) -> Optional[bytes]:
        """Care-of address for traffic to ``home_address``, or None (no live binding)."""
        entry = self.cache.get(home_address, now)
        return None if entry is None else entry.care_of_address

    def accept_home_address_option(self, packet: bytes, now: float) -> Optional[bytes]:
        """An incoming data packet with a HAO (RFC 6275 §9.3.1): the packet with the home address as source
        and the HAO removed, if a binding maps that home address to the packet's source; otherwise None and
        a Binding Error status 1 to the source."""
        try:
            inner, home_address, care_of = m.remove_home_address_option(packet)
        except m.MobilityParseError as exc:
            self._drop("malformed", str(exc))
            return None
        entry = self.cache.get(home_address, now)
        if entry is None or entry.care_of_address != care_of:
            self._drop("hao_without_binding", ipv6.ntop(home_address))
            self._send_binding_error(packet[24:40], care_of, BE_UNKNOWN_BINDING_FOR_HAO, home_address, now)
            return None
        return inner
