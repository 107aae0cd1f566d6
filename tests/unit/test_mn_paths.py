"""The MN's path selector (nodeapps/mobility/paths.py): every decision and every link-state transition,
without root or sockets."""
import itertools

import pytest

from nodeapps import ipv6
from nodeapps.mobility.paths import ENTERED_FROM, LinkState, PathSelector, Route, TransitionError

ME = ipv6.pton("fdc0:ffee:0:1::a:1")
PEER = ipv6.pton("fdc0:ffee:0:1::a:2")
OTHER = ipv6.pton("fdc0:ffee:0:1::a:3")
FS = ipv6.pton("fdc0:ffee:0:1::10")


def packet(src=ME, dst=PEER, version=6, length=60):
    header = bytes([version << 4, 0, 0, 0, 0, max(0, length - 40), 59, 64]) + src + dst
    return (header + bytes(max(0, length - 40)))[:length]


def away(**options):
    selector = PathSelector(**options)
    selector.enter(LinkState.AWAY)
    return selector


never = lambda _dst: False   # noqa: E731
always = lambda _dst: True   # noqa: E731


@pytest.mark.parametrize("bad", [
    packet(length=39),                                   # runt
    packet(version=4),                                   # not IPv6
    packet(dst=ipv6.pton("ff02::1")),                    # multicast
    packet(dst=ipv6.pton("fe80::1")),                    # link-local
])
def test_what_is_not_ours_to_route_is_ignored_in_every_state(bad):
    for state in LinkState:
        selector = PathSelector(state=state)
        assert selector.outbound(bad, always) is Route.IGNORE


@pytest.mark.parametrize("state", [s for s in LinkState if s is not LinkState.AWAY])
def test_nothing_takes_the_vpn_path_unless_away(state):
    selector = PathSelector(direct_out={PEER}, state=state)
    assert selector.outbound(packet(), always) is Route.BYPASS


def test_care_of_pair_goes_to_the_direct_sa_without_asking_for_bindings():
    asked = []
    selector = away(direct_out={PEER})
    assert selector.outbound(packet(), lambda d: asked.append(d) or False) is Route.DIRECT_SA
    assert asked == []


def test_home_ro_pair_is_direct_only_with_both_bindings_and_waits_on_the_sg_path_before():
    selector = away(direct_out={PEER}, vcm_ro=True)
    assert selector.outbound(packet(), never) is Route.AWAIT_BINDING
    assert selector.outbound(packet(), always) is Route.DIRECT_RO
    # the readiness asked is the destination's
    assert selector.outbound(packet(), lambda d: d == OTHER) is Route.AWAIT_BINDING


def sized(length, dst=PEER):
    return ipv6.build_header(ME, dst, 59, length - 40) + bytes(length - 40)


def test_home_ro_pair_before_its_bindings_seeds_through_the_home_agents_what_fits_and_refuses_the_rest():
    selector = away(direct_out={PEER}, vcm_ro=True, seed_limit=1298)
    assert selector.outbound(sized(1298), never) is Route.SEED_VIA_HOME_AGENT
    assert selector.outbound(sized(1299), never) is Route.TOO_BIG_FOR_SEED
    assert selector.outbound(sized(1299), always) is Route.DIRECT_RO      # the binding's path is wider
    assert selector.outbound(sized(1299, dst=OTHER), never) is Route.CORE   # not a pair: as ever


def test_a_narrowed_destination_is_widened_once_when_its_path_is_no_longer_the_seeds():
    selector = away(direct_out={PEER}, vcm_ro=True, seed_limit=1298)
    selector.outbound(sized(1298), never)
    assert selector.take_widened() == [] and selector.narrowed == set()      # no Packet Too Big, nothing to undo
    selector.outbound(sized(1299), never)
    selector.outbound(sized(1200), never)                                  # still seeding: still narrow
    assert selector.narrowed == {PEER} and selector.take_widened() == []
    selector.outbound(sized(100), always)                                  # the bindings are live
    selector.outbound(sized(100), always)
    assert selector.take_widened() == [PEER] and selector.take_widened() == []
    selector.outbound(sized(1299), never)
    selector.direct_out.clear()                                            # fell back to the SG path
    assert selector.outbound(sized(1299), never) is Route.CORE and selector.take_widened() == [PEER]


def test_packet_too_big_reaches_the_application_as_icmpv6_with_the_path_mtu():
    from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
    big = sized(1400)
    raw = ipv6.packet_too_big(big, 1298, PEER)
    parsed = IPv6(raw)                                   # scapy as the oracle
    assert (parsed.src, parsed.dst) == (ipv6.ntop(PEER), ipv6.ntop(ME)) and parsed.hlim == 255
    ptb = parsed[ICMPv6PacketTooBig]
    assert ptb.mtu == 1298 and len(raw) == ipv6.MIN_MTU            # RFC 4443 §2.4(c): no more than 1280
    assert bytes(ptb.payload) == big[:ipv6.MIN_MTU - 48]
    ours = ptb.cksum
    del ptb.cksum
    assert IPv6(bytes(parsed))[ICMPv6PacketTooBig].cksum == ours


def test_clear_route_optimisation_wraps_only_our_own_source_with_a_live_binding():
    selector = away(clear_ro_source=ME)
    assert selector.outbound(packet(), always) is Route.RO_WRAP
    assert selector.outbound(packet(), never) is Route.CORE
    assert selector.outbound(packet(src=OTHER), always) is Route.CORE   # not our home address: not wrapped
    assert away().outbound(packet(), always) is Route.CORE               # no insecure RO configured


def test_everything_else_is_the_cores_reverse_tunnel():
    selector = away(direct_out={PEER}, vcm_ro=True)
    assert selector.outbound(packet(dst=FS), always) is Route.CORE


def test_the_direct_set_is_shared_with_the_shell():
    peers = set()
    selector = away(direct_out=peers)
    assert selector.outbound(packet(), always) is Route.CORE
    peers.add(PEER)   # the VCM's operation arrives
    assert selector.outbound(packet(), always) is Route.DIRECT_SA


def test_link_state_transitions_follow_the_table_and_others_are_refused():
    for source, target in itertools.product(LinkState, LinkState):
        selector = PathSelector(state=source)
        if source is target:
            assert selector.enter(target) is False and selector.state is source
        elif source in ENTERED_FROM[target]:
            assert selector.enter(target) is True and selector.state is target
        else:
            with pytest.raises(TransitionError, match=f"{source.value} -> {target.value}"):
                selector.enter(target)
            assert selector.state is source


def test_a_typical_life():
    selector = PathSelector()
    for state in ("home-unproven", "home", "detached", "away", "unproven", "home", "away", "away"):
        selector.enter(state)   # the words work as well as the members
    assert selector.state is LinkState.AWAY and selector.state == "away"
    with pytest.raises(TransitionError):
        selector.enter(LinkState.DETACHED)     # only a home MN can lose its home address
    with pytest.raises(ValueError):
        selector.enter("orbit")
