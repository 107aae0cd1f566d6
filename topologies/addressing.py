"""Address plans for the SVPN lab, without Mininet (importable and testable anywhere).

Two plans, chosen by ``addressing``:

* ``private`` (embodiment 1): the office (internal portion) uses ULA addresses from ``fdc0:ffee::/48``;
  every mobile node also owns a public *external home address* on an external home network
  (``2001:db8:e0::/64``) that a public home agent will serve.
* ``public`` (embodiment 2): the office uses public addresses (``2001:db8:100::/48``) and a mobile node's
  home address is public too; there is no separate external home address.

Everything "public" comes from the documentation prefix ``2001:db8::/32``::

                 office LAN (internal)                         Internet core               visited networks
  fs d1 d2 ha vcm lap ──[so]── sg ══ 2001:db8:0:1::/64 ══ ir ── ar1 ──[sw1]  WLAN hotspot 1  2001:db8:21::/64
                                                             ├─ ar2 ──[sw2]  WLAN hotspot 2  2001:db8:22::/64
                                                             ├─ ar3 ──[sc1]  cellular        2001:db8:31::/64
                                                             └─ xha          external home network (private plan)

Mobile node *i* (1-based) has host id ``::a:i`` in every prefix it uses.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

ADDRESSING_CHOICES = ("private", "public")
# name -> (third 16-bit group of the /64, kind, human label)
ACCESS_NETWORKS = {
    "wlan1": (0x21, "wlan", "WLAN hotspot 1"),
    "wlan2": (0x22, "wlan", "WLAN hotspot 2"),
    "cell": (0x31, "cellular", "cellular access network"),
}
OFFICE_HOSTS = {"sg": 0x1, "ha": 0x2, "vcm": 0x3, "fs": 0x10, "d1": 0x21, "d2": 0x22, "lap": 0x31}
MAX_MOBILE_NODES = 200
# A public prefix outside the VPN that the SG forwards in clear; used only to compare ESP with plain forwarding.
PLAIN_PREFIX = "2001:db8:200::/64"


class PlanError(ValueError):
    """A topology parameter or address plan that cannot be built; the message names the parameter."""


def _net(text: str) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network(text)


def _host(prefix: ipaddress.IPv6Network, host_id: int) -> str:
    return str(prefix.network_address + host_id)


@dataclass(frozen=True)
class MobileNodePlan:
    name: str
    index: int
    home_address: str            # internal (private plan) or public home address, on the office LAN
    external_home_address: str | None  # private plan only
    attachment: str              # access network name, or "office"

    def address_in(self, network: "AccessNetwork") -> str:
        return _host(network.prefix, 0xA0000 + self.index)


@dataclass(frozen=True)
class AccessNetwork:
    name: str
    kind: str
    label: str
    prefix: ipaddress.IPv6Network
    router_address: str          # access router on the access LAN
    uplink: ipaddress.IPv6Network  # ir <-> access router transit


@dataclass(frozen=True)
class AddressPlan:
    addressing: str
    office_prefix: ipaddress.IPv6Network       # the office LAN /64
    vpn_prefixes: tuple[str, ...]              # what the SPD treats as "the VPN"
    office: dict[str, str]                     # office host -> address on the office LAN
    sg_public: str
    ir_sg_side: str
    core_link: ipaddress.IPv6Network
    access: dict[str, AccessNetwork]
    external_home_prefix: ipaddress.IPv6Network | None
    xha_address: str | None
    xha_uplink: ipaddress.IPv6Network | None
    mobile_nodes: tuple[MobileNodePlan, ...] = field(default=())
    plain_prefix: ipaddress.IPv6Network = _net(PLAIN_PREFIX)

    def mobile(self, name: str) -> MobileNodePlan:
        for mn in self.mobile_nodes:
            if mn.name == name:
                return mn
        raise PlanError(f"unknown mobile node {name!r}")

    def current_address(self, mn: MobileNodePlan) -> str:
        """The MN's address on the network it is attached to (its care-of address when away)."""
        if mn.attachment == "office":
            return mn.home_address
        return mn.address_in(self.access[mn.attachment])

    def as_dict(self) -> dict:
        return {
            "addressing": self.addressing,
            "office_prefix": str(self.office_prefix),
            "vpn_prefixes": list(self.vpn_prefixes),
            "office": dict(self.office),
            "sg_public": self.sg_public,
            "access": {n: {"kind": a.kind, "prefix": str(a.prefix), "router": a.router_address}
                       for n, a in self.access.items()},
            "external_home_prefix": str(self.external_home_prefix) if self.external_home_prefix else None,
            "mobile_nodes": [{"name": m.name, "home_address": m.home_address,
                              "external_home_address": m.external_home_address,
                              "attachment": m.attachment, "current_address": self.current_address(m)}
                             for m in self.mobile_nodes],
        }


def default_attachments(count: int) -> list[str]:
    """MN1 on WLAN hotspot 1, MN2 on cellular, then round-robin over all access networks."""
    order = ["wlan1", "cell", "wlan2"]
    return [order[i % len(order)] for i in range(count)]


def make_plan(addressing: str = "private", mobile_nodes: int = 2,
              attachments: list[str] | tuple[str, ...] | None = None) -> AddressPlan:
    """Build and validate an address plan. Raises PlanError naming the bad parameter."""
    if addressing not in ADDRESSING_CHOICES:
        raise PlanError(f"addressing must be one of {', '.join(ADDRESSING_CHOICES)}, not {addressing!r}")
    if isinstance(mobile_nodes, bool) or not isinstance(mobile_nodes, int) \
            or not 1 <= mobile_nodes <= MAX_MOBILE_NODES:
        raise PlanError(f"mobile_nodes must be a whole number from 1 to {MAX_MOBILE_NODES}, not {mobile_nodes!r}")
    if attachments is None:
        attachments = default_attachments(mobile_nodes)
    attachments = list(attachments)
    if len(attachments) != mobile_nodes:
        raise PlanError(f"attachments names {len(attachments)} networks for {mobile_nodes} mobile nodes")
    for where in attachments:
        if where != "office" and where not in ACCESS_NETWORKS:
            raise PlanError(f"attachment {where!r} is not a network (choose office, "
                            f"{', '.join(ACCESS_NETWORKS)})")

    if addressing == "private":
        office_prefix = _net("fdc0:ffee:0:1::/64")
        vpn = ("fdc0:ffee::/48",)
        ext_home = _net("2001:db8:e0::/64")
        xha_uplink = _net("2001:db8:0:e0::/64")
        xha = _host(ext_home, 1)
    else:
        office_prefix = _net("2001:db8:100:1::/64")
        vpn = ("2001:db8:100::/48",)
        ext_home = xha_uplink = None
        xha = None

    core = _net("2001:db8:0:1::/64")
    access = {}
    for name, (group, kind, label) in ACCESS_NETWORKS.items():
        prefix = _net(f"2001:db8:{group:x}::/64")
        access[name] = AccessNetwork(name, kind, label, prefix, _host(prefix, 1),
                                     _net(f"2001:db8:0:{group:x}::/64"))
    mns = tuple(
        MobileNodePlan(
            name=f"mn{i}", index=i,
            home_address=_host(office_prefix, 0xA0000 + i),
            external_home_address=_host(ext_home, 0xA0000 + i) if ext_home else None,
            attachment=attachments[i - 1])
        for i in range(1, mobile_nodes + 1))
    return AddressPlan(
        addressing=addressing, office_prefix=office_prefix, vpn_prefixes=vpn,
        office={h: _host(office_prefix, hid) for h, hid in OFFICE_HOSTS.items()},
        sg_public=_host(core, 1), ir_sg_side=_host(core, 2), core_link=core, access=access,
        external_home_prefix=ext_home, xha_address=xha, xha_uplink=xha_uplink, mobile_nodes=mns)
