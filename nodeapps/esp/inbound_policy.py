"""Inbound policy after decapsulation (RFC 4301 §5.2), for nodes that take packets apart themselves.

A Home Address option substitutes the source, a type 2 routing header the destination, an IPv6-in-IPv6
header hides a whole packet: what the node's applications finally see has addresses the ESP processor
never looked at. The rule, applied to every such result and to the outer header of anything that arrived
in clear: a packet whose source is a VPN address must have come out of an ESP SA whose selectors cover
it, i.e. one of the node's SPD rules for that SA selects that very packet. Otherwise anyone on the Internet could claim
an office source by wrapping or decorating a clear packet.

The one exception is the documented insecure route optimisation between mobile nodes (MN config
``peer_data: "clear"``, strategy ``insecure-ro``): data that its own binding check accepted from one of its
configured peers' home addresses.

Sans-IO and pure: packet, SPD, SA in; a verdict out. The shells count ``unprotected_vpn_source``.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

from nodeapps.esp.spd import flow_key
from nodeapps.ipv6 import ParseError


class VpnPrefixes:
    """The VPN's address ranges, for a fast "is this a VPN address" on 16 raw bytes."""

    def __init__(self, prefixes: Iterable):
        nets = [p if isinstance(p, ipaddress.IPv6Network) else ipaddress.IPv6Network(p) for p in prefixes]
        self._ranges = tuple((int(n.network_address), int(n.netmask)) for n in nets)

    def __contains__(self, address: bytes) -> bool:
        value = int.from_bytes(address, "big")
        return any(value & mask == net for net, mask in self._ranges)

    def __bool__(self) -> bool:
        return bool(self._ranges)


def vpn_source_allowed(packet: bytes, vpn: VpnPrefixes, *, spd=None, sa=None,
                       insecure_peers: frozenset = frozenset(), insecure_path: bool = False) -> bool:
    """May ``packet`` (an IPv6 packet after decapsulation) be accepted as far as its source goes?

    ``sa``: the ESP SA it came out of (None: it arrived in clear); ``spd``: the node's SPD, one of whose
    inbound rules for ``sa`` must cover the packet (in clear: its lookup must say bypass, as inside the
    office). ``insecure_path``: it was accepted
    by the insecure route optimisation's own binding check; then a source in ``insecure_peers`` passes."""
    if len(packet) < 40:
        return False
    source = packet[8:24]
    if source not in vpn:
        return True
    if insecure_path and source in insecure_peers:
        return True   # documented insecure route optimisation, its own peers only
    if spd is None:
        return False
    try:
        if sa is None:
            rule = spd.lookup_in(packet)
            # RFC 4301 §5.2 step 3: in clear only what a bypass rule names (inside the office).
            return rule.action == "bypass" and not rule.is_default
        key = flow_key(packet)
    except ParseError:
        return False
    # RFC 4301 §5.2 step 4: the selectors of the SA it came out of must cover it. Any inbound rule of that SA
    # counts: a peer-specific rule ahead of it (a VCM direct SA) does not make the SG tunnel's own traffic
    # from that peer (its return routability via the home agent, data before the switch) unprotected.
    src, dst = int.from_bytes(key[2:18], "big"), int.from_bytes(key[18:34], "big")
    ports = ((key[34] << 8) | key[35], (key[36] << 8) | key[37]) if len(key) == 38 else None
    return any(rule.direction == "in" and rule.action == "protect" and rule.sa == sa.name
               and rule.selector.matches(src, dst, key[0], ports) for rule in spd.rules)
