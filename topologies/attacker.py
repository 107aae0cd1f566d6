"""The lab's attacker: host ``atk`` on visited networks and/or the Internet core, and a compromised MN.

    with SvpnLab(mobility=True, attacker=["wlan1", "core"]) as lab:
        atk = lab.attacker
        frames = atk.sniff("wlan1", 1.0)                     # Ethernet frames heard on WLAN 1
        atk.replay("wlan1", [f for f in frames if is_esp(f)])
        atk.inject("core", IPv6(src=..., dst=lab.plan.sg_public) / IPv6ExtHdrDestOpt() / UDP())
        mn1 = atk.compromised("mn1")                          # holds mn1's own keys (lab.node_configs)
        atk.inject("wlan1", mn1.tunnel(inner_packet))         # ESP under mn1's SG tunnel SA

Theory of operation: packets are built here, in the lab's process (scapy, the project's ESP code), and
written to a file in the lab's run directory as Ethernet frames; a tiny sender
(``python -m topologies.attack_sender``) started inside atk's namespace puts them on the wire by an
AF_PACKET socket, so spoofed sources, hop limits and extension headers leave exactly as built. A visited
network's access bridge floods every frame to every port while atk is on it (like a radio medium), so
``sniff`` hears the other stations' traffic. The compromised MN seals with copies of the MN's SAs; it
starts its sequence numbers a little above the MN's own (read from the MN's status), inside the
receiver's replay window, so the attacker's packets are judged by policy, not by the window.
"""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

from nodeapps import ipv6
from nodeapps.esp.sa import SecurityAssociation
from nodeapps.runtime.mobility import TransportPeer
from topologies.pcap import pcap_frames
from topologies.svpn import ACCESS_ROUTER, attacker_address, attacker_interface

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ETH_P_IPV6 = b"\x86\xdd"
SEND_TIMEOUT_S = 20.0
# How far above the MN's own last sequence number the attacker starts: inside a 64-packet window.
SEQ_AHEAD = 20


class AttackerError(RuntimeError):
    """A request the attacker cannot carry out; the message is one line."""


def _mac_bytes(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def _raw(packet) -> bytes:
    return packet if isinstance(packet, (bytes, bytearray)) else bytes(packet)


class Attacker:
    def __init__(self, lab):
        self.lab = lab
        self.places = list(lab.topo.attacker_places)
        self.host = lab.host("atk")
        self._sent = 0
        self._compromised: dict[str, CompromisedNode] = {}

    # ---- where atk is -----------------------------------------------------------------------------
    def _check(self, place: str) -> None:
        if place not in self.places:
            raise AttackerError(f"the attacker is not on {place!r} (places: {', '.join(self.places)})")

    def address(self, place: str) -> str:
        self._check(place)
        return attacker_address(self.lab.plan, place)

    def interface(self, place: str) -> str:
        self._check(place)
        return attacker_interface(place)

    def mac(self, place: str) -> str:
        return self.host.intf(self.interface(place)).MAC()

    def link_local(self, place: str) -> str:
        """atk's EUI-64 link-local address on ``place`` (RAs must come from one, RFC 4861 §6.1.2)."""
        mac = _mac_bytes(self.mac(place))
        eui = bytes([mac[0] ^ 2]) + mac[1:3] + b"\xff\xfe" + mac[3:]
        return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))

    def next_hop_mac(self, place: str, destination: str) -> str:
        """The Ethernet destination of a packet to ``destination`` sent at ``place``."""
        self._check(place)
        dst = ipaddress.IPv6Address(destination)
        if dst.is_multicast:
            return "33:33:" + ":".join(f"{b:02x}" for b in dst.packed[-4:])
        lab = self.lab
        if place == "core":
            return lab.host("ir").intf("ir-atk").MAC()
        access = lab.plan.access[place]
        if dst in access.prefix:
            for mn in lab.plan.mobile_nodes:
                if lab.attachment.get(mn.name) == place and mn.address_in(access) == str(dst):
                    return lab.host(mn.name).intf(f"{mn.name}-eth0").MAC()
        router = ACCESS_ROUTER[place]
        return lab.host(router).intf(f"{router}-lan").MAC()

    def frame(self, place: str, packet, dst_mac: str | None = None) -> bytes:
        """An Ethernet frame around an IPv6 packet (bytes or scapy), from atk's MAC at ``place``."""
        data = _raw(packet)
        if len(data) < 40 or data[0] >> 4 != 6:
            raise AttackerError("inject takes IPv6 packets (use send_frames for whole frames)")
        dst = dst_mac or self.next_hop_mac(place, ipv6.ntop(data[24:40]))
        return _mac_bytes(dst) + _mac_bytes(self.mac(place)) + ETH_P_IPV6 + data

    # ---- acting ------------------------------------------------------------------------------------
    def inject(self, place: str, packets, gap: float = 0.0, dst_mac: str | None = None) -> int:
        """Send IPv6 packets (bytes or scapy packets; one or a list) from ``place``; returns how many left."""
        if isinstance(packets, (bytes, bytearray)) or not isinstance(packets, (list, tuple)):
            packets = [packets]
        return self.send_frames(place, [self.frame(place, p, dst_mac) for p in packets], gap)

    def replay(self, place: str, frames, gap: float = 0.0) -> int:
        """Send captured Ethernet frames again, unchanged."""
        return self.send_frames(place, list(frames), gap)

    def send_frames(self, place: str, frames, gap: float = 0.0) -> int:
        from topologies.attack_sender import write_frames
        interface = self.interface(place)
        if not frames:
            return 0
        self._sent += 1
        path = os.path.join(self.lab.run_dir, f"atk-frames-{self._sent}.bin")
        write_frames(path, frames)
        proc = self.host.popen([sys.executable, "-m", "topologies.attack_sender", interface, path, "--gap",
                                str(gap)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        try:
            out, err = proc.communicate(timeout=SEND_TIMEOUT_S + gap * len(frames))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AttackerError(f"sending {len(frames)} frames on {place} did not finish") from None
        finally:
            os.unlink(path)
        text = out.decode(errors="replace").strip()
        if proc.returncode != 0 or not text.startswith("sent "):
            raise AttackerError(f"sending on {place}: {err.decode(errors='replace').strip() or text}")
        return int(text.split()[1])

    def sniff(self, place: str, seconds: float, bpf: str = "ip6", name: str | None = None) -> list[bytes]:
        """Ethernet frames heard on ``place`` for ``seconds`` (pcap kept in the lab's run directory)."""
        interface = self.interface(place)
        self._sent += 1
        path = os.path.join(self.lab.run_dir, name or f"atk-sniff-{self._sent}-{place}.pcap")
        proc = self.host.popen(["timeout", "-s", "INT", f"{seconds:g}", "tcpdump", "--immediate-mode", "-n", "-U",
                                "-s", "0", "-i",
                                interface, "-w", path] + bpf.split(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
        try:
            _out, err = proc.communicate(timeout=seconds + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AttackerError(f"sniffing on {place} did not stop") from None
        if not os.path.exists(path):
            raise AttackerError(f"sniffing on {place}: {err.decode(errors='replace').strip()[-200:]}")
        return [frame for _t, frame in pcap_frames(path)]

    def compromised(self, mn: str) -> "CompromisedNode":
        if mn not in self.lab.node_configs or self.lab.node_configs[mn].get("role") != "mobile-node":
            raise AttackerError(f"{mn!r} is not a mobile node of this lab")
        if mn not in self._compromised:   # one per MN: its SA copies keep their sequence numbers
            self._compromised[mn] = CompromisedNode(self.lab, mn)
        return self._compromised[mn]


class CompromisedNode:
    """Everything a thief of MN ``name``'s configuration can build: ESP under its SG tunnel SA, under its
    Mobility Header SAs with the HA and the SG, and under its SA with the VCM."""

    def __init__(self, lab, name: str):
        self.lab = lab
        self.name = name
        self.config = lab.node_configs[name]
        self.mobility = self.config.get("mobility") or {}
        self.home_address = self.mobility.get("address")
        self._sas: dict[str, SecurityAssociation] = {}   # copies of the MN's outbound SAs, by name
        self._peers: dict[str, TransportPeer] = {}

    def current_seq(self, sa_name: str) -> int:
        """The MN's last sequence number sent on its SA ``sa_name``, from its status (0 if not found)."""
        found = []

        def walk(node):
            if isinstance(node, dict):
                if node.get("name") == sa_name and isinstance(node.get("seq"), int):
                    found.append(node["seq"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
        walk(self.lab.status(self.name))
        return max(found, default=0)

    def _out_sa(self, config: dict, seq: int | None, sa: SecurityAssociation | None = None) -> SecurityAssociation:
        """Our copy of one of the MN's outbound SAs; by default it goes on from the higher of its own last
        number and the MN's current one plus SEQ_AHEAD, so no two attacker packets share a number."""
        if sa is None:
            sa = self._sas.get(config["name"])
            if sa is None:
                sa = self._sas[config["name"]] = SecurityAssociation.from_config(config)
        sa.seq = max(sa.seq, self.current_seq(sa.name) + SEQ_AHEAD) if seq is None else seq
        return sa

    def tunnel_sa_config(self) -> dict:
        for sa in self.config["sas"]:
            if sa["direction"] == "out" and sa["mode"] == "tunnel":
                return sa
        raise AttackerError(f"{self.name} has no outbound tunnel SA")

    def tunnel(self, inner, seq: int | None = None, count: int = 1) -> list[bytes]:
        """``inner`` (an IPv6 packet, or a list of them) sealed under the MN's SG tunnel SA (``count`` times
        each), outer header from the MN's care-of address to the SG, as the MN would send it. ``seq``: the
        number before the first one used (default a little above the MN's own)."""
        sa = self._out_sa(self.tunnel_sa_config(), seq)
        inners = inner if isinstance(inner, list) else [inner]
        out = []
        for packet in inners:
            for _ in range(count):
                esp = sa.seal(ipv6.NH_IPV6, _raw(packet))
                out.append(ipv6.build_header(sa.local_bytes, sa.remote_bytes, ipv6.NH_ESP, len(esp)) + esp)
        return out

    def care_of(self) -> str:
        """The MN's care-of address now (from its status; else where its configuration put it)."""
        mobility = self.lab.status(self.name).get("mobility") or {}
        return mobility.get("care_of_address") or self.tunnel_sa_config()["local"]

    def reverse_tunnel(self, inner) -> list[bytes]:
        """``inner`` (one IPv6 packet or a list) as the MN sends its own traffic to the office: inside IPv6
        from its care-of address to its home agent (RFC 6275 §11.3.1). The SG's policy for the MN's tunnel
        names that care-of address as the source, so only a packet wrapped like this reaches the SG's checks
        of the innermost source."""
        care_of, home_agent = ipv6.pton(self.care_of()), ipv6.pton(self.mobility["home_agent"])
        inners = inner if isinstance(inner, list) else [inner]
        return [ipv6.build_header(care_of, home_agent, ipv6.NH_IPV6, len(raw)) + raw for raw in map(_raw, inners)]

    def caught_up(self) -> bool:
        """True once the MN's own tunnel SA has gone past every sequence number we used on it: each number
        we took is one the MN's next packet with that number loses (a replay at the SG) until then."""
        name = self.tunnel_sa_config()["name"]
        ours = self._sas.get(name)
        return ours is None or self.current_seq(name) >= ours.seq

    def mobility_peer(self, address: str) -> dict:
        for peer in self.mobility.get("peers", []):
            if peer["address"] == address:
                return peer
        raise AttackerError(f"{self.name} has no Mobility Header SA with {address}")

    def mh(self, peer_address: str, packet, seq: int | None = None) -> bytes:
        """A Mobility Header packet (with its HAO, if any) under the MN's ESP transport SA with the peer."""
        peer = self.mobility_peer(peer_address)
        tp = self._peers.get(peer_address)
        if tp is None:
            tp = self._peers[peer_address] = TransportPeer(peer["address"], peer["out"], peer["in"])
        self._out_sa(peer["out"], seq, tp.out_sa)
        out = tp.seal(_raw(packet))
        if out is None:
            raise AttackerError(f"{self.name}: the MH SA with {peer_address} refused the packet")
        return out

    def vcm_control(self, payloads, sport: int = 7420) -> list[bytes]:
        """VCM control datagrams (one payload or a list) from the MN's home address, on the path its agent
        uses: UDP to the SG's office address inside the tunnel (VCM in the SG), or ESP transport to the VCM
        host inside it."""
        from scapy.layers.inet import UDP
        from scapy.layers.inet6 import IPv6
        section = self.mobility.get("vcm")
        if not section:
            raise AttackerError(f"{self.name} has no VCM section (start the lab with vcm=...)")
        vcm = section["address"]
        payloads = payloads if isinstance(payloads, list) else [payloads]
        datagrams = [bytes(IPv6(src=self.home_address, dst=vcm, hlim=64) / UDP(sport=sport, dport=7420) / payload)
                     for payload in payloads]
        if "sa" not in section:
            return self.tunnel(datagrams)
        sa = self._out_sa(section["sa"]["out"], None)
        inners = []
        for datagram in datagrams:
            esp = sa.seal(ipv6.NH_UDP, datagram[40:])
            inners.append(ipv6.build_header(sa.local_bytes, sa.remote_bytes, ipv6.NH_ESP, len(esp)) + esp)
        return self.tunnel(inners)

    def announcement_sa(self) -> dict | None:
        section = self.mobility.get("announcement") or {}
        return section.get("sa")
