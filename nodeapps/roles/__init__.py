"""Node roles with Mobile IPv6: the shells around the sans-IO mobility cores (``nodeapps.mobility``).

``mobile_node`` (movement detection, care-of addresses, registration with the home agent and the security
gateway, reverse tunnelling), ``home_agent`` (office or external home agent: proxy ND, tunnelling,
office announcements), ``correspondent`` (return routability, route-optimised bindings) and ``security_gateway`` (the SG as the MN's mobility peer: its tunnel follows the MN) and ``vcm_host`` (the VCM as its own office host).
Picked by ``nodeapps.runtime.daemon`` when a node config has a "mobility" section.
"""


class _Runtimes(dict):
    def __missing__(self, role):
        if role == "mobile-node":
            from nodeapps.roles.mobile_node import MobileNodeRuntime as cls
        elif role == "home-agent":
            from nodeapps.roles.home_agent import HomeAgentRuntime as cls
        elif role == "correspondent":
            from nodeapps.roles.correspondent import CorrespondentRuntime as cls
        elif role == "security-gateway":
            from nodeapps.roles.security_gateway import GatewayRuntime as cls
        elif role == "vcm":
            from nodeapps.roles.vcm_host import VcmHostRuntime as cls
        else:
            raise KeyError(role)
        self[role] = cls
        return cls


RUNTIMES = _Runtimes()
