"""A mobile node's direct pairs with other MNs, and the VCM agent that keys them (docs/vcm-runtime.md).

Two ways to hold a direct pair: the VCM's (``vcm`` section: a ``MobileAgent`` receives KEYS / PEER_READY /
FALLBACK from the SG or the VCM host and answers the same way; this class applies the SA and SPD operations
of every agent event before it sends what the agent queued: inbound installed before the ACK, outbound
switched only on the peer's relayed ACK) or the mesh baseline's (``mesh`` section: a pre-distributed pair
with every peer). Either way the pairs' SAs and SPD rules, the peers' care-of addresses (the SG's notices)
and the set of peers reached directly live here; the mobile node shell (``mobile_node.py``) asks this object
and carries the packets.
"""
from __future__ import annotations

import socket
import time

from nodeapps import ipv6
from nodeapps.esp.processor import MAX_TUNNEL_OVERHEAD
from nodeapps.esp.sa import SecurityAssociation
from nodeapps.mobility.paths import LinkState
from nodeapps.roles import vcm_shell
from nodeapps.roles.common import event_fields
from nodeapps.runtime.faults import VCM_MESSAGES
from nodeapps.runtime.mobility import TransportPeer, TunnelPeer, esp_spi, move_sa
from nodeapps.runtime.packet_io import open_sender
from nodeapps.runtime.sections import MeshSection, VcmSection
from nodeapps.vcm.channel import vcm_control_path
from nodeapps.vcm.mobile_agent import FallBackToSg, InstallInbound, MobileAgent, MobileAgentConfig, SwitchOutbound


class DirectPairs:
    """The direct pairs of the mobile node ``node`` (its shell: processor, counters, log, paths, sending)."""

    def __init__(self, node):
        self.node = node
        self.agent = None          # the VCM's MobileAgent (vcm section)
        self.vcm_peer = None       # our own SA pair with a VCM on its own host
        self.vcm_direct = False    # that pair runs care-of address -> VCM, outside the SG tunnel
        self.vcm_ro = False        # home-ro: the pairs ride the MN–MN binding
        self.vcm_sender = None
        self.ro_started: set[bytes] = set()
        self.ro_pending = False    # KEYS started return routability: flush the cores after the ACK
        self.announce_start = False
        self.rules: list[dict] = []            # peer-specific SPD rules, ahead of the external policy
        self.sa_peer: dict[str, int] = {}      # direct SA name -> peer node id
        self.peer_care_of: dict[int, str] = {}
        self.first_direct_logged: set[bytes] = set()
        self.first_protected_logged: set[bytes] = set()   # peers our packets reached under the pair's SA
        self.sg_inner = None                   # source of the SG's care-of notices (VCM or mesh)
        self.mesh_home: dict[int, bytes] = {}  # mesh: peer node id -> its home address
        self.names: dict[int, str] = {}        # node id -> node name, for the event log

    # ---- set-up ----
    def setup_vcm(self, vcm: VcmSection) -> None:
        node = self.node
        self.vcm_address = vcm.address
        self.vcm_address_bytes = ipv6.pton(vcm.address)
        self.sg_inner = ipv6.pton(vcm.sg_address or vcm.address)   # source of care-of notices
        self.vcm_node_id = vcm.node_id
        self.names = {vcm_shell.VCM_NODE_ID: "vcm", vcm_shell.SG_NODE_ID: "sg", **vcm.names}
        in_sg = vcm.variant == "in-sg"
        # Separate VCM host: our own ESP SA pair with it, either a transport pair nested in the SG tunnel
        # on the way out, or (embodiment 2, "direct") a tunnel pair from the care-of address to the VCM.
        self.vcm_direct = not in_sg and vcm.control == "direct"
        self.vcm_ro = vcm.pair == "home-ro"     # direct pair over the MN–MN binding (docs/vcm-runtime.md)
        node.paths.vcm_ro = self.vcm_ro
        # Until the bindings are live the pair's ESP takes the home agents' tunnels too: what still fits.
        node.paths.seed_limit = node.config.tun_mtu - MAX_TUNNEL_OVERHEAD if self.vcm_ro else None
        peer_class = TunnelPeer if self.vcm_direct else TransportPeer
        self.vcm_peer = None if in_sg else peer_class(vcm.address, vcm.sa.out, vcm.sa.in_)
        self.vcm_path = vcm_control_path(self.vcm_address, vcm_in_sg=in_sg, encapsulate=not self.vcm_direct)
        if self.vcm_direct:
            # The VCM's address is in the VPN prefix, routed into our TUN; pinned to the access interface the
            # direct ESP takes the default route instead of the SG tunnel.
            self.vcm_sender = open_sender()
            self.vcm_sender.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, node.interface.encode())
        self.agent = MobileAgent(MobileAgentConfig(self.vcm_node_id, vcm_shell.VCM_NODE_ID, self.vcm_path,
                                                   vcm.external, vcm.internal, inbound_grace=vcm.inbound_grace),
                                 **vcm_shell.new_process_channel())
        self.announce_start = True   # RESTARTED, once we are away and can reach the VCM (``moved``)
        node.counters.update({"vcm_rx": 0, "vcm_tx": 0, "vcm_bad": 0, "direct_out": 0, "care_of_notices": 0,
                              "vcm_op_errors": 0, "direct_in": 0})
        node.message_drops.carried.update(VCM_MESSAGES)

    def setup_mesh(self, mesh: MeshSection) -> None:
        """Install the direct SA pair with every peer and its SPD rules ahead of the SG tunnel's; a peer
        whose care-of address is known (it is outside) is reached directly from the first packet. The
        pairs' outer ends follow moves as the VCM's care-of pairs do (``moved``, care-of notices)."""
        node = self.node
        self.sg_inner = ipv6.pton(mesh.sg_address)
        self.names = dict(mesh.names)
        sad, spd = node.processor.sad, node.processor.spd
        own = f"{node.home_text}/128"
        for peer in mesh.peers:
            home = ipv6.pton(peer.home)
            self.mesh_home[peer.node_id] = home
            for sa in (peer.out, peer.in_):
                sad.add(SecurityAssociation.from_config(sa))
                self.sa_peer[sa.name] = peer.node_id
            for direction, sa in (("out", peer.out), ("in", peer.in_)):
                ends = (own, f"{peer.home}/128") if direction == "out" else (f"{peer.home}/128", own)
                rule = {"name": f"{sa.name}-spd", "direction": direction, "src": ends[0], "dst": ends[1],
                        "proto": None, "action": "protect", "sa": sa.name}
                self.rules.append(rule)
                spd.insert(rule, 0)
            if peer.care_of:
                self.peer_care_of[peer.node_id] = peer.care_of
                node.direct_out.add(home)
        node.counters.update({"vcm_bad": 0, "direct_out": 0, "care_of_notices": 0, "direct_sas_moved": 0})

    def close(self) -> None:
        if self.vcm_sender is not None:
            self.vcm_sender.close()

    # ---- the node's moves ----
    def moved(self, coa: str, now: float) -> None:
        """We have a new care-of address (away): the care-of pairs' local ends and the direct MN–VCM SA follow
        it; the agent hears we are out, and a new process announces itself."""
        sad = self.node.processor.sad
        if not self.vcm_ro:   # home-ro: SA ends are home addresses; our BU to the peer follows the move
            for name in self.sa_peer:
                move_sa(sad, name, local=coa)  # the peer learns it from the SG's notice
        if self.vcm_direct:
            self.vcm_peer.move(local=coa, remote=self.vcm_address)   # the VCM learns it from the SG's report
        if self.agent is not None:
            self.agent.left_office(now)

    def reachable(self, now: float) -> None:
        """Away, with the policy switched: the VCM can be reached. A restart leaves peers sending under direct
        SAs this process never had; the VCM moves them back (RESTARTED, sent now, not at a retransmission
        seconds later)."""
        if self.agent is not None and self.announce_start:
            self.announce_start = False
            self.agent.started(now)
            self.flush(now)

    def returned_inside(self, now: float) -> None:
        if self.agent is not None:
            self.agent.returned_inside(now)  # direct outbound goes before anything leaves in clear
            self.flush(now)
        if self.mesh_home:
            # Inside, the SG sends us no notices: where the peers are is learnt afresh from the notices
            # that come when we are outside again.
            self.node.direct_out.clear()
            self.peer_care_of.clear()
            self.first_direct_logged.clear()
            self.first_protected_logged.clear()

    # ---- data plane hooks ----
    def log_protected(self, peer: bytes, path: str) -> None:
        """The first packet to ``peer`` under the pair's SA, end to end (direct or through the home agents)."""
        if peer not in self.first_protected_logged:
            self.first_protected_logged.add(peer)
            self.node.log.emit(time.time(), "data_first_protected", dst=ipv6.ntop(peer), path=path)

    def log_direct(self, peer: bytes, direct: bool, *, instead: str = "data_via_sg") -> None:
        """Direct or not (``instead``: the event that says where it goes then), logged when it changes."""
        log = self.node.log
        if direct:
            self.log_protected(peer, "direct")
        if direct and peer not in self.first_direct_logged:
            self.first_direct_logged.add(peer)
            log.emit(time.time(), "data_first_direct", dst=ipv6.ntop(peer),
                     **({"path": "vcm-home-ro"} if self.vcm_ro else {}))
        elif not direct and peer in self.first_direct_logged:
            self.first_direct_logged.discard(peer)
            log.emit(time.time(), instead, dst=ipv6.ntop(peer), reason="no mn-mn binding")

    def unkeyed(self, peer_home: bytes, now: float) -> None:
        """A configured peer, its home address proven by the binding, sends under an SA this process lacks
        (we restarted, and the VCM that keyed the pair may have too): the VCM moves it back."""
        if self.agent is not None and self.agent.unkeyed_peer(ipv6.ntop(peer_home), now):
            self.flush(now)

    # ---- from the SG and the VCM host ----
    def receive_from_sg(self, sa, inner: bytes, now: float) -> bool:
        """A control datagram or care-of notice from the SG inside its tunnel SA; True if it was one."""
        node = self.node
        if inner[6] != ipv6.NH_UDP or inner[8:24] != self.sg_inner or sa is None \
                or sa.name not in node.tunnel_sas:
            return False
        udp = vcm_shell.parse_udp(inner)
        if udp is None:
            node.counters["vcm_bad"] += 1
            return True
        if udp[3] == vcm_shell.VCM_PORT and self.agent is not None and self.vcm_peer is None:
            if node.drop_vcm(udp[4], "in"):
                return True
            node.counters["vcm_rx"] += 1
            self.agent.receive(udp[4], self.vcm_path, now)
        elif udp[3] == vcm_shell.CARE_OF_PORT:
            try:
                peer, _home, care_of = vcm_shell.decode_care_of(udp[4])
            except vcm_shell.CareOfParseError as exc:
                node.counters["vcm_bad"] += 1
                node.log.emit(time.time(), "care_of_notice_dropped", reason=str(exc))
                return True
            node.counters["care_of_notices"] += 1
            if peer in self.mesh_home:
                self._mesh_peer_at(peer, care_of)
            elif care_of is not None and self.peer_care_of.get(peer) != care_of:
                self.peer_care_of[peer] = care_of
                # home-ro: the SA ends are home addresses; the peer's own BU moves its binding, not this notice
                moved = [] if self.vcm_ro else [name for name, p in self.sa_peer.items() if p == peer]
                for name in moved:
                    move_sa(node.processor.sad, name, remote=care_of)
                node.log.emit(time.time(), "peer_care_of", peer=self.names.get(peer, peer),
                              care_of_address=care_of, direct_sas_moved=len(moved))
        else:
            node.counters["vcm_bad"] += 1
        self.flush(now)
        return True

    def from_vcm_host(self, packet: bytes, now: float) -> bool:
        """ESP from the VCM host in our SA with it: tunnelled to us by the home agent, or sent straight to
        the care-of address (direct SAs)?"""
        if self.vcm_peer is None or packet[6] != ipv6.NH_ESP or packet[8:24] != self.vcm_address_bytes \
                or esp_spi(packet) != self.vcm_peer.in_sa.spi:
            return False
        data = self.node.vcm_control(self.vcm_peer.open(packet))
        if data is not None and self.node.accept_vcm(data):
            self.agent.receive(data, self.vcm_path, now)
            self.flush(now)
        return True

    def _mesh_peer_at(self, peer: int, care_of: str | None) -> None:
        """A care-of notice about mesh peer ``peer``: move our SAs' remote end to it, or (None: the peer is
        inside the office, where only the SG reaches it) send to it through the SG until it is out again."""
        node = self.node
        home = self.mesh_home[peer]
        before = (self.peer_care_of.get(peer), home in node.direct_out)
        moved = []
        if care_of is None:
            self.peer_care_of.pop(peer, None)
            node.direct_out.discard(home)
            if home in self.first_direct_logged:
                self.first_direct_logged.discard(home)
                node.log.emit(time.time(), "data_via_sg", dst=ipv6.ntop(home), reason="peer inside the office")
        else:
            if self.peer_care_of.get(peer) != care_of:
                self.peer_care_of[peer] = care_of
                moved = [name for name, p in self.sa_peer.items() if p == peer]
                for name in moved:
                    move_sa(node.processor.sad, name, remote=care_of)
                node.counters["direct_sas_moved"] += len(moved)
            node.direct_out.add(home)
        if (self.peer_care_of.get(peer), home in node.direct_out) != before:   # the SG repeats its notices
            node.log.emit(time.time(), "peer_care_of", peer=self.names.get(peer, peer), care_of_address=care_of,
                          direct_sas_moved=len(moved))

    # ---- the agent's side of the shell contract ----
    def flush(self, now: float) -> None:
        """Apply every agent event's SA/SPD operations, then send its datagrams."""
        if self.agent is None:
            return
        node = self.node
        for event in self.agent.pop_events():
            name, fields = event_fields(event)
            ops = fields.pop("ops", ())
            peer = fields.get("peer")
            self._binding_key_step(event, now)   # before the ops: with a key, no return routability starts
            for op in getattr(event, "ops", ()):
                self.apply_op(op, peer)
            node.log.emit(time.time(), name, peer_name=self.names.get(peer), ops=len(ops) if ops else 0,
                          **{k: v for k, v in fields.items() if k != "ops"})
            if isinstance(event, (SwitchOutbound, FallBackToSg)):
                node.direct_out = {ipv6.pton(r["dst"].split("/")[0]) for r in self.rules if r["direction"] == "out"}
                self.first_direct_logged &= node.direct_out
                self.first_protected_logged &= node.direct_out
        for data, _path in self.agent.datagrams_to_send(now):
            if node.drop_vcm(data, "out"):
                continue
            node.log.emit(time.time(), "vcm_message", peer="vcm", **vcm_shell.message_fields(data))
            self.send_to_vcm(data)
        if self.ro_pending:
            self.ro_pending = False
            node.flush_core(now)   # the HoTI/CoTI that the KEYS started, after the KEYS_ACK

    def _binding_key_step(self, event, now: float) -> None:
        """Home-ro pairs keyed with a static Kbm (RFC 4449): the KEYS hand it to both cores and our BU leaves
        at once (a peer's BU that overtook its key is checked as the key comes); a fall-back returns the
        binding to return routability, which a restarted peer also speaks."""
        routing = self.node.peer_routing
        hoa = getattr(event, "peer_external_hoa", None)
        if not self.vcm_ro or routing is None or hoa is None:
            return
        peer = ipv6.pton(hoa)
        if isinstance(event, InstallInbound) and event.binding_key is not None:
            care_of = ipv6.pton(event.peer_care_of) if event.peer_care_of else None
            routing.use_binding_key(peer, event.binding_key, care_of, now)
            self.ro_pending = True
        elif isinstance(event, FallBackToSg) and peer in routing.correspondent.binding_keys:
            routing.use_binding_key(peer, None, None, now)

    def send_to_vcm(self, data: bytes) -> None:
        node = self.node
        packet = vcm_shell.build_udp(node.address, self.vcm_address_bytes, vcm_shell.VCM_PORT,
                                     vcm_shell.VCM_PORT, data)
        if self.vcm_peer is not None:
            packet = self.vcm_peer.seal(packet)   # MN–VCM SA, then (SPD) the MN–SG tunnel around it
        if packet is not None and node.state is LinkState.AWAY:
            node.counters["vcm_tx"] += 1
            if self.vcm_direct:
                node.send_raw(packet, "vcm control", sock=self.vcm_sender)   # care-of -> VCM, no SG tunnel
            else:
                node.protect_and_send(packet, "vcm control")

    def apply_op(self, op, peer) -> None:
        node = self.node
        cfg = dict(op.config)
        sad, spd = node.processor.sad, node.processor.spd
        try:
            if op.action == "add-sa":
                cfg["mode"] = "tunnel"
                if self.vcm_ro:
                    # Outer ends: the two external home addresses (as the agent builds them); on the wire
                    # care-of to care-of with HAO + RH2 under the MN–MN binding, which the KEYS start.
                    self._start_peer_ro(ipv6.pton(cfg["remote"]))
                else:
                    # Outer ends: the two care-of addresses (docs/vcm-runtime.md); inner: home addresses.
                    cfg["local"] = node.care_of or cfg["local"]
                    cfg["remote"] = self.peer_care_of.get(peer, cfg["remote"])
                sad.add(SecurityAssociation.from_config(cfg))
                node.log_key(cfg)
                self.sa_peer[cfg["name"]] = peer
            elif op.action == "del-sa":
                self.sa_peer.pop(cfg["name"], None)
                sad.remove(cfg["name"])
            elif op.action == "add-spd":
                self.rules.insert(0, cfg)
                if not node.policy_internal:
                    spd.insert(cfg, 0)   # peer-specific: ahead of the broad rule via the SG
            elif op.action == "del-spd":
                self.rules = [r for r in self.rules if r["name"] != cfg["name"]]
                if any(r.name == cfg["name"] for r in spd.rules):
                    spd.remove(cfg["name"])
        except (KeyError, ValueError) as exc:
            node.counters["vcm_op_errors"] += 1
            node.log.emit(time.time(), "vcm_op_error", action=op.action, name=cfg.get("name"), reason=str(exc))

    def _start_peer_ro(self, peer_external: bytes) -> None:
        """Return routability and BU with a VCM peer's external home address (once per peer; the cores
        keep the binding fresh and follow moves from then on)."""
        routing = self.node.peer_routing
        if routing is None or peer_external in self.ro_started or peer_external not in routing.internal_of:
            return
        self.ro_started.add(peer_external)
        self.ro_pending = True
        routing.mobile.start_route_optimisation(peer_external, time.monotonic())
        self.node.log.emit(time.time(), "vcm_peer_ro_started", peer_external=ipv6.ntop(peer_external))

    # ---- timers and status ----
    def next_timer(self):
        return self.agent.get_timer() if self.agent is not None else None

    def on_timer(self, now: float) -> None:
        if self.agent is not None:
            deadline = self.agent.get_timer()
            if deadline is not None and deadline <= now:
                self.agent.handle_timer(now)
            self.flush(now)

    def status(self, now: float) -> dict:
        """The "mesh" or "vcm" part of the node's status (empty without pairs)."""
        node = self.node
        out = {}
        peers_care_of = {self.names.get(k, str(k)): v for k, v in self.peer_care_of.items()}
        if self.mesh_home:
            out["mesh"] = {"peers": len(self.mesh_home), "direct": sorted(ipv6.ntop(h) for h in node.direct_out),
                           "peer_care_of": peers_care_of}
        if self.agent is not None:

            def binding(row):   # home-ro: the direct SA is usable only with both MN–MN bindings live
                if not self.vcm_ro or node.peer_routing is None or not row.peer_external_hoa:
                    return None
                return node.peer_routing.ready(ipv6.pton(row.peer_external_hoa), now)

            def path(row):
                return "via-sg" if row.path == "direct" and binding(row) is False else row.path
            wall = time.time() - time.monotonic()
            out["vcm"] = {
                "pair": "home-ro" if self.vcm_ro else "care-of", "node_id": self.vcm_node_id,
                "peer_care_of": peers_care_of,
                "paths": [{"peer": self.names.get(row.peer, str(row.peer)), "peer_home": row.peer_external_hoa,
                           "path": path(row), "binding": binding(row), "since": round(wall + row.since, 3),
                           "session": row.session_id, "generation": row.generation, "spi_out": row.spi_out,
                           "spi_in": row.spi_in, "pending": row.pending}
                          for row in self.agent.path_status().values()],
                "stats": dict(self.agent.channel.stats)}
        return out
