"""Home agent core (RFC 6275 §10): home registrations, binding cache, and the tunnel decisions.

Theory of operation: the MN sends a BU with the H and A flags from its care-of address (home address in a
HAO, care-of address repeated in an Alternate Care-of Address option so ESP covers it). The runtime removes
the ESP transport header (RFC 3776) and calls ``receive(packet, now, esp_protected=True)``. The core checks
the BU (§10.3.1), updates the binding cache and queues a BA to the care-of address with a type 2 routing
header; the BA datagram is marked ``Protection.ESP_TRANSPORT`` for the runtime to protect.

Binding events tell the shell what to change: ``BindingAdded`` / ``BindingUpdated`` (start or move the
IPv6-in-IPv6 tunnel to the care-of address, proxy ND for the home address), ``BindingRemoved`` (stop). The
per-packet helpers ``encapsulate_to_mobile`` and ``accept_reverse_tunnel`` are pure decisions over the cache.

With ``accept_secured_bindings`` the same core serves as the mobility peer of a security gateway: BUs
without the H flag that arrived under ESP create plain bindings (no tunnel, ``home_registration`` False),
whose care-of address the gateway uses as its tunnel endpoint.

After a restart the cache is empty while the MNs still hold their registrations: ``request_refresh`` asks an
MN whose protected traffic arrives without a binding to register again (a Binding Refresh Request, which the
MN answers with a BU, RFC 6275 §11.7.4), so its traffic resumes within a round trip instead of waiting for
its next scheduled refresh.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, Optional

from nodeapps import ipv6
from nodeapps.mobility import messages as m
from nodeapps.mobility.constants import (
    BA_ACCEPTED, BA_INSUFFICIENT_RESOURCES, BA_NOT_HOME_AGENT_FOR_THIS_MN, BA_NOT_HOME_SUBNET,
    BA_REGISTRATION_TYPE_CHANGE_DISALLOWED, BA_SEQUENCE_OUT_OF_WINDOW, seconds_to_units, units_to_seconds,
)
from nodeapps.mobility.core import BindingCacheNode
from nodeapps.mobility.events import Datagram, MobilityWrongSa, Protection


REFRESH_REQUEST_GAP_S = 1.0    # at most one BRR per home address per second: the BU answers it in a round trip
REFRESH_REQUEST_MEMORY = 1024  # home addresses remembered for that gap (only served ones when the HA has a list)


class HomeAgent(BindingCacheNode):
    def __init__(self, address: bytes, home_prefixes: Iterable[str], *,
                 served_home_addresses: Optional[Iterable[bytes]] = None, max_lifetime: float = 3600.0,
                 refresh_advice: Optional[float] = None, require_esp: bool = True,
                 accept_secured_bindings: bool = False, vpn_prefixes: Iterable[str] = (), **limits):
        """``home_prefixes``: prefixes (text, e.g. "2001:db8:1::/64") whose addresses this HA serves (else
        status 132). ``served_home_addresses``: if given, only these (else status 133). ``max_lifetime``:
        granted lifetimes are trimmed to it (seconds). ``refresh_advice``: seconds for a Binding Refresh
        Advice option in BAs (RFC 6275 §10.3.1), None for none. ``require_esp``: drop BUs that did not arrive
        under ESP (RFC 3776 §3.1). ``vpn_prefixes``: a reverse-tunnelled packet whose inner source lies in one
        of them must have come over a protected link (``accept_reverse_tunnel``)."""
        super().__init__([address], **limits)
        self.address = bytes(address)
        self.home_prefixes = [ipaddress.IPv6Network(p) for p in home_prefixes]
        self.served = None if served_home_addresses is None else frozenset(bytes(a) for a in served_home_addresses)
        self.max_lifetime = max_lifetime
        self.refresh_advice = refresh_advice
        self.require_esp = require_esp
        self.accept_secured_bindings = accept_secured_bindings
        self.vpn_prefixes = [ipaddress.IPv6Network(p) for p in vpn_prefixes]
        self._refresh_requested: dict[bytes, float] = {}   # home address -> when we last sent it a BRR

    def _on_home_subnet(self, home_address: bytes) -> bool:
        address = ipaddress.IPv6Address(home_address)
        return any(address in prefix for prefix in self.home_prefixes)

    def _on_binding_update(self, parsed, bu: m.BindingUpdate, now: float, esp_protected: bool) -> None:
        if self.require_esp and not esp_protected:
            self._drop("unprotected_binding_update")  # RFC 3776 §3.1 / RFC 6275 §10.3.1
            return
        if not self._binding_update_allowed(now):
            return
        home_address, care_of = self._addresses_of(parsed, bu)
        if not self._usable_addresses(home_address, care_of):
            return
        if not bu.home_registration and not self.accept_secured_bindings:
            # Not a home registration and we do no route optimisation: RR options would be needed (§9.5.1).
            self._drop("not_home_registration", ipv6.ntop(home_address))
            return

        def answer(status: int, sequence: int = bu.sequence, lifetime_units: int = 0, options=()) -> None:
            # RFC 6275 §10.3.1: the HA acknowledges when asked and always on error.
            if bu.ack or status >= 128:
                ack = m.BindingAcknowledgement(status, sequence, lifetime_units, options=tuple(options))
                self._send_ack(parsed, home_address, ack, Protection.ESP_TRANSPORT, home_address)

        if not self._on_home_subnet(home_address):
            answer(BA_NOT_HOME_SUBNET)
            return
        if self.served is not None and home_address not in self.served:
            answer(BA_NOT_HOME_AGENT_FOR_THIS_MN)
            return
        ok, last = self.cache.sequence_acceptable(home_address, bu.sequence, now)
        if not ok:
            # RFC 6275 §9.5.1: status 135 carrying the last accepted sequence number.
            answer(BA_SEQUENCE_OUT_OF_WINDOW, sequence=last)
            return
        existing = self.cache.get(home_address, now)
        if existing is not None and existing.home_registration != bu.home_registration:
            answer(BA_REGISTRATION_TYPE_CHANGE_DISALLOWED)  # RFC 6275 §10.3.1
            return
        if bu.lifetime == 0 or care_of == home_address:
            # RFC 6275 §10.3.2: deregistration; an unknown binding is answered with 133.
            if existing is None:
                answer(BA_NOT_HOME_AGENT_FOR_THIS_MN)
                return
            self._delete_binding(home_address)
            answer(BA_ACCEPTED)
            return
        if self.cache.full(home_address):
            answer(BA_INSUFFICIENT_RESOURCES)
            return
        granted_units = seconds_to_units(min(bu.lifetime_seconds, self.max_lifetime))
        if granted_units == 0:
            granted_units = 1
        granted = units_to_seconds(granted_units)
        self._store_binding(home_address, care_of, bu.sequence, granted, now, bu.home_registration)
        options = []
        if self.refresh_advice is not None:
            options.append(m.BindingRefreshAdvice(max(1, seconds_to_units(min(self.refresh_advice, granted)))))
        answer(BA_ACCEPTED, lifetime_units=granted_units, options=options)

    def request_refresh(self, home_address: bytes, source: bytes, now: float) -> bool:
        """Traffic of the MN at ``home_address`` came in authenticated (out of its SA, or over the office link
        behind the SG) from ``source`` while we hold no binding for it: we restarted and lost the cache. Queue
        a Binding Refresh Request (RFC 6275 §6.1.2) to ``source`` with a type 2 routing header holding the
        home address, under the MN's SA; the MN answers with a BU (§11.7.4). At most one per home address per
        REFRESH_REQUEST_GAP_S; False when none was queued."""
        home_address, source = bytes(home_address), bytes(source)
        if (self.served is not None and home_address not in self.served) or self.cache.get(home_address, now):
            return False
        last = self._refresh_requested.get(home_address)
        if last is not None and now - last < REFRESH_REQUEST_GAP_S:
            self.counters["refresh_requests_suppressed"] += 1
            return False
        if last is None and len(self._refresh_requested) >= REFRESH_REQUEST_MEMORY:
            del self._refresh_requested[next(iter(self._refresh_requested))]   # the oldest entry
        self._refresh_requested.pop(home_address, None)
        self._refresh_requested[home_address] = now
        packet = m.build_mobility_packet(self.address, source, m.BindingRefreshRequest(), routing_address=home_address)
        self._queue(packet, "BRR after losing the binding", Protection.ESP_TRANSPORT, home_address)
        return True

    # ---- data plane decisions ----
    def tunnel_endpoint(self, home_address: bytes, now: float) -> Optional[bytes]:
        """Care-of address to tunnel traffic for ``home_address`` to (home registrations only)."""
        entry = self.cache.get(home_address, now)
        if entry is None or not entry.home_registration:
            return None
        return entry.care_of_address

    def reverse_tunnel_allowed(self, outer_src: bytes, inner_src: bytes, now: float) -> bool:
        """RFC 6275 §10.4.5: a packet reverse-tunnelled from an MN is accepted only if the outer source is the
        registered care-of address of the inner source (the home address). Use directly after ESP tunnel-mode
        processing, where the outer header is already gone."""
        return self.tunnel_endpoint(inner_src, now) == outer_src

    def encapsulate_to_mobile(self, packet: bytes, now: float) -> Optional[Datagram]:
        """A packet intercepted for a registered home address, tunnelled to its care-of address (RFC 6275
        §10.4.1), or None if the destination has no home registration here. A tunnelled Mobility Header
        (the HoT) is marked for the MN–HA tunnel-mode SA (RFC 3776 §3.1)."""
        if len(packet) < ipv6.HEADER_LEN:
            return None
        home_address = packet[24:40]
        care_of = self.tunnel_endpoint(home_address, now)
        if care_of is None:
            return None
        tunnelled = m.encapsulate(packet, self.address, care_of)
        try:
            mobility = m.packet_summary(packet)[2] == ipv6.NH_MOBILITY
        except m.MobilityParseError:
            mobility = False
        if mobility:
            return Datagram(tunnelled, Protection.ESP_TUNNEL, home_address, "tunnelled to MN (mobility)")
        return Datagram(tunnelled, description="tunnelled to MN")

    def accept_tunnel_sa(self, outer_src: bytes, inner: bytes, now: float, sa_home_address: bytes) -> bool:
        """A packet out of the MN–HA tunnel-mode SA bound to ``sa_home_address`` (RFC 3776 §3.1: a HoTI).
        RFC 4301 §5.2 / RFC 3776 §4.2: its inner source must be that home address (else counted
        ``mh_wrong_sa``); RFC 6275 §10.4.5: the outer source its registered care-of address."""
        inner_src = inner[8:24]
        if inner_src != sa_home_address:
            self.counters["mh_wrong_sa"] += 1
            self._emit(MobilityWrongSa(inner_src, sa_home_address, "tunnelled packet"))
            return False
        if not self.reverse_tunnel_allowed(outer_src, inner_src, now):
            self._drop("reverse_tunnel_mismatch", ipv6.ntop(inner_src))
            return False
        return True

    def accept_reverse_tunnel(self, packet: bytes, now: float, *, protected_link: bool = False) -> Optional[bytes]:
        """The inner packet of a plain IPv6-in-IPv6 packet from an MN if ``reverse_tunnel_allowed``; else None,
        counted. ``protected_link``: the packet can only have reached us through an ESP SA whose selectors
        cover its source (the office LAN behind the security gateway: the SG forwards nothing in clear from
        the Internet and checks what leaves an MN's tunnel SA)."""
        try:
            outer_src, outer_dst, inner = m.decapsulate(packet)
        except m.MobilityParseError as exc:
            self._drop("malformed", str(exc))
            return None
        inner_src = inner[8:24]
        if not protected_link and ipv6.address_in_prefixes(inner_src, self.vpn_prefixes):
            # RFC 4301 §5.2: after decapsulation a VPN source must have come out of an SA that covers it.
            self._drop("unprotected_vpn_source", ipv6.ntop(inner_src))
            return None
        if outer_dst != self.address or not self.reverse_tunnel_allowed(outer_src, inner_src, now):
            self._drop("reverse_tunnel_mismatch", ipv6.ntop(inner_src))
            if protected_link and outer_dst == self.address:
                self.request_refresh(inner_src, outer_src, now)   # only what passed the SG's checks asks
            return None
        return inner
