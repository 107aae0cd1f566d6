"""LabSpec: one frozen value per lab, every field checked once with a one-line error naming it; the keyword
form of SvpnLab makes the same spec; JSON round trip for results' config.json."""
import dataclasses
import json

import pytest

from topologies.addressing import PlanError
from topologies.errors import LabError, LabSpecError
from topologies.lab import SvpnLab
from topologies.spec import LabSpec, field_names, from_options


@pytest.mark.parametrize("options, names", [
    ({"addressing": "hybrid"}, "addressing"),
    ({"mobile_nodes": 0}, "mobile_nodes"),
    ({"mobile_nodes": True}, "mobile_nodes"),
    ({"attachments": ["wlan1"]}, "attachments"),
    ({"attachments": ["moon", "wlan1"]}, "attachment 'moon'"),
    ({"links": "fast"}, "links"),
    ({"mtu": 1000}, "mtu"),
    ({"mtu": "1500"}, "mtu"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"spi_base": 0}, "spi_base"),
    ({"vcm_lifetime": 0}, "vcm_lifetime"),
    ({"event_rate_limit": 0}, "event_rate_limit"),
    ({"plain_service": "yes"}, "plain_service"),
    ({"mobility": 1}, "mobility"),
    ({"correspondent": None}, "correspondent"),
    ({"fault_injection": "no"}, "fault_injection"),
    ({"mesh": 0}, "mesh"),
    ({"announcement_interval": 0}, "announcement_interval"),
    ({"announcement_interval": float("nan")}, "announcement_interval"),
    ({"vcm_inbound_grace": 7200}, "vcm_inbound_grace"),
    ({"mobility_timers": {"initial_bindack_timeout": -1}}, "mobility_timers['initial_bindack_timeout']"),
    ({"mobility_timers": [1]}, "mobility_timers"),
    ({"link_params": "sg-ir"}, "link_params"),
    ({"ra_intervals": (0.01, 0.07)}, "ra_intervals"),
    ({"ra_intervals": (1.0,)}, "ra_intervals"),
    ({"ra_intervals": "fast"}, "ra_intervals"),
    ({"esp_encap": "tcp"}, "esp_encap"),
    ({"vcm": "cloud", "mobility": True}, "vcm 'cloud'"),
    ({"vcm": "in-sg"}, "vcm needs mobility=True"),
    ({"vcm": "host", "mobility": True, "vcm_control": "sideways"}, "vcm_control"),
    ({"vcm_pair": "home-ro"}, "vcm_pair"),
    ({"vcm": "in-sg", "mobility": True, "vcm_pair": "diagonal"}, "vcm_pair"),
    ({"vcm": "in-sg", "mobility": True, "vcm_binding": "psk"}, "vcm_binding"),
    ({"vcm_binding": "static-key"}, "vcm_binding"),
    ({"vcm": "in-sg", "mobility": True, "vcm_pair": "care-of", "vcm_binding": "static-key"}, "vcm_binding"),
    ({"mesh": True}, "mesh"),
    ({"route_optimisation": [("mn1", "mn1")], "mobility": True}, "route_optimisation"),
    ({"route_optimisation": [("mn1", "mn2")]}, "route_optimisation needs mobility=True"),
    ({"colour": "blue"}, "unknown lab option 'colour'"),
])
def test_every_invalid_field_gets_one_line_naming_it(options, names):
    with pytest.raises((LabSpecError, PlanError)) as exc:
        from_options(**options)
    text = str(exc.value)
    assert names in text and "\n" not in text, text
    # the lab's keyword form says the same, as a LabError or the plan's PlanError
    with pytest.raises((LabError, PlanError)) as exc:
        SvpnLab(**options)
    assert str(exc.value) == text


def test_a_spec_is_frozen_and_does_not_follow_the_callers_lists():
    attachments = ["wlan1", "cell"]
    timers = {"initial_bindack_timeout": 0.5}
    spec = LabSpec(attachments=attachments, mobility=True, mobility_timers=timers)
    attachments[0] = "office"
    timers["initial_bindack_timeout"] = 9.0
    assert spec.attachments == ("wlan1", "cell") and spec.mobility_timers == {"initial_bindack_timeout": 0.5}
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.mobile_nodes = 3


def test_replace_checks_the_new_spec_and_names_unknown_fields():
    spec = LabSpec(mobility=True, vcm="in-sg")
    assert spec.replace(addressing="public").addressing == "public"
    assert spec.pair_kind == "home-ro" and spec.replace(vcm_pair="care-of").pair_kind == "care-of"
    with pytest.raises(LabSpecError, match="vcm needs mobility=True"):
        spec.replace(mobility=False)
    with pytest.raises(LabSpecError, match="unknown lab option 'colour'"):
        spec.replace(colour="blue")


def test_json_round_trip_gives_the_same_spec():
    spec = LabSpec(addressing="public", mobile_nodes=3, attachments=("wlan1", "cell", "office"),
                   link_params={"sg-ir": {"delay": "50ms"}}, mobility=True, vcm="host", seed=7,
                   ra_intervals=(1, 3), attacker=("wlan1",))
    data = json.loads(json.dumps(spec.to_dict()))
    assert set(data) == set(field_names())
    assert LabSpec.from_dict(data) == spec
    with pytest.raises(LabSpecError, match="must be a mapping"):
        LabSpec.from_dict([1, 2])


def test_the_lab_takes_a_spec_or_its_keywords_and_keeps_the_spec():
    spec = LabSpec(addressing="public", mobility=True, vcm="in-sg", ra_intervals=(1.0, 3.0))
    by_spec = SvpnLab(spec)
    by_keywords = SvpnLab(addressing="public", mobility=True, vcm="in-sg", ra_intervals=(1, 3))
    assert by_spec.spec == by_keywords.spec == spec
    assert by_spec.vcm_pair == "home-ro" and by_spec.ra_intervals == (1.0, 3.0)
    assert SvpnLab("public").plan.addressing == "public"   # the first positional argument, as before
    with pytest.raises(LabSpecError, match="takes no other lab options"):
        SvpnLab(spec, mobility=False)
    with pytest.raises(LabSpecError, match="takes a LabSpec"):
        SvpnLab({"addressing": "public"})
