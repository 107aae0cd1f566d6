"""Correspondent node shell (RFC 6275 §9) around ``nodeapps.mobility.CorrespondentNode``: a public host that
answers return routability and keeps route-optimisation bindings.

Its own traffic to mobile nodes' home addresses is routed into the TUN; ``add_routing_header`` sends it
straight to the care-of address under a binding (else unchanged, via the home agent). Incoming Mobility
Header messages (HoTI via the HA, CoTI, BU) go to the core; data with a Home Address option is checked
against the binding cache and delivered with the home address as its source, unless that source is a VPN
address (``vpn_prefixes``): a public host holds no SA that could vouch for one (RFC 4301 §5.2,
``nodeapps.esp.inbound_policy``; counted ``unprotected_vpn_source``).
"""
from __future__ import annotations

import socket
import time

from nodeapps import ipv6
from nodeapps.esp.inbound_policy import VpnPrefixes, vpn_source_allowed
from nodeapps.mobility import CorrespondentNode
from nodeapps.mobility import messages as mh
from nodeapps.roles.common import MobilityRuntime

_SO_BINDTODEVICE = 25


class CorrespondentRuntime(MobilityRuntime):
    owned_protocols = (ipv6.NH_MOBILITY, ipv6.NH_DSTOPTS)

    def setup_role(self) -> None:
        self.core = CorrespondentNode([self.address])
        # Our raw packets must leave by the interface, not by the routes that lead into our own TUN.
        self.interface = self.section["interface"]
        self.sender.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, self.interface.encode())
        self.vpn = VpnPrefixes(self.section.get("vpn_prefixes", []))
        self.counters.update({"with_routing_header": 0, "home_address_option_in": 0, "unprotected_vpn_source": 0})

    def _send_out(self, packet: bytes) -> None:
        if len(packet) < 40 or packet[0] >> 4 != 6 or packet[24] in (0xFF, 0xFE):
            self.counters["tun_ignored"] += 1
            return
        out = self.core.add_routing_header(packet, time.monotonic())
        if out is not packet and out != packet:
            self.counters["with_routing_header"] += 1
        self.send_raw(out, "data")
        self.flush_core(time.monotonic())

    def on_network(self, sock, now: float) -> None:
        for packet in self.received_packets(sock):
            if len(packet) < 40 or packet[24:40] != self.address:
                self.counters["not_for_us"] += 1
                continue
            try:
                hao, _routing, upper, _offset = mh.packet_summary(packet)
            except mh.MobilityParseError:
                self.counters["not_for_us"] += 1
                continue
            if upper == ipv6.NH_MOBILITY:
                if self.drop_mobility(packet, "in"):
                    continue
                self.counters["mh_rx"] += 1
                self.core.receive(packet, now)
            elif hao is not None:
                inner = self.core.accept_home_address_option(packet, now)
                if inner is not None and not vpn_source_allowed(inner, self.vpn, spd=self.processor.spd):
                    self.counters["unprotected_vpn_source"] += 1
                    self.log.emit(time.time(), "unprotected_vpn_source", src=ipv6.ntop(inner[8:24]), path="hao")
                    continue
                if inner is not None:
                    self.counters["home_address_option_in"] += 1
                    self.write_tun(inner)
        self.flush_core(now)
