"""The lab on several servers, on Mininet's cluster edition (``mininet.examples.cluster``; docs/scaling.md).

What is used from it: ``RemoteMixin`` (a node whose shell and processes run on another server through SSH,
attached to its namespace with ``mnexec``), ``RoundRobinPlacer`` (mobile nodes spread over the edge servers)
and its SSH Ethernet tunnel (``ssh -o Tunnel=Ethernet -w``: a TAP device at each end). What is ours:

- ``RemoteLabNode``: a ``LabNode`` placed on an edge server. Unlike the example it needs no ``sudo`` (the lab
  runs as root on every server), passes every remote command as one quoted string (the example joins words,
  which breaks arguments with spaces), carries the run's tag to the remote processes (so the lab's teardown
  and ``make clean-net`` find them) and signals a remote process on its own server (the local ``Popen`` is
  only the SSH client).
- ``ssh_ethernet_tunnel``: the example's tunnel with free TAP names instead of a fixed ``tap9`` and with the
  lab's SSH options; the lab puts one between each remote mobile node and its access link's emulator, which
  stays on the core with the bridges, so a move is the same bridge-port change as on one server.
- ``LoopbackServer``: a second "server" on this machine for the tests and the demonstration, a temporary
  sshd in network and mount namespaces of its own, reached over a veth pair; nothing of it outlives ``stop``.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mininet.examples.cluster import RemoteMixin, RoundRobinPlacer

from topologies.errors import LabError
from topologies.runs import RUN_ENV, RUN_PREFIX, RUN_ROOT, write_owner
from topologies.lab_node import LabNode

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# OpenSSH's server, unpacked from Debian's package by ``make sshd`` (scripts/install-sshd) rather than
# installed: installing it would start a system-wide SSH service on the user's machine.
SSHD = PROJECT_ROOT / ".venv" / "opt" / "openssh-server" / "usr" / "sbin" / "sshd"
# RFC 2544's benchmarking range: never routed, and unlikely to be in use on the machine already.
LOOPBACK_SERVER_PREFIX = "198.18.{}.{}"
SERVER_READY_S = 10.0
TUNNEL_READY_S = 10.0
REMOTE_PID_WAIT_S = 5.0
SERVER_CHECK_S = 5.0


class ClusterError(LabError):
    """A server that cannot be reached or a tunnel that does not come up."""


def place_mobile_nodes(names: list[str], servers: list[str]) -> dict[str, str]:
    """Which edge server each mobile node runs on: round robin, as Mininet's ``RoundRobinPlacer``."""
    placer = RoundRobinPlacer(servers=list(servers), hosts=list(names), nodes=list(names))
    return {name: placer.place(name) for name in names}


def check_servers(servers, ssh_config: str | None, timeout_s: float = SERVER_CHECK_S) -> None:
    """Before anything is built: each server answers SSH, and its node apps would start from this
    checkout's path with this ``.venv`` (remote processes run ``<this python> -m nodeapps.node``)."""
    probe = shlex.join([sys.executable, "-c", "import nodeapps, os; "
                        "print(os.path.dirname(os.path.dirname(os.path.abspath(nodeapps.__file__))))"])
    for server in servers:
        try:
            result = subprocess.run(ssh_command(server, ssh_config, "-o", f"ConnectTimeout={timeout_s:g}") + [probe],
                                    capture_output=True, text=True, timeout=timeout_s + 20)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"server {server}: no answer within {timeout_s + 20:g} s") from None
        said = " ".join((result.stderr or result.stdout).split())
        if result.returncode == 255:   # ssh's own failure, not the remote command's
            raise ClusterError(f"server {server}: SSH failed: {said or 'no reason given'}")
        if result.returncode or result.stdout.strip() != str(PROJECT_ROOT):
            raise ClusterError(f"server {server}: needs this checkout at {PROJECT_ROOT} with its .venv "
                               f"({sys.executable}); it answered: {said or result.stdout.strip() or 'nothing'}")


def ssh_command(destination: str, ssh_config: str | None, *options: str) -> list[str]:
    base = ["ssh", "-q", "-o", "BatchMode=yes"]
    if ssh_config:
        base += ["-F", ssh_config]
    return base + list(options) + [destination]


def _remote_words(cmd) -> list[str]:
    return cmd.split() if isinstance(cmd, str) else [str(word) for word in cmd]


def remote_command(ssh: list[str], cmd, run_tag: str | None) -> list[str]:
    """``ssh`` running ``cmd`` on the server: as one quoted string, since ssh hands the server's shell its
    words joined by spaces; tagged with the run directory, by which the lab's teardown and
    ``make clean-net`` find the run's processes (topologies/runs.py), remote ones too."""
    words = _remote_words(cmd)
    if run_tag:
        words = ["env", f"{RUN_ENV}={run_tag}"] + words
    return list(ssh) + [shlex.join(words)]


class RemoteLabNode(RemoteMixin, LabNode):
    """A lab node on the server ``server`` (``user@host``), reached with ``ssh -F ssh_config``."""

    def __init__(self, name, server="localhost", ssh_config=None, **params):
        user, _, host = server.rpartition("@")
        self.ssh_config = ssh_config
        self._processes_started = 0   # numbers the PID files
        super().__init__(name, server=host, user=user or "root", **params)

    def ssh(self, *options: str) -> list[str]:
        """ssh to this node's server. (The example runs ssh through sudo as the invoking user; the lab is
        root already.)"""
        return ssh_command(self.dest, self.ssh_config, *options)

    def _popen(self, cmd, sudo=True, tt=True, **params):
        if not self.isRemote:
            return LabNode._popen(self, cmd, **params)
        ssh = self.ssh("-tt") if tt else self.ssh()
        params.setdefault("preexec_fn", os.setpgrp)
        return LabNode._popen(self, remote_command(ssh, cmd, os.environ.get(RUN_ENV)), **params)

    def popen(self, *args, **kwargs):
        """A process in this node's namespace on its server. Its PID there is written to a file beside
        the run's files, so ``send_signal`` reaches the process itself, not only the local SSH client."""
        if not self.isRemote:
            return super().popen(*args, **kwargs)
        cmd = args[0] if len(args) == 1 else list(args)
        pidfile = os.path.join(os.environ.get(RUN_ENV) or tempfile.gettempdir(),
                               f"remote-{self.name}-{self._processes_started}.pid")
        self._processes_started += 1
        script = f'echo $$ > {shlex.quote(pidfile)}; exec "$@"'
        wrapped = ["sh", "-c", script, "remote"] + _remote_words(cmd)
        kwargs.pop("cwd", None)   # a local directory; the remote command runs from the remote home
        kwargs.pop("env", None)   # the local environment is not the server's
        proc = super().popen(wrapped, mncmd=["mnexec", "-a", str(self.pid)], **kwargs)
        return RemoteProcess(proc, self, pidfile)

    def ethernet_tunnel(self, name: str, mac: str, local_pid: int, local_name: str,
                        local_mac: str) -> subprocess.Popen:
        """This node's interface ``name``, linked to ``local_name`` in the local namespace of ``local_pid``."""
        return ssh_ethernet_tunnel(self, name, mac, local_pid, local_name, local_mac)

    def signal_remote(self, pidfile: str, signum: int) -> None:
        """``kill -signum`` the process whose PID is in ``pidfile`` on this node's server."""
        script = (f"for i in $(seq {int(REMOTE_PID_WAIT_S * 10)}); do [ -s {shlex.quote(pidfile)} ] && break; "
                  f"sleep 0.1; done; kill -{int(signum)} $(cat {shlex.quote(pidfile)}) 2>/dev/null; true")
        try:
            subprocess.run(self.ssh() + [script], capture_output=True, timeout=REMOTE_PID_WAIT_S + 5)
        except subprocess.TimeoutExpired:
            pass   # the server does not answer: the caller's wait runs out and it kills the local client


class RemoteProcess:
    """The local SSH client of a remote process, as a ``Popen``: its exit status is the remote process's;
    a signal goes to the remote process (then the client ends with it)."""

    def __init__(self, client: subprocess.Popen, node: RemoteLabNode, pidfile: str):
        self._client = client
        self._node = node
        self._pidfile = pidfile

    def send_signal(self, signum: int) -> None:
        if self._client.poll() is None:
            self._node.signal_remote(self._pidfile, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
        if self._client.poll() is None:
            self._client.kill()

    def __getattr__(self, name):   # poll, wait, communicate, returncode, the pipes: the client's
        return getattr(self._client, name)


def _run(cmd: list[str], what: str, timeout: float = 20.0) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        raise ClusterError(f"{what}: {' '.join((result.stderr or result.stdout).split()) or 'failed'}")
    return result.stdout


def _free_tap(run, prefix: str = "tap") -> int:
    """The lowest TAP number not in use where ``run`` runs commands (``ssh -w`` takes numbers, not names)."""
    taken = set(re.findall(rf"^\d+: {prefix}(\d+)[:@]", run(["ip", "-o", "link", "show"]), re.M))
    number = 100
    while str(number) in taken:
        number += 1
    return number


def ssh_ethernet_tunnel(remote: RemoteLabNode, remote_name: str, remote_mac: str, local_pid: int,
                        local_name: str, local_mac: str) -> subprocess.Popen:
    """An Ethernet link between ``remote`` (interface ``remote_name``) and the local namespace of process
    ``local_pid`` (interface ``local_name``), carried by ``ssh -w`` between a TAP device at each end.
    Returns the SSH client that carries it; the link lasts as long as it runs."""
    def remote_run(cmd):
        return _run(remote.ssh() + [shlex.join(cmd)], f"{remote.server}: {cmd[0]}")

    def local_run(cmd):
        return _run(cmd, f"local: {cmd[0]}")

    local_tap, remote_tap = _free_tap(local_run), _free_tap(remote_run)
    local_run(["ip", "tuntap", "add", "dev", f"tap{local_tap}", "mode", "tap"])
    try:
        remote_run(["ip", "tuntap", "add", "dev", f"tap{remote_tap}", "mode", "tap"])
    except ClusterError:
        local_run(["ip", "link", "del", f"tap{local_tap}"])
        raise
    # The remote command lasts until its standard input ends, which is when this client ends.
    ssh = ssh_command(remote.dest, remote.ssh_config, "-o", "Tunnel=Ethernet", "-o", "ExitOnForwardFailure=yes",
                      "-w", f"{local_tap}:{remote_tap}")
    cmd = remote_command(ssh, ["sh", "-c", "echo @; exec cat >/dev/null"], os.environ.get(RUN_ENV))
    tunnel = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              preexec_fn=os.setpgrp)
    try:
        first = tunnel.stdout.read(1).decode(errors="replace")
        if first != "@":
            said = first + tunnel.stdout.read().decode(errors="replace") if tunnel.poll() is not None else first
            raise ClusterError(f"SSH Ethernet tunnel to {remote.server} did not come up: {' '.join(said.split())}")
        # Moved and renamed while the tunnel holds both ends open (as Mininet's RemoteLink does).
        remote_run(["sh", "-c", f"ip link set tap{remote_tap} netns {remote.pid} && "
                    f"mnexec -a {remote.pid} ip link set tap{remote_tap} name {remote_name} address {remote_mac}"])
        local_run(["ip", "link", "set", f"tap{local_tap}", "netns", str(local_pid)])
        local_run(["mnexec", "-a", str(local_pid), "ip", "link", "set", f"tap{local_tap}", "name", local_name,
                   "address", local_mac])
    except ClusterError:
        tunnel.kill()
        tunnel.wait()
        subprocess.run(["ip", "link", "del", f"tap{local_tap}"], capture_output=True)   # if not moved yet
        raise
    return tunnel


class LoopbackServer:
    """A second server on this machine: a temporary sshd (OpenSSH with ``PermitTunnel ethernet``) in new
    network and mount namespaces, reached at 198.18.<n>.2 over a veth pair, with a throw-away host key and
    client key. ``destination`` and ``ssh_config`` are what ``SvpnLab(servers=..., ssh_config=...)`` takes.
    Everything it made goes at ``stop``: the sshd's processes (the namespaces die with them), the veth, the
    files."""

    def __init__(self, index: int = 0):
        if not 0 <= index <= 255:
            raise ClusterError(f"loopback server index {index}: 0..255")
        self.index = index
        self.address = LOOPBACK_SERVER_PREFIX.format(index, 2)
        self.local_address = LOOPBACK_SERVER_PREFIX.format(index, 1)
        self.destination = f"root@{self.address}"
        self.veth = f"svsrv{os.getpid() % 100000}{index}"[:15]
        self.dir: str | None = None
        self.ssh_config: str | None = None
        self.process: subprocess.Popen | None = None
        self._made_privsep_dir = False

    def __enter__(self) -> "LoopbackServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if not SSHD.exists():
            raise ClusterError(f"{SSHD} is missing: run 'make sshd' (unpacks Debian's openssh-server)")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}server", dir=RUN_ROOT)
        # A crash leaves this directory without a live owner: ``make clean-net`` then kills the sshd (its
        # command line names the directory), which takes the namespaces and the veth with it.
        write_owner(self.dir)
        d = Path(self.dir)
        for key in ("host_key", "client_key"):
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"svpnlab-{key}", "-f", str(d / key)],
                 "ssh-keygen")
        shutil.copy(d / "client_key.pub", d / "authorized_keys")
        host_key = (d / "host_key.pub").read_text().split()
        (d / "known_hosts").write_text(f"{self.address} {host_key[0]} {host_key[1]}\n")
        (d / "sshd_config").write_text("\n".join([
            f"ListenAddress {self.address}", f"HostKey {d / 'host_key'}", f"PidFile {d / 'sshd.pid'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitTunnel ethernet",
            "MaxSessions 200", "MaxStartups 200", "LogLevel ERROR", "Subsystem sftp internal-sftp", ""]))
        self.ssh_config = str(d / "ssh_config")
        Path(self.ssh_config).write_text("\n".join([
            f"Host {self.address}", f"  IdentityFile {d / 'client_key'}", "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {d / 'known_hosts'}", "  StrictHostKeyChecking yes", "  BatchMode yes",
            "  LogLevel ERROR", "  ServerAliveInterval 5", ""]))
        # sshd's privilege separation needs a user "sshd" and /run/sshd; a private copy of /etc/passwd,
        # bind-mounted in the server's own mount namespace, gives it the user without touching the host's.
        passwd = Path("/etc/passwd").read_text()
        if not re.search(r"^sshd:", passwd, re.M):
            passwd += "sshd:x:65533:65534:svpnlab loopback server:/run/sshd:/usr/sbin/nologin\n"
        (d / "passwd").write_text(passwd)
        if not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755)
            self._made_privsep_dir = True
        script = (f"mount --bind {shlex.quote(str(d / 'passwd'))} /etc/passwd && "
                  f"while ! ip -o addr show | grep -q ' {self.address}/'; do sleep 0.02; done && "
                  f"exec {shlex.quote(str(SSHD))} -D -e -f {shlex.quote(str(d / 'sshd_config'))}")
        log = open(d / "sshd.log", "wb")
        self.process = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        preexec_fn=os.setpgrp)
        log.close()
        self._wait_for_own_namespace()
        _run(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", str(self.process.pid)],
             "veth to the loopback server")
        _run(["ip", "addr", "add", f"{self.local_address}/30", "dev", self.veth], "local address")
        _run(["ip", "link", "set", self.veth, "up"], "veth up")
        inside = ["nsenter", "-t", str(self.process.pid), "-n"]
        _run(inside + ["ip", "link", "set", "lo", "up"], "server lo")
        _run(inside + ["ip", "addr", "add", f"{self.address}/30", "dev", "eth0"], "server address")
        _run(inside + ["ip", "link", "set", "eth0", "up"], "server eth0")
        deadline = time.monotonic() + SERVER_READY_S
        while True:
            probe = subprocess.run(ssh_command(self.destination, self.ssh_config, "-o", "ConnectTimeout=2") + ["true"],
                                   capture_output=True, text=True)
            if probe.returncode == 0:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"loopback server at {self.address} did not answer SSH: "
                                   f"{self._log_tail() or ' '.join(probe.stderr.split())}")
            time.sleep(0.05)

    def _wait_for_own_namespace(self) -> None:
        """``unshare`` runs as its own process before it leaves our network namespace: until it has, a veth
        end sent "into" it would land here, in the host's namespace."""
        ours = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + SERVER_READY_S
        while True:
            try:
                if os.readlink(f"/proc/{self.process.pid}/ns/net") != ours:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"loopback server did not get a network namespace of its own: {self._log_tail()}")
            time.sleep(0.005)

    def _log_tail(self) -> str:
        try:
            lines = Path(self.dir, "sshd.log").read_text(errors="replace").strip().splitlines()
        except (OSError, TypeError):
            return ""
        return lines[-1] if lines else ""

    def stop(self) -> None:
        """Idempotent. The server's processes are its sshd and whatever sshd started: one process group
        each (sshd puts every session in its own), all in the server's network namespace."""
        if self.process is not None:
            for pid in _processes_in_netns_of(self.process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
            self.process = None
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        if self._made_privsep_dir:
            try:
                os.rmdir("/run/sshd")
            except OSError:
                pass
            self._made_privsep_dir = False
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def _processes_in_netns_of(pid: int) -> list[int]:
    """Every process in the network namespace of ``pid`` (sshd and its sessions), ``pid`` excluded."""
    try:
        netns = os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pid:
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == netns:
                    found.append(int(entry))
            except OSError:
                continue
    return found
