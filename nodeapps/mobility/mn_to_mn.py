"""Route optimisation between two mobile nodes (RFC 6275 §9 and §11 in one node): each MN is also the
correspondent node of its peers, so both ends hold a binding for the other and traffic runs care-of
address to care-of address, with a Home Address option (our home address) and a type 2 routing header
(the peer's home address) in the same packet.

Theory of operation. ``mobile`` is the node's ``MobileNode`` core for the home address that is route-
optimised (embodiment 1: the external home address at the public home agent), ``correspondent`` a
``CorrespondentNode`` core for that same address. ``peers`` maps each peer's *internal* home address (what
the applications use) to its route-optimised home address.

* Signalling out. The ``MobileNode`` core runs HoTI (through our HA), CoTI and BU towards each peer as
  towards any correspondent; ``route_mobility(packet)`` adds the type 2 routing header when we hold a
  binding for the peer, so CoTI and BU go straight to its care-of address (§9.3.2). Our correspondent core
  answers (HoT, CoT, BA, BE); ``datagrams_to_send`` returns them ready to send: HoT and CoT reverse-
  tunnelled through our HA (§11.3.1: a packet from the home address without a binding at its destination)
  and marked for the MN–HA tunnel SA,
  a BA with a Home Address option straight to the peer once our own binding there is acknowledged.
* Signalling in. ``receive_mobility(packet)`` takes a Mobility Header packet addressed to our home address
  with any type 2 routing header already removed: HoTI, CoTI and BU go to the correspondent core; the
  answers to our own tests go to the mobile core, after §9.3.1's binding check of a Home Address option.
* Data. ``wrap(packet)`` takes an application packet between internal home addresses and returns it
  IPv6-in-IPv6 between the two route-optimised home addresses, sent care-of to care-of (HAO + RH2), or None
  while either binding is missing (the shell then keeps its normal path). Where the applications use the
  route-optimised home addresses themselves (embodiment 2, ``peers`` maps an address to itself) the
  packet gets HAO and RH2 directly, without the inner header. ``unwrap(packet)`` checks an
  arriving one (HAO against the binding cache, inner addresses against ``peers``) and returns the
  application packet.
* A static Kbm for a peer (``use_binding_key``, RFC 4449; the VCM's KEYS carry one with the option
  ``binding_keys``): both cores use it instead of return routability, and the first BU goes straight to the
  care-of address the key came with, for ``CARE_OF_HINT_S``; later retransmissions take the peer's home
  agent, which follows the peer wherever it went since.
* Leaving the public side. ``deregistrations(own_internal)`` returns, per peer that holds a binding of ours,
  a BU with lifetime 0 carried IPv6-in-IPv6 between the internal home addresses, for the shell to send
  through the VPN when the node is inside the office and cannot reach the peer in clear;
  ``receive_via_vpn`` is the other end.
* ESP between the route-optimised home addresses (the VCM's direct SA pair in embodiment 1). The shell
  seals an application packet with a tunnel-mode SA whose outer addresses are our and the peer's route-
  optimised home addresses; ``route_esp(packet)`` sends that ESP packet care-of to care-of (HAO + RH2 in
  front of ESP, §6.3/§6.4, RFC 3776/4877 placement), or returns None while either binding is missing (then
  nothing may leave on the direct SA). ``receive_esp(packet)`` processes an arriving one's RH2 and checks
  its HAO against the binding cache (§9.3.1) *before* the SAD lookup, and returns it as plain
  ``IPv6(peer home address -> ours) | ESP`` for the SAD (SPI + our home address).

``wrap``/``unwrap`` do not protect the data: they are the prior-art route optimisation without an SA
between the MNs (the shell does not use them when the VCM supplies the SA).
"""
from __future__ import annotations

from typing import Optional

from nodeapps import ipv6
from nodeapps.mobility import messages as m
from nodeapps.mobility.constants import INITIAL_BINDACK_TIMEOUT, MH_BU, MH_COT, MH_COTI, MH_HOT, MH_HOTI
from nodeapps.mobility.correspondent import CorrespondentNode
from nodeapps.mobility.events import Datagram, Protection
from nodeapps.mobility.mobile import MobileNode

_TO_CORRESPONDENT = (MH_HOTI, MH_COTI, MH_BU)
# How long a care-of address handed over with a static Kbm routes our BUs to that peer (one first timeout).
CARE_OF_HINT_S = INITIAL_BINDACK_TIMEOUT


def mobility_type(packet: bytes) -> Optional[int]:
    """MH type of a packet whose upper layer is a Mobility Header, else None."""
    try:
        _hao, _rh2, upper, offset = m.packet_summary(packet)
    except m.MobilityParseError:
        return None
    if upper != ipv6.NH_MOBILITY or offset + 3 > len(packet):
        return None
    return packet[offset + 2]


class MobilePeerRouting:
    def __init__(self, mobile: MobileNode, peers: dict[bytes, bytes],
                 correspondent: Optional[CorrespondentNode] = None):
        self.mobile = mobile
        self.home_address = mobile.home_address
        self.correspondent = correspondent or CorrespondentNode([mobile.home_address])
        self.peers = {bytes(k): bytes(v) for k, v in peers.items()}        # internal -> route-optimised HoA
        self.internal_of = {v: k for k, v in self.peers.items()}
        self.counters = self.correspondent.counters
        self._care_of_hints: dict[bytes, tuple[bytes, float]] = {}   # peer -> (care-of address, until)

    def start(self, now: float) -> None:
        for peer in self.peers.values():
            self.mobile.start_route_optimisation(peer, now)

    # ---- state ----
    def ready(self, peer: bytes, now: float) -> bool:
        """Both bindings live: the peer has acknowledged ours and we hold one for it."""
        return self.mobile.route_optimised(peer, now) and self.correspondent.route(peer, now) is not None

    def use_binding_key(self, peer: bytes, kbm: Optional[bytes], care_of: Optional[bytes], now: float) -> None:
        """A static Kbm shared with ``peer`` (its route-optimised home address) out of band, RFC 4449: accept
        its BUs under the key and send ours at once, the first to ``care_of`` if given. None: return
        routability again, both ways."""
        peer = bytes(peer)
        if peer not in self.internal_of:
            return
        self.correspondent.set_binding_key(peer, kbm, now)
        if kbm is not None and care_of is not None:
            self._care_of_hints[peer] = (bytes(care_of), now + CARE_OF_HINT_S)
        else:
            self._care_of_hints.pop(peer, None)
        self.mobile.use_binding_key(peer, kbm, now)

    # ---- signalling ----
    def route_mobility(self, packet: bytes, now: float) -> bytes:
        """A mobility packet of the mobile core (CoTI, BU) to a peer: with a type 2 routing header to its
        care-of address when we hold its binding (RFC 6275 §9.3.2), or a care-of address that came with a
        static Kbm while it is fresh; anything else unchanged."""
        if len(packet) < ipv6.HEADER_LEN or packet[24:40] not in self.internal_of:
            return packet
        if mobility_type(packet) == MH_HOTI:
            return packet   # §5.2.3: the home test must take the home agent's path
        if self.correspondent.route(packet[24:40], now) is None:
            hint = self._care_of_hints.get(packet[24:40])
            if hint is not None and now < hint[1]:
                return m.insert_routing_header(packet, hint[0])
        return self.correspondent.add_routing_header(packet, now)

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """The correspondent core's answers, from our home address, as they go on the wire."""
        out = []
        for datagram in self.correspondent.datagrams_to_send(now):
            packet = self.from_home_address(datagram.packet, now)
            if packet[6] == ipv6.NH_IPV6 and packet[24:40] == self.mobile.home_agent:
                # Reverse-tunnelled HoT / CoT: the leg to our HA starts on our own access link, where the
                # CoT leaves too; in the MN–HA tunnel SA (RFC 3776 §3.1) one eavesdropper there cannot
                # collect both keygen tokens (RFC 6275 §5.2.3 relies on the two paths differing).
                out.append(Datagram(packet, Protection.ESP_TUNNEL, self.mobile.home_agent, datagram.description))
            else:
                out.append(Datagram(packet, description=datagram.description))
        return out

    def from_home_address(self, packet: bytes, now: float) -> bytes:
        """A packet with our home address as source: straight from the care-of address with a HAO when the
        final destination has our binding (§11.3.1), else reverse-tunnelled through the home agent. HoT
        and CoT always take the tunnel (their destination holds no binding for the test's address)."""
        mobile = self.mobile
        if mobile.at_home:
            return packet
        try:
            _hao, routing, _upper, _offset = m.packet_summary(packet)
        except m.MobilityParseError:
            routing = None
        final = routing or packet[24:40]
        if mobility_type(packet) not in (MH_HOT, MH_COT) and mobile.route_optimised(final, now):
            return m.insert_home_address_option(packet, mobile.care_of_address)
        return m.encapsulate(packet, mobile.care_of_address, mobile.home_agent)

    def receive(self, packet: bytes, now: float, *, esp_protected: bool = False) -> Optional[bytes]:
        """Anything for our home address that arrives at the care-of address: in clear, IPv6-in-IPv6 from
        the home agent, or already opened from the MN–HA tunnel SA (``esp_protected``). Returns the packet
        for the node's stack, or None (consumed as signalling, or dropped and counted by a core)."""
        try:
            hao, routing, upper, _offset = m.packet_summary(packet)
            if upper == ipv6.NH_IPV6 and routing is None and hao is None:
                inner = self.mobile.incoming(packet, now)          # the home agent's tunnel
                if inner is None:
                    return None
                if mobility_type(inner) is not None:
                    self.receive_mobility(inner, now, esp_protected=esp_protected)
                    return None
                return inner
            routed = routing is not None
            if routed:
                packet = self.mobile.incoming(packet, now)         # RFC 6275 §11.3.3
                if packet is None:
                    return None
                hao, _routing, upper, _offset = m.packet_summary(packet)
        except m.MobilityParseError:
            self.counters["dropped_malformed"] += 1
            return None
        if upper == ipv6.NH_MOBILITY:
            self.receive_mobility(packet, now, esp_protected=esp_protected)
            return None
        if hao is not None:
            return self.unwrap(packet, now)
        if routed:
            return packet     # e.g. a public correspondent's data under its binding
        self.counters["dropped_not_for_us"] += 1
        return None

    def receive_mobility(self, packet: bytes, now: float, *, esp_protected: bool = False) -> None:
        """A Mobility Header packet for our home address, type 2 routing header already processed."""
        kind = mobility_type(packet)
        if kind in _TO_CORRESPONDENT:
            # The HAO of a BU is checked by BU processing itself (§9.5.1), not against the cache.
            self.correspondent.receive(packet, now, esp_protected=esp_protected)
            if kind == MH_BU:
                # A peer that could bind with us is reachable: our own tests towards it need not wait
                # for their backoff (they were lost while it was inside the office).
                for peer in self.peers.values():
                    if self.correspondent.route(peer, now) is not None and not self.mobile.route_optimised(peer, now):
                        self.mobile.retry_route_optimisation(peer, now)
            return
        try:
            hao = m.packet_summary(packet)[0]
        except m.MobilityParseError:
            hao = None
        if hao is not None:
            packet = self.correspondent.accept_home_address_option(packet, now)   # RFC 6275 §9.3.1
            if packet is None:
                return
        self.mobile.receive(packet, now, esp_protected=esp_protected)

    # ---- data ----
    def wrap(self, packet: bytes, now: float) -> Optional[bytes]:
        """An application packet to a peer's internal home address, IPv6-in-IPv6 between the route-
        optimised home addresses and sent care-of address to care-of address; None if not optimised."""
        if len(packet) < ipv6.HEADER_LEN:
            return None
        peer = self.peers.get(packet[24:40])
        if peer is None or not self.ready(peer, now):
            return None
        # Embodiment 2: the application already uses the route-optimised home addresses, no inner header.
        outer = packet if packet[24:40] == peer else m.encapsulate(packet, self.home_address, peer)
        outer = m.insert_home_address_option(outer, self.mobile.care_of_address)   # RFC 6275 §6.3
        return self.correspondent.add_routing_header(outer, now)                    # RFC 6275 §6.4

    def unwrap(self, packet: bytes, now: float) -> Optional[bytes]:
        """Data with a HAO (routing header already removed): the application packet if the HAO matches a
        binding (§9.3.1) and the inner addresses are the peer's and ours; else None (counted)."""
        checked = self.correspondent.accept_home_address_option(packet, now)
        if checked is None:
            return None
        if self.internal_of.get(checked[8:24]) == checked[8:24] and checked[6] != ipv6.NH_IPV6:
            if checked[24:40] != self.home_address:     # embodiment 2: the application packet itself
                self.counters["dropped_not_a_peer_tunnel"] += 1
                return None
            self.counters["peer_data_in"] += 1
            return checked
        try:
            outer_src, outer_dst, inner = m.decapsulate(checked)
        except m.MobilityParseError:
            self.counters["dropped_not_a_peer_tunnel"] += 1
            return None
        internal = self.internal_of.get(outer_src)
        if outer_dst != self.home_address or internal is None or inner[8:24] != internal:
            self.counters["dropped_not_a_peer_tunnel"] += 1
            return None
        self.counters["peer_data_in"] += 1
        return inner

    # ---- ESP between route-optimised home addresses ----
    def route_esp(self, packet: bytes, now: float) -> Optional[bytes]:
        """An ESP packet from our home address to a peer's route-optimised home address (a tunnel-mode SA
        whose outer ends are the two home addresses) as it goes on the wire: care-of to care-of, IPv6 | RH2 |
        destination options (HAO) | ESP (RFC 6275 §6.3, §6.4). None while either binding is missing: the
        peer could not process it, so it must not leave."""
        if len(packet) < ipv6.HEADER_LEN or packet[6] != ipv6.NH_ESP or packet[8:24] != self.home_address:
            return None
        peer = packet[24:40]
        if peer not in self.internal_of or not self.ready(peer, now) or self.mobile.at_home:
            return None
        outer = m.insert_home_address_option(packet, self.mobile.care_of_address)
        routed = self.correspondent.add_routing_header(outer, now)
        self.counters["peer_esp_out"] += 1
        return routed

    def receive_esp(self, packet: bytes, now: float) -> Optional[bytes]:
        """ESP from a peer under the MN–MN binding, as it arrived at our care-of address: the type 2 routing
        header is processed (our home address and care-of address, §11.3.3) and the HAO checked against the
        binding cache (§9.3.1) before any SAD lookup. Returns IPv6(peer home address -> ours) | ESP, or None
        (counted; a HAO without a binding also queues a Binding Error)."""
        try:
            hao, routing, upper, _offset = m.packet_summary(packet)
        except m.MobilityParseError:
            self.counters["dropped_malformed"] += 1
            return None
        if upper != ipv6.NH_ESP or routing is None or hao is None or hao not in self.internal_of:
            self.counters["dropped_not_peer_esp"] += 1
            return None
        opened = self.mobile.incoming(packet, now)           # RH2: must name our home and care-of address
        if opened is None:
            return None
        checked = self.correspondent.accept_home_address_option(opened, now)   # RFC 6275 §9.3.1
        if checked is None:
            return None
        self.counters["peer_esp_in"] += 1
        return checked

    # ---- leaving the public side ----
    def deregistrations(self, own_internal: bytes, now: float) -> list[bytes]:
        """Per peer holding our binding: a lifetime-0 BU from our home address for the VPN path: IPv6-in-IPv6
        from our internal home address to the peer's (embodiment 1), or as it is when the route-optimised
        home address is the internal one too (embodiment 2: the home link is the office)."""
        out = []
        for internal, peer in self.peers.items():
            bu = self.mobile.deregistration_from_home(peer, now)
            if bu is not None:
                out.append(bu if own_internal == self.home_address else m.encapsulate(bu, own_internal, internal))
        return out

    def receive_via_vpn(self, packet: bytes, now: float) -> bool:
        """An IPv6-in-IPv6 packet that came through the VPN from a peer's internal home address: a BU from
        that peer's route-optimised home address to ours goes to the correspondent core. True if it was
        one (consumed), False for anything else."""
        if len(packet) < ipv6.HEADER_LEN or packet[6] != ipv6.NH_IPV6:
            return False
        peer = self.peers.get(packet[8:24])
        if peer is None:
            return False
        try:
            _src, _dst, inner = m.decapsulate(packet)
        except m.MobilityParseError:
            return False
        if inner[8:24] != peer or inner[24:40] != self.home_address or mobility_type(inner) != MH_BU:
            self.counters["dropped_not_a_peer_tunnel"] += 1
            return True
        self.correspondent.receive(inner, now, esp_protected=True)
        return True
