"""The lab on two servers (topologies/cluster.py, docs/scaling.md): the mobile nodes on a second "server" on
this machine, a temporary sshd in its own namespaces reached over SSH, each MN linked to its access link's
emulator by an SSH Ethernet tunnel. The VPN, the VCM's direct path and a move work as on one server, a
stop reaches the remote node apps, and nothing of either server outlives the lab, also after kill -9."""
import json
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT
from helpers import tagged_processes, vcm_paths, wait_for
from topologies import runs
from topologies.cluster import LoopbackServer

HANDOVER = os.path.join(ROOT, "experiments", "handover.py")


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        chain.append(pid)
    return chain


def _node_app_pids(run_dir: str, node: str) -> list[int]:
    config = os.path.join(run_dir, f"{node}.json")
    # The node app itself, not the local ssh client whose command line names it too.
    return [pid for pid in runs._pids() if (cmd := runs._cmdline(pid)).startswith(sys.executable + " ")
            and "nodeapps.node" in cmd and config in cmd]


def _naming(root: str) -> dict[int, str]:
    """Processes whose command line names a directory under ``root`` (the loopback server's sshd)."""
    return {pid: cmd for pid in runs._pids() if root + os.sep in (cmd := runs._cmdline(pid))}


def test_mobile_nodes_on_a_second_server_roam_and_go_direct_and_leave_nothing(tmp_path):
    from topologies.lab import SvpnLab
    run_dir = str(tmp_path / "run")
    os.mkdir(run_dir)
    with LoopbackServer() as server:
        sshd = server.process.pid
        lab = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "wlan2"], links="ideal",
                      mobility=True, vcm="in-sg", servers=(server.destination,), ssh_config=server.ssh_config,
                      run_dir=run_dir)
        try:
            lab.start()
            for mn in ("mn1", "mn2"):
                (app,) = _node_app_pids(run_dir, mn)
                assert sshd in _ancestors(app), f"{mn}'s node app is not a child of the second server's sshd"
                details = lab.host(mn).cmd(f"ip -d link show dev {mn}-eth0")
                assert "tun type tap" in details, details
            (sg_app,) = _node_app_pids(run_dir, "sg")
            assert sshd not in _ancestors(sg_app)
            lab.wait_registered()
            h2 = lab.plan.mobile("mn2").home_address
            out = lab.host("mn1").cmd(f"ping -6 -n -c 20 -i 0.05 -W 2 {h2}")
            assert " 0% packet loss" in out, out
            wait_for(lambda: vcm_paths(lab, "mn1").get("mn2", {}).get("path") == "direct", 10.0,
                     what="mn1 direct to mn2")
            events = lab.move("mn1", "cell")
            assert any(e["event"] == "binding_acknowledged" and e["node"] == "mn1" for e in events)
            out = lab.host("mn1").cmd(f"ping -6 -n -c 10 -i 0.05 -W 2 {h2}")
            assert " 0% packet loss" in out, out
        finally:
            lab.stop()
        # The SIGTERM reached the remote node apps themselves: each wrote its final counters.
        assert {"mn1", "mn2", "sg"} <= set(lab.final_counters)
        assert tagged_processes(str(tmp_path)) == {}
        left_on_server = [pid for pid in _processes_in_netns(sshd) if pid != sshd]
        assert left_on_server == [], {pid: runs._cmdline(pid) for pid in left_on_server}
        veth, server_dir = server.veth, server.dir
    assert not os.path.exists(f"/sys/class/net/{veth}")
    assert not os.path.exists(server_dir)
    assert not _alive(sshd)


def _processes_in_netns(pid: int) -> list[int]:
    from topologies.cluster import _processes_in_netns_of
    return _processes_in_netns_of(pid) + [pid]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _handover_with_a_loopback_server(tmp_path, stderr):
    """``handover.py --quick --loopback-server`` with its own run root: (root, environment, process)."""
    root = str(tmp_path / "runs")
    os.mkdir(root)
    env = {**os.environ, "SVPNLAB_RUN_ROOT": root}
    env.pop(runs.RUN_ENV, None)
    proc = subprocess.Popen([sys.executable, HANDOVER, "--quick", "--strategies", "vcm", "--no-plots",
                             "--loopback-server", "--results", str(tmp_path / "results")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
    return root, env, proc


def test_handover_with_a_loopback_server_records_the_placement_and_kill_9_leaves_nothing_after_clean_net(tmp_path):
    root, env, proc = _handover_with_a_loopback_server(tmp_path, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            if "phase mn1-out" in line:
                break
            assert time.monotonic() < deadline, "no phase mn1-out"
        else:
            raise AssertionError("handover.py ended before phase mn1-out")
        remote_apps = [pid for pid, cmd in tagged_processes(root).items() if "nodeapps.node" in cmd
                       and "/mn1.json" in cmd]
        assert remote_apps, "mn1's node app is not running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (results,) = list((tmp_path / "results").iterdir())
    config = json.loads((results / "config.json").read_text())
    assert config["servers"] and config["servers"][0].startswith("root@198.18.")
    assert tagged_processes(root) and _naming(root), "kill -9 left nothing to clean (the test would be empty)"
    clean = subprocess.run([sys.executable, "-m", "topologies.runs"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=60)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    wait_for(lambda: not tagged_processes(root) and not _naming(root), 10.0, what="no process of the run left")
    assert os.listdir(root) == []
    veth = f"svsrv{proc.pid % 100000}0"[:15]   # LoopbackServer's name for it, in the experiment's process
    wait_for(lambda: not os.path.exists(f"/sys/class/net/{veth}"), 10.0, what=f"{veth} gone")


def test_a_server_that_does_not_answer_gets_a_one_line_error_and_no_half_built_lab(tmp_path):
    from topologies.cluster import ClusterError
    from topologies.lab import SvpnLab
    run_dir = str(tmp_path / "run")
    os.mkdir(run_dir)
    lab = SvpnLab(addressing="public", mobile_nodes=2, attachments=["wlan1", "wlan2"], mobility=True,
                  servers=("root@198.18.254.2",), run_dir=run_dir)
    started = time.monotonic()
    try:
        lab.start()
    except ClusterError as exc:
        message = str(exc)
    else:
        lab.stop()
        raise AssertionError("the lab started with a server that does not exist")
    assert "198.18.254.2" in message and "\n" not in message
    assert time.monotonic() - started < 30
    assert lab.net is None and tagged_processes(str(tmp_path)) == {}
    assert not [b for b in runs.BRIDGES if os.path.exists(f"/sys/class/net/{b}")]


def test_a_server_without_this_checkout_is_refused_before_the_build(tmp_path, monkeypatch):
    from topologies import cluster
    from topologies.cluster import ClusterError
    with LoopbackServer() as server:
        monkeypatch.setattr(cluster, "PROJECT_ROOT", tmp_path / "elsewhere")
        try:
            cluster.check_servers([server.destination], server.ssh_config)
        except ClusterError as exc:
            assert "needs this checkout" in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError("a server with another checkout path was accepted")
        monkeypatch.undo()
        cluster.check_servers([server.destination], server.ssh_config)


def test_sigterm_to_handover_with_a_loopback_server_stops_both_servers_and_leaves_nothing(tmp_path):
    root, _env, proc = _handover_with_a_loopback_server(tmp_path, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: any("iperf3" in cmd and " -c " in cmd for cmd in tagged_processes(root).values()), 120,
                 what="an iperf3 transfer")
        assert _naming(root), "the loopback server is not running"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert tagged_processes(root) == {} and _naming(root) == {}
    assert os.listdir(root) == []
    veth = f"svsrv{proc.pid % 100000}0"[:15]
    wait_for(lambda: not os.path.exists(f"/sys/class/net/{veth}"), 10.0, what=f"{veth} gone")
