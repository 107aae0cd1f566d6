"""SIGHUP, SIGTERM and SIGINT at three moments of `handover.py --quick` leave nothing of ours behind.

The experiment runs with its own run root (``SVPNLAB_RUN_ROOT``), so what is checked afterwards is only
what this experiment started: processes tagged with a run directory under that root, the run
directories themselves, and the lab's bridges.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from helpers import tagged_processes, wait_for
from topologies import runs

HANDOVER = os.path.join(ROOT, "experiments", "handover.py")


_ours = tagged_processes


def _lines_until(proc, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if text in line:
            return
        assert time.monotonic() < deadline, f"no {text!r} in the experiment's output"
    raise AssertionError(f"the experiment ended before {text!r}")


def _during_build(proc, root):
    # A node's shell (``bash … -is mininet:<node>``) lives until teardown; the first tagged process can be a
    # short-lived command that is gone by the time the signal is sent.
    wait_for(lambda: any("mininet:" in cmd for cmd in _ours(root).values()), 60, "the lab's first node shell")


def _during_tcp_transfer(proc, root):
    wait_for(lambda: any("iperf3" in cmd and " -c " in cmd for cmd in _ours(root).values()), 120,
          "an iperf3 transfer")


def _late_phase_twice(proc, root):
    _lines_until(proc, "phase route-optimised", 120)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)   # the second one arrives while the lab is being torn down


@pytest.mark.parametrize("sig, moment", [
    (signal.SIGHUP, _during_build),
    (signal.SIGTERM, _during_tcp_transfer),
    (signal.SIGINT, _late_phase_twice),
], ids=["sighup-building", "sigterm-tcp", "sigint-twice-late"])
def test_a_stop_signal_at_any_moment_leaves_nothing_of_ours(tmp_path, sig, moment):
    root = str(tmp_path / "runs")
    results = tmp_path / "results"
    env = {**os.environ, "SVPNLAB_RUN_ROOT": root}
    env.pop(runs.RUN_ENV, None)
    proc = subprocess.Popen([sys.executable, HANDOVER, "--quick", "--strategies", "vcm", "--no-plots",
                             "--results", str(results)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        moment(proc, root)
        assert _ours(root), "nothing was running at the moment of the signal"
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert _ours(root) == {}
    assert not os.path.isdir(root) or os.listdir(root) == []
    assert not [b for b in runs.BRIDGES if os.path.exists(f"/sys/class/net/{b}")]
    (run,) = list(results.iterdir())
    config = json.loads((run / "config.json").read_text())
    assert config["complete"] is False
    assert not list(run.glob("links-*.json")), "the per-strategy link report is folded into config.json"
    # A stop after the build must not lose what was measured up to then.
    if moment is not _during_build:
        assert (run / "rtt.csv").stat().st_size > 0
    # The next run can start at once: nothing holds the lab's names.
    from topologies.lab import SvpnLab
    with SvpnLab() as lab:
        assert lab.status("sg")["role"]
