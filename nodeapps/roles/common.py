"""What every mobility role's shell does the same way: per-peer ESP for Mobility Header messages, sending
the cores' datagrams, writing to the TUN, and logging core events with readable addresses."""
from __future__ import annotations

import dataclasses
import enum
import os
import time

from nodeapps import ipv6
from nodeapps.mobility.events import MessageDropped, MobilityWrongSa, Protection
from nodeapps.runtime.daemon import NodeRuntime
from nodeapps.runtime.faults import MOBILITY_MESSAGES
from nodeapps.mobility import messages as mh
from nodeapps.roles import vcm_shell
from nodeapps.runtime.mobility import TransportPeer, TunnelPeer, esp_spi
from nodeapps.runtime.offload import PLAIN_VNET_HDR
from nodeapps.runtime.sections import SaPeer


def event_fields(event) -> tuple[str, dict]:
    """(snake_case name, JSON-able fields) of a core event dataclass; 16-byte values become addresses. Fields
    kept out of the repr (key material) stay out of the log too."""
    name = "".join("_" + c.lower() if c.isupper() else c for c in type(event).__name__).lstrip("_")
    fields = {}
    for f in dataclasses.fields(event):
        if not f.repr:
            continue
        value = getattr(event, f.name)
        if isinstance(value, bytes) and len(value) == 16:
            value = ipv6.ntop(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, bytes):
            value = value.hex()
        fields[f.name] = value
    return name, fields


# Core drops that are also node counters (names shared by every role).
NODE_COUNTED_DROPS = frozenset({"unprotected_vpn_source"})


class MobilityRuntime(NodeRuntime):
    mobility = True
    tunnel_via_sg = False   # see carried_by_vpn
    # Home agent and SG: each transport peer is one MN, and its SA may speak only for the home address the
    # configuration gives that peer (RFC 3776 §4.2; the core decides, ``esp_home_address``).
    sa_bound_mobility = False

    def __init__(self, config, processor):
        super().__init__(config, processor)
        section = config.mobility
        self.section = section
        self.address = ipv6.pton(section["address"])
        self.peers: dict[bytes, TransportPeer] = {}
        self.peers_by_spi: dict[int, TransportPeer] = {}
        self.tunnel_peers: dict[bytes, TunnelPeer] = {}
        self.tunnel_by_spi: dict[int, TunnelPeer] = {}
        # Checked as the config was read (config.py); here they only become typed.
        for i, peer in enumerate(section["peers"]):
            self.add_transport_peer(SaPeer.from_dict(peer, f"mobility.peers[{i}]"))
        for i, peer in enumerate(section.get("tunnel_peers", [])):
            self.add_tunnel_peer(SaPeer.from_dict(peer, f"mobility.tunnel_peers[{i}]"))
        self.core = None
        self.message_drops.carried.update(MOBILITY_MESSAGES)
        self.counters.update({"mh_rx": 0, "mh_tx": 0, "mh_esp_failures": 0, "not_for_us": 0,
                              "unprotectable": 0})

    def add_tunnel_peer(self, peer: SaPeer, core=None) -> TunnelPeer:
        tp = TunnelPeer(peer.address, peer.out, peer.in_)
        tp.core = core
        self.tunnel_peers[tp.address] = tp
        self.tunnel_by_spi[tp.in_sa.spi] = tp
        return tp

    def add_transport_peer(self, peer: SaPeer, core=None) -> TransportPeer:
        tp = TransportPeer(peer.address, peer.out, peer.in_)
        tp.core = core
        self.peers[tp.address] = tp
        self.peers_by_spi[tp.in_sa.spi] = tp
        return tp

    # ---- helpers ----
    def write_tun(self, packet: bytes) -> None:
        """One packet into the TUN (with an empty virtio-net header when offloads are on)."""
        try:
            os.write(self.tun_fd, PLAIN_VNET_HDR + packet if self.offload else packet)
            self.counters["tun_tx"] += 1
        except OSError as exc:
            self.counters["send_errors"] += 1
            self.log.emit(time.time(), "tun_write_error", reason=exc.strerror)

    def send_raw(self, packet: bytes, description: str = "", sock=None) -> None:
        """A packet whose IPv6 header we built, by our raw socket (or ``sock``, e.g. one bound to a device)."""
        try:
            (sock or self.sender).sendto(packet, (ipv6.ntop(packet[24:40]), 0))
            self.counters["net_tx"] += 1
        except OSError as exc:
            self.counters["send_errors"] += 1
            self.log.emit(time.time(), "send_error", reason=exc.strerror, what=description)

    def vcm_control(self, inner: bytes | None) -> bytes | None:
        """The control message in a UDP datagram to the VCM port (as an SA opened it), or None: anything
        else is counted as ``vcm_bad``."""
        udp = vcm_shell.parse_udp(inner) if inner is not None else None
        if udp is None or udp[3] != vcm_shell.VCM_PORT:
            self.counters["vcm_bad"] += 1
            return None
        return udp[4]

    def accept_vcm(self, data: bytes) -> bool:
        """Count a control message as received, unless a fault drops it on purpose (False)."""
        if self.drop_vcm(data, "in"):
            return False
        self.counters["vcm_rx"] += 1
        return True

    def open_mobility(self, packet: bytes, now: float) -> bool:
        """ESP transport packet from a mobility peer -> core; False if no peer SA has this SPI."""
        spi = esp_spi(packet)
        peer = self.peers_by_spi.get(spi) if spi is not None else None
        if peer is None:
            return False
        inner = peer.open(packet)
        self._drain_peer_events(peer)
        if inner is None:
            self.counters["mh_esp_failures"] += 1
            return True
        if self.drop_mobility(inner, "in"):
            return True
        self.counters["mh_rx"] += 1
        core = getattr(peer, "core", None) or self.core
        if self.sa_bound_mobility:
            core.receive(inner, now, esp_protected=True, esp_home_address=peer.address)
        else:
            core.receive(inner, now, esp_protected=True)
        return True

    def carried_by_vpn(self, datagram) -> bool:
        """A tunnel-marked mobility message (RFC 3776 §3.1: HoTI, HoT, CoT and what an HA tunnels to an MN)
        for a peer we share no tunnel SA with, on a node whose MNs and HA meet only through the SG: the SG's
        tunnel SA protects it beyond the office, the office LAN is the VPN's trusted side."""
        return (self.tunnel_via_sg and datagram.protection is Protection.ESP_TUNNEL
                and datagram.esp_peer not in self.tunnel_peers)

    def seal_for(self, datagram) -> bytes | None:
        """The datagram's packet with its RFC 3776 protection applied, or None if we have no SA for it."""
        if datagram.protection is Protection.NONE or self.carried_by_vpn(datagram):
            return datagram.packet
        if datagram.protection is Protection.ESP_TUNNEL and datagram.esp_peer in self.tunnel_peers:
            # RFC 3776 §3.1: the inner packet (HoTI/HoT) goes in the MN–HA tunnel-mode SA.
            tunnel = self.tunnel_peers[datagram.esp_peer]
            try:
                inner = mh.decapsulate(datagram.packet)[2]
            except mh.MobilityParseError:
                self.counters["unprotectable"] += 1
                return None
            return tunnel.seal(inner)
        peer = self.peers.get(datagram.esp_peer)
        if datagram.protection is not Protection.ESP_TRANSPORT or peer is None:
            self.counters["unprotectable"] += 1
            self.log.emit(time.time(), "mobility_unprotectable", what=datagram.description,
                          protection=datagram.protection.value)
            return None
        out = peer.seal(datagram.packet)
        self._drain_peer_events(peer)
        return out

    def _drain_peer_events(self, peer: TransportPeer) -> None:
        for event in peer.processor.pop_events():
            fields = dict(event)
            self.log.emit(time.time(), fields.pop("event", "esp_event"), peer=ipv6.ntop(peer.address), **fields)

    def flush_core(self, now: float) -> None:
        """Apply the core's events (routes, proxy ND, tunnels), then send what it queued: a BA must leave
        by the routes that match the binding it acknowledges."""
        for event in self.core.pop_events():
            name, fields = event_fields(event)
            self.log.emit(time.time(), name, **fields)
            if isinstance(event, MobilityWrongSa):
                self.counters["mh_wrong_sa"] += 1
            elif isinstance(event, MessageDropped) and event.reason in NODE_COUNTED_DROPS:
                self.counters[event.reason] += 1
            self.on_core_event(event, now)
        for datagram in self.core.datagrams_to_send(now):  # events may have queued more
            self.send_datagram(datagram, now)

    def send_datagram(self, datagram, now: float) -> None:
        if self.drop_mobility(datagram.packet, "out"):
            return
        packet = self.seal_for(datagram)
        if packet is None:
            return
        self.counters["mh_tx"] += 1
        self.log.emit(time.time(), "mobility_sent", what=datagram.description,
                      dst=ipv6.ntop(datagram.dst), protection=datagram.protection.value, bytes=len(packet))
        self.send_raw(packet, datagram.description)

    def on_core_event(self, event, now: float) -> None:
        pass

    # ---- timers ----
    def next_timer(self):
        return self.core.get_timer() if self.core is not None else None

    def on_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self.flush_core(now)

    def status(self) -> dict:
        out = super().status()
        now = time.monotonic()
        cache = getattr(self.core, "cache", None)
        out["mobility"] = {"counters": dict(self.core.counters) if self.core else {},
                           # RFC 3776 ESP pairs for Mobility Header messages, per peer address
                           "sa_peers": {ipv6.ntop(a): {"out": p.out_sa.status(), "in": p.in_sa.status()}
                                        for a, p in self.peers.items()},
                           "bindings": [{"home_address": ipv6.ntop(b.home_address),
                                         "care_of_address": ipv6.ntop(b.care_of_address),
                                         "sequence": b.sequence, "home_registration": b.home_registration,
                                         "remaining_s": round(b.remaining(now), 1)}
                                        for b in (cache if cache is not None else ()) if b.remaining(now) > 0]}
        return out

