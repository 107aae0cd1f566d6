"""The mesh baseline (``SvpnLab(mesh=True)``): an ESP SA pair between every two mobile nodes from the
start, its outer ends moved by the SG's care-of notices; the shells driven through the harness."""
import struct

import pytest

from nodeapps import ipv6
from nodeapps.mobility import messages as mh
from nodeapps.roles import vcm_shell
from shell_harness import ShellHarness, harness_of, lab_configs
from topologies.lab import LabError, SvpnLab


def _spi(packet: bytes) -> int:
    return struct.unpack_from("!I", packet, 40)[0]


def test_every_pair_holds_sas_from_the_start_with_unique_spis():
    configs = lab_configs("private-mesh")
    mns = [n for n in configs if n.startswith("mn")]
    assert sorted(mns) == ["mn1", "mn2", "mn3"]
    spis = set()
    for name in mns:
        mesh = configs[name]["mobility"]["mesh"]
        assert sorted(p["name"] for p in mesh["peers"]) == sorted(set(mns) - {name})
        for peer in mesh["peers"]:
            assert peer["out"]["mode"] == peer["in"]["mode"] == "tunnel"
            spis |= {peer["out"]["spi"], peer["in"]["spi"]}
    assert len(spis) == 3 * 2   # N (N - 1) SAs, each SPI once (both ends hold the same SA)
    # mn1's SA to mn2 is mn2's SA from mn1: same key, ends swapped
    out = next(p for p in configs["mn1"]["mobility"]["mesh"]["peers"] if p["name"] == "mn2")["out"]
    back = next(p for p in configs["mn2"]["mobility"]["mesh"]["peers"] if p["name"] == "mn1")["in"]
    assert (back["spi"], back["key"], back["local"], back["remote"]) == (out["spi"], out["key"], out["remote"],
                                                                         out["local"])
    # mn3 starts in the office: no care-of address for its peers to send to
    assert next(p for p in configs["mn1"]["mobility"]["mesh"]["peers"] if p["name"] == "mn3").get("care_of") is None
    notices = configs["sg"]["mobility"]["care_of_notices"]
    assert [m["name"] for m in notices["mns"]] == ["mn1", "mn2", "mn3"]
    assert {r["name"] for r in configs["sg"]["spd"]["rules"]} >= {"mn1-notice-out", "mn3-notice-out"}


@pytest.mark.parametrize("options", [{"vcm": "in-sg"}, {"route_optimisation": [("mn1", "mn2")]}, {"mobility": False}])
def test_mesh_excludes_a_vcm_and_route_optimisation(options):
    with pytest.raises(LabError, match="mesh"):
        SvpnLab(**{"mobility": True, "mesh": True, **options})


def _packet_to(h, peer_home: str) -> None:
    home = ipv6.pton(h.config.mobility["address"])
    h.tun(vcm_shell.build_udp(home, ipv6.pton(peer_home), 7000, 7000, b"probe" * 8))


def _notice(h, configs, about: str, care_of):
    """A care-of notice from the SG about MN ``about`` inside the SG tunnel SA to h's node."""
    me = h.config.node
    sg_address = configs["sg"]["mobility"]["care_of_notices"]["sg_address"]
    node_id = configs[about]["mobility"]["mesh"]["node_id"]
    notice = vcm_shell.encode_care_of(node_id, configs[about]["mobility"]["address"], care_of)
    udp = vcm_shell.build_udp(ipv6.pton(sg_address), ipv6.pton(configs[me]["mobility"]["address"]),
                              vcm_shell.CARE_OF_PORT, vcm_shell.CARE_OF_PORT, notice)
    tunnel = next(sa for sa in h.inbound_sas() if sa["name"] == f"sg->{me}")
    h.network(h.esp(tunnel, ipv6.NH_IPV6, udp))


@pytest.fixture
def mesh_mn1():
    """mn1 of a three-MN mesh (mn1 on wlan1, mn2 on wlan2, mn3 in the office) in the shell harness."""
    with harness_of("private-mesh", "mn1") as (h, configs):
        yield configs, h


def test_mn_sends_direct_from_the_first_packet_and_follows_the_notices(mesh_mn1):
    configs, h = mesh_mn1
    peers = {p["name"]: p for p in configs["mn1"]["mobility"]["mesh"]["peers"]}
    sg_public = configs["mn1"]["mobility"]["security_gateway"]
    h.sent.clear()
    _packet_to(h, peers["mn2"]["home"])          # outside: direct, in the mesh SA, to mn2's care-of address
    (packet, address), = h.sent
    assert address[0] == peers["mn2"]["care_of"] and _spi(packet) == peers["mn2"]["out"]["spi"]
    assert h.events("data_first_direct")
    h.sent.clear()
    _packet_to(h, peers["mn3"]["home"])          # inside the office: only the SG reaches it
    (packet, address), = h.sent
    assert address[0] == sg_public
    # mn2 moves: the SG's notice moves both of mn1's SAs with it
    moved_to = peers["mn2"]["care_of"].rsplit(":", 1)[0] + ":77"
    _notice(h, configs, "mn2", moved_to)
    _notice(h, configs, "mn2", moved_to)        # the SG's repeat: nothing more to do
    assert h.counters["care_of_notices"] == 2 and h.counters["direct_sas_moved"] == 2
    assert len(h.events("peer_care_of")) == 1
    h.sent.clear()
    _packet_to(h, peers["mn2"]["home"])
    (packet, address), = h.sent
    assert address[0] == moved_to
    # mn2 goes home: back through the SG until a notice says it is out again
    _notice(h, configs, "mn2", None)
    assert h.events("data_via_sg")
    h.sent.clear()
    _packet_to(h, peers["mn2"]["home"])
    assert [a[0] for _p, a in h.sent] == [sg_public]
    # mn3 comes out: direct to it from then on
    mn3_care_of = peers["mn2"]["care_of"].rsplit(":", 1)[0] + ":33"
    _notice(h, configs, "mn3", mn3_care_of)
    h.sent.clear()
    _packet_to(h, peers["mn3"]["home"])
    (packet, address), = h.sent
    assert address[0] == mn3_care_of and _spi(packet) == peers["mn3"]["out"]["spi"]
    assert h.handler_errors == 0


def test_mn_opens_a_peers_direct_packet_into_its_tun(mesh_mn1):
    configs, h = mesh_mn1
    peer = next(p for p in configs["mn1"]["mobility"]["mesh"]["peers"] if p["name"] == "mn2")
    inner = vcm_shell.build_udp(ipv6.pton(peer["home"]), ipv6.pton(configs["mn1"]["mobility"]["address"]),
                                7000, 7000, b"hello")
    h.network(h.esp(peer["in"], ipv6.NH_IPV6, inner))
    assert h.tun_written() == [inner]


def test_sg_tells_every_bound_mn_where_the_others_are():
    configs = lab_configs("private-mesh")
    h = ShellHarness(configs["sg"])
    try:
        sg_public = ipv6.pton(h.config.mobility["address"])
        for name in ("mn1", "mn2"):
            key = configs[name]["mobility"]["sg_home_address"]
            care_of = next(sa for sa in h.inbound_sas() if sa["name"] == f"{name}->sg")["remote"]
            bu_sa = next(sa for sa in h.inbound_sas() if sa["name"] == f"{name}->sg mh")
            bu = mh.encode_message(mh.BindingUpdate(1, 100, ack=True), ipv6.pton(key), sg_public)
            h.network(h.esp(bu_sa, ipv6.NH_MOBILITY, bu, src=care_of, home_address=key))
        # mn1 alone: nobody to tell; mn2 then: mn1 hears of mn2 and mn2 of mn1
        assert h.counters["care_of_notices"] == 2 and h.handler_errors == 0
        # A notice is one datagram on a lossy radio link: the SG says it again a few times, then stops.
        h.sent.clear()
        for _ in range(40):
            h.timer(0.05)
        repeated = h.counters["care_of_notices"] - 2
        assert repeated >= 2 * 2 and len(h.sent) >= repeated   # each of mn2's repeats tells both
        before = h.counters["care_of_notices"]
        h.timer(5.0)
        assert h.counters["care_of_notices"] == before and h.handler_errors == 0
    finally:
        h.close()
