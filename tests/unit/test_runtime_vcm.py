"""VCM glue of the node shells: UDP framing (scapy as oracle), care-of notices, logged control messages."""
import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6

from nodeapps import ipv6
from nodeapps.cli import render
from nodeapps.roles import vcm_shell
from nodeapps.vcm import protocol as p

HOME = "2001:db8:0:1::a:1"
VCM = "2001:db8:0:1::1"


def test_udp_datagram_is_what_scapy_builds():
    payload = b"\x01\x03control"
    ours = vcm_shell.build_udp(ipv6.pton(VCM), ipv6.pton(HOME), 7420, 7420, payload)
    oracle = bytes(IPv6(src=VCM, dst=HOME, hlim=64) / UDP(sport=7420, dport=7420) / payload)
    assert ours == oracle
    assert vcm_shell.parse_udp(ours) == (ipv6.pton(VCM), ipv6.pton(HOME), 7420, 7420, payload)


@pytest.mark.parametrize("packet", [
    b"",
    bytes(IPv6(src=VCM, dst=HOME) / (b"x" * 20)),                       # not UDP
    bytes(IPv6(src=VCM, dst=HOME) / UDP(sport=1, dport=2, len=400) / b"x"),   # length past the end
    bytes(IPv6(src=VCM, dst=HOME) / UDP(sport=1, dport=2, len=3)),          # shorter than its header
])
def test_parse_udp_refuses_what_is_not_one_udp_datagram(packet):
    assert vcm_shell.parse_udp(packet) is None


def test_innermost_addresses_look_inside_the_home_agent_tunnel():
    inner = IPv6(src="2001:db8::a:1", dst="2001:db8::a:2") / UDP()
    tunnelled = bytes(IPv6(src="2001:db8:a::1", dst="2001:db8:1::2") / inner)
    assert vcm_shell.innermost_addresses(tunnelled) == (ipv6.pton("2001:db8::a:1"), ipv6.pton("2001:db8::a:2"))
    assert vcm_shell.innermost_addresses(bytes(inner)) == (ipv6.pton("2001:db8::a:1"), ipv6.pton("2001:db8::a:2"))


def test_care_of_notice_round_trip_and_absent_address():
    data = vcm_shell.encode_care_of(11, HOME, "2001:db8:a::a:1")
    assert vcm_shell.decode_care_of(data) == (11, HOME, "2001:db8:a::a:1")
    assert vcm_shell.decode_care_of(vcm_shell.encode_care_of(12, HOME, None)) == (12, HOME, None)


@pytest.mark.parametrize("data", [b"", b"SVCO" + bytes(36), b"XXXX" + bytes(37)])
def test_malformed_care_of_notice_is_one_parse_error(data):
    with pytest.raises(vcm_shell.CareOfParseError):
        vcm_shell.decode_care_of(data)


def control_message(msg_type: int) -> bytes:
    return bytes([1, msg_type]) + bytes(30)


@pytest.mark.parametrize("msg_type, sender, receiver, name", [
    (p.REPORT, "sg", "vcm", "report_202"), (p.REPORT_ACK, "vcm", "sg", "ack_204"),
    (p.KEYS, "vcm", "mn2", "keys_206"), (p.KEYS, "vcm", "mn1", "keys_210"),
    (p.KEYS_ACK, "mn2", "vcm", "ack_208"), (p.KEYS_ACK, "mn1", "vcm", "ack_212"),
    (p.PEER_READY, "vcm", "mn1", "ack_208"), (p.PEER_READY, "vcm", "mn2", "ack_212"),
    (p.PEER_READY_ACK, "mn1", "vcm", "peer_ready_ack"), (p.FALLBACK, "vcm", "mn1", "fallback"),
    (p.FALLBACK_ACK, "mn2", "vcm", "fallback_ack"), (p.KEYS, "vcm", "mn3", "keys"),
])
def test_a_logged_control_message_reads_as_its_sequence_chart_step(msg_type, sender, receiver, name):
    from experiments.records import signalling_message
    event = {"event": "vcm_message", "node": sender, "peer": receiver,
             **vcm_shell.message_fields(control_message(msg_type))}
    assert event["type"] == p.TYPE_NAMES[msg_type]
    assert signalling_message(event) == {"kind": name, "src": sender, "dst": receiver, "bytes": 32}
    assert signalling_message({**event, "received": True}) is None   # the sender's copy counts


def test_every_control_message_type_has_a_chart_step():
    from experiments.records import MESSAGE_KINDS, message_event
    for name in p.TYPE_NAMES.values():
        for sender, receiver in (("vcm", "mn1"), ("mn2", "vcm"), ("sg", "vcm")):
            assert message_event(name, sender, receiver) in MESSAGE_KINDS


def test_the_sg_logs_a_received_control_message_in_neutral_terms():
    from shell_harness import ShellHarness
    h = ShellHarness.for_node("sg", "private-vcm-in-sg")
    try:
        sa = next(sa for sa in h.inbound_sas() if sa["name"] == "mn1->sg")
        home = h.runtime.vcm_mns[vcm_shell.mn_node_id(1)]["home"]
        inner = vcm_shell.build_udp(ipv6.pton(home), h.runtime.vcm_address_bytes, vcm_shell.VCM_PORT,
                                    vcm_shell.VCM_PORT, control_message(p.KEYS_ACK))
        h.network(h.esp(sa, ipv6.NH_IPV6, inner))
        logged = h.events("vcm_message")
    finally:
        h.close()
    assert h.counters["vcm_rx"] == 1
    assert [{k: e[k] for k in ("node", "peer", "type", "bytes", "received")} for e in logged] == [
        {"node": "mn1", "peer": "vcm", "type": "KEYS_ACK", "bytes": 32, "received": True}]


def test_the_vcm_host_logs_what_it_sends_in_neutral_terms():
    from shell_harness import ShellHarness
    h = ShellHarness.for_node("vcm", "private-vcm-host")
    try:
        rt = h.runtime
        sg_path = next(path for path, name in rt.path_names.items() if name == "sg")
        rt.manager.datagrams_to_send = lambda now: [(control_message(p.REPORT_ACK), sg_path)]
        rt._flush(0.0)
        logged = h.events("vcm_message")
        sent = h.counters["vcm_tx"]
    finally:
        h.close()
    assert sent == 1
    assert [{k: e[k] for k in ("node", "peer", "type", "bytes")} for e in logged] == [
        {"node": "vcm", "peer": "sg", "type": "REPORT_ACK", "bytes": 32}]


def test_status_renders_the_vcm_path_table():
    status = {"node": "mn1", "role": "mobile-node", "pid": 1, "uptime_s": 1.0, "addresses": [],
              "ipsec": {"sas": [], "spd": {"rules": []}, "counters": {}}, "counters": {},
              "vcm": {"paths": [{"peer": "mn2", "peer_home": HOME, "path": "direct", "since": 1700000000.0,
                                 "session": 1, "generation": 1, "spi_out": 4660, "spi_in": 22136,
                                 "pending": False}]}}
    text = render(status)
    assert "vcm paths" in text
    line = next(line for line in text.splitlines() if line.startswith("mn2"))
    assert "direct" in line and "0x00001234" in line and "0x00005678" in line


def test_lab_configs_tie_each_mns_control_datagrams_to_its_own_sa(tmp_path):
    from nodeapps.esp.spd import SPD
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="private", mobile_nodes=2, attachments=["wlan1", "wlan2"], mobility=True, vcm="in-sg")
    lab.run_dir = str(tmp_path)
    configs = lab._make_configs()
    sg_vcm = configs["sg"]["mobility"]["vcm"]
    assert [m["node_id"] for m in sg_vcm["mns"]] == [11, 12]
    spd = SPD.from_config(configs["sg"]["spd"])
    vcm = ipv6.pton(sg_vcm["address"])
    for mn in ("mn1", "mn2"):
        home = ipv6.pton(lab.plan.mobile(mn).home_address)
        assert spd.lookup("in", home, vcm, 17).sa == f"{mn}->sg"
        assert spd.lookup("out", vcm, home, 17).sa == f"sg->{mn}"
        section = configs[mn]["mobility"]["vcm"]
        assert section["internal"] == lab.plan.mobile(mn).home_address   # embodiment 1: inner = internal
        assert section["external"] == lab.plan.mobile(mn).external_home_address
        assert section["inbound_grace"] == 45.0
    other = ipv6.pton(lab.plan.mobile("mn2").home_address)
    assert spd.lookup("in", other, vcm, 17).sa != "mn1->sg"


@pytest.mark.parametrize("kwargs, message", [
    ({"vcm": "in-sg"}, r"vcm needs mobility=True"),
    ({"vcm": "separate", "mobility": True}, "'in-sg' .* or 'host'"),
    ({"vcm": "host", "mobility": True, "vcm_control": "sideways"}, "vcm_control 'sideways'"),
    ({"vcm": "host", "mobility": True, "addressing": "private", "vcm_control": "direct"},
     "needs vcm='host' and addressing='public'"),
    ({"vcm": "in-sg", "mobility": True, "addressing": "public", "vcm_control": "direct"},
     "needs vcm='host' and addressing='public'"),
    ({"vcm": "in-sg", "mobility": True, "vcm_inbound_grace": 0}, "vcm_inbound_grace must be seconds, more than 0"),
])
def test_lab_refuses_unsupported_vcm_settings(kwargs, message):
    from topologies.lab import LabError, SvpnLab
    with pytest.raises(LabError, match=message):
        SvpnLab(**kwargs)


def test_lab_configs_for_a_separate_vcm_host_mirror_the_sa_pairs_and_keep_mn_keys_from_the_sg(tmp_path):
    from nodeapps.esp.spd import SPD
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "wlan2"], mobility=True, vcm="host")
    lab.run_dir = str(tmp_path)
    configs = lab._make_configs()
    vcm = configs["vcm"]["mobility"]["vcm"]
    assert configs["vcm"]["role"] == "vcm"
    sg_side = configs["sg"]["mobility"]["vcm"]["sa"]
    assert (sg_side["out"]["spi"], sg_side["out"]["key"]) == (vcm["sg_sa"]["in"]["spi"], vcm["sg_sa"]["in"]["key"])
    assert (sg_side["in"]["spi"], sg_side["in"]["key"]) == (vcm["sg_sa"]["out"]["spi"], vcm["sg_sa"]["out"]["key"])
    for entry in vcm["mns"]:
        mn_side = configs[entry["name"]]["mobility"]["vcm"]["sa"]
        assert mn_side["out"]["key"] == entry["sa"]["in"]["key"] and mn_side["in"]["key"] == entry["sa"]["out"]["key"]
        assert mn_side["out"]["remote"] == lab.plan.office["vcm"]
    assert all("sa" not in entry for entry in configs["sg"]["mobility"]["vcm"]["mns"])
    # The SG lets each MN's nested ESP to the VCM pass only on that MN's tunnel SA.
    spd = SPD.from_config(configs["sg"]["spd"])
    home = ipv6.pton(lab.plan.mobile("mn2").home_address)
    assert spd.lookup("in", home, ipv6.pton(lab.plan.office["vcm"]), 50).sa == "mn2->sg"


def test_direct_mn_vcm_sas_are_tunnel_pairs_from_the_care_of_address_and_the_sg_lets_only_their_esp_through(tmp_path):
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "cell"], mobility=True, vcm="host",
                  vcm_control="direct")
    lab.run_dir = str(tmp_path)
    configs = lab._make_configs()
    vcm_address = lab.plan.office["vcm"]
    for entry in configs["vcm"]["mobility"]["vcm"]["mns"]:
        section = configs[entry["name"]]["mobility"]["vcm"]
        assert section["control"] == entry["control"] == "direct"
        coa = lab.plan.current_address(lab.plan.mobile(entry["name"]))
        assert coa != lab.plan.mobile(entry["name"]).home_address
        for side, local, remote in ((section["sa"], coa, vcm_address), (entry["sa"], vcm_address, coa)):
            assert {side["out"]["mode"], side["in"]["mode"]} == {"tunnel"}
            assert (side["out"]["local"], side["out"]["remote"]) == (local, remote)
        assert section["sa"]["out"]["spi"] == entry["sa"]["in"]["spi"]
    rules = lab._vcm_direct_forwarding()
    assert f"ip6 daddr {vcm_address} meta l4proto esp" in rules and f"ip6 saddr {vcm_address} meta l4proto esp" in rules
    encapsulated = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "cell"], mobility=True,
                           vcm="host")
    assert encapsulated._vcm_direct_forwarding() == ""


@pytest.mark.parametrize("kwargs, named", [
    ({"vcm_pair": "tunnel"}, "vcm_pair 'tunnel'"),
    ({"vcm_pair": "home-ro", "vcm": None}, "needs a vcm"),
    ({"vcm_pair": "care-of", "vcm": None, "addressing": "public"}, "needs a vcm"),
])
def test_vcm_pair_is_checked_before_anything_starts(kwargs, named):
    from topologies.lab import LabError, SvpnLab
    with pytest.raises(LabError, match=named) as info:
        SvpnLab(**{"addressing": "private", "mobility": True, "vcm": "in-sg", **kwargs})
    assert "\n" not in str(info.value)


def test_private_plan_vcm_pair_rides_on_the_mn_to_mn_binding_and_public_keeps_the_care_of_tunnel(tmp_path):
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="private", mobile_nodes=3, attachments=["wlan1", "wlan2", "cell"], mobility=True,
                  vcm="in-sg")
    lab.run_dir = str(tmp_path)
    configs = lab._make_configs()
    assert lab.vcm_pair == "home-ro" and "xha" in configs
    for name in ("mn1", "mn2", "mn3"):
        mobility = configs[name]["mobility"]
        assert mobility["vcm"]["pair"] == "home-ro"
        external = mobility["external"]
        # Every other MN may become a VCM peer; data to it only ever in the VCM's SA, RR started by KEYS.
        assert external["peer_data"] == "vcm-esp"
        assert {p["name"] for p in external["mobile_peers"]} == {"mn1", "mn2", "mn3"} - {name}
    # Room for RH2 + HAO (48) instead of the reverse tunnel (40) below the ESP tunnel overhead.
    care_of = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "wlan2"], mobility=True,
                      vcm="in-sg", vcm_pair="care-of")
    assert care_of.vcm_pair == "care-of" and lab.tun_mtu == care_of.tun_mtu - 8


def test_public_plan_vcm_pair_rides_on_route_optimisation_of_the_home_addresses_by_default(tmp_path):
    """Embodiment 2: no external HA; each MN's main core route-optimises with every other MN's home address,
    the office HA is marked as reaching MNs through the SG, and the SG sends care-of notices only for the
    care-of pair."""
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="public", mobile_nodes=3, attachments=["wlan1", "wlan2", "cell"], mobility=True,
                  vcm="in-sg")
    lab.run_dir = str(tmp_path)
    configs = lab._make_configs()
    assert lab.vcm_pair == "home-ro" and "xha" not in configs
    homes = {name: lab.plan.mobile(name).home_address for name in ("mn1", "mn2", "mn3")}
    for name in homes:
        mobility = configs[name]["mobility"]
        assert mobility["vcm"]["pair"] == "home-ro" and "external" not in mobility
        assert mobility["peer_data"] == "vcm-esp"
        assert {(p["name"], p["internal"], p["external"]) for p in mobility["mobile_peers"]} == \
            {(other, homes[other], homes[other]) for other in homes if other != name}
    assert configs["ha"]["mobility"]["behind_security_gateway"] is True
    assert configs["sg"]["mobility"]["vcm"]["care_of_notices"] is False
    care_of = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "wlan2"], mobility=True,
                      vcm="in-sg", vcm_pair="care-of")
    care_of.run_dir = str(tmp_path)
    configs = care_of._make_configs()
    assert "mobile_peers" not in configs["mn1"]["mobility"]
    assert configs["sg"]["mobility"]["vcm"]["care_of_notices"] is True


def test_a_new_process_channel_starts_above_the_last_counter_and_at_a_random_transaction_id():
    import time as _time
    from nodeapps.roles.vcm_shell import new_process_channel
    from nodeapps.vcm import protocol as proto
    before = int(_time.time() * 1000)
    starts = [new_process_channel() for _ in range(20)]
    assert all(before <= proto.process_start(s["initial_counter"]) <= before + 2000 for s in starts)
    assert all(1 <= s["initial_txid"] <= 0xFFFFFFFF for s in starts)
    assert len({s["initial_txid"] for s in starts}) > 15   # a peer's cache of the old process's txids misses


def test_a_process_restarted_within_the_second_it_started_in_is_a_later_process(monkeypatch):
    """Counters start at the start millisecond: a node restarted 0.4 s after it started (in the same second)
    is told apart by its peers (the VCM falls back the pairs the earlier process held) and its messages are
    not replays of the earlier process's."""
    from nodeapps.roles import vcm_shell
    from nodeapps.vcm import protocol as proto
    clock = iter([1000.1, 1000.5])
    monkeypatch.setattr(vcm_shell.time, "time", lambda: next(clock))
    first, second = vcm_shell.new_process_channel(), vcm_shell.new_process_channel()
    assert proto.process_start(first["initial_counter"]) < proto.process_start(second["initial_counter"])
    assert second["initial_counter"] > first["initial_counter"] + 100_000   # the earlier process's messages
