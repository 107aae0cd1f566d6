"""The security gateway as the mobile nodes' mobility peer (issue item 5).

A mobile node registers its care-of address with the SG by a BU without the H flag, in ESP transport mode
(``HomeAgent(accept_secured_bindings=True)``). On every binding change the SG moves the node's tunnel SAs
to the new care-of address (keys, sequence numbers and replay windows kept), replaces the node's SPD rules
for traffic to and from the care-of address (one atomic SPD step), and routes the care-of address into its
TUN, so the office's packets to the node (from its home agent) follow it under ESP.
"""
from __future__ import annotations

import time

from nodeapps import ipv6
from nodeapps.mobility import HomeAgent
from nodeapps.mobility.events import BindingAdded, BindingRemoved, BindingUpdated
from nodeapps.roles.common import MobilityRuntime
from nodeapps.runtime.mobility import move_sa, run_ip
from nodeapps.runtime.packet_io import ETH_HEADER_LEN


class GatewayRuntime(MobilityRuntime):
    owned_protocols = (ipv6.NH_ESP, ipv6.NH_DSTOPTS, ipv6.NH_ROUTING)

    def setup_role(self) -> None:
        s = self.section
        self.local_addresses = {ipv6.pton(a) for a in s.get("local_addresses", [])} | {self.address}
        self.tunnels = {ipv6.pton(p["address"]): (p["name"], p["tunnel_out"], p["tunnel_in"]) for p in s["peers"]}
        self.core = HomeAgent(self.address, s["home_prefixes"], served_home_addresses=list(self.tunnels),
                              max_lifetime=float(s.get("max_lifetime", 3600)), accept_secured_bindings=True)
        self.care_of: dict[bytes, str] = {}
        # Care-of routes apply to traffic from the office only: the SG's own ESP packets to the same
        # care-of address must leave by the normal route, not loop back into the TUN.
        self.table = str(s.get("route_table", 100))
        self.lan = s.get("lan_interface", "sg-lan")
        run_ip("-6", "rule", "add", "iif", self.lan, "lookup", self.table, "priority", "100")

    def on_network(self, sock, now: float) -> None:
        processor, counters = self.processor, self.counters
        for _ in range(64):
            try:
                frame = sock.recv(65535)
            except BlockingIOError:
                break
            except OSError:  # e.g. ENETDOWN while the link is down (a move)
                break
            counters["net_rx"] += 1
            packet = frame[ETH_HEADER_LEN:]
            if len(packet) < 40 or packet[24:40] not in self.local_addresses:
                counters["not_for_us"] += 1  # forwarded traffic the kernel handles
                continue
            if self.open_mobility(packet, now):
                self.flush_core(now)  # a moved tunnel must be in place for the very next packet
                continue
            _verdict, _sa, inner = processor.inbound(packet)
            if inner is not None:
                self.write_tun(inner)
        self.flush_core(now)

    def close(self) -> None:
        if getattr(self, "lan", None):
            run_ip("-6", "rule", "del", "iif", self.lan, "lookup", self.table, "priority", "100")
        super().close()

    def on_core_event(self, event, now: float) -> None:
        if isinstance(event, (BindingAdded, BindingUpdated)):
            self._follow(event.home_address, ipv6.ntop(event.care_of_address))
        elif isinstance(event, BindingRemoved):
            self._follow(event.home_address, None)

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
            run_ip("-6", "route", "replace", f"{care_of}/128", "dev", self.config.tun_name, "table", self.table)
        others = [r for r in spd.rules if not (r.name and r.name.startswith(f"{name}-coa-"))]
        spd.set_rules(rules + others)  # one step: no packet sees half a change
        if old is not None:
            run_ip("-6", "route", "del", f"{old}/128", "dev", self.config.tun_name, "table", self.table)
        if care_of is None:
            self.care_of.pop(home, None)
        else:
            self.care_of[home] = care_of
        self.log.emit(time.time(), "tunnel_follows", mobile_node=name, care_of_address=care_of, previous=old)
