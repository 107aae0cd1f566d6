"""Home agent on the office LAN (RFC 6275 §10) around ``nodeapps.mobility.HomeAgent``.

While a mobile node is away: proxy ND for its home address on the office LAN (plus an unsolicited NA so
neighbours switch to us at once), a /128 route for the home address into our TUN, and every packet read
from the TUN leaves IPv6-in-IPv6 to the care-of address. Reverse-tunnelled packets (next header 41) from
the registered care-of address are unwrapped and written into the TUN, from where the kernel forwards
them. BU/BA travel in ESP transport mode with the node's SA pair (RFC 3776). Every ``interval`` seconds
the HA multicasts an office announcement on the LAN, signed with its Ed25519 key and stamped with the
time and a counter (``nodeapps.mobility.announcement``): the proof a mobile node needs to believe it is
inside (``nodeapps.mobility.location``), which no MN can forge, since MNs hold only the public key.
"""
from __future__ import annotations

import socket
import time

from nodeapps import ipv6
from nodeapps.mobility import HomeAgent
from nodeapps.mobility import announcement
from nodeapps.mobility.events import BindingAdded, BindingRemoved, BindingUpdated
from nodeapps.roles.common import MobilityRuntime
from nodeapps.runtime.mobility import (
    ICMPV6_RS, interface_mac, open_router_advertisement_socket, receive_router_advertisement, send_unsolicited_na,
)
from nodeapps.runtime.netlink import run_ip, run_ip6_batch


SOLICITED_GAP = 0.01   # seconds between announcements that router solicitations may prompt


class HomeAgentRuntime(MobilityRuntime):
    owned_protocols = (ipv6.NH_IPV6, ipv6.NH_ESP, ipv6.NH_DSTOPTS, ipv6.NH_ROUTING)
    sa_bound_mobility = True

    def setup_role(self) -> None:
        s = self.section
        self.interface = s["interface"]
        # The office HA reaches away MNs only through the SG, whose tunnel SA protects all of it.
        self.tunnel_via_sg = bool(s.get("behind_security_gateway"))
        self.core = HomeAgent(self.address, s["home_prefixes"],
                              served_home_addresses=[p for p in self.peers],
                              max_lifetime=float(s.get("max_lifetime", 3600)),
                              refresh_advice=s.get("refresh_advice"), vpn_prefixes=s.get("vpn_prefixes", []))
        for key in (f"net.ipv6.conf.{self.interface}.proxy_ndp=1", f"net.ipv6.neigh.{self.interface}.proxy_delay=0"):
            with open("/proc/sys/" + key.split("=")[0].replace(".", "/"), "w") as f:
                f.write(key.split("=")[1])
        self.mac = interface_mac(self.interface)
        self.ifindex = socket.if_nametoindex(self.interface)
        announce = s.get("announcement")
        self.announce_key = announcement.load_private_key(announce["private_key"]) if announce else None
        self.announce_interval = float(announce.get("interval", 0.05)) if announce else None
        self.announce_prefix = ipv6.pton(announce["prefix"].split("/")[0]) if announce else None
        self.announce_counter = 0
        self.next_announcement = time.monotonic()
        self.last_announcement = float("-inf")
        self.counters.update({"reverse_tunnelled": 0, "tunnelled_to_mn": 0, "no_binding": 0, "announcements": 0,
                              "announcements_solicited": 0, "mh_wrong_sa": 0, "unprotected_vpn_source": 0})
        if self.announce_key is not None:
            # A node that just came onto the office link solicits routers: answer with an announcement at once
            # instead of leaving it to wait for the next periodic one.
            self.rs_sock = open_router_advertisement_socket(ICMPV6_RS)
            self._watch(self.rs_sock.fileno(), self.on_router_solicitation)

    # ---- data plane ----
    def _send_out(self, packet: bytes) -> None:
        if len(packet) < 40 or packet[0] >> 4 != 6 or packet[24] == 0xFF:
            self.counters["tun_ignored"] += 1
            return
        now = time.monotonic()
        datagram = self.core.encapsulate_to_mobile(packet, now)
        if datagram is None:
            self.counters["no_binding"] += 1
            return
        self.counters["tunnelled_to_mn"] += 1
        packet = self.seal_for(datagram)   # a peer MN's HoTI / CoTI / BU: carried_by_vpn
        if packet is not None:
            self.send_raw(packet, "tunnelled to MN")

    def on_network(self, sock, now: float) -> None:
        for packet in self.received_packets(sock):
            if len(packet) < 40 or packet[24:40] != self.address:
                self.counters["not_for_us"] += 1
                continue
            if packet[6] == ipv6.NH_IPV6:
                # Behind the SG, our one link is the office LAN: nothing reaches it in clear from the
                # Internet, and what leaves an MN's tunnel SA there had its innermost source checked.
                inner = self.core.accept_reverse_tunnel(packet, now, protected_link=self.tunnel_via_sg)
                if inner is not None:
                    self.counters["reverse_tunnelled"] += 1
                    self.write_tun(inner)
            elif packet[6] == ipv6.NH_ESP and int.from_bytes(packet[40:44], "big") in self.tunnel_by_spi:
                # A HoTI in the MN–HA tunnel-mode SA: forward it if it is from the SA's own home address and
                # came from its registered CoA.
                tunnel = self.tunnel_by_spi[int.from_bytes(packet[40:44], "big")]
                inner = tunnel.open(packet)
                if inner is None:
                    self.counters["mh_esp_failures"] += 1
                elif self.core.accept_tunnel_sa(packet[8:24], inner, now, tunnel.address):
                    self.counters["reverse_tunnelled"] += 1
                    self.write_tun(inner)
            elif not self.open_mobility(packet, now):
                self.counters["not_for_us"] += 1
        self.flush_core(now)

    # ---- bindings -> proxy ND, routes ----
    def on_core_event(self, event, now: float) -> None:
        if isinstance(event, (BindingAdded, BindingUpdated)) and event.home_registration:
            home = ipv6.ntop(event.home_address)
            run_ip6_batch(("neigh", "replace", "proxy", home, "dev", self.interface),
                          ("route", "replace", f"{home}/128", "dev", self.config.tun_name))
            tunnel = self.tunnel_peers.get(event.home_address)
            if tunnel is not None:
                tunnel.move(local=ipv6.ntop(self.address), remote=ipv6.ntop(event.care_of_address))
            if isinstance(event, BindingAdded):
                # RFC 6275 §10.4.1: take over the home address on the link at once.
                send_unsolicited_na(self.interface, home, self.mac)
            self.log.emit(time.time(), "intercepting", home_address=home,
                          care_of_address=ipv6.ntop(event.care_of_address))
        elif isinstance(event, BindingRemoved) and event.home_registration:
            home = ipv6.ntop(event.home_address)
            run_ip("-6", "neigh", "del", "proxy", home, "dev", self.interface)
            run_ip("-6", "route", "del", f"{home}/128", "dev", self.config.tun_name)
            self.log.emit(time.time(), "intercept_stopped", home_address=home, reason=event.reason)

    # ---- timers: core + announcements ----
    def next_timer(self):
        core = self.core.get_timer()
        if self.announce_key is None:
            return core
        return self.next_announcement if core is None else min(core, self.next_announcement)

    def on_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self.flush_core(now)
        if self.announce_key is not None and now >= self.next_announcement:
            self._announce(now)

    def on_router_solicitation(self, now: float) -> None:
        for _ in range(16):
            try:
                _message, _source, ifindex, _hop_limit = receive_router_advertisement(self.rs_sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            # At most one extra announcement per SOLICITED_GAP, whatever the link sends.
            if ifindex == self.ifindex and now - self.last_announcement >= SOLICITED_GAP:
                self.counters["announcements_solicited"] += 1
                self._announce(now)

    def close(self) -> None:
        if getattr(self, "rs_sock", None) is not None:
            self.rs_sock.close()
        super().close()

    def _announce(self, now: float) -> None:
        self.next_announcement = now + self.announce_interval
        self.last_announcement = now
        self.announce_counter += 1
        packet = announcement.build(self.announce_key, self.address, self.announce_prefix, time.time_ns(),
                                    self.announce_counter)
        try:
            self.sender.sendto(packet, ("ff02::1", 0, 0, self.ifindex))
            self.counters["announcements"] += 1
        except OSError as exc:
            self.counters["send_errors"] += 1
            self.log.emit(time.time(), "send_error", reason=exc.strerror, what="office announcement")
