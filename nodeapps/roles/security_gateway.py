"""The security gateway as the mobile nodes' mobility peer (issue item 5).

A mobile node registers its care-of address with the SG by a BU without the H flag, in ESP transport mode
(``HomeAgent(accept_secured_bindings=True)``). On every binding change the SG moves the node's tunnel SAs
to the new care-of address (keys, sequence numbers and replay windows kept), replaces the node's SPD rules
for traffic to and from the care-of address (one atomic SPD step), and routes the care-of address into its
TUN, so the office's packets to the node (from its home agent) follow it under ESP.

With a ``vcm`` section (``SvpnLab(vcm="in-sg")``) the SG also runs the VCM built in: ``SgMonitor`` sees the
home addresses inside every packet it relays for an MN (one dict lookup per packet once a flow is known),
``VcmManager`` hands two external MNs their direct SA pair, and the control datagrams travel as UDP in the
MNs' tunnel SAs (``roles/vcm_shell.py``). After every binding change the SG sends the other MNs a care-of
notice so the outer ends of their direct SAs follow the moving node.
"""
from __future__ import annotations

import time

from nodeapps import ipv6
from nodeapps.mobility import HomeAgent
from nodeapps.mobility.events import BindingAdded, BindingRemoved, BindingUpdated
from nodeapps.roles.common import MobilityRuntime
from nodeapps.runtime.mobility import TransportPeer, esp_spi, move_sa
from nodeapps.runtime.netlink import run_ip, run_ip6_batch
from nodeapps.roles import vcm_shell
from nodeapps.roles.common import event_fields
from nodeapps.runtime.faults import VCM_MESSAGES
from nodeapps.vcm import protocol as vp
from nodeapps.vcm.channel import mn_control_path, sg_vcm_path
from nodeapps.vcm.manager import KEY_LIFETIME_S, ManagerConfig, MnEntry, VcmManager
from nodeapps.vcm.sg_monitor import MnBinding, MonitorConfig, SgMonitor


# A care-of notice is one datagram, and radio links drop bursts of them: after a binding change the SG sends
# the notices about it again this long after (each with the care-of address of that moment), so a lost one
# does not leave a peer's direct SAs pointing at the old address until the next move.
NOTICE_REPEATS_S = (0.25, 0.75, 1.75)


class GatewayRuntime(MobilityRuntime):
    owned_protocols = (ipv6.NH_ESP, ipv6.NH_DSTOPTS, ipv6.NH_ROUTING)
    sa_bound_mobility = True

    def setup_role(self) -> None:
        s = self.section
        self.local_addresses = {ipv6.pton(a) for a in s.get("local_addresses", [])} | {self.address}
        # Keyed by the home address of the MN's binding with us: the external home address in embodiment 1
        # (the reference's SG sends to it via the current care-of address), the home address otherwise.
        self.tunnels = {ipv6.pton(p["address"]): (p["name"], p["tunnel_out"], p["tunnel_in"]) for p in s["peers"]}
        # The MN's VPN-internal home address (what its packets carry inside the tunnel) -> binding key.
        self.binding_of_inner = {ipv6.pton(p.get("inner", p["address"])): ipv6.pton(p["address"])
                                 for p in s["peers"]}
        self.core = HomeAgent(self.address, s["home_prefixes"], served_home_addresses=list(self.tunnels),
                              max_lifetime=float(s.get("max_lifetime", 3600)), accept_secured_bindings=True)
        self.care_of: dict[bytes, str] = {}
        # Relay load, split into MN-to-MN and MN-office traffic (the handover experiment's SG load).
        self.mn_tunnel_in = {t[2] for t in self.tunnels.values()}
        self.mn_tunnel_out = {t[1] for t in self.tunnels.values()}
        self.counters.update({"clear_dropped": 0, "relayed_mn_mn_packets": 0, "relayed_mn_mn_bytes": 0,
                              "relayed_mn_office_packets": 0, "relayed_mn_office_bytes": 0,
                              "mh_wrong_sa": 0, "inner_source_mismatch": 0, "unprotected_vpn_source": 0,
                              "refresh_requests": 0})
        self.policy_drops_seen = 0   # the processor's "policy" drops: a rise means the SA authenticated the packet
        # Tunnel SA (in) -> binding key: whose packets that SA may carry (``_sa_owner_source``).
        self.binding_of_sa = {t[2]: key for key, t in self.tunnels.items()}
        self.inner_of_binding = {key: inner for inner, key in self.binding_of_inner.items()}
        self.owner_sources = {key: self._sa_owner_sources(key) for key in self.tunnels}
        # Care-of routes apply to traffic from the office only: the SG's own ESP packets to the same
        # care-of address must leave by the normal route, not loop back into the TUN.
        self.table = str(s.get("route_table", 100))
        self.lan = s.get("lan_interface", "sg-lan")
        run_ip("-6", "rule", "add", "iif", self.lan, "lookup", self.table, "priority", "100")
        self.monitor = self.manager = self.vcm_peer = None
        self.notice_mns: dict[int, dict] = {}    # MNs told where their peers are (care-of notices)
        self.notice_repeats: dict[int, list[float]] = {}   # mover -> when its notices go out again
        self.binding_key: dict[int, bytes] = {}
        self.mn_by_binding: dict[bytes, int] = {}
        if s.get("vcm"):
            self._setup_vcm(s["vcm"])
        elif s.get("care_of_notices"):
            self._setup_care_of_notices(s["care_of_notices"], enabled=True)

    def _setup_care_of_notices(self, section: dict, *, enabled: bool) -> None:
        """The MNs whose peers' direct SAs end at their care-of address: after every binding change each
        of them hears where the moving node is now (``section``: ``sg_address``, ``mns``). Used by the VCM's
        care-of pairs and, without a VCM, by the mesh's pre-distributed pairs."""
        self.sg_inner = ipv6.pton(section.get("sg_address", section.get("address")))   # source of the notices
        self.care_of_notices = enabled
        mns = {int(m["node_id"]): m for m in section["mns"]}
        self.notice_mns = mns if enabled else {}
        self.binding_key = {i: self.binding_of_inner[ipv6.pton(m["home"])] for i, m in mns.items()}
        self.mn_by_binding = {key: i for i, key in self.binding_key.items()}
        self.counters.update({"vcm_tx": 0, "vcm_bad": 0, "care_of_notices": 0})

    # ---- VCM built into the SG ----
    def _setup_vcm(self, vcm: dict) -> None:
        self.vcm_address = vcm["address"]
        self.vcm_address_bytes = ipv6.pton(vcm["address"])
        in_sg = vcm.get("variant", "in-sg") == "in-sg"
        # Only the care-of pair needs them: over MN–MN route optimisation the MNs' own BUs tell each other.
        self._setup_care_of_notices(vcm, enabled=bool(vcm.get("care_of_notices", True)))
        self.vcm_peer = None if in_sg else TransportPeer(vcm["address"], vcm["sa"]["out"], vcm["sa"]["in"])
        self.vcm_mns = {int(m["node_id"]): m for m in vcm["mns"]}
        self.vcm_names = {vcm_shell.SG_NODE_ID: "sg", vcm_shell.VCM_NODE_ID: "vcm"}
        self.vcm_names.update({i: m["name"] for i, m in self.vcm_mns.items()})
        self.mn_by_home = {ipv6.pton(m["home"]): i for i, m in self.vcm_mns.items()}
        self.mn_by_sa = {}
        for i, m in self.vcm_mns.items():
            _name, tunnel_out, tunnel_in = self.tunnels[self.binding_key[i]]
            self.mn_by_sa[tunnel_out] = self.mn_by_sa[tunnel_in] = i
        start = vcm_shell.new_process_channel()   # counters grow across restarts (docs/vcm-protocol.md)
        self.monitor = SgMonitor(MonitorConfig(
            vcm_shell.SG_NODE_ID, vcm_shell.VCM_NODE_ID, sg_vcm_path(self.vcm_address, vcm_in_sg=in_sg),
            tuple(MnBinding(i, m["external"], m.get("internal")) for i, m in self.vcm_mns.items())), **start)
        self.counters["vcm_rx"] = 0
        self.message_drops.carried.update(VCM_MESSAGES)
        if not in_sg:
            return   # the VCM host runs the manager; REPORTs go to it in the SG–VCM SA
        # fallback_both=False: an MN that returns drops its direct SAs itself on proving the office, and a
        # FALLBACK to it would only reach its last care-of address.
        self.manager = VcmManager(ManagerConfig(
            vcm_shell.VCM_NODE_ID, vcm_shell.SG_NODE_ID, sg_vcm_path(self.vcm_address, vcm_in_sg=True),
            tuple(MnEntry(i, mn_control_path(m["home"], vcm_in_sg=True), m["external"], m.get("internal"))
                  for i, m in self.vcm_mns.items()),
            mode="tunnel", lifetime=int(vcm.get("lifetime", KEY_LIFETIME_S)), vcm_in_sg=True, fallback_both=False,
            binding_keys=bool(vcm.get("binding_keys", False)),
            reserved_spis=frozenset(int(x) for x in vcm.get("reserved_spis", []))), **start)

    def _vcm_flush(self, now: float) -> None:
        """Events first (logged), then datagrams: monitor <-> manager in process, manager -> MNs in ESP."""
        if self.monitor is None:
            return
        for _ in range(8):
            moved = False
            for core, who in ((self.monitor, "sg"), (self.manager, "vcm")):
                for event in core.pop_events() if core is not None else ():
                    name, fields = event_fields(event)
                    self.log.emit(time.time(), name, role=who, **fields)
            for data, _path in self.monitor.datagrams_to_send(now):
                moved = True
                if self.drop_vcm(data, "out"):
                    continue
                self._log_message(data, "sg", "vcm")
                if self.manager is None:
                    self._send_to_vcm_host(data)
                    continue
                if not self.drop_vcm(data, "in"):   # the manager's side of the in-process hop
                    self.manager.receive(data, self.manager.config.sg_path, now)
            if self.manager is None:
                break
            for data, path in self.manager.datagrams_to_send(now):
                moved = True
                if self.drop_vcm(data, "out"):
                    continue
                if path == self.manager.config.sg_path:
                    self._log_message(data, "vcm", "sg")
                    if not self.drop_vcm(data, "in"):   # the monitor's side of the in-process hop
                        self.monitor.receive(data, self.monitor.config.vcm_path, now)
                    continue
                node = self.mn_by_home.get(ipv6.pton(path.address))
                if node is None:
                    continue
                if vcm_shell.message_type(data) == vp.KEYS:
                    self._announce_peer_of(data, node)  # the direct SA's outer end must be known first
                self._log_message(data, "vcm", self.vcm_names[node])
                self._send_control(path.address, vcm_shell.VCM_PORT, data)
            if not moved:
                break

    def _send_to_vcm_host(self, data: bytes) -> None:
        packet = vcm_shell.build_udp(self.sg_inner, self.vcm_address_bytes, vcm_shell.VCM_PORT, vcm_shell.VCM_PORT,
                                     data)
        sealed = self.vcm_peer.seal(packet)
        if sealed is None:
            self.counters["vcm_bad"] += 1
            return
        self.counters["vcm_tx"] += 1
        self.send_raw(sealed, "report to the VCM")

    def _from_vcm_host(self, packet: bytes, now: float) -> bool:
        """ESP from the VCM host in the SG–VCM SA; True if it was (opened or dropped)."""
        spi = esp_spi(packet)
        if spi is None or spi != self.vcm_peer.in_sa.spi:
            return False
        inner = self.vcm_peer.open(packet)
        if inner is not None and inner[8:24] != self.vcm_peer.address:
            self._refuse("unprotected_vpn_source", inner[8:24], self.vcm_peer.in_sa.name)   # RFC 4301 §5.2
            return True
        data = self.vcm_control(inner)
        if data is not None and self.accept_vcm(data):
            self.monitor.receive(data, self.monitor.config.vcm_path, now)
        return True

    def _log_message(self, data: bytes, sender: str, receiver: str, **extra) -> None:
        self.log.emit(time.time(), "vcm_message", node=sender, peer=receiver, **vcm_shell.message_fields(data),
                      **extra)

    def _announce_peer_of(self, data: bytes, receiver: int) -> None:
        if not self.care_of_notices:
            return
        try:
            peer = vp.decode(data).one(vp.Peer)
        except vp.VcmParseError:
            return
        if peer is not None and peer.node_id in self.notice_mns:
            self._send_care_of(receiver, peer.node_id)

    def _send_care_of(self, receiver: int, about: int) -> None:
        key = self.binding_key[about]
        notice = vcm_shell.encode_care_of(about, ipv6.ntop(key), self.care_of.get(key))
        self.counters["care_of_notices"] += 1
        self._send_control(self.notice_mns[receiver]["home"], vcm_shell.CARE_OF_PORT, notice)

    def _send_control(self, home: str, port: int, payload: bytes) -> None:
        packet = vcm_shell.build_udp(self.sg_inner, ipv6.pton(home), port, port, payload)
        verdict, sa, out = self.processor.outbound(packet)  # the SPD's per-MN control rule: its tunnel SA
        if out is None or verdict != "protect":
            self.counters["vcm_bad"] += 1
            return
        self.counters["vcm_tx"] += 1
        self.send_protected(out, sa)

    def _vcm_inbound(self, sa, inner: bytes, now: float) -> bool:
        """Observe a packet an MN's tunnel SA carried; True if it was a control datagram for us."""
        node = self.mn_by_sa.get(sa.name) if sa is not None else None   # None: bypassed, no SA at all
        if node is None:
            return False
        if self.manager is not None and inner[6] == ipv6.NH_UDP and inner[24:40] == self.vcm_address_bytes:
            data = self.vcm_control(inner)
            if data is None or not self.accept_vcm(data):
                return True
            if node in self.vcm_names:
                # received: the MN logs the same message as it sends it (the experiments count it from there)
                self._log_message(data, self.vcm_names[node], "vcm", received=True)
            # The path is that of the SA's MN (its source was checked against the SA before): the channel then
            # refuses a message whose sender id is another node's (RFC 4301 §5.2 applied to VCM control).
            self.manager.receive(data, mn_control_path(self.vcm_mns[node]["home"], vcm_in_sg=True), now)
            return True
        src, dst = vcm_shell.innermost_addresses(inner)
        self.monitor.observe(now, src, dst, "in", node)
        return False

    def on_network(self, sock, now: float) -> None:
        processor, counters = self.processor, self.counters
        for packet in self.received_packets(sock):
            if len(packet) < 40 or packet[24:40] not in self.local_addresses:
                counters["not_for_us"] += 1  # forwarded traffic the kernel handles
                continue
            if packet[6] != ipv6.NH_ESP and esp_spi(packet) is None:
                # RFC 4301 §5.2: the SG's policy names nothing it accepts in clear from the Internet; with
                # extension headers (a HAO, an RH2) but no ESP behind them a packet is still clear.
                self._drop_clear(packet)
                continue
            if self.vcm_peer is not None and self._from_vcm_host(packet, now):
                continue
            if self.open_mobility(packet, now):
                self.flush_core(now)  # a moved tunnel must be in place for the very next packet
                continue
            _verdict, sa, inner = processor.inbound(packet)
            if inner is None:
                self._refresh_if_unbound(sa, packet, now)
            else:
                if not self._inbound_source_allowed(sa, inner):
                    continue
                if self.monitor is not None and self._vcm_inbound(sa, inner, now):
                    continue
                if sa is not None and sa.name in self.mn_tunnel_in:
                    # From an MN: MN-to-MN when the innermost destination is another MN's home address.
                    self._count_relay(vcm_shell.innermost_addresses(inner)[1] in self.binding_of_inner, len(inner))
                self.write_tun(inner)
        self.flush_core(now)
        self._vcm_flush(now)

    def _refresh_if_unbound(self, sa, packet: bytes, now: float) -> None:
        """An MN's tunnel SA authenticated the packet, but our policy has no rule for its care-of address
        because we hold no binding for the MN (we restarted): ask it to register again (a BRR under its
        Mobility Header SA) rather than drop its traffic until its next scheduled refresh."""
        policy_drops = self.processor.counters.get("policy", 0)
        authenticated, self.policy_drops_seen = policy_drops != self.policy_drops_seen, policy_drops
        key = self.binding_of_sa.get(sa.name) if sa is not None and authenticated else None
        if key is not None and key not in self.care_of and self.core.request_refresh(key, packet[8:24], now):
            self.counters["refresh_requests"] += 1
            self.flush_core(now)

    def _drop_clear(self, packet: bytes) -> None:
        self.counters["clear_dropped"] += 1
        self.log.emit(time.time(), "clear_dropped", reason="no ESP", src=ipv6.ntop(packet[8:24]),
                      dst=ipv6.ntop(packet[24:40]), next_header=packet[6], bytes=len(packet))

    def _inbound_source_allowed(self, sa, inner: bytes) -> bool:
        """RFC 4301 §5.2 after every decapsulation: the SPD has checked the packet that left the SA; the
        innermost source (inside the MN's reverse tunnel to its home agent) must belong to the SA's MN too,
        or one MN could speak for another to the office, the monitor and the VCM. A packet without ESP may
        not carry a VPN source at all."""
        src = vcm_shell.innermost_addresses(inner)[0]
        if sa is None:
            if ipv6.address_in_prefixes(src, self.processor.spd.vpn_prefixes):
                self._refuse("unprotected_vpn_source", src, None)
                return False
            return True
        key = self.binding_of_sa.get(sa.name)
        if key is None or src in self.owner_sources[key]:
            return True
        self._refuse("inner_source_mismatch", src, sa.name)
        return False

    def _sa_owner_sources(self, key: bytes) -> frozenset:
        """Sources an MN's tunnel SA may carry innermost: its VPN home address, the home address of its
        binding with us (the external one in the private plan) and its care-of address (its BU to the home
        agent travels from there, the home address in a Home Address option)."""
        care_of = self.care_of.get(key)
        return frozenset({self.inner_of_binding[key], key} | ({ipv6.pton(care_of)} if care_of is not None else set()))

    def _refuse(self, counter: str, src: bytes, sa_name) -> None:
        self.counters[counter] += 1
        self.log.emit(time.time(), counter, src=ipv6.ntop(src), sa=sa_name)

    def _count_relay(self, mn_to_mn: bool, size: int) -> None:
        kind = "mn_mn" if mn_to_mn else "mn_office"
        self.counters[f"relayed_{kind}_packets"] += 1
        self.counters[f"relayed_{kind}_bytes"] += size

    def on_protected(self, inner: bytes, sa) -> None:
        if sa.name in self.mn_tunnel_out:
            # Into an MN's tunnel. From an away MN it was counted when it came in through that MN's tunnel;
            # from an MN in the office it is MN-to-MN traffic seen here first.
            key = self.binding_of_inner.get(vcm_shell.innermost_addresses(inner)[0])
            if key is None:
                self._count_relay(False, len(inner))
            elif key not in self.care_of:
                self._count_relay(True, len(inner))
        if self.monitor is not None:
            node = self.mn_by_sa.get(sa.name)
            if node is not None:
                src, dst = vcm_shell.innermost_addresses(inner)
                self.monitor.observe(time.monotonic(), src, dst, "out", node)

    def on_tun(self, now: float) -> None:
        super().on_tun(now)
        self._vcm_flush(now)

    def next_timer(self):
        times = [self.core.get_timer()] + [due[0] for due in self.notice_repeats.values()]
        if self.monitor is not None:
            times += [self.monitor.get_timer()] + ([self.manager.get_timer()] if self.manager else [])
        return min((t for t in times if t is not None), default=None)

    def on_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self.flush_core(now)
        self._repeat_notices(now)
        if self.monitor is not None:
            for core in (self.monitor, self.manager):
                if core is None:
                    continue
                deadline = core.get_timer()
                if deadline is not None and deadline <= now:
                    core.handle_timer(now)
            self._vcm_flush(now)

    def status(self) -> dict:
        out = super().status()
        if self.monitor is not None:
            out["vcm"] = {
                "variant": "in-sg" if self.manager else "host", "flows": self.monitor.flow_count(),
                "locations": {self.vcm_names[i]: self.monitor.location(i) for i in self.vcm_mns},
                "sessions": [{"session": sess.session_id, "a": self.vcm_names.get(sess.node_a),
                              "b": self.vcm_names.get(sess.node_b), "state": sess.state,
                              "generation": sess.current, "established_at": sess.established_at}
                             for sess in (self.manager.sessions.values() if self.manager else ())],
                "monitor_stats": dict(self.monitor.stats),
                "manager_stats": dict(self.manager.stats) if self.manager else {}}
        return out

    def close(self) -> None:
        if getattr(self, "lan", None):
            run_ip("-6", "rule", "del", "iif", self.lan, "lookup", self.table, "priority", "100")
        super().close()

    def on_core_event(self, event, now: float) -> None:
        if isinstance(event, (BindingAdded, BindingUpdated)):
            self._follow(event.home_address, ipv6.ntop(event.care_of_address))
        elif isinstance(event, BindingRemoved):
            self._follow(event.home_address, None)
        else:
            return
        node = self.mn_by_binding.get(event.home_address)
        if node is None:
            return
        if self.monitor is not None:
            self.monitor.update_binding(now, node, self.care_of.get(event.home_address),
                                        home_address=ipv6.ntop(event.home_address))
        if node in self.notice_mns:
            self._announce(node)
            self.notice_repeats[node] = [now + delay for delay in NOTICE_REPEATS_S]
        self._vcm_flush(now)

    def _announce(self, node: int) -> None:
        """Every other outside MN learns where ``node`` is now (outer end of their direct SAs with it), and
        ``node``, if outside, where every other one is."""
        moved = self.binding_key[node]
        for other in self.notice_mns:
            if other != node and self.binding_key[other] in self.care_of:
                self._send_care_of(other, node)
                if moved in self.care_of:
                    self._send_care_of(node, other)

    def _repeat_notices(self, now: float) -> None:
        for node, due in list(self.notice_repeats.items()):
            if due[0] <= now:
                self._announce(node)
                while due and due[0] <= now:
                    due.pop(0)
            if not due:
                del self.notice_repeats[node]

    def _follow(self, home: bytes, care_of: str | None) -> None:
        """Point the node's tunnel, SPD rules and TUN route at ``care_of`` (None: the node is home)."""
        name, tunnel_out, tunnel_in = self.tunnels[home]
        old = self.care_of.get(home)
        if care_of == old:
            return
        spd = self.processor.spd
        vpn = [str(p) for p in spd.vpn_prefixes]
        rules = []
        if care_of is not None:
            move_sa(self.processor.sad, tunnel_out, remote=care_of)
            move_sa(self.processor.sad, tunnel_in, remote=care_of)
            rules = [{"name": f"{name}-coa-out-{i}", "direction": "out", "src": p, "dst": f"{care_of}/128",
                      "action": "protect", "sa": tunnel_out} for i, p in enumerate(vpn)]
            rules += [{"name": f"{name}-coa-in-{i}", "direction": "in", "src": f"{care_of}/128", "dst": p,
                       "action": "protect", "sa": tunnel_in} for i, p in enumerate(vpn)]
        # One `ip` process: the HA's BU, right behind this one in the same burst, waits for it.
        commands = [("route", "replace", f"{care_of}/128", "dev", self.config.tun_name, "table", self.table)] \
            if care_of is not None else []
        if old is not None:
            commands.append(("route", "del", f"{old}/128", "dev", self.config.tun_name, "table", self.table))
        run_ip6_batch(*commands)
        others = [r for r in spd.rules if not (r.name and r.name.startswith(f"{name}-coa-"))]
        spd.set_rules(rules + others)  # one step: no packet sees half a change
        if care_of is None:
            self.care_of.pop(home, None)
        else:
            self.care_of[home] = care_of
        self.owner_sources[home] = self._sa_owner_sources(home)
        self.log.emit(time.time(), "tunnel_follows", mobile_node=name, care_of_address=care_of, previous=old)
