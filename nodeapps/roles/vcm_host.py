"""The VCM as its own office host (``SvpnLab(vcm="host")``) around ``nodeapps.vcm.VcmManager``.

Every control datagram is UDP (port 7420) in an ESP transport-mode SA the VCM shares with one peer: the SG
(``sg-vcm-sa``, on the office LAN) or an MN (``vcm-sa-in-sg-sa``: between the MN's home address and the
VCM, so on its way it also travels inside the MN–SG tunnel SA and, towards the MN, inside the home agent's
tunnel). Which peer sent a datagram is decided by the SA it arrived on, never by its addresses: the
control channel then drops a message whose sender id belongs to another peer's path.
"""
from __future__ import annotations

import time

from nodeapps import ipv6
from nodeapps.roles import vcm_shell
from nodeapps.roles.common import MobilityRuntime, event_fields
from nodeapps.runtime.faults import VCM_MESSAGES
from nodeapps.runtime.mobility import TransportPeer, TunnelPeer, esp_spi
from nodeapps.vcm.channel import mn_control_path, sg_vcm_path
from nodeapps.vcm.manager import KEY_LIFETIME_S, ManagerConfig, MnEntry, VcmManager


class VcmHostRuntime(MobilityRuntime):
    owned_protocols = (ipv6.NH_ESP,)

    def setup_role(self) -> None:
        s = self.section["vcm"]
        self.message_drops.carried = set(VCM_MESSAGES)   # no mobility core of its own
        self.names = {vcm_shell.SG_NODE_ID: "sg", vcm_shell.VCM_NODE_ID: "vcm"}
        self.sg_path = sg_vcm_path(s["sg_address"], vcm_in_sg=False)
        # SPI -> (control path, peer): the path a datagram arrived on is that of the SA's owner.
        self.by_spi: dict[int, tuple] = {}
        self.by_path: dict = {}
        sg = TransportPeer(s["sg_address"], s["sg_sa"]["out"], s["sg_sa"]["in"])
        sg.node = vcm_shell.SG_NODE_ID
        self.by_spi[sg.in_sa.spi] = (self.sg_path, sg)
        self.by_path[self.sg_path] = sg
        entries = []
        self.direct: dict[int, TunnelPeer] = {}   # node -> SA pair sent straight to its care-of address
        for m in s["mns"]:
            node = int(m["node_id"])
            self.names[node] = m["name"]
            direct = m.get("control") == "direct"
            path = mn_control_path(m["home"], vcm_in_sg=False, encapsulate=not direct)
            if direct:
                peer = self.direct[node] = TunnelPeer(m["home"], m["sa"]["out"], m["sa"]["in"])
            else:
                peer = TransportPeer(m["home"], m["sa"]["out"], m["sa"]["in"])
            peer.node = node
            self.by_spi[peer.in_sa.spi] = (path, peer)
            self.by_path[path] = peer
            entries.append(MnEntry(node, path, m["external"], m.get("internal")))
        self.manager = VcmManager(ManagerConfig(
            vcm_shell.VCM_NODE_ID, vcm_shell.SG_NODE_ID, self.sg_path, tuple(entries), mode="tunnel",
            lifetime=int(s.get("lifetime", KEY_LIFETIME_S)), fallback_both=False,
            binding_keys=bool(s.get("binding_keys", False)),
            reserved_spis=frozenset(int(x) for x in s.get("reserved_spis", []))),
            **vcm_shell.new_process_channel())
        self.path_names = {path: self.names[node] for node, path in
                           [(vcm_shell.SG_NODE_ID, self.sg_path)] + [(e.node_id, e.path) for e in entries]}
        self.counters.update({"vcm_rx": 0, "vcm_tx": 0, "vcm_bad": 0, "unprotected_vpn_source": 0})

    def on_network(self, sock, now: float) -> None:
        for packet in self.received_packets(sock):
            if len(packet) < 40 or packet[24:40] != self.address:
                self.counters["not_for_us"] += 1
                continue
            spi = esp_spi(packet)
            known = self.by_spi.get(spi) if spi is not None else None
            if known is None:
                self.counters["vcm_bad"] += 1
                continue
            path, peer = known
            inner = peer.open(packet)
            if inner is not None and inner[8:24] != peer.address:
                # RFC 4301 §5.2: what leaves a peer's SA must carry that peer's own address; the control
                # path (and with it the node id the channel accepts) is the SA's, never the packet's.
                self.counters["unprotected_vpn_source"] += 1
                self.log.emit(time.time(), "unprotected_vpn_source", src=ipv6.ntop(inner[8:24]),
                              sa=peer.in_sa.name)
                continue
            data = self.vcm_control(inner)
            if data is None:
                continue
            if peer.node in self.direct:
                # Authenticated by the SA: its outer source is where the MN is now.
                self._follow(peer.node, ipv6.ntop(packet[8:24]), "datagram")
            if self.accept_vcm(data):
                self.manager.receive(data, path, now)
        self._flush(now)

    def _flush(self, now: float) -> None:
        for event in self.manager.pop_events():
            name, fields = event_fields(event)
            self.log.emit(time.time(), name, **fields)
        for data, path in self.manager.datagrams_to_send(now):
            peer = self.by_path.get(path)
            if peer is None:
                continue
            receiver = self.path_names[path]
            if self.drop_vcm(data, "out"):
                continue
            if peer.node in self.direct:
                care_of = self.manager.contexts[peer.node].care_of   # from the SG's latest REPORT
                if care_of is not None:
                    self._follow(peer.node, care_of, "report")
            fields = vcm_shell.message_fields(data)
            self.log.emit(time.time(), "vcm_message", peer=receiver, **fields)
            packet = vcm_shell.build_udp(self.address, peer.address, vcm_shell.VCM_PORT, vcm_shell.VCM_PORT, data)
            sealed = peer.seal(packet)
            if sealed is not None:
                self.counters["vcm_tx"] += 1
                self.send_raw(sealed, f"vcm {fields['type']} to {receiver}")

    def _follow(self, node: int, address: str, source: str) -> None:
        """Point the direct SA pair with ``node`` at the address it is reachable at now."""
        peer = self.direct[node]
        if peer.out_sa.remote != address:
            peer.move(remote=address)
            self.log.emit(time.time(), "vcm_peer_moved", peer=self.names[node], address=address, learnt_from=source)

    def next_timer(self):
        return self.manager.get_timer()

    def on_timer(self, now: float) -> None:
        self.manager.handle_timer(now)
        self._flush(now)

    def _send_out(self, packet: bytes) -> None:
        self.counters["tun_ignored"] += 1   # nothing of ours goes through the TUN

    def status(self) -> dict:
        out = super().status()
        out["vcm"] = {"variant": "host", "sessions": [
            {"session": sess.session_id, "a": self.names.get(sess.node_a), "b": self.names.get(sess.node_b),
             "state": sess.state, "generation": sess.current, "established_at": sess.established_at}
            for sess in self.manager.sessions.values()], "manager_stats": dict(self.manager.stats)}
        return out
