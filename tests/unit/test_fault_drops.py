"""drop-next: which message a packet or datagram is (every Mobility Header type, in every envelope a shell
hands to a core; every VCM type by its type code), the count semantics, the refusals, and the drop at the
shells' boundaries (``shell_harness``): a lost message is counted, logged, never reaches the core, and the
core's retransmission gets through."""
from __future__ import annotations

import pytest

from nodeapps import ipv6
from nodeapps.mobility import messages as mh
from nodeapps.mobility.constants import MH_NAMES
from nodeapps.roles import vcm_shell
from nodeapps.runtime.daemon import FAULT_INJECTION_DISABLED
from nodeapps.runtime.faults import (MOBILITY_MESSAGES, VCM_MESSAGES, MessageDrops, mobility_message,
                                     vcm_message)
from nodeapps.vcm import protocol as vp
from shell_harness import ShellHarness, lab_configs

MN = ipv6.pton("2001:db8:1::10")
CN = ipv6.pton("2001:db8:2::20")
CARE_OF = ipv6.pton("2001:db8:3::10")
HA = ipv6.pton("2001:db8:1::1")
COOKIE, TOKEN = bytes(range(8)), bytes(range(8, 16))

MESSAGES = {
    "BRR": mh.BindingRefreshRequest(),
    "HoTI": mh.HomeTestInit(COOKIE),
    "CoTI": mh.CareOfTestInit(COOKIE),
    "HoT": mh.HomeTest(1, COOKIE, TOKEN),
    "CoT": mh.CareOfTest(2, COOKIE, TOKEN),
    "BU": mh.BindingUpdate(7, 100, ack=True),
    "BA": mh.BindingAcknowledgement(0, 7, 100),
    "BE": mh.BindingError(1, MN),
}


def envelopes(message) -> dict[str, bytes]:
    """The shapes in which the shells hand Mobility Header packets to the cores or take them from them."""
    plain = mh.build_mobility_packet(MN, CN, message)
    return {
        "plain": plain,
        "home address option": mh.build_mobility_packet(CARE_OF, CN, message, home_address=MN),
        "type 2 routing header": mh.build_mobility_packet(CN, CARE_OF, message, routing_address=MN),
        "home agent tunnel": mh.encapsulate(plain, HA, CARE_OF),
        "two tunnels": mh.encapsulate(mh.encapsulate(plain, HA, CARE_OF), CN, HA),
    }


def test_every_mobility_header_type_has_a_message_here():
    assert sorted(MESSAGES) == sorted(MH_NAMES.values()) == sorted(MOBILITY_MESSAGES)


@pytest.mark.parametrize("name", MESSAGES)
def test_mobility_messages_are_told_by_their_mh_type_in_every_envelope(name):
    for where, packet in envelopes(MESSAGES[name]).items():
        assert mobility_message(packet) == name, where


def test_what_is_no_mobility_message_is_never_taken_for_one():
    data = vcm_shell.build_udp(MN, CN, 1, 2, bytes([ipv6.NH_NONE, 0, 5, 0]) * 4)   # MH-like bytes over UDP
    bu = mh.build_mobility_packet(MN, CN, MESSAGES["BU"])
    three_tunnels = mh.encapsulate(mh.encapsulate(mh.encapsulate(bu, HA, CARE_OF), CN, HA), HA, CN)
    for packet in (data, mh.encapsulate(data, HA, CARE_OF), three_tunnels, bu[:42], b"", b"\x60" + bytes(50),
                   bytes(40)):
        assert mobility_message(packet) is None


def vcm_header(msg_type: int, version: int = vp.VERSION) -> bytes:
    return vp.HEADER.pack(version, msg_type, 0, 11, 1, 1, 0)


@pytest.mark.parametrize("msg_type", sorted(vp.TYPE_NAMES))
def test_vcm_messages_are_told_by_their_type_code(msg_type):
    assert vcm_message(vcm_header(msg_type)) == vp.TYPE_NAMES[msg_type]


def test_vcm_classifier_on_encoded_messages_and_garbage():
    report = vp.encode(vp.Message(vp.REPORT, 1, 1, 1, (vp.MnInfo(11, vp.LOCATION_OUTSIDE, "2001:db8::1"),)))
    ack = vp.encode(vp.Message(vp.KEYS_ACK, 11, 2, 3, (vp.SessionRef(1, 1),)))
    assert (vcm_message(report), vcm_message(ack)) == ("REPORT", "KEYS_ACK")
    for data in (b"", vcm_header(vp.KEYS)[:vp.HEADER_LEN - 1], vcm_header(vp.KEYS, version=2), vcm_header(0),
                 vcm_header(max(vp.TYPE_NAMES) + 1), vcm_header(0xFF)):
        assert vcm_message(data) is None
    assert set(VCM_MESSAGES) == set(vp.TYPE_NAMES.values())


# ---- count semantics and bad input ------------------------------------------------------------------

def drops() -> MessageDrops:
    return MessageDrops(MOBILITY_MESSAGES + VCM_MESSAGES)


def test_count_drops_exactly_that_many_then_passes():
    d = drops()
    assert d.arm({"message": "KEYS", "count": 2}) == {"message": "KEYS", "direction": "in", "pending": 2}
    assert d.take("KEYS", "out") is None            # the default direction is "in"
    assert d.take("KEYS_ACK", "in") is None
    assert [d.take("KEYS", "in"), d.take("KEYS", "in"), d.take("KEYS", "in")] == [1, 0, None]
    assert not d.armed
    assert d.dropped == {"KEYS": 2}


def test_arming_again_replaces_the_pending_count_per_message_and_direction():
    d = drops()
    d.arm({"message": "BU", "direction": "out", "count": 3})
    d.arm({"message": "BU", "direction": "out", "count": 1})
    d.arm({"message": "BU", "direction": "in"})
    assert d.status() == {"pending": {"BU/in": 1, "BU/out": 1}, "dropped": {}}
    assert d.take("BU", "out") == 0 and d.take("BU", "out") is None
    assert d.status() == {"pending": {"BU/in": 1}, "dropped": {"BU": 1}}


def test_names_are_matched_without_regard_to_case():
    assert drops().arm({"message": "hoti", "direction": "out"})["message"] == "HoTI"
    assert drops().arm({"message": "keys_ack"})["message"] == "KEYS_ACK"


@pytest.mark.parametrize("request_, error", [
    ({"message": "KEYZ"}, "drop-next: unknown message 'KEYZ' (mobility: BRR, HoTI, CoTI, HoT, CoT, BU, BA, "
                          "BE; VCM: REPORT, REPORT_ACK, KEYS, KEYS_ACK, PEER_READY, PEER_READY_ACK, FALLBACK, "
                          "FALLBACK_ACK, RESTARTED, RESTARTED_ACK, UNKEYED_PEER, "
                          "UNKEYED_PEER_ACK)"),
    ({}, "drop-next: unknown message None"),
    ({"message": 206}, "drop-next: unknown message 206"),
    ({"message": "KEYS", "direction": "sideways"}, "drop-next: direction 'sideways'"),
    ({"message": "KEYS", "count": 0}, "drop-next: count 0: a whole number from 1 to 1000"),
    ({"message": "KEYS", "count": 1001}, "drop-next: count 1001"),
    ({"message": "KEYS", "count": True}, "drop-next: count True"),
    ({"message": "KEYS", "count": "1"}, "drop-next: count '1'"),
])
def test_bad_requests_are_refused_in_one_line(request_, error):
    d = drops()
    with pytest.raises(ValueError) as refused:
        d.arm(request_)
    assert str(refused.value).startswith(error) and "\n" not in str(refused.value)
    assert not d.armed


def test_a_message_the_node_does_not_carry_is_refused_by_name():
    d = MessageDrops(MOBILITY_MESSAGES)
    with pytest.raises(ValueError, match=r"^drop-next: this node carries no KEYS messages \(it carries: BRR, "):
        d.arm({"message": "KEYS"})


# ---- at the shells' boundaries ----------------------------------------------------------------------

@pytest.fixture
def harnesses():
    made = []
    yield made
    for h in made:
        h.close()


def shell(harnesses, node: str, variant: str = "private-vcm-in-sg", **overrides) -> tuple[ShellHarness, dict]:
    configs = lab_configs(variant, **overrides)
    h = ShellHarness(configs[node])
    harnesses.append(h)
    return h, configs


@pytest.mark.parametrize("node", ["sg", "mn1", "ha", "xha"])
def test_drop_next_is_refused_without_fault_injection(harnesses, node):
    h, _configs = shell(harnesses, node)
    with pytest.raises(ValueError) as refused:
        h.control({"cmd": "drop-next", "message": "BU"})
    assert str(refused.value) == FAULT_INJECTION_DISABLED
    assert h.runtime.message_drops.pending == {}


def test_each_role_names_what_it_carries(harnesses):
    carried = {node: shell(harnesses, node, "private-vcm-host", fault_injection=True)[0].runtime.message_drops.carried
               for node in ("sg", "mn1", "ha", "vcm")}
    assert carried["sg"] == carried["mn1"] == set(MOBILITY_MESSAGES + VCM_MESSAGES)
    assert carried["ha"] == set(MOBILITY_MESSAGES)
    assert carried["vcm"] == set(VCM_MESSAGES)
    h, _ = shell(harnesses, "cn", "private-mobility", fault_injection=True)
    assert h.runtime.message_drops.carried == set(MOBILITY_MESSAGES)
    sg, _ = shell(harnesses, "sg", "private", fault_injection=True)   # no mobility: nothing to drop
    with pytest.raises(ValueError, match=r"carries no BU messages \(it carries: none\)"):
        sg.control({"cmd": "drop-next", "message": "BU"})


def register_with_sg(h: ShellHarness, configs: dict, mn: str, sequence: int) -> dict:
    """``mn`` registers its care-of address with the SG (BU in ESP transport, HAO ahead of the ESP)."""
    tunnel_in = next(sa for sa in h.inbound_sas() if sa["name"] == f"{mn}->sg")
    bu_sa = next(sa for sa in h.inbound_sas() if sa["name"] == f"{mn}->sg mh")
    key = configs[mn]["mobility"]["sg_home_address"]
    bu = mh.encode_message(mh.BindingUpdate(sequence, 100, ack=True), ipv6.pton(key),
                           ipv6.pton(h.config.mobility["address"]))
    h.network(h.esp(bu_sa, ipv6.NH_MOBILITY, bu, src=tunnel_in["remote"], home_address=key))
    return tunnel_in


def test_sg_loses_the_next_bu_in_and_takes_the_one_after(harnesses):
    h, configs = shell(harnesses, "sg", fault_injection=True)
    assert h.control({"cmd": "drop-next", "message": "BU"}) == {"message": "BU", "direction": "in", "pending": 1}
    key = ipv6.pton(configs["mn1"]["mobility"]["sg_home_address"])
    register_with_sg(h, configs, "mn1", 1)
    assert key not in h.runtime.care_of and h.counters["mh_rx"] == 0
    assert h.counters["fault_dropped"] == 1
    (event,) = h.events("fault_dropped")
    assert (event["message"], event["direction"], event["pending"]) == ("BU", "in", 0)
    tunnel_in = register_with_sg(h, configs, "mn1", 2)   # the MN's retransmission
    assert h.runtime.care_of[key] == tunnel_in["remote"] and h.counters["mh_rx"] == 1
    assert h.counters["fault_dropped"] == 1
    assert h.control({"cmd": "status"})["faults"] == {"pending": {}, "dropped": {"BU": 1}}


def test_sg_ba_out_is_lost_and_the_binding_still_made(harnesses):
    h, configs = shell(harnesses, "sg", fault_injection=True)
    h.control({"cmd": "drop-next", "message": "BA", "direction": "out"})
    register_with_sg(h, configs, "mn1", 1)
    assert h.sent == [] and h.counters["mh_tx"] == 0 and h.counters["fault_dropped"] == 1
    register_with_sg(h, configs, "mn1", 2)
    assert len(h.sent) == 1 and h.counters["mh_tx"] == 1


def test_sg_report_lost_in_process_is_retransmitted_after_the_channel_timeout(harnesses):
    """VCM in the SG: REPORT goes from the monitor to the manager inside one process; lost on that hop, it
    comes again after the channel's first retransmission timeout (0.25 s) and the KEYS go out."""
    h, configs = shell(harnesses, "sg", fault_injection=True)
    tunnel = {mn: register_with_sg(h, configs, mn, 1) for mn in ("mn1", "mn2")}
    h.control({"cmd": "drop-next", "message": "REPORT", "direction": "out"})
    homes = {mn: ipv6.pton(configs[mn]["mobility"]["address"]) for mn in ("mn1", "mn2")}
    home_agent = ipv6.pton(configs["mn1"]["mobility"]["home_agent"])
    inner = mh.encapsulate(vcm_shell.build_udp(homes["mn1"], homes["mn2"], 5000, 5001, b"hello"),
                           ipv6.pton(tunnel["mn1"]["remote"]), home_agent)
    def logged(kind):   # (sender, receiver) of each control message of this type the SG logged
        return [(e["node"], e["peer"]) for e in h.events("vcm_message") if e["type"] == kind]
    sent_before, reports_before = len(h.sent), len(logged("REPORT"))
    h.network(h.esp(tunnel["mn1"], ipv6.NH_IPV6, inner))
    assert h.events("session_detected") and len(logged("REPORT")) == reports_before
    assert h.counters["fault_dropped"] == 1 and len(h.sent) == sent_before   # no KEYS to anyone
    assert not h.timer(0.2)
    assert h.timer(0.1)
    assert logged("KEYS") == [("vcm", "mn1"), ("vcm", "mn2")]   # 210 to MN1, then 206 to MN2
    assert h.counters["vcm_tx"] >= 2 and h.counters["fault_dropped"] == 1


def keys_from_sg(h: ShellHarness, configs: dict) -> bytes:
    """A KEYS-typed control datagram from the SG's inner address inside the SG -> mn1 tunnel SA."""
    sa = next(s for s in h.inbound_sas() if s["name"] == "sg->mn1")
    home = ipv6.pton(configs["mn1"]["mobility"]["address"])
    datagram = vcm_shell.build_udp(h.runtime.pairs.sg_inner, home, vcm_shell.VCM_PORT, vcm_shell.VCM_PORT,
                                   vcm_header(vp.KEYS))
    return h.esp(sa, ipv6.NH_IPV6, datagram)


def test_mobile_node_loses_the_next_keys_in_only(harnesses):
    h, configs = shell(harnesses, "mn1", fault_injection=True)
    h.control({"cmd": "drop-next", "message": "KEYS"})
    stats_before = dict(h.runtime.pairs.agent.channel.stats)
    h.network(keys_from_sg(h, configs))
    assert h.counters["vcm_rx"] == 0 and h.counters["fault_dropped"] == 1
    assert h.runtime.pairs.agent.channel.stats == stats_before   # the agent never saw it
    h.network(keys_from_sg(h, configs))
    assert h.counters["vcm_rx"] == 1 and h.counters["fault_dropped"] == 1
    assert h.handler_errors == 0


def test_mobile_node_bu_out_lost_then_retransmitted(harnesses):
    """Unanswered first registrations: the next BU retransmission is lost, the ones after it leave."""
    h, _configs = shell(harnesses, "mn1", fault_injection=True)
    h.control({"cmd": "drop-next", "message": "BU", "direction": "out"})
    for _ in range(100):   # 5 s: past the first retransmission timeout (1.5 s) and its doubling
        h.timer(0.05)
    (dropped,) = h.events("fault_dropped")
    later = [e for e in h.events("mobility_sent") if e["what"].startswith("BU") and e["time"] > dropped["time"]]
    assert dropped["message"] == "BU" and later
    assert h.counters["fault_dropped"] == 1 and h.runtime.message_drops.pending == {}
