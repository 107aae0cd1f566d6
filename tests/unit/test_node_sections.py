"""Typed mobile node sections (nodeapps/runtime/sections.py): every configuration the lab writes loads, and
every unusable field stops the node with one line naming it, before anything is set up."""
import copy
import json
import os
import subprocess
import sys

import pytest

from nodeapps.runtime.config import ConfigError, NodeConfig
from nodeapps.runtime.sections import INBOUND_GRACE_S, MobileNodeSection, MobilityTimers
from topologies.lab import SvpnLab

LABS = {
    "private-vcm-home-ro": dict(addressing="private", vcm="in-sg", vcm_pair="home-ro"),
    "private-vcm-care-of": dict(addressing="private", vcm="in-sg", vcm_pair="care-of"),
    "public-vcm-host-direct": dict(addressing="public", vcm="host", vcm_control="direct"),
    "public-vcm-host": dict(addressing="public", vcm="host"),
    "private-mesh": dict(addressing="private", mesh=True),
    "public-insecure-ro": dict(addressing="public", route_optimisation=[("mn1", "mn2")]),
    "private-correspondent": dict(addressing="private", correspondent=True),
}


def lab_configs(tmp_path, **options):
    lab = SvpnLab(mobile_nodes=2, attachments=["wlan1", "wlan2"], mobility=True, **options)
    lab.run_dir = str(tmp_path)
    return lab._make_configs()


@pytest.mark.parametrize("name", LABS)
def test_every_mobile_node_config_the_lab_writes_loads_typed(tmp_path, name):
    configs = lab_configs(tmp_path, **LABS[name])
    mns = [c for c in configs.values() if c["role"] == "mobile-node"]
    assert len(mns) == 2
    for config in mns:
        section = NodeConfig.from_dict(json.loads(json.dumps(config))).mobile_node   # as the node reads it
        assert section.address == config["mobility"]["address"]
        assert (section.vcm is not None) == ("vcm" in LABS[name]) and (section.mesh is not None) == ("mesh" in LABS[name])
        if section.vcm is not None:
            assert section.vcm.inbound_grace == INBOUND_GRACE_S and section.vcm.names[11] == "mn1"
        if section.external is not None:
            assert section.external.address == config["mobility"]["external"]["address"]
    others = [c for c in configs.values() if c["role"] != "mobile-node"]
    assert all(NodeConfig.from_dict(c).mobile_node is None for c in others)


def test_timers_default_once_and_the_lab_passes_its_own(tmp_path):
    assert MobilityTimers() == MobilityTimers.from_dict(None)
    configs = lab_configs(tmp_path, addressing="public", mobility_timers={"home_lifetime": 60})
    section = NodeConfig.from_dict(configs["mn1"]).mobile_node
    assert section.timers == MobilityTimers(home_lifetime=60.0)


def _set(path, value):
    def mutate(section):
        *parents, last = path
        target = section
        for key in parents:
            target = target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return mutate


BAD = [
    (("interface",), 7, "mobility.interface"),
    (("address",), "not-an-address", "mobility.address"),
    (("address",), KeyError, "mobility.address is missing"),
    (("home_prefix",), "fdc0::/300", "mobility.home_prefix"),
    (("host_id",), -1, "mobility.host_id"),
    (("host_id",), True, "mobility.host_id"),
    (("security_gateway",), None, "mobility.security_gateway"),
    (("home_agent",), 5, "mobility.home_agent"),
    (("vpn_prefixes",), [], "mobility.vpn_prefixes"),
    (("vpn_prefixes",), "fdc0::/48", "mobility.vpn_prefixes"),
    (("tunnel_sas",), ["only-one"], "mobility.tunnel_sas"),
    (("timers",), {"home_lifetime": 0}, "mobility.timers.home_lifetime"),
    (("timers",), {"coffee_break": 5}, "mobility.timers.coffee_break"),
    (("announcement_lifetime",), "long", "mobility.announcement_lifetime"),
    (("peers",), [{"address": "x", "out": {}, "in": {}}], "mobility.peers[0].address"),
    (("peers",), [{"address": "2001:db8::1"}], "mobility.peers[0]"),
    (("peer_data",), "gossip", "mobility.peer_data"),
    (("mobile_peers",), [{"internal": "fdc0::1"}], "mobility.mobile_peers[0].external is missing"),
    (("vcm", "node_id"), 0, "mobility.vcm.node_id"),
    (("vcm", "address"), "vcm", "mobility.vcm.address"),
    (("vcm", "variant"), "cloud", "mobility.vcm.variant"),
    (("vcm", "pair"), "carrier-pigeon", "mobility.vcm.pair"),
    (("vcm", "inbound_grace"), -1, "mobility.vcm.inbound_grace"),
    (("vcm", "names"), {"mn1": "mn1"}, "mobility.vcm.names"),
    (("vcm", "extra"), 1, "mobility.vcm.extra"),
    (("external", "home_agent"), "2001:db8::zz", "mobility.external.home_agent"),
    (("external", "correspondents"), ["nowhere"], "mobility.external.correspondents[0]"),
    (("external", "tunnel_peer"), {"address": "2001:db8::1", "out": {}}, "mobility.external.tunnel_peer.in"),
    (("surprise",), 1, "mobility.surprise"),
]


@pytest.mark.parametrize("path, value, named", BAD, ids=[".".join(b[0]) + f"={b[1]!r}"[:30] for b in BAD])
def test_each_unusable_mobile_node_field_is_named_in_one_line(tmp_path, path, value, named):
    config = lab_configs(tmp_path, addressing="private", vcm="in-sg", vcm_pair="home-ro")["mn1"]
    bad = copy.deepcopy(config)
    _set(path, value)(bad["mobility"])
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_dict(bad)
    assert named in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_vcm_and_mesh_exclude_each_other_and_a_vcm_host_needs_its_sa_pair(tmp_path):
    config = lab_configs(tmp_path, addressing="public", vcm="host")["mn1"]["mobility"]
    with pytest.raises(Exception, match="mobility.vcm.sa is missing"):
        MobileNodeSection.from_dict({**config, "vcm": {k: v for k, v in config["vcm"].items() if k != "sa"}})
    with pytest.raises(Exception, match="exclude each other"):
        MobileNodeSection.from_dict({**config, "mesh": {"sg_address": "2001:db8::1", "peers": []}})


def test_a_node_given_a_broken_mobile_node_section_exits_2_with_one_line_and_no_traceback(tmp_path):
    config = lab_configs(tmp_path, addressing="public", vcm="in-sg")["mn1"]
    config["mobility"]["home_agent"] = 5
    path = tmp_path / "mn1.json"
    path.write_text(json.dumps(config))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-m", "nodeapps.node", str(path)], capture_output=True, text=True,
                            cwd=root, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "svpnlab-node: config field mobility.home_agent holds 5, not an IPv6 address"]
