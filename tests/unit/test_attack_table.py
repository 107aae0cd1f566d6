"""The attack suite's data side without a lab: attack files (every malformed entry gets one line naming the
entry and the field), the shipped attack files, the judging helpers, the attacker's place checks and frame
files, and the packets the builders make (parsed back by the project's own parsers)."""
import glob
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))   # the scripts import _venv as a sibling

from experiments.attack_kinds import KINDS, SCHEMAS, _exthdr_packet, _spread_sequences
from experiments.attack_table import AttackFileError, load, parse_text
from experiments.attacks import resolve_node, summary_table, value_at
from topologies.addressing import PlanError
from topologies.attack_sender import read_frames, write_frames
from topologies.svpn import attacker_address, check_attacker_places
from topologies.addressing import make_plan
GOOD = '''
[[attack]]
name = "esp-replay"
from = "wlan1"
kind = "esp_replay"
params = { target = "sg" }
expect = "dropped as a replay"
rise = { "sg:ipsec.counters.replay" = 1 }
traffic = 0.8
'''


def parse(text):
    return parse_text(text, "t.toml", SCHEMAS)


def test_a_good_entry_parses_with_its_defaults():
    (attack,) = parse(GOOD)
    assert attack.name == "esp-replay" and attack.source == "wlan1" and attack.params == {"target": "sg"}
    assert attack.rise == {"sg:ipsec.counters.replay": 1} and attack.traffic == 0.8
    assert attack.applies("public", "host") and attack.compromised is None


def test_the_shipped_attack_files_load_and_cover_issue_11():
    paths = sorted(glob.glob(os.path.join(ROOT, "experiments", "attacks", "*.toml")))
    attacks = load(paths, SCHEMAS)
    kinds = {a.kind for a in attacks}
    assert set(KINDS) - {"control_junk"} <= kinds | {"control_junk"}
    assert {"esp_replay", "esp_tamper", "esp_unknown_spi", "esp_out_of_window", "clear_exthdr", "bu_for_other",
            "bu_bad_authenticator", "spoof_decap", "vcm_control", "router_advertisement", "office_announcement",
            "inner_source", "junk"} <= kinds
    names = {a.name for a in attacks}
    assert {"ra-flood", "off-link-ra", "rogue-ra-office", "bu-for-other-at-ha", "bu-for-other-at-sg"} <= names
    # Every attack judges something beyond "no node stopped".
    assert all(a.rise or a.unchanged or a.bindings or a.traffic is not None for a in attacks)


@pytest.mark.parametrize("change, field", [
    (('name = "esp-replay"', 'name = "Bad Name"'), "name"),
    (('from = "wlan1"', 'from = "moon"'), "from"),
    (('from = "wlan1"', 'from = "compromised:mn9"'), "from"),
    (('kind = "esp_replay"', 'kind = "teleport"'), "kind"),
    (('params = { target = "sg" }', 'params = { target = 3 }'), "params.target"),
    (('params = { target = "sg" }', 'params = { aim = "sg" }'), "params.aim"),
    (('params = { target = "sg" }', 'params = "sg"'), "params"),
    (('expect = "dropped as a replay"', 'expect = ""'), "expect"),
    (('expect = "dropped as a replay"', 'expect = "a | b"'), "expect"),
    (('rise = { "sg:ipsec.counters.replay" = 1 }', 'rise = { "sg:ipsec.counters.replay" = 0 }'), "rise"),
    (('rise = { "sg:ipsec.counters.replay" = 1 }', 'rise = { "moon:x" = 1 }'), "rise"),
    (('rise = { "sg:ipsec.counters.replay" = 1 }', 'rise = { "sg" = 1 }'), "rise"),
    (('rise = { "sg:ipsec.counters.replay" = 1 }', 'rise = { "sg:a..b" = 1 }'), "rise"),
    (('traffic = 0.8', 'traffic = 1.5'), "traffic"),
    (('traffic = 0.8', 'traffic = true'), "traffic"),
    (('traffic = 0.8', 'traffic = 0.8\nbindings = ["ha:mn7"]'), "bindings"),
    (('traffic = 0.8', 'traffic = 0.8\nbindings = ["fs:mn1"]'), "bindings"),
    (('traffic = 0.8', 'traffic = 0.8\nunchanged = ["mn1"]'), "unchanged"),
    (('traffic = 0.8', 'traffic = 0.8\nplans = ["both"]'), "plans"),
    (('traffic = 0.8', 'traffic = 0.8\nvcm = []'), "vcm"),
    (('traffic = 0.8', 'traffic = 0.8\ncolour = "red"'), "colour"),
])
def test_every_malformed_field_gets_one_line_naming_entry_and_field(change, field):
    old, new = change
    with pytest.raises(AttackFileError) as info:
        parse(GOOD.replace(old, new))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("t.toml: attack 1")
    assert f": {field}:" in message, message


def test_missing_fields_and_empty_judgement_are_named():
    with pytest.raises(AttackFileError, match=r"attack 1 \(esp-replay\): expect: missing"):
        parse(GOOD.replace('expect = "dropped as a replay"\n', ""))
    with pytest.raises(AttackFileError, match=r"params.victim: missing \(needed by bu_for_other\)"):
        parse(GOOD.replace('kind = "esp_replay"', 'kind = "bu_for_other"').replace('params = { target = "sg" }',
                                                                                 "params = {}"))
    bare = GOOD.replace('rise = { "sg:ipsec.counters.replay" = 1 }\n', "").replace("traffic = 0.8\n", "")
    with pytest.raises(AttackFileError, match="at least one of"):
        parse(bare)


def test_file_level_errors_are_one_line():
    for text, pattern in [("[[attack]\n", "not valid TOML"), ("x = 1\n", "x: unknown top-level key"),
                          ("", "no \\[\\[attack\\]\\] tables"), ("attack = 3\n", "no \\[\\[attack\\]\\] tables"),
                          ("[[attack]]\nname = 3\n", "attack 1: from: missing")]:
        with pytest.raises(AttackFileError, match=pattern) as info:
            parse(text)
        assert "\n" not in str(info.value)
    with pytest.raises(AttackFileError, match="t.toml: attack 2: name: 'the second' must be"):
        parse_text(GOOD + GOOD.replace('name = "esp-replay"', 'name = "the second"'), "t.toml", SCHEMAS)


def test_duplicate_names_across_files_and_unreadable_files(tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text(GOOD)
    b.write_text(GOOD)
    with pytest.raises(AttackFileError, match="attack esp-replay: name: also used in"):
        load([str(a), str(b)], SCHEMAS)
    with pytest.raises(AttackFileError, match="No such file"):
        load([str(tmp_path / "missing.toml")], SCHEMAS)
    b.write_bytes(b"\xff\xfe")
    with pytest.raises(AttackFileError, match="not UTF-8"):
        load([str(b)], SCHEMAS)


def test_value_at_follows_paths_and_sums_bare_counter_names():
    status = {"counters": {"handler_errors": 0, "clear_dropped": 2}, "ipsec": {"counters": {"replay": 5}},
              "mobility": {"counters": {"clear_dropped": 1}, "location": "external"},
              "vcm": {"manager_stats": {"wrong-path": 3}}}
    assert value_at(status, "ipsec.counters.replay") == 5
    assert value_at(status, "clear_dropped") == 3
    assert value_at(status, "wrong-path") == 3
    assert value_at(status, "mobility.location") == "external"
    assert value_at(status, "missing") is None and value_at(status, "a.b") is None and value_at(None, "x") is None
    assert resolve_node("@vcm", "in-sg") == "sg" and resolve_node("@vcm", "host") == "vcm"
    assert resolve_node("mn1", "host") == "mn1"


def test_summary_table_has_one_row_per_attack_and_names_failing_configurations():
    rows = [{"plan": p, "vcm": v, "attack": "esp-replay", "from": "wlan1", "expected": "dropped",
             "observed": "sg replay +9", "result": "PASS" if (p, v) != ("public", "host") else "FAIL",
             "failures": "sg replay +0" if (p, v) == ("public", "host") else ""}
            for p in ("private", "public") for v in ("in-sg", "host")]
    table = summary_table(rows).splitlines()
    assert table[0] == "| attack | from | expected | observed | result |"
    assert table[2] == "| esp-replay | wlan1 | dropped | sg replay +9 | pass 3/4 (fail: public/host) |"
    assert len(table) == 3


def test_attacker_places_are_checked_in_one_line():
    assert check_attacker_places(["wlan1", "core"]) == ["wlan1", "core"]
    assert check_attacker_places("cell+core") == ["cell", "core"]
    assert check_attacker_places(None) == []
    for bad, pattern in [(["moon"], "attacker place 'moon' is not one of"), (["core", "core"], "named twice"),
                         ([], "one or more places"), (3, "one or more places")]:
        with pytest.raises(PlanError, match=pattern):
            check_attacker_places(bad)
    plan = make_plan("private")
    assert attacker_address(plan, "wlan1") == "2001:db8:21::bad"
    assert attacker_address(plan, "core") == "2001:db8:0:ba::2"


def test_frame_files_round_trip_and_truncation_is_reported(tmp_path):
    path = str(tmp_path / "frames.bin")
    frames = [b"\x01" * 60, b"", b"\x02" * 1514]
    write_frames(path, frames)
    assert read_frames(path) == frames
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x00\x10abc")
    with pytest.raises(ValueError, match="truncated frame"):
        read_frames(path)


def test_extension_header_packets_parse_with_our_own_parsers():
    from nodeapps import ipv6
    from nodeapps.mobility import messages as m
    home = "2001:db8:e0::a:1"
    for variant in ("dstopts_padn_udp", "hao_data", "rh2_data", "bu_clear"):
        packet = bytes(_exthdr_packet(variant, "2001:db8:0:ba::2", "2001:db8:0:1::1", home, 7))
        nh, src, dst, length = ipv6.parse_header(packet)
        assert length + 40 == len(packet) and nh == (43 if variant == "rh2_data" else 60)
    bu = bytes(_exthdr_packet("bu_clear", "2001:db8:0:ba::2", "2001:db8:0:1::1", home, 7))
    parsed = m.parse_mobility_packet(bu)
    assert isinstance(parsed.message, m.BindingUpdate)
    assert parsed.message.home_registration and parsed.message.ack and parsed.message.sequence == 7
    assert parsed.home_address == ipv6.pton(home)


def test_spread_sequences_always_include_two_newer_than_any_last_one():
    def newer(a, b):   # RFC 6275 §9.5.1: a is greater than b modulo 2^16
        return 0 < (a - b) % 65536 < 32768
    for last in (0, 1, 0x3FFF, 0x4000, 0x7FFF, 0xFFFF, 12345):
        for start in (0, 77, 0xFFFF):
            assert sum(newer(s, last) for s in _spread_sequences(start)) >= 1
