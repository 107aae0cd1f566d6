"""Security Policy Database: ordered rules, first match wins (RFC 4301 §4.4.1).

Each rule has a direction ("out" or "in"), a :class:`Selector` (source and destination prefixes, upper-layer
protocol, port ranges) and an action: "protect" (with the name of the SA), "bypass" or "discard".
When no rule matches, traffic from or to a configured VPN prefix is discarded and all other traffic
bypasses IPsec: the VPN's addresses are never reachable in clear by accident.

The per-packet call is :meth:`SPD.lookup_packet`: a flow key (protocol, addresses, ports) is cut from the
packet and looked up in a per-direction cache, so a known flow costs one slice and one dict hit. Every change
builds a new rule tuple and new empty caches and installs them with one assignment, so a lookup sees either
the old rule set or the new one, never a mix (the VCM swaps rules at run time).
"""
from __future__ import annotations

import ipaddress

from ..ipv6 import HEADER_LEN, NH_AH, NH_DSTOPTS, NH_FRAGMENT, NH_HOPOPTS, NH_ROUTING, ParseError
from .errors import ConfigError

ACTIONS = ("protect", "bypass", "discard")
DIRECTIONS = ("out", "in")
PROTOCOL_NAMES = {"tcp": 6, "udp": 17, "sctp": 132, "icmpv6": 58, "ipv6-icmp": 58, "esp": 50, "ah": 51,
                  "mh": 135, "mobility": 135, "ipv6": 41, "none": 59}
PORT_PROTOCOLS = frozenset({6, 17, 132})
CACHE_LIMIT = 65536  # flows per direction before the cache starts over
_RULE_KEYS = frozenset({"direction", "src", "dst", "proto", "sport", "dport", "action", "sa", "name"})
_SKIPPED_EXT = frozenset({NH_HOPOPTS, NH_ROUTING, NH_DSTOPTS})
_EXT_BEFORE_UPPER = _SKIPPED_EXT | {NH_FRAGMENT, NH_AH}
_ANY = ipaddress.IPv6Network("::/0")


def _network(field: str, value, where: str) -> ipaddress.IPv6Network:
    if value is None or value == "any":
        return _ANY
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {field}: expected an IPv6 prefix, got {value!r}")
    try:
        return ipaddress.IPv6Network(value.strip())
    except ValueError as exc:
        raise ConfigError(f"{where}: {field}: {exc}") from None


def _protocol(value, where: str):
    if value is None or value == "any":
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in PROTOCOL_NAMES:
            return PROTOCOL_NAMES[text]
        if text.isascii() and text.isdigit():   # not "²": isdigit() alone admits what int() refuses
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return value
    raise ConfigError(f"{where}: proto: expected a protocol name or number 0..255, got {value!r}")


def _port_range(field: str, value, where: str):
    if value is None or value == "any":
        return None
    low = high = None
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif isinstance(value, str):
        parts = value.strip().split("-")
        if len(parts) in (1, 2) and all(p.strip().isascii() and p.strip().isdigit() for p in parts):
            low, high = int(parts[0]), int(parts[-1])
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(p, int) and not isinstance(p, bool) for p in value):
        low, high = value
    if low is None or not 0 <= low <= high <= 65535:
        raise ConfigError(f"{where}: {field}: expected a port or range 'low-high' within 0..65535, got {value!r}")
    return (low, high)


class Selector:
    """Traffic selector. Prefixes are ``IPv6Network``; ports are (low, high) ranges or None for any."""

    __slots__ = ("src", "dst", "next_header", "sport", "dport", "_src_net", "_src_mask", "_dst_net", "_dst_mask")

    def __init__(self, src="::/0", dst="::/0", next_header=None, sport=None, dport=None, *, where="selector"):
        self.src = src if isinstance(src, ipaddress.IPv6Network) else _network("src", src, where)
        self.dst = dst if isinstance(dst, ipaddress.IPv6Network) else _network("dst", dst, where)
        self.next_header = _protocol(next_header, where)
        self.sport = _port_range("sport", sport, where)
        self.dport = _port_range("dport", dport, where)
        if (self.sport or self.dport) and self.next_header not in PORT_PROTOCOLS:
            raise ConfigError(f"{where}: sport/dport: need proto tcp, udp or sctp")
        self._src_net = int(self.src.network_address)
        self._src_mask = int(self.src.netmask)
        self._dst_net = int(self.dst.network_address)
        self._dst_mask = int(self.dst.netmask)

    def matches(self, src: int, dst: int, next_header: int, ports) -> bool:
        """Addresses as ints; ``ports`` is (sport, dport) or None when the packet carries none."""
        if src & self._src_mask != self._src_net or dst & self._dst_mask != self._dst_net:
            return False
        if self.next_header is not None and self.next_header != next_header:
            return False
        if self.sport is not None:
            if ports is None or not self.sport[0] <= ports[0] <= self.sport[1]:
                return False
        if self.dport is not None:
            if ports is None or not self.dport[0] <= ports[1] <= self.dport[1]:
                return False
        return True


def _ports_text(ports):
    if ports is None:
        return None
    return ports[0] if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"


class Rule:
    __slots__ = ("direction", "selector", "action", "sa", "name", "is_default")

    def __init__(self, direction: str, selector: Selector, action: str, sa: str | None = None,
                 name: str | None = None, *, is_default: bool = False):
        where = f"SPD rule {name!r}" if name else "SPD rule"
        if direction not in DIRECTIONS:
            raise ConfigError(f"{where}: direction: must be 'out' or 'in', got {direction!r}")
        if action not in ACTIONS:
            raise ConfigError(f"{where}: action: must be protect, bypass or discard, got {action!r}")
        if action == "protect" and (not isinstance(sa, str) or not sa):
            raise ConfigError(f"{where}: sa: action protect needs the name of an SA")
        if action != "protect" and sa is not None:
            raise ConfigError(f"{where}: sa: only action protect names an SA")
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigError(f"{where}: name: must be a non-empty string")
        self.direction = direction
        self.selector = selector
        self.action = action
        self.sa = sa
        self.name = name
        self.is_default = is_default

    @classmethod
    def from_config(cls, config, index=None) -> "Rule":
        where = f"SPD rule {index}" if index is not None else "SPD rule"
        if not isinstance(config, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(config).__name__}")
        if config.get("name"):
            where = f"SPD rule {config['name']!r}"
        unknown = sorted(str(k) for k in config if k not in _RULE_KEYS)
        if unknown:
            raise ConfigError(f"{where}: {unknown[0]}: unknown field")
        for field in ("direction", "action"):
            if field not in config:
                raise ConfigError(f"{where}: {field}: missing")
        selector = Selector(config.get("src"), config.get("dst"), config.get("proto"), config.get("sport"),
                            config.get("dport"), where=where)
        try:
            return cls(config["direction"], selector, config["action"], config.get("sa"), config.get("name"))
        except ConfigError as exc:
            if index is None or config.get("name"):
                raise
            raise ConfigError(str(exc).replace("SPD rule", where, 1)) from None

    def to_config(self) -> dict:
        sel = self.selector
        config = {"direction": self.direction, "src": str(sel.src), "dst": str(sel.dst), "proto": sel.next_header,
                  "sport": _ports_text(sel.sport), "dport": _ports_text(sel.dport), "action": self.action,
                  "sa": self.sa}
        if self.name is not None:
            config["name"] = self.name
        return config

    def __repr__(self) -> str:
        return f"<Rule {self.to_config()}>"


def flow_key(packet: bytes) -> bytes:
    """Protocol || one ignored octet || source || destination [|| ports]: what selectors look at, hashable.

    For a packet without extension headers that is one slice of the header (the ignored octet is the hop
    limit, so a flow may take a few cache entries, never a wrong one).

    ``protocol`` is the upper layer after hop-by-hop, routing, destination options, fragment and AH headers
    (ESP counts as an upper layer: what it hides cannot be selected on). Ports are present only for TCP,
    UDP and SCTP in a first (or only) fragment.
    """
    if len(packet) < HEADER_LEN or packet[0] >> 4 != 6:
        raise ParseError("not an IPv6 packet")
    nh = packet[6]
    if nh in PORT_PROTOCOLS:
        return packet[6:44] if len(packet) >= HEADER_LEN + 4 else packet[6:40]
    if nh in _EXT_BEFORE_UPPER:
        return _slow_flow_key(packet, nh)
    return packet[6:40]


def _slow_flow_key(packet: bytes, nh: int) -> bytes:
    offset = HEADER_LEN
    end = len(packet)
    first_fragment = True
    while True:
        if nh in _SKIPPED_EXT:
            if offset + 2 > end:
                raise ParseError("truncated extension header")
            length = (packet[offset + 1] + 1) * 8
        elif nh == NH_FRAGMENT:
            if offset + 8 > end:
                raise ParseError("truncated fragment header")
            length = 8
            if ((packet[offset + 2] << 8) | packet[offset + 3]) & 0xFFF8:
                first_fragment = False  # later fragments carry no ports (RFC 4301 §7)
        elif nh == NH_AH:
            if offset + 2 > end:
                raise ParseError("truncated AH")
            length = (packet[offset + 1] + 2) * 4  # RFC 4302 §2.2
        else:
            break
        if offset + length > end:
            raise ParseError("extension header runs past packet end")
        nh = packet[offset]
        offset += length
    key = bytes((nh, 0)) + packet[8:40]
    if nh in PORT_PROTOCOLS and first_fragment and offset + 4 <= end:
        key += packet[offset:offset + 4]
    return key


class SPD:
    def __init__(self, rules=(), vpn_prefixes=()):
        self._vpn = ()
        # (all rules, outbound rules, inbound rules, outbound cache, inbound cache, VPN (net, mask) pairs)
        self._state = ((), (), (), {}, {}, ())
        self.set_vpn_prefixes(vpn_prefixes)
        self.set_rules(rules)

    @classmethod
    def from_config(cls, config) -> "SPD":
        if not isinstance(config, dict):
            raise ConfigError(f"SPD config must be a mapping, got {type(config).__name__}")
        unknown = sorted(str(k) for k in config if k not in ("vpn_prefixes", "rules"))
        if unknown:
            raise ConfigError(f"SPD: {unknown[0]}: unknown field")
        rules = config.get("rules", [])
        if not isinstance(rules, list):
            raise ConfigError("SPD: rules: expected a list")
        prefixes = config.get("vpn_prefixes", [])
        if not isinstance(prefixes, list):
            raise ConfigError("SPD: vpn_prefixes: expected a list")
        return cls([Rule.from_config(rule, i) for i, rule in enumerate(rules)], prefixes)

    def to_config(self) -> dict:
        return {"vpn_prefixes": [str(p) for p in self._vpn], "rules": [r.to_config() for r in self.rules]}

    # -- changes: each builds the whole new state, then installs it with one assignment -------------------

    @property
    def rules(self) -> tuple:
        return self._state[0]

    @property
    def vpn_prefixes(self) -> tuple:
        return self._vpn

    def set_vpn_prefixes(self, prefixes) -> None:
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        vpn = tuple(_network("vpn_prefixes", p, "SPD") for p in prefixes)
        self._vpn = vpn
        self._install(self._state[0])

    def set_rules(self, rules) -> None:
        self._install(self._coerce(rules))

    def insert(self, rule, index: int | None = None) -> Rule:
        """Insert at ``index`` of :attr:`rules` (default: last); returns the Rule."""
        (new,) = self._coerce([rule])
        rules = list(self._state[0])
        rules.insert(len(rules) if index is None else index, new)
        self._install(self._checked(rules))
        return new

    def remove(self, rule) -> Rule:
        """Remove a rule given as the Rule, its name, or its config dict; KeyError if absent."""
        rules = list(self._state[0])
        position = self._position(rules, rule)
        removed = rules.pop(position)
        self._install(tuple(rules))
        return removed

    def replace(self, old, new) -> None:
        """Swap rule(s) ``old`` (Rule, name, or a list of them) for ``new`` (rule or list) in one step.

        The new rules take the position of the first old rule; nothing changes if anything is invalid.
        """
        olds = old if isinstance(old, (list, tuple)) else [old]
        news = self._coerce(new if isinstance(new, (list, tuple)) else [new])
        rules = list(self._state[0])
        positions = sorted({self._position(rules, o) for o in olds})
        if not positions:
            raise KeyError("no rule to replace")
        first = positions[0]
        for p in reversed(positions):
            del rules[p]
        rules[first:first] = news
        self._install(self._checked(rules))

    def _coerce(self, rules) -> tuple:
        out = []
        for i, rule in enumerate(rules):
            out.append(rule if isinstance(rule, Rule) else Rule.from_config(rule, i))
        return self._checked(out)

    @staticmethod
    def _checked(rules) -> tuple:
        names = [r.name for r in rules if r.name is not None]
        if len(names) != len(set(names)):
            dup = next(n for n in names if names.count(n) > 1)
            raise ConfigError(f"SPD rule {dup!r}: name: used twice")
        return tuple(rules)

    @staticmethod
    def _position(rules, rule) -> int:
        if isinstance(rule, dict):
            # A config dict: by name when it has one, else by equal contents.
            rule = rule["name"] if rule.get("name") else Rule.from_config(rule).to_config()
        for i, r in enumerate(rules):
            if r is rule or (isinstance(rule, str) and r.name == rule) or (
                    isinstance(rule, dict) and r.to_config() == rule):
                return i
        raise KeyError(str(rule))

    def _install(self, rules: tuple) -> None:
        rules_out = tuple(r for r in rules if r.direction == "out")
        rules_in = tuple(r for r in rules if r.direction == "in")
        vpn = tuple((int(n.network_address), int(n.netmask)) for n in self._vpn)
        self._state = (rules, rules_out, rules_in, {}, {}, vpn)

    # -- lookups --------------------------------------------------------------------------------------------

    def lookup_packet(self, direction: str, packet: bytes) -> Rule:
        """Rule for an IPv6 packet (first match, else the default). ParseError if it is not IPv6."""
        return self.lookup_out(packet) if direction == "out" else self.lookup_in(packet)

    def lookup_out(self, packet: bytes) -> Rule:
        state = self._state
        # flow_key's common case, inlined: this runs once per packet.
        if len(packet) >= 44 and packet[0] & 0xF0 == 0x60 and packet[6] in PORT_PROTOCOLS:
            key = packet[6:44]
        else:
            key = flow_key(packet)
        rule = state[3].get(key)
        return rule if rule is not None else self._miss(state, "out", key)

    def lookup_in(self, packet: bytes) -> Rule:
        state = self._state
        if len(packet) >= 44 and packet[0] & 0xF0 == 0x60 and packet[6] in PORT_PROTOCOLS:
            key = packet[6:44]
        else:
            key = flow_key(packet)
        rule = state[4].get(key)
        return rule if rule is not None else self._miss(state, "in", key)

    def lookup(self, direction: str, src: bytes, dst: bytes, next_header: int, sport: int | None = None,
               dport: int | None = None) -> Rule:
        """Rule for the given selector values (addresses as 16 bytes); same cache as lookup_packet."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'out' or 'in', got {direction!r}")
        key = bytes((next_header, 0)) + src + dst
        if next_header in PORT_PROTOCOLS and sport is not None and dport is not None:
            key += sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
        state = self._state
        rule = state[3 if direction == "out" else 4].get(key)
        return rule if rule is not None else self._miss(state, direction, key)

    def _miss(self, state, direction: str, key: bytes) -> Rule:
        rules, cache = (state[1], state[3]) if direction == "out" else (state[2], state[4])
        rule = self._resolve(rules, state[5], direction, key)
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[key] = rule
        return rule

    @staticmethod
    def _resolve(rules, vpn_ranges, direction: str, key: bytes) -> Rule:
        next_header = key[0]
        src = int.from_bytes(key[2:18], "big")
        dst = int.from_bytes(key[18:34], "big")
        ports = ((key[34] << 8) | key[35], (key[36] << 8) | key[37]) if len(key) == 38 else None
        for rule in rules:
            if rule.selector.matches(src, dst, next_header, ports):
                return rule
        for net, mask in vpn_ranges:
            if src & mask == net or dst & mask == net:
                return _DEFAULT_DISCARD[direction]
        return _DEFAULT_BYPASS[direction]

    def cache_size(self) -> int:
        return len(self._state[3]) + len(self._state[4])


_DEFAULT_DISCARD = {d: Rule(d, Selector(), "discard", name="default-discard", is_default=True)
                    for d in DIRECTIONS}
_DEFAULT_BYPASS = {d: Rule(d, Selector(), "bypass", name="default-bypass", is_default=True)
                   for d in DIRECTIONS}
