"""A mobile node's link: router advertisements, carrier and address events, office announcements, and what
each placement configures (RFC 6275 §11.5). The decisions are ``nodeapps.mobility.attachment.LinkTracker``'s;
this class reads the sockets, logs, and carries them out with ``ip`` and the SPD.

Placements (``LinkTracker.placement``): away (a care-of address in the visited prefix, default route, VPN
prefixes into the TUN, SA ends moved, BUs), home (the home address on the interface, VPN routes out of the
TUN, plain policy, unsolicited NA, deregistration) or dark (an office prefix without proof: no address).
The SPD switches between the external and the internal policy in one step.
"""
from __future__ import annotations

import ipaddress
import time

from nodeapps import ipv6
from nodeapps.mobility import announcement
from nodeapps.mobility.attachment import CarrierAction, HintAction, LinkTracker, RaAction, chosen_prefix
from nodeapps.mobility.location import PresenceDetector
from nodeapps.mobility.paths import LinkState
from nodeapps.mobility.router_discovery import ra_invalid_reason
from nodeapps.runtime.mobility import (
    RouterAdvertisementError, address_hint, care_of_address, move_sa, open_router_advertisement_socket,
    parse_router_advertisement, receive_router_advertisement, send_router_solicitation, send_unsolicited_na,
)
from nodeapps.runtime.netlink import (
    open_link_monitor, parse_address_messages, parse_link_messages, run_ip, run_ip6_batch,
)
from nodeapps.runtime.packet_io import ETH_HEADER_LEN, open_capture
from nodeapps.runtime.sections import MobileNodeSection

BURST = 16   # messages read per readiness event of one socket


class LinkAttachment:
    """The link side of the mobile node ``node`` (its shell: config, processor, counters, log, cores, pairs).
    ``default_router()`` reads the kernel's view of the interface."""

    def __init__(self, node, section: MobileNodeSection, *, default_router):
        self.node = node
        self.default_router = default_router
        self.tracker = LinkTracker(node.home_prefix,
                                   PresenceDetector(announcement_lifetime=section.announcement_lifetime))
        announce = section.announcement
        self.announce_key = announcement.load_public_key(announce["public_key"]) if announce else None
        self.announce_max_age = float(announce.get("max_age", announcement.MAX_AGE_S)) if announce else 0.0
        self.announce_last = None   # (timestamp, counter) of the last accepted announcement
        self.care_of = None         # text, configured on the interface
        # RFC 4301 policies for the two verdicts: outside, VPN traffic only through the SG tunnel (the
        # configured rules); inside, plain. Switched in one SPD step on each decision.
        self.external_rules = list(node.processor.spd.rules)
        self.internal_rules = [{"name": f"internal-{d}-{i}", "direction": d, "src": "::/0" if d == "out" else p,
                                "dst": p if d == "out" else "::/0", "action": "bypass"}
                               for i, p in enumerate(node.vpn_prefixes) for d in ("out", "in")]
        self.policy_internal = False
        node.counters.update({"ra_rx": 0, "ra_invalid": 0, "ra_damped": 0, "announcements_ok": 0,
                              "announcements_bad": 0, "announcements_stale": 0, "rs_tx": 0, "address_hints": 0})
        self.ra_sock = self.link_monitor = self.beacon = None

    def open(self) -> None:
        """The RA socket, the netlink monitor and the announcement capture, watched by the node's loop."""
        node = self.node
        self.ra_sock = open_router_advertisement_socket()
        node._watch(self.ra_sock.fileno(), self.on_router_advertisement)
        self.link_monitor = open_link_monitor(addresses=True)
        node._watch(self.link_monitor.fileno(), self.on_link_change)
        self.beacon = open_capture(node.interface, (announcement.NEXT_HEADER,), rcvbuf=1 << 20, host_only=False)
        node._watch(self.beacon.fileno(), self.on_beacon)

    @property
    def presence(self) -> PresenceDetector:
        return self.tracker.presence

    def close(self) -> None:
        for sock in (self.ra_sock, self.beacon, self.link_monitor):
            if sock is not None:
                sock.close()

    def _emit(self, name: str, **fields) -> None:
        self.node.log.emit(time.time(), name, **fields)

    # ---- inputs ----
    def on_router_advertisement(self, now: float) -> None:
        node, tracker = self.node, self.tracker
        for _ in range(BURST):
            try:
                message, source, ifindex, hop_limit = receive_router_advertisement(self.ra_sock)
            except OSError:  # nothing more (BlockingIOError), or e.g. ENETDOWN while the link is down (a move)
                return
            if ifindex != node.ifindex:
                continue
            node.counters["ra_rx"] += 1
            # RFC 4861 §6.1.2: validate before any use (link-local source, hop limit 255, code, lengths).
            reason = ra_invalid_reason(message, source, hop_limit)
            if reason is None:
                try:
                    ra = parse_router_advertisement(message, source)
                except RouterAdvertisementError as exc:
                    reason = str(exc)
            if reason is not None:
                node.counters["ra_invalid"] += 1
                self._emit("ra_invalid", router=source, hop_limit=hop_limit, reason=reason)
                continue
            link, previous = tracker.link, tracker.prefix
            action = tracker.router_advertisement(ra.router, ra.prefixes, ra.router_lifetime, ra.interval_ms, now)
            if action is RaAction.DAMPED:
                node.counters["ra_damped"] += 1
                self._emit("ra_damped", router=ra.router, prefix=chosen_prefix(ra.prefixes),
                           current=link[0] if link else None)
            elif action is RaAction.ADOPT_ROUTER:
                tracker.presence.pop_events()
                run_ip("-6", "route", "replace", "default", "via", tracker.router, "dev", node.interface)
            elif action is RaAction.NEW_LINK:
                self._emit("new_link", router=ra.router, prefix=tracker.prefix, previous=previous,
                           adv_interval_ms=ra.interval_ms)
                self.apply_location(now)
                node.flush_core(now)

    def on_link_change(self, now: float) -> None:
        """Netlink: carrier changes and IPv6 address changes of this namespace."""
        for _ in range(BURST):
            try:
                data = self.link_monitor.recv(65536)
            except OSError:   # nothing more (BlockingIOError, InterruptedError) or the socket failed
                return
            for index, up in parse_link_messages(data):
                if index == self.node.ifindex:
                    self._carrier(up, now)
            for change in parse_address_messages(data):
                self._address_changed(change, now)

    def _carrier(self, up: bool, now: float) -> None:
        """Carrier back: solicit an RA instead of waiting up to MaxRtrAdvInterval (the RFC 4861 §6.3.7 random
        delay spreads many hosts' RSs, there is one host per event). Carrier lost: drop the internal verdict
        and the plain policy at once."""
        node = self.node
        action = self.tracker.carrier_event(up, now)
        if action is CarrierAction.UP:
            self._solicit()
        if action is not CarrierAction.DOWN:
            return
        self._emit("carrier_lost", interface=node.interface)
        self._log_location()
        if node.state is LinkState.HOME:
            run_ip("-6", *self._drop_home_address())
            for prefix in node.vpn_prefixes:
                run_ip("-6", "route", "replace", prefix, "dev", node.config.tun_name)
            self.switch_policy(internal=False)
            node.paths.enter(LinkState.DETACHED)

    def _solicit(self) -> None:
        if not self.tracker.rs_pending:
            return
        error = send_router_solicitation(self.node.interface)
        if not error:
            self.tracker.solicited()
            self.node.counters["rs_tx"] += 1
        self._emit("router_solicitation", error=error or None)

    def _address_changed(self, change, now: float) -> None:
        """RTM_NEWADDR / RTM_DELADDR (``runtime.mobility.address_hint`` reads it; our own addresses never
        count, so what we do here cannot trigger us again)."""
        node, tracker = self.node, self.tracker
        if change.added and change.ifindex == node.ifindex and tracker.rs_pending:
            self._solicit()   # the link-local address is back: the RS can leave now
        verdict, prefix = address_hint(change, ifindex=node.ifindex, host_id=node.host_id, home=node.home_text,
                                       care_of=self.care_of, prefix=tracker.prefix)
        action = tracker.address_hint(verdict, prefix, state=node.state)
        if action is HintAction.IGNORE:
            return
        node.counters["address_hints"] += 1
        self._emit("address_hint", verdict=verdict, address=change.address, prefix=prefix,
                   current_prefix=tracker.prefix)
        if action is HintAction.LOST:
            tracker.forget_link(now)
            self._solicit()
        elif action is HintAction.ASK:
            self._solicit()
        else:
            # A prefix no router announced to us (DHCPv6, an operator, renumbering).
            tracker.address_link(prefix, now, self.default_router)
            self.apply_location(now)
            node.flush_core(now)

    def on_beacon(self, now: float) -> None:
        for _ in range(BURST):
            try:
                frame = self.beacon.recv(2048)
            except OSError:  # nothing more (BlockingIOError), or e.g. ENETDOWN while the link is down (a move)
                return
            packet = frame[ETH_HEADER_LEN:]
            if len(packet) < 40 or packet[24] != 0xFF:
                continue
            if self.tracker.announcement(self._check_announcement(packet), now):
                self.apply_location(now)
                self.node.flush_core(now)

    def _check_announcement(self, packet: bytes) -> bool:
        """Signed by the HA, for our office prefix, newer than the last one we accepted and fresh."""
        counters = self.node.counters
        if self.announce_key is None:
            counters["announcements_bad"] += 1
            return False
        checked = announcement.verify(self.announce_key, packet, time.time(), self.announce_last,
                                      self.announce_max_age)
        if checked.verdict is announcement.Verdict.OK and \
                checked.prefix != self.node.home_prefix.network_address.packed:
            checked = announcement.Checked(announcement.Verdict.BAD, "another prefix")
        if checked.verdict is announcement.Verdict.OK:
            self.announce_last = checked.stamp
            counters["announcements_ok"] += 1
            return True
        stale = checked.verdict is announcement.Verdict.STALE
        counters["announcements_stale" if stale else "announcements_bad"] += 1
        self._emit("announcement_refused", reason=checked.reason, source=ipv6.ntop(packet[8:24]))
        return False

    def on_timer(self, now: float) -> None:
        if self.tracker.handle_timer(now):
            self.apply_location(now)

    # ---- placements ----
    def start(self, addresses: list[str], now: float) -> None:
        """Where the lab put us: an address in a visited prefix means we are away already."""
        home = ipaddress.IPv6Address(self.node.home_text)
        for address in addresses:
            if ipaddress.IPv6Address(address) != home:
                prefix = ipaddress.IPv6Network(f"{address}/64", strict=False)
                self.tracker.start_away(str(prefix), self.default_router(), now)
                self._go_away(now)
                return
        self.node.paths.enter(LinkState.HOME_UNPROVEN)

    def _log_location(self) -> None:
        for change in self.tracker.presence.pop_events():
            self._emit("location", location=change.location.value, reason=change.reason)

    def apply_location(self, now: float) -> None:
        self._log_location()
        placement = self.tracker.placement()
        if placement is LinkState.HOME:
            self._go_home(now)
        elif placement is LinkState.UNPROVEN:
            self._go_dark(now)
        else:
            self._go_away(now)

    def _drop_home_address(self) -> tuple:
        """The ``ip -6`` arguments that take the home address off the interface."""
        node = self.node
        return ("addr", "del", f"{node.home_text}/{node.home_prefix.prefixlen}", "dev", node.interface)

    def _go_away(self, now: float) -> None:
        node, tracker = self.node, self.tracker
        coa = care_of_address(tracker.prefix, node.host_id)
        # One `ip` process for all of it: the BU waits for these (benchmarks/README.md, handover gap).
        commands = [("addr", "replace", f"{coa}/64", "dev", node.interface, "nodad")]
        if tracker.router:
            commands.append(("route", "replace", "default", "via", tracker.router, "dev", node.interface))
        needed = len(commands)
        commands += [("route", "replace", prefix, "dev", node.config.tun_name) for prefix in node.vpn_prefixes]
        if node.state in (LinkState.HOME, LinkState.HOME_UNPROVEN):
            commands.append(self._drop_home_address())
        if self.care_of and self.care_of != coa:
            commands.append(("addr", "del", f"{self.care_of}/64", "dev", node.interface))  # often gone already
        error = next((e for e in run_ip6_batch(*commands)[:needed] if e), "")
        for name in node.tunnel_sas:
            if node.processor.sad.get(name) is not None:
                move_sa(node.processor.sad, name, local=coa)
        for tunnel in node.tunnel_peers.values():
            tunnel.move(local=coa, remote=ipv6.ntop(tunnel.address))
        node.pairs.moved(coa, now)
        self.switch_policy(internal=False)
        self.care_of = coa
        node.paths.enter(LinkState.AWAY)
        node.pairs.reachable(now)
        self._emit("care_of_address", address=coa, error=error or None)
        node.core.move_to(ipv6.pton(coa), now)
        if node.ext_core is not None:
            node.ext_core.move_to(ipv6.pton(coa), now)

    def _go_home(self, now: float) -> None:
        node = self.node
        node.pairs.returned_inside(now)   # direct outbound goes before anything leaves in clear
        if self.care_of:
            run_ip("-6", "addr", "del", f"{self.care_of}/64", "dev", node.interface)
        for prefix in node.vpn_prefixes:
            run_ip("-6", "route", "del", prefix, "dev", node.config.tun_name)
        run_ip("-6", "addr", "replace", f"{node.home_text}/{node.home_prefix.prefixlen}", "dev", node.interface,
               "nodad")
        if self.tracker.router:
            run_ip("-6", "route", "replace", "default", "via", self.tracker.router, "dev", node.interface)
        self.switch_policy(internal=True)
        send_unsolicited_na(node.interface, node.home_text, node.mac)  # RFC 6275 §11.5.4
        self.care_of = None
        node.paths.enter(LinkState.HOME)
        self._emit("home", address=node.home_text)
        if node.peer_routing is not None:
            # Inside, the peers cannot be reached in clear: their binding of our route-optimised home address
            # is deleted with a BU carried through the VPN (office HA, SG tunnel). Built before the core
            # learns it is home, so that it does not start a return-routability deregistration of its own.
            for packet in node.peer_routing.deregistrations(node.address, now):
                if node.drop_mobility(packet, "out"):
                    continue
                self._emit("mobility_sent", what="BU lifetime 0 via the VPN", dst=ipv6.ntop(packet[24:40]),
                           protection="vpn")
                node.send_raw(packet, "deregistration via the VPN")
        node.core.move_to(node.address, now)

    def _go_dark(self, now: float) -> None:
        """An office prefix without proof: no address, so nothing can leave in clear; VPN routes stay in
        the TUN, where the SPD would send them only under ESP."""
        node = self.node
        if self.care_of:
            run_ip("-6", "addr", "del", f"{self.care_of}/64", "dev", node.interface)
        if node.state in (LinkState.HOME, LinkState.HOME_UNPROVEN):
            run_ip("-6", *self._drop_home_address())
        for prefix in node.vpn_prefixes:
            run_ip("-6", "route", "replace", prefix, "dev", node.config.tun_name)
        self.switch_policy(internal=False)
        self.care_of = None
        node.paths.enter(LinkState.UNPROVEN)
        self._emit("office_prefix_unproven", prefix=self.tracker.prefix)

    def switch_policy(self, *, internal: bool) -> None:
        if internal == self.policy_internal:
            return
        rules = self.internal_rules if internal else self.node.pairs.rules + self.external_rules
        self.node.processor.spd.set_rules(rules)  # one step
        self.policy_internal = internal
        self._emit("spd_switched", policy="internal" if internal else "external")
