import pytest

pytest.importorskip("mininet.topo")
from topologies.addressing import PlanError  # noqa: E402
from topologies.svpn import SvpnTopo, validate_link_params  # noqa: E402


def test_topology_has_the_reference_roles_and_one_link_per_name():
    topo = SvpnTopo(addressing="private", mobile_nodes=3)
    hosts = set(topo.hosts())
    assert {"fs", "d1", "d2", "ha", "vcm", "lap", "sg", "ir", "ar1", "ar2", "ar3", "xha",
            "mn1", "mn2", "mn3"} <= hosts
    assert {"soffice", "swlan1", "swlan2", "scell"} <= set(topo.switches())
    assert len(topo.link_names) == len(topo.links())


def test_public_plan_has_no_external_home_agent():
    assert "xha" not in SvpnTopo(addressing="public").hosts()


def test_link_parameters_are_accepted_per_link():
    topo = SvpnTopo(link_params={"sg-ir": {"delay_ms": 20, "rate_mbit": 100}, "ar3-cell": {"loss_pct": 1.5}})
    assert topo.link_params["sg-ir"] == {"delay_ms": 20, "rate_mbit": 100}
    assert topo.link_params["ar3-cell"] == {"loss_pct": 1.5}
    assert topo.link_params["ir-ar1"] == {}


@pytest.mark.parametrize("params, named", [
    ({"delay_ms": -1}, "delay_ms"),
    ({"loss_pct": 101}, "loss_pct"),
    ({"rate_mbit": 0}, "rate_mbit"),
    ({"delay_ms": "10ms"}, "delay_ms"),
    ({"latency": 3}, "latency"),
])
def test_impossible_link_parameters_are_refused_naming_link_and_parameter(params, named):
    with pytest.raises(PlanError) as info:
        validate_link_params("sg-ir", params)
    assert "sg-ir" in str(info.value) and named in str(info.value)


def test_unknown_link_name_is_refused_with_the_known_names():
    with pytest.raises(PlanError) as info:
        SvpnTopo(link_params={"sg-moon": {"delay_ms": 1}})
    assert "sg-moon" in str(info.value) and "sg-ir" in str(info.value)
