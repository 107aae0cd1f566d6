"""Mobile IPv6 (RFC 6275) as sans-IO cores: wire formats, return routability, bindings, and the mobile
node, home agent and correspondent node state machines. No sockets, clocks or ESP here: the runtime feeds
packets and time in, and sends the ``Datagram``s out after applying their ``protection``.

Modules: ``messages`` (formats), ``rr`` (return routability crypto, nonces), ``bindings`` (binding cache,
binding update list, backoff, rate limits), ``mobile`` / ``home_agent`` / ``correspondent`` (cores),
``mn_to_mn`` (two mobile nodes as each other's correspondent, and their traffic over that binding),
``location`` (inside/outside decision), ``events``, ``constants``.

How a runtime drives a core (the same loop for every role)::

    core.receive(packet, now, esp_protected=...)   # mobility packets (upper layer 135, or 41 from the HA)
                                                   # HA/SG: esp_home_address= the SA's bound home address
    core.handle_timer(now)                         # when now >= core.get_timer()
    for d in core.datagrams_to_send(now):          # apply d.protection with the SA of d.esp_peer, then send
        ...
    for event in core.pop_events():                # BindingAdded/Removed -> tunnels, proxy ND, SPD ...
        ...

Per data packet (pure decisions over the binding state):

* mobile node: ``outgoing(packet, now)`` for packets from the home address (returns a ``Datagram``: as is
  at home, with a HAO to an optimised correspondent, else IPv6-in-IPv6 to the HA); ``incoming(packet,
  now)`` for packets that arrive (strips the HA tunnel or the type 2 routing header; None = drop).
* home agent: ``encapsulate_to_mobile(packet, now)`` for packets to a home address it serves (None = not
  registered, deliver normally); ``accept_reverse_tunnel(packet, now)`` for 41-packets to the HA.
* correspondent: ``add_routing_header(packet, now)`` on every packet sent; ``accept_home_address_option
  (packet, now)`` on every received packet that carries a HAO (``messages.packet_summary`` tells).

``messages.packet_summary(packet)`` returns (HAO home address, RH2 home address, upper protocol, offset)
for classifying packets without parsing the Mobility Header.
"""
from nodeapps.mobility.correspondent import CorrespondentNode
from nodeapps.mobility.events import Datagram, Protection
from nodeapps.mobility.home_agent import HomeAgent
from nodeapps.mobility.location import Location, PresenceDetector
from nodeapps.mobility.messages import MobilityParseError
from nodeapps.mobility.mobile import MobileNode

__all__ = ["CorrespondentNode", "Datagram", "HomeAgent", "Location", "MobileNode", "MobilityParseError",
           "PresenceDetector", "Protection"]
