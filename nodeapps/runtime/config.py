"""Node configuration files: what a node process is told at start (addresses, SAs, SPD)."""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from nodeapps.esp.processor import IPsecProcessor
from nodeapps.esp.sa import SecurityAssociation
from nodeapps.esp.sad import SAD
from nodeapps.esp.spd import SPD
from nodeapps.esp.errors import ConfigError as EspConfigError
from nodeapps.esp.sa_spec import SaSpec
from nodeapps.mobility import announcement
from nodeapps.runtime.sections import MobileNodeSection, SaPeer, SectionError

ROLES = ("mobile-node", "security-gateway", "home-agent", "correspondent", "vcm")


class ConfigError(ValueError):
    """A node configuration that cannot be used; the message names the field."""


@dataclass(frozen=True)
class NodeConfig:
    node: str
    role: str
    tun_name: str
    tun_mtu: int
    tun_addresses: list
    tun_routes: list
    tun_offload: bool
    outer_interfaces: list
    sas: tuple    # of SaSpec, checked as the file is read
    spd: dict
    event_log: str | None
    control_socket: str
    mobility: dict | None = None
    event_rate_limit: int = 20   # events of one kind and reason per second before the log drops repeats
    sequence_store: str | None = None   # file that keeps SA sequence numbers across restarts
    fault_injection: bool = False   # control commands that break the node on purpose (tests, experiments)
    key_log: str | None = None      # file the node appends SAs it creates at run time to (lab keys)
    mobile_node: MobileNodeSection | None = None   # the mobility section of a mobile node, typed and checked

    @classmethod
    def from_file(cls, path: str) -> "NodeConfig":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config {path} is not JSON: {exc.msg} at line {exc.lineno}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> "NodeConfig":
        if not isinstance(data, dict):
            raise ConfigError("config must be a JSON object")

        def need(key, kind, where=data, prefix=""):
            if key not in where:
                raise ConfigError(f"config field {prefix}{key} is missing")
            value = where[key]
            if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
                raise ConfigError(f"config field {prefix}{key} has the wrong type")
            return value

        node = need("node", str)
        role = need("role", str)
        if role not in ROLES:
            raise ConfigError(f"config field role must be one of {', '.join(ROLES)}, not {role!r}")
        tun = need("tun", dict)
        mtu = need("mtu", int, tun, "tun.")
        if not 1280 <= mtu <= 65535:
            raise ConfigError(f"config field tun.mtu must be 1280..65535 (IPv6 minimum MTU), not {mtu}")
        addresses = need("addresses", list, tun, "tun.")
        routes = need("routes", list, tun, "tun.")
        for item in addresses:
            _check_prefix(item, "tun.addresses")
        for item in routes:
            _check_prefix(item, "tun.routes")
        interfaces = need("outer_interfaces", list)
        if not interfaces or not all(isinstance(i, str) and i for i in interfaces):
            raise ConfigError("config field outer_interfaces must name at least one interface")
        return cls(node=node, role=role, tun_name=need("name", str, tun, "tun."), tun_mtu=mtu,
                   tun_addresses=addresses, tun_routes=routes, tun_offload=bool(tun.get("offload", True)),
                   outer_interfaces=interfaces,
                   sas=_sas(need("sas", list)), spd=need("spd", dict),
                   event_log=data.get("event_log"), control_socket=need("control_socket", str),
                   mobility=_mobility(data.get("mobility"), role),
                   mobile_node=_mobile_node(data.get("mobility"), role),
                   event_rate_limit=_event_rate_limit(data.get("event_rate_limit", 20)),
                   sequence_store=_optional_path(data.get("sequence_store"), "sequence_store"),
                   fault_injection=_flag(data, "fault_injection"),
                   key_log=_optional_path(data.get("key_log"), "key_log"))


def _sas(entries: list) -> tuple:
    try:
        return tuple(SaSpec.from_dict(entry, f"sas[{i}]") for i, entry in enumerate(entries))
    except EspConfigError as exc:
        raise ConfigError(f"config field {exc}") from None


def _optional_path(value, field: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"config field {field} must be a file path, not {value!r}")
    return value


def _flag(data: dict, key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"config field {key} must be true or false, not {value!r}")
    return value


def _event_rate_limit(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ConfigError(f"config field event_rate_limit must be a whole number from 1 to 1000000, not {value!r}")
    return value


def _mobility(section, role: str) -> dict | None:
    """The optional "mobility" section (Mobile IPv6 roles, see nodeapps.roles); required for a home agent."""
    if section is None:
        if role in ("home-agent", "correspondent"):
            raise ConfigError(f"config field mobility is missing (a {role} needs it)")
        return None
    if not isinstance(section, dict):
        raise ConfigError("config field mobility has the wrong type")
    for key in ("address", "peers"):
        if key not in section:
            raise ConfigError(f"config field mobility.{key} is missing")
    for key in ("peers", "tunnel_peers"):
        peers = section.get(key, [])
        if not isinstance(peers, list):
            raise ConfigError(f"config field mobility.{key} has the wrong type")
        for i, peer in enumerate(peers):   # RFC 3776 SA pairs: each SA checked here, once
            try:
                SaPeer.from_dict(peer, f"mobility.{key}[{i}]")
            except SectionError as exc:
                raise ConfigError(f"config field {exc}") from None
    announce = section.get("announcement")
    if announce is not None:
        _check_announcement(announce, role)
    return section


def _mobile_node(section, role: str) -> MobileNodeSection | None:
    if role != "mobile-node" or section is None:
        return None
    try:
        return MobileNodeSection.from_dict(section)
    except SectionError as exc:
        raise ConfigError(f"config field {exc}") from None


def _check_announcement(announce, role: str) -> None:
    """The HA signs office announcements (private key), an MN checks them (public key only)."""
    field = "private_key" if role == "home-agent" else "public_key"
    if not isinstance(announce, dict) or field not in announce:
        raise ConfigError(f"config field mobility.announcement.{field} is missing")
    try:
        (announcement.load_private_key if field == "private_key" else announcement.load_public_key)(announce[field])
    except ValueError as exc:
        raise ConfigError(f"config field mobility.announcement.{exc}") from None
    max_age = announce.get("max_age", announcement.MAX_AGE_S)
    if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or not 0 < max_age <= 3600:
        raise ConfigError(f"config field mobility.announcement.max_age holds {max_age!r}, not seconds in (0, 3600]")


def _check_prefix(value, field: str) -> None:
    try:
        ipaddress.IPv6Network(value, strict=False)
    except (ValueError, TypeError):
        raise ConfigError(f"config field {field} holds {value!r}, not an IPv6 address/prefix") from None


def build_processor(config: NodeConfig, now: float = 0.0) -> IPsecProcessor:
    """SAD and SPD from the config; any bad SA or rule becomes a ConfigError."""
    try:
        sad = SAD()
        for entry in config.sas:
            sad.add(SecurityAssociation.from_config(entry))
        spd = SPD.from_config(config.spd)
        return IPsecProcessor(spd, sad, now=now)
    except ConfigError:
        raise
    except (EspConfigError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
