"""SvpnLab: build the SVPN topology, start the node apps, and tear everything down again.

    with SvpnLab(addressing="private") as lab:
        print(lab.ping("mn1", lab.plan.office["fs"]))

Theory of operation: Mininet builds the namespaces and links (``topologies.svpn``). The lab then writes
one JSON config per VPN node into a private run directory (keys are fresh per run, files are 0600), starts
``python -m nodeapps.node`` inside each node's namespace, and waits for its control socket.
External mobile nodes get a pair of ESP tunnel-mode SAs with the security gateway; the SG proxies
neighbour discovery for their inner addresses on the office LAN and forbids plain forwarding between the
office and the Internet. On stop (or any error, or SIGINT/SIGTERM) it stops exactly the processes it
started, removes the run directory and stops Mininet, which removes every interface and namespace.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from mininet.log import setLogLevel
from mininet.net import Mininet

from nodeapps.esp.sa_spec import SaPair, sa_pair
from nodeapps.mobility.announcement import generate_key_pair
from nodeapps.runtime.sections import (ExternalSection, MeshPeer, MeshSection, MobileNodeSection, MobilePeer,
                                       MobilityTimers, SaPeer, VcmSection)
from nodeapps.runtime.events import JsonLinesTail, read_json_lines
from topologies import runs, wireshark
from topologies.addressing import MAX_MOBILE_NODES, AddressPlan, MobileNodePlan, PlanError
from topologies.errors import LabError, LabSpecError, NodeAppDied
from topologies.links import emulated_links, emulation_metadata
from topologies.spec import LabSpec, from_options
from topologies.svpn import ACCESS_ROUTER, ACCESS_SWITCH, CORRESPONDENT_ADDRESS, OFFICE_SWITCH, SvpnTopo

TUN_NAME = "svpn0"
# Worst-case ESP tunnel overhead: outer IPv6 40 + SPI/seq 8 + IV 8 + padding 3 + trailer 2 + ICV 16.
TUN_OVERHEAD = 77
READY_TIMEOUT_S = 10.0
READY_TIMEOUT_PER_NODE_S = 0.25   # node apps start at once and share the CPU: 100 MNs need more than 10 s
# Mobile nodes reverse-tunnel through their home agent: one more IPv6 header inside the ESP tunnel.
MOBILITY_OVERHEAD = 40
# The VCM's direct pair over the MN–MN binding (vcm_pair="home-ro"): a type 2 routing header (24) and a
# destination options header with the HAO (24) in front of ESP, instead of the reverse tunnel's 40.
RO_ESP_OVERHEAD = 48
# ESP in UDP (RFC 3948): the UDP header between the outer IPv6 header and ESP.
UDP_ENCAP_OVERHEAD = 8
MOVE_TIMEOUT_S = 5.0
# SPIs the lab assigns, as offsets from spi_base: one block per kind, each big enough for
# MAX_MOBILE_NODES nodes (up to 4 SPIs each), so blocks never overlap; the VCM draws outside all of them.
SPI_BLOCK = 0x400
assert 4 * MAX_MOBILE_NODES <= SPI_BLOCK
SPI_TUNNEL, SPI_MH, SPI_GROUP, SPI_VCM, SPI_XHA = (k * SPI_BLOCK for k in range(5))
SPI_RESERVED = 5 * SPI_BLOCK
# The mesh's pre-distributed MN–MN pairs (``mesh=True``, never with a VCM, so nothing draws from there):
# two SPIs per pair of mobile nodes, after the reserved blocks.
SPI_MESH = SPI_RESERVED


# Called with every lab once its node apps have stopped and their final counters are read (the integration
# tests check handler_errors through this).
STOP_LISTENERS: list = []
# handler_error events kept per lab (the first ones: what a failing test shows).
HANDLER_ERROR_EVENTS_KEPT = 20


_UNCLAIMED = object()   # the lab has not tagged the environment with its run directory


class SvpnLab:
    """The running lab a ``LabSpec`` describes: ``SvpnLab(spec)``, or ``SvpnLab(addressing=..., ...)`` with
    the spec's fields as keywords. ``run_dir``: where the run's files go (default: a new run directory)."""

    def __init__(self, spec: LabSpec | str | None = None, /, *, run_dir: str | None = None, **options):
        if isinstance(spec, str):   # SvpnLab("public"): the address plan, as the first keyword was
            options["addressing"] = spec
            spec = None
        if spec is None:
            spec = from_options(**options)
        elif options:
            raise LabSpecError(f"SvpnLab(spec) takes no other lab options ({', '.join(sorted(options))}): "
                               "use spec.replace(...)")
        elif not isinstance(spec, LabSpec):
            raise LabSpecError(f"SvpnLab takes a LabSpec, not {type(spec).__name__}")
        self.spec = spec
        self.mesh = spec.mesh
        self.vcm_pair = spec.pair_kind
        self.vcm = spec.vcm
        self.vcm_control = spec.vcm_control
        self.vcm_inbound_grace = spec.vcm_inbound_grace
        self.vcm_lifetime = spec.vcm_lifetime
        self.route_optimisation = list(spec.route_optimisation or ())
        self.topo = SvpnTopo(addressing=spec.addressing, mobile_nodes=spec.mobile_nodes,
                             attachments=list(spec.attachments) if spec.attachments is not None else None,
                             link_params=spec.link_params, links=spec.links, plain_service=spec.plain_service,
                             mtu=spec.mtu, correspondent=spec.correspondent, seed=spec.seed,
                             attacker=list(spec.attacker) if spec.attacker else None,
                             servers=spec.servers, ssh_config=spec.ssh_config)
        self.seed = spec.seed
        # ``lab.attacker`` (topologies/attacker.py) once the lab runs, when ``attacker`` names places.
        self.attacker = None
        # Node event logs drop repeats of one event kind beyond this many per second (floods of per-packet
        # drops); with many mobile nodes, protocol events such as session_detected need a higher cap.
        self.event_rate_limit = spec.event_rate_limit
        # Control commands that break nodes on purpose (forget a binding, inject VCM bytes): tests only.
        self.fault_injection = spec.fault_injection
        self.correspondent = spec.correspondent
        self._links: list = []
        self.mobility = spec.mobility
        # The MN–SG tunnel SAs' encapsulation; UDP adds its 8-octet header to every outer packet.
        self.esp_encap = spec.esp_encap
        self._encap = "udp" if spec.esp_encap == "udp" else None
        # Even, so TCP segments carry an even payload and the nodes can checksum them in one vectorised
        # pass (nodeapps.runtime.offload.chunk_sums).
        mobility_overhead = RO_ESP_OVERHEAD if self.vcm_pair == "home-ro" else MOBILITY_OVERHEAD
        self.tun_mtu = max(1280, spec.mtu - TUN_OVERHEAD - (mobility_overhead if spec.mobility else 0)
                           - (UDP_ENCAP_OVERHEAD if spec.esp_encap == "udp" else 0)) & ~1
        self.ra_intervals = spec.ra_intervals
        self.announcement_interval = spec.announcement_interval
        self.mobility_timers = dict(spec.mobility_timers or {})
        self.attachment = {mn.name: mn.attachment for mn in self.topo.plan.mobile_nodes}
        self.plan: AddressPlan = self.topo.plan
        self.spi_base = spec.spi_base
        self._run_dir_arg = run_dir
        self.run_dir: str | None = None
        self.net: Mininet | None = None
        self.apps: dict[str, subprocess.Popen] = {}
        self.node_configs: dict[str, dict] = {}
        self._helpers: list[subprocess.Popen] = []
        self._radvd: list[subprocess.Popen] = []
        self._previous_tag = _UNCLAIMED
        # After stop: each node app's counters as it exited (its node_stopped event), and its first
        # handler_error events. A node that did not exit cleanly has no entry.
        self.final_counters: dict[str, dict] = {}
        self.handler_error_events: list[dict] = []
        self._counters_read = False
        self.runtime_sas: list[dict] = []   # SAs the node apps made at run time, read from their key logs at stop

    # ---- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "SvpnLab":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        setLogLevel(os.environ.get("SVPNLAB_MININET_LOG", "error"))
        self.run_dir = self._run_dir_arg or runs.new_run_dir()
        os.chmod(self.run_dir, 0o700)
        # From here on every process we start carries the run directory (svpnlab-clean-net finds them).
        self._previous_tag = runs.claim(self.run_dir)
        try:
            if self.spec.servers:   # a server that cannot run our node apps fails here, before any namespace
                from topologies.cluster import check_servers
                check_servers(self.spec.servers, self.spec.ssh_config)
            self.net = Mininet(topo=self.topo, controller=None, build=False, autoSetMacs=True)
            self.net.build()
            self._links = emulated_links(self.net)
            self.net.start()
            for switch in self.net.switches:  # the bridges' ports live in the root namespace
                for intf in switch.intfNames():
                    if intf != "lo":
                        switch.cmd(f"ip link set dev {intf} mtu {self.topo.mtu}")
            self._configure_gateway()
            if self.topo.attacker_places:
                self._start_attacker()
            if self.mobility:
                self._start_router_advertisements()
            self._start_vpn_nodes()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Idempotent; stops only what this lab started. A second Ctrl-C, SIGTERM or SIGHUP while it runs
        waits until the lab is down (it would otherwise leave half a lab)."""
        with runs.signals_held():
            _terminate_all(self._helpers)
            self._helpers.clear()
            _terminate_all(list(self.apps.values()))
            if self.apps and not self._counters_read and self.run_dir and os.path.isdir(self.run_dir):
                self._read_final_counters()
                self.runtime_sas = wireshark.read_key_logs(self.run_dir)
                self._counters_read = True
                for listener in list(STOP_LISTENERS):
                    listener(self)
            if self.net is not None:
                net, self.net = self.net, None
                _release_busy_shells(net)
                net.stop()
            if self._previous_tag is not _UNCLAIMED:
                # Whatever a shell command started on its own (a daemonised iperf3, a stray probe) carries
                # our run directory in its environment: nothing of ours outlives the lab.
                runs.kill_tagged(self.run_dir)
                runs.release(self._previous_tag)
                self._previous_tag = _UNCLAIMED
            if self.run_dir and not self._run_dir_arg:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    def _read_final_counters(self) -> None:
        """Each node app writes its counters into its event log as it exits (``node_stopped``)."""
        for node in self.node_configs:
            path = os.path.join(self.run_dir, f"{node}.events.jsonl")
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    lines = [line for line in f if '"event":"node_stopped"' in line
                             or '"event":"handler_error"' in line]
            except OSError:
                continue
            for line in lines:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:   # cut short by a kill
                    continue
                if record.get("event") == "node_stopped":
                    self.final_counters[node] = {k: v for k, v in record.items()
                                                 if k not in ("time", "node", "event")}
                elif len(self.handler_error_events) < HANDLER_ERROR_EVENTS_KEPT:
                    self.handler_error_events.append(record)

    def esp_sas(self) -> list[dict]:
        """Every ESP SA this lab used: the configured ones and those made at run time (read at stop)."""
        made = self.runtime_sas if self.net is None or not self.run_dir else wireshark.read_key_logs(self.run_dir)
        return wireshark.unique(wireshark.configured_sas(self.node_configs) + made)

    def export_wireshark(self, folder: str) -> str:
        """Write a Wireshark configuration folder that decrypts this lab's ESP (also after stop); use it as
        ``WIRESHARK_CONFIG_DIR=folder tshark -r capture.pcap``."""
        return wireshark.write_profile(folder, self.esp_sas())

    def handler_errors(self) -> dict[str, int]:
        """{node: handler_errors} from the final counters (after stop)."""
        return {node: int(c.get("handler_errors", 0)) for node, c in self.final_counters.items()}

    # ---- node access ----------------------------------------------------------------------------
    def host(self, name: str):
        return self.net.get(name)

    def external_mobile_nodes(self) -> list[MobileNodePlan]:
        """Mobile nodes that run the VPN node app: those outside the office, or all with mobility."""
        return [mn for mn in self.plan.mobile_nodes if mn.attachment != "office" or self.mobility]

    def vpn_nodes(self) -> list[str]:
        extra = (["ha"] if self.mobility else []) + [n for n in ("xha", "cn") if n in self.node_configs]
        extra += ["vcm"] if "vcm" in self.node_configs else []
        return ["sg"] + extra + [mn.name for mn in self.external_mobile_nodes()]

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
    def _start_attacker(self) -> None:
        """An access bridge the attacker sits on floods every frame to every port (ageing time 0), like
        a radio medium any station can hear; node apps take only frames addressed to them."""
        from topologies.attacker import Attacker
        for place in self.topo.attacker_places:
            bridge = ACCESS_SWITCH.get(place)
            if bridge is None:
                continue
            result = subprocess.run(["ip", "link", "set", "dev", bridge, "type", "bridge", "ageing_time", "0"],
                                    capture_output=True, text=True)
            if result.returncode:
                raise LabError(f"attacker on {place}: {result.stderr.strip()}")
        self.attacker = Attacker(self)

    def _configure_gateway(self) -> None:
        sg = self.host("sg")
        sg.cmd("sysctl -qw net.ipv6.conf.sg-lan.proxy_ndp=1 net.ipv6.neigh.sg-lan.proxy_delay=0")
        # With mobility the office home agent defends the home addresses of away nodes instead.
        for mn in ([] if self.mobility else self.external_mobile_nodes()):
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
{self._vcm_direct_forwarding()}
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
        if self.vcm_control == "direct":
            # The VCM's ESP to a care-of address leaves by the main table, not by the table that pulls
            # office traffic for away nodes into the SG tunnel (roles/security_gateway.py).
            out = sg.cmd(f"ip -6 rule add from {self.plan.office['vcm']} ipproto esp iif sg-lan lookup main "
                         "priority 90")
            if out.strip():
                raise LabError(f"sg: ip rule for the direct MN–VCM SAs: {out.strip()}")

    def _vcm_direct_forwarding(self) -> str:
        """Embodiment 2, direct MN–VCM SAs: the SG lets ESP to and from the VCM cross unopened."""
        if self.vcm_control != "direct":
            return ""
        vcm = self.plan.office["vcm"]
        return (f"        ip6 daddr {vcm} meta l4proto esp iifname \"sg-wan\" accept\n"
                f"        ip6 saddr {vcm} meta l4proto esp oifname \"sg-wan\" accept")

    def _make_configs(self) -> dict[str, dict]:
        if self.mobility:
            return self._make_mobility_configs()
        plan = self.plan
        vpn = list(plan.vpn_prefixes)
        sg_sas, sg_rules = [], []
        configs = {}
        for n, mn in enumerate(self.external_mobile_nodes()):
            coa = plan.current_address(mn)
            up_name, down_name = f"{mn.name}->sg", f"sg->{mn.name}"
            mn_tunnel, sg_tunnel = sa_pair(up_name, down_name, self.spi_base + SPI_TUNNEL + 2 * n, coa,
                                           plan.sg_public, mode="tunnel", encap=self._encap)
            home = f"{mn.home_address}/128"
            configs[mn.name] = self._node_config(
                mn.name, "mobile-node", addresses=[home], routes=vpn, interfaces=[f"{mn.name}-eth0"],
                sas=_sa_dicts(mn_tunnel),
                spd={"vpn_prefixes": vpn, "rules": [
                    {"direction": "out", "src": home, "dst": p, "action": "protect", "sa": up_name} for p in vpn
                ] + [
                    {"direction": "in", "src": p, "dst": home, "action": "protect", "sa": down_name} for p in vpn
                ]})
            sg_sas += _sa_dicts(sg_tunnel)
            sg_rules += [{"direction": "out", "src": p, "dst": home, "action": "protect", "sa": down_name}
                         for p in vpn]
            sg_rules += [{"direction": "in", "src": home, "dst": p, "action": "protect", "sa": up_name}
                         for p in vpn]
        configs["sg"] = self._node_config(
            "sg", "security-gateway", addresses=[],
            routes=[f"{mn.home_address}/128" for mn in self.external_mobile_nodes()],
            interfaces=["sg-wan"], sas=sg_sas, spd={"vpn_prefixes": vpn, "rules": sg_rules})
        return configs

    def _node_config(self, node, role, *, addresses, routes, interfaces, sas, spd, mobility=None,
                     tun_mtu=None) -> dict:
        config = {"node": node, "role": role,
                  "tun": {"name": TUN_NAME, "mtu": tun_mtu or self.tun_mtu, "addresses": addresses,
                          "routes": routes},
                  "outer_interfaces": interfaces, "sas": sas, "spd": spd,
                  "event_log": os.path.join(self.run_dir, f"{node}.events.jsonl"),
                  "control_socket": self.control_socket(node), "event_rate_limit": self.event_rate_limit,
                  # A restarted node app continues its SAs' sequence numbers from here (no nonce reuse).
                  "sequence_store": os.path.join(self.run_dir, f"{node}.seq.json"),
                  # SAs made at run time (the VCM's pairs), for the run's Wireshark profile
                  "key_log": os.path.join(self.run_dir, f"{node}.keys.jsonl"),
                  "fault_injection": self.fault_injection}
        if mobility is not None:
            config["mobility"] = mobility
        return config

    def _make_mobility_configs(self) -> dict[str, dict]:
        """Mobile IPv6 roles: every MN has its tunnel SA pair with the SG (as without mobility) plus ESP
        transport SA pairs for BU/BA with the office home agent and with the SG (RFC 3776); the HA signs
        its office announcements with an Ed25519 key of this lab, whose public half is all an MN holds.
        Keys are fresh per run."""
        plan = self.plan
        vpn = list(plan.vpn_prefixes)
        ha = plan.office["ha"]
        office_prefix = str(plan.office_prefix)

        announce_private, announce_public = generate_key_pair()
        timers = MobilityTimers(**{name: float(value) for name, value in self.mobility_timers.items()})
        sg_sas, sg_rules, sg_peers, ha_peers, configs, sections = [], [], [], [], {}, {}
        for n, mn in enumerate(self.external_mobile_nodes()):
            coa = plan.current_address(mn)
            home = mn.home_address
            # The SG's binding for the MN: keyed by the external home address in embodiment 1.
            sg_key = mn.external_home_address or home
            up, down = f"{mn.name}->sg", f"sg->{mn.name}"
            mn_tunnel, sg_tunnel = sa_pair(up, down, self.spi_base + SPI_TUNNEL + 2 * n, coa, plan.sg_public,
                                           mode="tunnel", encap=self._encap)
            mip = self.spi_base + SPI_MH + 4 * n
            mn_ha, ha_mn = sa_pair(f"{mn.name}->ha mh", f"ha->{mn.name} mh", mip, home, ha)
            mn_sg, sg_mn = sa_pair(f"{mn.name}->sg mh", f"sg->{mn.name} mh", mip + 2, sg_key, plan.sg_public)
            configs[mn.name] = self._node_config(
                mn.name, "mobile-node", addresses=[f"{home}/128"], routes=vpn, interfaces=[f"{mn.name}-eth0"],
                sas=_sa_dicts(mn_tunnel),
                spd={"vpn_prefixes": vpn, "rules": [
                    {"direction": "out", "src": "::/0", "dst": p, "action": "protect", "sa": up} for p in vpn
                ] + [
                    {"direction": "in", "src": p, "dst": "::/0", "action": "protect", "sa": down} for p in vpn
                ]})
            sections[mn.name] = MobileNodeSection(
                interface=f"{mn.name}-eth0", address=home, home_prefix=office_prefix, host_id=0xA0000 + mn.index,
                security_gateway=plan.sg_public, home_agent=ha, vpn_prefixes=tuple(vpn), tunnel_sas=(up, down),
                peers=(SaPeer.of(ha, mn_ha), SaPeer.of(plan.sg_public, mn_sg)), timers=timers,
                announcement={"public_key": announce_public}, sg_home_address=sg_key)
            ha_peers.append(SaPeer.of(home, ha_mn).to_dict())
            sg_peers.append({"address": sg_key, "inner": home, "name": mn.name, "tunnel_out": down, "tunnel_in": up,
                             **sg_mn.to_dict()})
            sg_sas += _sa_dicts(sg_tunnel)
        if (self.correspondent or self.route_optimisation or (self.vcm and self.vcm_pair == "home-ro")) \
                and plan.external_home_prefix is not None:
            self._add_external_configs(configs, sections)
        elif self.route_optimisation or (self.vcm and self.vcm_pair == "home-ro"):
            # Embodiment 2: the home addresses are public, so the MNs route-optimise with each other on
            # them (office HA): the paired MNs in clear, or every other MN as a possible VCM peer (RR
            # starts only when its KEYS arrive).
            for mn in self.external_mobile_nodes():
                peers = [b if a == mn.name else a for a, b in self.route_optimisation if mn.name in (a, b)]
                if self.vcm:
                    peers = [other.name for other in self.external_mobile_nodes() if other.name != mn.name]
                if peers:
                    sections[mn.name] = dataclasses.replace(
                        sections[mn.name], peer_data="vcm-esp" if self.vcm else "clear",
                        mobile_peers=tuple(MobilePeer(internal=plan.mobile(p).home_address,
                                                      external=plan.mobile(p).home_address, name=p) for p in peers))
        sg_homes = vpn + ([str(plan.external_home_prefix)] if plan.external_home_prefix is not None else [])
        sg_mobility = {"address": plan.sg_public, "local_addresses": [plan.office["sg"]], "home_prefixes": sg_homes,
                       "peers": sg_peers}
        if self.vcm:
            sg_rules += self._add_vcm_configs(configs, sections, sg_mobility)
        if self.mesh:
            sg_rules += self._add_mesh_configs(sections, sg_mobility)
        for name, section in sections.items():   # typed above, written as the node reads it
            configs[name]["mobility"] = section.to_dict()
        # The SG's tunnel to an MN carries the MN's packets inside the home agent's IPv6-in-IPv6 header
        # (RFC 6275 §10.4.5): an MN-sized packet plus those 40 octets must fit, or TCP between two MNs through
        # the SG stalls (the SG's Packet Too Big goes to the home agent, which does not pass it on).
        configs["sg"] = self._node_config(
            "sg", "security-gateway", addresses=[], routes=[], interfaces=["sg-wan", "sg-lan"], sas=sg_sas,
            spd={"vpn_prefixes": vpn, "rules": sg_rules}, mobility=sg_mobility,
            tun_mtu=max(self.tun_mtu, min(self.tun_mtu + MOBILITY_OVERHEAD, self.topo.mtu - TUN_OVERHEAD)))
        configs["ha"] = self._node_config(
            "ha", "home-agent", addresses=[], routes=[], interfaces=["ha-eth0"], sas=[],
            spd={"vpn_prefixes": [], "rules": []},
            mobility={"address": ha, "home_prefixes": [office_prefix], "interface": "ha-eth0", "peers": ha_peers,
                      "behind_security_gateway": True, "vpn_prefixes": vpn,
                      "announcement": {"interval": self.announcement_interval, "prefix": office_prefix,
                                       "private_key": announce_private}})
        return configs

    def _add_vcm_configs(self, configs: dict, sections: dict, sg_mobility: dict) -> list[dict]:
        """VCM built into the SG (docs/vcm-runtime.md): the SG's ``vcm`` section, each MN's agent section,
        and the SG's SPD rules that tie each MN's control datagrams (UDP between its home address and the
        SG's office address) to that MN's tunnel SA pair."""
        from nodeapps.roles.vcm_shell import mn_node_id
        host = self.vcm == "host"
        direct = host and self.vcm_control == "direct"
        sg_address = self.plan.office["sg"]
        vcm_address = self.plan.office["vcm"] if host else sg_address
        mns = self.external_mobile_nodes()
        names = {mn_node_id(mn.index): mn.name for mn in mns}
        reserved = list(range(self.spi_base, self.spi_base + SPI_RESERVED))

        entries, rules = [], []
        for mn in mns:
            external = mn.external_home_address or mn.home_address
            internal = mn.home_address if mn.external_home_address else None
            entry = {"node_id": mn_node_id(mn.index), "name": mn.name, "home": mn.home_address,
                     "external": external, "internal": internal}
            mn_side = None
            if direct:
                # MN–VCM SA sent directly (vcm-sa): tunnel mode, outer ends the care-of address (moved by
                # both ends) and the VCM, inner the home address (docs/vcm-runtime.md)
                mn_side, vcm_side = sa_pair(f"{mn.name}->vcm", f"vcm->{mn.name}",
                                            self.spi_base + 0x310 + 2 * mn.index, self.plan.current_address(mn),
                                            vcm_address, mode="tunnel")
                entry["control"] = "direct"
            elif host:   # MN–VCM SA (vcm-sa-in-sg-sa): ESP transport between home address and VCM
                mn_side, vcm_side = sa_pair(f"{mn.name}->vcm", f"vcm->{mn.name}",
                                            self.spi_base + SPI_VCM + 2 * mn.index, mn.home_address, vcm_address)
            if mn_side is not None:
                entry["sa"] = vcm_side.to_dict()
            sections[mn.name] = dataclasses.replace(sections[mn.name], vcm=VcmSection(
                node_id=mn_node_id(mn.index), address=vcm_address, external=external, internal=internal,
                sg_address=sg_address, names=names, variant=self.vcm,
                control="direct" if direct else "encapsulated", pair=self.vcm_pair, sa=mn_side,
                inbound_grace=self.vcm_inbound_grace))
            entries.append(entry)   # MN–VCM keys only in the VCM's config, not the SG's
            # Care-of notices (and, VCM in the SG, control) between the SG and the MN's home address.
            rules += [{"name": f"{mn.name}-vcm-in", "direction": "in", "src": f"{mn.home_address}/128",
                       "dst": f"{vcm_address}/128", "proto": None if host else 17, "action": "protect",
                       "sa": f"{mn.name}->sg"},
                      {"name": f"{mn.name}-vcm-out", "direction": "out", "src": f"{sg_address}/128",
                       "dst": f"{mn.home_address}/128", "proto": 17, "action": "protect", "sa": f"sg->{mn.name}"}]
        sg_mobility["vcm"] = {"variant": self.vcm, "address": vcm_address, "sg_address": sg_address,
                              "care_of_notices": self.vcm_pair == "care-of",
                              "binding_keys": self.spec.vcm_binding == "static-key",
                              "mns": [{k: v for k, v in e.items() if k != "sa"} for e in entries], "lifetime": self.vcm_lifetime, "reserved_spis": reserved}
        if host:   # SG–VCM SA (sg-vcm-sa) on the office LAN
            sg_side, vcm_side = sa_pair("sg->vcm", "vcm->sg", self.spi_base + SPI_GROUP + 0x10, sg_address,
                                        vcm_address)
            sg_mobility["vcm"]["sa"] = sg_side.to_dict()
            configs["vcm"] = self._node_config(
                "vcm", "vcm", addresses=[], routes=[], interfaces=["vcm-eth0"], sas=[],
                spd={"vpn_prefixes": [], "rules": []},
                mobility={"address": vcm_address, "peers": [], "vcm": {
                    "sg_address": sg_address, "sg_sa": vcm_side.to_dict(), "lifetime": self.vcm_lifetime,
                    "binding_keys": self.spec.vcm_binding == "static-key",
                    "reserved_spis": reserved, "mns": entries}})
        return rules

    def _add_mesh_configs(self, sections: dict, sg_mobility: dict) -> list[dict]:
        """The mesh baseline: every two mobile nodes hold an ESP tunnel-mode SA pair from the start (outer
        ends their current addresses, inner their home addresses), made like the VCM's pairs but before the
        run. The outer ends follow moves as the VCM's care-of pairs do: each MN moves its own end, and the
        SG's care-of notices (UDP inside its tunnel SA to each MN) move the peers' ends; a peer inside the
        office is reached through the SG. Returns the SG's SPD rules for those notices."""
        from nodeapps.roles.vcm_shell import mn_node_id
        mns = self.external_mobile_nodes()
        sg_address = self.plan.office["sg"]
        names = {mn_node_id(mn.index): mn.name for mn in mns}
        peers: dict[str, list] = {mn.name: [] for mn in mns}
        pair_index = 0
        for i, a in enumerate(mns):
            for b in mns[i + 1:]:
                ours, theirs = sa_pair(f"mesh {a.name}->{b.name}", f"mesh {b.name}->{a.name}",
                                       self.spi_base + SPI_MESH + 2 * pair_index, self.plan.current_address(a),
                                       self.plan.current_address(b), mode="tunnel")
                pair_index += 1
                for me, peer, pair in ((a, b, ours), (b, a, theirs)):
                    peers[me.name].append(MeshPeer(
                        node_id=mn_node_id(peer.index), name=peer.name, home=peer.home_address, out=pair.out,
                        in_=pair.in_,
                        care_of=None if peer.attachment == "office" else self.plan.current_address(peer)))
        rules = []
        for mn in mns:
            sections[mn.name] = dataclasses.replace(sections[mn.name], mesh=MeshSection(
                sg_address=sg_address, peers=tuple(peers[mn.name]), names=names, node_id=mn_node_id(mn.index)))
            rules.append({"name": f"{mn.name}-notice-out", "direction": "out", "src": f"{sg_address}/128",
                          "dst": f"{mn.home_address}/128", "proto": 17, "action": "protect", "sa": f"sg->{mn.name}"})
        sg_mobility["care_of_notices"] = {"sg_address": sg_address, "mns": [
            {"node_id": mn_node_id(mn.index), "name": mn.name, "home": mn.home_address} for mn in mns]}
        return rules

    def _add_external_configs(self, configs: dict, sections: dict) -> None:
        """Embodiment 1: each MN also registers its external home address with the external home agent
        ``xha`` (ESP transport SAs for BU/BA, tunnel-mode SAs for HoTI/HoT, RFC 3776) and does route
        optimisation with ``cn`` (``correspondent``) and with the MNs it is paired with
        (``route_optimisation``)."""
        plan = self.plan
        xha = plan.xha_address
        ext_prefix = str(plan.external_home_prefix)
        xha_peers, xha_tunnels = [], []

        for n, mn in enumerate(self.external_mobile_nodes()):
            ehoa, coa = mn.external_home_address, plan.current_address(mn)
            spi = self.spi_base + SPI_XHA + 4 * n
            mn_mh, xha_mh = sa_pair(f"{mn.name}->xha mh", f"xha->{mn.name} mh", spi, ehoa, xha)
            mn_tunnel, xha_tunnel = sa_pair(f"{mn.name}->xha tunnel", f"xha->{mn.name} tunnel", spi + 2, coa, xha,
                                            mode="tunnel")
            configs[mn.name]["tun"]["addresses"].append(f"{ehoa}/128")
            peers = [b if a == mn.name else a for a, b in self.route_optimisation if mn.name in (a, b)]
            vcm_ro = bool(self.vcm) and self.vcm_pair == "home-ro"
            if vcm_ro:   # every other MN may become a VCM peer; RR starts only when its KEYS arrive
                peers = [other.name for other in self.external_mobile_nodes() if other.name != mn.name]
            sections[mn.name] = dataclasses.replace(sections[mn.name], external=ExternalSection(
                address=ehoa, home_agent=xha,
                correspondents=(CORRESPONDENT_ADDRESS,) if self.correspondent else (),
                mobile_peers=tuple(MobilePeer(internal=plan.mobile(p).home_address,
                                              external=plan.mobile(p).external_home_address, name=p) for p in peers),
                peer_data="vcm-esp" if vcm_ro else "clear",
                peers=(SaPeer.of(xha, mn_mh),), tunnel_peer=SaPeer.of(xha, mn_tunnel)))
            xha_peers.append(SaPeer.of(ehoa, xha_mh).to_dict())
            xha_tunnels.append(SaPeer.of(ehoa, xha_tunnel).to_dict())
        configs["xha"] = self._node_config(
            "xha", "home-agent", addresses=[], routes=[], interfaces=["xha-up"], sas=[],
            spd={"vpn_prefixes": [], "rules": []},
            mobility={"address": xha, "home_prefixes": [ext_prefix], "interface": "xha-lan", "peers": xha_peers,
                      "tunnel_peers": xha_tunnels})
        if not self.correspondent:
            return
        configs["cn"] = self._node_config(
            "cn", "correspondent", addresses=[], routes=[ext_prefix], interfaces=["cn-eth0"], sas=[],
            spd={"vpn_prefixes": [], "rules": []},
            mobility={"address": CORRESPONDENT_ADDRESS, "interface": "cn-eth0", "peers": [],
                      "vpn_prefixes": list(plan.vpn_prefixes)})

    def _start_router_advertisements(self) -> None:
        """radvd on every access router and on the SG's office interface, at ``ra_intervals``."""
        low, high = self.ra_intervals
        routers = [(ACCESS_ROUTER[name], f"{ACCESS_ROUTER[name]}-lan", str(access.prefix))
                   for name, access in self.plan.access.items()]
        routers.append(("sg", "sg-lan", str(self.plan.office_prefix)))
        for node, interface, prefix in routers:
            conf = os.path.join(self.run_dir, f"radvd-{node}.conf")
            with open(conf, "w", encoding="ascii") as f:
                f.write(radvd_config(interface, prefix, low, high))
            proc = self.popen(node, ["radvd", "--nodaemon", "--config", conf, "--logmethod", "stderr",
                                     "--pidfile", os.path.join(self.run_dir, f"radvd-{node}.pid")],
                              f"radvd-{node}.log")
            self._radvd.append(proc)
        time.sleep(0.2)
        for proc, (node, _i, _p) in zip(self._radvd, routers):
            if proc.poll() is not None:
                with open(os.path.join(self.run_dir, f"radvd-{node}.log"), encoding="utf-8", errors="replace") as f:
                    raise LabError(f"radvd on {node} exited: {f.read().strip().splitlines()[-1:]}")

    # ---- movement ---------------------------------------------------------------------------------
    def move(self, mn: str, network: str, now: float | None = None, wait: bool = True) -> list[dict]:
        """Move mobile node ``mn`` to ``network`` (office, wlan1, wlan2, cell): its access port changes
        bridges and its link goes down and up (carrier loss, as when a radio re-associates). With ``wait``
        the call returns once the node has registered there (or is home and deregistered), at most
        MOVE_TIMEOUT_S. Returns the lab's and every node's events since the move, in time order, each with
        a wall-clock "time". ``now`` (wall clock) only stamps the first event."""
        if not self.mobility:
            raise LabError("move needs SvpnLab(mobility=True)")
        self.plan.mobile(mn)  # unknown name -> PlanError
        bridge = OFFICE_SWITCH if network == "office" else ACCESS_SWITCH.get(network)
        if bridge is None:
            raise LabError(f"network {network!r} is not one of office, {', '.join(ACCESS_SWITCH)}")
        host = self.host(mn)
        intf = host.intf(f"{mn}-eth0")
        port = intf.link.intf2.name if intf.link.intf1 is intf else intf.link.intf1.name
        start = time.time()
        events = [{"time": now if now is not None else start, "node": "lab", "event": "move_requested", "mn": mn,
                   "from": self.attachment[mn], "to": network}]

        def lab_event(name, **fields):
            events.append({"time": time.time(), "node": "lab", "event": name, "mn": mn, **fields})

        host.cmd(f"ip link set dev {mn}-eth0 down")
        lab_event("link_down")
        for command in (["ip", "link", "set", "dev", port, "nomaster"],
                        ["ip", "link", "set", "dev", port, "master", bridge]):
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode:
                raise LabError(f"move {mn}: {' '.join(command)}: {result.stderr.strip()}")
        lab_event("port_moved", port=port, bridge=bridge)
        host.cmd(f"ip link set dev {mn}-eth0 up")
        lab_event("link_up")
        self.attachment[mn] = network
        if wait:
            self._wait_registered(mn, network, start)
        events += [e for e in self.events() if e["time"] >= start]
        return sorted(events, key=lambda e: e["time"])

    def wait_registered(self, names: list[str] | None = None, timeout: float = 30.0,
                        stop=None) -> float:
        """Seconds until every named mobile node away from the office (default: all) has all its bindings
        (office HA, SG, external HA) holding its care-of address. Sessions started earlier lose their first
        return routability messages at a home agent that does not know the peer yet. LabError after
        ``timeout``; None at once if ``stop`` (a threading.Event) is set."""
        if names is None:
            names = [mn.name for mn in self.external_mobile_nodes()]
        pending = {n for n in names if self.attachment.get(n) != "office"}
        start = time.monotonic()
        while pending:
            self.check_nodes()
            pending = {n for n in pending if not self.status(n)["mobility"].get("registered")}
            if not pending:
                break
            if time.monotonic() - start > timeout:
                raise LabError(f"{len(pending)} mobile node(s) not registered within {timeout:g} s "
                               f"(e.g. {sorted(pending)[0]})")
            if stop is None:
                time.sleep(0.05)
            elif stop.wait(0.05):
                return None
        return time.monotonic() - start

    def _wait_registered(self, mn: str, network: str, since: float) -> None:
        plan_mn = self.plan.mobile(mn)
        if network == "office":
            def done(e):
                return e["event"] == "binding_deregistered" and e.get("kind") == "home-agent"
        else:
            coa = plan_mn.address_in(self.plan.access[network])

            def done(e):
                return (e["event"] == "binding_acknowledged" and e.get("kind") == "home-agent"
                        and e.get("care_of_address") == coa)
        deadline = time.monotonic() + MOVE_TIMEOUT_S
        path = os.path.join(self.run_dir, f"{mn}.events.jsonl")
        log = JsonLinesTail(path)
        while time.monotonic() < deadline:
            self.check_nodes()
            if any(record.get("time", 0) >= since and done(record) for record in log.read_new()):
                return
            time.sleep(0.01)
        raise LabError(f"move {mn} to {network}: no registration within {MOVE_TIMEOUT_S:.0f} s "
                       f"(events in {path})")

    def _start_vpn_nodes(self) -> None:
        if not self.external_mobile_nodes():
            return
        self.node_configs = self._make_configs()
        for node, config in self.node_configs.items():
            path = os.path.join(self.run_dir, f"{node}.json")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(config, f, indent=1)
        # Gateways and home agents first: an MN's first BUs, sent as it starts, would otherwise find no
        # listener and wait for their retransmission (1.5 s for a first registration, RFC 6275 §13).
        mobile = [n for n, c in self.node_configs.items() if c["role"] == "mobile-node"]
        infrastructure = [n for n in self.node_configs if n not in mobile]
        for group in (infrastructure, mobile):
            for node in group:
                self._launch(node)
            self._wait_ready(group)

    def _launch(self, node: str) -> None:
        log = open(os.path.join(self.run_dir, f"{node}.log"), "ab")
        self.apps[node] = self.host(node).popen(
            [sys.executable, "-m", "nodeapps.node", os.path.join(self.run_dir, f"{node}.json")],
            stdout=log, stderr=subprocess.STDOUT, cwd=os.path.dirname(os.path.dirname(__file__)))
        log.close()

    def _wait_ready(self, nodes: list[str]) -> None:
        timeout = READY_TIMEOUT_S + READY_TIMEOUT_PER_NODE_S * len(nodes)
        deadline = time.monotonic() + timeout
        for node in nodes:
            while not os.path.exists(self.control_socket(node)):
                self.check_nodes()
                if time.monotonic() > deadline:
                    raise LabError(f"node app on {node} did not become ready within {timeout:.0f} s")
                time.sleep(0.02)
        self.check_nodes()

    def _node_app(self, node: str) -> subprocess.Popen:
        if node not in self.apps:
            raise LabError(f"no node app on {node!r} (node apps: {', '.join(self.apps) or 'none'})")
        return self.apps[node]

    def kill(self, node: str) -> None:
        """Crash a node app (SIGKILL: no teardown of its own, as after a fault); ``restart`` brings it back."""
        proc = self._node_app(node)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self, node: str) -> float:
        """Start a node app again with its configuration (after ``kill``, or killing it first); returns
        the time it took to answer on its control socket. Its SAs continue their sequence numbers from
        the node's sequence store, so no nonce is used twice."""
        self.kill(node)
        started = time.monotonic()
        socket_path = self.control_socket(node)
        if os.path.exists(socket_path):
            os.unlink(socket_path)   # the dead process's socket; readiness is its new one
        self._launch(node)
        self._wait_ready([node])
        return time.monotonic() - started

    def control(self, node: str, cmd: str, **args) -> dict:
        """One control request to a node app; its refusal (or an unknown node) as a one-line LabError."""
        self._node_app(node)
        from nodeapps.runtime.control import request
        try:
            return request(self.control_socket(node), cmd, **args)
        except OSError as exc:
            raise LabError(f"{node}: {exc}") from None

    def drop_next(self, node: str, message: str, direction: str | None = None, count: int = 1) -> dict:
        """Make ``node`` lose its next ``count`` ``message`` (a Mobility Header or VCM message name) at its
        shell boundary, "in" (default: on its way to the node's core) or "out" (on its way out); needs
        ``fault_injection=True``. Returns what the node armed."""
        args = {"message": message, "count": count}
        if direction is not None:
            args["direction"] = direction
        return self.control(node, "drop-next", **args)

    def processes(self) -> dict[str, int]:
        """PID of every long-running process the lab started, by name: node apps (node name), link
        emulators (the emulator's node name) and router advertisement daemons (radvd-<router>)."""
        procs = {node: p.pid for node, p in self.apps.items()}
        for link in self._links:
            process = getattr(link, "process", None)
            if process is not None and getattr(link, "hidden", None) is not None:
                procs[link.hidden.name] = process.pid
        for proc in self._radvd:
            name = os.path.basename(proc.args[proc.args.index("--config") + 1]).removesuffix(".conf")
            procs[name] = proc.pid
        return procs

    def link_metadata(self) -> dict:
        """Which emulation backend each link used, with its counters and faithfulness (also after stop)."""
        return emulation_metadata(self._links)

    def events(self) -> list[dict]:
        """Every node's event log, merged in time order."""
        records = []
        for node in self.node_configs:
            records += read_json_lines(os.path.join(self.run_dir, f"{node}.events.jsonl"))
        return sorted(records, key=lambda r: r.get("time", 0))


def _sa_dicts(pair: SaPair) -> list[dict]:
    """A node's top-level ``sas`` entries for one pair: out, then in."""
    return [pair.out.to_dict(), pair.in_.to_dict()]


def handler_error_report(handler_errors: dict, events: list, *, shown: int = 3) -> str:
    """One line per node that caught exceptions in its handlers (and its first ``handler_error`` events);
    "" when every node ended with none."""
    lines = []
    for node, count in sorted(handler_errors.items()):
        if count > 0:
            lines.append(f"{node}: handler_errors = {count}")
            for e in [e for e in events if e.get("node") == node][:shown]:
                detail = ", ".join(f"{k}={e[k]}" for k in ("handler", "reason", "cmd", "bytes", "head") if k in e)
                lines.append(f"  {detail}")
    return "\n".join(lines)


def radvd_config(interface: str, prefix: str, min_interval: float, max_interval: float) -> str:
    """radvd.conf for one link. The Advertisement Interval option (RFC 6275 §7.3) lets radvd accept the
    Mobile IPv6 interval minimums and tells movement detection how often to expect an RA."""
    return f"""interface {interface} {{
    AdvSendAdvert on;
    MinRtrAdvInterval {min_interval:g};
    MaxRtrAdvInterval {max_interval:g};
    AdvIntervalOpt on;
    AdvDefaultLifetime 1800;
    prefix {prefix} {{
        AdvOnLink on;
        AdvAutonomous on;
    }};
}};
"""


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


def _terminate_all(procs: list[subprocess.Popen], grace: float = 3.0) -> None:
    """SIGTERM to every process first, then wait: a node app needs up to a second to exit, and with
    100 mobile nodes one after another that was 100 s."""
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _terminate(proc, grace)


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
