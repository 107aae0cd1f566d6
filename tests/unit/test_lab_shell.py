"""The lab shell's commands on a stand-in lab (no root, no Mininet network): bad input gets one line and
the shell goes on, commands reach the lab, end of input and stop signals end the loop; the pause a
``handover.py --cli`` leaves belongs to no phase; ``ping6all``'s summary and exit status."""
import io
import os
import signal

import pytest
from mininet.log import lg

from experiments import records, shell
from topologies import svpn
from topologies.addressing import make_plan
from topologies.lab import LabError
from topologies.measurements import ping6_all


class FakeNode:
    def __init__(self, name, intfs=()):
        self.name = name
        self.intfs = list(intfs)

    def intfNames(self):
        return self.intfs


class FakeNet(dict):
    def __init__(self, nodes, switches=()):
        super().__init__({n.name: n for n in nodes})
        self.switches = [self[name] for name in switches]
        self.hosts = [n for n in self.values() if n not in self.switches]


def _status(node, **extra):
    return {"node": node, "role": "mobile-node" if node.startswith("mn") else "security-gateway", "pid": 1,
            "uptime_s": 1.0, "addresses": [], "ipsec": {"sas": [], "spd": {"rules": []}, "counters": {}},
            "counters": {}, **extra}


class FakeLab:
    mobility = True

    def __init__(self, statuses=None, on_move=None):
        self.plan = make_plan("private", 2, ["office", "office"])
        names = ["sg", "ir", "ar1", "fs", "mn1", "mn2"]
        self.net = FakeNet([FakeNode(n, [f"{n}-eth0"]) for n in names] + [FakeNode("swlan1")], switches=["swlan1"])
        self.apps = {"sg": None, "mn1": None, "mn2": None}
        self.attachment = {"mn1": "office", "mn2": "office"}
        self.statuses = statuses or {}
        self.on_move = on_move
        self.moves = []
        self.run_dir = "/nonexistent"

    def status(self, node):
        return self.statuses.get(node) or _status(node)

    def events(self):
        return []

    def move(self, mn, network, **_):
        if self.on_move:
            self.on_move()
        if network == "wlan2":
            raise LabError(f"move {mn} to {network}: no registration within 5 s")
        self.moves.append((mn, network))
        self.attachment[mn] = network
        return []


def run_shell(text, lab=None):
    lab = lab or FakeLab()
    out = io.StringIO()
    result = shell.LabShell(lab, stdin=io.StringIO(text), stdout=out, out_dir="/nonexistent").loop()
    return result, out.getvalue(), lab


def lines_after(output, command):
    """The lines a command printed: from its echo up to the next prompt."""
    part = output.split(f"{shell.LabShell.prompt}{command}\n", 1)[1]
    return [line for line in part.split(shell.LabShell.prompt, 1)[0].splitlines() if line]


@pytest.mark.parametrize("command, message", [
    ("frobnicate", "unknown command or node 'frobnicate'"),
    ("mn1", "mn1: give a command to run there"),
    ("status mn7", "status: 'mn7' is not a node of this lab"),
    ("status fs", "status: 'fs' runs no node app (node apps: sg, mn1, mn2)"),
    ("status mn1 mn2", "usage: status [NODE]"),
    ("move mn1", "usage: move MN NETWORK"),
    ("move mn9 cell", "move: 'mn9' is not a mobile node (mobile nodes: mn1, mn2)"),
    ("move fs cell", "move: 'fs' is not a mobile node"),
    ("move mn1 mars", "move: unknown network 'mars' (networks: office, wlan1, wlan2, cell)"),
    ("move mn1 wlan2", "move: move mn1 to wlan2: no registration within 5 s"),
    ("capture nowhere0", "capture: no interface 'nowhere0' in the lab"),
    ("capture a b", "usage: capture INTERFACE"),
    ("paths now", "usage: paths"),
    ("ping6all fast", "usage: ping6all"),
    ("keys please", "usage: keys"),
])
def test_bad_input_gets_one_line_and_the_next_command_still_runs(command, message):
    result, output, lab = run_shell(f"{command}\nmove mn1 cell\n")
    assert result is None
    said = lines_after(output, command)
    assert len(said) == 1 and said[0].startswith(message), output
    assert "Traceback" not in output
    assert lab.moves == [("mn1", "cell")], "the command after the bad one did not run"
    assert lines_after(output, "move mn1 cell")[0].startswith("mn1: office -> cell, registered after")


def test_status_prints_the_node_tables_and_a_line_per_node_app():
    lab = FakeLab({"mn1": _status("mn1", mobility={"state": "away", "location": "external",
                                                   "care_of_address": "2001:db8:1::10"})})
    _result, output, _lab = run_shell("status mn1\nstatus\n", lab)
    table = "\n".join(lines_after(output, "status mn1"))
    assert "node mn1 (mobile-node)" in table and "security associations" in table
    assert "mobility: away, location external, care-of 2001:db8:1::10" in table
    overview = lines_after(output, "status")
    assert overview[0].split() == ["node", "role", "network", "mobility", "care-of", "SAs"]
    assert [line.split()[0] for line in overview[2:]] == ["sg", "mn1", "mn2"]


def test_paths_names_the_office_the_sg_or_the_vcm_path():
    lab = FakeLab({"mn1": _status("mn1", vcm={"paths": [{"peer": "mn2", "path": "direct", "since": 1000.0,
                                                         "session": 3, "generation": 1}]})})
    _result, output, _lab = run_shell("paths\nmove mn1 cell\nmove mn2 wlan1\npaths\n", lab)
    first = lines_after(output, "paths")
    assert first[2].split()[:5] == ["mn1", "mn2", "office", "/", "office"] and "office" in first[2].split()[5]
    last = output.rsplit(f"{shell.LabShell.prompt}paths\n", 1)[1].splitlines()
    mn1_row = next(line for line in last if line.startswith("mn1"))
    mn2_row = next(line for line in last if line.startswith("mn2"))
    assert "direct" in mn1_row and "vcm session 3" in mn1_row
    assert "via-sg" in mn2_row and "wlan1 / cell" in mn2_row and "cell / wlan1" in mn1_row


def test_end_of_input_ends_the_loop_and_restores_logging_and_signals():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    level, stream = lg.level, lg.ch.stream
    result, output, _lab = run_shell("# a comment\n\nnodes\n")
    assert result is None
    assert "available nodes are" in output   # Mininet's own output reaches the shell's stdout
    assert lg.level == level and lg.ch.stream is stream
    assert {sig: signal.getsignal(sig) for sig in before} == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_ends_the_loop_with_its_number(sig):
    lab = FakeLab(on_move=lambda: os.kill(os.getpid(), sig))
    result, output, _lab = run_shell("move mn1 cell\nmove mn2 cell\n", lab)
    assert result == sig
    assert f"*** {signal.Signals(sig).name}: leaving the shell" in output
    assert "move mn2 cell" not in output, "nothing runs after a stop signal"


def test_node_names_stand_for_their_plan_addresses():
    lab = FakeLab()
    sh = shell.LabShell(lab, stdin=io.StringIO(""), stdout=io.StringIO(), out_dir="/nonexistent")
    assert sh.address_of("fs") == lab.plan.office["fs"]
    assert sh.address_of("mn2") == lab.plan.mobile("mn2").home_address
    assert sh.address_of("-c") is None
    assert sh.interface_node("fs-eth0") == "fs"
    assert sh.interface_node("swlan1") == "swlan1"


def test_the_vcm_option_implies_mobility_and_a_missing_script_is_one_line(capsys, tmp_path):
    args = shell.parse_args(["--vcm", "host", "--addressing", "public"])
    assert (args.mobility, args.vcm, args.addressing) == (True, "host", "public")
    assert shell.parse_args([]).mobility is False
    assert shell.parse_args([]).fault_injection is False
    assert shell.parse_args(["--fault-injection"]).fault_injection is True   # lab 4's drop-next, vcm-inject
    with pytest.raises(SystemExit) as exit_:
        shell.parse_args(["--script", str(tmp_path / "none.txt")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--script: No such file or directory" in err


def test_a_pause_belongs_to_no_phase_and_the_phases_keep_their_length():
    events = [{"time": 100.0, "event": "strategy_start", "strategy": "vcm"},
              {"time": 100.0, "event": "phase_start", "strategy": "vcm", "phase": "a"},
              {"time": 102.0, "event": "pause", "strategy": "vcm", "phase": "b", "until": 105.0},
              {"time": 105.0, "event": "phase_start", "strategy": "vcm", "phase": "b"},
              {"time": 107.0, "event": "strategy_end", "strategy": "vcm"}]
    spans = records.phase_spans("/nonexistent", events)
    assert spans[["phase", "t_start", "t_end"]].values.tolist() == [["a", 0.0, 2.0], ["b", 5.0, 7.0]]
    find = records.phase_finder(spans, "vcm")
    assert [find(t) for t in (1.0, 3.0, 4.9, 5.0, 6.0, 9.0)] == ["a", "", "", "b", "b", "b"]


class FakePing:
    def __init__(self, answered):
        self.returncode = 0 if answered else 1

    def wait(self, timeout=None):
        return self.returncode


class PingNode(FakeNode):
    def __init__(self, name, unreachable=()):
        super().__init__(name)
        self.unreachable = unreachable

    def popen(self, args, **_):
        return FakePing(args[-1] not in self.unreachable)


def test_ping6all_prints_who_reached_whom_and_the_loss():
    net = FakeNet([PingNode("a"), PingNode("b", unreachable=("2001:db8::c",)), PingNode("c")])
    lines = []
    result = ping6_all(net, [[("a", "2001:db8::a"), ("b", "2001:db8::b"), ("c", "2001:db8::c")]], write=lines.append)
    assert lines == ["a -> b c", "b -> a X", "c -> a b", "*** Results: 16.7% dropped (5/6 pairs answered)"]
    assert (result["pairs"], result["reached"], result["lost"]) == (6, 5, [("b", "c")])


def test_mn_test_ping6all_stops_the_network_and_exits_1_on_loss(monkeypatch):
    class Net(FakeNet):
        stopped = False

        def stop(self):
            self.stopped = True

    plan = make_plan("private", 2, ["wlan1", "cell"])
    net = Net([PingNode(n, unreachable=(plan.sg_public,)) for n in ("sg", "ir", "ar1", "ar2", "ar3", "xha", "mn1",
                                                                     "mn2", "fs", "d1")])
    net.topo = type("Topo", (), {"plan": plan})()
    with pytest.raises(SystemExit) as exit_:
        svpn.ping6all(net)
    assert exit_.value.code == 1 and net.stopped
    groups = svpn.reachability_groups(plan, set(net))
    assert [name for name, _ in groups[0]] == ["sg", "fs", "d1"]
    assert {"sg", "ir", "mn1", "mn2"} <= {name for name, _ in groups[1]}


def test_svpnlab_shell_is_a_console_script():
    text = open(os.path.join(os.path.dirname(__file__), "..", "..", "setup.py"), encoding="utf-8").read()
    assert "svpnlab-shell=experiments.shell:main" in text
