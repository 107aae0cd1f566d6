"""`svpnlab-clean-net` after `kill -9` of a running lab: everything of ours goes, nothing else does.

A child process builds a mobility lab with the VCM (node apps, link emulators, radvd), starts a helper
through ``lab.popen`` and an iperf3 server that daemonises itself (re-parented to init, as the ones an
interrupted experiment used to leave), then is killed with SIGKILL, so none of its teardown runs. Decoys
that are not ours (a named namespace with a process in it, a bridge, and a live lab's tagged process)
must survive the clean-up.
"""
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT
from topologies import runs

CHILD = r"""
import sys, time
from topologies.lab import SvpnLab
lab = SvpnLab(mobility=True, vcm="in-sg")
lab.start()
lab.popen("mn1", ["sleep", "600"], "sleep.log")
lab.host("fs").cmd("iperf3 -s -D -1 >/dev/null 2>&1")
print("READY", lab.run_dir, flush=True)
time.sleep(600)
"""


def _bridge_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _tagged_with(run_dir: str) -> list[int]:
    return [pid for pid in runs._pids() if runs._tag_of(pid) == run_dir]


def _clean_net() -> str:
    result = subprocess.run([sys.executable, "-m", "topologies.runs"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_clean_net_after_kill_9_removes_ours_and_nothing_else():
    tag = str(os.getpid() % 100000)
    decoy_ns, decoy_bridge = f"decoyns{tag}", f"decoybr{tag}"
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    decoy_procs = []
    live_dir = None
    try:
        line = child.stdout.readline().split()
        assert line[:1] == ["READY"], f"the lab did not come up: {line}"
        run_dir = line[1]
        ours_before = _tagged_with(run_dir)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        time.sleep(1.0)
        ours = [pid for pid in ours_before if _alive(pid)]
        iperf = [pid for pid in ours if "iperf3" in runs._cmdline(pid)]
        assert iperf, "the daemonised iperf3 server should have outlived its lab (nothing to clean otherwise)"
        assert _bridge_exists("soffice")

        # Decoys: a named namespace with a process, a bridge, and a live lab (owner: this test) with a process.
        subprocess.run(["ip", "netns", "add", decoy_ns], check=True)
        subprocess.run(["ip", "link", "add", decoy_bridge, "type", "bridge"], check=True)
        env = {k: v for k, v in os.environ.items() if k != runs.RUN_ENV}
        decoy_procs.append(subprocess.Popen(["ip", "netns", "exec", decoy_ns, "sleep", "600"], env=env))
        live_dir = runs.new_run_dir("decoy-")
        runs.release(runs.claim(live_dir))
        decoy_procs.append(subprocess.Popen(["sleep", "600"], env={**env, runs.RUN_ENV: live_dir}))
        time.sleep(0.2)

        out = _clean_net()
        assert f"removed run directory {run_dir}" in out
        assert f"kept: {live_dir}" in out
        assert not [pid for pid in ours if _alive(pid)], f"still running: {out}"
        assert not os.path.exists(run_dir)
        assert _bridge_exists("soffice"), "bridges stay while a live lab may be using them"
        assert all(p.poll() is None for p in decoy_procs), "a decoy process was killed"

        # The live lab ends: now the bridges are nobody's and go too; the decoys still stay.
        decoy_procs[1].terminate()
        decoy_procs[1].wait(5)
        runs.remove(runs.Leftovers(run_dirs=[live_dir]))
        out = _clean_net()
        assert "removed bridge soffice" in out
        assert not any(_bridge_exists(b) for b in runs.BRIDGES)
        assert _bridge_exists(decoy_bridge)
        assert decoy_ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert decoy_procs[0].poll() is None
        assert _clean_net().strip() == "nothing of svpnlab's to remove"

        # The next lab starts at once.
        from topologies.lab import SvpnLab
        with SvpnLab() as lab:
            assert lab.status("sg")["role"]
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        for proc in decoy_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        subprocess.run(["ip", "link", "del", decoy_bridge], capture_output=True)
        subprocess.run(["ip", "netns", "del", decoy_ns], capture_output=True)
        if live_dir:
            runs.remove(runs.Leftovers(run_dirs=[live_dir]))
        _clean_net()
