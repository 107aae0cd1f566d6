"""Node roles with Mobile IPv6: the shells around the sans-IO mobility cores (``nodeapps.mobility``).

``mobile_node`` (the mobile node's shell: registration with the home agent and the security gateway; its
rooms ``mn_attachment`` for movement detection and care-of addresses, ``mn_data_plane`` for its packets and
reverse tunnelling, ``mn_pairs`` for direct pairs with other MNs), ``home_agent`` (office or external home agent: proxy ND, tunnelling,
office announcements), ``correspondent`` (return routability, route-optimised bindings) and ``security_gateway`` (the SG as the MN's mobility peer: its tunnel follows the MN) and ``vcm_host`` (the VCM as its own office host).
Picked by ``nodeapps.node`` (its ``RUNTIMES``) when a node config has a "mobility" section.
"""
