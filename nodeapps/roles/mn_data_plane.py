"""A mobile node's packets: what its applications send (the TUN) and what arrives on its interface.

Out: ``PathSelector.outbound`` (``nodeapps/mobility/paths.py``) names the path of each packet from the TUN;
this class carries it out: the direct SA of a VCM or mesh pair, that SA over the MN–MN binding (HAO + RH2)
or, until that binding is live, through the home agents (or an ICMPv6 Packet Too Big where that path is too
narrow), route optimisation in clear with a peer MN, or the core's reverse tunnel to the HA, all through
the SPD.

In: mobility messages under a peer's ESP go to the cores; ESP from the SG is opened and what comes out is a
mobility message, the HA's IPv6-in-IPv6 tunnel (``core.incoming``, then the TUN), a VCM control datagram or
care-of notice (``DirectPairs``), or data. Inbound policy after every decapsulation (RFC 4301 §5.2,
``nodeapps.esp.inbound_policy``): a VPN source must have come out of the SA the SPD names for it; clear
packets claiming one are dropped (``unprotected_vpn_source``), except the insecure route optimisation's data
from its own peers.
"""
from __future__ import annotations

import time

from nodeapps import ipv6
from nodeapps.esp.inbound_policy import VpnPrefixes, vpn_source_allowed
from nodeapps.mobility import messages as mh
from nodeapps.mobility.mn_to_mn import mobility_type
from nodeapps.mobility.paths import Route
from nodeapps.runtime.mobility import esp_spi
from nodeapps.runtime.netlink import forget_path_mtu


class DataPlane:
    """The packet paths of the mobile node ``node`` (its shell: processor, cores, pairs, peer routing,
    counters, log, sending)."""

    def __init__(self, node, vpn_prefixes: list[str]):
        self.node = node
        self.vpn = VpnPrefixes(vpn_prefixes)
        self.insecure_peers: frozenset = frozenset()   # peer_data "clear": the peers' internal home addresses
        self.ro_direct: set[bytes] = set()     # peers' internal home addresses now reached care-of to care-of
        node.counters.update({"reverse_tunnelled": 0, "from_tunnel": 0, "route_optimised": 0,
                              "route_optimised_in": 0, "unprotected_vpn_source": 0, "seed_out": 0, "seed_in": 0,
                              "seed_too_big": 0, "path_mtu_restored": 0, "path_mtu_restore_failed": 0})

    def _emit(self, name: str, **fields) -> None:
        self.node.log.emit(time.time(), name, **fields)

    def peer_ready(self, destination: bytes) -> bool:
        """Both MN–MN bindings with the peer MN of this internal home address are live."""
        routing = self.node.peer_routing
        peer = routing.peers.get(destination) if routing is not None else None
        return peer is not None and routing.ready(peer, time.monotonic())

    # ---- out ----
    def send_out(self, packet: bytes) -> None:
        node = self.node
        counters = node.counters
        route = node.paths.outbound(packet, self.peer_ready)
        if node.paths.widened:
            self._forget_seed_mtu(node.paths.take_widened())
        if route is Route.IGNORE:
            counters["tun_ignored"] += 1
            return
        if route is Route.BYPASS:
            counters["bypass_from_tun"] += 1  # home: plain routes; unproven: nothing leaves
            return
        peer = packet[24:40]
        if route is Route.DIRECT_SA:
            counters["direct_out"] += 1   # VCM direct SA: no reverse tunnel, the SPD picks the /128 rule
            node.pairs.log_direct(peer, True)
            self.protect_and_send(packet, "direct")
            return
        if route is Route.DIRECT_RO:
            self._send_direct_ro(packet)
            return
        if route is Route.SEED_VIA_HOME_AGENT:
            self._seed_via_home_agent(packet)
            return
        if route is Route.TOO_BIG_FOR_SEED:
            # RFC 4443 §3.2 / RFC 2473 §7: we are the entry of a path narrower than the TUN's MTU.
            counters["seed_too_big"] += 1
            node.write_tun(ipv6.packet_too_big(packet, node.paths.seed_limit, peer))
            return
        if route is Route.AWAIT_BINDING:
            node.pairs.log_direct(peer, False)   # no MN–MN binding (yet): the SG path below
        if route is Route.RO_WRAP:
            wire = node.peer_routing.wrap(packet, time.monotonic())
            if wire is not None:
                counters["ro_data_out"] += 1
                if peer not in self.ro_direct:
                    self.ro_direct.add(peer)
                    self._emit("data_first_direct", dst=ipv6.ntop(peer), path="mipv6-ro")
                self.protect_and_send(wire, "data route-optimised")
                return
        if peer in self.ro_direct and packet[8:24] == node.paths.clear_ro_source:
            self.ro_direct.discard(peer)
            self._emit("data_via_sg", dst=ipv6.ntop(peer), reason="no route optimisation")
        core = node.ext_core if node.ext_core is not None and packet[8:24] == node.ext_home else node.core
        # Peers on the home core: their traffic is in the direct SA or wrapped above, or else reverse-tunnelled
        # into the SG tunnel; never HAO data towards a home address (the HA would deliver it to a peer's
        # TUN with the option still in it), and never HAO data in clear for a VCM peer.
        datagram = core.outgoing(packet, time.monotonic(), route_optimise=not node.peers_on_home_core)
        counters["reverse_tunnelled" if datagram.packet[6] == ipv6.NH_IPV6 else "route_optimised"] += 1
        self.protect_and_send(datagram.packet, datagram.description)

    def _forget_seed_mtu(self, destinations: list[bytes]) -> None:
        """The seed path's narrower MTU, which our Packet Too Big put into the kernel's cache, no longer
        holds: without this the application stays at it for ten minutes."""
        for destination in destinations:
            error = forget_path_mtu(ipv6.ntop(destination), self.node.config.tun_name)
            self.node.counters["path_mtu_restored" if not error else "path_mtu_restore_failed"] += 1
            self._emit("path_mtu_restored", dst=ipv6.ntop(destination), error=error or None)

    def _send_direct_ro(self, packet: bytes) -> None:
        """home-ro, both MN–MN bindings live (the selector checked): seal with the direct SA (outer: the
        external home addresses), then send it care-of to care-of with HAO + RH2."""
        node = self.node
        verdict, sa, out = node.processor.outbound(packet)
        if out is None or verdict != "protect" or not sa.name.startswith("vcm-"):
            return   # refused by the SPD (counted there)
        wire = node.peer_routing.route_esp(out, time.monotonic())
        if wire is None:
            node.counters["vcm_op_errors"] += 1
            return
        node.counters["direct_out"] += 1
        node.pairs.log_direct(packet[24:40], True)
        node.send_raw(wire, "vcm direct")

    def _seed_via_home_agent(self, packet: bytes) -> None:
        """home-ro, the peer ready for our keys but the MN–MN bindings not live yet: the pair's SA seals the
        packet now (outer: the route-optimised home addresses) and it goes to the peer's home address the way
        RFC 6275 §11.3.1 sends any packet from our home address without a binding: reverse-tunnelled through
        our home agent (in the public plan inside the SG tunnel, like any VPN traffic). The SG, if it sees
        it at all, finds ESP it cannot open; the peer's home agent tunnels it on to the peer."""
        node = self.node
        verdict, sa, out = node.processor.outbound(packet)
        if out is None or verdict != "protect" or not sa.name.startswith("vcm-"):
            return   # refused by the SPD (counted there)
        core = node.ext_core if node.ext_core is not None else node.core
        datagram = core.outgoing(out, time.monotonic(), route_optimise=False)
        node.counters["seed_out"] += 1
        node.pairs.log_direct(packet[24:40], False, instead="data_via_home_agent")
        node.pairs.log_protected(packet[24:40], "seed-home-agent")
        self.protect_and_send(datagram.packet, "vcm seed via home agent")

    def _seed_in(self, packet: bytes) -> bool:
        """ESP that a peer's home agent tunnelled to us: a VCM peer's first packets under the pair's SA,
        before the MN–MN bindings are live. The SAD finds the SA by SPI and our home address and the pair's
        inbound policy checks the inner addresses (RFC 4301 §5.2). True if it was one (consumed)."""
        node = self.node
        routing = node.peer_routing
        if node.pairs.agent is None or not node.pairs.vcm_ro or packet[6] != ipv6.NH_ESP or routing is None \
                or packet[8:24] not in routing.internal_of:
            return False   # e.g. our own SA with a VCM host, which its packets reach the same way
        _verdict, _sa, inner = node.processor.inbound(packet)
        if inner is not None:
            node.counters["seed_in"] += 1
            node.write_tun(inner)
        return True

    def protect_and_send(self, packet: bytes, description: str) -> None:
        verdict, sa, out = self.node.processor.outbound(packet)
        if out is None:
            return
        if verdict == "protect":
            self.node.send_protected(out, sa)  # native or UDP-encapsulated, as the SA says
        else:
            self.node.send_raw(out, description)

    # ---- in ----
    def receive(self, sock, now: float) -> None:
        node = self.node
        for packet in node.received_packets(sock):
            if node.open_mobility(packet, now):
                continue
            spi = esp_spi(packet)
            if spi is not None and spi in node.tunnel_by_spi:
                inner = node.tunnel_by_spi[spi].open(packet)  # HoT (or a peer's HoTI) from the external HA
                if inner is not None and not node.drop_mobility(inner, "in"):
                    node.counters["mh_rx"] += 1
                    node.peer_routing.receive(inner, now, esp_protected=True)
                continue
            if spi is None:
                if node.peer_routing is not None:
                    self._external_clear(packet, now)
                continue
            if node.pairs.vcm_direct and node.pairs.from_vcm_host(packet, now):
                continue
            if node.pairs.agent is not None and node.pairs.vcm_ro and node.peer_routing is not None \
                    and packet[6] != ipv6.NH_ESP:
                self._receive_direct_ro(packet, now)   # ESP behind RH2 + HAO: a VCM peer's direct SA
                continue
            _verdict, sa, inner = node.processor.inbound(packet)
            if inner is not None:
                self._from_sg_tunnel(sa, inner, now)
        node.flush_core(now)

    def _from_sg_tunnel(self, sa, inner: bytes, now: float) -> None:
        """What an SA opened (the SG tunnel's, in practice): control, mobility, the HA's tunnel, or data."""
        node = self.node
        if node.pairs.sg_inner is not None and node.pairs.receive_from_sg(sa, inner, now):
            return
        if node.open_mobility(inner, now):
            return
        try:
            upper = mh.packet_summary(inner)[2]
        except mh.MobilityParseError:
            upper = None
        if upper == ipv6.NH_IPV6:
            delivered = node.core.incoming(inner, now)
            if delivered is not None and self._seed_in(delivered):
                return
            if delivered is not None and not self.source_protected(delivered, sa, "ha-tunnel"):
                return
            if delivered is not None and node.drop_mobility(delivered, "in"):
                return   # a peer's signalling the HA tunnelled to us, lost on purpose
            if delivered is not None:
                self._from_home_agent(delivered, now)
        elif node.peers_on_home_core and upper == ipv6.NH_MOBILITY:
            # CoT / BA from a peer, forwarded by its HA to our care-of address through the SG tunnel.
            if node.drop_mobility(inner, "in"):
                return
            node.counters["mh_rx"] += 1
            node.peer_routing.receive(inner, now, esp_protected=True)
        else:
            node.write_tun(inner)

    def _from_home_agent(self, delivered: bytes, now: float) -> None:
        """A packet out of the HA's tunnel, checked: VCM control, a peer's signalling, or data."""
        node = self.node
        node.counters["from_tunnel"] += 1
        if node.pairs.from_vcm_host(delivered, now):
            return
        if node.peers_on_home_core and mobility_type(delivered) is not None:
            # A peer's HoTI / CoTI / BU / HoT / BA for our home address, tunnelled by the HA.
            node.counters["mh_rx"] += 1
            node.peer_routing.receive_mobility(delivered, now, esp_protected=True)
            return
        if node.peer_routing is not None and node.peer_routing.receive_via_vpn(delivered, now):
            return   # a peer MN's deregistration from inside the office
        node.write_tun(delivered)

    def _receive_direct_ro(self, packet: bytes, now: float) -> None:
        """home-ro: ESP from a peer behind RH2 + HAO. The MN–MN binding check comes first (RFC 6275
        §9.3.1), then the SAD lookup (SPI + our external home address) and the inbound policy."""
        node = self.node
        opened = node.peer_routing.receive_esp(packet, now)
        if opened is None:
            return
        unknown_before = node.processor.counters["unknown_spi"]
        _verdict, _sa, inner = node.processor.inbound(opened)
        if inner is not None:
            node.counters["direct_in"] += 1
            node.write_tun(inner)
        elif node.processor.counters["unknown_spi"] != unknown_before:
            # A configured peer, its home address proven by the binding, sends under an SA this process
            # lacks (we restarted, and the VCM that keyed the pair may have too): the VCM moves it back.
            node.pairs.unkeyed(opened[8:24], now)

    def _external_clear(self, packet: bytes, now: float) -> None:
        """Without ESP: RR messages and BA/BU from correspondents (public ones and peer MNs), data with a
        type 2 routing header (and, from a peer MN, a HAO), or data tunnelled by the external HA."""
        node = self.node
        # RFC 4301 §5.2: nothing in clear may claim a VPN source, the outer header included (a forged
        # tunnel "from the home agent" in the public plan).
        if not self.source_protected(packet, None, "clear"):
            return
        if node.drop_mobility(packet, "in"):
            return
        routing = node.peer_routing
        before = routing.counters["peer_data_in"]
        delivered = routing.receive(packet, now)
        if delivered is not None and self._seed_in(delivered):
            return
        if delivered is not None:
            insecure_path = routing.counters["peer_data_in"] != before
            if not self.source_protected(delivered, None, "clear-decapsulated", insecure_path=insecure_path):
                return
            node.counters["ro_data_in" if insecure_path else "route_optimised_in"] += 1
            node.write_tun(delivered)

    def source_protected(self, packet: bytes, sa, path: str, *, insecure_path: bool = False) -> bool:
        """RFC 4301 §5.2 after decapsulation (``nodeapps.esp.inbound_policy``); a refusal is counted."""
        node = self.node
        if vpn_source_allowed(packet, self.vpn, spd=node.processor.spd, sa=sa, insecure_peers=self.insecure_peers,
                              insecure_path=insecure_path):
            return True
        node.counters["unprotected_vpn_source"] += 1
        whole = len(packet) >= ipv6.HEADER_LEN   # a runt has no addresses to name
        self._emit("unprotected_vpn_source", src=ipv6.ntop(packet[8:24]) if whole else None,
                   dst=ipv6.ntop(packet[24:40]) if whole else None, path=path, sa=sa.name if sa is not None else None)
        return False
