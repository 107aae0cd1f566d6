"""The lab shell (experiments/shell.py) driven as a script and `handover.py --cli` with piped input.

Each run gets its own run root (``SVPNLAB_RUN_ROOT``), so what is checked afterwards is only what that
run started: processes tagged with a run directory under that root, the run directories themselves, and
the lab's bridges.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT
from helpers import tagged_processes
from topologies import runs
from topologies.addressing import make_plan

SHELL = os.path.join(ROOT, "experiments", "shell.py")
HANDOVER = os.path.join(ROOT, "experiments", "handover.py")
PROMPT = "svpnlab> "


def _env(root):
    env = {**os.environ, "SVPNLAB_RUN_ROOT": root}
    env.pop(runs.RUN_ENV, None)
    return env


def _answer(output: str, command: str) -> list[str]:
    """The lines a command printed: from its echo after the prompt up to the next prompt."""
    assert f"{PROMPT}{command}\n" in output, f"{command!r} was not run:\n{output}"
    part = output.split(f"{PROMPT}{command}\n", 1)[1].split(PROMPT, 1)[0]
    return [line for line in part.splitlines() if line.strip()]


def _nothing_left(root: str) -> None:
    assert tagged_processes(root) == {}
    assert not os.path.isdir(root) or os.listdir(root) == []
    assert not [b for b in runs.BRIDGES if os.path.exists(f"/sys/class/net/{b}")]



def _shell(tmp_path):
    """A lab shell with its own run root, reading commands from a pipe; (run root, process)."""
    root = str(tmp_path / "runs")
    proc = subprocess.Popen([sys.executable, SHELL, "--results", str(tmp_path / "results")], cwd=ROOT,
                            env=_env(root), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return root, proc


def _signal_once(proc, ready, signum, check=lambda: None):
    """Read ``proc``'s output until a line makes ``ready`` true (within 90 s), run ``check``, send
    ``signum``; its remaining (stdout, stderr). The process never outlives the test."""
    try:
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            if ready(line):
                break
            assert time.monotonic() < deadline, "the shell did not get there"
        check()
        proc.send_signal(signum)
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

def test_piped_commands_run_in_order_and_end_of_input_tears_the_lab_down(tmp_path):
    root, results = str(tmp_path / "runs"), tmp_path / "results"
    commands = ["status mn1", "ping6all", "frobnicate", "move mn1 cell", "status mn1", "paths",
                "capture ar3-lan", "mn1 ping6 -c 3 -i 0.2 fs", "capture ar3-lan", "keys"]
    # Ideal links: the counts below must not depend on the profiles' random loss.
    result = subprocess.run([sys.executable, SHELL, "--mobility", "--ideal-links", "--results", str(results)], cwd=ROOT,
                            env=_env(root), input="\n".join(commands) + "\n", capture_output=True, text=True,
                            timeout=150)
    out = result.stdout
    assert result.returncode == 0, result.stderr + out
    assert "Traceback" not in out + result.stderr
    plan = make_plan("private", 2)
    cell = str(plan.access["cell"].prefix.network_address).rstrip(":")
    assert "node mn1 (mobile-node)" in "\n".join(_answer(out, "status mn1"))
    assert f"care-of {cell}" not in "\n".join(_answer(out, "status mn1")), "mn1 starts away from cellular"
    assert _answer(out, "ping6all")[-1] == "*** Results: 0% dropped (56/56 pairs answered)", _answer(out, "ping6all")
    assert _answer(out, "frobnicate") == ["unknown command or node 'frobnicate' (help lists the commands, "
                                          "nodes the nodes)"]
    assert _answer(out, "move mn1 cell")[0].startswith("mn1: wlan1 -> cell, registered after"), out
    after = out.split(f"{PROMPT}move mn1 cell\n", 1)[1]
    assert f"mobility: away, location external, care-of {cell}" in "\n".join(_answer(after, "status mn1"))
    paths = _answer(out, "paths")
    assert [row.split()[:6] for row in paths[2:]] == [["mn1", "mn2", "cell", "/", "cell", "via-sg"],
                                                      ["mn2", "mn1", "cell", "/", "cell", "via-sg"]], paths
    assert "3 received" in "\n".join(_answer(out, "mn1 ping6 -c 3 -i 0.2 fs")), out
    stopped = _answer(after.split(f"{PROMPT}capture ar3-lan\n", 1)[1], "capture ar3-lan")[0]
    count, path = int(stopped.split(": ")[1].split()[0]), stopped.split(" packets in ")[1]
    assert count >= 6, stopped   # three echo requests and replies in ESP, at least
    assert path.startswith(str(results)) and path.endswith(".pcapng") and os.path.getsize(path) > 0
    keys = _answer(out, "keys")[0].split(": ", 1)[1]
    with open(os.path.join(keys, "esp_sa"), encoding="utf-8") as f:
        assert len([line for line in f if not line.startswith("#")]) >= 4
    assert out.rstrip().endswith("*** lab stopped")
    _nothing_left(root)


def test_sigterm_while_a_node_command_runs_tears_the_lab_down(tmp_path):
    root, proc = _shell(tmp_path)
    proc.stdin.write("mn1 sleep 60\n")
    proc.stdin.flush()   # stdin stays open: only the signal can end this shell

    def started():
        time.sleep(0.5)
        assert any("sleep 60" in cmd for cmd in tagged_processes(root).values())
    out, err = _signal_once(proc, lambda line: f"{PROMPT}mn1 sleep 60" in line, signal.SIGTERM, started)
    assert proc.returncode == 130, err
    assert "*** SIGTERM: leaving the shell" in out and "Traceback" not in err
    _nothing_left(root)


def test_sighup_while_the_lab_builds_tears_down_what_was_built(tmp_path):
    """The terminal closes before the shell is up: the half-built lab goes, nothing of ours stays."""
    root, proc = _shell(tmp_path)

    def building():
        deadline = time.monotonic() + 60
        while not tagged_processes(root):
            assert time.monotonic() < deadline, "the lab started no process"
            time.sleep(0.05)
    out, err = _signal_once(proc, lambda line: "*** building the lab" in line, signal.SIGHUP, building)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "*** lab up" not in out and out.rstrip().endswith("*** lab stopped")
    _nothing_left(root)


def test_sigint_at_an_idle_prompt_tears_the_lab_down(tmp_path):
    """Ctrl-C with no node command running (stdin is not a terminal here) ends the shell and the lab."""
    root, proc = _shell(tmp_path)

    def idle():
        time.sleep(0.5)   # the prompt is written; stdin stays open, so the shell waits for a command
        assert tagged_processes(root), "the lab is not running"
    out, err = _signal_once(proc, lambda line: "*** svpnlab shell" in line, signal.SIGINT, idle)
    assert proc.returncode == 130, err
    assert "*** SIGINT: leaving the shell" in out and "Traceback" not in err
    _nothing_left(root)


def test_handover_cli_with_piped_input_resumes_and_leaves_the_pause_out(tmp_path):
    root, results = str(tmp_path / "runs"), tmp_path / "results"
    result = subprocess.run([sys.executable, HANDOVER, "--quick", "--strategies", "sg", "--no-plots", "--cli",
                             "mn2-out", "--results", str(results)], cwd=ROOT, env=_env(root),
                            input="sh sleep 3\nstatus sg\n", capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr + result.stdout
    assert f"{PROMPT}sh sleep 3\n" in result.stdout and "node sg (security-gateway)" in result.stdout
    (run,) = list(results.iterdir())
    config = json.loads((run / "config.json").read_text())
    assert config["complete"] is True
    planned = {p["name"]: p["duration_s"] for p in config["scenario"]["phase"]}
    with open(run / "summary.csv", encoding="utf-8") as f:
        durations = {row["phase"]: float(row["duration_s"]) for row in csv.DictReader(f)}
    for phase in ("both-inside", "mn2-out"):   # the pause lies between them and lengthens neither
        assert abs(durations[phase] - planned[phase]) < 1.0, (phase, durations, planned)
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    (pause,) = [e for e in events if e["event"] == "pause"]
    assert pause["phase"] == "mn2-out" and pause["until"] - pause["time"] >= 3.0
    start = next(e["time"] for e in events if e["event"] == "strategy_start")
    with open(run / "rtt.csv", encoding="utf-8") as f:
        inside = [row for row in csv.DictReader(f)
                  if pause["time"] - start + 0.5 < float(row["t"]) < pause["until"] - start - 0.5]
    assert inside and {row["phase"] for row in inside} == {""}, "probes sent in the pause count for no phase"
    _nothing_left(root)


def test_ctrl_c_in_the_handover_shell_stops_the_experiment(tmp_path):
    root, results = str(tmp_path / "runs"), tmp_path / "results"
    proc = subprocess.Popen([sys.executable, HANDOVER, "--quick", "--strategies", "sg", "--no-plots", "--cli",
                             "both-inside", "--results", str(results)], cwd=ROOT, env=_env(root),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # stdin stays open: the shell waits for a command
    out, err = _signal_once(proc, lambda line: line.startswith("*** svpnlab shell"), signal.SIGINT)
    assert proc.returncode == 130, err
    assert "*** SIGINT: leaving the shell" in out and "Traceback" not in err
    (run,) = list(results.iterdir())
    assert json.loads((run / "config.json").read_text())["complete"] is False
    _nothing_left(root)
