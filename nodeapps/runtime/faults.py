"""Lost control messages on purpose: the ``drop-next`` fault command of every shell that carries Mobility
Header or VCM control messages.

Theory of operation: ``{"cmd": "drop-next", "message": "KEYS", "direction": "in", "count": 1}`` arms a
``MessageDrops``; the shell asks it at its boundary with the cores, where it hands a received message to a
core ("in") or is about to send one a core produced ("out"), and a message it takes is never seen by the
core (or never leaves). The cores' own retransmission is then what the lab shows.

Which message a packet is: the MH type (RFC 6275 §6.1) of an IPv6 packet, through its extension headers
(HAO, type 2 routing header) and through at most two IPv6-in-IPv6 tunnel headers (RFC 6275 §10.4.5: a home
agent's tunnel); the type octet of a VCM control datagram's header (docs/vcm-protocol.md). A packet that is
neither, or does not parse, is never taken.

Direction defaults to "in": the message is lost on its way to this node, after the sender counted it sent.
"""
from __future__ import annotations

from nodeapps import ipv6
from nodeapps.mobility import messages as mh
from nodeapps.mobility.constants import MH_NAMES
from nodeapps.vcm import protocol as vp

MOBILITY_MESSAGES = tuple(MH_NAMES[t] for t in sorted(MH_NAMES))
VCM_MESSAGES = tuple(vp.TYPE_NAMES[t] for t in sorted(vp.TYPE_NAMES))
DIRECTIONS = ("in", "out")
DEFAULT_DIRECTION = "in"
MAX_COUNT = 1000
_TUNNEL_DEPTH = 2
_CANONICAL = {name.upper(): name for name in MOBILITY_MESSAGES + VCM_MESSAGES}


def mobility_message(packet: bytes) -> str | None:
    """Name of the Mobility Header message an IPv6 packet carries (inside up to two tunnels), else None."""
    for _ in range(_TUNNEL_DEPTH + 1):
        try:
            _hao, _routing, upper, offset = mh.packet_summary(packet)
        except mh.MobilityParseError:
            return None
        if upper == ipv6.NH_MOBILITY:
            # RFC 6275 §6.1.1: Payload Proto, Header Len, then the MH Type octet.
            return MH_NAMES.get(packet[offset + 2]) if offset + 3 <= len(packet) else None
        if upper != ipv6.NH_IPV6:
            return None
        packet = packet[offset:]
    return None


def vcm_message(data: bytes) -> str | None:
    """Name of the VCM control message a UDP payload holds (version 1 header, known type), else None."""
    if len(data) < vp.HEADER_LEN or data[0] != vp.VERSION:
        return None
    return vp.TYPE_NAMES.get(data[1])


class MessageDrops:
    """Pending drops per (message, direction) and what was dropped, per message. ``carried`` names the
    messages this node's shell hands to or takes from its cores; others are refused when armed."""

    def __init__(self, carried=()):
        self.carried: set[str] = set(carried)
        self.pending: dict[tuple[str, str], int] = {}
        self.dropped: dict[str, int] = {}

    def arm(self, request: dict) -> dict:
        """Validate a drop-next request and arm it (its count replaces a pending one for the same message
        and direction); ValueError with one line on bad input."""
        raw = request.get("message")
        name = _CANONICAL.get(raw.upper()) if isinstance(raw, str) else None
        if name is None:
            raise ValueError(f"drop-next: unknown message {raw!r} "
                             f"(mobility: {', '.join(MOBILITY_MESSAGES)}; VCM: {', '.join(VCM_MESSAGES)})")
        if name not in self.carried:
            carried = ", ".join(n for n in MOBILITY_MESSAGES + VCM_MESSAGES if n in self.carried) or "none"
            raise ValueError(f"drop-next: this node carries no {name} messages (it carries: {carried})")
        direction = request.get("direction", DEFAULT_DIRECTION)
        if direction not in DIRECTIONS:
            raise ValueError(f"drop-next: direction {direction!r}: 'in' (on its way to a core) or 'out' "
                             "(on its way out)")
        count = request.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise ValueError(f"drop-next: count {count!r}: a whole number from 1 to {MAX_COUNT}")
        self.pending[(name, direction)] = count
        return {"message": name, "direction": direction, "pending": count}

    @property
    def armed(self) -> bool:
        return bool(self.pending)

    def take(self, name: str | None, direction: str) -> int | None:
        """If a pending drop matches, use it up and return how many are left for it; else None."""
        key = (name, direction)
        left = self.pending.get(key)
        if left is None:
            return None
        if left <= 1:
            del self.pending[key]
        else:
            self.pending[key] = left - 1
        self.dropped[name] = self.dropped.get(name, 0) + 1
        return left - 1

    def status(self) -> dict:
        return {"pending": {f"{n}/{d}": c for (n, d), c in sorted(self.pending.items())},
                "dropped": dict(sorted(self.dropped.items()))}
