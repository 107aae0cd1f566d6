"""The lab on several servers (topologies/cluster.py): placement, the servers' specification, the remote
command line and signals to remote processes. The lab itself across two servers: tests/integration/test_two_servers.py."""
import shlex
import signal

import pytest

from topologies.cluster import RemoteProcess, _free_tap, place_mobile_nodes, remote_command
from topologies.errors import LabSpecError
from topologies.runs import RUN_ENV
from topologies.spec import LabSpec


def test_mobile_nodes_are_placed_round_robin_over_the_servers():
    placed = place_mobile_nodes([f"mn{i}" for i in range(1, 6)], ["root@a", "root@b"])
    assert placed == {"mn1": "root@a", "mn2": "root@b", "mn3": "root@a", "mn4": "root@b", "mn5": "root@a"}


def test_servers_are_parsed_from_a_comma_separated_string_and_round_trip():
    spec = LabSpec(servers="root@198.18.0.2, edge-2.lab")
    assert spec.servers == ("root@198.18.0.2", "edge-2.lab")
    assert LabSpec.from_dict(spec.to_dict()) == spec
    assert LabSpec().servers == ()


@pytest.mark.parametrize("server", ["-oProxyCommand=touch /tmp/x", "a b", "root@host;reboot", "@host", "/tmp/sock",
                                    "", "root@-host"])
def test_a_server_that_is_not_host_or_user_at_host_is_refused_with_one_line(server):
    with pytest.raises(LabSpecError, match="servers") as info:
        LabSpec(servers=(server,))
    assert "\n" not in str(info.value)


def test_ssh_config_needs_servers_and_an_existing_file(tmp_path):
    with pytest.raises(LabSpecError, match="needs servers"):
        LabSpec(ssh_config=str(tmp_path))
    with pytest.raises(LabSpecError, match="no such file"):
        LabSpec(servers=("a",), ssh_config=str(tmp_path / "missing"))
    config = tmp_path / "ssh_config"
    config.write_text("Host a\n")
    assert LabSpec(servers=("a",), ssh_config=str(config)).ssh_config == str(config)


def test_the_remote_command_is_one_quoted_string_the_servers_shell_splits_back_into_the_words():
    ssh = ["ssh", "-F", "/tmp/c", "root@198.18.0.2"]
    words = ["python", "-m", "nodeapps.linkemu.emulator", "--config", '{"forward": {"delay": "5 ms"}}', "it's"]
    command = remote_command(ssh, words, "/tmp/svpnlab-run 1")
    assert command[:4] == ssh and len(command) == 5
    assert shlex.split(command[4]) == ["env", f"{RUN_ENV}=/tmp/svpnlab-run 1"] + words


def test_without_a_run_the_remote_command_carries_no_tag():
    assert shlex.split(remote_command(["ssh", "h"], "ip link show", None)[2]) == ["ip", "link", "show"]


def test_the_first_free_tap_number_skips_the_ones_in_use():
    links = ("1: lo: <LOOPBACK> mtu 65536\n7: tap100: <BROADCAST> mtu 1500\n"
             "8: tap101@NONE: <BROADCAST> mtu 1500\n9: tap1000: <BROADCAST> mtu 1500\n")
    assert _free_tap(lambda _cmd: links) == 102
    assert _free_tap(lambda _cmd: "1: lo: <LOOPBACK> mtu 65536\n") == 100


class _Client:
    def __init__(self, alive=True):
        self.alive = alive
        self.killed = False
        self.args, self.pid, self.returncode = ["ssh"], 4242, None
        self.stdin = self.stdout = self.stderr = None

    def poll(self):
        return None if self.alive else 0

    def kill(self):
        self.killed = True
        self.alive = False


class _Node:
    def __init__(self):
        self.sent = []

    def signal_remote(self, pidfile, signum):
        self.sent.append((pidfile, signum))


def test_a_signal_goes_to_the_remote_process_not_only_to_the_local_ssh_client():
    client, node = _Client(), _Node()
    proc = RemoteProcess(client, node, "/run/x.pid")
    proc.terminate()
    assert node.sent == [("/run/x.pid", signal.SIGTERM)] and not client.killed
    proc.kill()
    assert node.sent[-1] == ("/run/x.pid", signal.SIGKILL) and client.killed
    assert proc.pid == 4242 and proc.poll() == 0


def test_no_signal_is_sent_once_the_remote_process_has_ended():
    node = _Node()
    RemoteProcess(_Client(alive=False), node, "/run/x.pid").send_signal(signal.SIGTERM)
    assert node.sent == []
