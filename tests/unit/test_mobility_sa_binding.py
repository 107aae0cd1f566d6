"""An MN speaks only for itself, through the mobility cores: a mobility message under an MN's SA may concern
only the home address the configuration binds to that SA (RFC 3776 §4.2, RFC 4877 §4.2); the BU rate limit
counts only authenticated BUs; a reverse-tunnelled VPN source needs a protected link (RFC 4301 §5.2); the
correspondent's binding cache is bounded."""
from nodeapps import ipv6
from nodeapps.mobility import events as ev
from nodeapps.mobility import messages as m
from nodeapps.mobility import rr
from nodeapps.mobility.constants import BA_ACCEPTED
from nodeapps.mobility.correspondent import CorrespondentNode
from nodeapps.mobility.home_agent import HomeAgent

HA, VICTIM, ATTACKER, VICTIM_COA, ATTACKER_COA, CN = (ipv6.pton(a) for a in (
    "fd00:1::1", "fd00:1::10", "fd00:1::11", "2001:db8:2::10", "2001:db8:2::11", "2001:db8:3::5"))
OFFICE = "fd00:1::/64"


def home_agent(**kwargs):
    return HomeAgent(HA, [OFFICE], served_home_addresses=[VICTIM, ATTACKER], **kwargs)


def security_gateway():
    return HomeAgent(HA, [OFFICE], served_home_addresses=[VICTIM, ATTACKER], accept_secured_bindings=True)


def home_bu(home, care_of, sequence, *, home_registration=True):
    bu = m.BindingUpdate(sequence, 100, ack=True, home_registration=home_registration,
                         options=(m.AlternateCareOfAddress(care_of),))
    return m.build_mobility_packet(care_of, HA, bu, home_address=home)


def register(core, home, care_of, sequence, now, *, sa_home, home_registration=True):
    core.receive(home_bu(home, care_of, sequence, home_registration=home_registration), now,
                 esp_protected=True, esp_home_address=sa_home)
    return core.pop_events(), core.datagrams_to_send(now)


def test_home_agent_refuses_a_bu_for_another_mns_home_address_under_the_attackers_sa():
    ha = home_agent()
    register(ha, VICTIM, VICTIM_COA, 1, 0.0, sa_home=VICTIM)
    assert ha.tunnel_endpoint(VICTIM, 1.0) == VICTIM_COA
    events, sent = register(ha, VICTIM, ATTACKER_COA, 2, 1.0, sa_home=ATTACKER)
    assert events == [ev.MobilityWrongSa(VICTIM, ATTACKER, "BU")]
    assert sent == []   # no BA: it could only be protected with the victim's SA
    assert ha.counters["mh_wrong_sa"] == 1
    assert ha.tunnel_endpoint(VICTIM, 1.0) == VICTIM_COA   # the victim's binding is unchanged
    # The victim's next BU (sequence 2, as if the attacker's had never been) is still accepted.
    events, sent = register(ha, VICTIM, VICTIM_COA, 2, 2.0, sa_home=VICTIM)
    assert [type(e) for e in events] == [ev.BindingUpdated]
    assert [m.parse_mobility_packet(d.packet).message.status for d in sent] == [BA_ACCEPTED]


def test_home_agent_refuses_a_first_registration_for_another_mn():
    ha = home_agent()
    events, sent = register(ha, VICTIM, ATTACKER_COA, 1, 0.0, sa_home=ATTACKER)
    assert ha.tunnel_endpoint(VICTIM, 0.0) is None and sent == []
    assert ha.counters["mh_wrong_sa"] == 1 and ha.counters["received_BU"] == 0


def test_security_gateway_core_refuses_another_mns_home_address_under_the_attackers_sa():
    sg = security_gateway()
    register(sg, VICTIM, VICTIM_COA, 1, 0.0, sa_home=VICTIM, home_registration=False)
    events, sent = register(sg, VICTIM, ATTACKER_COA, 2, 1.0, sa_home=ATTACKER, home_registration=False)
    assert events == [ev.MobilityWrongSa(VICTIM, ATTACKER, "BU")] and sent == []
    assert sg.route(VICTIM, 1.0) == VICTIM_COA and sg.counters["mh_wrong_sa"] == 1
    # The attacker may still move its own binding.
    events, _ = register(sg, ATTACKER, ATTACKER_COA, 1, 2.0, sa_home=ATTACKER, home_registration=False)
    assert sg.route(ATTACKER, 2.0) == ATTACKER_COA


def test_an_alternate_care_of_address_cannot_hide_the_home_address_the_sa_is_bound_to():
    # No HAO: the home address is the source (RFC 6275 §9.5.1); the SA's home address still decides.
    ha = home_agent()
    bu = m.BindingUpdate(1, 100, ack=True, home_registration=True, options=(m.AlternateCareOfAddress(ATTACKER_COA),))
    ha.receive(m.build_mobility_packet(VICTIM, HA, bu), 0.0, esp_protected=True, esp_home_address=ATTACKER)
    assert ha.counters["mh_wrong_sa"] == 1 and ha.tunnel_endpoint(VICTIM, 0.0) is None


def test_any_mobility_message_is_bound_to_the_sa_not_only_binding_updates():
    ha = home_agent()
    hoti = m.build_mobility_packet(VICTIM, HA, m.HomeTestInit(bytes(8)))
    ha.receive(hoti, 0.0, esp_protected=True, esp_home_address=ATTACKER)
    assert ha.counters["mh_wrong_sa"] == 1
    assert ha.pop_events() == [ev.MobilityWrongSa(VICTIM, ATTACKER, "HoTI")]


def test_a_flood_of_unauthenticated_bus_does_not_spend_the_real_mns_rate_limit():
    ha = home_agent(bu_rate=1.0, bu_burst=2.0)
    for i in range(200):   # at one instant: the bucket would be empty many times over
        ha.receive(home_bu(VICTIM, ATTACKER_COA, i), 0.0, esp_protected=False)
        ha.receive(home_bu(VICTIM, ATTACKER_COA, i), 0.0, esp_protected=True, esp_home_address=ATTACKER)
    assert ha.counters["dropped_rate_limited"] == 0
    register(ha, VICTIM, VICTIM_COA, 1, 0.0, sa_home=VICTIM)
    assert ha.tunnel_endpoint(VICTIM, 0.0) == VICTIM_COA


def test_authenticated_bus_still_meet_the_rate_limit():
    ha = home_agent(bu_rate=1.0, bu_burst=2.0)
    for sequence in (1, 2, 3):
        register(ha, VICTIM, VICTIM_COA, sequence, 0.0, sa_home=VICTIM)
    assert ha.counters["dropped_rate_limited"] == 1


def test_correspondent_rate_limit_is_spent_only_by_bus_with_a_valid_authenticator():
    cn = CorrespondentNode([CN], bu_rate=1.0, bu_burst=1.0, random_bytes=lambda n: bytes(n))
    forged = m.BindingUpdate(1, 10, ack=True, options=(m.NonceIndices(0, 0), m.BindingAuthorizationData(bytes(12))))
    cn.nonces.current(0.0)
    for _ in range(50):
        cn.receive(m.build_mobility_packet(ATTACKER_COA, CN, forged, home_address=VICTIM), 0.0)
    assert cn.counters["dropped_bad_authenticator"] == 50 and cn.counters["dropped_rate_limited"] == 0
    cn.receive(signed_bu(cn, VICTIM, VICTIM_COA, 1), 0.0)
    assert cn.route(VICTIM, 0.0) == VICTIM_COA


def signed_bu(cn, home, care_of, sequence):
    _index, nonce = cn.nonces.current(0.0)
    kbm = rr.binding_management_key(rr.home_keygen_token(cn.nonces.kcn, home, nonce),
                                    rr.care_of_keygen_token(cn.nonces.kcn, care_of, nonce))
    bu = rr.sign(m.BindingUpdate(sequence, 10, options=(m.NonceIndices(0, 0),)), kbm, care_of, CN)
    return m.build_mobility_packet(care_of, CN, bu, home_address=home)


def test_correspondent_cache_is_bounded_and_evicts_the_oldest_binding():
    cn = CorrespondentNode([CN], cache_capacity=3, random_bytes=lambda n: bytes(n))
    homes = [ipv6.pton(f"2001:db8:9::{i + 1:x}") for i in range(5)]
    for i, home in enumerate(homes):
        cn.receive(signed_bu(cn, home, VICTIM_COA, 1), float(i) * 0.01)
    assert len(cn.cache) == 3 and cn.counters["bindings_evicted"] == 2
    assert [cn.route(h, 0.1) for h in homes] == [None, None, VICTIM_COA, VICTIM_COA, VICTIM_COA]
    removed = [e for e in cn.pop_events() if isinstance(e, ev.BindingRemoved)]
    assert [(e.home_address, e.reason) for e in removed] == [(homes[0], "evicted"), (homes[1], "evicted")]


def test_default_correspondent_cache_holds_a_binding_per_mn_pair_of_the_scale_experiment():
    assert CorrespondentNode([CN]).cache.capacity >= 2 * 100


def reverse_tunnelled(src, care_of):
    inner = ipv6.build_header(src, CN, 59, 0)
    return m.encapsulate(inner, care_of, HA)


def test_reverse_tunnel_with_a_vpn_source_needs_a_protected_link():
    ha = home_agent(vpn_prefixes=[OFFICE])
    register(ha, VICTIM, VICTIM_COA, 1, 0.0, sa_home=VICTIM)
    # From the Internet (no protected link): the registered care-of address is easy to forge.
    assert ha.accept_reverse_tunnel(reverse_tunnelled(VICTIM, VICTIM_COA), 1.0) is None
    assert ha.counters["dropped_unprotected_vpn_source"] == 1
    assert ha.pop_events()[-1] == ev.MessageDropped("unprotected_vpn_source", "fd00:1::10")
    # Behind the SG (the office LAN): accepted from the registered care-of address only.
    assert ha.accept_reverse_tunnel(reverse_tunnelled(VICTIM, VICTIM_COA), 1.0, protected_link=True) is not None
    assert ha.accept_reverse_tunnel(reverse_tunnelled(VICTIM, ATTACKER_COA), 1.0, protected_link=True) is None
    assert ha.counters["dropped_reverse_tunnel_mismatch"] == 1


def test_tunnel_sa_carries_only_its_own_home_address():
    ha = home_agent()
    register(ha, VICTIM, VICTIM_COA, 1, 0.0, sa_home=VICTIM)
    register(ha, ATTACKER, ATTACKER_COA, 1, 0.0, sa_home=ATTACKER)
    hoti = m.build_mobility_packet(VICTIM, CN, m.HomeTestInit(bytes(8)))
    assert not ha.accept_tunnel_sa(ATTACKER_COA, hoti, 1.0, ATTACKER)
    assert ha.counters["mh_wrong_sa"] == 1
    assert ha.accept_tunnel_sa(VICTIM_COA, hoti, 1.0, VICTIM)
    assert not ha.accept_tunnel_sa(ATTACKER_COA, hoti, 1.0, VICTIM)   # right SA, wrong care-of address
