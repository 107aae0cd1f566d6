"""The SG and VCM host shells fed synthetic packets sealed with a compromised MN's own keys: what leaves an
MN's SA speaks only for that MN (RFC 4301 §5.2, RFC 3776 §4.2). The shells are built from the lab's own
configs; nothing here needs root (the few ``ip`` calls are replaced)."""
import pytest

from nodeapps import ipv6
from nodeapps.mobility import messages as m
from nodeapps.node import RUNTIMES
from nodeapps.roles import security_gateway
from nodeapps.runtime.config import NodeConfig, build_processor
from nodeapps.runtime.mobility import TransportPeer
from nodeapps.roles import vcm_shell


class FakeSock:
    def __init__(self, packets):
        self.frames = [bytes(14) + p for p in packets]

    def recv(self, _size):
        if not self.frames:
            raise BlockingIOError
        return self.frames.pop(0)


class FakeSender:
    def __init__(self):
        self.sent = []

    def sendto(self, packet, _address):
        self.sent.append(packet)


def lab_configs(tmp_path, **options):
    from topologies.lab import SvpnLab
    lab = SvpnLab(mobile_nodes=3, attachments=["wlan1", "wlan2", "cell"], mobility=True, **options)
    lab.run_dir = str(tmp_path)
    return lab, lab._make_configs()


def runtime(config: dict, tmp_path, monkeypatch):
    monkeypatch.setattr(security_gateway, "run_ip", lambda *a, **k: None)
    monkeypatch.setattr(security_gateway, "run_ip6_batch", lambda *a, **k: None)
    node = NodeConfig.from_dict(dict(config, event_log=str(tmp_path / f"{config['node']}.events.jsonl")))
    rt = RUNTIMES[node.role](node, build_processor(node))
    rt.setup_role()
    rt.sender = FakeSender()
    rt.tun_written = []
    rt.write_tun = rt.tun_written.append
    rt.send_protected = lambda packet, sa: rt.sender.sent.append(packet)
    return rt


_PEERS = {}


def mh_peer(configs, mn, index):
    """The MN's own SA with a mobility peer, one per config set (its sequence numbers go on)."""
    peer = configs[mn]["mobility"]["peers"][index]
    key = (id(configs), mn, index)
    if key not in _PEERS:
        _PEERS[key] = TransportPeer(peer["address"], peer["out"], peer["in"])
    return _PEERS[key]


def sg_bu(configs, lab, mn, home, sequence):
    """``mn``'s BU to the SG for ``home`` from its care-of address, sealed with ``mn``'s own SA."""
    care_of = ipv6.pton(lab.plan.current_address(lab.plan.mobile(mn)))
    sg = ipv6.pton(lab.plan.sg_public)
    bu = m.BindingUpdate(sequence, 100, ack=True, options=(m.AlternateCareOfAddress(care_of),))
    return mh_peer(configs, mn, 1).seal(m.build_mobility_packet(care_of, sg, bu, home_address=ipv6.pton(home)))


def mn_processor(configs, mn):
    key = (id(configs), mn, "tunnel")
    if key not in _PEERS:
        _PEERS[key] = build_processor(NodeConfig.from_dict(configs[mn]))
    return _PEERS[key]


def through_tunnel(configs, lab, mn, inner_src, inner_dst):
    """A packet reverse-tunnelled to the office HA (RFC 6275 §11.3.1) inside ``mn``'s SA with the SG."""
    processor = mn_processor(configs, mn)
    care_of = ipv6.pton(lab.plan.current_address(lab.plan.mobile(mn)))
    inner = vcm_shell.build_udp(ipv6.pton(inner_src), ipv6.pton(inner_dst), 9, 9, b"probe")
    verdict, _sa, out = processor.outbound(m.encapsulate(inner, care_of, ipv6.pton(lab.plan.office["ha"])))
    assert verdict == "protect"
    return out


@pytest.fixture
def sg(tmp_path, monkeypatch):
    lab, configs = lab_configs(tmp_path, addressing="private", vcm="in-sg")
    rt = runtime(configs["sg"], tmp_path, monkeypatch)
    # Every MN registers its care-of address with the SG under its own SA.
    rt.on_network(FakeSock([sg_bu(configs, lab, mn, lab.plan.mobile(mn).external_home_address, 1)
                            for mn in ("mn1", "mn2", "mn3")]), 0.0)
    assert len(rt.care_of) == 3 and rt.counters["mh_wrong_sa"] == 0
    return lab, configs, rt


def test_sg_refuses_a_bu_for_another_mns_home_address_under_a_compromised_mns_sa(sg):
    lab, configs, rt = sg
    victim = ipv6.pton(lab.plan.mobile("mn2").external_home_address)
    before = rt.care_of[victim]
    sent = len(rt.sender.sent)
    rt.on_network(FakeSock([sg_bu(configs, lab, "mn1", lab.plan.mobile("mn2").external_home_address, 7)]), 1.0)
    assert rt.counters["mh_wrong_sa"] == 1
    assert rt.care_of[victim] == before and rt.core.route(victim, 1.0) == ipv6.pton(before)
    assert len(rt.sender.sent) == sent   # no BA


def test_sg_drops_a_packet_whose_innermost_source_is_not_the_sas_mn(sg):
    lab, configs, rt = sg
    homes = {mn: lab.plan.mobile(mn).home_address for mn in ("mn1", "mn2", "mn3")}
    forged = [through_tunnel(configs, lab, "mn3", homes["mn1"], homes["mn2"]) for _ in range(3)]
    rt.on_network(FakeSock(forged), 1.0)
    assert rt.counters["inner_source_mismatch"] == 3 and rt.tun_written == []
    assert rt.monitor.flow_count() == 0
    assert not [e for e in rt.monitor.pop_events() if type(e).__name__ == "SessionDetected"]
    assert rt.monitor.correspondents(vcm_shell.mn_node_id(3)) == set()


def test_sg_passes_what_an_mn_sends_for_itself(sg):
    lab, configs, rt = sg
    home1, home2 = lab.plan.mobile("mn1").home_address, lab.plan.mobile("mn2").home_address
    care_of = lab.plan.current_address(lab.plan.mobile("mn1"))
    own = through_tunnel(configs, lab, "mn1", home1, home2)
    # Its BU to the home agent travels from the care-of address (home address in a HAO): innermost = CoA.
    processor = mn_processor(configs, "mn1")
    _v, _sa, from_care_of = processor.outbound(vcm_shell.build_udp(ipv6.pton(care_of),
                                                                   ipv6.pton(lab.plan.office["ha"]), 9, 9, b"x"))
    rt.on_network(FakeSock([own, from_care_of]), 1.0)
    assert rt.counters["inner_source_mismatch"] == 0 and len(rt.tun_written) == 2
    assert home2 in rt.monitor.correspondents(vcm_shell.mn_node_id(1))


def test_sg_keeps_its_inbound_check_after_a_move(sg):
    lab, configs, rt = sg
    key = ipv6.pton(lab.plan.mobile("mn1").external_home_address)
    rt._follow(key, "2001:db8:77::1")
    assert ipv6.pton("2001:db8:77::1") in rt.owner_sources[key]
    assert ipv6.pton(lab.plan.current_address(lab.plan.mobile("mn1"))) not in rt.owner_sources[key]


def test_vcm_host_takes_control_datagrams_only_from_the_sas_own_mn(tmp_path, monkeypatch):
    lab, configs = lab_configs(tmp_path, addressing="public", vcm="host")
    rt = runtime(configs["vcm"], tmp_path, monkeypatch)
    section = configs["mn1"]["mobility"]["vcm"]
    mn1_sa = TransportPeer(section["address"], section["sa"]["out"], section["sa"]["in"])
    vcm = ipv6.pton(section["address"])
    victim = ipv6.pton(lab.plan.mobile("mn2").home_address)
    forged = mn1_sa.seal(vcm_shell.build_udp(victim, vcm, vcm_shell.VCM_PORT, vcm_shell.VCM_PORT, b"\x01\x02x"))
    rt.on_network(FakeSock([forged]), 0.0)
    assert rt.counters["unprotected_vpn_source"] == 1 and rt.counters["vcm_rx"] == 0
    own = mn1_sa.seal(vcm_shell.build_udp(ipv6.pton(lab.plan.mobile("mn1").home_address), vcm,
                                          vcm_shell.VCM_PORT, vcm_shell.VCM_PORT, b"\x01\x02x"))
    rt.on_network(FakeSock([own]), 0.0)
    assert rt.counters["vcm_rx"] == 1 and rt.counters["unprotected_vpn_source"] == 1
