"""Typed sections of a mobile node's configuration, checked when the node loads them.

A node's configuration file is input like any other: a field of the wrong type or an address that does not
parse must stop the node with one line naming the field (``ConfigError``), not with a traceback halfway
through setting up its TUN and sockets. ``MobileNodeSection.from_dict`` checks the "mobility" section of a
mobile node; the runtime then reads typed fields. The lab (``topologies/lab.py``) builds the same sections
and writes them with ``to_dict``, so both sides share one contract; every SA inside is an ``SaSpec``
(``nodeapps/esp/sa_spec.py``). The defaults are written here once; the lab and the VCM agent take theirs
from the same constants.
"""
from __future__ import annotations

import ipaddress
from dataclasses import MISSING, dataclass, field, fields
from typing import Optional

from nodeapps.esp.errors import ConfigError as EspConfigError
from nodeapps.esp.sa_spec import SaPair, SaSpec
from nodeapps.mobility.constants import (HOME_REGISTRATION_LIFETIME, INITIAL_BINDACK_TIMEOUT,
                                         INITIAL_BINDACK_TIMEOUT_FIRSTREG)
from nodeapps.vcm.mobile_agent import INBOUND_GRACE_S


class SectionError(ValueError):
    """One field of a section is unusable; the message names it (``config.ConfigError`` wraps it)."""


# ---- field checks: each returns the value or raises SectionError naming ``where`` -------------------------

def _text(value, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SectionError(f"{where} must be a non-empty string, not {value!r}")
    return value


def _address(value, where: str) -> str:
    try:
        if not isinstance(value, str):   # ipaddress takes an int as an address, too
            raise TypeError
        return str(ipaddress.IPv6Address(value))
    except (ValueError, TypeError):
        raise SectionError(f"{where} holds {value!r}, not an IPv6 address") from None


def _prefix(value, where: str) -> str:
    try:
        if not isinstance(value, str):
            raise TypeError
        return str(ipaddress.IPv6Network(value, strict=False))
    except (ValueError, TypeError):
        raise SectionError(f"{where} holds {value!r}, not an IPv6 prefix") from None


def _whole(value, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SectionError(f"{where} must be a whole number from {low} to {high}, not {value!r}")
    return value


def _seconds(value, where: str, high: float = 3600.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= high:
        raise SectionError(f"{where} holds {value!r}, not seconds in (0, {high:g}]")
    return float(value)


def _one_of(value, where: str, choices: tuple):
    if value not in choices:
        raise SectionError(f"{where} must be one of {', '.join(map(repr, choices))}, not {value!r}")
    return value


def _mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise SectionError(f"{where} must be an object, not {type(value).__name__}")
    return value


def _list(value, where: str) -> list:
    if not isinstance(value, list):
        raise SectionError(f"{where} must be a list, not {type(value).__name__}")
    return value


_REQUIRED = object()


def _field(data: dict, where: str, key: str, check, *args, default=_REQUIRED):
    """``data[key]`` passed through ``check`` under its path ``where.key``. Without ``default`` the key must
    be there; with one, a missing key means the default (checked too), and with ``default=None`` an
    explicit null is absent as well."""
    if key in data:
        value = data[key]
    elif default is _REQUIRED:
        raise SectionError(f"{where}.{key} is missing")
    else:
        value = default
    if value is None and default is None:
        return None
    return check(value, f"{where}.{key}", *args)


def _sa_pair(value, where: str) -> SaPair:
    """{"out": SA, "in": SA}, each SA checked (``SaSpec``: SPI range, key and salt lengths, addresses)."""
    try:
        return SaPair.from_dict(value, where)
    except EspConfigError as exc:
        raise SectionError(str(exc)) from None


def _node_names(value, where: str) -> dict:
    """{"<node id>": "name"} (JSON keys are strings) -> {node id: name}."""
    names = {}
    for key, name in _mapping(value, where).items():
        if not str(key).isdigit():
            raise SectionError(f"{where} key {key!r} is not a node id")
        names[int(key)] = _text(name, f"{where}[{key}]")
    return names


def _no_unknown(data: dict, cls, where: str) -> None:
    known = {f.name.rstrip("_") for f in fields(cls)}   # in_ is "in" in the file
    unknown = sorted(set(data) - known)
    if unknown:
        raise SectionError(f"{where}.{unknown[0]} is not a field of this section")


def _plain(value):
    """A section's value as JSON holds it: sections as objects, tuples as lists, node ids as text keys."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _left_out(section, f) -> bool:
    """An optional field that is None, empty or a section at its defaults: its key is left out, and
    from_dict reads that back."""
    if f.default is MISSING and f.default_factory is MISSING:
        return False
    value = getattr(section, f.name)
    return value in (None, (), {}) or isinstance(value, _Section) and value == f.default


class _Section:
    """``to_dict``: the fields under their names in the file (``in_`` as "in"); ``from_dict`` reads it back."""

    def to_dict(self) -> dict:
        return {f.name.rstrip("_"): _plain(getattr(self, f.name)) for f in fields(self) if not _left_out(self, f)}


# ---- sections -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SaPeer(_Section):
    """A peer protected by its own ESP SA pair (Mobility Header SAs, RFC 3776): its address and the pair."""
    address: str
    out: SaSpec
    in_: SaSpec

    @classmethod
    def from_dict(cls, data, where: str) -> "SaPeer":
        data = _mapping(data, where)
        address = _field(data, where, "address", _address)
        pair = _sa_pair(data, where)
        return cls(address=address, out=pair.out, in_=pair.in_)

    @classmethod
    def of(cls, address: str, pair: SaPair) -> "SaPeer":
        return cls(address=address, out=pair.out, in_=pair.in_)


@dataclass(frozen=True)
class MobilityTimers(_Section):
    """Mobile IPv6 timers of a mobile node (RFC 6275 §13 defaults, shortened lifetime for the lab)."""
    home_lifetime: float = HOME_REGISTRATION_LIFETIME
    initial_bindack_timeout: float = INITIAL_BINDACK_TIMEOUT
    initial_bindack_timeout_first_reg: float = INITIAL_BINDACK_TIMEOUT_FIRSTREG

    @classmethod
    def from_dict(cls, data, where: str = "mobility.timers") -> "MobilityTimers":
        data = _mapping({} if data is None else data, where)
        _no_unknown(data, cls, where)
        return cls(**{key: _seconds(value, f"{where}.{key}") for key, value in data.items()})


TIMER_NAMES = tuple(f.name for f in fields(MobilityTimers))
VCM_VARIANTS = ("in-sg", "host")
VCM_PAIRS = ("home-ro", "care-of")
VCM_CONTROLS = ("encapsulated", "direct")
PEER_DATA = ("clear", "vcm-esp")


@dataclass(frozen=True)
class VcmSection(_Section):
    """How the MN reaches the VCM and what it is to it (docs/vcm-runtime.md)."""
    node_id: int
    address: str
    external: str
    internal: Optional[str] = None
    sg_address: Optional[str] = None        # source of the SG's care-of notices (default: the VCM's address)
    names: dict = field(default_factory=dict)   # VCM node id -> node name, for the event log
    variant: str = "in-sg"
    control: str = "encapsulated"
    pair: Optional[str] = None              # "home-ro": over the MN–MN binding; otherwise between care-of addresses
    sa: Optional[SaPair] = None             # the MN–VCM SA pair (VCM on its own host)
    inbound_grace: float = INBOUND_GRACE_S

    @classmethod
    def from_dict(cls, data, where: str = "mobility.vcm") -> "VcmSection":
        data = _mapping(data, where)
        _no_unknown(data, cls, where)
        variant = _field(data, where, "variant", _one_of, VCM_VARIANTS, default="in-sg")
        sa = _field(data, where, "sa", _sa_pair, default=None)
        if variant == "host" and sa is None:
            raise SectionError(f"{where}.sa is missing (a VCM on its own host needs the MN–VCM SA pair)")
        return cls(node_id=_field(data, where, "node_id", _whole, 1, 2 ** 32 - 1),
                   address=_field(data, where, "address", _address),
                   external=_field(data, where, "external", _address),
                   internal=_field(data, where, "internal", _address, default=None),
                   sg_address=_field(data, where, "sg_address", _address, default=None),
                   names=_field(data, where, "names", _node_names, default={}), variant=variant,
                   control=_field(data, where, "control", _one_of, VCM_CONTROLS, default="encapsulated"),
                   pair=_field(data, where, "pair", _one_of, VCM_PAIRS, default=None), sa=sa,
                   inbound_grace=_field(data, where, "inbound_grace", _seconds, default=INBOUND_GRACE_S))


@dataclass(frozen=True)
class MeshPeer(_Section):
    """Another MN and the SA pair held with it from the start; ``care_of`` None while it is in the office."""
    node_id: int
    home: str
    out: SaSpec
    in_: SaSpec
    care_of: Optional[str] = None
    name: Optional[str] = None

    @classmethod
    def from_dict(cls, data, where: str) -> "MeshPeer":
        data = _mapping(data, where)
        _no_unknown(data, cls, where)
        pair = _sa_pair(data, where)
        return cls(node_id=_field(data, where, "node_id", _whole, 1, 2 ** 32 - 1),
                   home=_field(data, where, "home", _address), out=pair.out, in_=pair.in_,
                   care_of=_field(data, where, "care_of", _address, default=None),
                   name=_field(data, where, "name", _text, default=None))


@dataclass(frozen=True)
class MeshSection(_Section):
    """Pre-distributed SA pairs with every other MN (the mesh baseline)."""
    sg_address: str
    peers: tuple
    names: dict = field(default_factory=dict)
    node_id: Optional[int] = None   # this MN's node id, as the SG's care-of notices name it

    @classmethod
    def from_dict(cls, data, where: str = "mobility.mesh") -> "MeshSection":
        data = _mapping(data, where)
        _no_unknown(data, cls, where)
        peers = _field(data, where, "peers", _list)
        return cls(sg_address=_field(data, where, "sg_address", _address),
                   peers=tuple(MeshPeer.from_dict(p, f"{where}.peers[{i}]") for i, p in enumerate(peers)),
                   names=_field(data, where, "names", _node_names, default={}),
                   node_id=_field(data, where, "node_id", _whole, 1, 2 ** 32 - 1, default=None))


@dataclass(frozen=True)
class MobilePeer(_Section):
    """Another MN reached by MN–MN route optimisation: its internal (VPN) and external home addresses."""
    internal: str
    external: str
    name: Optional[str] = None

    @classmethod
    def from_dict(cls, data, where: str) -> "MobilePeer":
        data = _mapping(data, where)
        return cls(internal=_field(data, where, "internal", _address),
                   external=_field(data, where, "external", _address),
                   name=_field(data, where, "name", _text, default=None))


def _mobile_peers(value, where: str) -> tuple:
    return tuple(MobilePeer.from_dict(p, f"{where}[{i}]") for i, p in enumerate(_list(value, where)))


def _transport_peers(value, where: str) -> tuple:
    """Mobility SA peers: {"address", "out", "in"} each."""
    return tuple(SaPeer.from_dict(peer, f"{where}[{i}]") for i, peer in enumerate(_list(value, where)))


@dataclass(frozen=True)
class ExternalSection(_Section):
    """Embodiment 1: the external home address, its public home agent and who is reached through it."""
    address: str
    home_agent: str
    peers: tuple = ()
    tunnel_peer: Optional[SaPeer] = None
    correspondents: tuple = ()
    mobile_peers: tuple = ()
    peer_data: str = "clear"

    @classmethod
    def from_dict(cls, data, where: str = "mobility.external") -> "ExternalSection":
        data = _mapping(data, where)
        _no_unknown(data, cls, where)
        correspondents = _field(data, where, "correspondents", _list, default=[])
        return cls(address=_field(data, where, "address", _address),
                   home_agent=_field(data, where, "home_agent", _address),
                   peers=_field(data, where, "peers", _transport_peers, default=[]),
                   tunnel_peer=_field(data, where, "tunnel_peer", SaPeer.from_dict, default=None),
                   correspondents=tuple(_address(c, f"{where}.correspondents[{i}]")
                                        for i, c in enumerate(correspondents)),
                   mobile_peers=_field(data, where, "mobile_peers", _mobile_peers, default=[]),
                   peer_data=_field(data, where, "peer_data", _one_of, PEER_DATA, default="clear"))


@dataclass(frozen=True)
class MobileNodeSection(_Section):
    """The "mobility" section of a mobile node."""
    interface: str
    address: str
    home_prefix: str
    host_id: int
    security_gateway: str
    home_agent: str
    vpn_prefixes: tuple
    tunnel_sas: tuple
    peers: tuple = ()
    tunnel_peers: tuple = ()
    timers: MobilityTimers = MobilityTimers()
    announcement: Optional[dict] = None
    announcement_lifetime: Optional[float] = None
    sg_home_address: Optional[str] = None
    vcm: Optional[VcmSection] = None
    mesh: Optional[MeshSection] = None
    external: Optional[ExternalSection] = None
    mobile_peers: tuple = ()
    peer_data: str = "clear"

    @classmethod
    def from_dict(cls, data, where: str = "mobility") -> "MobileNodeSection":
        data = _mapping(data, where)
        _no_unknown(data, cls, where)
        vpn = _field(data, where, "vpn_prefixes", _list)
        if not vpn:
            raise SectionError(f"{where}.vpn_prefixes must name at least one prefix")
        tunnel_sas = _field(data, where, "tunnel_sas", _list)
        if len(tunnel_sas) != 2:
            raise SectionError(f"{where}.tunnel_sas must name two SAs (out, in), not {len(tunnel_sas)}")
        if data.get("vcm") and data.get("mesh"):
            raise SectionError(f"{where}.vcm and {where}.mesh exclude each other")
        return cls(
            interface=_field(data, where, "interface", _text),
            address=_field(data, where, "address", _address),
            home_prefix=_field(data, where, "home_prefix", _prefix),
            host_id=_field(data, where, "host_id", _whole, 0, 2 ** 64 - 1),
            security_gateway=_field(data, where, "security_gateway", _address),
            home_agent=_field(data, where, "home_agent", _address),
            vpn_prefixes=tuple(_prefix(p, f"{where}.vpn_prefixes[{i}]") for i, p in enumerate(vpn)),
            tunnel_sas=tuple(_text(n, f"{where}.tunnel_sas[{i}]") for i, n in enumerate(tunnel_sas)),
            peers=_field(data, where, "peers", _transport_peers, default=[]),
            tunnel_peers=_field(data, where, "tunnel_peers", _transport_peers, default=[]),
            timers=MobilityTimers.from_dict(data.get("timers"), f"{where}.timers"),
            announcement=data.get("announcement"),   # checked by config._check_announcement
            announcement_lifetime=_field(data, where, "announcement_lifetime", _seconds, default=None),
            sg_home_address=_field(data, where, "sg_home_address", _address, default=None),
            vcm=VcmSection.from_dict(data["vcm"], f"{where}.vcm") if data.get("vcm") else None,
            mesh=MeshSection.from_dict(data["mesh"], f"{where}.mesh") if data.get("mesh") else None,
            external=ExternalSection.from_dict(data["external"], f"{where}.external") if data.get("external") else None,
            mobile_peers=_field(data, where, "mobile_peers", _mobile_peers, default=[]),
            peer_data=_field(data, where, "peer_data", _one_of, PEER_DATA, default="clear"))

