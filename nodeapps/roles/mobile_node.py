"""Mobile node shell (RFC 6275 §11) around ``nodeapps.mobility.MobileNode`` and ``PresenceDetector``.

Movement: router advertisements arrive on a raw ICMPv6 socket. A new (router, prefix) pair is a new link:
the node forms its care-of address in the prefix with its fixed host id (no DAD: ``nodad``), replaces its
default route and tells the core ``move_to(care_of)``; the core sends BUs to the security gateway (first:
the SG must move the tunnel before anything else can pass it) and to the home agent. Inside or outside:
only an office announcement on the current link that the HA signed (Ed25519; the node holds the public key
only) and that is newer than any before and fresh makes the node internal; then it puts
its home address on the interface, removes the VPN routes into the TUN (plain traffic), announces itself
with an unsolicited NA and deregisters (``move_to(home_address)``). A network that only copies the office
prefix gets no address and no traffic from us. Router advertisements are validated (RFC 4861 §6.1.2: link-
local source, hop limit 255) and damped (``nodeapps.mobility.router_discovery``): one link decision per
carrier change, or per new router once the current one has gone quiet, with a hold-down.

Inbound policy after every decapsulation (RFC 4301 §5.2, ``nodeapps.esp.inbound_policy``): whatever the
HA's tunnel, a type 2 routing header or a Home Address option hands over must have a non-VPN source or
have come out of the ESP SA that the SPD names for it; clear packets claiming a VPN source are dropped
(``unprotected_vpn_source``), except the insecure route optimisation's data from its own peers.

Data: packets from the home address read from the TUN go to ``core.outgoing`` (reverse tunnel to the HA)
and then through the SPD (the MN–SG tunnel SA, whose local end follows the care-of address). ESP from
the SG is opened, and what comes out is either a mobility message (ESP transport from the HA, for the
core) or the HA's IPv6-in-IPv6 tunnel (``core.incoming``, then into the TUN).

Embodiment 1 (``external`` section): a second ``MobileNode`` core registers the external home address with
the public home agent; ``MobilePeerRouting`` (``nodeapps/mobility/mn_to_mn.py``) adds a correspondent core
for that address, so peer MNs named in ``mobile_peers`` get route optimisation both ways, and packets
between internal home addresses ride care-of to care-of once both bindings exist (docs/mobility.md).

VCM (``vcm`` section, see ``docs/vcm-runtime.md``) and mesh pairs: ``DirectPairs`` (``mn_pairs.py``) runs
the ``MobileAgent`` (KEYS / PEER_READY / FALLBACK as UDP from the SG inside the SG tunnel SA, or from the
VCM host), applies its SA and SPD operations and follows the peers' care-of addresses; this shell asks it
and carries the packets. Home-address packets for a peer with a direct outbound rule skip the reverse
tunnel and go straight through the SPD. Two kinds of direct pair:

* ``pair: "home-ro"`` (default): tunnel-mode SAs between the two route-optimised home addresses (the
  external ones in embodiment 1, the home addresses themselves in embodiment 2), carried over the MN–MN
  route-optimised binding (``MobilePeerRouting.route_esp`` / ``receive_esp``: HAO and RH2 in front of ESP).
  The KEYS start return routability with the peer; until both bindings exist, nothing leaves on the direct
  SA (the packet takes the SG path). Moves are followed by the nodes' own BUs.
* ``pair: "care-of"`` (option): tunnel-mode SAs between the two care-of addresses; their local
  end follows our care-of address on a move, their remote end the care-of notices the SG sends.

Embodiment 2 (``mobile_peers`` in the mobility section): the MN–MN route optimisation runs on the main core,
whose home agent is the office HA behind the SG. Signalling that RFC 6275 sends through the HA (HoTI, and
HoT / CoT / BA while the peer holds no binding of ours) rides the SG tunnel like any VPN traffic, and so do
CoTI and BU to a peer's home address until we hold its binding; after that they go straight to its care-of
address with a type 2 routing header.
"""
from __future__ import annotations

import ipaddress
import socket
import time

from nodeapps import ipv6
from nodeapps.esp.inbound_policy import VpnPrefixes, vpn_source_allowed
from nodeapps.mobility import MobileNode, PresenceDetector
from nodeapps.mobility import announcement
from nodeapps.mobility.router_discovery import MovementDamper, RaDecision, ra_invalid_reason
from nodeapps.mobility.events import Datagram, Protection
from nodeapps.mobility.mn_to_mn import MobilePeerRouting, mobility_type
from nodeapps.mobility.paths import LinkState, PathSelector, Route
from nodeapps.mobility import messages as mh
from nodeapps.mobility.location import Location
from nodeapps.roles.common import MobilityRuntime, event_fields
from nodeapps.roles.mn_pairs import DirectPairs
from nodeapps.runtime.mobility import (
    RouterAdvertisementError, care_of_address, esp_spi, interface_mac, move_sa,
    open_router_advertisement_socket, parse_router_advertisement, receive_router_advertisement, send_unsolicited_na,
)
from nodeapps.runtime.mobility import address_hint, send_router_solicitation
from nodeapps.runtime.netlink import (
    RT_SCOPE_UNIVERSE, default_router, ipv6_addresses, open_link_monitor, parse_address_messages,
    parse_link_messages, run_ip, run_ip6_batch,
)
from nodeapps.runtime.packet_io import ETH_HEADER_LEN, open_capture
from nodeapps.runtime.sections import ExternalSection, MobilePeer, MobilityTimers


# Control commands that break the node on purpose: refused unless its config enables fault injection.
FAULT_COMMANDS = ("forget-peer-binding", "vcm-inject")
EARLY_PROOF_S = 0.5   # an announcement heard before the link's RA counts for that link this long


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
        self.presence = PresenceDetector(announcement_lifetime=s.announcement_lifetime)
        announce = s.announcement
        self.announce_key = announcement.load_public_key(announce["public_key"]) if announce else None
        self.announce_max_age = float(announce.get("max_age", announcement.MAX_AGE_S)) if announce else 0.0
        self.announce_last = None   # (timestamp, counter) of the last accepted announcement
        self.damper = MovementDamper()
        self.vpn = VpnPrefixes(self.vpn_prefixes)
        self.insecure_peers: frozenset = frozenset()   # peer_data "clear": the peers' internal home addresses
        self.counters.update({"ra_rx": 0, "ra_invalid": 0, "ra_damped": 0, "announcements_ok": 0,
                              "announcements_bad": 0, "announcements_stale": 0,
                              "reverse_tunnelled": 0, "from_tunnel": 0, "route_optimised": 0,
                              "route_optimised_in": 0, "unprotected_vpn_source": 0})
        self.link = None          # (router, prefix) we are attached to
        self.prefix = None
        self.router = None
        self.care_of = None       # text, configured on the interface
        self.paths = PathSelector()   # link state and the per-packet path (nodeapps/mobility/paths.py)
        # RFC 4301 policies for the two verdicts: outside, VPN traffic only through the SG tunnel (the
        # configured rules); inside, plain. Switched in one SPD step on each decision.
        self.external_rules = list(self.processor.spd.rules)
        self.internal_rules = [{"name": f"internal-{d}-{i}", "direction": d, "src": "::/0" if d == "out" else p,
                                "dst": p if d == "out" else "::/0", "action": "bypass"}
                               for i, p in enumerate(self.vpn_prefixes) for d in ("out", "in")]
        self.policy_internal = False
        self.pairs = DirectPairs(self)   # direct pairs with other MNs: the VCM's or the mesh's (mn_pairs.py)
        if s.vcm is not None:
            self.pairs.setup_vcm(s.vcm)
        elif s.mesh is not None:
            self.pairs.setup_mesh(s.mesh)
        self.ra_sock = open_router_advertisement_socket()
        self._watch(self.ra_sock.fileno(), self.on_router_advertisement)
        self.link_monitor = open_link_monitor(addresses=True)
        self.counters.update({"rs_tx": 0, "address_hints": 0})
        self.rs_pending = False   # carrier back, RS not sent yet (no source address yet)
        self.carrier = True
        self.early_proof = None   # time of an authentic announcement heard before the RA named the link
        self._watch(self.link_monitor.fileno(), self.on_link_change)
        self.beacon = open_capture(self.interface, (announcement.NEXT_HEADER,), rcvbuf=1 << 20, host_only=False)
        self._watch(self.beacon.fileno(), self.on_beacon)
        now = time.monotonic()
        self.ext_core = None
        self.ext_home = None
        self.peer_routing = None
        self.ro_direct: set[bytes] = set()     # peers' internal home addresses now reached care-of to care-of
        if s.external is not None:
            self._setup_external(s.external, timers, now)
        elif s.mobile_peers:
            # Embodiment 2: the peers are route-optimised with the home address itself (main core).
            self._setup_peer_routing(self.core, s.mobile_peers, s.peer_data, now)
        # Embodiment 1: the SG keys our binding by the external home address (the HAO of our BUs to it).
        sg_home = s.sg_home_address
        self.core.register_with(self.sg, now, home_address=ipv6.pton(sg_home) if sg_home else None)
        # Where the lab put us: an address in a visited prefix means we are away already.
        for address in _global_addresses(self.interface):
            prefix = ipaddress.IPv6Network(f"{address}/64", strict=False)
            if ipaddress.IPv6Address(address) != ipaddress.IPv6Address(self.home_text):
                self.link = ("initial", str(prefix))
                self.presence.link_up(self.link, now)
                self.prefix, self.router = str(prefix), _default_router(self.interface)
                self._go_away(now)
                break
        else:
            self.paths.enter(LinkState.HOME_UNPROVEN)
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
            self.insecure_peers = frozenset(peers)
        self.peer_names = {ipv6.pton(p.internal): p.name or p.internal for p in mobile_peers}
        self.counters.update({"ro_data_out": 0, "ro_data_in": 0})

    @property
    def state(self) -> LinkState:
        return self.paths.state

    @property
    def direct_out(self) -> set[bytes]:
        """Peer home addresses with a direct outbound rule (the selector's set)."""
        return self.paths.direct_out

    @direct_out.setter
    def direct_out(self, peers: set[bytes]) -> None:
        self.paths.direct_out = set(peers)

    def _peer_ready(self, destination: bytes) -> bool:
        """Both MN–MN bindings with the peer MN of this internal home address are live."""
        peer = self.peer_routing.peers.get(destination) if self.peer_routing is not None else None
        return peer is not None and self.peer_routing.ready(peer, time.monotonic())

    @property
    def peers_on_home_core(self) -> bool:
        """Embodiment 2: MN–MN route optimisation on the main core, whose home agent sits behind the SG."""
        return self.peer_routing is not None and self.peer_routing.mobile is self.core

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
        for sock in (getattr(self, "ra_sock", None), getattr(self, "beacon", None),
                     getattr(self, "link_monitor", None)):
            if sock is not None:
                sock.close()
        if getattr(self, "pairs", None) is not None:
            self.pairs.close()
        super().close()

    # ---- movement ----
    def on_router_advertisement(self, now: float) -> None:
        for _ in range(16):
            try:
                message, source, ifindex, hop_limit = receive_router_advertisement(self.ra_sock)
            except BlockingIOError:
                return
            except OSError:  # e.g. ENETDOWN while the link is down (a move)
                return
            if ifindex != self.ifindex:
                continue
            self.counters["ra_rx"] += 1
            # RFC 4861 §6.1.2: validate before any use (link-local source, hop limit 255, code, lengths).
            reason = ra_invalid_reason(message, source, hop_limit)
            if reason is None:
                try:
                    ra = parse_router_advertisement(message, source)
                except RouterAdvertisementError as exc:
                    reason = str(exc)
            if reason is not None:
                self.counters["ra_invalid"] += 1
                self.log.emit(time.time(), "ra_invalid", router=source, hop_limit=hop_limit, reason=reason)
                continue
            prefixes = [p for p, autonomous in ra.prefixes if autonomous] or [p for p, _ in ra.prefixes]
            if not prefixes or ra.router_lifetime == 0:
                continue
            link = (ra.router, prefixes[0])
            # RFC 6275 §11.5.1: while the current router keeps advertising, others do not move us.
            decision = self.damper.router_advertisement(link, ra.router, now, ra.interval_ms)
            if decision is RaDecision.DAMPED and link != self.link:
                self.counters["ra_damped"] += 1
                self.log.emit(time.time(), "ra_damped", router=ra.router, prefix=prefixes[0],
                              current=self.link[0] if self.link else None)
                continue
            if link == self.link:
                continue
            if self.link == ("address", prefixes[0]):
                self._adopt_router(link, now)
                continue
            self.log.emit(time.time(), "new_link", router=ra.router, prefix=prefixes[0],
                          previous=self.prefix, adv_interval_ms=ra.interval_ms)
            self.link, self.prefix, self.router = link, prefixes[0], ra.router
            self.presence.link_up(link, now)
            if self.early_proof is not None and now - self.early_proof < EARLY_PROOF_S:
                self.presence.office_announcement(link, True, now)
            self.early_proof = None
            self._apply_location(now)
            self.flush_core(now)

    def on_link_change(self, now: float) -> None:
        """Netlink: carrier changes and IPv6 address changes of this namespace."""
        for _ in range(16):
            try:
                data = self.link_monitor.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for index, up in parse_link_messages(data):
                if index == self.ifindex:
                    self._carrier(up, now)
            for change in parse_address_messages(data):
                self._address_changed(change, now)

    def _carrier(self, up: bool, now: float) -> None:
        """Carrier lost: whatever network comes next is unproven until its RA (and announcement) say
        otherwise, so drop the internal verdict and the plain policy at once. Carrier back: solicit an RA
        instead of waiting up to MaxRtrAdvInterval (RFC 6275 §11.5.1: a link-layer event may start movement
        detection; the RFC 4861 §6.3.7 random delay spreads many hosts' RSs, there is one host per event)."""
        if up:
            if not self.carrier:
                self.carrier = True
                self.damper.carrier_changed(now)
                self.rs_pending = True
                self._solicit()
            return
        if not self.carrier:
            return
        self.carrier = False
        self.damper.carrier_changed(now)
        self.early_proof = None
        self.log.emit(time.time(), "carrier_lost", interface=self.interface)
        if self.link is not None:
            self.link = None
            self.presence.link_down(now)
            for change in self.presence.pop_events():
                self.log.emit(time.time(), "location", location=change.location.value, reason=change.reason)
        if self.state is LinkState.HOME:
            run_ip("-6", "addr", "del", f"{self.home_text}/{self.home_prefix.prefixlen}", "dev",
                   self.interface)
            for prefix in self.vpn_prefixes:
                run_ip("-6", "route", "replace", prefix, "dev", self.config.tun_name)
            self._switch_policy(internal=False)
            self.paths.enter(LinkState.DETACHED)

    def _solicit(self) -> None:
        if not self.rs_pending:
            return
        error = send_router_solicitation(self.interface)
        if not error:
            self.rs_pending = False
            self.counters["rs_tx"] += 1
        self.log.emit(time.time(), "router_solicitation", error=error or None)

    def _address_changed(self, change, now: float) -> None:
        """RTM_NEWADDR / RTM_DELADDR (``runtime.mobility.address_hint`` decides; our own addresses never
        count, so what we do here cannot trigger us again)."""
        if change.added and change.ifindex == self.ifindex and self.rs_pending:
            self._solicit()   # the link-local address is back: the RS can leave now
        verdict, prefix = address_hint(change, ifindex=self.ifindex, host_id=self.host_id, home=self.home_text,
                                       care_of=self.care_of, prefix=self.prefix)
        if verdict == "ignore":
            return
        if verdict == "lost" and not _carrier_up(self.interface):
            return   # the kernel drops addresses with the carrier; the carrier event handles that
        self.counters["address_hints"] += 1
        self.log.emit(time.time(), "address_hint", verdict=verdict, address=change.address, prefix=prefix,
                      current_prefix=self.prefix)
        if verdict == "lost":
            # Our care-of address is gone (not by us): detect again from the next RA, which we ask for.
            self.link = None
            self.damper.link_lost(now)
            self.presence.link_down(now)
            self.presence.pop_events()
            self.rs_pending = True
            self._solicit()
            return
        if self.state is LinkState.HOME or ipaddress.IPv6Network(prefix) == self.home_prefix:
            # The office verdict rests on announcements only: a second prefix there is no reason to leave,
            # and an office-prefix address is no proof. Ask the routers what this link is.
            self.rs_pending = True
            self._solicit()
            return
        # A prefix no router announced to us (DHCPv6, an operator, renumbering): our care-of address moves
        # into it. With a known link (router) it is that link, and its RAs of the older prefix do not move
        # us back; without one it is a link of its own until an RA names the router.
        if self.link is None:
            self.link = ("address", prefix)
            self.router = self.router or _default_router(self.interface)
        self.prefix = prefix
        self.presence.link_up(self.link, now)
        self._apply_location(now)
        self.flush_core(now)

    def _adopt_router(self, link, now: float) -> None:
        """The RA for a prefix we already use from an address hint: same link, now with its router."""
        self.link, self.router = link, link[0]
        self.presence.link_up(link, now)
        self.presence.pop_events()
        run_ip("-6", "route", "replace", "default", "via", self.router, "dev", self.interface)

    def on_beacon(self, now: float) -> None:
        for _ in range(16):
            try:
                frame = self.beacon.recv(2048)
            except BlockingIOError:
                return
            except OSError:  # e.g. ENETDOWN while the link is down (a move)
                return
            packet = frame[ETH_HEADER_LEN:]
            if len(packet) < 40 or packet[24] != 0xFF:
                continue
            authentic = self._check_announcement(packet)
            if self.link is None:
                if authentic and self.carrier:
                    self.early_proof = now   # our RS prompted it, ahead of the RA: same link, no carrier loss since
                continue
            before = self.presence.location
            self.presence.office_announcement(self.link, authentic, now)
            if self.presence.location is not before:
                self._apply_location(now)
                self.flush_core(now)

    def _check_announcement(self, packet: bytes) -> bool:
        """Signed by the HA, for our office prefix, newer than the last one we accepted and fresh."""
        if self.announce_key is None:
            self.counters["announcements_bad"] += 1
            return False
        checked = announcement.verify(self.announce_key, packet, time.time(), self.announce_last,
                                      self.announce_max_age)
        if checked.verdict is announcement.Verdict.OK and checked.prefix != self.home_prefix.network_address.packed:
            checked = announcement.Checked(announcement.Verdict.BAD, "another prefix")
        if checked.verdict is announcement.Verdict.OK:
            self.announce_last = checked.stamp
            self.counters["announcements_ok"] += 1
            return True
        stale = checked.verdict is announcement.Verdict.STALE
        self.counters["announcements_stale" if stale else "announcements_bad"] += 1
        self.log.emit(time.time(), "announcement_refused", reason=checked.reason, source=ipv6.ntop(packet[8:24]))
        return False

    def _apply_location(self, now: float) -> None:
        for change in self.presence.pop_events():
            self.log.emit(time.time(), "location", location=change.location.value, reason=change.reason)
        if self.presence.location is Location.INTERNAL:
            self._go_home(now)
        elif ipaddress.IPv6Network(self.prefix) == self.home_prefix:
            self._go_dark(now)
        else:
            self._go_away(now)

    def _go_away(self, now: float) -> None:
        coa = care_of_address(self.prefix, self.host_id)
        # One `ip` process for all of it: the BU waits for these (benchmarks/README.md, handover gap).
        commands = [("addr", "replace", f"{coa}/64", "dev", self.interface, "nodad")]
        if self.router:
            commands.append(("route", "replace", "default", "via", self.router, "dev", self.interface))
        needed = len(commands)
        commands += [("route", "replace", prefix, "dev", self.config.tun_name) for prefix in self.vpn_prefixes]
        if self.state in (LinkState.HOME, LinkState.HOME_UNPROVEN):
            commands.append(("addr", "del", f"{self.home_text}/{self.home_prefix.prefixlen}", "dev", self.interface))
        if self.care_of and self.care_of != coa:
            commands.append(("addr", "del", f"{self.care_of}/64", "dev", self.interface))  # often gone already
        error = next((e for e in run_ip6_batch(*commands)[:needed] if e), "")
        for name in self.tunnel_sas:
            sa = self.processor.sad.get(name)
            if sa is not None:
                move_sa(self.processor.sad, name, local=coa)
        for tunnel in self.tunnel_peers.values():
            tunnel.move(local=coa, remote=ipv6.ntop(tunnel.address))
        self.pairs.moved(coa, now)
        self._switch_policy(internal=False)
        self.care_of = coa
        self.paths.enter(LinkState.AWAY)
        self.pairs.reachable(now)
        self.log.emit(time.time(), "care_of_address", address=coa, error=error or None)
        self.core.move_to(ipv6.pton(coa), now)
        if self.ext_core is not None:
            self.ext_core.move_to(ipv6.pton(coa), now)

    def _go_home(self, now: float) -> None:
        self.pairs.returned_inside(now)   # direct outbound goes before anything leaves in clear
        if self.care_of:
            run_ip("-6", "addr", "del", f"{self.care_of}/64", "dev", self.interface)
        for prefix in self.vpn_prefixes:
            run_ip("-6", "route", "del", prefix, "dev", self.config.tun_name)
        run_ip("-6", "addr", "replace", f"{self.home_text}/{self.home_prefix.prefixlen}", "dev", self.interface,
               "nodad")
        if self.router:
            run_ip("-6", "route", "replace", "default", "via", self.router, "dev", self.interface)
        self._switch_policy(internal=True)
        send_unsolicited_na(self.interface, self.home_text, self.mac)  # RFC 6275 §11.5.4
        self.care_of = None
        self.paths.enter(LinkState.HOME)
        self.log.emit(time.time(), "home", address=self.home_text)
        if self.peer_routing is not None:
            # Inside, the peers cannot be reached in clear: their binding of our route-optimised home address
            # is deleted with a BU carried through the VPN (office HA, SG tunnel). Built before the core
            # learns it is home, so that it does not start a return-routability deregistration of its own.
            for packet in self.peer_routing.deregistrations(self.address, now):
                if self.drop_mobility(packet, "out"):
                    continue
                self.log.emit(time.time(), "mobility_sent", what="BU lifetime 0 via the VPN",
                              dst=ipv6.ntop(packet[24:40]), protection="vpn")
                self.send_raw(packet, "deregistration via the VPN")
        self.core.move_to(self.address, now)

    def _go_dark(self, now: float) -> None:
        """An office prefix without proof: no address, so nothing can leave in clear; VPN routes stay in
        the TUN, where the SPD would send them only under ESP."""
        if self.care_of:
            run_ip("-6", "addr", "del", f"{self.care_of}/64", "dev", self.interface)
        if self.state in (LinkState.HOME, LinkState.HOME_UNPROVEN):
            run_ip("-6", "addr", "del", f"{self.home_text}/{self.home_prefix.prefixlen}", "dev", self.interface)
        for prefix in self.vpn_prefixes:
            run_ip("-6", "route", "replace", prefix, "dev", self.config.tun_name)
        self._switch_policy(internal=False)
        self.care_of = None
        self.paths.enter(LinkState.UNPROVEN)
        self.log.emit(time.time(), "office_prefix_unproven", prefix=self.prefix)

    def _switch_policy(self, *, internal: bool) -> None:
        if internal == self.policy_internal:
            return
        rules = self.internal_rules if internal else self.pairs.rules + self.external_rules
        self.processor.spd.set_rules(rules)  # one step
        self.policy_internal = internal
        self.log.emit(time.time(), "spd_switched", policy="internal" if internal else "external")

    # ---- data plane ----
    def _send_out(self, packet: bytes) -> None:
        counters = self.counters
        route = self.paths.outbound(packet, self._peer_ready)
        if route is Route.IGNORE:
            counters["tun_ignored"] += 1
            return
        if route is Route.BYPASS:
            counters["bypass_from_tun"] += 1  # home: plain routes; unproven: nothing leaves
            return
        peer = packet[24:40]
        if route is Route.DIRECT_SA:
            counters["direct_out"] += 1   # VCM direct SA: no reverse tunnel, the SPD picks the /128 rule
            self.pairs.log_direct(peer, True)
            self.protect_and_send(packet, "direct")
            return
        if route is Route.DIRECT_RO:
            self._send_direct_ro(packet)
            return
        if route is Route.AWAIT_BINDING:
            self.pairs.log_direct(peer, False)   # no MN–MN binding (yet): the SG path below
        if route is Route.RO_WRAP:
            wire = self.peer_routing.wrap(packet, time.monotonic())
            if wire is not None:
                counters["ro_data_out"] += 1
                if peer not in self.ro_direct:
                    self.ro_direct.add(peer)
                    self.log.emit(time.time(), "data_first_direct", dst=ipv6.ntop(peer), path="mipv6-ro")
                self.protect_and_send(wire, "data route-optimised")
                return
        if peer in self.ro_direct and packet[8:24] == self.paths.clear_ro_source:
            self.ro_direct.discard(peer)
            self.log.emit(time.time(), "data_via_sg", dst=ipv6.ntop(peer), reason="no route optimisation")
        core = self.ext_core if self.ext_core is not None and packet[8:24] == self.ext_home else self.core
        # Peers on the home core: their traffic is in the direct SA or wrapped above, or else reverse-tunnelled
        # into the SG tunnel; never HAO data towards a home address (the HA would deliver it to a peer's
        # TUN with the option still in it), and never HAO data in clear for a VCM peer.
        datagram = core.outgoing(packet, time.monotonic(), route_optimise=not self.peers_on_home_core)
        counters["reverse_tunnelled" if datagram.packet[6] == ipv6.NH_IPV6 else "route_optimised"] += 1
        self.protect_and_send(datagram.packet, datagram.description)

    def _send_direct_ro(self, packet: bytes) -> None:
        """home-ro, both MN–MN bindings live (the selector checked): seal with the direct SA (outer: the
        external home addresses), then send it care-of to care-of with HAO + RH2."""
        verdict, sa, out = self.processor.outbound(packet)
        if out is None or verdict != "protect" or not sa.name.startswith("vcm-"):
            return   # refused by the SPD (counted there)
        wire = self.peer_routing.route_esp(out, time.monotonic())
        if wire is None:
            self.counters["vcm_op_errors"] += 1
            return
        self.counters["direct_out"] += 1
        self.pairs.log_direct(packet[24:40], True)
        self.send_raw(wire, "vcm direct")

    def _receive_direct_ro(self, packet: bytes, now: float) -> None:
        """home-ro: ESP from a peer behind RH2 + HAO. The MN–MN binding check comes first (RFC 6275
        §9.3.1), then the SAD lookup (SPI + our external home address) and the inbound policy."""
        opened = self.peer_routing.receive_esp(packet, now)
        if opened is None:
            return
        unknown_before = self.processor.counters["unknown_spi"]
        _verdict, _sa, inner = self.processor.inbound(opened)
        if inner is not None:
            self.counters["direct_in"] += 1
            self.write_tun(inner)
        elif self.processor.counters["unknown_spi"] != unknown_before:
            # A configured peer, its home address proven by the binding, sends under an SA this process
            # lacks (we restarted, and the VCM that keyed the pair may have too): the VCM moves it back.
            self.pairs.unkeyed(opened[8:24], now)

    def protect_and_send(self, packet: bytes, description: str) -> None:
        verdict, sa, out = self.processor.outbound(packet)
        if out is None:
            return
        if verdict == "protect":
            self.send_protected(out, sa)  # native or UDP-encapsulated, as the SA says
        else:
            self.send_raw(out, description)

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

    def on_network(self, sock, now: float) -> None:
        processor = self.processor
        for packet in self.received_packets(sock):
            if self.open_mobility(packet, now):
                continue
            spi = esp_spi(packet)
            if spi is not None and spi in self.tunnel_by_spi:
                inner = self.tunnel_by_spi[spi].open(packet)  # HoT (or a peer's HoTI) from the external HA
                if inner is not None and not self.drop_mobility(inner, "in"):
                    self.counters["mh_rx"] += 1
                    self.peer_routing.receive(inner, now, esp_protected=True)
                continue
            if spi is None:
                if self.peer_routing is not None:
                    self._external_clear(packet, now)
                continue
            if self.pairs.vcm_direct and self.pairs.from_vcm_host(packet, now):
                continue
            if self.pairs.agent is not None and self.pairs.vcm_ro and self.peer_routing is not None \
                    and packet[6] != ipv6.NH_ESP:
                self._receive_direct_ro(packet, now)   # ESP behind RH2 + HAO: a VCM peer's direct SA
                continue
            _verdict, sa, inner = processor.inbound(packet)
            if inner is None:
                continue
            if self.pairs.sg_inner is not None and self.pairs.receive_from_sg(sa, inner, now):
                continue
            if self.open_mobility(inner, now):
                continue
            try:
                upper = mh.packet_summary(inner)[2]
            except mh.MobilityParseError:
                upper = None
            if upper == ipv6.NH_IPV6:
                delivered = self.core.incoming(inner, now)
                if delivered is not None and not self._source_protected(delivered, sa, "ha-tunnel"):
                    continue
                if delivered is not None and self.drop_mobility(delivered, "in"):
                    continue   # a peer's signalling the HA tunnelled to us, lost on purpose
                if delivered is not None:
                    self.counters["from_tunnel"] += 1
                    if self.pairs.from_vcm_host(delivered, now):
                        continue
                    if self.peers_on_home_core and mobility_type(delivered) is not None:
                        # A peer's HoTI / CoTI / BU / HoT / BA for our home address, tunnelled by the HA.
                        self.counters["mh_rx"] += 1
                        self.peer_routing.receive_mobility(delivered, now, esp_protected=True)
                        continue
                    if self.peer_routing is not None and self.peer_routing.receive_via_vpn(delivered, now):
                        continue   # a peer MN's deregistration from inside the office
                    self.write_tun(delivered)
            elif self.peers_on_home_core and upper == ipv6.NH_MOBILITY:
                # CoT / BA from a peer, forwarded by its HA to our care-of address through the SG tunnel.
                if self.drop_mobility(inner, "in"):
                    continue
                self.counters["mh_rx"] += 1
                self.peer_routing.receive(inner, now, esp_protected=True)
            else:
                self.write_tun(inner)
        self.flush_core(now)

    def _external_clear(self, packet: bytes, now: float) -> None:
        """Without ESP: RR messages and BA/BU from correspondents (public ones and peer MNs), data with a
        type 2 routing header (and, from a peer MN, a HAO), or data tunnelled by the external HA."""
        # RFC 4301 §5.2: nothing in clear may claim a VPN source, the outer header included (a forged
        # tunnel "from the home agent" in the public plan).
        if not self._source_protected(packet, None, "clear"):
            return
        if self.drop_mobility(packet, "in"):
            return
        before = self.peer_routing.counters["peer_data_in"]
        delivered = self.peer_routing.receive(packet, now)
        if delivered is not None:
            insecure_path = self.peer_routing.counters["peer_data_in"] != before
            if not self._source_protected(delivered, None, "clear-decapsulated", insecure_path=insecure_path):
                return
            if insecure_path:
                self.counters["ro_data_in"] += 1
            else:
                self.counters["route_optimised_in"] += 1
            self.write_tun(delivered)

    def _source_protected(self, packet: bytes, sa, path: str, *, insecure_path: bool = False) -> bool:
        """RFC 4301 §5.2 after decapsulation (``nodeapps.esp.inbound_policy``); a refusal is counted."""
        if vpn_source_allowed(packet, self.vpn, spd=self.processor.spd, sa=sa, insecure_peers=self.insecure_peers,
                              insecure_path=insecure_path):
            return True
        self.counters["unprotected_vpn_source"] += 1
        whole = len(packet) >= ipv6.HEADER_LEN   # a runt has no addresses to name
        self.log.emit(time.time(), "unprotected_vpn_source", src=ipv6.ntop(packet[8:24]) if whole else None,
                      dst=ipv6.ntop(packet[24:40]) if whole else None, path=path,
                      sa=sa.name if sa is not None else None)
        return False

    def next_timer(self):
        cores = [self.core.get_timer(), self.presence.get_timer(), self.pairs.next_timer()]
        if self.ext_core is not None:
            cores.append(self.ext_core.get_timer())
        if self.peer_routing is not None:
            cores.append(self.peer_routing.correspondent.get_timer())
        times = [t for t in cores if t is not None]
        return min(times, default=None)

    def on_timer(self, now: float) -> None:
        before = self.presence.location
        self.presence.handle_timer(now)
        if self.presence.location is not before:
            self._apply_location(now)
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
        out["mobility"].update({"state": self.state.value, "care_of_address": self.care_of, "prefix": self.prefix,
                                "location": self.presence.location.value,
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


def _carrier_up(interface: str) -> bool:
    try:
        with open(f"/sys/class/net/{interface}/carrier", encoding="ascii") as f:
            return f.read().strip() == "1"
    except OSError:  # EINVAL while the interface is administratively down
        return False


def _default_router(interface: str) -> str | None:
    return default_router(interface)
