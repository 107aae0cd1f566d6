"""VCM manager and mobile agent driven directly with hand-made messages."""
import itertools
import os

from nodeapps.vcm import protocol as p
from nodeapps.vcm.channel import ControlDrop, ControlPath
from nodeapps.vcm.manager import ManagerConfig, MnEntry, ReportIgnored, SessionClosed, VcmManager
from nodeapps.vcm.mobile_agent import (FallBackToSg, InstallInbound, KeysRejected, MobileAgent,
                                       MobileAgentConfig, PATH_VIA_SG, RetireInbound, SwitchOutbound)

SG_PATH = ControlPath("sg-vcm-sa", "fd00:10::1")
VCM_PATH = ControlPath("vcm-sa-in-sg-sa", "fd00:10::2")
MN_PATHS = {11: ControlPath("vcm-sa-in-sg-sa", "fd00:10::11"), 12: ControlPath("vcm-sa-in-sg-sa", "fd00:10::12")}


class Sender:
    """Encodes messages from one node with increasing counters."""

    def __init__(self, node_id):
        self.node_id = node_id
        self.counter = itertools.count(1)

    def __call__(self, msg_type, txid, *tlvs):
        return p.encode(p.Message(msg_type, self.node_id, next(self.counter), txid, tlvs))


def manager(random_bytes, **options):
    mns = tuple(MnEntry(n, MN_PATHS[n], f"2001:db8:1::{n}", f"fd00:10::{n}") for n in (11, 12))
    return VcmManager(ManagerConfig(2, 1, SG_PATH, mns, **options), random_bytes=random_bytes)


def report_both_outside(vcm, sg):
    vcm.receive(sg(p.REPORT, 1, p.MnInfo(11, p.LOCATION_OUTSIDE), p.MnInfo(12, p.LOCATION_OUTSIDE),
                   p.SessionSeen(11, 12)), SG_PATH, 0.0)
    return [(p.decode(d), path) for d, path in vcm.datagrams_to_send(0.0)]


def test_spis_skip_reserved_values_and_collisions():
    draws = iter([bytes(16), bytes(4)]   # key, salt, then SPI attempts
                 + [(5).to_bytes(4, "big"), (0).to_bytes(4, "big"), (4096).to_bytes(4, "big")]
                 + [bytes(16), bytes(4)]
                 + [(4096).to_bytes(4, "big"), (9999).to_bytes(4, "big"), (5000).to_bytes(4, "big")])
    vcm = manager(lambda n: next(draws), reserved_spis=frozenset({9999}))
    sent = report_both_outside(vcm, Sender(1))
    keys = [m for m, _ in sent if m.type == p.KEYS]
    spis = sorted(sa.spi for sa in keys[0].all(p.SaParams))
    assert spis == [4096, 5000]                     # 5, 0, the duplicate 4096 and reserved 9999 skipped
    assert {m.one(p.SaParams).spi for m in keys} == {4096, 5000}


def test_refused_keys_make_the_vcm_fall_back():
    vcm = manager(lambda n: bytes(range(1, n + 1)) if n != 4 else next(spis))
    spis = iter((i).to_bytes(4, "big") for i in range(1000, 2000, 7))
    sent = report_both_outside(vcm, Sender(1))
    keys_to_11 = next(m for m, path in sent if m.type == p.KEYS and path == MN_PATHS[11])
    vcm.receive(Sender(11)(p.KEYS_ACK, keys_to_11.txid, keys_to_11.one(p.SessionRef), p.Status(p.STATUS_STALE)),
                MN_PATHS[11], 0.1)
    fallbacks = [(p.decode(d), path) for d, path in vcm.datagrams_to_send(0.1)]
    assert {path for m, path in fallbacks if m.type == p.FALLBACK} == {MN_PATHS[11], MN_PATHS[12]}
    assert any(isinstance(e, SessionClosed) for e in vcm.pop_events())


def test_unanswered_keys_give_up_and_fall_back():
    spis = itertools.count(300)
    vcm = manager(lambda n: next(spis).to_bytes(4, "big") if n == 4 else bytes(n))
    report_both_outside(vcm, Sender(1))
    now = 0.0
    while (timer := vcm.get_timer()) is not None and timer < 100:
        now = timer
        vcm.handle_timer(now)
        vcm.datagrams_to_send(now)
    events = vcm.pop_events()
    assert any(type(e).__name__ == "RequestGaveUp" for e in events)
    assert any(isinstance(e, SessionClosed) for e in events) and vcm.sessions == {}


def test_requests_the_vcm_does_not_serve_are_answered_not_raised():
    vcm = manager(lambda n: bytes(n))
    mn = Sender(11)
    vcm.receive(mn(p.REPORT, 5, p.MnInfo(12, p.LOCATION_INSIDE)), MN_PATHS[11], 0.0)
    vcm.receive(mn(p.FALLBACK, 6, p.SessionRef(1, 1), p.Peer(12)), MN_PATHS[11], 0.0)
    answers = [p.decode(d) for d, _ in vcm.datagrams_to_send(0.0)]
    assert [(m.type, m.status) for m in answers] == [(p.REPORT_ACK, p.STATUS_BAD_REQUEST),
                                                     (p.FALLBACK_ACK, p.STATUS_BAD_REQUEST)]
    assert [e.reason for e in vcm.pop_events() if isinstance(e, ReportIgnored)] == ["not-from-sg",
                                                                                   "unexpected-request"]


# -- mobile agent ---------------------------------------------------------------------------------

def agent(**options):
    return MobileAgent(MobileAgentConfig(11, 2, VCM_PATH, "2001:db8:1::11", "fd00:10::11", **options))


def keys_msg(vcm, txid, session=1, generation=1, spi_out=5000, spi_in=6000, lifetime=100):
    return vcm(p.KEYS, txid, p.SessionRef(session, generation), p.Peer(12, "2001:db8:1::12", "fd00:10::12"),
               p.SaParams(p.DIR_OUT, spi_out, "aes128gcm16", bytes(16), bytes(4), lifetime),
               p.SaParams(p.DIR_IN, spi_in, "aes128gcm16", bytes(range(16)), bytes(4), lifetime))


def test_agent_pending_status_then_direct_after_peer_ready():
    mn, vcm = agent(), Sender(2)
    mn.receive(keys_msg(vcm, 1), VCM_PATH, 1.0)
    status = mn.path_status()[12]
    assert (status.path, status.pending, status.spi_in, status.spi_out) == (PATH_VIA_SG, True, 6000, None)
    assert [type(e) for e in mn.pop_events()] == [InstallInbound]
    ack = p.decode(mn.datagrams_to_send(1.0)[0][0])
    assert (ack.type, ack.txid, ack.status) == (p.KEYS_ACK, 1, p.STATUS_OK)
    mn.receive(vcm(p.PEER_READY, 2, p.SessionRef(1, 1), p.Peer(12)), VCM_PATH, 1.5)
    status = mn.path_status()[12]
    assert (status.path, status.spi_out, status.spi_in, status.since, status.pending) == ("direct", 5000, 6000, 1.5, False)
    switch = mn.pop_events()[0]
    assert isinstance(switch, SwitchOutbound)
    assert [op.action for op in switch.ops] == ["add-sa", "add-spd"]
    assert switch.ops[0].config["direction"] == "out" and switch.ops[0].config["spi"] == 5000


def test_agent_rejects_keys_while_inside_and_for_older_sessions():
    mn, vcm = agent(), Sender(2)
    mn.receive(keys_msg(vcm, 1, session=3), VCM_PATH, 0.0)
    mn.returned_inside(1.0)
    mn.receive(keys_msg(vcm, 2, session=4, spi_out=7000, spi_in=7001), VCM_PATH, 1.1)
    mn.left_office(2.0)
    mn.receive(keys_msg(vcm, 3, session=2, spi_out=7002, spi_in=7003), VCM_PATH, 2.1)
    statuses = [p.decode(d).status for d, _ in mn.datagrams_to_send(2.1)]
    assert statuses == [p.STATUS_OK, p.STATUS_BAD_REQUEST, p.STATUS_STALE]
    assert [e.reason for e in mn.pop_events() if isinstance(e, KeysRejected)] == ["inside the office",
                                                                                  "stale session"]


def test_agent_lingering_inbound_after_returning_inside():
    mn, vcm = agent(inbound_grace=5.0), Sender(2)
    mn.receive(keys_msg(vcm, 1), VCM_PATH, 0.0)
    mn.receive(vcm(p.PEER_READY, 2, p.SessionRef(1, 1), p.Peer(12)), VCM_PATH, 0.1)
    mn.pop_events()
    mn.returned_inside(10.0)
    fallback = mn.pop_events()
    assert [type(e) for e in fallback] == [FallBackToSg]
    assert [(op.action, op.config.get("direction")) for op in fallback[0].ops] == [("del-spd", "out"), ("del-sa", None)]
    assert mn.get_timer() == 15.0
    mn.handle_timer(15.0)
    retire = mn.pop_events()
    assert [type(e) for e in retire] == [RetireInbound] and retire[0].ops[1].config["name"].endswith("-in")
    assert mn.get_timer() is None


def test_agent_drops_messages_not_from_its_vcm():
    mn = agent()
    mn.receive(keys_msg(Sender(12), 1), VCM_PATH, 0.0)             # MN2 posing as the VCM
    mn.receive(keys_msg(Sender(2), 1), ControlPath("vcm-sa", "2001:db8::66"), 0.0)
    reasons = [e.reason for e in mn.pop_events() if isinstance(e, ControlDrop)]
    assert reasons == ["unknown-node", "wrong-path"] and mn.path_status() == {}


def test_agent_retires_inbound_sas_of_every_superseded_session():
    mn, vcm = agent(inbound_grace=5.0), Sender(2)
    for session, txid in ((1, 1), (2, 3), (3, 5)):
        mn.receive(keys_msg(vcm, txid, session=session, spi_out=1000 * session, spi_in=1000 * session + 1),
                   VCM_PATH, float(session))
        mn.receive(vcm(p.PEER_READY, txid + 1, p.SessionRef(session, 1), p.Peer(12)), VCM_PATH, session + 0.5)
    replaced = [e for e in mn.pop_events() if isinstance(e, FallBackToSg)]
    assert [(e.session_id, e.reason) for e in replaced] == [(1, "replaced"), (2, "replaced")]
    while (timer := mn.get_timer()) is not None and timer < 50:
        mn.handle_timer(timer)
    retired = sorted(e.session_id for e in mn.pop_events() if isinstance(e, RetireInbound))
    assert retired == [1, 2]
    assert mn.path_status()[12].session_id == 3 and mn.path_status()[12].spi_in == 3001


def test_a_message_claiming_another_mns_node_id_over_an_mns_sa_is_dropped():
    spis = itertools.count(300)
    vcm = manager(lambda n: next(spis).to_bytes(4, "big") if n == 4 else bytes(n))
    report_both_outside(vcm, Sender(1))
    vcm.pop_events()
    session = next(iter(vcm.sessions.values()))
    # MN 11's SA (its path) carries a KEYS_ACK that claims to come from MN 12.
    vcm.receive(Sender(12)(p.KEYS_ACK, 1, p.SessionRef(session.session_id, 1)), MN_PATHS[11], 0.1)
    drops = [e for e in vcm.pop_events() if isinstance(e, ControlDrop)]
    assert [d.reason for d in drops] == ["wrong-path"] and vcm.stats["wrong-path"] == 1


def test_sessions_are_bounded_and_the_oldest_falls_back_to_make_room():
    mns = tuple(MnEntry(n, ControlPath("sg-sa", f"fd00:10::{n}"), f"2001:db8:1::{n}", f"fd00:10::{n}")
                for n in (11, 12, 13, 14))
    spis = itertools.count(300)
    vcm = VcmManager(ManagerConfig(2, 1, SG_PATH, mns, max_sessions=1),
                     random_bytes=lambda n: next(spis).to_bytes(4, "big") if n == 4 else bytes(n))
    sg = Sender(1)
    vcm.receive(sg(p.REPORT, 1, *(p.MnInfo(n, p.LOCATION_OUTSIDE, f"2001:db8:1::{n}") for n in (11, 12, 13, 14)),
                   p.SessionSeen(11, 12)), SG_PATH, 0.0)
    vcm.datagrams_to_send(0.0)
    first = vcm.session_between(11, 12)
    vcm.receive(sg(p.REPORT, 2, p.SessionSeen(13, 14)), SG_PATH, 1.0)
    sent = [(p.decode(d), path) for d, path in vcm.datagrams_to_send(1.0)]
    assert vcm.stats["sessions_evicted"] == 1 and first.state == "closing"
    assert {path.address for m, path in sent if m.type == p.FALLBACK} == {"fd00:10::11", "fd00:10::12"}
    assert vcm.session_between(13, 14) is not None
    # Every session closing already: a further one is refused, not stacked up.
    vcm.session_between(13, 14).state = "closing"
    vcm.receive(sg(p.REPORT, 3, p.SessionSeen(11, 13)), SG_PATH, 2.0)
    assert vcm.session_between(11, 13) is None and vcm.stats["ignored-session-limit"] == 1


def test_binding_keys_one_per_session_the_same_at_both_mns_with_the_peers_care_of_and_kept_by_rekeys():
    vcm, sg = manager(os.urandom, binding_keys=True, lifetime=100), Sender(1)
    vcm.receive(sg(p.REPORT, 1, p.MnInfo(11, p.LOCATION_OUTSIDE, care_of="2001:db8:21::11"),
                   p.MnInfo(12, p.LOCATION_OUTSIDE, care_of="2001:db8:22::12"), p.SessionSeen(11, 12)), SG_PATH, 0.0)
    keys = {path: p.decode(d) for d, path in vcm.datagrams_to_send(0.0) if p.decode(d).type == p.KEYS}
    to_11, to_12 = keys[MN_PATHS[11]].one(p.BindingKey), keys[MN_PATHS[12]].one(p.BindingKey)
    assert to_11.key == to_12.key and len(to_11.key) == p.BINDING_KEY_LEN
    assert (to_11.peer_care_of, to_12.peer_care_of) == ("2001:db8:22::12", "2001:db8:21::11")
    session = next(iter(vcm.sessions.values()))
    vcm._start_generation(session, 75.0, rekey=True)
    rekeys = [p.decode(d) for d, _ in vcm.datagrams_to_send(75.0) if p.decode(d).type == p.KEYS]
    assert rekeys and {m.one(p.BindingKey).key for m in rekeys} == {to_11.key}
    plain = report_both_outside(manager(os.urandom), sg)
    assert all(m.one(p.BindingKey) is None for m, _ in plain if m.type == p.KEYS)   # off by default


def test_agent_hands_the_binding_key_to_the_shell_and_never_to_the_log():
    from nodeapps.roles.common import event_fields
    mn, vcm = agent(), Sender(2)
    tlvs = p.decode(keys_msg(Sender(2), 1)).tlvs
    mn.receive(vcm(p.KEYS, 1, *tlvs, p.BindingKey(b"\x42" * 20, "2001:db8:22::12")), VCM_PATH, 1.0)
    install = mn.pop_events()[0]
    assert (install.binding_key, install.peer_care_of, install.peer_external_hoa) == (
        b"\x42" * 20, "2001:db8:22::12", "2001:db8:1::12")
    name, fields = event_fields(install)
    assert "binding_key" not in fields and "4242" not in str(fields)
    mn.receive(vcm(p.PEER_READY, 2, p.SessionRef(1, 1), p.Peer(12)), VCM_PATH, 1.5)
    switch = mn.pop_events()[0]
    assert isinstance(switch, SwitchOutbound)
    mn.receive(vcm(p.FALLBACK, 3, p.SessionRef(1, 1), p.Peer(12)), VCM_PATH, 2.0)
    fallback = mn.pop_events()[0]
    assert isinstance(fallback, FallBackToSg) and fallback.peer_external_hoa == "2001:db8:1::12"


def test_a_fall_back_before_the_peers_ack_still_tells_the_shell_to_drop_the_binding_key():
    mn, vcm = agent(), Sender(2)
    tlvs = p.decode(keys_msg(Sender(2), 1)).tlvs
    mn.receive(vcm(p.KEYS, 1, *tlvs, p.BindingKey(b"\x42" * 20, "2001:db8:22::12")), VCM_PATH, 1.0)
    mn.pop_events()
    mn.receive(vcm(p.FALLBACK, 2, p.SessionRef(1, 1), p.Peer(12)), VCM_PATH, 1.2)   # no PEER_READY: never direct
    fallbacks = [e for e in mn.pop_events() if isinstance(e, FallBackToSg)]
    assert len(fallbacks) == 1 and fallbacks[0].peer_external_hoa == "2001:db8:1::12" and fallbacks[0].ops == ()
    # Without a binding key nothing changes on the direct path, and no event is made.
    plain = agent()
    plain.receive(Sender(2)(p.KEYS, 1, *tlvs), VCM_PATH, 1.0)
    plain.pop_events()
    plain.receive(Sender(2)(p.FALLBACK, 2, p.SessionRef(1, 1), p.Peer(12)), VCM_PATH, 1.2)
    assert not [e for e in plain.pop_events() if isinstance(e, FallBackToSg)]
