import ipaddress

import pytest

from topologies.addressing import PlanError, make_plan


@pytest.mark.parametrize("addressing", ["private", "public"])
def test_every_mobile_node_home_address_is_inside_the_vpn_and_its_care_of_address_is_not(addressing):
    plan = make_plan(addressing, mobile_nodes=3, attachments=["wlan1", "cell", "wlan2"])
    vpn = [ipaddress.IPv6Network(p) for p in plan.vpn_prefixes]
    for mn in plan.mobile_nodes:
        home = ipaddress.IPv6Address(mn.home_address)
        care_of = ipaddress.IPv6Address(plan.current_address(mn))
        assert home in plan.office_prefix and any(home in p for p in vpn)
        assert not any(care_of in p for p in vpn)
        assert care_of in plan.access[mn.attachment].prefix
    assert ipaddress.IPv6Address(plan.office["fs"]) in plan.office_prefix


def test_private_plan_is_ula_inside_and_gives_each_mn_a_public_external_home_address():
    plan = make_plan("private", 2)
    assert plan.office_prefix.subnet_of(ipaddress.IPv6Network("fc00::/7"))
    for mn in plan.mobile_nodes:
        ext = ipaddress.IPv6Address(mn.external_home_address)
        assert ext in plan.external_home_prefix and ext.is_global is False  # documentation prefix
        assert ext in ipaddress.IPv6Network("2001:db8::/32")


def test_public_plan_has_no_private_addresses_and_no_external_home_address():
    plan = make_plan("public", 2)
    assert plan.office_prefix.subnet_of(ipaddress.IPv6Network("2001:db8::/32"))
    assert all(mn.external_home_address is None for mn in plan.mobile_nodes)
    assert plan.external_home_prefix is None


def test_addresses_are_unique_across_the_plan():
    plan = make_plan("private", 50)
    addresses = list(plan.office.values()) + [plan.sg_public, plan.ir_sg_side]
    for mn in plan.mobile_nodes:
        addresses += [mn.home_address, mn.external_home_address, plan.current_address(mn)]
    assert len(addresses) == len(set(addresses))


def test_mobile_node_inside_the_office_uses_its_home_address():
    plan = make_plan("private", 2, ["office", "cell"])
    assert plan.current_address(plan.mobile("mn1")) == plan.mobile("mn1").home_address


@pytest.mark.parametrize("kwargs, named", [
    ({"addressing": "ipv4"}, "addressing"),
    ({"mobile_nodes": 0}, "mobile_nodes"),
    ({"mobile_nodes": "2"}, "mobile_nodes"),
    ({"mobile_nodes": True}, "mobile_nodes"),
    ({"mobile_nodes": 2, "attachments": ["wlan1"]}, "attachments"),
    ({"mobile_nodes": 2, "attachments": ["wlan1", "mars"]}, "mars"),
])
def test_bad_plan_parameters_give_one_line_errors_naming_them(kwargs, named):
    with pytest.raises(PlanError) as info:
        make_plan(**kwargs)
    message = str(info.value)
    assert named in message and "\n" not in message
