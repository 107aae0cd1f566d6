"""svpnlab-status renders every role's real status (built by the lab's own configurations, no root)."""
import pytest

from nodeapps import ipv6
from nodeapps.cli import render
from nodeapps.mobility import messages as mh
from shell_harness import ShellHarness, lab_configs

ROLES = [
    ("private-vcm-in-sg", "mn1", ["(mobile-node)", "mobility: away", "route optimisation with mobile nodes",
                                  "mobility message SAs"]),
    ("private-vcm-in-sg", "sg", ["(security-gateway)", "mobility message SAs", "vcm monitor (in-sg)"]),
    ("private-vcm-in-sg", "ha", ["(home-agent)", "mobility message SAs"]),
    ("private-vcm-in-sg", "xha", ["(home-agent)", "mobility message SAs"]),
    ("private-vcm-in-sg", "cn", ["(correspondent)", "security policy"]),
    ("private-vcm-host", "vcm", ["(vcm)", "security associations"]),
    ("private-vcm-host", "sg", ["(security-gateway)", "vcm monitor (host)"]),
    ("public-vcm-in-sg", "mn2", ["(mobile-node)", "mobility: away"]),
    ("private-mobility", "mn1", ["(mobile-node)", "mobility: away", "mobility message SAs"]),
    ("private", "sg", ["(security-gateway)", "security policy"]),
]


@pytest.mark.parametrize("variant, node, sections", ROLES, ids=[f"{v}-{n}" for v, n, _ in ROLES])
def test_every_role_renders_its_tables(variant, node, sections):
    h = ShellHarness.for_node(node, variant)
    try:
        text = render(h.control({"cmd": "status"}))
    finally:
        h.close()
    for section in sections:
        assert section in text, f"{section!r} missing from {node}'s status:\n{text}"


def test_a_registered_binding_shows_in_the_binding_cache_table():
    configs = lab_configs("private-vcm-in-sg")
    h = ShellHarness(configs["sg"])
    try:
        bu_sa = next(sa for sa in h.inbound_sas() if sa["name"] == "mn1->sg mh")
        care_of = next(sa for sa in h.inbound_sas() if sa["name"] == "mn1->sg")["remote"]
        sg_key = configs["mn1"]["mobility"]["sg_home_address"]
        bu = mh.encode_message(mh.BindingUpdate(7, 100, ack=True), ipv6.pton(sg_key),
                               ipv6.pton(h.config.mobility["address"]))
        h.network(h.esp(bu_sa, ipv6.NH_MOBILITY, bu, src=care_of, home_address=sg_key))
        text = render(h.control({"cmd": "status"}))
    finally:
        h.close()
    table = text.split("binding cache")[1].split("\n\n")[0]
    row = next(line for line in table.splitlines() if sg_key in line)
    assert care_of in row and " 7 " in row
