"""SvpnLab: build the SVPN topology, start the node apps, and tear everything down again.

    with SvpnLab(addressing="private") as lab:
        print(lab.ping("mn1", lab.plan.office["fs"]))

Theory of operation: Mininet builds the namespaces and links (``topologies.svpn``). The lab then writes
one JSON config per VPN node into a private run directory (keys are fresh per run, files are 0600), starts
``python -m nodeapps.runtime.daemon`` inside each node's namespace, and waits for its control socket.
External mobile nodes get a pair of ESP tunnel-mode SAs with the security gateway; the SG proxies
neighbour discovery for their inner addresses on the office LAN and forbids plain forwarding between the
office and the Internet. On stop (or any error, or SIGINT/SIGTERM) it stops exactly the processes it
started, removes the run directory and stops Mininet, which removes every interface and namespace.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from mininet.log import setLogLevel
from mininet.net import Mininet

from topologies.addressing import AddressPlan, MobileNodePlan, PlanError
from topologies.links import emulated_links, emulation_metadata
from topologies.svpn import SvpnTopo

TUN_NAME = "svpn0"
# Worst-case ESP tunnel overhead: outer IPv6 40 + SPI/seq 8 + IV 8 + padding 3 + trailer 2 + ICV 16.
TUN_OVERHEAD = 77
ALGORITHM = "aes128gcm16"
READY_TIMEOUT_S = 10.0


class LabError(RuntimeError):
    """Something in the lab failed; the message is one line and names the node or parameter."""


class NodeAppDied(LabError):
    pass


def _hex(n: int) -> str:
    return os.urandom(n).hex()


class SvpnLab:
    def __init__(self, addressing: str = "private", mobile_nodes: int = 2, attachments=None,
                 link_params: dict | None = None, links: str = "default", plain_service: bool = False,
                 mtu: int = 1500, run_dir: str | None = None, spi_base: int = 0x1000):
        self.topo = SvpnTopo(addressing=addressing, mobile_nodes=mobile_nodes, attachments=attachments,
                             link_params=link_params, links=links, plain_service=plain_service, mtu=mtu)
        self._links: list = []
        self.tun_mtu = max(1280, mtu - TUN_OVERHEAD)
        self.plan: AddressPlan = self.topo.plan
        self.spi_base = spi_base
        self._run_dir_arg = run_dir
        self.run_dir: str | None = None
        self.net: Mininet | None = None
        self.apps: dict[str, subprocess.Popen] = {}
        self.node_configs: dict[str, dict] = {}
        self._helpers: list[subprocess.Popen] = []

    # ---- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "SvpnLab":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        setLogLevel(os.environ.get("SVPNLAB_MININET_LOG", "error"))
        self.run_dir = self._run_dir_arg or tempfile.mkdtemp(prefix="svpnlab-", dir="/tmp")
        os.chmod(self.run_dir, 0o700)
        try:
            self.net = Mininet(topo=self.topo, controller=None, build=False, autoSetMacs=True)
            self.net.build()
            self._links = emulated_links(self.net)
            self.net.start()
            for switch in self.net.switches:  # the bridges' ports live in the root namespace
                for intf in switch.intfNames():
                    if intf != "lo":
                        switch.cmd(f"ip link set dev {intf} mtu {self.topo.mtu}")
            self._configure_gateway()
            self._start_vpn_nodes()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Idempotent; stops only what this lab started."""
        for proc in self._helpers:
            _terminate(proc)
        self._helpers.clear()
        for proc in self.apps.values():
            _terminate(proc)
        if self.net is not None:
            net, self.net = self.net, None
            _release_busy_shells(net)
            net.stop()
        if self.run_dir and not self._run_dir_arg:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # ---- node access ----------------------------------------------------------------------------
    def host(self, name: str):
        return self.net.get(name)

    def external_mobile_nodes(self) -> list[MobileNodePlan]:
        return [mn for mn in self.plan.mobile_nodes if mn.attachment != "office"]

    def vpn_nodes(self) -> list[str]:
        return ["sg"] + [mn.name for mn in self.external_mobile_nodes()]

    def control_socket(self, node: str) -> str:
        return os.path.join(self.run_dir, f"{node}.sock")

    def status(self, node: str) -> dict:
        from nodeapps.runtime.control import request
        return request(self.control_socket(node), "status")

    def check_nodes(self) -> None:
        """Raise NodeAppDied naming the first node app that is no longer running."""
        for name, proc in self.apps.items():
            code = proc.poll()
            if code is not None:
                raise NodeAppDied(f"node app on {name} exited with code {code}: {self._last_log_line(name)}")

    def _last_log_line(self, node: str) -> str:
        try:
            with open(os.path.join(self.run_dir, f"{node}.log"), encoding="utf-8") as f:
                lines = [line.strip() for line in f if line.strip()]
            return lines[-1] if lines else "no output"
        except OSError:
            return "no log"

    def popen(self, node: str, args: list[str], log_name: str) -> subprocess.Popen:
        """Start a helper process (capture, traffic tool) in a node; stopped with the lab."""
        log = open(os.path.join(self.run_dir, log_name), "wb")
        proc = self.host(node).popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._helpers.append(proc)
        return proc

    def stop_helper(self, proc: subprocess.Popen) -> None:
        _terminate(proc)
        if proc in self._helpers:
            self._helpers.remove(proc)

    # ---- configuration --------------------------------------------------------------------------
    def _configure_gateway(self) -> None:
        sg = self.host("sg")
        sg.cmd("sysctl -qw net.ipv6.conf.sg-lan.proxy_ndp=1 net.ipv6.neigh.sg-lan.proxy_delay=0")
        for mn in self.external_mobile_nodes():
            out = sg.cmd(f"ip -6 neigh add proxy {mn.home_address} dev sg-lan")
            if out.strip():
                raise LabError(f"sg: proxy ND for {mn.name}: {out.strip()}")
        plain = str(self.plan.plain_prefix)
        # A security gateway forwards nothing in clear between the Internet and the office, except the
        # explicitly public service prefix (only present with plain_service).
        ruleset = f"""
table inet svpnlab_gateway {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        ip6 daddr {plain} accept
        ip6 saddr {plain} accept
        iifname "sg-wan" oifname "sg-lan" counter drop
        iifname "sg-lan" oifname "sg-wan" counter drop
    }}
}}
"""
        result = sg.popen(["nft", "-f", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
        out, _ = result.communicate(ruleset.encode(), timeout=10)
        if result.returncode != 0:
            raise LabError(f"sg: nft: {out.decode().strip()}")

    def _make_configs(self) -> dict[str, dict]:
        plan = self.plan
        vpn = list(plan.vpn_prefixes)
        sg_sas, sg_rules = [], []
        configs = {}
        for n, mn in enumerate(self.external_mobile_nodes()):
            coa = plan.current_address(mn)
            up_spi, down_spi = self.spi_base + 2 * n, self.spi_base + 2 * n + 1
            up = {"spi": up_spi, "algorithm": ALGORITHM, "key": _hex(16), "salt": _hex(4), "mode": "tunnel"}
            down = {"spi": down_spi, "algorithm": ALGORITHM, "key": _hex(16), "salt": _hex(4), "mode": "tunnel"}
            up_name, down_name = f"{mn.name}->sg", f"sg->{mn.name}"
            home = f"{mn.home_address}/128"
            configs[mn.name] = self._node_config(
                mn.name, "mobile-node", addresses=[home], routes=vpn, interfaces=[f"{mn.name}-eth0"],
                sas=[{**up, "name": up_name, "direction": "out", "local": coa, "remote": plan.sg_public},
                     {**down, "name": down_name, "direction": "in", "local": coa, "remote": plan.sg_public}],
                spd={"vpn_prefixes": vpn, "rules": [
                    {"direction": "out", "src": home, "dst": p, "action": "protect", "sa": up_name} for p in vpn
                ] + [
                    {"direction": "in", "src": p, "dst": home, "action": "protect", "sa": down_name} for p in vpn
                ]})
            sg_sas += [{**up, "name": up_name, "direction": "in", "local": plan.sg_public, "remote": coa},
                       {**down, "name": down_name, "direction": "out", "local": plan.sg_public, "remote": coa}]
            sg_rules += [{"direction": "out", "src": p, "dst": home, "action": "protect", "sa": down_name}
                         for p in vpn]
            sg_rules += [{"direction": "in", "src": home, "dst": p, "action": "protect", "sa": up_name}
                         for p in vpn]
        configs["sg"] = self._node_config(
            "sg", "security-gateway", addresses=[],
            routes=[f"{mn.home_address}/128" for mn in self.external_mobile_nodes()],
            interfaces=["sg-wan"], sas=sg_sas, spd={"vpn_prefixes": vpn, "rules": sg_rules})
        return configs

    def _node_config(self, node, role, *, addresses, routes, interfaces, sas, spd) -> dict:
        return {"node": node, "role": role,
                "tun": {"name": TUN_NAME, "mtu": self.tun_mtu, "addresses": addresses, "routes": routes},
                "outer_interfaces": interfaces, "sas": sas, "spd": spd,
                "event_log": os.path.join(self.run_dir, f"{node}.events.jsonl"),
                "control_socket": self.control_socket(node)}

    def _start_vpn_nodes(self) -> None:
        if not self.external_mobile_nodes():
            return
        self.node_configs = self._make_configs()
        for node, config in self.node_configs.items():
            path = os.path.join(self.run_dir, f"{node}.json")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(config, f, indent=1)
            log = open(os.path.join(self.run_dir, f"{node}.log"), "wb")
            self.apps[node] = self.host(node).popen(
                [sys.executable, "-m", "nodeapps.runtime.daemon", path],
                stdout=log, stderr=subprocess.STDOUT, cwd=os.path.dirname(os.path.dirname(__file__)))
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        for node in self.node_configs:
            while not os.path.exists(self.control_socket(node)):
                self.check_nodes()
                if time.monotonic() > deadline:
                    raise LabError(f"node app on {node} did not become ready within {READY_TIMEOUT_S:.0f} s")
                time.sleep(0.02)
        self.check_nodes()

    def link_metadata(self) -> dict:
        """Which emulation backend each link used, with its counters and faithfulness (also after stop)."""
        return emulation_metadata(self._links)

    def events(self) -> list[dict]:
        """Every node's event log, merged in time order."""
        records = []
        for node in self.node_configs:
            path = os.path.join(self.run_dir, f"{node}.events.jsonl")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    records += [json.loads(line) for line in f if line.strip()]
        return sorted(records, key=lambda r: r["time"])


def _release_busy_shells(net: Mininet, grace: float = 2.0) -> None:
    """A measurement interrupted inside ``host.cmd`` leaves that shell busy; Mininet's own teardown
    needs it idle. Interrupt the command and wait (bounded) for the shell's end-of-output marker."""
    for node in net.hosts + net.switches:
        if not getattr(node, "waiting", False) or node.shell is None:
            continue
        node.sendInt()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            ready = node.waitReadable(100)
            if (ready or node.readbuf) and chr(127) in node.read(65536):
                break
        node.waiting = False


def _terminate(proc: subprocess.Popen, grace: float = 3.0) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass
