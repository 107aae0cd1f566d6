"""The SVPN topology: an office behind a security gateway, an Internet core, and visited networks.

Shaped like the reference system's Fig. 1 (addresses in ``topologies/addressing.py``)::

    fs  d1  d2  ha  vcm  lap              (internal portion: the office LAN, switch "soffice")
     \\   \\   |   |   /   /
      +----[soffice]----+-- sg (security gateway) -- ir (Internet core router)
                                                        |-- ar1 --[swlan1]-- WLAN hotspot 1 -- mn1
                                                        |-- ar2 --[swlan2]-- WLAN hotspot 2
                                                        |-- ar3 --[scell]--- cellular        -- mn2
                                                        `-- xha  (external home agent, private plan)

Every node is a plain Linux namespace (``LabNode``): IPv6 only, no DAD, static routes; switches are Linux
bridges, so neither Open vSwitch nor a controller is needed. Node apps (the IPsec stack) are started by
``topologies.lab.SvpnLab`` from the Python API, not by this module.

From the command line:  sudo mn --custom topologies/svpn.py --topo svpn
                        sudo mn --custom topologies/svpn.py --topo svpn,addressing=public
                        sudo mn --custom topologies/svpn.py --topo svpn --test ping6all
(``--test ping6all`` pings between the hosts the bare topology connects and exits 1 on any loss; the
VPN itself — node apps, ESP, mobility — comes with ``experiments/shell.py``, the lab shell.)
"""
from __future__ import annotations

import os
import sys

from mininet.node import NullController
from mininet.nodelib import LinuxBridge
from mininet.topo import Topo

try:
    from topologies.addressing import ACCESS_NETWORKS, AddressPlan, PlanError, make_plan
    from topologies.lab_node import LabNode
    from topologies.links import EmulatedLink
    from nodeapps.linkemu.errors import LinkConfigError
    from nodeapps.linkemu.params import default_seed
    from nodeapps.linkemu.profiles import make_config
except ImportError:  # `mn --custom` executes this file without a package (and without __file__)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(sys._getframe().f_code.co_filename))))
    from topologies.addressing import ACCESS_NETWORKS, AddressPlan, PlanError, make_plan
    from topologies.lab_node import LabNode
    from topologies.links import EmulatedLink
    from nodeapps.linkemu.errors import LinkConfigError
    from nodeapps.linkemu.params import default_seed
    from nodeapps.linkemu.profiles import make_config

OFFICE_SWITCH = "soffice"
ACCESS_SWITCH = {"wlan1": "swlan1", "wlan2": "swlan2", "cell": "scell"}
ACCESS_ROUTER = {"wlan1": "ar1", "wlan2": "ar2", "cell": "ar3"}
# Default link profile per kind of link (profiles and their sources: docs/links.md). The office is far
# from the Internet core (long-haul WAN), the visited networks are close to each other (metro WAN), and
# each access network's radio medium sits on its access router's LAN link, so a mobile node that moves
# takes on the new network's characteristics. LAN cables stay ideal: their delay is below what
# userspace emulation resolves, and each emulated link costs a process.
DEFAULT_PROFILES = {
    "office": "ideal", "sg-ir": "wan-longhaul", "ir-ar": "wan-metro", "ir-xha": "wan-metro",
    "xha-home": "ideal", "wlan1": "wlan", "wlan2": "wlan", "cell": "lte", "access": "ideal",
}
LINK_PROFILE_SETS = ("default", "ideal")
# Optional correspondent host on the public side (route optimisation experiments): its own /64 off ir.
CORRESPONDENT_PREFIX = "2001:db8:0:c0::/64"
CORRESPONDENT_ADDRESS = "2001:db8:0:c0::2"
CORRESPONDENT_GATEWAY = "2001:db8:0:c0::1"
# The lab's attacker host "atk" (SvpnLab(attacker=[...])): a rogue station on a visited network (an address
# in its prefix, on its access bridge) and/or a host on the Internet core with a public /64 of its own.
ATTACKER_PLACES = ("wlan1", "wlan2", "cell", "core")
ATTACKER_HOST_ID = 0xBAD
ATTACKER_CORE_PREFIX = "2001:db8:0:ba::/64"
ATTACKER_CORE_ADDRESS = "2001:db8:0:ba::2"
ATTACKER_CORE_GATEWAY = "2001:db8:0:ba::1"


def check_attacker_places(places) -> list[str]:
    """The attacker's places in order, each once; PlanError (one line) for anything else."""
    if places is None:
        return []
    if isinstance(places, str):
        places = places.split("+")
    if not isinstance(places, (list, tuple)) or not places:
        raise PlanError(f"attacker must name one or more places among {', '.join(ATTACKER_PLACES)}, "
                        f"not {places!r}")
    out = []
    for place in places:
        if place not in ATTACKER_PLACES:
            raise PlanError(f"attacker place {place!r} is not one of {', '.join(ATTACKER_PLACES)}")
        if place in out:
            raise PlanError(f"attacker place {place!r} named twice")
        out.append(place)
    return out


def attacker_interface(place: str) -> str:
    return f"atk-{place}"


def attacker_address(plan: AddressPlan, place: str) -> str:
    """atk's address at ``place``: host id ::bad in a visited prefix, or its own core prefix."""
    if place == "core":
        return ATTACKER_CORE_ADDRESS
    return str(plan.access[place].prefix.network_address + ATTACKER_HOST_ID)


def link_settings(name: str, profile: str, override: dict | None) -> dict:
    """EmulatedLink keyword arguments for one link: its default profile, then the user's override
    (e.g. {"delay": "50ms"} or {"profile": "3g"}). Raises PlanError naming the link."""
    settings = {"profile": profile, **(override or {})}
    try:
        make_config(**settings)
    except LinkConfigError as exc:
        raise PlanError(f"link {name}: {exc}") from None
    except TypeError as exc:
        raise PlanError(f"link {name}: {exc}") from None
    return settings


def link_seed(seed: int, name: str) -> int:
    """The emulator seed of link ``name`` in a run seeded with ``seed``: different per link (their random
    draws are independent), the same in every run with that seed."""
    return default_seed(str(seed), name)


class SvpnTopo(Topo):
    """Office, security gateway, Internet core, two WLAN hotspots, one cellular network, N mobile nodes.

    Parameters: addressing ("private" = embodiment 1, "public" = embodiment 2), mobile_nodes (count),
    attachments (network per MN: office, wlan1, wlan2, cell), links ("default" profiles or all "ideal"),
    link_params ({link name: EmulatedLink settings, e.g. {"sg-ir": {"delay": "50ms"}}}),
    plain_service (also give the file server an address outside the VPN that the SG forwards in clear,
    for comparing ESP with plain forwarding on the same path), mtu (of every link; 1500 like Ethernet),
    correspondent (add host "cn" on its own public /64 behind ir, link "ir-cn"), seed (an experiment's
    seed: each link's random loss and jitter draws come from :func:`link_seed` of it and the link's name;
    None keeps the links' own stable seeds; a ``seed`` in a link's link_params wins), servers (SSH
    destinations, user@host: the mobile nodes run there, placed round robin, each linked to its access
    link's emulator on this machine by an SSH Ethernet tunnel; topologies/cluster.py), ssh_config (the
    ``ssh -F`` file for them).
    """

    def build(self, addressing="private", mobile_nodes=2, attachments=None, link_params=None,
              plain_service=False, mtu=1500, links="default", correspondent=False, seed=None, attacker=None,
              servers=(), ssh_config=None):
        if isinstance(seed, str) and seed.isdigit():  # from `mn --topo svpn,seed=7`
            seed = int(seed)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise PlanError(f"seed must be a whole number, not {seed!r}")
        if isinstance(mtu, str) and mtu.isdigit():
            mtu = int(mtu)
        if isinstance(mtu, bool) or not isinstance(mtu, int) or not 1280 <= mtu <= 65000:
            raise PlanError(f"mtu must be a whole number from 1280 (the IPv6 minimum) to 65000, not {mtu!r}")
        self.mtu = mtu
        if links not in LINK_PROFILE_SETS:
            raise PlanError(f"links must be one of {', '.join(LINK_PROFILE_SETS)}, not {links!r}")
        if isinstance(mobile_nodes, str):  # from `mn --topo svpn,mobile_nodes=3`
            mobile_nodes = int(mobile_nodes) if mobile_nodes.isdigit() else mobile_nodes
        if isinstance(attachments, str):
            attachments = attachments.split("+")
        plan = make_plan(addressing, mobile_nodes, attachments)
        self.plan: AddressPlan = plan
        self.attacker_places = check_attacker_places(attacker)
        self.link_names: dict[str, tuple[str, str]] = {}
        link_params = dict(link_params or {})
        self.link_params: dict[str, dict] = {}

        def link(name, kind, a, b, intf_a=None, intf_b=None):
            """node a is the terminal side: its direction is the link's forward (uplink)."""
            self.link_names[name] = (a, b)
            profile = DEFAULT_PROFILES[kind] if links == "default" else "ideal"
            settings = link_settings(name, profile, link_params.pop(name, None))
            if seed is not None:
                settings.setdefault("seed", link_seed(seed, name))
            self.link_params[name] = settings
            self.addLink(a, b, intfName1=intf_a, intfName2=intf_b, cls=EmulatedLink, **settings)

        office = plan.office
        plen = plan.office_prefix.prefixlen
        sg_office = office["sg"]
        self.addSwitch(OFFICE_SWITCH, cls=LinuxBridge, dpid="1")
        for host in ("fs", "d1", "d2", "ha", "vcm", "lap"):
            addresses = [(f"{host}-eth0", f"{office[host]}/{plen}")]
            if host == "fs" and plain_service:
                addresses.append(("fs-eth0", f"{plan.plain_prefix.network_address + 0x10}/64"))
            self.addHost(host, cls=LabNode, ip=None, mtu=mtu, addresses=addresses,
                         routes=[f"default via {sg_office}"], forwarding=(host == "ha"))
            link(f"office-{host}", "office", host, OFFICE_SWITCH, f"{host}-eth0")

        sg_addresses = [("sg-lan", f"{sg_office}/{plen}"), ("sg-wan", f"{plan.sg_public}/64")]
        if plain_service:
            sg_addresses.append(("sg-lan", f"{plan.plain_prefix.network_address + 1}/64"))
        self.addHost("sg", cls=LabNode, ip=None, mtu=mtu, forwarding=True, addresses=sg_addresses,
                     routes=[f"default via {plan.ir_sg_side}"])
        link("office-sg", "office", "sg", OFFICE_SWITCH, "sg-lan")

        ir_addresses = [("ir-sg", f"{plan.ir_sg_side}/64")]
        ir_routes = [f"{prefix} via {plan.sg_public}" for prefix in plan.vpn_prefixes
                     if plan.addressing == "public"]
        if plain_service:
            ir_routes.append(f"{plan.plain_prefix} via {plan.sg_public}")
        for net_name, access in plan.access.items():
            ar = ACCESS_ROUTER[net_name]
            ir_side = access.uplink.network_address + 2
            ar_side = access.uplink.network_address + 1
            ir_addresses.append((f"ir-{ar}", f"{ir_side}/64"))
            ir_routes.append(f"{access.prefix} via {ar_side}")
            self.addHost(ar, cls=LabNode, ip=None, mtu=mtu, forwarding=True,
                         addresses=[(f"{ar}-up", f"{ar_side}/64"), (f"{ar}-lan", f"{access.router_address}/64")],
                         routes=[f"default via {ir_side}"])
            self.addSwitch(ACCESS_SWITCH[net_name], cls=LinuxBridge, dpid=f"{0x10 + len(self.switches()):x}")
            link(f"{ar}-{net_name}", net_name, ACCESS_SWITCH[net_name], ar, None, f"{ar}-lan")
        if plan.external_home_prefix is not None:
            ir_side = plan.xha_uplink.network_address + 2
            xha_side = plan.xha_uplink.network_address + 1
            ir_addresses.append(("ir-xha", f"{ir_side}/64"))
            ir_routes.append(f"{plan.external_home_prefix} via {xha_side}")
            self.addHost("xha", cls=LabNode, ip=None, mtu=mtu, forwarding=True,
                         addresses=[("xha-up", f"{xha_side}/64"),
                                    ("xha-lan", f"{plan.xha_address}/{plan.external_home_prefix.prefixlen}")],
                         routes=[f"default via {ir_side}"])
        if correspondent:
            ir_addresses.append(("ir-cn", f"{CORRESPONDENT_GATEWAY}/64"))
            self.addHost("cn", cls=LabNode, ip=None, mtu=mtu, addresses=[("cn-eth0", f"{CORRESPONDENT_ADDRESS}/64")],
                         routes=[f"default via {CORRESPONDENT_GATEWAY}"])
        if "core" in self.attacker_places:
            ir_addresses.append(("ir-atk", f"{ATTACKER_CORE_GATEWAY}/64"))
        self.addHost("ir", cls=LabNode, ip=None, mtu=mtu, forwarding=True, addresses=ir_addresses, routes=ir_routes)
        link("sg-ir", "sg-ir", "sg", "ir", "sg-wan", "ir-sg")
        for net_name in plan.access:
            ar = ACCESS_ROUTER[net_name]
            link(f"ir-{ar}", "ir-ar", ar, "ir", f"{ar}-up", f"ir-{ar}")
        if correspondent:
            link("ir-cn", "ir-ar", "cn", "ir", "cn-eth0", "ir-cn")
        if plan.external_home_prefix is not None:
            link("ir-xha", "ir-xha", "xha", "ir", "xha-up", "ir-xha")
            # The external home network itself: a bridge that MNs' external home addresses belong to.
            self.addSwitch("sxhome", cls=LinuxBridge, dpid="e0")
            link("xha-home", "xha-home", "xha", "sxhome", "xha-lan")

        placement = {}
        if servers:
            from topologies.cluster import RemoteLabNode, place_mobile_nodes
            placement = place_mobile_nodes([mn.name for mn in plan.mobile_nodes], list(servers))
        for mn in plan.mobile_nodes:
            intf = f"{mn.name}-eth0"
            remote = ({"cls": RemoteLabNode, "server": placement[mn.name], "ssh_config": ssh_config}
                      if mn.name in placement else {"cls": LabNode})
            address = plan.current_address(mn)
            if mn.attachment == "office":
                prefixlen, gateway, switch = plen, sg_office, OFFICE_SWITCH
            else:
                access = plan.access[mn.attachment]
                prefixlen, gateway, switch = 64, access.router_address, ACCESS_SWITCH[mn.attachment]
            self.addHost(mn.name, **remote, ip=None, mtu=mtu, addresses=[(intf, f"{address}/{prefixlen}")],
                         routes=[f"default via {gateway}"])
            link(f"{mn.name}-access", "access", mn.name, switch, intf)

        if self.attacker_places:
            self._add_attacker(plan, link)

        if link_params:
            raise PlanError(f"link_params names unknown link(s): {', '.join(sorted(link_params))} "
                            f"(links: {', '.join(sorted(self.link_names))})")


    def _add_attacker(self, plan: AddressPlan, link) -> None:
        """Host ``atk`` with one interface per place; its default route leaves by the core when it has
        a place there, else by the first visited network's access router."""
        addresses, routes = [], []
        for place in self.attacker_places:
            address = attacker_address(plan, place)
            addresses.append((attacker_interface(place), f"{address}/64"))
        first = self.attacker_places[0]
        if "core" in self.attacker_places:
            routes.append(f"default via {ATTACKER_CORE_GATEWAY} dev {attacker_interface('core')}")
        else:
            routes.append(f"default via {plan.access[first].router_address} dev {attacker_interface(first)}")
        self.addHost("atk", cls=LabNode, ip=None, mtu=self.mtu, addresses=addresses, routes=routes)
        for place in self.attacker_places:
            if place == "core":
                link("atk-core", "access", "atk", "ir", attacker_interface(place), "ir-atk")
            else:
                link(f"atk-{place}", "access", "atk", ACCESS_SWITCH[place], attacker_interface(place))


def reachability_groups(plan: AddressPlan, hosts) -> list[list[tuple[str, str]]]:
    """Who must reach whom in the bare topology (no node apps, so no VPN): the office LAN among itself, and
    the public side (SG, routers, external home agent, correspondent, mobile nodes on visited networks)
    among itself. Only nodes present in ``hosts`` (names) are listed."""
    office = [(name, address) for name, address in plan.office.items() if name in hosts]
    public = [("sg", plan.sg_public), ("ir", str(plan.ir_sg_side))]
    public += [(ACCESS_ROUTER[name], str(access.router_address)) for name, access in plan.access.items()]
    if plan.xha_address:
        public.append(("xha", plan.xha_address))
    if "cn" in hosts:
        public.append(("cn", CORRESPONDENT_ADDRESS))
    for mn in plan.mobile_nodes:
        (office if mn.attachment == "office" else public).append((mn.name, plan.current_address(mn)))
    return [group for group in (office, public) if len(group) > 1]


def ping6all(net) -> None:
    """``mn --test ping6all``: IPv6 pings inside each reachability group; on any loss the network is
    stopped and mn exits with status 1 (mn itself ignores what a test returns)."""
    from topologies.measurements import ping6_all
    hosts = {host.name for host in net.hosts}
    print("*** Ping6: office LAN and public side (no VPN without node apps)", flush=True)
    result = ping6_all(net, reachability_groups(net.topo.plan, hosts), write=lambda line: print(line, flush=True))
    if result["lost"]:
        net.stop()
        raise SystemExit(1)


topos = {"svpn": SvpnTopo}
tests = {"ping6all": ping6all}
# Linux bridges need no OpenFlow controller: `mn --custom` takes this as its default controller.
controllers = {"default": NullController}
