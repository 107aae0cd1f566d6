"""Mobile node, home agent and correspondent cores driven on a fake clock through an in-memory network.

The network routes by destination like the lab would: packets to the home address are intercepted by the
HA (tunnelled to the registered care-of address), reverse-tunnelled packets are checked and forwarded by the
HA, and a datagram marked for ESP arrives as ``esp_protected``. Rules drop, duplicate, hold or rewrite
datagrams in flight.
"""
import hashlib
import hmac
import random

import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6

from nodeapps import ipv6
from nodeapps.mobility import messages as m
from nodeapps.mobility import events as ev
from nodeapps.mobility.constants import (
    BA_ACCEPTED, BA_EXPIRED_NONCES, BA_HOME_REGISTRATION_NOT_SUPPORTED, BA_INSUFFICIENT_RESOURCES,
    BA_NOT_HOME_AGENT_FOR_THIS_MN, BA_NOT_HOME_SUBNET, BA_SEQUENCE_OUT_OF_WINDOW, BE_UNKNOWN_BINDING_FOR_HAO, BE_UNRECOGNIZED_MH_TYPE,
)
from nodeapps.mobility.correspondent import CorrespondentNode
from nodeapps.mobility.events import Datagram, Protection
from nodeapps.mobility.home_agent import HomeAgent
from nodeapps.mobility.mobile import MobileNode

HOA, HA, COA1, COA2, CN, OTHER = (ipv6.pton(a) for a in (
    "2001:db8:1::10", "2001:db8:1::1", "2001:db8:2::10", "2001:db8:4::10", "2001:db8:3::5", "2001:db8:1::99"))
HOME_PREFIX = "2001:db8:1::/64"


def seeded(seed):
    rnd = random.Random(seed)
    return lambda n: bytes(rnd.getrandbits(8) for _ in range(n))


def upper_of(packet):
    try:
        return m.packet_summary(packet)[2]
    except m.MobilityParseError:
        return None


def is_mobility(packet):
    upper = upper_of(packet)
    if upper == ipv6.NH_IPV6:
        return upper_of(m.decapsulate(packet)[2]) == ipv6.NH_MOBILITY
    return upper == ipv6.NH_MOBILITY


def message_of(packet):
    if upper_of(packet) == ipv6.NH_IPV6:
        packet = m.decapsulate(packet)[2]
    return m.parse_mobility_packet(packet).message


class FakeNet:
    def __init__(self, mn, ha, cn=None):
        self.mn, self.ha, self.cn = mn, ha, cn
        self.now = 0.0
        self.log = []          # (time, datagram, action)
        self.rules = []        # callables(datagram) -> None | "drop" | "dup" | "hold" | Datagram
        self.held = []
        self.to_mn, self.to_cn = [], []
        self.events = {"mn": [], "ha": [], "cn": []}

    @property
    def cores(self):
        return [c for c in (self.mn, self.ha, self.cn) if c is not None]

    def _collect_events(self):
        for name, core in (("mn", self.mn), ("ha", self.ha), ("cn", self.cn)):
            if core is not None:
                self.events[name] += core.pop_events()

    def send(self, datagram):
        action = None
        for rule in self.rules:
            action = rule(datagram)
            if action is not None:
                break
        self.log.append((self.now, datagram, action if isinstance(action, str) else ("rewrite" if action else "pass")))
        if action == "drop":
            return
        if action == "hold":
            self.held.append(datagram)
            return
        if isinstance(action, Datagram):
            datagram = action
        self.deliver(datagram)
        if action == "dup":
            self.deliver(datagram)

    def release(self):
        held, self.held = self.held, []
        for datagram in held:
            self.deliver(datagram)
        self.settle()

    def settle(self):
        for _ in range(1000):
            batch = [d for core in self.cores for d in core.datagrams_to_send(self.now)]
            if not batch:
                break
            for datagram in batch:
                self.send(datagram)
        else:
            raise AssertionError("network did not settle")
        self._collect_events()

    def deliver(self, datagram):
        packet, now = datagram.packet, self.now
        esp = datagram.protection is not Protection.NONE
        dst = packet[24:40]
        if dst == HA:
            if upper_of(packet) == ipv6.NH_IPV6:
                inner = self.ha.accept_reverse_tunnel(packet, now)
                if inner is not None:
                    self.send(Datagram(inner, description="forwarded by HA"))
            else:
                self.ha.receive(packet, now, esp_protected=esp)
        elif dst == HOA and not self.mn.at_home:
            tunnelled = self.ha.encapsulate_to_mobile(packet, now)
            if tunnelled is not None:
                self.send(tunnelled)
        elif dst == self.mn.care_of_address:
            if is_mobility(packet):
                self.mn.receive(packet, now, esp_protected=esp)
            else:
                inner = self.mn.incoming(packet, now)
                if inner is not None:
                    self.to_mn.append(inner)
        elif self.cn is not None and dst == CN:
            if upper_of(packet) == ipv6.NH_MOBILITY:
                self.cn.receive(packet, now)
            elif m.packet_summary(packet)[0] is not None:
                inner = self.cn.accept_home_address_option(packet, now)
                if inner is not None:
                    self.to_cn.append(inner)
            else:
                self.to_cn.append(packet)

    def run_until(self, end):
        self.settle()
        for _ in range(100000):
            timers = [t for t in (c.get_timer() for c in self.cores) if t is not None]
            if not timers or min(timers) > end:
                self.now = max(self.now, end)
                return
            self.now = max(self.now, min(timers))
            for core in self.cores:
                timer = core.get_timer()
                if timer is not None and timer <= self.now:
                    core.handle_timer(self.now)
            self.settle()
        raise AssertionError("timers did not advance")

    def sent(self, prefix, action=None):
        return [(t, d) for t, d, a in self.log if d.description.startswith(prefix) and (action is None or a == action)]


def drop(prefix, count=None, dst=None):
    state = {"left": count}

    def rule(datagram):
        if datagram.description.startswith(prefix) and (dst is None or datagram.dst == dst):
            if state["left"] is None:
                return "drop"
            if state["left"] > 0:
                state["left"] -= 1
                return "drop"
        return None
    return rule


def make(cn=False, mn_kwargs=None, ha_kwargs=None, cn_kwargs=None):
    mn = MobileNode(HOA, HA, random_bytes=seeded(1), initial_sequence=100, **(mn_kwargs or {}))
    ha = HomeAgent(HA, [HOME_PREFIX], **(ha_kwargs or {}))
    correspondent = CorrespondentNode([CN], random_bytes=seeded(2), **(cn_kwargs or {})) if cn else None
    return FakeNet(mn, ha, correspondent)


def registered(net, care_of=COA1, at=0.0):
    net.now = at
    net.mn.move_to(care_of, at)
    net.settle()
    assert net.mn.home_registered()
    return net


def of_type(events, cls):
    return [e for e in events if isinstance(e, cls)]


# ============================================================================ home registration

def test_first_home_registration():
    net = make()
    net.mn.move_to(COA1, 0.0)
    net.settle()
    (t, bu_datagram), = net.sent("BU")
    assert bu_datagram.protection is Protection.ESP_TRANSPORT and bu_datagram.esp_peer == HA
    parsed = m.parse_mobility_packet(bu_datagram.packet)
    bu = parsed.message
    assert (parsed.src, parsed.dst, parsed.home_address) == (COA1, HA, HOA)
    assert (bu.sequence, bu.ack, bu.home_registration, bu.lifetime) == (101, True, True, 105)
    assert bu.option(m.AlternateCareOfAddress).address == COA1
    (_, ba_datagram), = net.sent("BA")
    ba = m.parse_mobility_packet(ba_datagram.packet)
    assert ba.routing_address == HOA and ba.dst == COA1 and ba_datagram.protection is Protection.ESP_TRANSPORT
    assert (ba.message.status, ba.message.sequence, ba.message.lifetime) == (BA_ACCEPTED, 101, 105)
    assert net.events["ha"] == [ev.BindingAdded(HOA, COA1, 420, True)]
    assert net.events["mn"] == [ev.BindingAcknowledged(HA, "home-agent", COA1, 420)]
    assert net.ha.tunnel_endpoint(HOA, 1.0) == COA1
    assert net.mn.get_timer() == 0.75 * 420  # refresh


def test_retransmission_exponential_backoff_first_registration_exact_timers():
    net = make()
    net.rules.append(drop("BU"))
    net.mn.move_to(COA1, 0.0)
    net.settle()
    timers = []
    while net.mn.get_timer() is not None:
        timers.append(net.mn.get_timer())
        net.run_until(timers[-1])
    # InitialBindackTimeoutFirstReg 1.5 s, doubling, capped at MAX_BINDACK_TIMEOUT 32 s, then give up.
    assert timers == [1.5, 4.5, 10.5, 22.5, 46.5, 78.5]
    sends = net.sent("BU")
    assert [t for t, _ in sends] == [0.0, 1.5, 4.5, 10.5, 22.5, 46.5]
    assert [message_of(d.packet).sequence for _, d in sends] == [101, 102, 103, 104, 105, 106]
    assert net.events["mn"] == [ev.BindingFailed(HA, "home-agent", None)]
    assert net.mn.counters["bu_retransmissions"] == 5


def test_backoff_starts_at_one_second_when_already_registered():
    net = registered(make(mn_kwargs={"home_lifetime": 1000}))
    net.rules.append(drop("BU"))
    net.now = 10.0
    net.mn.move_to(COA2, 10.0)
    net.run_until(200.0)
    assert [t for t, _ in net.sent("BU")][1:] == [10.0, 11.0, 13.0, 17.0, 25.0, 41.0]
    assert of_type(net.events["mn"], ev.BindingFailed) == [ev.BindingFailed(HA, "home-agent", None)]


def test_configurable_initial_timeouts():
    net = make(mn_kwargs={"initial_bindack_timeout_first_reg": 0.25, "max_bindack_timeout": 2.0,
                          "keep_retrying": True})
    net.rules.append(drop("BU"))
    net.mn.move_to(COA1, 0.0)
    net.run_until(8.0)
    assert [t for t, _ in net.sent("BU")] == [0.0, 0.25, 0.75, 1.75, 3.75, 5.75, 7.75]
    assert not of_type(net.events["mn"], ev.BindingFailed)


def test_lost_binding_ack_is_recovered_by_retransmission():
    net = make()
    net.rules.append(drop("BA", count=1))
    net.mn.move_to(COA1, 0.0)
    net.run_until(2.0)
    assert [t for t, _ in net.sent("BU")] == [0.0, 1.5]
    assert net.mn.home_registered()
    assert of_type(net.events["ha"], ev.BindingUpdated) == [ev.BindingUpdated(HOA, COA1, COA1, 420, True)]
    # The binding's lifetime counts from the BU that was acknowledged (sent at 1.5).
    assert net.mn.bul.get(HA).expires_at == 1.5 + 420


def test_duplicated_and_reordered_updates():
    net = make()
    net.rules.append(lambda d: "hold" if d.description.startswith("BU seq 101") else None)
    net.mn.move_to(COA1, 0.0)
    net.run_until(1.5)            # seq 102 retransmitted and accepted
    assert net.mn.home_registered()
    net.release()                 # the delayed seq 101 arrives late: 135 with last = 102
    late_ba = message_of(net.sent("BA")[-1][1].packet)
    assert (late_ba.status, late_ba.sequence) == (BA_SEQUENCE_OUT_OF_WINDOW, 102)
    assert net.mn.counters["dropped_unexpected_binding_ack"] == 1   # nothing outstanding: ignored
    assert not of_type(net.events["mn"], ev.SequenceResynchronised)
    assert net.mn.home_registered() and net.ha.tunnel_endpoint(HOA, 2.0) == COA1
    net.rules[:] = [lambda d: "dup" if d.description.startswith("BU") else None]
    net.now = 5.0
    net.mn.move_to(COA2, 5.0)
    net.settle()
    assert net.mn.home_registered() and net.ha.tunnel_endpoint(HOA, 5.0) == COA2


def test_stale_sequence_gets_135_and_the_mobile_node_resynchronises():
    ha = HomeAgent(HA, [HOME_PREFIX])
    first = FakeNet(MobileNode(HOA, HA, random_bytes=seeded(1), initial_sequence=1000), ha)
    registered(first)
    # The node restarts with a lower sequence number (e.g. lost state) and registers again.
    net = FakeNet(MobileNode(HOA, HA, random_bytes=seeded(3), initial_sequence=5), ha)
    net.now = 10.0
    net.mn.move_to(COA2, 10.0)
    net.settle()
    bas = [message_of(d.packet) for _, d in net.sent("BA")]
    assert [(b.status, b.sequence) for b in bas] == [(BA_SEQUENCE_OUT_OF_WINDOW, 1001), (BA_ACCEPTED, 1002)]
    assert [message_of(d.packet).sequence for _, d in net.sent("BU")] == [6, 1002]
    assert net.events["mn"][:1] == [ev.SequenceResynchronised(HA, 1001)]
    assert net.mn.home_registered() and ha.tunnel_endpoint(HOA, 10.0) == COA2
    assert net.events["ha"][-1] == ev.BindingUpdated(HOA, COA1, COA2, 420, True)


def test_sequence_wraps_modulo_2_16():
    ha = HomeAgent(HA, [HOME_PREFIX])
    net = FakeNet(MobileNode(HOA, HA, random_bytes=seeded(1), initial_sequence=65534), ha)
    registered(net)                       # seq 65535
    net.now = 1.0
    net.mn.move_to(COA2, 1.0)             # seq 0 is newer than 65535
    net.settle()
    assert [message_of(d.packet).sequence for _, d in net.sent("BU")] == [65535, 0]
    assert net.mn.home_registered() and ha.tunnel_endpoint(HOA, 1.0) == COA2


def test_lifetime_is_trimmed_and_refreshed_before_expiry():
    net = registered(make(ha_kwargs={"max_lifetime": 200}))
    assert message_of(net.sent("BA")[0][1].packet).lifetime == 50
    for t in range(10, 1000, 10):
        net.run_until(float(t))
        assert net.ha.tunnel_endpoint(HOA, net.now) == COA1, t
    assert [t for t, _ in net.sent("BU")] == [0.0, 150.0, 300.0, 450.0, 600.0, 750.0, 900.0]
    assert not of_type(net.events["ha"], ev.BindingRemoved)
    assert net.mn.counters["refreshes"] == 6


def test_binding_refresh_advice_brings_the_refresh_forward():
    net = registered(make(ha_kwargs={"refresh_advice": 60}))
    assert message_of(net.sent("BA")[0][1].packet).option(m.BindingRefreshAdvice) == m.BindingRefreshAdvice(15)
    net.run_until(130.0)
    assert [t for t, _ in net.sent("BU")] == [0.0, 60.0, 120.0]


def test_lifetime_expiry_removes_the_binding_at_both_ends():
    net = registered(make(ha_kwargs={"max_lifetime": 200}))
    net.rules.append(drop("", dst=HA))      # the MN loses its way to the HA
    net.run_until(199.9)
    assert net.ha.tunnel_endpoint(HOA, net.now) == COA1
    net.run_until(200.0)
    assert net.ha.tunnel_endpoint(HOA, net.now) is None and len(net.ha.cache) == 0
    assert of_type(net.events["ha"], ev.BindingRemoved) == [ev.BindingRemoved(HOA, COA1, "expired", True)]
    assert of_type(net.events["mn"], ev.BindingLost) == [ev.BindingLost(HA, "home-agent")]
    assert net.ha.counters["bindings_expired"] == 1


def test_return_home_deregisters():
    net = registered(make())
    net.now = 5.0
    net.mn.move_to(HOA, 5.0)
    net.settle()
    (_, bu_datagram), = net.sent("BU seq 102")
    parsed = m.parse_mobility_packet(bu_datagram.packet)
    # RFC 6275 §11.5.4: from the home address, no HAO, lifetime 0.
    assert (parsed.src, parsed.home_address, parsed.message.lifetime) == (HOA, None, 0)
    assert parsed.message.option(m.AlternateCareOfAddress) is None
    (_, ba_datagram), = net.sent("BA status 0 seq 102")
    ba = m.parse_mobility_packet(ba_datagram.packet)
    assert (ba.dst, ba.routing_address) == (HOA, None)
    assert net.events["ha"][-1] == ev.BindingRemoved(HOA, COA1, "deregistered", True)
    assert net.events["mn"][-1] == ev.BindingDeregistered(HA, "home-agent")
    assert net.mn.get_timer() is None and net.ha.tunnel_endpoint(HOA, 5.0) is None
    packet = _udp(HOA, CN)
    assert net.mn.outgoing(packet, 5.0).packet == packet   # plain at home
    # Moving away again is a first registration once more (1.5 s initial timeout).
    net.mn.move_to(COA2, 6.0)
    assert net.mn.get_timer() == 7.5


def test_return_home_deletes_correspondent_binding_with_home_keygen_token_only():
    net = optimised(make(cn=True))
    net.now = 30.0
    net.mn.move_to(HOA, 30.0)
    net.settle()
    assert ev.RouteOptimisationStopped(CN, "returned home") in net.events["mn"]
    (_, bu), = [x for x in net.sent("BU") if x[1].dst == CN and x[0] == 30.0]
    parsed = m.parse_mobility_packet(bu.packet)
    assert (parsed.src, parsed.home_address, parsed.message.lifetime) == (HOA, None, 0)
    hot = message_of(net.sent("HoT index")[0][1].packet)
    home_token = hmac.new(net.cn.nonces.kcn, HOA + net.cn.nonces.lookup(hot.nonce_index, 30.0) + b"\0",
                          hashlib.sha1).digest()[:8]
    kbm = hashlib.sha1(home_token).digest()     # RFC 6275 §5.2.5: no care-of token when deregistering
    mh = parsed.mh
    assert mh[-12:] == hmac.new(kbm, HOA + CN + mh[:4] + b"\0\0" + mh[6:-12], hashlib.sha1).digest()[:12]
    assert of_type(net.events["cn"], ev.BindingRemoved) == [ev.BindingRemoved(HOA, COA1, "deregistered", False)]
    assert ev.BindingDeregistered(CN, "correspondent") in net.events["mn"]
    assert len(net.sent("HoTI")) == 1     # the home token was still fresh


def _bu_packet(home=HOA, care_of=COA1, sequence=1, lifetime=10, h=True, dst=HA):
    bu = m.BindingUpdate(sequence, lifetime, ack=True, home_registration=h)
    return m.build_mobility_packet(care_of, dst, bu, home_address=home)


@pytest.mark.parametrize("kwargs,packet,status", [
    ({}, _bu_packet(home=ipv6.pton("2001:db8:9::1")), BA_NOT_HOME_SUBNET),
    ({"served_home_addresses": [OTHER]}, _bu_packet(), BA_NOT_HOME_AGENT_FOR_THIS_MN),
    ({}, _bu_packet(lifetime=0), BA_NOT_HOME_AGENT_FOR_THIS_MN),   # deregistering an unknown binding
])
def test_home_agent_error_statuses(kwargs, packet, status):
    ha = HomeAgent(HA, [HOME_PREFIX], **kwargs)
    ha.receive(packet, 0.0, esp_protected=True)
    (datagram,) = ha.datagrams_to_send(0.0)
    assert message_of(datagram.packet).status == status
    assert ha.pop_events() == [ev.BindingRejected(m.parse_mobility_packet(packet).home_address, status)]
    assert len(ha.cache) == 0


def test_home_agent_drops_unprotected_and_non_home_updates():
    ha = HomeAgent(HA, [HOME_PREFIX])
    ha.receive(_bu_packet(), 0.0, esp_protected=False)
    ha.receive(_bu_packet(h=False), 0.0, esp_protected=True)
    assert ha.datagrams_to_send(0.0) == [] and len(ha.cache) == 0
    assert ha.counters["dropped_unprotected_binding_update"] == 1
    assert ha.counters["dropped_not_home_registration"] == 1
    # A security gateway accepts plain bindings under ESP; then a change of registration type is refused.
    sg = HomeAgent(HA, [HOME_PREFIX], accept_secured_bindings=True)
    sg.receive(_bu_packet(h=False), 0.0, esp_protected=True)
    assert sg.route(HOA, 1.0) == COA1 and sg.tunnel_endpoint(HOA, 1.0) is None
    sg.receive(_bu_packet(sequence=2, h=True), 0.0, esp_protected=True)
    assert [message_of(d.packet).status for d in sg.datagrams_to_send(0.0)] == [0, 139]


def test_unusable_addresses_and_full_cache():
    ha = HomeAgent(HA, [HOME_PREFIX], cache_capacity=1)
    multicast = ipv6.pton("ff02::1")
    bu = m.BindingUpdate(1, 10, ack=True, home_registration=True, options=(m.AlternateCareOfAddress(multicast),))
    ha.receive(m.build_mobility_packet(COA1, HA, bu, home_address=HOA), 0.0, esp_protected=True)
    assert ha.datagrams_to_send(0.0) == [] and ha.counters["dropped_bad_binding_address"] == 1
    ha.receive(_bu_packet(), 0.0, esp_protected=True)
    ha.receive(_bu_packet(home=OTHER), 0.0, esp_protected=True)
    statuses = [message_of(d.packet).status for d in ha.datagrams_to_send(0.0)]
    assert statuses == [BA_ACCEPTED, BA_INSUFFICIENT_RESOURCES] and len(ha.cache) == 1


def with_secured_peer():
    """A registered MN that has just sent its BU to a secured peer (an SG): (net, sg, sg address, the BU)."""
    sg_address = ipv6.pton("2001:db8:1::2")
    sg = HomeAgent(sg_address, [HOME_PREFIX], accept_secured_bindings=True)
    net = registered(make())
    net.mn.register_with(sg_address, 0.0)
    (datagram,) = net.mn.datagrams_to_send(0.0)
    return net, sg, sg_address, datagram


def test_mobile_node_registers_with_a_secured_peer():
    net, sg, sg_address, datagram = with_secured_peer()
    assert datagram.protection is Protection.ESP_TRANSPORT and datagram.esp_peer == sg_address
    assert not message_of(datagram.packet).home_registration
    sg.receive(datagram.packet, 0.0, esp_protected=True)
    assert sg.pop_events() == [ev.BindingAdded(HOA, COA1, 420, False)]
    for reply in sg.datagrams_to_send(0.0):
        net.mn.receive(reply.packet, 0.0, esp_protected=True)
    assert net.mn.pop_events() == [ev.BindingAcknowledged(sg_address, "secured", COA1, 420)]


def test_registered_everywhere_needs_the_home_agent_and_every_secured_peer_on_the_current_care_of():
    net, sg, _sg_address, to_sg = with_secured_peer()
    assert net.mn.home_registered() and not net.mn.registered_everywhere()   # the SG has not answered yet
    sg.receive(to_sg.packet, 0.0, esp_protected=True)
    for reply in sg.datagrams_to_send(0.0):
        net.mn.receive(reply.packet, 0.0, esp_protected=True)
    assert net.mn.registered_everywhere()
    net.now = 1.0
    net.mn.move_to(COA2, 1.0)   # a new care-of address: every binding is stale until acknowledged again
    assert not net.mn.registered_everywhere()


def test_secured_peer_binding_for_another_home_address_from_away_and_from_home():
    """Embodiment 1: the SG's binding is for the MN's external home address, not the core's own."""
    sg_address, external = ipv6.pton("2001:db8:1::2"), ipv6.pton("2001:db8:e0::a:1")
    sg = HomeAgent(sg_address, ["2001:db8:e0::/64"], served_home_addresses=[external], accept_secured_bindings=True)
    net = registered(make())
    net.mn.register_with(sg_address, 0.0, home_address=external)
    (datagram,) = net.mn.datagrams_to_send(0.0)
    parsed = m.parse_mobility_packet(datagram.packet)
    assert parsed.src == COA1 and parsed.home_address == external
    sg.receive(datagram.packet, 0.0, esp_protected=True)
    assert sg.pop_events() == [ev.BindingAdded(external, COA1, 420, False)]
    (ba,) = sg.datagrams_to_send(0.0)
    assert m.parse_mobility_packet(ba.packet).routing_address == external and ba.esp_peer == external
    net.mn.receive(ba.packet, 0.0, esp_protected=True)
    assert net.mn.pop_events() == [ev.BindingAcknowledged(sg_address, "secured", COA1, 420)]
    # A type 2 routing header naming some other address is still refused.
    forged = m.build_mobility_packet(sg_address, COA1, m.BindingAcknowledgement(0, 1, 10), routing_address=OTHER)
    net.mn.receive(forged, 0.0, esp_protected=True)
    assert net.mn.counters["dropped_foreign_routing_header"] == 1
    # Home again: the deregistration comes from the home address and still names the external one.
    net.mn.move_to(HOA, 1.0)
    bus = [d for d in net.mn.datagrams_to_send(1.0) if d.dst == sg_address]
    parsed = m.parse_mobility_packet(bus[0].packet)
    assert parsed.src == HOA and parsed.home_address == external and parsed.message.lifetime == 0
    sg.receive(bus[0].packet, 1.0, esp_protected=True)
    assert [type(e) for e in sg.pop_events()] == [ev.BindingRemoved]
    assert sg.cache.get(external, 1.0) is None


def test_mobile_node_requires_esp_on_home_agent_acks():
    net = make()
    net.mn.move_to(COA1, 0.0)
    (bu,) = net.mn.datagrams_to_send(0.0)
    net.ha.receive(bu.packet, 0.0, esp_protected=True)
    (ba,) = net.ha.datagrams_to_send(0.0)
    net.mn.receive(ba.packet, 0.0, esp_protected=False)
    assert net.mn.counters["dropped_unprotected_binding_ack"] == 1 and not net.mn.home_registered()


def test_binding_update_flood_is_rate_limited():
    ha = HomeAgent(HA, [HOME_PREFIX], bu_rate=50, bu_burst=20)
    packets = [_bu_packet(sequence=i) for i in range(1, 1001)]
    for packet in packets:
        ha.receive(packet, 0.0, esp_protected=True)
    assert len(ha.datagrams_to_send(0.0)) == 20
    assert ha.counters["dropped_rate_limited"] == 980
    drops = [e for e in ha.pop_events() if isinstance(e, ev.MessageDropped)]
    assert drops == [ev.MessageDropped("rate_limited", "binding update flood")]   # one event per run
    for packet in packets[:100]:
        ha.receive(packet, 1.0, esp_protected=True)
    assert ha.counters["dropped_rate_limited"] == 980 + 80   # refilled at 50/s, but only up to the burst of 20


def test_reverse_tunnel_must_come_from_the_registered_care_of_address():
    net = registered(make())
    inner = bytes(IPv6(src="2001:db8:1::10", dst="2001:db8:3::5") / UDP() / b"x")
    assert net.ha.accept_reverse_tunnel(m.encapsulate(inner, COA1, HA), 1.0) == inner
    assert net.ha.accept_reverse_tunnel(m.encapsulate(inner, COA2, HA), 1.0) is None
    assert net.ha.counters["dropped_reverse_tunnel_mismatch"] == 1
    data = net.ha.encapsulate_to_mobile(bytes(IPv6(src="2001:db8:3::5", dst="2001:db8:1::10")), 1.0)
    assert data.dst == COA1 and data.src == HA and data.protection is Protection.NONE
    assert m.decapsulate(data.packet)[2] == bytes(IPv6(src="2001:db8:3::5", dst="2001:db8:1::10"))
    assert net.ha.encapsulate_to_mobile(bytes(IPv6(src="2001:db8:3::5", dst="2001:db8:1::11")), 1.0) is None


def test_malformed_input_is_counted_not_raised():
    net = registered(make(cn=True))
    for core in (net.mn, net.ha, net.cn):
        core.pop_events()
        core.receive(b"\x60garbage", 1.0)
        bad = bytearray(_bu_packet(dst=HA if core is net.ha else CN))
        bad[-3] ^= 0xFF   # checksum no longer matches
        core.receive(bytes(bad), 1.0, esp_protected=True)
        assert core.counters["dropped_malformed"] == 2
        assert [e.reason for e in core.pop_events()] == ["malformed", "malformed"]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 119), st.binary(max_size=60))
def test_fuzz_cores_never_raise(noise, position, tail):
    net = make(cn=True)
    net.mn.move_to(COA1, 0.0)
    valid = [_bu_packet(), _bu_packet(dst=CN), m.build_mobility_packet(CN, COA1, m.HomeTest(1, bytes(8), bytes(8))),
             m.encapsulate(m.build_mobility_packet(HOA, CN, m.HomeTestInit(bytes(8))), COA1, HA)]
    inputs = [noise] + [p[:position] + tail + p[position + len(tail):] for p in valid]
    for data in inputs:
        for esp in (False, True):
            net.mn.receive(data, 1.0, esp_protected=esp)
            net.ha.receive(data, 1.0, esp_protected=esp)
            net.cn.receive(data, 1.0, esp_protected=esp)
        net.mn.incoming(data, 1.0)
        net.mn.outgoing(data, 1.0)
        net.ha.accept_reverse_tunnel(data, 1.0)
        net.ha.encapsulate_to_mobile(data, 1.0)
        net.cn.accept_home_address_option(data, 1.0)
        net.cn.add_routing_header(data, 1.0)


# ============================================================================ return routability / RO

def optimised(net, at=1.0):
    registered(net)
    net.now = at
    net.mn.start_route_optimisation(CN, at)
    net.settle()
    return net


def test_return_routability_and_binding_with_independently_checked_crypto():
    net = optimised(make(cn=True))
    (_, hoti), = net.sent("HoTI")
    assert hoti.protection is Protection.ESP_TUNNEL and hoti.esp_peer == HA
    outer_src, outer_dst, inner = m.decapsulate(hoti.packet)
    assert (outer_src, outer_dst) == (COA1, HA) and inner[8:24] == HOA and inner[24:40] == CN
    (_, coti), = net.sent("CoTI")
    assert coti.src == COA1 and coti.protection is Protection.NONE
    (_, hot), = net.sent("HoT index")
    (_, cot), = net.sent("CoT index")
    hot_msg, cot_msg = message_of(hot.packet), message_of(cot.packet)
    assert hot.dst == HOA and cot.dst == COA1   # HoT goes to the home address (the HA tunnels it)
    (_, tunnelled_hot), = net.sent("tunnelled to MN (mobility)")
    assert tunnelled_hot.protection is Protection.ESP_TUNNEL and tunnelled_hot.esp_peer == HOA

    kcn = net.cn.nonces.kcn
    home_nonce = net.cn.nonces.lookup(hot_msg.nonce_index, 1.0)
    care_of_nonce = net.cn.nonces.lookup(cot_msg.nonce_index, 1.0)
    home_token = hmac.new(kcn, HOA + home_nonce + b"\0", hashlib.sha1).digest()[:8]
    care_of_token = hmac.new(kcn, COA1 + care_of_nonce + b"\1", hashlib.sha1).digest()[:8]
    assert (hot_msg.token, cot_msg.token) == (home_token, care_of_token)
    kbm = hashlib.sha1(home_token + care_of_token).digest()

    (_, bu), = [x for x in net.sent("BU") if x[1].dst == CN]
    parsed = m.parse_mobility_packet(bu.packet)
    assert parsed.home_address == HOA and parsed.src == COA1
    assert parsed.message.option(m.NonceIndices) == m.NonceIndices(hot_msg.nonce_index, cot_msg.nonce_index)
    mh = parsed.mh
    expected = hmac.new(kbm, COA1 + CN + mh[:4] + b"\0\0" + mh[6:-12], hashlib.sha1).digest()[:12]
    assert mh[-12:] == expected == parsed.message.option(m.BindingAuthorizationData).authenticator

    (_, ba), = [x for x in net.sent("BA") if x[1].src == CN]
    parsed_ba = m.parse_mobility_packet(ba.packet)
    assert parsed_ba.routing_address == HOA and parsed_ba.dst == COA1
    assert (parsed_ba.message.status, parsed_ba.message.lifetime) == (BA_ACCEPTED, 105)
    mh = parsed_ba.mh
    assert mh[-12:] == hmac.new(kbm, COA1 + CN + mh[:4] + b"\0\0" + mh[6:-12], hashlib.sha1).digest()[:12]

    assert ev.RouteOptimisationStarted(CN, COA1) in net.events["mn"]
    assert net.events["cn"] == [ev.BindingAdded(HOA, COA1, 420, False)]
    assert net.cn.route(HOA, 2.0) == COA1


def _udp(src, dst, payload=b"data"):
    return bytes(IPv6(src=ipv6.ntop(src), dst=ipv6.ntop(dst)) / UDP(sport=5000, dport=6000) / payload)


def test_data_goes_through_the_home_agent_then_direct():
    net = registered(make(cn=True))
    packet = _udp(HOA, CN)
    tunnelled = net.mn.outgoing(packet, 1.0)
    assert upper_of(tunnelled.packet) == ipv6.NH_IPV6 and tunnelled.dst == HA
    net.send(tunnelled)
    assert net.to_cn == [packet]
    optimised(net, at=2.0)
    direct = net.mn.outgoing(packet, 3.0)
    assert direct.src == COA1 and m.packet_summary(direct.packet)[0] == HOA
    net.send(direct)
    assert net.to_cn[-1] == packet   # the CN's stack sees the home address again
    reply = _udp(CN, HOA, b"reply")
    with_rh = net.cn.add_routing_header(reply, 3.0)
    assert with_rh[24:40] == COA1 and m.packet_summary(with_rh)[1] == HOA
    net.send(Datagram(with_rh))
    assert net.to_mn == [reply]
    assert net.cn.add_routing_header(_udp(CN, OTHER), 3.0) == _udp(CN, OTHER)


def test_route_stays_optimised_after_a_move_reusing_the_home_token():
    net = optimised(make(cn=True))
    net.now = 20.0
    net.mn.move_to(COA2, 20.0)
    assert net.mn.outgoing(_udp(HOA, CN), 20.0).dst == HA   # tunnelled until the CN knows the new CoA
    net.settle()
    assert len(net.sent("HoTI")) == 1 and len(net.sent("CoTI")) == 2
    assert net.events["mn"][-1] == ev.RouteOptimisationStarted(CN, COA2)
    assert ev.RouteOptimisationStopped(CN, "moved") in net.events["mn"]
    assert net.cn.route(HOA, 21.0) == COA2
    assert net.mn.outgoing(_udp(HOA, CN), 21.0).src == COA2


def test_correspondent_binding_is_refreshed_with_new_tokens():
    net = optimised(make(cn=True, ha_kwargs={"max_lifetime": 3600}, mn_kwargs={"home_lifetime": 3600}))
    for t in range(10, 1300, 10):
        net.run_until(float(t))
        assert net.cn.route(HOA, net.now) == COA1, t
    assert not of_type(net.events["cn"], ev.BindingRemoved)
    # Refresh at 3/4 of 420 s needs new tokens (older than MAX_TOKEN_LIFETIME): HoTI/CoTI again each time.
    assert [round(t) for t, _ in net.sent("HoTI")] == [1, 316, 631, 946, 1261]
    assert len(net.sent("CoTI")) == 5


def test_correspondent_with_full_cache_answers_130_with_authenticator():
    net = optimised(make(cn=True, cn_kwargs={"cache_capacity": 0}))
    (_, ba), = [x for x in net.sent("BA") if x[1].src == CN]
    assert message_of(ba.packet).status == BA_INSUFFICIENT_RESOURCES
    assert message_of(ba.packet).option(m.BindingAuthorizationData) is not None
    assert of_type(net.events["mn"], ev.BindingFailed) == [ev.BindingFailed(CN, "correspondent", 130)]
    assert not net.mn.route_optimised(CN, net.now)


def test_correspondent_binding_expires():
    net = optimised(make(cn=True))
    net.rules.append(drop("", dst=CN))
    net.run_until(420.9)
    assert net.cn.route(HOA, net.now) == COA1
    net.run_until(421.0)
    assert net.cn.route(HOA, net.now) is None
    assert of_type(net.events["cn"], ev.BindingRemoved) == [ev.BindingRemoved(HOA, COA1, "expired", False)]


def test_expired_nonces_get_138_and_the_mobile_node_redoes_return_routability():
    net = optimised(make(cn=True, mn_kwargs={"token_lifetime": 10000}, cn_kwargs={"nonce_lifetime": 100}))
    net.run_until(320.0)   # refresh at 316 with tokens the MN still trusts but the CN has forgotten
    statuses = [message_of(d.packet).status for _, d in net.sent("BA") if d.src == CN]
    assert statuses == [BA_ACCEPTED, BA_EXPIRED_NONCES, BA_ACCEPTED]
    assert len(net.sent("HoTI")) == 2 and net.cn.route(HOA, net.now) == COA1


def test_tampered_authenticator_is_dropped_then_retransmission_succeeds():
    net = registered(make(cn=True))
    state = {"done": False}

    def tamper(datagram):
        if datagram.description.startswith("BU") and datagram.dst == CN and not state["done"]:
            state["done"] = True
            data = bytearray(datagram.packet)
            data[-1] ^= 1
            home = m.packet_summary(bytes(data))[0]
            mh = m.set_checksum(bytes(data[-32:]), home, CN)
            return Datagram(bytes(data[:-32]) + mh, description="tampered")
        return None
    net.rules.append(tamper)
    net.now = 1.0
    net.mn.start_route_optimisation(CN, 1.0)
    net.run_until(3.0)
    assert net.cn.counters["dropped_bad_authenticator"] == 1
    assert net.cn.route(HOA, net.now) == COA1 and net.mn.route_optimised(CN, net.now)


def test_home_registration_at_a_correspondent_gets_131():
    cn = CorrespondentNode([CN], random_bytes=seeded(2))
    cn.receive(_bu_packet(dst=CN), 0.0)
    (datagram,) = cn.datagrams_to_send(0.0)
    assert message_of(datagram.packet).status == BA_HOME_REGISTRATION_NOT_SUPPORTED
    cn.receive(_bu_packet(dst=CN, h=False), 0.0)   # no RR options: silently dropped
    assert cn.datagrams_to_send(0.0) == [] and cn.counters["dropped_missing_rr_options"] == 1


def test_unknown_mobility_type_gets_binding_error_2():
    cn = CorrespondentNode([CN], random_bytes=seeded(2))
    cn.receive(m.build_mobility_packet(COA1, CN, m.UnknownMobilityMessage(42, b"\0\0")), 0.0)
    (datagram,) = cn.datagrams_to_send(0.0)
    assert datagram.dst == COA1 and message_of(datagram.packet) == m.BindingError(BE_UNRECOGNIZED_MH_TYPE, bytes(16))


def test_home_address_option_without_binding_gets_binding_error_and_mn_recovers():
    net = optimised(make(cn=True))
    # The correspondent restarts and forgets everything (new Kcn).
    net.cn = CorrespondentNode([CN], random_bytes=seeded(9))
    net.now = 5.0
    net.send(net.mn.outgoing(_udp(HOA, CN), 5.0))
    assert net.to_cn == [] and net.cn.counters["dropped_hao_without_binding"] == 1
    net.settle()
    (_, be), = net.sent("BE")
    assert be.dst == COA1 and message_of(be.packet) == m.BindingError(BE_UNKNOWN_BINDING_FOR_HAO, HOA)
    assert ev.BindingErrorReceived(CN, BE_UNKNOWN_BINDING_FOR_HAO, HOA) in net.events["mn"]
    assert ev.RouteOptimisationStopped(CN, "binding error") in net.events["mn"]
    # Full return routability with the new correspondent, then direct again.
    assert len(net.sent("HoTI")) == 2
    assert net.cn.route(HOA, 5.0) == COA1 and net.mn.route_optimised(CN, 5.0)


def test_binding_error_2_stops_route_optimisation():
    net = optimised(make(cn=True))
    net.mn.receive(m.build_mobility_packet(CN, COA1, m.BindingError(BE_UNRECOGNIZED_MH_TYPE, bytes(16))), 5.0)
    assert net.mn.pop_events()[-1] == ev.RouteOptimisationStopped(CN, "correspondent does not support mobility")
    assert not net.mn.route_optimised(CN, 5.0) and net.mn.outgoing(_udp(HOA, CN), 5.0).dst == HA


def test_binding_refresh_request_triggers_an_update():
    net = registered(make())
    net.now = 50.0
    net.mn.receive(m.build_mobility_packet(HA, COA1, m.BindingRefreshRequest(), routing_address=HOA), 50.0)
    net.settle()
    assert [t for t, _ in net.sent("BU")] == [0.0, 50.0]
    net.mn.receive(m.build_mobility_packet(OTHER, COA1, m.BindingRefreshRequest()), 50.0)
    assert net.mn.counters["dropped_unexpected_refresh_request"] == 1


def test_stale_test_answers_are_dropped():
    net = registered(make(cn=True))
    net.mn.start_route_optimisation(CN, 1.0)
    net.mn.datagrams_to_send(1.0)
    net.mn.receive(m.build_mobility_packet(CN, COA1, m.CareOfTest(1, bytes(8), bytes(8))), 1.0)
    assert net.mn.counters["dropped_unexpected_test"] == 1


def test_stop_route_optimisation_deregisters_with_home_token_only():
    net = optimised(make(cn=True))
    net.now = 10.0
    net.mn.stop_route_optimisation(CN, 10.0)
    net.settle()
    bu = m.parse_mobility_packet(net.sent("BU")[-1][1].packet)
    assert bu.message.lifetime == 0
    assert of_type(net.events["cn"], ev.BindingRemoved) == [ev.BindingRemoved(HOA, COA1, "deregistered", False)]
    assert ev.BindingDeregistered(CN, "correspondent") in net.events["mn"]
    assert net.mn.outgoing(_udp(HOA, CN), 10.0).dst == HA


def test_hoti_waits_for_home_registration_and_retransmits():
    net = make(cn=True)
    net.mn.move_to(COA1, 0.0)
    net.mn.start_route_optimisation(CN, 0.0)
    first = net.mn.datagrams_to_send(0.0)
    assert [d.description.split()[0] for d in first] == ["BU", "CoTI"]   # no HoTI before the HA binding
    for d in first:
        net.send(d)
    net.rules.append(drop("HoTI", count=1))
    net.settle()
    assert len(net.sent("HoTI")) == 1
    net.run_until(2.0)
    assert [t for t, _ in net.sent("HoTI")] == [0.0, 1.0]
    assert net.mn.route_optimised(CN, net.now)


# ============================================================================ random faults, invariants

ACTIONS = st.lists(st.one_of(
    st.tuples(st.just("move"), st.sampled_from([COA1, COA2, ipv6.pton("2001:db8:5::10"), HOA])),
    st.tuples(st.just("advance"), st.floats(0.01, 400.0)),
    st.tuples(st.just("loss"), st.floats(0.0, 0.9)),
    st.tuples(st.just("dup"), st.floats(0.0, 0.5)),
), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(ACTIONS, st.integers(0, 2 ** 32))
def test_random_moves_and_faults_keep_invariants_and_recover(actions, seed):
    net = make(cn=True, mn_kwargs={"keep_retrying": True})
    rnd = random.Random(seed)
    faults = {"loss": 0.0, "dup": 0.0}

    def fault(datagram):
        roll = rnd.random()
        if roll < faults["loss"]:
            return "drop"
        if roll < faults["loss"] + faults["dup"]:
            return "dup"
        return None
    net.rules.append(fault)
    net.mn.start_route_optimisation(CN, 0.0)

    def check():
        mn, now = net.mn, net.now
        # The HA never tunnels to an address the MN has not registered from, and agrees when the MN thinks
        # it is registered; the MN only sends with a HAO when the CN routes to its current care-of address.
        if mn.home_registered():
            assert net.ha.tunnel_endpoint(HOA, now) == mn.care_of_address
        if mn.route_optimised(CN, now):
            assert net.cn.route(HOA, now) == mn.care_of_address
        if mn.at_home:
            assert mn.outgoing(_udp(HOA, CN), now).packet == _udp(HOA, CN)

    for action, value in actions:
        if action == "move":
            net.settle()
            net.mn.move_to(value, net.now)
            net.settle()
        elif action == "advance":
            net.run_until(net.now + value)
        else:
            faults[action] = value
        check()
    # Faults stop: everything converges within a few backoff periods.
    faults.update(loss=0.0, dup=0.0)
    net.mn.start_route_optimisation(CN, net.now)   # the shell's retry policy after a give-up
    net.run_until(net.now + 100.0)
    check()
    if not net.mn.at_home:
        assert net.mn.home_registered()
        assert net.mn.route_optimised(CN, net.now)
    else:
        assert net.ha.tunnel_endpoint(HOA, net.now) is None


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="at least 4 s"):
        MobileNode(HOA, HA, home_lifetime=3)
    with pytest.raises(ValueError, match="refresh_fraction"):
        MobileNode(HOA, HA, refresh_fraction=1.0)
    with pytest.raises(ValueError):
        HomeAgent(b"short", [HOME_PREFIX])


def test_rapid_moves_respect_max_update_rate():
    net = make()
    net.rules.append(drop("BA"))
    addresses = [COA1, COA2, ipv6.pton("2001:db8:5::10"), ipv6.pton("2001:db8:6::10"), ipv6.pton("2001:db8:7::10")]
    for care_of in addresses:
        net.mn.move_to(care_of, 0.0)
    net.settle()
    assert [t for t, _ in net.sent("BU")] == [0.0, 0.0, 0.0]   # MAX_UPDATE_RATE = 3 per second
    assert net.mn.get_timer() == 1.0 and net.mn.counters["bu_rate_limited"] == 2
    net.run_until(1.0)
    (t, last), = net.sent("BU")[3:]
    # The two pending moves collapse into one BU for the latest care-of address.
    assert t == 1.0 and m.parse_mobility_packet(last.packet).src == addresses[-1]


def test_test_init_flood_is_rate_limited_at_the_correspondent():
    cn = CorrespondentNode([CN], random_bytes=seeded(2), test_rate=10, test_burst=5)
    hoti = m.build_mobility_packet(HOA, CN, m.HomeTestInit(bytes(8)))
    for _ in range(100):
        cn.receive(hoti, 0.0)
    assert len(cn.datagrams_to_send(0.0)) == 5 and cn.counters["dropped_rate_limited"] == 95
    assert cn.pop_events() == [ev.MessageDropped("rate_limited", "test init flood")]


# ============================================================================ a restarted home agent

def restarted(net):
    """The HA process came back with an empty binding cache; the MN still holds its registration."""
    net.ha = HomeAgent(HA, [HOME_PREFIX])
    return net


def from_mn(net):
    return m.encapsulate(ipv6.build_header(HOA, CN, 59, 0), net.mn.care_of_address, HA)


def test_a_restarted_home_agent_asks_the_mn_to_register_again_and_its_traffic_resumes_at_once():
    net = restarted(registered(make(), at=0.0))
    net.now, before = 5.0, len(net.log)
    assert net.ha.accept_reverse_tunnel(from_mn(net), net.now, protected_link=True) is None
    net.settle()   # BRR -> MN, its BU -> HA, the BA -> MN: no timer needed
    assert [d.description.split()[0] for _t, d, _a in net.log[before:]] == ["BRR", "BU", "BA"]
    assert net.ha.tunnel_endpoint(HOA, net.now) == COA1
    assert net.ha.accept_reverse_tunnel(from_mn(net), net.now, protected_link=True) is not None
    assert net.ha.counters["sent_BRR"] == 1


def test_refresh_requests_are_paced_per_home_address():
    net = restarted(registered(make(), at=0.0))
    net.rules.append(drop("BU"))   # the MN's answer is lost: the HA asks again, but not for every packet
    for k in range(20):
        net.now = 5.0 + k * 0.1
        net.ha.accept_reverse_tunnel(from_mn(net), net.now, protected_link=True)
        net.settle()
    assert len(net.sent("BRR")) == 2   # at 5.0 s and at 6.0 s
    assert net.ha.counters["refresh_requests_suppressed"] == 18


def test_only_traffic_over_the_protected_link_of_a_served_mn_makes_the_home_agent_ask():
    net = restarted(registered(make(), at=0.0))
    net.now = 5.0
    net.ha.accept_reverse_tunnel(from_mn(net), net.now)   # from the Internet: its source is easy to forge
    assert net.ha.datagrams_to_send(net.now) == []
    served = HomeAgent(HA, [HOME_PREFIX], served_home_addresses=[CN])
    assert not served.request_refresh(HOA, COA1, 5.0)   # not an MN this HA serves
    assert served.datagrams_to_send(5.0) == []
