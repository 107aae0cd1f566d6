"""A Binding Error stops use of the direct ESP pair between two route-optimised mobile nodes at once.

MN A sends ESP on the direct SA care-of to care-of (``route_esp``); MN B has lost its binding for A, so
B's ``receive_esp`` drops the packet and answers with a Binding Error status 1 (RFC 6275 §9.3.1, §9.3.3)
to the packet's source, A's care-of address. When it arrives (RFC 6275 §11.3.6), A must stop using the
direct pair (``ready`` false: its shell sends through the SG instead of into a black hole) and run return
routability again; after HoTI/CoTI and the BU both ends are ready and ESP flows care-of to care-of.

Fake clock, in-memory network of ``test_mobility_mn_to_mn`` (one home agent for both external home
addresses; every hop recorded).
"""
import pytest
from scapy.layers.inet6 import IPv6, MIP6MH_BE

from nodeapps import ipv6
from nodeapps.mobility import events as ev
from nodeapps.mobility import messages as m
from nodeapps.mobility.correspondent import CorrespondentNode
from nodeapps.mobility.events import Datagram, Protection
from nodeapps.mobility.mn_to_mn import mobility_type
from tests.unit.test_mobility_cores import seeded
from tests.unit.test_mobility_mn_to_mn import COA, EXT, HA, both_out, esp

T = 4.0   # both_out() has both bindings from about 1 s on


def _lose_binding(net, how):
    """B no longer holds a binding for A. ``deleted``: the cache entry is gone (expired early, evicted).
    ``restarted``: B's correspondent side starts again with a new Kcn and has since answered some other
    node's test init, so the nonce index A's keygen tokens name exists again with another nonce."""
    b = net.node["b"]
    if how == "deleted":
        assert b.correspondent.cache.remove(EXT["a"]) is not None
        return
    fresh = CorrespondentNode([EXT["b"]], random_bytes=seeded(77))
    fresh.nonces.current(net.now)
    b.correspondent, b.counters = fresh, fresh.counters
    index = net.node["a"].mobile.bul.get(EXT["b"]).nonce_indices[0]
    assert fresh.nonces.lookup(index, net.now) is not None   # the index A would reuse is valid at B


def _pop_mobile(node, now):
    """What A's mobile core queued, as A's shell sends it (CoTI and BU with RH2 under a peer binding)."""
    out = []
    for d in node.mobile.datagrams_to_send(now):
        if d.protection is Protection.NONE:
            d = Datagram(node.route_mobility(d.packet, now), d.protection, d.esp_peer, d.description)
        out.append(d)
    return out


def _inner_mobility_type(datagram):
    packet = datagram.packet
    if packet[6] == ipv6.NH_IPV6:
        packet = m.decapsulate(packet)[2]
    return mobility_type(packet)


@pytest.mark.parametrize("how", ["deleted", "restarted"])
def test_binding_error_from_the_peer_stops_the_direct_pair_and_return_routability_restores_it(how):
    net = both_out()
    a, b = net.node["a"], net.node["b"]
    net.now = T
    assert a.ready(EXT["b"], T) and b.ready(EXT["a"], T)
    net.events("a"), net.events("b")
    sealed = esp(EXT["a"], EXT["b"], seq=7)
    assert b.receive_esp(a.route_esp(sealed, T), T) == sealed   # the direct pair works before

    _lose_binding(net, how)
    wire = a.route_esp(esp(EXT["a"], EXT["b"], seq=8), T)
    assert wire is not None                          # A still believes in its binding at B
    assert b.receive_esp(wire, T) is None            # RFC 6275 §9.3.1: HAO without a binding
    assert b.counters["dropped_hao_without_binding"] == 1

    # B's shell sends what its MobilePeerRouting returns: the BE, from B's home address, reverse-
    # tunnelled through the home agent (B is away and A's care-of address holds no binding of B's).
    (be,) = b.datagrams_to_send(T)
    assert be.protection is Protection.ESP_TUNNEL and be.esp_peer == HA
    outer = IPv6(be.packet)                          # scapy as the oracle for the wire format
    assert (outer.src, outer.dst, outer.nh) == (ipv6.ntop(COA["b1"]), ipv6.ntop(HA), ipv6.NH_IPV6)
    inner = IPv6(bytes(outer.payload))
    # RFC 6275 §9.3.3: to the offending packet's source address (A's care-of address); status 1 carries
    # the home address from the Home Address option (§6.1.9).
    assert (inner.src, inner.dst, inner.nh) == (ipv6.ntop(EXT["b"]), ipv6.ntop(COA["a1"]), 135)
    assert MIP6MH_BE in inner
    error = inner[MIP6MH_BE]
    assert (error.mhtype, error.status, error.ha) == (7, 1, ipv6.ntop(EXT["a"]))
    checksum = error.cksum
    del error.cksum
    assert IPv6(bytes(inner))[MIP6MH_BE].cksum == checksum   # valid MH checksum (pseudo-header)

    # It reaches A by that path: the home agent opens the reverse tunnel and forwards it to A.
    net.hops.clear()
    net.deliver(be.packet, esp=True)
    assert [where for _, where, _ in net.hops] == ["ha", "a"]
    events = net.events("a")
    assert ev.BindingErrorReceived(EXT["b"], 1, EXT["a"]) in events
    assert ev.RouteOptimisationStopped(EXT["b"], "binding error") in events
    # RFC 6275 §11.3.6: at once, nothing more on the direct pair.
    assert not a.ready(EXT["b"], T)
    assert a.route_esp(esp(EXT["a"], EXT["b"], seq=9), T) is None
    # Return routability again: HoTI through the home agent (in the tunnel SA) and CoTI straight to B.
    restart = _pop_mobile(a, T)
    kinds = sorted(_inner_mobility_type(d) for d in restart)
    assert kinds == [m.MH_HOTI, m.MH_COTI]
    assert not [d for d in restart if _inner_mobility_type(d) == m.MH_BU]   # no BU on the old tokens
    # A copy of the BE (or more of them) while the tests are out does not start them again.
    net.deliver(be.packet, esp=True)
    assert _pop_mobile(a, T) == [] and not a.ready(EXT["b"], T)

    for d in restart:
        net.deliver(d.packet, esp=d.protection is not Protection.NONE)
    net.settle()
    assert a.ready(EXT["b"], T) and b.ready(EXT["a"], T)
    assert b.correspondent.route(EXT["a"], T) == COA["a1"]
    assert ev.RouteOptimisationStarted(EXT["b"], COA["a1"]) in net.events("a")
    sealed = esp(EXT["a"], EXT["b"], seq=10)
    wire = a.route_esp(sealed, T)
    assert wire[8:24] == COA["a1"] and wire[24:40] == COA["b1"]
    assert b.receive_esp(wire, T) == sealed
    back = esp(EXT["b"], EXT["a"], spi=0x5A5A0002)
    assert a.receive_esp(b.route_esp(back, T), T) == back


def test_a_binding_error_while_a_refresh_is_outstanding_also_stops_the_direct_pair():
    """A's refresh BU is on its way (the registration at B still counts as live until the BA): the BE must
    end use of the pair at once all the same, and the exchange starts again from return routability."""
    net = both_out()
    a, b = net.node["a"], net.node["b"]
    net.now = a.mobile.bul.get(EXT["b"]).refresh_at
    deliver, lost = net.deliver, []

    def lose_the_refresh_bu(packet, esp=False):
        if mobility_type(packet) == m.MH_BU and packet[8:24] == COA["a1"] and packet[24:40] != HA and not lost:
            lost.append(packet)
            return
        deliver(packet, esp)
    net.deliver = lose_the_refresh_bu
    a.mobile.handle_timer(net.now)                   # refresh: RR again (the tokens are stale), then the BU
    net.settle()
    net.deliver = deliver
    assert lost and a.mobile.bul.get(EXT["b"]).outstanding and a.ready(EXT["b"], net.now)
    b.correspondent.cache.remove(EXT["a"])
    assert b.receive_esp(a.route_esp(esp(EXT["a"], EXT["b"]), net.now), net.now) is None
    (be,) = b.datagrams_to_send(net.now)
    net.deliver(be.packet, esp=True)
    assert not a.ready(EXT["b"], net.now)
    assert not a.mobile.bul.get(EXT["b"]).outstanding     # the lost BU is not retransmitted
    assert sorted(_inner_mobility_type(d) for d in _pop_mobile(a, net.now)) == [m.MH_HOTI, m.MH_COTI]


def test_a_binding_error_from_a_node_without_an_entry_is_ignored():
    """RFC 6275 §11.3.6: without a binding update list entry for the BE's source, it must be ignored."""
    net = both_out()
    a = net.node["a"]
    stranger = ipv6.pton("2001:db8:e0::a:9")
    forged = m.build_mobility_packet(stranger, COA["a1"], m.BindingError(1, EXT["a"]))
    net.deliver(forged)
    assert a.ready(EXT["b"], T)
    assert a.mobile.counters["binding_errors_ignored"] == 1
