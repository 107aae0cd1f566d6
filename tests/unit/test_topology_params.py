import pytest

pytest.importorskip("mininet.topo")
from topologies.addressing import PlanError  # noqa: E402
from topologies.svpn import SvpnTopo  # noqa: E402


def test_topology_has_the_reference_roles_and_one_link_per_name():
    topo = SvpnTopo(addressing="private", mobile_nodes=3)
    hosts = set(topo.hosts())
    assert {"fs", "d1", "d2", "ha", "vcm", "lap", "sg", "ir", "ar1", "ar2", "ar3", "xha",
            "mn1", "mn2", "mn3"} <= hosts
    assert {"soffice", "swlan1", "swlan2", "scell"} <= set(topo.switches())
    assert len(topo.link_names) == len(topo.links())


def test_public_plan_has_no_external_home_agent():
    assert "xha" not in SvpnTopo(addressing="public").hosts()


def test_every_link_gets_a_profile_and_the_office_is_far_from_the_visited_networks():
    topo = SvpnTopo(addressing="private", mobile_nodes=2)
    assert topo.link_params["sg-ir"]["profile"] == "wan-longhaul"
    assert topo.link_params["ir-ar1"]["profile"] == "wan-metro"
    assert topo.link_params["ar3-cell"]["profile"] == "lte"
    assert topo.link_params["ar1-wlan1"]["profile"] == "wlan"
    assert all(cls_of(topo, name) == "EmulatedLink" for name in topo.link_names)


def cls_of(topo, name):
    a, b = topo.link_names[name]
    for src, dst, info in topo.links(withInfo=True):
        if {src, dst} == {a, b}:
            return info["cls"].__name__
    raise AssertionError(name)


def test_all_ideal_links_on_request():
    topo = SvpnTopo(links="ideal")
    assert {p["profile"] for p in topo.link_params.values()} == {"ideal"}


def test_link_parameters_are_overridden_per_link():
    topo = SvpnTopo(link_params={"sg-ir": {"delay": "20ms", "rate": "100mbit"}, "ar3-cell": {"profile": "3g"}})
    assert topo.link_params["sg-ir"] == {"profile": "wan-longhaul", "delay": "20ms", "rate": "100mbit"}
    assert topo.link_params["ar3-cell"] == {"profile": "3g"}
    assert topo.link_params["ir-ar1"] == {"profile": "wan-metro"}


@pytest.mark.parametrize("params, named", [
    ({"delay": "-1ms"}, "delay"),
    ({"loss": 101}, "loss"),
    ({"profile": "carrier-pigeon"}, "carrier-pigeon"),
    ({"latency": 3}, "latency"),
])
def test_impossible_link_parameters_are_refused_naming_link_and_parameter(params, named):
    with pytest.raises(PlanError) as info:
        SvpnTopo(link_params={"sg-ir": params})
    assert "sg-ir" in str(info.value) and named in str(info.value) and "\n" not in str(info.value)


def test_unknown_link_name_is_refused_with_the_known_names():
    with pytest.raises(PlanError) as info:
        SvpnTopo(link_params={"sg-moon": {"delay": "1ms"}})
    assert "sg-moon" in str(info.value) and "sg-ir" in str(info.value)


def test_bad_link_profile_set_and_mtu_are_refused():
    with pytest.raises(PlanError, match="links"):
        SvpnTopo(links="fast")
    with pytest.raises(PlanError, match="mtu"):
        SvpnTopo(mtu=1000)


def emulator_config(topo, name):
    """The LinkConfig the link's emulator gets on its command line (EmulatedLink passes it as JSON)."""
    from nodeapps.linkemu.params import LinkConfig
    from nodeapps.linkemu.profiles import make_config
    settings = dict(topo.link_params[name])
    config = make_config(**settings)
    return LinkConfig.from_dict(config.to_dict())


def release_times(config, frames=200):
    from nodeapps.linkemu.model import LinkCore
    core = LinkCore(config)
    return [core.receive(0, i * 2_000_000, b"x" * 200) for i in range(frames)]


def test_an_experiment_seed_reaches_every_link_emulator():
    from topologies.svpn import link_seed
    seven = SvpnTopo(seed=7)
    again = SvpnTopo(seed=7)
    other = SvpnTopo(seed=8)
    names = sorted(seven.link_names)
    seeds = {name: emulator_config(seven, name).seed for name in names}
    assert seeds == {name: link_seed(7, name) for name in names}
    assert len(set(seeds.values())) == len(names)          # links draw independently
    assert seeds == {name: emulator_config(again, name).seed for name in names}
    assert all(emulator_config(other, name).seed != seeds[name] for name in names)
    # The same seed gives the same loss and jitter draws on the lossy, jittery WLAN link; another does not.
    wlan = release_times(emulator_config(seven, "ar1-wlan1"))
    assert wlan == release_times(emulator_config(again, "ar1-wlan1"))
    assert wlan != release_times(emulator_config(other, "ar1-wlan1"))
    # The edge keyword passed to EmulatedLink carries it too.
    a, b = seven.link_names["sg-ir"]
    info = next(i for s, d, i in seven.links(withInfo=True) if {s, d} == {a, b})
    assert info["seed"] == seeds["sg-ir"]


def test_a_link_override_seed_wins_and_no_seed_keeps_the_links_own():
    topo = SvpnTopo(seed=7, link_params={"sg-ir": {"seed": 99}})
    assert emulator_config(topo, "sg-ir").seed == 99
    assert "seed" not in SvpnTopo().link_params["sg-ir"]
    with pytest.raises(PlanError, match="seed"):
        SvpnTopo(seed="x")


@pytest.mark.parametrize("kwargs, named", [
    ({"mobility": False}, "mobility=True"),
    ({"vcm": "in-sg"}, "exclude each other"),
    ({"route_optimisation": [("mn1", "mn1")]}, "two different mobile nodes"),
    ({"route_optimisation": [("mn1", "mn3")]}, "two different mobile nodes"),
])
def test_mobile_node_route_optimisation_is_checked_before_anything_starts(kwargs, named):
    from topologies.lab import LabError, SvpnLab
    args = {"addressing": "private", "mobility": True, "route_optimisation": [("mn1", "mn2")], **kwargs}
    with pytest.raises(LabError, match=named) as info:
        SvpnLab(**args)
    assert "\n" not in str(info.value)


def test_mobile_node_route_optimisation_pairs_are_kept():
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="private", mobility=True, mobile_nodes=3, route_optimisation=[["mn1", "mn3"]])
    assert lab.route_optimisation == [("mn1", "mn3")]
    assert SvpnLab(mobility=True).route_optimisation == []


def test_public_plan_pairs_route_optimise_on_their_home_addresses_in_clear(tmp_path):
    """Embodiment 2 without a VCM: the paired MNs' main cores are each other's correspondents, with data in
    clear; an MN in no pair gets no peers."""
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="public", mobility=True, mobile_nodes=3, attachments=["wlan1", "wlan2", "cell"],
                  route_optimisation=[["mn1", "mn3"]])
    lab.run_dir = str(tmp_path)
    configs = lab._make_configs()
    h1, h3 = lab.plan.mobile("mn1").home_address, lab.plan.mobile("mn3").home_address
    assert configs["mn1"]["mobility"]["mobile_peers"] == [{"name": "mn3", "internal": h3, "external": h3}]
    assert configs["mn3"]["mobility"]["mobile_peers"] == [{"name": "mn1", "internal": h1, "external": h1}]
    assert configs["mn1"]["mobility"]["peer_data"] == "clear"
    assert "mobile_peers" not in configs["mn2"]["mobility"] and "xha" not in configs
