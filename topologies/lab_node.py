"""The lab's network namespaces (hosts and routers), configured from the address plan."""
from mininet.node import Node

from topologies.addressing import PlanError


class LabNode(Node):
    """A namespace configured from the address plan: IPv6 only, addresses without DAD, static routes."""

    def __init__(self, name, inNamespace=True, **params):
        super().__init__(name, inNamespace=inNamespace, **params)
        # Before any interface exists, so every later interface inherits it: no tentative addresses.
        self.cmd("sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 "
                 "net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0")

    def config(self, addresses=(), routes=(), forwarding=False, mtu=1500, **params):
        result = super().config(**params)
        self.cmd("ip link set lo up")
        for intf in self.intfNames():
            self.cmd(f"ip link set dev {intf} mtu {mtu} up")
        for intf, address in addresses:
            self.cmd(f"ip -6 addr add {address} dev {intf} nodad")
        self.cmd(f"sysctl -qw net.ipv6.conf.all.forwarding={1 if forwarding else 0}")
        for route in routes:
            out = self.cmd(f"ip -6 route replace {route}")
            if out.strip():
                raise PlanError(f"{self.name}: route {route!r}: {out.strip()}")
        return result
