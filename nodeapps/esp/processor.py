"""Per-packet IPsec pipeline: SPD, SAD and SA glued together (RFC 4301 §5).

``outbound(packet)`` takes a clear IPv6 packet (e.g. read from a TUN) and returns
``(verdict, sa, out_packet)``:

* ``"protect"``: ``out_packet`` is a complete IPv6 packet for a raw socket with ``IPV6_HDRINCL``.
  Tunnel mode wraps the whole packet (ESP next header 41) in a new header from the SA's local to its remote
  address, hop limit 64, traffic class copied from the inner header (RFC 4301 §5.1.2.2, RFC 6040 normal
  mode). Transport mode inserts ESP after the headers that routers along the path must read
  (hop-by-hop, routing, fragment, AH, and a destination options header carrying a Home Address option),
  RFC 4303 §3.1.1, and fixes the next-header chain and payload length.
* ``"bypass"``: the packet unchanged; ``"discard"``: None.

ESP here is always native (next header 50). For an SA with ``encap == "udp"`` the shell carries the ESP
part in UDP (RFC 3948: ``udpencap.encapsulate``, or a UDP socket that does the same) and hands received
datagrams back decapsulated (``udpencap.decapsulate`` / ``udpencap.native``).

``inbound(packet)`` takes a complete IPv6 packet addressed to this node and returns
``(verdict, sa, inner)``:

* ``"accept"``: ESP verified and removed; ``inner`` is the inner IPv6 packet (tunnel) or the packet rebuilt
  without ESP (transport). The result must then match an inbound SPD rule that protects with this very SA
  (RFC 4301 §5.2), else it is discarded.
* ``"bypass"``: a packet without ESP that the inbound SPD lets through in clear, returned unchanged.
* ``"discard"``: None. Drops never raise; each bumps a counter named after its reason and queues an event.

Drop reasons: unknown_spi, replay, icv, parse, policy, dummy (next header 59, RFC 4303 §2.6),
seq_exhausted, no_sa (an outbound rule names an SA that is not installed).

Events are small dicts (``{"event": "esp_drop", "at": ..., "reason": ..., ...}``, ``sa_soft_limit``,
``seq_exhausted``) collected with :meth:`IPsecProcessor.pop_events`. Their timestamp ``at`` comes from
``now``: either a number the caller keeps current (``proc.now = t``) or a zero-argument callable; it is read
only when an event is recorded (``at``, not ``time``, so a log writer can add its own wall-clock ``time``).
At most ``max_events`` wait; beyond that they are only counted (``events_lost``).
"""
from __future__ import annotations

import struct

from ..ipv6 import (HEADER_LEN, NH_AH, NH_DSTOPTS, NH_ESP, NH_FRAGMENT, NH_HOPOPTS, NH_IPV6, NH_ROUTING,
                    ParseError, ntop)
from .errors import EspParseError, IntegrityError, ReplayError, SequenceExhausted
from .packet import ICV_LEN, IV_LEN, MIN_LEN, TRAILER_MIN
from .packet import HEADER_LEN as ESP_HEADER_LEN

DROP_REASONS = ("unknown_spi", "replay", "icv", "parse", "policy", "dummy", "seq_exhausted", "no_sa")
NH_NONE = 59
OUTER_HOP_LIMIT = 64
HAO_OPTION = 201  # Home Address option, RFC 6275 §6.3
_ESP_OVERHEAD = ESP_HEADER_LEN + IV_LEN + TRAILER_MIN + ICV_LEN
# Most octets protection adds to a packet (3 = largest padding): size the TUN MTU with these.
MAX_TRANSPORT_OVERHEAD = _ESP_OVERHEAD + 3
MAX_TUNNEL_OVERHEAD = HEADER_LEN + MAX_TRANSPORT_OVERHEAD
_OUTER = struct.Struct("!IHBB16s16s")
_LEN_NH = struct.Struct("!HB")
# Headers that may precede ESP in transport mode; which of them stay in clear is decided in _clear_split.
_PRE_ESP = frozenset({NH_HOPOPTS, NH_ROUTING, NH_FRAGMENT, NH_DSTOPTS, NH_AH})
_ALWAYS_CLEAR = frozenset({NH_HOPOPTS, NH_ROUTING, NH_FRAGMENT, NH_AH})


def _ext_length(packet: bytes, nh: int, offset: int, end: int) -> int:
    if offset + 2 > end:
        raise ParseError("truncated extension header")
    if nh == NH_FRAGMENT:
        length = 8
    elif nh == NH_AH:
        length = (packet[offset + 1] + 2) * 4  # RFC 4302 §2.2
    else:
        length = (packet[offset + 1] + 1) * 8  # RFC 8200 §4.3-4.6
    if offset + length > end:
        raise ParseError("extension header runs past packet end")
    return length


def _has_home_address_option(packet: bytes, offset: int, length: int) -> bool:
    pos, end = offset + 2, offset + length
    while pos < end:
        option = packet[pos]
        if option == HAO_OPTION:
            return True
        if option == 0:  # Pad1 has no length octet
            pos += 1
        elif pos + 1 < end:
            pos += 2 + packet[pos + 1]
        else:
            return False
    return False


def _clear_split(packet: bytes, end: int) -> tuple[int, int]:
    """(offset where ESP goes, offset of the next-header octet to point at ESP) for transport mode.

    RFC 4303 §3.1.1: ESP follows hop-by-hop, routing and fragment headers; destination options headers
    may go either side. One that precedes a routing header or carries a Home Address option must stay in
    clear; any other is protected.
    """
    nh, offset = packet[6], HEADER_LEN
    split, nh_pos = HEADER_LEN, 6
    while nh in _PRE_ESP:
        length = _ext_length(packet, nh, offset, end)
        if nh in _ALWAYS_CLEAR or _has_home_address_option(packet, offset, length):
            split, nh_pos = offset + length, offset
        nh = packet[offset]
        offset += length
    return split, nh_pos


def _find_esp(packet: bytes, end: int) -> tuple[int, int]:
    """(ESP offset, offset of the octet naming ESP), or (-1, -1) when the packet carries no ESP."""
    nh, offset, nh_pos = packet[6], HEADER_LEN, 6
    while nh in _PRE_ESP:
        length = _ext_length(packet, nh, offset, end)
        nh, nh_pos = packet[offset], offset
        offset += length
    if nh == NH_ESP:
        return offset, nh_pos
    return -1, -1


class IPsecProcessor:
    def __init__(self, spd, sad, now=0.0, max_events: int = 1024):
        self.spd = spd
        self.sad = sad
        self.now = now
        self.max_events = max_events
        self.counters = {"out_protect": 0, "out_bypass": 0, "out_discard": 0,
                         "in_accept": 0, "in_bypass": 0, "in_discard": 0, "events_lost": 0}
        for reason in DROP_REASONS:
            self.counters[reason] = 0
        self._events: list[dict] = []

    # -- outbound -------------------------------------------------------------------------------------------

    def outbound(self, packet: bytes):
        try:
            rule = self.spd.lookup_out(packet)
        except ParseError as exc:
            return self._drop("out", "parse", None, packet, str(exc))
        action = rule.action
        if action == "bypass":
            self.counters["out_bypass"] += 1
            return "bypass", None, packet
        if action == "discard":
            return self._drop("out", "policy", None, packet, f"rule {rule.name or '(unnamed)'} discards")
        sa = self.sad.outbound(rule.sa)
        if sa is None:
            return self._drop("out", "no_sa", None, packet, f"SA {rule.sa!r} is not installed")
        try:
            if sa.tunnel:
                size = len(packet)
                # Outer payload: the inner packet in ESP, padded per RFC 4303 §2.4.
                esp_len = _ESP_OVERHEAD + size + ((-size - TRAILER_MIN) & 3)
                if esp_len > 0xFFFF:
                    raise ParseError("packet too large for ESP")  # no jumbograms (RFC 2675)
                first_word = 0x60000000 | ((((packet[0] << 8) | packet[1]) & 0x0FF0) << 16)
                outer = _OUTER.pack(first_word, esp_len, NH_ESP, OUTER_HOP_LIMIT, sa.local_bytes, sa.remote_bytes)
                out = sa.seal(NH_IPV6, packet, outer)
            else:
                out = self._transport_seal(sa, packet)
        except SequenceExhausted:
            return self._exhausted(sa)
        except (ParseError, ValueError) as exc:
            return self._drop("out", "parse", sa, packet, str(exc))
        if sa.events:
            self._take_events(sa)
        self.counters["out_protect"] += 1
        return "protect", sa, out

    def _transport_seal(self, sa, packet: bytes) -> bytes:
        end = len(packet)
        if packet[6] in _PRE_ESP:
            split, nh_pos = _clear_split(packet, end)
        else:
            split, nh_pos = HEADER_LEN, 6
        payload = packet[split:]
        size = end - split
        esp_len = _ESP_OVERHEAD + size + ((-size - TRAILER_MIN) & 3)
        payload_len = split - HEADER_LEN + esp_len
        if payload_len > 0xFFFF:
            raise ParseError("packet too large for ESP")
        if nh_pos == 6:
            head = packet[:4] + _LEN_NH.pack(payload_len, NH_ESP) + packet[7:HEADER_LEN]
        else:
            head = bytearray(packet[:split])
            head[4:6] = payload_len.to_bytes(2, "big")
            head[nh_pos] = NH_ESP
            head = bytes(head)
        return sa.seal(packet[nh_pos], payload, head)

    # -- inbound --------------------------------------------------------------------------------------------

    def inbound(self, packet: bytes):
        try:
            if len(packet) < HEADER_LEN or packet[0] >> 4 != 6:
                raise ParseError("not an IPv6 packet")
            end = HEADER_LEN + ((packet[4] << 8) | packet[5])
            if end > len(packet):
                raise ParseError("IPv6 payload length exceeds packet")
            if packet[6] == NH_ESP:
                esp_offset, nh_pos = HEADER_LEN, 6
            else:
                esp_offset, nh_pos = _find_esp(packet, end)
        except ParseError as exc:
            return self._drop("in", "parse", None, packet, str(exc))
        if esp_offset < 0:
            return self._inbound_clear(packet)
        esp = packet[esp_offset:end]
        if len(esp) < MIN_LEN:
            return self._drop("in", "parse", None, packet, f"ESP packet of {len(esp)} octets is too short")
        # SAD key: destination || SPI, a single slice when ESP follows the IPv6 header.
        sa = self.sad.inbound_key(packet[24:44] if esp_offset == HEADER_LEN else packet[24:40] + esp[:4])
        if sa is None:
            spi = int.from_bytes(esp[:4], "big")
            return self._drop("in", "unknown_spi", None, packet, f"no SA for SPI 0x{spi:08x}", spi)
        try:
            next_header, payload = sa.open(esp)
        except ReplayError as exc:
            return self._drop("in", "replay", sa, packet, str(exc))
        except IntegrityError as exc:
            return self._drop("in", "icv", sa, packet, str(exc))
        except EspParseError as exc:
            return self._drop("in", "parse", sa, packet, str(exc))
        if next_header == NH_NONE:
            return self._drop("in", "dummy", sa, packet, "dummy packet (RFC 4303 §2.6)")
        if sa.tunnel:
            if next_header != NH_IPV6:
                return self._drop("in", "policy", sa, packet, f"tunnel SA carried next header {next_header}")
            inner = payload
            if len(inner) < HEADER_LEN or inner[0] >> 4 != 6:
                return self._drop("in", "parse", sa, packet, "inner packet is not IPv6")
            inner_end = HEADER_LEN + ((inner[4] << 8) | inner[5])
            if inner_end != len(inner):
                if inner_end > len(inner):
                    return self._drop("in", "parse", sa, packet, "inner payload length exceeds packet")
                inner = inner[:inner_end]  # RFC 4303 §2.7: strip TFC padding
        else:
            payload_len = esp_offset - HEADER_LEN + len(payload)
            if nh_pos == 6:
                inner = packet[:4] + _LEN_NH.pack(payload_len, next_header) + packet[7:HEADER_LEN] + payload
            else:
                head = bytearray(packet[:esp_offset])
                head[4:6] = payload_len.to_bytes(2, "big")
                head[nh_pos] = next_header
                inner = bytes(head) + payload
        try:
            rule = self.spd.lookup_in(inner)
        except ParseError as exc:
            return self._drop("in", "parse", sa, packet, f"inner packet: {exc}")
        # RFC 4301 §5.2 step 4: what came out of the SA must be traffic the SPD assigns to that SA.
        if rule.sa != sa.name or rule.action != "protect":
            return self._drop("in", "policy", sa, inner, f"inner packet does not match a rule protected by "
                                                         f"{sa.name!r}")
        self.counters["in_accept"] += 1
        return "accept", sa, inner

    def _inbound_clear(self, packet: bytes):
        try:
            rule = self.spd.lookup_in(packet)
        except ParseError as exc:
            return self._drop("in", "parse", None, packet, str(exc))
        if rule.action == "bypass":
            self.counters["in_bypass"] += 1
            return "bypass", None, packet
        # RFC 4301 §5.2 step 3: clear traffic the SPD wants protected (or discarded) is dropped.
        return self._drop("in", "policy", None, packet, f"clear packet hits {rule.action} rule "
                                                       f"{rule.name or '(unnamed)'}")

    # -- events and status ----------------------------------------------------------------------------------

    def _time(self):
        now = self.now
        return now() if callable(now) else now

    def _push(self, event: dict) -> None:
        if len(self._events) >= self.max_events:
            self.counters["events_lost"] += 1
            return
        event["at"] = self._time()
        self._events.append(event)

    def _drop(self, direction: str, reason: str, sa, packet, detail: str, spi: int | None = None):
        counters = self.counters
        counters[reason] += 1
        counters[direction + "_discard"] += 1
        if len(self._events) >= self.max_events:
            counters["events_lost"] += 1
            return "discard", sa, None
        event = {"event": "esp_drop", "direction": direction, "reason": reason,
                 "sa": sa.name if sa is not None else None}
        if sa is not None or spi is not None:
            event["spi"] = f"0x{sa.spi if spi is None else spi:08x}"
        if packet is not None and len(packet) >= HEADER_LEN:
            event["src"] = ntop(packet[8:24])
            event["dst"] = ntop(packet[24:40])
        event["detail"] = detail
        self._push(event)
        return "discard", sa, None

    def _exhausted(self, sa):
        # The SA records one seq_exhausted event; repeating it for every refused packet would only flood.
        self.counters["seq_exhausted"] += 1
        self.counters["out_discard"] += 1
        if sa.events:
            self._take_events(sa)
        return "discard", sa, None

    def _take_events(self, sa) -> None:
        for event in sa.pop_events():
            self._push(event)

    def pop_events(self) -> list[dict]:
        """Queued events, oldest first (including those SAs recorded outside this processor)."""
        for sa in self.sad:
            if sa.events:
                self._take_events(sa)
        events, self._events = self._events, []
        return events

    def status(self) -> dict:
        return {"sas": self.sad.status(), "spd": self.spd.to_config(), "counters": dict(self.counters)}
