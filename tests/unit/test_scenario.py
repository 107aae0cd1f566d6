"""Scenario files: the default loads, --quick scaling, round trip through the writer, one-line errors."""
import os

import pytest

from experiments import scenario as sc
from experiments.scenario import ScenarioError

BASE = """
name = "t"
mobile_nodes = 2
[start]
mn1 = "office"
mn2 = "wlan1"
[[phase]]
name = "p1"
duration_s = 2
"""


def with_phase(extra: str) -> str:
    return BASE + "\n[[phase]]\nname = \"p2\"\nduration_s = 3\n" + extra


def test_default_follows_the_signalling_diagram_then_goes_further():
    s = sc.load_default()
    assert s.nodes == ["mn1", "mn2"] and s.start == {"mn1": "office", "mn2": "office"}
    moves = [(phase, m.node, m.origin, m.to) for phase, _t, m in s.moves()]
    # MN2 leaves first, then MN1, then MN1 hands over during RO, then MN2 returns.
    assert moves == [("mn2-out", "mn2", "office", "wlan2"), ("mn1-out", "mn1", "office", "wlan1"),
                     ("mn1-wlan-to-cell", "mn1", "wlan1", "cell"), ("mn2-returns", "mn2", "wlan2", "office")]
    assert "route-optimised" in [p.name for p in s.phases]
    assert s.attachments("route-optimised") == {"mn1": "wlan1", "mn2": "wlan2"}
    assert s.attachments("mn2-returns") == {"mn1": "cell", "mn2": "office"}
    assert [p.pair for p in s.probes][0] == "mn1-mn2" and s.probes[0].rate_hz >= 50
    assert 10 <= s.duration_s <= 30


def test_quick_scales_durations_offsets_and_keeps_a_minimum():
    s = sc.load_default()
    q = s.quick()
    assert q.duration_s <= 0.75 * s.duration_s
    assert all(p.duration_s >= min(s.quick_min_phase_s, orig.duration_s) for p, orig in zip(q.phases, s.phases))
    for p, orig in zip(q.phases, s.phases):
        ratio = max(orig.duration_s * s.quick_scale, min(s.quick_min_phase_s, orig.duration_s)) / orig.duration_s
        for t, t0 in zip(p.traffic, orig.traffic):
            assert t.start_s == pytest.approx(t0.start_s * ratio, abs=1e-3)
            # Long enough for a whole-second iperf3 run: the phase was lengthened at its end.
            assert p.duration_s - t.start_s >= s.quick_min_traffic_s - 1e-9
        for m, m0 in zip(p.moves, orig.moves):
            assert m.at_s == pytest.approx(m0.at_s * ratio, abs=1e-3)
    tiny = s.scaled(0.01, min_phase_s=1.0)
    assert all(p.duration_s == 1.0 for p in tiny.phases)
    with pytest.raises(ScenarioError):
        s.scaled(0)


def test_min_traffic_lengthens_only_phases_whose_traffic_is_too_short():
    s = sc.loads(with_phase('traffic = [{kind = "tcp", from = "mn1", to = "mn2", start_s = 1, duration_s = 1}]'),
                 "x.toml")
    q = s.scaled(0.5, min_traffic_s=1.5)
    p1, p2 = q.phases
    assert p1.duration_s == 1.0                      # no traffic: just scaled
    [t] = p2.traffic
    # 1 s of traffic is shorter than 1.5 s at full length already: it keeps its 1 s, the phase holds it.
    assert (t.start_s, t.duration_s) == (0.5, 1.0) and p2.duration_s == 1.5
    assert sc.loads(sc.dumps(q), "x.toml").phases[1].duration_s == 1.5
    assert sc.loads(sc.dumps(s), "x.toml").quick_min_traffic_s == s.quick_min_traffic_s


def test_traffic_marked_quick_false_is_left_out_of_the_quick_form_only():
    s = sc.load_default()
    q = s.quick()
    assert all(len(p.traffic) == 1 for p in s.phases)
    assert [p.name for p in q.phases if p.traffic] == ["mn2-out", "mn1-out"]
    assert sc.Scenario.from_dict(s.to_dict(), "again").quick().to_dict()["phase"] == q.to_dict()["phase"]
    with pytest.raises(ScenarioError, match="traffic.quick must be true or false"):
        sc.loads(with_phase('traffic = [{kind = "tcp", from = "mn1", to = "mn2", quick = "no"}]'), "x.toml")


def test_phase_starts_and_move_times():
    s = sc.loads(with_phase('move = {node = "mn1", to = "cell", at_s = 0.5}'), "x.toml")
    assert s.phase_starts() == {"p1": 0.0, "p2": 2.0}
    [(phase, t, move)] = s.moves()
    assert (phase, t, move.node, move.origin, move.to) == ("p2", 2.5, "mn1", "office", "cell")


def test_writer_round_trips(tmp_path):
    s = sc.load_default()
    text = sc.dumps(s)
    path = tmp_path / "default.toml"
    path.write_text(text)
    assert sc.load(str(path)) == s
    assert sc.Scenario.from_dict(s.to_dict(), "default.toml") == s
    quick = s.quick()
    assert sc.loads(sc.dumps(quick), "default.toml") == quick


def test_traffic_and_probe_parsing():
    s = sc.loads(with_phase('traffic = [{kind = "udp", from = "mn1", to = "fs", start_s = 1, duration_s = 2, '
                            'rate_mbit = 5}, {kind = "tcp", from = "mn2", to = "mn1"}]')
                 + '\n[[probe]]\nbetween = ["mn1", "fs"]\nrate_hz = 20\n', "x.toml")
    udp, tcp = s.phases[1].traffic
    assert (udp.flow, udp.rate_mbit, udp.start_s, udp.duration_s) == ("mn1->fs", 5.0, 1.0, 2.0)
    assert (tcp.flow, tcp.duration_s, tcp.rate_mbit) == ("mn2->mn1", None, None)
    assert s.probes[0].pair == "mn1-fs" and s.probes[0].rate_hz == 20


@pytest.mark.parametrize("extra, expected", [
    ('move = {node = "mn3", to = "cell"}', "phase 2 'p2': move.node: unknown node 'mn3'"),
    ('move = {node = "mn1", to = "wlan3"}', "phase 2 'p2': move.to: unknown network 'wlan3'"),
    ('move = {node = "mn2", to = "wlan1"}', "phase 2 'p2': move: mn2 is already in wlan1"),
    ('move = [{node = "mn1", to = "cell"}, {node = "mn1", to = "wlan2"}]', "mn1 moves twice"),
    ('move = {node = "mn1", to = "cell", at_s = 3}', "move.at_s=3 is not inside the phase"),
    ('move = {node = "mn1", to = "cell", speed = 3}', "phase 2 'p2': move: unknown field(s) speed"),
    ('traffic = [{kind = "icmp", from = "mn1", to = "mn2"}]', "traffic.kind: 'icmp'"),
    ('traffic = [{kind = "tcp", from = "mn1", to = "mn1"}]', "from and to are both 'mn1'"),
    ('traffic = [{kind = "tcp", from = "mn1", to = "printer"}]', "traffic.to: unknown endpoint 'printer'"),
    ('traffic = [{kind = "tcp", from = "mn1", to = "mn2", start_s = 2, duration_s = 2}]', "run past the phase"),
    ('traffic = [{kind = "tcp", from = "mn1", to = "mn2", rate_mbit = 2}]', "only udp traffic has a rate"),
    ('colour = "red"', "phase 2 'p2': unknown field(s) colour"),
])
def test_phase_errors_name_file_phase_and_field(extra, expected):
    with pytest.raises(ScenarioError) as info:
        sc.loads(with_phase(extra), "mine.toml")
    message = str(info.value)
    assert message.startswith("mine.toml: ") and expected in message and "\n" not in message


@pytest.mark.parametrize("text, expected", [
    (BASE.replace("duration_s = 2", "duration_s = -1"), "phase 1 'p1': duration_s must be positive"),
    (BASE.replace("duration_s = 2", "duration_s = 0"), "duration_s must be positive"),
    (BASE.replace("duration_s = 2", 'duration_s = "2"'), "duration_s must be a number"),
    (BASE.replace("duration_s = 2\n", ""), "phase 1 'p1': duration_s: missing"),
    (BASE + '[[phase]]\nname = "p1"\nduration_s = 1\n', "phase 2 'p1': name: used by an earlier phase"),
    (BASE.replace('name = "p1"', 'name = "p 1"'), "phase 1: name must be"),
    (BASE.replace('mn2 = "wlan1"', 'mn2 = "moon"'), "start.mn2: unknown network 'moon'"),
    (BASE.replace('mn2 = "wlan1"', 'mn2 = "wlan1"\nmn7 = "cell"'), "start.mn7: unknown node"),
    (BASE.replace("mobile_nodes = 2", "mobile_nodes = 0"), "mobile_nodes must be a whole number"),
    (BASE.split("[[phase]]")[0], "no phases"),
    (BASE + '[[probe]]\nbetween = ["mn1", "mn9"]\n', "probe 1: between: unknown endpoint 'mn9'"),
    (BASE + '[[probe]]\nbetween = ["mn1", "mn2"]\nrate_hz = 0\n', "probe 1: rate_hz must be positive"),
    (BASE + "speed = 1\n", "unknown field(s) speed"),
    ("name = \n", "not valid TOML"),
])
def test_file_errors_are_one_line(text, expected):
    with pytest.raises(ScenarioError) as info:
        sc.loads(text, "mine.toml")
    assert expected in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_missing_file_and_bad_encoding(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        sc.load(str(tmp_path / "none.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"name = \"\xff\"\n")
    with pytest.raises(ScenarioError, match="bad.toml: not UTF-8"):
        sc.load(str(bad))


def test_unknown_phase_for_attachments():
    with pytest.raises(ScenarioError, match="no phase named 'nope'"):
        sc.load_default().attachments("nope")


def test_every_scenario_file_shipped_is_valid():
    for name in os.listdir(sc.SCENARIO_DIR):
        if name.endswith(".toml"):
            sc.load(os.path.join(sc.SCENARIO_DIR, name))
