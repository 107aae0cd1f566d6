"""SPD: ordered rules, first match (RFC 4301 §4.4.1), VPN default deny, flow cache, run-time changes."""
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeapps.esp import SPD, ConfigError, Rule, Selector
from nodeapps.esp.spd import flow_key
from nodeapps.ipv6 import ParseError, build_header, pton


def pkt(src, dst, proto=17, sport=1000, dport=2000, ext=b"", ext_nh=None):
    if proto in (6, 17):
        upper = struct.pack("!HH", sport, dport) + bytes(16)
    else:
        upper = bytes(8)
    first = ext_nh if ext_nh is not None else proto
    return build_header(pton(src), pton(dst), first, len(ext) + len(upper)) + ext + upper


CONFIG = {
    "vpn_prefixes": ["fd00::/16"],
    "rules": [
        {"name": "ssh-clear", "direction": "out", "src": "fd00:1::/64", "dst": "fd00:2::/64", "proto": "tcp",
         "dport": 22, "action": "bypass"},
        {"name": "web", "direction": "out", "src": "fd00:1::/64", "dst": "fd00:2::/64", "proto": 6,
         "sport": "1024-65535", "dport": [80, 443], "action": "protect", "sa": "fast"},
        {"name": "to-site", "direction": "out", "src": "fd00:1::/64", "dst": "fd00::/16", "action": "protect",
         "sa": "mn1->sg"},
        {"name": "blocked", "direction": "out", "src": "2001:db8:bad::/48", "action": "discard"},
        {"name": "from-site", "direction": "in", "src": "fd00::/16", "dst": "fd00:1::/64", "action": "protect",
         "sa": "sg->mn1"},
    ],
}


@pytest.fixture
def spd():
    return SPD.from_config(CONFIG)


def test_first_match_wins_and_ports(spd):
    assert spd.lookup_packet("out", pkt("fd00:1::5", "fd00:2::9", 6, 5555, 22)).name == "ssh-clear"
    assert spd.lookup_packet("out", pkt("fd00:1::5", "fd00:2::9", 6, 5555, 443)).name == "web"
    assert spd.lookup_packet("out", pkt("fd00:1::5", "fd00:2::9", 6, 5555, 444)).name == "to-site"
    assert spd.lookup_packet("out", pkt("fd00:1::5", "fd00:2::9", 6, 80, 80)).name == "to-site"  # sport < 1024
    assert spd.lookup_packet("out", pkt("fd00:1::5", "fd00:2::9", 17, 5555, 80)).name == "to-site"  # not TCP
    assert spd.lookup_packet("out", pkt("fd00:1::5", "fd00:2::9", 58)).name == "to-site"
    rule = spd.lookup_packet("out", pkt("fd00:1::5", "fd00:2::9", 6, 5555, 80))
    assert (rule.action, rule.sa) == ("protect", "fast")


def test_direction_separates_rules(spd):
    inbound = spd.lookup_packet("in", pkt("fd00:2::9", "fd00:1::5"))
    assert inbound.name == "from-site"
    outbound = spd.lookup_packet("out", pkt("fd00:2::9", "fd00:1::5"))
    assert outbound.name != "from-site"


def test_default_discard_for_vpn_prefixes_bypass_elsewhere(spd):
    for src, dst in [("fd00:9::1", "2001:db8::1"), ("2001:db8::1", "fd00:9::1")]:
        rule = spd.lookup_packet("out", pkt(src, dst))
        assert (rule.action, rule.is_default) == ("discard", True)
        assert spd.lookup_packet("in", pkt(src, dst)).action == "discard"
    rule = spd.lookup_packet("out", pkt("2001:db8::1", "2001:db8::2"))
    assert (rule.action, rule.is_default) == ("bypass", True)
    assert spd.lookup_packet("out", pkt("2001:db8:bad::1", "2001:db8::2")).name == "blocked"


def test_no_vpn_prefixes_means_bypass_by_default():
    spd = SPD()
    assert spd.lookup_packet("in", pkt("fd00::1", "fd00::2")).action == "bypass"


def test_cache_hit_returns_same_rule_and_changes_invalidate(spd):
    packet = pkt("fd00:1::5", "fd00:2::9", 6, 5555, 443)
    assert spd.lookup_packet("out", packet).name == "web"
    assert spd.cache_size() == 1
    assert spd.lookup_packet("out", packet).name == "web"
    assert spd.cache_size() == 1

    spd.insert({"name": "drop-web", "direction": "out", "proto": "tcp", "dport": 443, "action": "discard"}, 0)
    assert spd.cache_size() == 0
    assert spd.lookup_packet("out", packet).name == "drop-web"

    spd.remove("drop-web")
    assert spd.lookup_packet("out", packet).name == "web"

    spd.replace("web", {"name": "web2", "direction": "out", "proto": "tcp", "dport": "443",
                        "action": "protect", "sa": "direct"})
    rule = spd.lookup_packet("out", packet)
    assert (rule.name, rule.sa) == ("web2", "direct")
    assert [r.name for r in spd.rules][:3] == ["ssh-clear", "web2", "to-site"]  # took web's place

    other = pkt("fd00:7::1", "2001:db8::1")
    assert spd.lookup_packet("out", other).action == "discard"
    spd.set_vpn_prefixes([])
    assert spd.lookup_packet("out", other).action == "bypass"


def test_remove_by_config_dict(spd):
    spd.remove(dict(CONFIG["rules"][1]))  # by name
    unnamed = {"direction": "out", "dst": "2001:db8:5::/48", "action": "bypass"}
    spd.insert(unnamed, 0)
    spd.remove(dict(unnamed))  # by contents
    assert [r.name for r in spd.rules] == ["ssh-clear", "to-site", "blocked", "from-site"]
    with pytest.raises(KeyError):
        spd.remove({"direction": "out", "dst": "2001:db8:6::/48", "action": "bypass"})


def test_replace_is_all_or_nothing(spd):
    before = spd.rules
    with pytest.raises(ConfigError):
        spd.replace(["web", "to-site"], [{"direction": "out", "action": "protect"}])  # no sa
    with pytest.raises(KeyError):
        spd.replace(["web", "no-such-rule"], [])
    with pytest.raises(ConfigError, match="used twice"):
        spd.replace("web", [{"name": "to-site", "direction": "out", "action": "bypass"}])
    assert spd.rules == before


def test_replace_several_with_several(spd):
    spd.replace(["to-site", "web"], [{"name": "a", "direction": "out", "action": "bypass"},
                                     {"name": "b", "direction": "out", "action": "discard"}])
    assert [r.name for r in spd.rules] == ["ssh-clear", "a", "b", "blocked", "from-site"]


def test_to_config_round_trip(spd):
    again = SPD.from_config(spd.to_config())
    assert again.to_config() == spd.to_config()
    web = spd.to_config()["rules"][1]
    assert web == {"direction": "out", "src": "fd00:1::/64", "dst": "fd00:2::/64", "proto": 6,
                   "sport": "1024-65535", "dport": "80-443", "action": "protect", "sa": "fast", "name": "web"}


BAD_RULES = [
    ({"direction": "sideways", "action": "bypass"}, "direction"),
    ({"direction": "out", "action": "encrypt"}, "action"),
    ({"direction": "out", "action": "protect"}, "sa"),
    ({"direction": "out", "action": "bypass", "sa": "x"}, "sa"),
    ({"direction": "out", "action": "bypass", "src": "fd00::1/64"}, "src"),
    ({"direction": "out", "action": "bypass", "dst": "10.0.0.0/8"}, "dst"),
    ({"direction": "out", "action": "bypass", "dst": 7}, "dst"),
    ({"direction": "out", "action": "bypass", "proto": "gre"}, "proto"),
    ({"direction": "out", "action": "bypass", "proto": 300}, "proto"),
    ({"direction": "out", "action": "bypass", "proto": "tcp", "dport": "90-80"}, "dport"),
    ({"direction": "out", "action": "bypass", "proto": "tcp", "sport": 70000}, "sport"),
    ({"direction": "out", "action": "bypass", "dport": 80}, "dport"),  # ports need tcp/udp/sctp
    ({"direction": "out", "action": "bypass", "colour": "red"}, "colour"),
    ({"action": "bypass"}, "direction"),
    ("bypass", "mapping"),
]


@pytest.mark.parametrize("rule, field", BAD_RULES)
def test_bad_rules_are_config_errors(rule, field):
    with pytest.raises(ConfigError) as info:
        SPD.from_config({"rules": [{"direction": "out", "action": "bypass"}, rule]})
    assert field in str(info.value)
    assert "rule 1" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("config", [[], {"rules": {}}, {"vpn_prefixes": "fd00::/16"}, {"vpn_prefixes": ["x"]},
                                    {"extra": 1}])
def test_bad_spd_configs(config):
    with pytest.raises(ConfigError):
        SPD.from_config(config)


def test_flow_key_walks_extension_headers():
    hbh = bytes((17, 0)) + bytes(6)
    through_ext = pkt("fd00:1::5", "fd00:2::9", 17, 5555, 53, ext=hbh, ext_nh=0)
    plain = pkt("fd00:1::5", "fd00:2::9", 17, 5555, 53)
    assert flow_key(through_ext)[0] == 17
    assert flow_key(through_ext)[2:] == flow_key(plain)[2:]
    # A later fragment has no ports: only port-less rules can match it (RFC 4301 §7).
    later_fragment = pkt("fd00:1::5", "fd00:2::9", 17, 5555, 53, ext=bytes((17, 0, 0, 8 * 3, 0, 0, 0, 1)),
                         ext_nh=44)
    assert len(flow_key(later_fragment)) == 34
    first_fragment = pkt("fd00:1::5", "fd00:2::9", 17, 5555, 53, ext=bytes((17, 0, 0, 1, 0, 0, 0, 1)), ext_nh=44)
    assert flow_key(first_fragment)[34:] == struct.pack("!HH", 5555, 53)


def test_esp_is_an_upper_layer_for_selectors():
    spd = SPD([Rule("in", Selector(next_header="esp"), "bypass", name="esp")], vpn_prefixes=["::/0"])
    assert spd.lookup_packet("in", pkt("2001:db8::1", "2001:db8::2", 50)).name == "esp"


@pytest.mark.parametrize("packet", [b"", bytes(39), b"\x40" + bytes(50),
                                    pkt("fd00::1", "fd00::2", 0, ext=b"", ext_nh=0)[:41]])
def test_malformed_packets_raise_parse_error(packet):
    with pytest.raises(ParseError):
        SPD().lookup_packet("out", packet)


def test_lookup_by_values_uses_the_same_answers(spd):
    assert spd.lookup("out", pton("fd00:1::5"), pton("fd00:2::9"), 6, 5555, 443).name == "web"
    assert spd.lookup("out", pton("fd00:1::5"), pton("fd00:2::9"), 58).name == "to-site"
    with pytest.raises(ValueError):
        spd.lookup("up", pton("fd00:1::5"), pton("fd00:2::9"), 58)


_VALUES = (st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=30)
           | st.sampled_from(["fd00::/16", "::/0", "tcp", "udp", "80-90", "protect", "bypass", "out", "in", "any"])
           | st.lists(st.integers(-1, 70000), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["direction", "src", "dst", "proto", "sport", "dport", "action", "sa",
                                        "name", "x"]), _VALUES, max_size=9))
def test_any_rule_config_gives_rule_or_config_error(config):
    try:
        SPD.from_config({"vpn_prefixes": ["fd00::/16"], "rules": [config]})
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_digits_int_cannot_read_are_a_config_error_too():
    # "²" is a digit to str.isdigit but not to int()
    with pytest.raises(ConfigError, match="proto"):
        SPD.from_config({"vpn_prefixes": ["fd00::/16"], "rules": [{"direction": "out", "action": "bypass",
                                                                    "proto": "²"}]})
    with pytest.raises(ConfigError, match="sport"):
        SPD.from_config({"vpn_prefixes": ["fd00::/16"], "rules": [{"direction": "out", "action": "bypass",
                                                                    "sport": "1-²"}]})
