"""Mobile node shell (RFC 6275 §11) around ``nodeapps.mobility.MobileNode``: it wires the rooms below and
keeps what they share (the cores, the peer routing, signalling, timers, status and control requests).

Where to look for a change:

* ``mn_attachment.py`` (``LinkAttachment``; decisions in ``nodeapps/mobility/attachment.py``): movement.
  Router advertisements arrive on a raw ICMPv6 socket, are validated (RFC 4861 §6.1.2) and damped
  (``nodeapps.mobility.router_discovery``). A new (router, prefix) pair is a new link: the node forms its
  care-of address in the prefix with its fixed host id (no DAD: ``nodad``), replaces its default route and
  tells the core ``move_to(care_of)``; the core sends BUs to the security gateway (first: the SG must move
  the tunnel before anything else can pass it) and to the home agent. Only an office announcement on the
  current link that the HA signed (Ed25519; the node holds the public key only), newer than any before and
  fresh makes the node internal; then it puts its home address on the interface, removes the VPN routes into
  the TUN (plain traffic), announces itself with an unsolicited NA and deregisters. A network that only
  copies the office prefix gets no address and no traffic from us. Carrier and address events (netlink).
* ``mn_data_plane.py`` (``DataPlane``; decisions in ``nodeapps/mobility/paths.py``): packets. From the TUN:
  direct SA, route optimisation, or ``core.outgoing`` (reverse tunnel to the HA), then the SPD (the MN–SG
  tunnel SA, whose local end follows the care-of address). From the network: ESP from the SG opened, then a
  mobility message for the core, the HA's IPv6-in-IPv6 tunnel (``core.incoming``, then the TUN), or data;
  the RFC 4301 §5.2 inbound policy after every decapsulation.
* ``mn_pairs.py`` (``DirectPairs``): direct pairs with other MNs, the VCM's (``vcm`` section,
  ``docs/vcm-runtime.md``; ``pair: "home-ro"`` over the MN–MN binding, or ``"care-of"`` between care-of
  addresses) or the mesh's.

Embodiment 1 (``external`` section): a second ``MobileNode`` core registers the external home address with
the public home agent; ``MobilePeerRouting`` (``nodeapps/mobility/mn_to_mn.py``) adds a correspondent core
for that address, so peer MNs named in ``mobile_peers`` get route optimisation both ways (docs/mobility.md).

Embodiment 2 (``mobile_peers`` in the mobility section): the MN–MN route optimisation runs on the main core,
whose home agent is the office HA behind the SG. Signalling that RFC 6275 sends through the HA rides the SG
tunnel like any VPN traffic, and so do CoTI and BU to a peer's home address until we hold its binding; after
that they go straight to its care-of address with a type 2 routing header.
"""
from __future__ import annotations

import ipaddress
import socket
import time

from nodeapps import ipv6
from nodeapps.mobility import MobileNode
from nodeapps.mobility.events import Datagram, Protection
from nodeapps.mobility.mn_to_mn import MobilePeerRouting
from nodeapps.mobility.paths import LinkState, PathSelector
from nodeapps.roles.common import MobilityRuntime, event_fields
from nodeapps.roles.mn_attachment import LinkAttachment
from nodeapps.roles.mn_data_plane import DataPlane
from nodeapps.roles.mn_pairs import DirectPairs
from nodeapps.runtime.mobility import interface_mac
from nodeapps.runtime.netlink import RT_SCOPE_UNIVERSE, default_router, ipv6_addresses, run_ip
from nodeapps.runtime.sections import ExternalSection, MobilePeer, MobilityTimers


# Control commands that break the node on purpose: refused unless its config enables fault injection.
FAULT_COMMANDS = ("forget-peer-binding", "vcm-inject")


class MobileNodeRuntime(MobilityRuntime):
    owned_protocols = (ipv6.NH_ESP, ipv6.NH_DSTOPTS, ipv6.NH_ROUTING, ipv6.NH_IPV6, ipv6.NH_MOBILITY)
    EXTERNAL_TABLE = "200"
    tunnel_via_sg = True   # the office HA, our home agent, is reached only through the SG tunnel

    def setup_role(self) -> None:
        s = self.config.mobile_node   # typed and checked as the config was read (runtime/sections.py)
        self.interface = s.interface
        self.ifindex = socket.if_nametoindex(self.interface)
        self.mac = interface_mac(self.interface)
        self.home_text = s.address
        self.home_prefix = ipaddress.IPv6Network(s.home_prefix)
        self.host_id = s.host_id
        self.sg = ipv6.pton(s.security_gateway)
        self.vpn_prefixes = list(s.vpn_prefixes)
        self.tunnel_sas = list(s.tunnel_sas)
        timers = s.timers
        self.core = MobileNode(self.address, ipv6.pton(s.home_agent), keep_retrying=True,
                               home_lifetime=timers.home_lifetime,
                               initial_bindack_timeout=timers.initial_bindack_timeout,
                               initial_bindack_timeout_first_reg=timers.initial_bindack_timeout_first_reg)
        self.paths = PathSelector()   # link state and the per-packet path (nodeapps/mobility/paths.py)
        self.data = DataPlane(self, self.vpn_prefixes)
        # Before the pairs: the external policy is the configured SPD, without the mesh's rules.
        self.attachment = LinkAttachment(self, s, default_router=lambda: _default_router(self.interface))
        self.pairs = DirectPairs(self)   # direct pairs with other MNs: the VCM's or the mesh's (mn_pairs.py)
        if s.vcm is not None:
            self.pairs.setup_vcm(s.vcm)
        elif s.mesh is not None:
            self.pairs.setup_mesh(s.mesh)
        self.attachment.open()
        now = time.monotonic()
        self.ext_core = None
        self.ext_home = None
        self.peer_routing = None
        if s.external is not None:
            self._setup_external(s.external, timers, now)
        elif s.mobile_peers:
            # Embodiment 2: the peers are route-optimised with the home address itself (main core).
            self._setup_peer_routing(self.core, s.mobile_peers, s.peer_data, now)
        # Embodiment 1: the SG keys our binding by the external home address (the HAO of our BUs to it).
        sg_home = s.sg_home_address
        self.core.register_with(self.sg, now, home_address=ipv6.pton(sg_home) if sg_home else None)
        self.attachment.start(_global_addresses(self.interface), now)
        self.flush_core(now)

    def _setup_external(self, external: ExternalSection, timers: MobilityTimers, now: float) -> None:
        """Embodiment 1: the external home address, served by a home agent on the public side, and route
        optimisation with public correspondents. Traffic from that address goes into the TUN by a
        source rule, so the core can tunnel it or give it a Home Address option."""
        self.ext_home = ipv6.pton(external.address)
        self.ext_core = MobileNode(self.ext_home, ipv6.pton(external.home_agent), keep_retrying=True,
                                   home_lifetime=timers.home_lifetime,
                                   initial_bindack_timeout=timers.initial_bindack_timeout)
        for peer in external.peers:
            self.add_transport_peer(peer, self.ext_core)
        if external.tunnel_peer is not None:
            self.add_tunnel_peer(external.tunnel_peer, self.ext_core)
        run_ip("-6", "rule", "add", "from", external.address, "lookup", self.EXTERNAL_TABLE, "priority", "100")
        run_ip("-6", "route", "replace", "default", "dev", self.config.tun_name, "table", self.EXTERNAL_TABLE)
        for correspondent in external.correspondents:
            self.ext_core.start_route_optimisation(ipv6.pton(correspondent), now)
        # Other MNs as correspondents, and we as theirs (docs/mobility.md, "Route optimisation between
        # mobile nodes"): their internal home addresses are reached through their external ones.
        self._setup_peer_routing(self.ext_core, external.mobile_peers, external.peer_data, now)

    def _setup_peer_routing(self, core: MobileNode, mobile_peers: tuple[MobilePeer, ...], peer_data: str,
                            now: float) -> None:
        """Route optimisation with peer MNs on ``core``'s home address. "vcm-esp": the peers are VCM peers;
        RR starts with their KEYS, and data rides only in the VCM's SA."""
        peers = {ipv6.pton(p.internal): ipv6.pton(p.external) for p in mobile_peers}
        self.peer_routing = MobilePeerRouting(core, peers)
        self.peer_data = peer_data
        if self.peer_data == "clear":
            self.paths.clear_ro_source = self.address
            self.peer_routing.start(now)
            # The documented insecure route optimisation: its peers' data arrives in clear (docs/mobility.md).
            self.data.insecure_peers = frozenset(peers)
        self.peer_names = {ipv6.pton(p.internal): p.name or p.internal for p in mobile_peers}
        self.counters.update({"ro_data_out": 0, "ro_data_in": 0})

    # ---- what the rooms share ----
    @property
    def state(self) -> LinkState:
        return self.paths.state

    @property
    def care_of(self) -> str | None:
        """Our care-of address (text), configured on the interface while away."""
        return self.attachment.care_of

    @property
    def policy_internal(self) -> bool:
        """The SPD holds the internal (plain) policy."""
        return self.attachment.policy_internal

    @property
    def direct_out(self) -> set[bytes]:
        """Peer home addresses with a direct outbound rule (the selector's set)."""
        return self.paths.direct_out

    @direct_out.setter
    def direct_out(self, peers: set[bytes]) -> None:
        self.paths.direct_out = set(peers)

    @property
    def peers_on_home_core(self) -> bool:
        """Embodiment 2: MN–MN route optimisation on the main core, whose home agent sits behind the SG."""
        return self.peer_routing is not None and self.peer_routing.mobile is self.core

    def protect_and_send(self, packet: bytes, description: str) -> None:
        self.data.protect_and_send(packet, description)

    def _send_out(self, packet: bytes) -> None:
        self.data.send_out(packet)

    def on_network(self, sock, now: float) -> None:
        self.data.receive(sock, now)

    def on_control(self, request: dict) -> dict:
        if request.get("cmd") in FAULT_COMMANDS:
            self.check_fault_injection()
        if request.get("cmd") == "forget-peer-binding" and self.peer_routing is not None:
            # Fault injection: lose the binding a peer MN registered with us, as after an early expiry or a
            # restart; the peer's next route-optimised packet then meets RFC 6275 §9.3.1's Binding Error.
            try:
                home = ipv6.pton(str(request.get("home_address", "")))
            except ValueError:
                raise ValueError(f"home_address {request.get('home_address')!r}: not an IPv6 address") from None
            removed = self.peer_routing.correspondent.cache.remove(home) is not None
            self.log.emit(time.time(), "peer_binding_forgotten", home_address=ipv6.ntop(home), removed=removed)
            return {"removed": removed}
        if request.get("cmd") == "vcm-inject" and self.pairs.agent is not None:
            # Fault injection for experiments and tests: arbitrary bytes as a control datagram, sent the way
            # the agent's own messages go (the receiver's checks are what is under test).
            data = bytes.fromhex(str(request.get("data", "")))
            self.log.emit(time.time(), "vcm_injected", bytes=len(data))
            self.pairs.send_to_vcm(data)
            return {"sent": len(data), "state": self.state.value}
        return super().on_control(request)

    def close(self) -> None:
        for room in (getattr(self, "attachment", None), getattr(self, "pairs", None)):
            if room is not None:
                room.close()
        super().close()

    # ---- signalling ----
    def send_datagram(self, datagram, now: float) -> None:
        if self.drop_mobility(datagram.packet, "out"):
            return
        if self.peer_routing is not None and datagram.protection is Protection.NONE:
            # CoTI / BU to a peer MN whose binding we hold: type 2 routing header to its care-of address.
            datagram = Datagram(self.peer_routing.route_mobility(datagram.packet, now), datagram.protection,
                                datagram.esp_peer, datagram.description)
        # HoTI / HoT / CoT reverse-tunnelled to the office HA ride the MN–SG tunnel SA (the SPD below).
        protection = "vpn" if self.carried_by_vpn(datagram) else datagram.protection.value
        packet = self.seal_for(datagram)
        if packet is None:
            return
        self.counters["mh_tx"] += 1
        # bytes: the message's IPv6 packet with its own ESP (if any), before the SG tunnel wraps it
        self.log.emit(time.time(), "mobility_sent", what=datagram.description, dst=ipv6.ntop(datagram.dst),
                      protection=protection, bytes=len(packet))
        if self.state is LinkState.AWAY:
            self.protect_and_send(packet, datagram.description)  # to the HA: inside the SG tunnel
        elif self.state is LinkState.HOME:
            self.send_raw(packet, datagram.description)

    def flush_core(self, now: float) -> None:
        cores = [self.core] + ([self.ext_core] if self.ext_core is not None else [])
        for core in cores:
            # The SG first: until it has moved the tunnel, the BU to the HA cannot pass it.
            datagrams = sorted(core.datagrams_to_send(now), key=lambda d: d.dst != self.sg)
            for datagram in datagrams:
                self.send_datagram(datagram, now)
            for event in core.pop_events():
                name, fields = event_fields(event)
                if core is self.ext_core:
                    fields["home"] = "external"
                self.log.emit(time.time(), name, **fields)
            for datagram in core.datagrams_to_send(now):
                self.send_datagram(datagram, now)
        if self.peer_routing is not None:
            # Our correspondent side (HoT, CoT, BA to peer MNs), already routed from the home address.
            home = "internal" if self.peers_on_home_core else "external"
            for event in self.peer_routing.correspondent.pop_events():
                name, fields = event_fields(event)
                self.log.emit(time.time(), name, role="correspondent", home=home, **fields)
            for datagram in self.peer_routing.datagrams_to_send(now):
                self.send_datagram(datagram, now)

    # ---- timers and status ----
    def next_timer(self):
        cores = [self.core.get_timer(), self.attachment.presence.get_timer(), self.pairs.next_timer()]
        if self.ext_core is not None:
            cores.append(self.ext_core.get_timer())
        if self.peer_routing is not None:
            cores.append(self.peer_routing.correspondent.get_timer())
        times = [t for t in cores if t is not None]
        return min(times, default=None)

    def on_timer(self, now: float) -> None:
        self.attachment.on_timer(now)
        self.core.handle_timer(now)
        if self.ext_core is not None:
            self.ext_core.handle_timer(now)
        if self.peer_routing is not None:
            self.peer_routing.correspondent.handle_timer(now)
        self.flush_core(now)
        self.pairs.on_timer(now)

    def registered(self) -> bool:
        """Every binding the MN keeps away from home (HA, SG, external HA) holds the current care-of."""
        return self.core.registered_everywhere() and (self.ext_core is None or self.ext_core.registered_everywhere())

    def status(self) -> dict:
        out = super().status()
        out["mobility"].update({"state": self.state.value, "care_of_address": self.care_of,
                                "prefix": self.attachment.tracker.prefix,
                                "location": self.attachment.presence.location.value,
                                "home_registered": self.core.home_registered(),
                                "registered": self.registered()})
        now = time.monotonic()
        if self.ext_core is not None:
            out["mobility"]["external"] = {"home_registered": self.ext_core.home_registered(),
                                           "counters": dict(self.ext_core.counters)}
        if self.peer_routing is not None and self.peer_routing.peers:
            out["mobility"]["peers"] = [
                {"peer": self.peer_names.get(internal), "internal": ipv6.ntop(internal),
                 "external": ipv6.ntop(external), "optimised": self.peer_routing.ready(external, now),
                 "peer_care_of": (lambda c: ipv6.ntop(c) if c else None)(
                     self.peer_routing.correspondent.route(external, now))}
                for internal, external in self.peer_routing.peers.items()]
            out["mobility"]["peer_counters"] = dict(self.peer_routing.counters)
        out.update(self.pairs.status(now))
        return out


def _global_addresses(interface: str) -> list[str]:
    return [address for _index, address, _length, scope in ipv6_addresses(interface) if scope == RT_SCOPE_UNIVERSE]


def _default_router(interface: str) -> str | None:
    return default_router(interface)
