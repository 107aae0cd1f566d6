"""What a lab is, as one frozen value: ``LabSpec``. Every field is checked here, once, with a one-line
error naming the field; ``SvpnLab(spec)`` builds what it describes, and ``SvpnLab(**fields)`` (the keyword
form) makes the spec from its keywords. ``to_dict``/``from_dict`` carry a spec through JSON, so a
results folder's ``config.json`` can say exactly which lab made it."""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from nodeapps.runtime.sections import TIMER_NAMES
from nodeapps.vcm.manager import KEY_LIFETIME_S
from nodeapps.vcm.mobile_agent import INBOUND_GRACE_S
from topologies.addressing import make_plan
from topologies.errors import LabSpecError

# An SSH destination the lab accepts: host or user@host, never an option or a path.
SERVER_SYNTAX = re.compile(r"^(?:[a-z_][a-z0-9_-]{0,31}@)?[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")

# RFC 6275 §7.5: MinRtrAdvInterval may go down to 0.03 s and MaxRtrAdvInterval to 0.07 s.
FAST_RA_INTERVALS = (0.03, 0.07)
ESP_ENCAPS = ("none", "udp")
VCM_PLACES = ("in-sg", "host")
VCM_CONTROLS = ("encapsulated", "direct")
VCM_PAIRS = ("home-ro", "care-of")
# How a home-ro pair authenticates its MN–MN binding updates: return routability (RFC 6275, the default) or
# a static key the VCM hands out with the KEYS (RFC 4449).
VCM_BINDINGS = ("return-routability", "static-key")
MAX_SPI_BASE = 0xF000_0000


def _whole(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LabSpecError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    return value


def _seconds(name: str, value, low: float, high: float, low_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (low < value if low_open else low <= value) or value > high:
        bound = f"more than {low:g}" if low_open else f"at least {low:g}"
        raise LabSpecError(f"{name} must be seconds, {bound} and at most {high:g}, not {value!r}")
    return float(value)


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise LabSpecError(f"{name} must be true or false, not {value!r}")
    return value


def _one_of(name: str, value, choices):
    if value in choices:
        return value
    raise LabSpecError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")


def check_ra_intervals(value) -> tuple[float, float]:
    """(min, max) router advertisement interval in seconds, as a lab takes it; LabSpecError otherwise."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise LabSpecError(f"ra_intervals must be two numbers (min, max), not {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0.03 <= low <= 0.75 * high and 0.07 <= high <= 1800):
        raise LabSpecError(f"ra_intervals {value!r}: need 0.03 <= min <= 0.75 * max and "
                           "0.07 <= max <= 1800 (RFC 6275 §7.5, RFC 4861 §6.2.1)")
    return low, high


@dataclass(frozen=True)
class LabSpec:
    """One lab. Topology: ``addressing`` (private or public plan), ``mobile_nodes``, ``attachments`` (where
    each MN starts), ``links`` (default profiles or ideal), ``link_params`` (per link name), ``mtu``,
    ``plain_service``, ``correspondent``, ``seed``, ``attacker`` (places). Behaviour: ``mobility`` (Mobile
    IPv6 node apps), ``ra_intervals``, ``announcement_interval``, ``mobility_timers``, ``vcm`` (in-sg, host
    or None), ``vcm_pair``, ``vcm_binding``, ``vcm_control``, ``vcm_lifetime``, ``vcm_inbound_grace``, ``route_optimisation``
    (MN pairs without a VCM), ``mesh``, ``esp_encap``, ``spi_base``, ``event_rate_limit``,
    ``fault_injection``. Placement: ``servers`` (SSH destinations the mobile nodes run on; empty: this
    machine), ``ssh_config`` (``ssh -F`` file for them)."""
    addressing: str = "private"
    mobile_nodes: int = 2
    attachments: tuple[str, ...] | None = None
    link_params: Mapping[str, Mapping[str, Any]] | None = None
    links: str = "default"
    plain_service: bool = False
    mtu: int = 1500
    spi_base: int = 0x1000
    mobility: bool = False
    ra_intervals: tuple[float, float] = FAST_RA_INTERVALS
    announcement_interval: float = 0.05
    mobility_timers: Mapping[str, float] | None = None
    correspondent: bool = False
    vcm: str | None = None
    vcm_lifetime: int = KEY_LIFETIME_S
    vcm_control: str = "encapsulated"
    vcm_inbound_grace: float = INBOUND_GRACE_S
    vcm_pair: str | None = None
    vcm_binding: str = "return-routability"
    seed: int | None = None
    route_optimisation: tuple[tuple[str, str], ...] | None = None
    esp_encap: str = "none"
    event_rate_limit: int = 20
    fault_injection: bool = False
    attacker: tuple[str, ...] | None = None
    mesh: bool = False
    servers: tuple[str, ...] = ()
    ssh_config: str | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        # Lists become tuples and mappings plain dicts (copied), so that a caller's later change to its
        # own list cannot change the spec.
        if isinstance(self.attachments, str):
            set_(self, "attachments", tuple(a.strip() for a in self.attachments.split(",")))
        elif self.attachments is not None:
            set_(self, "attachments", tuple(self.attachments))
        if self.attacker is not None:
            set_(self, "attacker", tuple(self.attacker.split("+")) if isinstance(self.attacker, str)
                 else tuple(self.attacker))
        if isinstance(self.servers, str):
            set_(self, "servers", tuple(s.strip() for s in self.servers.split(",") if s.strip()))
        else:
            set_(self, "servers", tuple(self.servers or ()))
        if self.route_optimisation:
            set_(self, "route_optimisation", tuple(tuple(p) for p in self.route_optimisation))
        for name in ("link_params", "mobility_timers"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise LabSpecError(f"{name} must be a mapping, not {value!r}")
            if value is not None:
                set_(self, name, {k: dict(v) if isinstance(v, Mapping) else v for k, v in value.items()})
        set_(self, "ra_intervals", check_ra_intervals(self.ra_intervals))
        self._check()

    def _check(self) -> None:
        make_plan(self.addressing, self.mobile_nodes, self.attachments)   # PlanError names the field
        _one_of("links", self.links, ("default", "ideal"))
        _whole("mtu", self.mtu, 1280, 65000)
        if self.seed is not None:
            _whole("seed", self.seed, 0, 2 ** 63 - 1)
        _whole("spi_base", self.spi_base, 0x100, MAX_SPI_BASE)
        _whole("vcm_lifetime", self.vcm_lifetime, 1, 2 ** 32 - 1)
        _whole("event_rate_limit", self.event_rate_limit, 1, 1_000_000)
        for name in ("plain_service", "mobility", "correspondent", "fault_injection", "mesh"):
            _flag(name, getattr(self, name))
        _seconds("announcement_interval", self.announcement_interval, 0.0, 60.0)
        _seconds("vcm_inbound_grace", self.vcm_inbound_grace, 0.0, 3600.0)
        for key, value in (self.mobility_timers or {}).items():
            if key not in TIMER_NAMES:
                raise LabSpecError(f"mobility_timers[{key!r}]: not a timer ({', '.join(TIMER_NAMES)})")
            _seconds(f"mobility_timers[{key!r}]", value, 0.0, 3600.0)
        if self.esp_encap not in ESP_ENCAPS:
            raise LabSpecError(f"esp_encap {self.esp_encap!r}: 'none' (native ESP, next header 50) or 'udp' "
                               "(ESP in UDP port 4500, RFC 3948)")
        if self.vcm not in (None,) + VCM_PLACES:
            raise LabSpecError(f"vcm {self.vcm!r}: 'in-sg' (built into the SG) or 'host' (its own office host)")
        if self.vcm is not None and not self.mobility:
            raise LabSpecError("vcm needs mobility=True")
        if self.vcm_control not in VCM_CONTROLS:
            raise LabSpecError(f"vcm_control {self.vcm_control!r}: 'encapsulated' (MN–VCM SA inside the MN–SG SA) "
                               "or 'direct'")
        if self.vcm_control == "direct" and (self.vcm != "host" or self.addressing != "public"):
            raise LabSpecError("vcm_control='direct' needs vcm='host' and addressing='public' (with private "
                               "addresses the MN–VCM SA always travels inside the MN–SG SA)")
        if self.vcm_pair not in (None,) + VCM_PAIRS:
            raise LabSpecError(f"vcm_pair {self.vcm_pair!r}: 'home-ro' (ESP between the home addresses over the "
                               "MN–MN binding) or 'care-of' (ESP tunnel between the care-of addresses)")
        if self.vcm_pair is not None and self.vcm is None:
            raise LabSpecError(f"vcm_pair={self.vcm_pair!r} needs a vcm")
        _one_of("vcm_binding", self.vcm_binding, VCM_BINDINGS)
        if self.vcm_binding != "return-routability" and (self.vcm is None or self.pair_kind != "home-ro"):
            raise LabSpecError(f"vcm_binding={self.vcm_binding!r} needs a vcm with vcm_pair='home-ro' (the "
                               "static key authenticates the MN–MN binding updates)")
        if self.mesh and (not self.mobility or self.vcm is not None or self.route_optimisation):
            raise LabSpecError("mesh (an SA pair between every two mobile nodes from the start) needs "
                               "mobility=True and neither a vcm nor route_optimisation")
        self._check_route_optimisation()
        self._check_servers()

    def _check_servers(self) -> None:
        for server in self.servers:
            if not isinstance(server, str) or not SERVER_SYNTAX.match(server):
                raise LabSpecError(f"servers: {server!r} is not host or user@host")
        if self.ssh_config is not None:
            if not self.servers:
                raise LabSpecError("ssh_config needs servers (the SSH destinations it is for)")
            if not isinstance(self.ssh_config, str) or not os.path.isfile(self.ssh_config):
                raise LabSpecError(f"ssh_config {self.ssh_config!r}: no such file")

    def _check_route_optimisation(self) -> None:
        """Pairs of mobile nodes that route-optimise with each other (Mobile IPv6 between their external home
        addresses, or their home addresses in the public plan; docs/mobility.md)."""
        if not self.route_optimisation:
            return
        if not self.mobility:
            raise LabSpecError("route_optimisation needs mobility=True")
        if self.vcm is not None:
            raise LabSpecError("route_optimisation and vcm exclude each other (the VCM gives the pair its own path)")
        names = {f"mn{i + 1}" for i in range(self.mobile_nodes)}
        for pair in self.route_optimisation:
            if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= names:
                raise LabSpecError(f"route_optimisation pair {pair!r}: two different mobile nodes among "
                                   f"{', '.join(sorted(names))}")

    # ---- derived ----------------------------------------------------------------------------------
    @property
    def pair_kind(self) -> str:
        """How a VCM pair goes direct: over the MN–MN binding (the default with a VCM) or care-of to care-of."""
        return self.vcm_pair or ("home-ro" if self.vcm is not None else "care-of")

    def replace(self, **changes) -> "LabSpec":
        """A copy with ``changes`` (checked like a new spec)."""
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as exc:
            raise LabSpecError(_unknown(exc)) from None

    # ---- JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LabSpec":
        if not isinstance(data, Mapping):
            raise LabSpecError(f"a lab specification must be a mapping, not {type(data).__name__}")
        return from_options(**data)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(LabSpec)]


def _unknown(exc: TypeError) -> str:
    text = str(exc)
    if "unexpected keyword argument" in text:
        name = text.rsplit(" ", 1)[-1].strip("'")
        return f"unknown lab option {name!r} (known: {', '.join(field_names())})"
    return text


def from_options(**options) -> LabSpec:
    """The keyword form: ``SvpnLab(addressing=..., ...)`` and ``LabSpec.from_dict``; an unknown keyword gets
    a one-line error naming it."""
    unknown = sorted(set(options) - set(field_names()))
    if unknown:
        raise LabSpecError(f"unknown lab option {unknown[0]!r} (known: {', '.join(field_names())})")
    return LabSpec(**options)
