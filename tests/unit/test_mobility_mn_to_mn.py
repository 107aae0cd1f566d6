"""Route optimisation between two mobile nodes (``nodeapps.mobility.mn_to_mn``) on a fake clock.

Two MNs share one home agent (the lab's external home agent) and are each other's correspondent. The fake
network routes like the lab: a packet to a home address is intercepted by the HA and tunnelled to the
registered care-of address (Mobility Header messages in the tunnel SA, here just marked), reverse-tunnelled
packets are checked and forwarded by the HA, a packet to a care-of address reaches that MN. Every hop is
recorded, so the tests can say which packets passed the HA.
"""
import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import HAO, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting

from nodeapps import ipv6
from nodeapps.mobility import events as ev
from nodeapps.mobility import messages as m
from nodeapps.mobility.events import Datagram, Protection
from nodeapps.mobility.home_agent import HomeAgent
from nodeapps.mobility.mn_to_mn import MobilePeerRouting, mobility_type
from nodeapps.mobility.mobile import MobileNode
from tests.unit.test_mobility_cores import seeded

HA = ipv6.pton("2001:db8:e0::1")
HOME_PREFIX = "2001:db8:e0::/64"
EXT = {"a": ipv6.pton("2001:db8:e0::a:1"), "b": ipv6.pton("2001:db8:e0::a:2")}
INTERNAL = {"a": ipv6.pton("fdc0:ffee:0:1::a:1"), "b": ipv6.pton("fdc0:ffee:0:1::a:2")}
COA = {"a1": ipv6.pton("2001:db8:21::a:1"), "a2": ipv6.pton("2001:db8:31::a:1"),
       "b1": ipv6.pton("2001:db8:22::a:2"), "b2": ipv6.pton("2001:db8:31::a:2")}


def udp(src, dst, payload=b"SVPNLAB-PROBE"):
    return bytes(IPv6(src=ipv6.ntop(src), dst=ipv6.ntop(dst)) / UDP(sport=7777, dport=7777) / payload)


class TwoNodes:
    """``public``: embodiment 2, where the applications use the route-optimised home addresses themselves."""

    def __init__(self, public=False):
        self.now = 0.0
        self.ha = HomeAgent(HA, [HOME_PREFIX])
        self.node = {}
        for i, name in enumerate("ab"):
            other = "b" if name == "a" else "a"
            mobile = MobileNode(EXT[name], HA, random_bytes=seeded(10 + i), initial_sequence=100 * (i + 1))
            self.node[name] = MobilePeerRouting(mobile, {(EXT if public else INTERNAL)[other]: EXT[other]})
        self.hops = []          # (time, where, packet): "ha" = the HA received it
        self.answers = []       # what each node's correspondent side sent
        self.delivered = {"a": [], "b": []}

    def cores(self):
        return [self.ha] + [c for r in self.node.values() for c in (r.mobile, r.correspondent)]

    def settle(self):
        for _ in range(1000):
            batch = []
            for name, r in self.node.items():
                for d in r.mobile.datagrams_to_send(self.now):
                    if d.protection is Protection.NONE:
                        d = Datagram(r.route_mobility(d.packet, self.now), description=d.description)
                    batch.append(d)
                answers = r.datagrams_to_send(self.now)
                self.answers += answers
                batch += answers
            batch += self.ha.datagrams_to_send(self.now)
            if not batch:
                return
            for d in batch:
                self.deliver(d.packet, esp=d.protection is not Protection.NONE)
        raise AssertionError("did not settle")

    def owner_of_care_of(self, address):
        for name, r in self.node.items():
            if r.mobile.care_of_address == address and not r.mobile.at_home:
                return name
        return None

    def deliver(self, packet, esp=False):
        dst = packet[24:40]
        if dst == HA:
            self.hops.append((self.now, "ha", packet))
            if packet[6] == ipv6.NH_IPV6:
                inner = self.ha.accept_reverse_tunnel(packet, self.now)
                if inner is not None:
                    self.deliver(inner)
            else:
                self.ha.receive(packet, self.now, esp_protected=esp)
        elif dst in EXT.values():
            self.hops.append((self.now, "ha", packet))
            tunnelled = self.ha.encapsulate_to_mobile(packet, self.now)
            if tunnelled is not None:
                if tunnelled.protection is Protection.ESP_TUNNEL:   # the tunnel SA hands over the inner packet
                    self.to_node(tunnelled.packet[24:40], m.decapsulate(tunnelled.packet)[2], True)
                else:
                    self.to_node(tunnelled.packet[24:40], tunnelled.packet, False)
        else:
            self.to_node(dst, packet, esp)

    def to_node(self, care_of, packet, esp):
        name = self.owner_of_care_of(care_of)
        if name is None:
            self.hops.append((self.now, "lost", packet))
            return
        self.hops.append((self.now, name, packet))
        out = self.node[name].receive(packet, self.now, esp_protected=esp)
        if out is not None:
            self.delivered[name].append(out)

    def run_until(self, end):
        self.settle()
        for _ in range(10000):
            timers = [t for t in (c.get_timer() for c in self.cores()) if t is not None]
            if not timers or min(timers) > end:
                self.now = max(self.now, end)
                return
            self.now = max(self.now, min(timers))
            for core in self.cores():
                timer = core.get_timer()
                if timer is not None and timer <= self.now:
                    core.handle_timer(self.now)
            self.settle()
        raise AssertionError("timers did not advance")

    def move(self, name, care_of):
        self.node[name].mobile.move_to(care_of, self.now)
        self.settle()

    def events(self, name):
        r = self.node[name]
        return r.mobile.pop_events() + r.correspondent.pop_events()


def both_out(public=False):
    net = TwoNodes(public)
    for r in net.node.values():
        r.start(0.0)
    net.move("a", COA["a1"])
    net.move("b", COA["b1"])
    net.run_until(3.0)    # A's first CoTI reached the HA before B had registered: retransmitted at 1 s
    return net


def test_both_bindings_after_return_routability_and_data_goes_care_of_to_care_of():
    net = both_out()
    a, b = net.node["a"], net.node["b"]
    assert a.ready(EXT["b"], 4.0) and b.ready(EXT["a"], 4.0)
    assert a.correspondent.route(EXT["b"], 4.0) == COA["b1"] and b.correspondent.route(EXT["a"], 4.0) == COA["a1"]

    probe = udp(INTERNAL["a"], INTERNAL["b"])
    wire = a.wrap(probe, 4.0)
    parsed = IPv6(wire)   # scapy as the oracle: RH2 before the HAO (RFC 6275 §6.3/§6.4), then IPv6-in-IPv6
    assert (parsed.src, parsed.dst) == (ipv6.ntop(COA["a1"]), ipv6.ntop(COA["b1"]))
    rh = parsed[IPv6ExtHdrRouting]
    assert rh.type == 2 and rh.segleft == 1 and rh.addresses == [ipv6.ntop(EXT["b"])]
    assert parsed[HAO].hoa == ipv6.ntop(EXT["a"])
    # The outer header is the tunnel between the external home addresses, whose ends sit in the HAO and
    # the RH2; what follows is the application packet, in clear (no SA between the MNs).
    assert parsed[IPv6ExtHdrDestOpt].nh == ipv6.NH_IPV6
    assert bytes(parsed[IPv6ExtHdrDestOpt].payload) == probe
    net.hops.clear()
    net.deliver(wire)
    assert net.delivered["b"] == [probe]
    assert [where for _, where, _ in net.hops] == ["b"]    # straight to B, not via the HA

    reply = udp(INTERNAL["b"], INTERNAL["a"], b"reply")
    net.deliver(b.wrap(reply, 4.0))
    assert net.delivered["a"] == [reply]


def test_home_and_care_of_tests_leave_in_the_tunnel_sa_with_our_home_agent():
    net = both_out()
    tunnelled = [d for d in net.answers if d.packet[6] == ipv6.NH_IPV6]
    kinds = {mobility_type(m.decapsulate(d.packet)[2]) for d in tunnelled}
    assert {m.MH_HOT, m.MH_COT} <= kinds, kinds   # (and a BA sent before our own binding at the peer)
    # RFC 3776 §3.1: an eavesdropper on our access link must not see the keygen tokens in clear.
    assert all(d.protection is Protection.ESP_TUNNEL and d.esp_peer == HA for d in tunnelled)


def test_not_optimised_until_both_bindings_exist():
    net = TwoNodes()
    net.node["a"].start(0.0)
    net.move("a", COA["a1"])
    net.move("b", COA["b1"])   # B does not route-optimise with A: only A's binding at B exists
    net.run_until(3.0)
    a = net.node["a"]
    assert a.mobile.route_optimised(EXT["b"], 4.0)
    assert a.wrap(udp(INTERNAL["a"], INTERNAL["b"]), 4.0) is None
    assert net.node["b"].wrap(udp(INTERNAL["b"], INTERNAL["a"]), 4.0) is None
    assert a.wrap(udp(INTERNAL["a"], ipv6.pton("fdc0:ffee:0:1::99")), 4.0) is None


def test_a_move_is_followed_by_the_mobile_node_itself_and_the_binding_update_skips_the_home_agent():
    net = both_out()
    net.now = 10.0
    net.events("a"), net.events("b")
    net.hops.clear()
    net.move("a", COA["a2"])
    b = net.node["b"]
    assert b.correspondent.route(EXT["a"], 10.5) == COA["a2"]
    assert net.node["a"].ready(EXT["b"], 10.5)
    # Signalling of the move: BU/BA with the HA, CoTI (with RH2) and BU straight to B's care-of address.
    direct = [p for _, where, p in net.hops if where == "b"]
    kinds = {mobility_type(p) for p in direct}
    assert {2, 5} <= kinds     # CoTI and BU
    for p in direct:
        if mobility_type(p) in (2, 5):
            assert m.packet_summary(p)[1] == EXT["b"] and p[8:24] == COA["a2"]
    # No home test again: the home token is still fresh (RFC 6275 §5.2.5).
    assert not [p for _, _, p in net.hops if mobility_type(p) == 1
                or (p[6] == ipv6.NH_IPV6 and mobility_type(m.decapsulate(p)[2]) == 1)]
    assert ev.RouteOptimisationStarted(EXT["b"], COA["a2"]) in net.events("a")
    # Data now reaches the new care-of address directly, both ways.
    net.hops.clear()
    net.deliver(b.wrap(udp(INTERNAL["b"], INTERNAL["a"]), 11.0))
    net.deliver(net.node["a"].wrap(udp(INTERNAL["a"], INTERNAL["b"]), 11.0))
    assert [where for _, where, _ in net.hops] == ["a", "b"]


def test_hao_data_without_a_binding_is_refused_with_a_binding_error():
    net = both_out()
    forged = m.insert_routing_header(m.insert_home_address_option(
        m.encapsulate(udp(INTERNAL["a"], INTERNAL["b"]), EXT["a"], EXT["b"]), COA["a2"]), COA["b1"])
    net.hops.clear()
    assert net.node["b"].receive(forged, 4.0) is None           # RFC 6275 §9.3.1: HAO does not match
    assert net.node["b"].counters["dropped_hao_without_binding"] == 1
    (be,) = net.node["b"].correspondent.datagrams_to_send(4.0)
    assert be.description.startswith("BE status 1")


def test_inner_source_must_be_the_peers_internal_address():
    net = both_out()
    spoofed = udp(ipv6.pton("fdc0:ffee:0:1::5"), INTERNAL["b"])
    wire = m.insert_routing_header(m.insert_home_address_option(
        m.encapsulate(spoofed, EXT["a"], EXT["b"]), COA["a1"]), COA["b1"])
    assert net.node["b"].receive(wire, 4.0) is None
    assert net.node["b"].counters["dropped_not_a_peer_tunnel"] == 1


def test_going_inside_deletes_the_binding_at_the_peer_through_the_vpn():
    net = both_out()
    a, b = net.node["a"], net.node["b"]
    net.events("a")
    (carried,) = b.deregistrations(INTERNAL["b"], 20.0)
    assert (carried[8:24], carried[24:40]) == (INTERNAL["b"], INTERNAL["a"])
    assert ev.RouteOptimisationStopped(EXT["a"], "deregistered from home") in b.mobile.pop_events()
    bu = m.parse_mobility_packet(m.decapsulate(carried)[2])
    assert bu.message.lifetime == 0 and not bu.message.ack and bu.home_address is None
    assert a.receive_via_vpn(carried, 20.0)
    assert a.correspondent.route(EXT["b"], 20.0) is None
    assert [type(e) for e in a.correspondent.pop_events()] == [ev.BindingRemoved]
    assert not a.ready(EXT["b"], 20.0) and a.wrap(udp(INTERNAL["a"], INTERNAL["b"]), 20.0) is None
    assert b.deregistrations(INTERNAL["b"], 20.0) == []     # nothing left to delete


def test_tampered_deregistration_is_dropped():
    net = both_out()
    a, b = net.node["a"], net.node["b"]
    (carried,) = b.deregistrations(INTERNAL["b"], 20.0)
    bu = m.decapsulate(carried)[2]
    mh = bytearray(bu[40:])
    mh[-1] ^= 1   # authenticator (last option), with a correct checksum again
    bad = m.encapsulate(bu[:40] + m.set_checksum(bytes(mh), bu[8:24], bu[24:40]), carried[8:24], carried[24:40])
    assert a.receive_via_vpn(bad, 20.0)
    assert a.correspondent.route(EXT["b"], 20.0) == COA["b1"]
    assert a.counters["dropped_bad_authenticator"] == 1
    assert not a.receive_via_vpn(udp(INTERNAL["b"], INTERNAL["a"]), 20.0)


@pytest.mark.parametrize("lost", ["CoTI", "BU"])
def test_lost_signalling_is_retransmitted_on_the_fake_clock(lost):
    net = both_out()
    net.now = 30.0
    dropped = []
    original = net.deliver

    def lossy(packet, esp=False):
        kind = mobility_type(packet)
        name = {2: "CoTI", 5: "BU"}.get(kind)
        if name == lost and packet[8:24] == COA["a2"] and packet[24:40] != HA and not dropped:
            dropped.append(packet)
            return
        original(packet, esp)
    net.deliver = lossy
    net.move("a", COA["a2"])
    assert dropped and not net.node["a"].ready(EXT["b"], 30.1)
    timer = min(t for t in (c.get_timer() for c in net.cores()) if t is not None)
    assert timer == pytest.approx(31.0)    # INITIAL_BINDACK_TIMEOUT for tests and BUs alike
    net.now = timer
    for core in net.cores():
        if core.get_timer() is not None and core.get_timer() <= timer:
            core.handle_timer(timer)
    net.settle()
    assert net.node["a"].ready(EXT["b"], 31.1)
    assert net.node["b"].correspondent.route(EXT["a"], 31.1) == COA["a2"]


def test_a_peer_that_comes_out_later_is_optimised_without_waiting_for_the_backoff():
    net = TwoNodes()
    for r in net.node.values():
        r.start(0.0)
    net.move("b", COA["b1"])          # A is still inside: B's HoTI and CoTI reach nobody
    net.run_until(20.0)               # B's test inits back off: 1, 2, 4, 8 s ...
    b_timer = net.node["b"].mobile.get_timer()
    assert b_timer is not None and b_timer > 25.0
    net.now = 20.0
    net.move("a", COA["a1"])          # A's BU reaches B: B retries at once
    assert net.node["a"].ready(EXT["b"], 20.0) and net.node["b"].ready(EXT["a"], 20.0)
    assert net.node["b"].mobile.counters["test_init_retries"] == 2


# ---- ESP between the route-optimised home addresses (the VCM's direct SA pair) ----

def esp(src, dst, spi=0x5A5A0001, seq=1, body=b"\x11" * 40):
    """Stand-in for what a tunnel-mode SA between the two home addresses emits: IPv6 | ESP."""
    payload = spi.to_bytes(4, "big") + seq.to_bytes(4, "big") + body
    return ipv6.build_header(src, dst, ipv6.NH_ESP, len(payload)) + payload


def test_esp_between_home_addresses_goes_care_of_to_care_of_with_rh2_and_hao_before_esp():
    from scapy.layers.ipsec import ESP
    net = both_out()
    a, b = net.node["a"], net.node["b"]
    sealed = esp(EXT["a"], EXT["b"])
    wire = a.route_esp(sealed, 4.0)
    parsed = IPv6(wire)
    assert (parsed.src, parsed.dst) == (ipv6.ntop(COA["a1"]), ipv6.ntop(COA["b1"]))
    # RFC 6275 §6.3/§6.4 (RFC 3776 placement): IPv6 | RH2 | destination options (HAO) | ESP
    assert parsed.nh == 43 and parsed[IPv6ExtHdrRouting].type == 2
    assert parsed[IPv6ExtHdrRouting].addresses == [ipv6.ntop(EXT["b"])]
    assert parsed[IPv6ExtHdrRouting].nh == 60 and parsed[HAO].hoa == ipv6.ntop(EXT["a"])
    assert parsed[IPv6ExtHdrDestOpt].nh == ipv6.NH_ESP and parsed[ESP].spi == 0x5A5A0001
    # Receive: RH2 and HAO processed first; what goes to the SAD is the ESP between the home addresses.
    assert b.receive_esp(wire, 4.0) == sealed
    assert b.counters["peer_esp_in"] == 1


def test_no_esp_leaves_on_the_direct_pair_until_both_bindings_exist():
    net = TwoNodes()
    net.node["a"].start(0.0)
    net.move("a", COA["a1"])
    net.move("b", COA["b1"])   # only A's binding at B
    net.run_until(3.0)
    assert net.node["a"].route_esp(esp(EXT["a"], EXT["b"]), 4.0) is None
    assert net.node["b"].route_esp(esp(EXT["b"], EXT["a"]), 4.0) is None
    # Not a peer's home address, or not ESP from ours: never routed.
    both = both_out()
    assert both.node["a"].route_esp(esp(EXT["a"], ipv6.pton("2001:db8:e0::99")), 4.0) is None
    assert both.node["a"].route_esp(esp(EXT["b"], EXT["b"]), 4.0) is None


def test_peer_esp_with_a_stale_care_of_address_is_refused_before_the_sad():
    net = both_out()
    b = net.node["b"]
    forged = m.insert_routing_header(m.insert_home_address_option(esp(EXT["a"], EXT["b"]), COA["a2"]), COA["b1"])
    assert b.receive_esp(forged, 4.0) is None                       # §9.3.1: no binding for that CoA
    assert b.counters["dropped_hao_without_binding"] == 1
    (be,) = b.correspondent.datagrams_to_send(4.0)
    assert be.description.startswith("BE status 1")
    # Without RH2, or without HAO: not the direct pair's format.
    assert b.receive_esp(m.insert_home_address_option(esp(EXT["a"], EXT["b"]), COA["a1"]), 4.0) is None
    assert b.receive_esp(esp(EXT["a"], EXT["b"]), 4.0) is None
    assert b.counters["dropped_not_peer_esp"] == 2


def test_direct_esp_follows_a_move_by_the_nodes_own_binding_update():
    net = both_out()
    net.now = 10.0
    net.move("a", COA["a2"])
    a, b = net.node["a"], net.node["b"]
    wire = a.route_esp(esp(EXT["a"], EXT["b"], seq=2), 10.5)
    assert wire[8:24] == COA["a2"] and wire[24:40] == COA["b1"]
    assert b.receive_esp(wire, 10.5) == esp(EXT["a"], EXT["b"], seq=2)
    back = b.route_esp(esp(EXT["b"], EXT["a"]), 10.5)
    assert back[24:40] == COA["a2"] and a.receive_esp(back, 10.5) is not None


def test_public_plan_pair_route_optimises_on_the_home_addresses_and_carries_esp_care_of_to_care_of():
    net = both_out(public=True)
    a, b = net.node["a"], net.node["b"]
    assert a.ready(EXT["b"], 3.0) and b.ready(EXT["a"], 3.0)
    wire = a.route_esp(esp(EXT["a"], EXT["b"]), 3.0)
    pkt = IPv6(wire)
    assert (pkt.src, pkt.dst) == (ipv6.ntop(COA["a1"]), ipv6.ntop(COA["b1"]))
    assert pkt[IPv6ExtHdrRouting].addresses == [ipv6.ntop(EXT["b"])] and pkt[HAO].hoa == ipv6.ntop(EXT["a"])
    opened = b.receive_esp(wire, 3.0)
    assert (opened[8:24], opened[24:40], opened[6]) == (EXT["a"], EXT["b"], ipv6.NH_ESP)


def test_public_plan_deregistration_from_the_office_is_a_plain_binding_update_to_the_peers_home_address():
    """Home in the office, the node is on its home link: the lifetime-0 BU leaves from the home address as
    it is (no IPv6-in-IPv6 between internal addresses, there are none), and reaches the peer through the
    peer's HA like any packet to its home address."""
    net = both_out(public=True)
    a, b = net.node["a"], net.node["b"]
    (bu_packet,) = b.deregistrations(EXT["b"], 20.0)
    assert (bu_packet[6], bu_packet[8:24], bu_packet[24:40]) == (ipv6.NH_MOBILITY, EXT["b"], EXT["a"])
    bu = m.parse_mobility_packet(bu_packet)
    assert bu.message.lifetime == 0 and not bu.message.ack and bu.home_address is None
    net.now = 20.0
    net.deliver(bu_packet)                      # to a's home address: the HA tunnels it to a1
    assert net.hops[-1][1] == "a"
    assert a.correspondent.route(EXT["b"], 20.0) is None and not a.ready(EXT["b"], 20.0)
    assert a.route_esp(esp(EXT["a"], EXT["b"]), 20.0) is None   # nothing may leave on the direct pair now


def test_traffic_kept_off_route_optimisation_is_reverse_tunnelled_even_with_a_binding():
    """A VCM peer's packets that may not use the direct SA go through the HA (and so the SG tunnel): a HAO
    in clear would expose them."""
    net = both_out(public=True)
    mobile = net.node["a"].mobile
    packet = udp(EXT["a"], EXT["b"])
    assert mobile.route_optimised(EXT["b"], 3.0)
    assert HAO in IPv6(mobile.outgoing(packet, 3.0).packet)
    kept = mobile.outgoing(packet, 3.0, route_optimise=False).packet
    assert kept[6] == ipv6.NH_IPV6 and (kept[8:24], kept[24:40]) == (COA["a1"], HA) and kept[40:] == packet


def test_public_plan_clear_route_optimisation_puts_hao_and_rh2_on_the_application_packet_itself():
    """Without the VCM (the prior-art variant) in embodiment 2 no inner header is needed: the application
    packet between the home addresses gets HAO and RH2, and the peer gets it back unchanged."""
    net = both_out(public=True)
    a, b = net.node["a"], net.node["b"]
    packet = udp(EXT["a"], EXT["b"])
    wire = a.wrap(packet, 3.0)
    pkt = IPv6(wire)
    assert (pkt.src, pkt.dst) == (ipv6.ntop(COA["a1"]), ipv6.ntop(COA["b1"]))
    assert pkt[HAO].hoa == ipv6.ntop(EXT["a"]) and pkt[IPv6ExtHdrRouting].addresses == [ipv6.ntop(EXT["b"])]
    assert UDP in pkt and IPv6 not in pkt[UDP]                     # no IPv6-in-IPv6
    assert len(wire) == len(packet) + 48                           # HAO 24 + RH2 24
    assert b.receive(wire, 3.0) == packet
    assert b.counters["peer_data_in"] == 1
    forged = bytearray(a.wrap(udp(EXT["a"], EXT["b"]), 3.0))
    forged_to_other = IPv6(bytes(forged))
    forged_to_other[HAO].hoa = "2001:db8:e0::a:9"                   # a home address with no binding at b
    assert b.receive(bytes(forged_to_other), 3.0) is None


# ---- a static binding management key (RFC 4449), as the VCM's KEYS hand one out ----
KBM = bytes(range(20))


def both_out_without_return_routability():
    net = TwoNodes()
    net.move("a", COA["a1"])
    net.move("b", COA["b1"])
    net.hops.clear()
    return net


def signalling_kinds(net):
    """(MH type, where it went) of every hop, tunnelled ones opened."""
    out = []
    for _, where, packet in net.hops:
        inner = m.decapsulate(packet)[2] if packet[6] == ipv6.NH_IPV6 else packet
        out.append((mobility_type(inner), where))
    return out


def test_a_static_key_binds_both_ways_at_once_without_tests_and_the_first_bu_goes_straight_to_the_peer():
    net = both_out_without_return_routability()
    a, b = net.node["a"], net.node["b"]
    b.use_binding_key(EXT["a"], KBM, COA["a1"], net.now)
    a.use_binding_key(EXT["b"], KBM, COA["b1"], net.now)
    net.settle()                                   # no timer fires: no retransmission was needed
    assert a.ready(EXT["b"], net.now) and b.ready(EXT["a"], net.now)
    kinds = signalling_kinds(net)
    assert not {m.MH_HOTI, m.MH_COTI, m.MH_HOT, m.MH_COT} & {k for k, _ in kinds}, kinds
    assert (m.MH_BU, "a") in kinds and (m.MH_BU, "b") in kinds and (m.MH_BU, "ha") not in kinds
    bu = next(p for _, where, p in net.hops if where == "b" and mobility_type(p) == m.MH_BU)
    parsed = IPv6(bu)                              # scapy as the oracle
    assert parsed.dst == ipv6.ntop(COA["b1"]) and parsed[IPv6ExtHdrRouting].addresses == [ipv6.ntop(EXT["b"])]
    assert m.NonceIndices not in {type(o) for o in m.parse_mobility_packet(
        b.mobile.incoming(bu, net.now)).message.options}   # RFC 4449: no nonce indices
    assert all(not k.startswith("dropped") or v == 0 for c in (a.counters, b.counters) for k, v in c.items())


def test_a_bu_that_overtakes_the_peers_key_is_checked_when_the_key_comes_and_a_wrong_key_binds_nothing():
    net = both_out_without_return_routability()
    a, b = net.node["a"], net.node["b"]
    a.use_binding_key(EXT["b"], KBM, COA["b1"], net.now)
    net.settle()
    assert b.counters["dropped_missing_rr_options"] == 1 and not a.mobile.route_optimised(EXT["b"], net.now)
    net.now += 0.05
    b.use_binding_key(EXT["a"], KBM, COA["a1"], net.now)          # the held BU binds now: no 1 s timeout
    net.settle()
    assert b.counters["keyless_bu_replayed"] == 1
    assert a.ready(EXT["b"], net.now) and b.ready(EXT["a"], net.now)

    net = both_out_without_return_routability()
    a, b = net.node["a"], net.node["b"]
    a.use_binding_key(EXT["b"], KBM, COA["b1"], net.now)
    net.settle()
    b.use_binding_key(EXT["a"], bytes(20), COA["a1"], net.now)   # another key: neither BU verifies
    net.settle()
    assert a.counters["dropped_bad_authenticator"] == 1 and b.counters["dropped_bad_authenticator"] == 1
    assert not a.mobile.route_optimised(EXT["b"], net.now) and not b.mobile.route_optimised(EXT["a"], net.now)


def test_a_held_keyless_bu_goes_stale_and_the_hold_is_bounded():
    from nodeapps.mobility.correspondent import KEYLESS_BU_HOLD_S, MAX_KEYLESS_BUS
    net = both_out_without_return_routability()
    a, b = net.node["a"], net.node["b"]
    a.use_binding_key(EXT["b"], KBM, COA["b1"], net.now)
    net.settle()
    net.now += KEYLESS_BU_HOLD_S + 0.1
    b.correspondent.set_binding_key(EXT["a"], KBM, net.now)
    assert b.counters["keyless_bu_replayed"] == 0 and b.correspondent.route(EXT["a"], net.now) is None

    from nodeapps.mobility import rr
    from nodeapps.mobility.correspondent import CorrespondentNode
    cn = CorrespondentNode([EXT["a"]])
    homes = [ipv6.pton(f"2001:db8:e0::c:{i}") for i in range(3 * MAX_KEYLESS_BUS)]
    for i, home in enumerate(homes):                 # a flood of keyless BUs from as many home addresses
        care_of = ipv6.pton(f"2001:db8:77::{i + 1}")
        bu = rr.sign(m.BindingUpdate(i + 1, 10, ack=True), KBM, care_of, EXT["a"])
        cn.receive(m.build_mobility_packet(care_of, EXT["a"], bu, home_address=home), 0.0)
    assert list(cn._keyless_bus) == homes[-MAX_KEYLESS_BUS:]
    cn.set_binding_key(homes[-1], KBM, 0.5)           # the newest one still binds once its key comes
    assert cn.route(homes[-1], 0.5) == ipv6.pton(f"2001:db8:77::{len(homes)}")


def test_a_forged_keyless_bu_for_the_same_home_address_does_not_push_out_the_genuine_one():
    from nodeapps.mobility import rr
    from nodeapps.mobility.correspondent import MAX_KEYLESS_BUS_PER_HOME, CorrespondentNode
    cn = CorrespondentNode([EXT["a"]])
    home, care_of, forged_care_of = EXT["b"], COA["b1"], ipv6.pton("2001:db8:66::6")

    def keyless_bu(sequence, key, coa):
        bu = rr.sign(m.BindingUpdate(sequence, 10, ack=True), key, coa, EXT["a"])
        cn.receive(m.build_mobility_packet(coa, EXT["a"], bu, home_address=home), 0.1)

    keyless_bu(7, KBM, care_of)                                   # the peer's, signed with the coming key
    for sequence in range(MAX_KEYLESS_BUS_PER_HOME - 1):          # an attacker's, for the same home address
        keyless_bu(100 + sequence, bytes(20), forged_care_of)
    cn.set_binding_key(home, KBM, 0.2)
    assert cn.route(home, 0.2) == care_of
    assert cn.counters["keyless_bu_replayed"] == MAX_KEYLESS_BUS_PER_HOME
    assert cn.counters["dropped_bad_authenticator"] == MAX_KEYLESS_BUS_PER_HOME - 1


def test_without_the_key_the_binding_goes_back_to_return_routability():
    net = both_out_without_return_routability()
    a, b = net.node["a"], net.node["b"]
    for x, y in ((a, "b"), (b, "a")):
        x.use_binding_key(EXT[y], KBM, COA[f"{y}1"], net.now)
    net.settle()
    for x, y in ((a, "b"), (b, "a")):
        x.use_binding_key(EXT[y], None, None, net.now)
    assert EXT["b"] not in a.correspondent.binding_keys
    net.hops.clear()
    net.move("a", COA["a2"])                       # the BU after the move needs tokens again
    net.run_until(net.now + 3.0)
    kinds = {k for k, _ in signalling_kinds(net)}
    assert {m.MH_HOTI, m.MH_COTI} <= kinds and a.ready(EXT["b"], net.now)


def test_binding_keys_are_bounded_like_the_cache():
    from nodeapps.mobility.correspondent import CorrespondentNode
    cn = CorrespondentNode([EXT["a"]], cache_capacity=2)
    for i in range(5):
        cn.set_binding_key(ipv6.pton(f"2001:db8:e0::b:{i}"), KBM, 0.0)
    assert list(cn.binding_keys) == [ipv6.pton("2001:db8:e0::b:3"), ipv6.pton("2001:db8:e0::b:4")]
