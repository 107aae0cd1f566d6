"""SG monitor, VCM and two MNs on a fake clock: 202 -> 204 -> 206/210 -> 208/212, faults, fall-back, rekey.

The lab checks the ordering rule (no outbound direct SA without the peer's matching inbound SA) and the
SA/SPD dict formats after every step; any violation raises InvariantError and fails the test.
"""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeapps.vcm import protocol as p
from nodeapps.vcm.channel import CARRIER_LOCAL, CARRIER_SG_SA, CARRIER_VCM_SA, CARRIER_VCM_SA_IN_SG_SA, ControlDrop, ControlPath
from nodeapps.vcm.manager import ESTABLISHED, ReportIgnored, SessionClosed, SessionEstablished
from nodeapps.vcm.mobile_agent import (FallBackToSg, InstallInbound, KeysRejected, MobileAgent, PATH_DIRECT,
                                       PATH_VIA_SG, RetireInbound, SwitchOutbound)
from nodeapps.vcm.simulation import MN1, MN2, SG, VCM, InvariantError, Lab

VARIANTS = {
    "embodiment1": dict(embodiment=1),
    "embodiment2-encapsulated": dict(embodiment=2),
    "embodiment2-direct-vcm-sa": dict(embodiment=2, encapsulate=False),
    "embodiment1-vcm-in-sg": dict(embodiment=1, vcm_in_sg=True),
    "embodiment2-vcm-in-sg": dict(embodiment=2, vcm_in_sg=True),
}


def prepare(lab):
    """MN2 outside, MN1 inside talking to MN2 through the SG, then MN1 leaves the office too."""
    lab.go_outside(MN2)
    assert lab.send_data(MN1, MN2) == "via-sg"
    assert lab.send_data(MN2, MN1) == "via-sg"
    lab.run(1.0)
    lab.go_outside(MN1)
    assert lab.send_data(MN1, MN2) == "via-sg"


def establish(lab, settle=5.0):
    prepare(lab)
    lab.run(settle)


def both_direct(lab):
    s1, s2 = lab.agents[MN1].path_status(), lab.agents[MN2].path_status()
    return MN2 in s1 and MN1 in s2 and s1[MN2].path == PATH_DIRECT and s2[MN1].path == PATH_DIRECT


# -- the full sequence ------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_full_sequence_makes_the_path_direct(variant):
    lab = Lab(**VARIANTS[variant])
    prepare(lab)
    start = lab.now
    lab.run(5.0)
    kinds = [(s, d, m.type) for t, s, d, m in lab.delivered if t >= start]
    # 202 -> 204 -> 206/210 -> 208/212 (relayed), each answered.
    assert kinds.index((SG, VCM, p.REPORT)) < kinds.index((VCM, SG, p.REPORT_ACK))
    assert kinds.index((SG, VCM, p.REPORT)) < kinds.index((VCM, MN1, p.KEYS))
    for mn, other in ((MN1, MN2), (MN2, MN1)):
        assert kinds.index((VCM, mn, p.KEYS)) < kinds.index((mn, VCM, p.KEYS_ACK))
        assert kinds.index((mn, VCM, p.KEYS_ACK)) < kinds.index((VCM, other, p.PEER_READY))
        assert kinds.index((VCM, other, p.PEER_READY)) < kinds.index((other, VCM, p.PEER_READY_ACK))
    # 206 goes to MN2 with MN1's external HoA, 210 to MN1 with MN2's.
    keys_to_mn2 = lab.messages(p.KEYS, VCM, MN2)[0]
    keys_to_mn1 = lab.messages(p.KEYS, VCM, MN1)[0]
    assert keys_to_mn2.one(p.Peer).external_hoa == lab.mn[MN1].external
    assert keys_to_mn1.one(p.Peer).external_hoa == lab.mn[MN2].external
    assert all(m.one(p.Peer).node_id == MN2 for m in lab.messages(p.PEER_READY, VCM, MN1))
    assert lab.messages(p.REPORT_ACK)[-1].status == p.STATUS_OK

    assert both_direct(lab)
    s1, s2 = lab.agents[MN1].path_status()[MN2], lab.agents[MN2].path_status()[MN1]
    assert s1.spi_out == s2.spi_in and s1.spi_in == s2.spi_out and s1.spi_out != s1.spi_in
    assert min(s1.spi_out, s1.spi_in) >= 256
    assert s1.since > start and not s1.pending
    assert lab.send_data(MN1, MN2) == "direct" and lab.send_data(MN2, MN1) == "direct"
    assert [type(e) for e in lab.events[VCM]] == [SessionEstablished]
    assert len(lab.events_of(MN1, InstallInbound)) == len(lab.events_of(MN1, SwitchOutbound)) == 1


def test_embodiment1_sas_tunnel_internal_addresses_between_external_hoas():
    lab = Lab(embodiment=1)
    establish(lab)
    out_sa = next(sa for sa in lab.db[MN1].sad.values() if sa["direction"] == "out")
    assert (out_sa["mode"], out_sa["local"], out_sa["remote"]) == ("tunnel", "2001:db8:1::11", "2001:db8:1::12")
    rule = lab.db[MN1].spd[0]
    assert (rule["src"], rule["dst"], rule["sa"]) == ("fd00:10::11/128", "fd00:10::12/128", out_sa["name"])
    assert lab.paths[VCM][MN1] == ControlPath(CARRIER_VCM_SA_IN_SG_SA, "fd00:10::11")


def test_embodiment2_sas_use_public_addresses_only():
    lab = Lab(embodiment=2, algorithm="aes256gcm16")
    establish(lab)
    for sa in lab.db[MN2].sad.values():
        assert sa["mode"] == "transport" and sa["algorithm"] == "aes256gcm16" and len(sa["key"]) == 64
        assert {sa["local"], sa["remote"]} == {"2001:db8:10::11", "2001:db8:10::12"}
    assert all(rule["src"].startswith("2001:db8:10::") for rule in lab.db[MN2].spd)


def test_vcm_in_sg_uses_the_sg_sas():
    lab = Lab(embodiment=1, vcm_in_sg=True)
    establish(lab)
    assert lab.paths[VCM][MN1].carrier == CARRIER_SG_SA and lab.paths[MN1][VCM].address == "fd00:10::1"
    assert lab.paths[SG][VCM].carrier == CARRIER_LOCAL
    assert Lab(embodiment=2, encapsulate=False).paths[MN2][VCM].carrier == CARRIER_VCM_SA
    assert both_direct(lab)


def test_keys_ack_leaves_only_after_the_inbound_sa_and_rule_are_installed():
    lab = Lab()
    checked = []

    def fault(msg, src, dst):
        if msg.type == p.KEYS_ACK:
            inbound = [sa for sa in lab.db[src].sad.values() if sa["direction"] == "in"]
            rules = [r for r in lab.db[src].spd if r["direction"] == "in"]
            assert inbound and rules and rules[0]["sa"] == inbound[0]["name"]
            assert not any(sa["direction"] == "out" for sa in lab.db[src].sad.values())
            checked.append(src)
        return [lab.delay]

    lab.fault = fault
    establish(lab)
    assert sorted(checked) == [MN1, MN2] and both_direct(lab)


def test_keys_are_drawn_from_the_injected_random_source_and_unique():
    lab = Lab()
    establish(lab)
    assert lab.random_calls == 2 * 3   # per direction: SPI, key, salt
    spis = [sa["spi"] for db in lab.db.values() for sa in db.sad.values()]
    assert len(set(spis)) == 2 and len(spis) == 4
    keys = {sa["key"] for sa in lab.db[MN1].sad.values()}
    assert len(keys) == 2      # a different key per direction
    other = Lab(seed=2)
    establish(other)
    assert {sa["key"] for sa in other.db[MN1].sad.values()}.isdisjoint(keys)


def test_vcm_forgets_key_bytes_once_both_mns_have_them():
    lab = Lab()
    establish(lab)
    session = lab.vcm.session_between(MN1, MN2)
    gen = session.generations[1]
    assert gen.a_to_b.key == b"" and gen.b_to_a.key == b""
    managed = lab.vcm.contexts[MN1].managed_sas
    assert len(managed) == 1 and next(iter(managed.values())).algorithm == "aes128gcm16"
    assert lab.vcm.contexts[MN1].correspondents == {MN2}


# -- lost, duplicated and reordered control messages ----------------------------------------------

def drop_first(kind, src=None, dst=None, count=1):
    state = {"left": count}

    def fault(msg, s, d):
        if msg.type == kind and (src is None or s == src) and (dst is None or d == dst) and state["left"]:
            state["left"] -= 1
            return []
        return [0.005]
    return fault


@pytest.mark.parametrize("kind, src, dst", [
    (p.REPORT, SG, VCM), (p.REPORT_ACK, VCM, SG), (p.KEYS, VCM, MN1), (p.KEYS, VCM, MN2),
    (p.KEYS_ACK, MN1, VCM), (p.KEYS_ACK, MN2, VCM), (p.PEER_READY, VCM, MN1), (p.PEER_READY, VCM, MN2),
    (p.PEER_READY_ACK, MN1, VCM), (p.PEER_READY_ACK, MN2, VCM),
])
def test_each_lost_message_is_recovered_by_retransmission(kind, src, dst):
    lab = Lab()
    lab.go_outside(MN2)
    lab.send_data(MN1, MN2)
    lab.run(1.0)
    lab.fault = drop_first(kind, src, dst, count=2)
    lab.go_outside(MN1)
    lab.send_data(MN1, MN2)
    lab.run(10.0)
    assert both_direct(lab)
    assert sum(core.channel.stats["retransmit"] for core in lab.cores.values()) >= 1
    assert len(lab.events_of(MN1, InstallInbound)) == 1 and len(lab.events_of(MN2, SwitchOutbound)) == 1


def test_peer_ready_overtaking_keys_switches_right_after_install():
    lab = Lab()
    lab.fault = drop_first(p.KEYS, VCM, MN1)
    establish(lab)
    relayed = [t for t, s, d, m in lab.delivered if m.type == p.PEER_READY and d == MN1]
    keys = [t for t, s, d, m in lab.delivered if m.type == p.KEYS and d == MN1]
    assert relayed[0] < keys[0]           # MN2's ACK reached MN1 before MN1's own keys did
    kinds = [type(e) for e in lab.events[MN1] if isinstance(e, (InstallInbound, SwitchOutbound))]
    assert kinds == [InstallInbound, SwitchOutbound]
    assert both_direct(lab)


def test_every_message_duplicated():
    lab = Lab()
    lab.fault = lambda msg, s, d: [0.005, 0.006]
    establish(lab)
    assert both_direct(lab)
    assert len(lab.events_of(MN1, InstallInbound)) == 1 and len(lab.events_of(MN2, InstallInbound)) == 1
    assert len(lab.events_of(MN1, SwitchOutbound)) == 1
    assert len(lab.vcm.sessions) == 1
    assert lab.vcm.stats["duplicate"] > 0 and lab.agents[MN1].channel.stats["duplicate"] > 0
    assert sum(core.channel.stats["replay"] for core in lab.cores.values()) == 0


@pytest.mark.parametrize("seed", range(12))
def test_reordered_messages(seed):
    rng = random.Random(seed)
    lab = Lab()
    lab.fault = lambda msg, s, d: [rng.uniform(0.001, 0.2)]
    establish(lab, settle=30.0)
    assert both_direct(lab)
    assert len(lab.events_of(MN2, SwitchOutbound)) == 1


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 32), loss=st.floats(0.0, 0.35), dup=st.floats(0.0, 0.3),
       variant=st.sampled_from(sorted(VARIANTS)))
def test_random_loss_duplication_reordering_never_breaks_the_ordering_rule(seed, loss, dup, variant):
    rng = random.Random(seed)
    lab = Lab(**VARIANTS[variant])

    def fault(msg, s, d):
        if rng.random() < loss:
            return []
        copies = 2 if rng.random() < dup else 1
        return [rng.uniform(0.001, 0.1) for _ in range(copies)]

    lab.fault = fault
    establish(lab, settle=60.0)           # InvariantError would have been raised at the faulty step
    gave_up = any(type(e).__name__ == "RequestGaveUp" for events in lab.events.values() for e in events)
    if not gave_up:
        assert both_direct(lab)
    for node in (MN1, MN2):
        assert len(lab.events_of(node, SwitchOutbound)) <= 1


def test_the_invariant_check_catches_an_agent_that_switches_early():
    class Impatient(MobileAgent):
        def _on_keys(self, msg, now):
            super()._on_keys(msg, now)
            link = self._links[msg.one(p.Peer).node_id]
            gen = link.generations[msg.one(p.SessionRef).generation]
            if not gen.outbound_up:
                self._switch_outbound(link, gen, now)   # breaks the rule: no peer ACK yet

    lab = Lab(agent_factory=Impatient)
    lab.fault = drop_first(p.KEYS, VCM, MN2)
    with pytest.raises(InvariantError, match="has no inbound SA"):
        establish(lab)


# -- triggers -------------------------------------------------------------------------------------

def test_alternative_trigger_external_initiator_to_external_destination():
    lab = Lab()
    lab.go_outside(MN1)
    lab.go_outside(MN2)
    lab.run(1.0)
    lab.send_data(MN2, MN1)     # first packet ever between them, both already outside
    lab.run(5.0)
    seen = [m.one(p.SessionSeen) for m in lab.messages(p.REPORT) if m.one(p.SessionSeen)]
    assert seen == [p.SessionSeen(MN2, MN1, p.TRIGGER_EXTERNAL_INITIATOR)]
    assert both_direct(lab)
    assert lab.vcm.session_between(MN1, MN2).node_a == MN2


def test_only_existing_session_trigger_enabled_ignores_new_sessions():
    lab = Lab(triggers={p.TRIGGER_EXISTING_SESSION})
    lab.go_outside(MN1)
    lab.go_outside(MN2)
    lab.send_data(MN2, MN1)
    lab.run(5.0)
    assert lab.messages(p.KEYS) == [] and not both_direct(lab)


def test_combined_report_when_mn_appears_outside_by_its_traffic():
    lab = Lab()
    lab.go_outside(MN2)
    lab.send_data(MN1, MN2)
    lab.run(1.0)
    lab.location[MN1] = "outside"     # no binding update: the SG learns it from the SA traffic
    lab.send_data(MN1, MN2)
    lab.run(5.0)
    combined = [m for m in lab.messages(p.REPORT) if m.one(p.SessionSeen)]
    assert len(combined) == 1
    assert combined[0].one(p.MnInfo) == p.MnInfo(MN1, p.LOCATION_OUTSIDE, "2001:db8:1::11", "fd00:10::11", None)
    assert both_direct(lab)


# -- return to the office -------------------------------------------------------------------------

def test_fall_back_when_mn2_returns_inside():
    lab = Lab(inbound_grace=5.0)
    establish(lab)
    old_spis = {sa["spi"] for sa in lab.db[MN1].sad.values()}
    t_back = lab.now
    lab.go_inside(MN2)
    lab.run(1.0)
    fallback = lab.messages(p.FALLBACK, VCM, MN1)
    assert len(fallback) == 1 and fallback[0].one(p.Peer).node_id == MN2
    status = lab.agents[MN1].path_status()[MN2]
    assert status.path == PATH_VIA_SG and status.spi_out is None and status.since >= t_back
    assert [e.reason for e in lab.events_of(MN1, FallBackToSg)] == ["vcm-command"]
    assert not any(sa["direction"] == "out" for sa in lab.db[MN1].sad.values())
    assert lab.send_data(MN1, MN2) == "via-sg"
    lab.run(10.0)                     # inbound SAs go after the grace period
    assert lab.db[MN1].sad == {} and lab.db[MN1].spd == [] and lab.db[MN2].sad == {}
    assert lab.events_of(MN1, RetireInbound)
    assert lab.vcm.sessions == {} and any(isinstance(e, SessionClosed) for e in lab.events[VCM])
    # MN2 leaves again: a new session with fresh SPIs.
    lab.go_outside(MN2)
    lab.send_data(MN2, MN1)
    lab.run(5.0)
    assert both_direct(lab)
    assert {sa["spi"] for sa in lab.db[MN1].sad.values()}.isdisjoint(old_spis)
    assert lab.agents[MN1].path_status()[MN2].session_id == 2


def test_fall_back_when_sg_sees_mn2_in_clear_in_the_office():
    lab = Lab()
    establish(lab)
    lab.location[MN2] = "inside"      # the SG keeps the binding; only the clear traffic tells
    lab.sg.observe(lab.now, bytes.fromhex("fd000010000000000000000000000012"),
                   bytes.fromhex("fd000010000000000000000000000099"), "in", None)
    lab.drain()
    lab.run(1.0)
    assert lab.sg.location(MN2) == "inside"
    assert lab.agents[MN1].path_status()[MN2].path == PATH_VIA_SG
    assert lab.messages(p.FALLBACK, VCM, MN2)     # the returning MN is told too


def test_fall_back_on_sg_sa_silence_when_enabled():
    lab = Lab(idle_timeout=10.0)
    establish(lab)
    # Direct traffic never reaches the SG; MN1 keeps its SG SA alive, MN2 goes silent.
    for _ in range(30):
        lab.sg.observe(lab.now, bytes.fromhex("fd000010000000000000000000000011"),
                       bytes.fromhex("fd000010000000000000000000000001"), "in", MN1)
        lab.run(1.0)
    assert lab.sg.location(MN2) == "inside" and lab.sg.location(MN1) == "outside"
    assert lab.agents[MN1].path_status()[MN2].path == PATH_VIA_SG


def test_handover_keeps_the_path_direct_without_vcm_involvement():
    lab = Lab()
    establish(lab)
    sent_before = len(lab.delivered)
    lab.sg.update_binding(lab.now, MN1, "2001:db8:c::11")   # WLAN -> cellular
    lab.drain()
    lab.run(5.0)
    new = [m for _, _, _, m in lab.delivered[sent_before:]]
    assert [m.type for m in new] == [p.REPORT, p.REPORT_ACK]
    assert new[0].one(p.MnInfo).care_of == "2001:db8:c::11"
    assert both_direct(lab)


# -- rekey, make-before-break ---------------------------------------------------------------------

def test_rekey_is_make_before_break():
    lab = Lab(lifetime=100, inbound_grace=5.0)
    establish(lab)
    first = lab.agents[MN1].path_status()[MN2]
    directs = []
    lab.after_step.append(lambda lab: directs.append(both_direct(lab)
                                                     and lab.send_data(MN1, MN2) == "direct"
                                                     and lab.send_data(MN2, MN1) == "direct"))
    lab.run(400.0)
    assert all(directs) and len(directs) > 20
    status = lab.agents[MN1].path_status()[MN2]
    assert status.generation >= 5 and status.session_id == first.session_id
    assert status.spi_out != first.spi_out
    assert all(m.flags & p.FLAG_REKEY for m in lab.messages(p.KEYS) if m.one(p.SessionRef).generation > 1)
    # Order at MN1 for generation 2: inbound in, then new outbound in, then old outbound out, then old inbound.
    log = [(op.action, op.config.get("name", op.config.get("sa"))) for op in lab.db[MN1].log]
    names = lambda g, d: f"vcm-11-12-s1g{g}-{d}"
    assert log.index(("add-sa", names(2, "in"))) < log.index(("add-sa", names(2, "out")))
    assert log.index(("add-sa", names(2, "out"))) < log.index(("del-sa", names(1, "out")))
    assert log.index(("del-sa", names(1, "out"))) < log.index(("del-sa", names(1, "in")))
    # Old generations are cleaned up: at most two generations' inbound SAs at any time.
    assert len([sa for sa in lab.db[MN1].sad.values() if sa["direction"] == "in"]) <= 2
    assert len(lab.vcm.contexts[MN1].managed_sas) <= 2


def test_rekey_survives_lost_messages():
    lab = Lab(lifetime=100)
    establish(lab)
    lab.fault = drop_first(p.PEER_READY, VCM, MN2, count=3)
    lab.run(90.0)
    assert lab.agents[MN2].path_status()[MN1].generation == 2 and both_direct(lab)


def test_outbound_key_not_used_past_its_lifetime_when_the_vcm_is_unreachable():
    lab = Lab(lifetime=100)
    establish(lab)
    lab.fault = lambda msg, s, d: []          # the VCM is cut off: no rekey can complete
    lab.run(200.0)
    for node, peer in ((MN1, MN2), (MN2, MN1)):
        assert lab.agents[node].path_status()[peer].path == PATH_VIA_SG
        assert "lifetime-expired" in [e.reason for e in lab.events_of(node, FallBackToSg)]
        assert not any(sa["direction"] == "out" for sa in lab.db[node].sad.values())


# -- bad input ------------------------------------------------------------------------------------

def test_bad_control_input_is_dropped_counted_and_reported():
    lab = Lab()
    establish(lab)
    keys = lab.messages(p.KEYS, VCM, MN1)[0]
    keys_datagram = p.encode(keys)
    altered = p.encode(p.Message(p.KEYS, VCM, keys.counter, keys.txid + 100, keys.tlvs))
    installs = len(lab.events_of(MN1, InstallInbound))
    path_mn1 = lab.paths[MN1][VCM]
    lab.inject(keys_datagram[:-3], MN1, path_mn1)                            # fails parsing
    lab.inject(keys_datagram, MN1, path_mn1)                                 # exact copy: answered again
    lab.inject(altered, MN1, path_mn1)                                       # replayed counter
    lab.inject(p.encode(p.Message(p.KEYS_ACK, 77, 1, 1, (p.SessionRef(1, 1),))), VCM, lab.paths[VCM][MN1])
    lab.inject(p.encode(p.Message(p.REPORT, MN2, 50, 9, (p.MnInfo(MN1, p.LOCATION_INSIDE),))), VCM,
               lab.paths[VCM][SG])                                           # MN2 speaking on the SG's path
    lab.inject(b"", SG, lab.paths[SG][VCM])
    lab.run(1.0)
    drops = {(node, e.reason) for node, events in lab.events.items() for e in events if isinstance(e, ControlDrop)}
    assert drops == {(MN1, "malformed"), (MN1, "replay"), (VCM, "unknown-node"), (VCM, "wrong-path"),
                     (SG, "malformed")}
    stats = lab.agents[MN1].channel.stats
    assert (stats["malformed"], stats["replay"], stats["duplicate"]) == (1, 1, 1)
    assert len(lab.events_of(MN1, InstallInbound)) == installs and both_direct(lab)


def test_report_naming_unknown_mn_is_ignored_and_acknowledged_with_status():
    lab = Lab()
    report = p.encode(p.Message(p.REPORT, SG, 10 ** 6, 4242, (p.MnInfo(99, p.LOCATION_OUTSIDE, "2001:db8::99"),
                                                              p.SessionSeen(99, MN1))))
    lab.inject(report, VCM, lab.paths[VCM][SG])
    lab.run(1.0)
    ignored = lab.events_of(VCM, ReportIgnored)
    assert [e.reason for e in ignored] == ["unknown-node", "unknown-node"]
    ack = lab.messages(p.REPORT_ACK)[-1]
    assert ack.txid == 4242 and ack.status == p.STATUS_UNKNOWN_NODE
    assert lab.vcm.sessions == {}


def test_session_report_for_mns_not_known_outside_is_ignored():
    lab = Lab()
    report = p.encode(p.Message(p.REPORT, SG, 10 ** 6, 7, (p.SessionSeen(MN1, MN2),)))
    lab.inject(report, VCM, lab.paths[VCM][SG])
    lab.run(1.0)
    assert [e.reason for e in lab.events_of(VCM, ReportIgnored)] == ["not-external"]
    assert lab.messages(p.KEYS) == []


def test_duplicate_session_reports_do_not_create_a_second_session():
    lab = Lab()
    establish(lab)
    lab.sg._reported.clear()            # make the SG report the same pair again
    lab.sg._flows.clear()
    lab.location[MN1] = lab.location[MN2] = "outside"
    lab.sg.observe(lab.now, bytes.fromhex("fd000010000000000000000000000011"),
                   bytes.fromhex("fd000010000000000000000000000012"), "in", MN1)
    lab.drain()
    lab.run(5.0)
    assert len([m for m in lab.messages(p.REPORT) if m.one(p.SessionSeen)]) == 2
    assert len(lab.messages(p.KEYS)) == 2 and lab.vcm.session_between(MN1, MN2).state == ESTABLISHED


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 32), loss=st.floats(0.0, 0.3), dup=st.floats(0.0, 0.3),
       variant=st.sampled_from(sorted(VARIANTS)))
def test_random_faults_through_rekeys_fall_back_and_return(seed, loss, dup, variant):
    rng = random.Random(seed)
    lab = Lab(**VARIANTS[variant], lifetime=120)

    def fault(msg, s, d):
        if rng.random() < loss:
            return []
        return [rng.uniform(0.001, 0.1) for _ in range(2 if rng.random() < dup else 1)]

    lab.fault = fault
    establish(lab, settle=200.0)          # two rekeys on the way
    lab.go_inside(MN2)
    lab.run(60.0)
    assert lab.agents[MN2].path_status()[MN1].path == PATH_VIA_SG   # local decision, no message needed
    lab.go_outside(MN2)
    lab.send_data(MN2, MN1)
    lab.run(100.0)
    lab.fault = lambda msg, s, d: [0.005]
    lab.send_data(MN1, MN2)               # the SG reports the pair again if it still talks through it
    lab.run(60.0)
    lab.send_data(MN1, MN2)
    lab.run(30.0)
    assert both_direct(lab)


def test_spis_of_retired_generations_are_never_handed_out_again():
    # The MNs keep generation 1's inbound SAs until t = 1 + 100 + 100; generation 3 is drawn at about 151.
    lab = Lab(lifetime=100, inbound_grace=100.0)
    establish(lab)
    first = sorted(sa["spi"] for sa in lab.db[MN1].sad.values())
    proposals = iter([7777, 8888] + first + [9999, 6666])
    state = {"after_key": 0}

    def random_bytes(n):                    # per SA: key, salt, then SPI attempts
        if n == 16:
            state["after_key"] = 1
            return bytes(range(16))
        state["after_key"] += 1
        return b"salt" if state["after_key"] == 2 else next(proposals).to_bytes(4, "big")

    lab.vcm._random = random_bytes
    lab.run(155.0)                          # generation 3 draws generation 1's SPIs first: refused
    assert lab.agents[MN1].path_status()[MN2].generation == 3
    in_use = {sa["spi"] for sa in lab.db[MN1].sad.values()}
    assert set(first) & in_use and {9999, 6666} <= in_use   # generation 1's inbound SA is still there


# -- a restarted MN -----------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_a_restarted_mn_makes_its_peer_fall_back_and_the_pair_is_set_up_anew(variant):
    lab = Lab(**VARIANTS[variant])
    establish(lab)
    assert both_direct(lab)
    old_spis = {sa["spi"] for db in lab.db.values() for sa in db.sad.values()}
    restart = lab.now
    lab.restart_mn(MN2)
    assert lab.lost_spis   # MN1 still sends under an SA MN2's new process does not have
    lab.run(0.05)   # RESTARTED -> FALLBACK to MN1 -> its ACK: a few one-way delays of 5 ms
    assert not lab.lost_spis & {sa["spi"] for sa in lab.db[MN1].sad.values() if sa["direction"] == "out"}
    assert len(lab.messages(p.RESTARTED, MN2, VCM)) == 1
    assert lab.messages(p.FALLBACK, VCM, MN1) and not lab.messages(p.FALLBACK, VCM, MN2)
    lab.run(1.0)
    assert both_direct(lab) and lab.agents[MN1].path_status()[MN2].session_id == 2
    assert {sa["spi"] for sa in lab.db[MN2].sad.values()}.isdisjoint(old_spis)
    assert lab.send_data(MN1, MN2) == "direct" and lab.send_data(MN2, MN1) == "direct"
    assert lab.vcm.stats["restarted"] == 1
    assert any(isinstance(e, SessionClosed) and "restarted" in e.reason for e in lab.events[VCM])
    assert restart < lab.now


def test_a_restart_before_any_session_changes_nothing():
    lab = Lab()
    lab.restart_mn(MN1)
    lab.run(1.0)
    assert [m.type for m in lab.messages(p.RESTARTED_ACK, VCM, MN1)] == [p.RESTARTED_ACK]
    assert lab.vcm.sessions == {} and not lab.messages(p.FALLBACK)


def test_restarted_from_a_node_that_is_not_an_mn_is_refused():
    lab = Lab()
    sg = p.encode(p.Message(p.RESTARTED, SG, 1 << 40, 77, ()))
    lab.inject(sg, VCM, lab.paths[VCM][SG])
    lab.run(0.1)
    answers = lab.messages(p.RESTARTED_ACK, VCM, SG)
    assert [a.status for a in answers] == [p.STATUS_UNKNOWN_NODE] and lab.vcm.stats["restarted"] == 0


def test_a_late_restarted_does_not_undo_a_session_the_new_process_already_holds():
    """An MN's RESTARTED can arrive after the keys its new process acknowledged (it could not reach the VCM
    before its registration): that session is the new process's own and stays."""
    lab = Lab()
    lab.restart_mn(MN2)   # before any session: the RESTARTED is still on its way ...
    lab.fault = lambda msg, src, dst: [2.0] if msg.type == p.RESTARTED else [lab.delay]
    lab._queue = [(t + 2.0 if src == MN2 else t, seq, src, dst, data) for t, seq, src, dst, data in lab._queue]
    establish(lab)   # ... the pair goes direct first
    assert lab.messages(p.RESTARTED, MN2, VCM) and both_direct(lab)   # (its retransmissions late too)
    assert not lab.messages(p.FALLBACK) and lab.agents[MN1].path_status()[MN2].session_id == 1


# -- a restarted VCM (the SG with the VCM built in) --------------------------------------------------

def test_after_a_vcm_restart_a_pair_that_falls_back_is_keyed_again_under_a_higher_session_id():
    """The new VCM knows none of the old sessions; its session ids start at its process's start second, so
    when a pair keyed by its predecessor falls back and is seen again, the MNs take the new session instead
    of refusing it as stale (an id they already hold) or treating it as installed."""
    lab = Lab(vcm_in_sg=True)
    establish(lab)
    old = lab.agents[MN1].path_status()[MN2].session_id
    lab.restart_sg()
    lab.run(1.0)
    assert both_direct(lab)   # nobody told the MNs anything: the old pair goes on
    lab.go_inside(MN1)        # MN1 drops its side of the pair itself on returning to the office
    lab.run(1.0)
    lab.go_outside(MN1)
    assert lab.send_data(MN1, MN2) == "via-sg"
    lab.run(1.0)
    assert both_direct(lab)
    session = lab.agents[MN1].path_status()[MN2].session_id
    assert session > old and session >= 1000 and lab.agents[MN2].path_status()[MN1].session_id == session
    assert not [e for e in lab.events_of(MN1, KeysRejected)] and not [e for e in lab.events_of(MN2, KeysRejected)]
    assert lab.send_data(MN1, MN2) == "direct" and lab.send_data(MN2, MN1) == "direct"


def test_after_a_vcm_restart_a_restarted_mn_gets_its_pair_back_through_unkeyed_peer():
    """The new VCM does not know the pair its predecessor keyed, so an MN's RESTARTED changes nothing and
    the peer goes on sending under SAs the MN's new process lacks. The first such packet makes the MN send
    UNKEYED_PEER; the VCM tells the peer to drop any session older than its own (FALLBACK naming the id
    just below its first), the peer's next packet takes the SG path, and the pair is keyed anew."""
    lab = Lab(vcm_in_sg=True)
    establish(lab)
    old = lab.agents[MN1].path_status()[MN2].session_id
    lab.restart_sg()
    lab.run(1.0)
    lab.restart_mn(MN2)
    lab.run(0.1)
    assert lab.messages(p.RESTARTED_ACK, VCM, MN2) and not lab.messages(p.FALLBACK)   # nothing it knows of
    assert lab.send_data(MN1, MN2) == "lost"
    assert lab.send_data(MN1, MN2) == "lost"   # within the report interval: no second report
    lab.run(0.1)
    assert len(lab.messages(p.UNKEYED_PEER, MN2, VCM)) == 1
    (fallback,) = lab.messages(p.FALLBACK, VCM, MN1)
    assert fallback.one(p.SessionRef).session_id == lab.vcm._first_session - 1 > old
    assert lab.vcm.stats["orphan_fallback"] == 1
    assert lab.send_data(MN1, MN2) == "via-sg"
    lab.run(1.0)
    assert both_direct(lab)
    session = lab.agents[MN1].path_status()[MN2].session_id
    assert session >= lab.vcm._first_session and lab.agents[MN2].path_status()[MN1].session_id == session
    assert lab.send_data(MN1, MN2) == "direct" and lab.send_data(MN2, MN1) == "direct"


def test_unkeyed_peer_for_a_pair_the_vcm_keyed_falls_back_only_keys_an_earlier_process_held():
    """For a session the VCM knows, UNKEYED_PEER is RESTARTED for that one peer: a report from the process
    that acknowledged the current keys (a stray packet under a retired SPI) changes nothing."""
    lab = Lab(vcm_in_sg=True)
    establish(lab)
    lab.agents[MN2].unkeyed_peer(lab.mn[MN1].external, lab.now)
    lab.drain()
    lab.run(0.1)
    assert lab.messages(p.UNKEYED_PEER, MN2, VCM) and not lab.messages(p.FALLBACK) and both_direct(lab)
    lab.fault = lambda msg, src, dst: [] if msg.type == p.RESTARTED else [lab.delay]   # RESTARTED lost
    lab.restart_mn(MN2)
    lab.run(0.1)
    assert lab.send_data(MN1, MN2) == "lost"
    lab.run(0.1)
    assert lab.messages(p.FALLBACK, VCM, MN1) and lab.vcm.stats["orphan_fallback"] == 0
    lab.run(1.0)
    assert lab.send_data(MN1, MN2) in ("via-sg", "direct")
    lab.run(1.0)
    assert both_direct(lab) and lab.send_data(MN1, MN2) == "direct"


@pytest.mark.parametrize("address, why", [("2001:db8:ffff::1", "not an MN"), (None, "its own")])
def test_unkeyed_peer_naming_no_other_mn_is_refused(address, why):
    lab = Lab(vcm_in_sg=True)
    establish(lab)
    named = address or lab.mn[MN2].external
    lab.inject(p.encode(p.Message(p.UNKEYED_PEER, MN2, 1 << 41, 99, (p.Peer(0, named),))), VCM, lab.paths[VCM][MN2])
    lab.run(0.1)
    answers = lab.messages(p.UNKEYED_PEER_ACK, VCM, MN2)
    assert [a.status for a in answers] == [p.STATUS_UNKNOWN_NODE], why
    assert not lab.messages(p.FALLBACK) and both_direct(lab)


def test_a_restarted_vcm_that_numbers_below_its_predecessor_still_keys_the_pairs():
    """A VCM that handed out more session ids than seconds passed before it restarted leaves MNs holding ids
    above its successor's first one. The MNs order sessions by the VCM process that sent them first (the
    message counters name it), so the new VCM's keys are taken, not refused as stale."""
    lab = Lab(vcm_in_sg=True)
    lab.vcm._next_session = 10 ** 6   # the predecessor numbered far ahead of its start second
    establish(lab)
    old = lab.agents[MN2].path_status()[MN1].session_id
    assert old >= 10 ** 6
    lab.restart_sg()                  # the new VCM numbers from about 1000
    lab.run(1.0)
    lab.go_inside(MN1)                # MN1 drops its side; MN2 still holds the old session
    lab.run(1.0)
    lab.go_outside(MN1)
    assert lab.send_data(MN1, MN2) == "via-sg"
    lab.run(1.0)
    assert both_direct(lab)
    session = lab.agents[MN2].path_status()[MN1].session_id
    assert session < old and lab.agents[MN1].path_status()[MN2].session_id == session
    assert not lab.events_of(MN2, KeysRejected) and not lab.events_of(MN1, KeysRejected)
    assert lab.send_data(MN1, MN2) == "direct" and lab.send_data(MN2, MN1) == "direct"
