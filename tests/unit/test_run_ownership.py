"""Run directories: the owner marker and the environment tag that let svpnlab-clean-net find a dead lab's
processes, and only those (no root needed: the test's own children stand in for a lab's)."""
import json
import os
import subprocess
import sys
import time

from topologies import runs


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _tagged_sleep(run_dir: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != runs.RUN_ENV}
    return subprocess.Popen(["sleep", "30"], env={**env, runs.RUN_ENV: run_dir})


def test_claim_marks_the_owner_and_tags_children(tmp_path, monkeypatch):
    monkeypatch.delenv(runs.RUN_ENV, raising=False)
    run_dir = str(tmp_path / "svpnlab-x")
    os.mkdir(run_dir)
    previous = runs.claim(run_dir)
    try:
        assert os.environ[runs.RUN_ENV] == run_dir
        assert runs.owner_alive(run_dir)
        child = subprocess.Popen(["sleep", "5"])
        try:
            deadline = time.monotonic() + 5   # /proc shows the new environment once the child has exec'd
            while runs._tag_of(child.pid) != run_dir and time.monotonic() < deadline:
                time.sleep(0.01)
            assert runs._tag_of(child.pid) == run_dir
        finally:
            child.kill()
            child.wait()
    finally:
        runs.release(previous)
    assert runs.RUN_ENV not in os.environ


def test_a_dead_owner_makes_a_leftover_and_a_live_one_does_not(tmp_path):
    dead = tmp_path / "svpnlab-dead"
    live = tmp_path / "svpnlab-live"
    for d in (dead, live):
        d.mkdir()
    (dead / runs.OWNER_FILE).write_text(json.dumps({"pid": _dead_pid(), "start_ticks": 1}))
    (live / runs.OWNER_FILE).write_text(json.dumps({"pid": os.getpid(),
                                                     "start_ticks": runs._start_ticks(os.getpid())}))
    ours, theirs, untagged = _tagged_sleep(str(dead)), _tagged_sleep(str(live)), subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.2)   # all three have exec'd
        found = runs.find_leftovers(root=str(tmp_path))
        assert found.run_dirs == [str(dead)]
        assert found.live_labs == [str(live)]
        assert ours.pid in found.processes
        assert theirs.pid not in found.processes
        assert untagged.pid not in found.processes
        lines = runs.remove(runs.Leftovers(run_dirs=found.run_dirs, processes={ours.pid: "sleep 30"}))
        assert ours.wait(5) is not None
        assert theirs.poll() is None and untagged.poll() is None
        assert not dead.exists() and live.exists()
        assert lines == [f"process {ours.pid}: sleep 30", f"run directory {dead}"]
    finally:
        for proc in (ours, theirs, untagged):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_reused_pid_is_not_the_owner(tmp_path):
    run_dir = tmp_path / "svpnlab-reused"
    run_dir.mkdir()
    # Our own PID, but a different start time: the owner died and its PID was given to someone else.
    (run_dir / runs.OWNER_FILE).write_text(json.dumps({"pid": os.getpid(),
                                                        "start_ticks": runs._start_ticks(os.getpid()) + 1}))
    assert not runs.owner_alive(str(run_dir))


def test_a_tag_whose_directory_is_gone_is_a_leftover(tmp_path):
    gone = str(tmp_path / "svpnlab-gone")
    proc = _tagged_sleep(gone)
    try:
        time.sleep(0.2)
        assert proc.pid in runs.find_leftovers(root=str(tmp_path)).processes
    finally:
        proc.kill()
        proc.wait()
