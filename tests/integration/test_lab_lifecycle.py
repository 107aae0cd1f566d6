"""Failure handling: a dying node app is named, Ctrl-C tears down, nothing of ours is left behind."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, our_leftovers


def test_a_dead_node_app_is_reported_by_name_and_teardown_leaves_nothing():
    from topologies.lab import NodeAppDied, SvpnLab
    before = our_leftovers()
    lab = SvpnLab(addressing="private", mobile_nodes=2)
    try:
        lab.start()
        lab.check_nodes()  # all alive
        lab.apps["mn2"].send_signal(signal.SIGKILL)
        lab.apps["mn2"].wait(timeout=5)
        with pytest.raises(NodeAppDied, match="mn2"):
            lab.check_nodes()
    finally:
        lab.stop()
    assert our_leftovers() == before


def test_ctrl_c_during_the_baseline_experiment_tears_everything_down(tmp_path):
    before = our_leftovers()
    # As typed at a terminal: Ctrl-C reaches the experiment even when the test run itself was started in
    # the background, where the shell hands its children SIGINT ignored.
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "experiments", "baseline.py"),
                             "--pings", "100000", "--results", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            if line.startswith("network up"):
                break
            assert time.monotonic() < deadline, "lab did not come up"
        during = our_leftovers()
        assert len(during["daemons"]) >= 3 and during["interfaces"]  # there was something to clean up
        time.sleep(1.0)  # inside the ping measurement
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:   # still running: SIGTERM tears the lab down too; kill only as a last resort
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130
    assert "Traceback" not in err and "interrupted" in err
    assert our_leftovers() == before
    (run,) = list(tmp_path.iterdir())
    config = json.loads((run / "config.json").read_text())
    assert config["complete"] is False
    # the node apps' final counters were read before the run directory went: no handler caught anything
    assert {"sg", "mn1", "mn2"} <= set(config["handler_errors"]["private"])
    assert not any(config["handler_errors"]["private"].values()), config["handler_errors"]
    # the link emulation backend of the run is part of its metadata
    assert config["link_emulation"]["private"]["backends"]


@pytest.mark.parametrize("args, named", [
    (["--attachments", "wlan1,moon"], "moon"),
    (["--link", "sg-ir:delay=-3ms"], "sg-ir"),
    (["--link", "sg-moon:delay=3ms"], "sg-moon"),
    (["--link", "sg-ir:loss=150"], "loss"),
    (["--seconds", "0"], "--seconds"),
])
def test_bad_arguments_give_one_line_and_build_nothing(args, named):
    before = our_leftovers()
    result = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "baseline.py"), *args],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.stderr
    assert our_leftovers() == before


@pytest.mark.parametrize("args, named", [
    (["--link", "sg-moon:delay=3ms"], "sg-moon"),
    (["--strategies", "sg,nope"], "nope"),
    (["--scenario", "/nonexistent.toml"], "nonexistent"),
])
def test_handover_bad_arguments_give_one_line_and_leave_no_results_folder(tmp_path, args, named):
    before = our_leftovers()
    result = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "handover.py"), *args,
                             "--results", str(tmp_path / "out")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    assert our_leftovers() == before
