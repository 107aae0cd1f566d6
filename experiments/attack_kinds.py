"""What an attack sends: the builders of ``experiments/attacks.py``, one per ``kind`` of the attack files.

Each kind has a parameter schema ``{name: (types, required)}`` (checked by experiments/attack_table.py
before any lab starts) and a function ``build(ctx, attack) -> str`` that sends through ``ctx.attacker``
(topologies/attacker.py) and returns a short description of what left. Packets are built with scapy and
sealed with the project's own ESP code; a compromised MN uses its own configured keys.

Address names in parameters: ``sg`` (its public address), ``ha``, ``xha``, ``cn``, ``fs``, ``mnN`` (care-of
address), ``mnN.home`` (VPN home address), ``mnN.external`` (external home address in the private plan,
the home address in the public one). A name the current plan lacks (``xha`` in the public plan) is skipped.
"""
from __future__ import annotations

import os
import random
import struct

STR, INT, BOOL, LIST = str, int, bool, list


class BuildError(RuntimeError):
    """An attack could not be built in this lab; one line."""


class Ctx:
    """What builders see: the lab, its attacker, the configuration and a seeded random generator."""

    def __init__(self, lab, plan: str, vcm: str, seed: int = 1):
        self.lab = lab
        self.attacker = lab.attacker
        self.plan_name = plan
        self.vcm = vcm
        self.rng = random.Random(seed)

    def address(self, name: str) -> str | None:
        from topologies.svpn import CORRESPONDENT_ADDRESS
        plan = self.lab.plan
        if name == "sg":
            return plan.sg_public
        if name in ("ha", "fs", "vcm"):
            return plan.office[name]
        if name == "xha":
            return plan.xha_address
        if name == "cn":
            return CORRESPONDENT_ADDRESS if self.lab.correspondent else None
        base, _, part = name.partition(".")
        try:
            mn = plan.mobile(base)
        except ValueError:
            raise BuildError(f"unknown address name {name!r}") from None
        if part == "":
            where = self.lab.attachment[base]
            return mn.home_address if where == "office" else mn.address_in(plan.access[where])
        if part == "home":
            return mn.home_address
        if part == "external":
            return mn.external_home_address or mn.home_address
        raise BuildError(f"unknown address name {name!r}")

    def addresses(self, names) -> list[str]:
        return [a for a in (self.address(n) for n in names) if a is not None]

    def place_of(self, attack) -> str:
        """Where the attack's packets leave: its place, or the compromised MN's own visited network."""
        if attack.compromised:
            return self.lab.attachment[attack.compromised]
        return attack.source


def _place_address(ctx, attack) -> str:
    return ctx.attacker.address(ctx.place_of(attack))


def _eth_ipv6(frame: bytes):
    """(next header, source, destination) of an Ethernet frame carrying IPv6, or None."""
    if len(frame) < 54 or frame[12:14] != b"\x86\xdd":
        return None
    return frame[20], frame[22:38], frame[38:54]


def _esp_frames_to(ctx, attack, destination: str, seconds: float) -> list[bytes]:
    import ipaddress
    want = ipaddress.IPv6Address(destination).packed
    frames = ctx.attacker.sniff(ctx.place_of(attack), seconds, bpf="ip6 proto 50")
    out = [f for f in frames if (h := _eth_ipv6(f)) and h[0] == 50 and h[2] == want]
    if not out:
        raise BuildError(f"heard no ESP to {destination} on {ctx.place_of(attack)} in {seconds:g} s")
    return out


# ---- ESP -----------------------------------------------------------------------------------------------

def esp_replay(ctx, attack) -> str:
    p = attack.params
    frames = _esp_frames_to(ctx, attack, ctx.address(p.get("target", "sg")), p.get("sniff_seconds", 0.6))
    frames = frames[:p.get("count", 10)]
    sent = ctx.attacker.replay(ctx.place_of(attack), frames)
    return f"{sent} captured ESP frames sent again"


def esp_tamper(ctx, attack) -> str:
    """Captured ESP with its sequence number moved ahead (inside no window yet) and one ciphertext octet
    flipped: the window lets it through to the ICV check, which must fail (RFC 4303 §3.4.4)."""
    p = attack.params
    frames = _esp_frames_to(ctx, attack, ctx.address(p.get("target", "sg")), p.get("sniff_seconds", 0.6))
    out = []
    for i, frame in enumerate(frames[:p.get("count", 5)]):
        data = bytearray(frame)
        seq = struct.unpack_from("!I", data, 58)[0]
        struct.pack_into("!I", data, 58, (seq + 1000 + i) & 0xFFFFFFFF)
        data[-20] ^= 0x5A
        out.append(bytes(data))
    return f"{ctx.attacker.replay(ctx.place_of(attack), out)} tampered ESP frames"


def esp_unknown_spi(ctx, attack) -> str:
    from nodeapps import ipv6
    p = attack.params
    src = _place_address(ctx, attack)
    packets = []
    for target in ctx.addresses(p.get("targets", ["sg"])):
        for i in range(p.get("count", 5)):
            body = struct.pack("!II", 0xDEAD0000 + ctx.rng.randrange(0x10000), i + 1) + os.urandom(64)
            packets.append(ipv6.build_header(ipv6.pton(src), ipv6.pton(target), ipv6.NH_ESP, len(body)) + body)
    return f"{ctx.attacker.inject(ctx.place_of(attack), packets)} ESP packets with unknown SPIs"


def esp_out_of_window(ctx, attack) -> str:
    """A compromised MN's tunnel SA used with sequence numbers far below its window (RFC 4303 §3.4.3)."""
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6
    node = ctx.attacker.compromised(attack.compromised)
    inner = IPv6(src=node.home_address, dst=ctx.address("fs")) / UDP(sport=40000, dport=9) / b"old"
    packets = node.tunnel(inner, seq=0, count=attack.params.get("count", 3))
    return f"{ctx.attacker.inject(ctx.place_of(attack), packets)} ESP packets with sequence numbers 1.."


# ---- clear packets with extension headers ----------------------------------------------------------------

EXTHDR_VARIANTS = ("dstopts_padn_udp", "hao_data", "rh2_data", "bu_clear")


def _exthdr_packet(variant: str, src: str, dst: str, home: str, sequence: int):
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import HAO, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, MIP6MH_BU, PadN
    base = IPv6(src=src, dst=dst, hlim=64)
    if variant == "dstopts_padn_udp":
        return base / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")]) / UDP(sport=40001, dport=7777) / (b"x" * 16)
    if variant == "hao_data":
        return base / IPv6ExtHdrDestOpt(options=[HAO(hoa=home)]) / UDP(sport=40002, dport=7777) / (b"x" * 16)
    if variant == "rh2_data":
        return base / IPv6ExtHdrRouting(type=2, segleft=1, addresses=[home]) / UDP(sport=40003, dport=7777) / (b"x" * 16)
    if variant == "bu_clear":
        return base / IPv6ExtHdrDestOpt(options=[HAO(hoa=home)]) / MIP6MH_BU(seq=sequence, flags="AH", mhtime=100)
    raise BuildError(f"unknown variant {variant!r}")


def clear_exthdr(ctx, attack) -> str:
    p = attack.params
    variants = p.get("variants", list(EXTHDR_VARIANTS))
    for v in variants:
        if v not in EXTHDR_VARIANTS:
            raise BuildError(f"params.variants: {v!r} is not one of {', '.join(EXTHDR_VARIANTS)}")
    src = _place_address(ctx, attack)
    home = ctx.address(p.get("home", "mn1.home"))
    packets = [_exthdr_packet(v, src, dst, home, ctx.rng.randrange(1, 65536))
               for dst in ctx.addresses(p.get("targets", ["sg"])) for v in variants
               for _ in range(p.get("count", 2))]
    return f"{ctx.attacker.inject(ctx.place_of(attack), packets)} clear packets ({', '.join(variants)})"


# ---- binding updates -----------------------------------------------------------------------------------

def _spread_sequences(start: int) -> list[int]:
    """Four sequence numbers a quarter of the space apart: whatever the receiver's last one, two of them are
    "greater" in RFC 6275 §9.5.1's modulo-2^16 sense, so a refusal is by policy, not by sequence."""
    return [(start + k * 0x4000) & 0xFFFF for k in range(4)]


def bu_for_other(ctx, attack) -> str:
    """A compromised MN's BU for another MN's home address, under its own MH SA (RFC 3776 §4): at the office
    HA (inside the MN's SG tunnel, as the MN sends it) or at the SG."""
    from nodeapps import ipv6
    from nodeapps.mobility import messages as m
    p = attack.params
    node = ctx.attacker.compromised(attack.compromised)
    victim = p["victim"]
    at = p.get("at", "ha")
    care_of = node.care_of()   # the MN's own: the SG's policy for its tunnel names it as the BU's source
    config = node.config["mobility"]
    if at == "ha":
        peer, home = config["home_agent"], ctx.address(f"{victim}.home")
    elif at == "sg":
        peer, home = config["security_gateway"], ctx.address(f"{victim}.external")
    else:
        raise BuildError(f"params.at: {at!r} is not ha or sg")
    sealed = []
    for sequence in _spread_sequences(ctx.rng.randrange(0x10000)):
        bu = m.BindingUpdate(sequence, 60, ack=True, home_registration=True,
                             options=(m.AlternateCareOfAddress(ipv6.pton(care_of)),))
        mh = m.build_mobility_packet(ipv6.pton(care_of), ipv6.pton(peer), bu, home_address=ipv6.pton(home))
        sealed.append(node.mh(peer, mh))
    packets = node.tunnel(sealed) if at == "ha" else sealed
    return f"{ctx.attacker.inject(ctx.place_of(attack), packets)} BUs for {victim} under {node.name}'s SA at {at}"


def bu_bad_authenticator(ctx, attack) -> str:
    """Return-routability BUs (nonce indices, Binding Authorization Data) with a random authenticator."""
    from nodeapps import ipv6
    from nodeapps.mobility import messages as m
    p = attack.params
    src = _place_address(ctx, attack)
    home = ctx.address(p.get("home", "mn1.external"))
    packets = []
    for dst in ctx.addresses(p.get("targets", ["cn"])):
        for index in range(p.get("indices", 4)):
            bu = m.BindingUpdate(ctx.rng.randrange(1, 65536), 60, ack=True,
                                 options=(m.NonceIndices(index, index), m.BindingAuthorizationData(os.urandom(12))))
            packets.append(m.build_mobility_packet(ipv6.pton(src), ipv6.pton(dst), bu, home_address=ipv6.pton(home)))
    return f"{ctx.attacker.inject(ctx.place_of(attack), packets)} BUs with a wrong authenticator"


# ---- spoofed sources after decapsulation -----------------------------------------------------------------

def spoof_decap(ctx, attack) -> str:
    """Clear packets whose source after decapsulation is an office (VPN) address: via a HAO, a type 2
    routing header, or IPv6-in-IPv6 with the home agent as outer source (RFC 4301 §5.2)."""
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import HAO, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting
    p = attack.params
    via = p["via"]
    victim = p.get("victim", "mn2")
    office = ctx.address(p.get("office_source", "fs"))
    care_of, home = ctx.address(victim), ctx.address(f"{victim}.home")
    payload = UDP(sport=40004, dport=p.get("port", 7777)) / b"spoofed office source"
    src = _place_address(ctx, attack)
    if via == "hao":
        packet = IPv6(src=src, dst=care_of) / IPv6ExtHdrDestOpt(options=[HAO(hoa=office)]) / payload
    elif via == "rh2":
        packet = IPv6(src=office, dst=care_of) / IPv6ExtHdrRouting(type=2, segleft=1, addresses=[home]) / payload
    elif via == "ip6ip6":
        outer = ctx.address(p.get("outer", "ha"))
        packet = IPv6(src=outer, dst=care_of) / IPv6(src=office, dst=home) / payload
    else:
        raise BuildError(f"params.via: {via!r} is not hao, rh2 or ip6ip6")
    return f"{ctx.attacker.inject(ctx.place_of(attack), [packet] * p.get('count', 5))} packets via {via}"


def inner_source(ctx, attack) -> str:
    """A compromised MN's tunnel carrying packets whose inner source is another MN's home address."""
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6
    p = attack.params
    node = ctx.attacker.compromised(attack.compromised)
    inner = IPv6(src=ctx.address(f"{p['as']}.home"), dst=ctx.address(p.get("to", "fs"))) / \
        UDP(sport=40005, dport=7777) / b"someone else's session"
    packets = node.tunnel(node.reverse_tunnel(inner), count=p.get("count", 5))
    return f"{ctx.attacker.inject(ctx.place_of(attack), packets)} tunnel packets with inner source {p['as']}"


# ---- VCM control -----------------------------------------------------------------------------------------

def vcm_control(ctx, attack) -> str:
    """Under the compromised MN's SA: a KEYS_ACK claiming another node's id (forged), or two messages with
    counter 1 after the channel has moved past it (replayed)."""
    from nodeapps.roles.vcm_shell import mn_node_id
    from nodeapps.vcm import protocol as vp
    p = attack.params
    node = ctx.attacker.compromised(attack.compromised)
    mode = p["mode"]
    if mode == "forged":
        sender = mn_node_id(ctx.lab.plan.mobile(p.get("as", "mn2")).index)
        messages = [vp.Message(vp.KEYS_ACK, sender, 1 << 40 | ctx.rng.randrange(1 << 20), ctx.rng.randrange(1 << 31),
                               (vp.SessionRef(1, 1),)) for _ in range(p.get("count", 3))]
    elif mode == "replayed":
        sender = mn_node_id(ctx.lab.plan.mobile(node.name).index)
        messages = [vp.Message(vp.KEYS_ACK, sender, 1, ctx.rng.randrange(1 << 31), (vp.SessionRef(1, 1),))
                    for _ in range(p.get("count", 3))]
    else:
        raise BuildError(f"params.mode: {mode!r} is not forged or replayed")
    packets = node.vcm_control([vp.encode(message) for message in messages])
    return f"{ctx.attacker.inject(ctx.place_of(attack), packets)} {mode} VCM control messages"


def mh_bad_icv(ctx, attack) -> str:
    """ESP under the SPI of an MN's Mobility Header SA with the SG (seen on the wire), ahead in sequence,
    with a ciphertext the attacker made up: a BU whose authenticator (the ICV) is wrong."""
    from nodeapps import ipv6
    p = attack.params
    victim = p.get("victim", "mn1")
    config = ctx.lab.node_configs[victim]["mobility"]
    peer = next(peer for peer in config["peers"] if peer["address"] == config["security_gateway"])
    spi = peer["out"]["spi"]
    src, dst = ipv6.pton(_place_address(ctx, attack)), ipv6.pton(config["security_gateway"])
    packets = []
    for i in range(p.get("count", 5)):
        body = struct.pack("!II", spi, 1000 + i) + os.urandom(72)
        packets.append(ipv6.build_header(src, dst, ipv6.NH_ESP, len(body)) + body)
    return f"{ctx.attacker.inject(ctx.place_of(attack), packets)} BUs under {victim}'s SPI with a wrong ICV"


# ---- router advertisements and office announcements -------------------------------------------------------

def router_advertisement(ctx, attack) -> str:
    """RAs on a visited network: ``routers`` new routers (each its own MAC and link-local address), or
    off-link ones (global source, hop limit 64) sent unicast to an MN from anywhere."""
    from scapy.layers.inet6 import (ICMPv6ND_RA, ICMPv6NDOptPrefixInfo, ICMPv6NDOptSrcLLAddr, IPv6)
    from scapy.layers.l2 import Ether
    p = attack.params
    place = ctx.place_of(attack)
    prefix_name = p.get("prefix", "rogue")
    routers = p.get("routers", 1)
    off_link = p.get("off_link", False)
    frames = []
    for i in range(routers):
        if prefix_name == "office":
            prefix = str(ctx.lab.plan.office_prefix.network_address)
        else:
            prefix = f"2001:db8:66:{i:x}::"
        mac = "02:66:%02x:%02x:%02x:%02x" % (i >> 8 & 0xFF, i & 0xFF, ctx.rng.randrange(256), ctx.rng.randrange(256))
        if off_link:
            src, hlim = _place_address(ctx, attack), 64
            dst = ctx.address(p.get("to", "mn1"))
        else:
            src, hlim = f"fe80::66:{i + 1:x}", 255
            dst = "ff02::1"
        ra = IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6ND_RA(routerlifetime=1800) / \
            ICMPv6NDOptSrcLLAddr(lladdr=mac) / ICMPv6NDOptPrefixInfo(prefix=prefix, prefixlen=64, L=1, A=1)
        eth_src = ctx.attacker.mac(place) if off_link else mac
        eth_dst = ctx.attacker.next_hop_mac(place, dst)
        frames.append(bytes(Ether(src=eth_src, dst=eth_dst) / ra))
    sent = ctx.attacker.send_frames(place, frames, gap=p.get("gap", 0.01))
    return f"{sent} RAs ({'off-link' if off_link else 'on-link'}, prefix {prefix_name})"


def office_announcement(ctx, attack) -> str:
    """An office announcement made by a compromised MN with what it holds, multicast on a visited network
    where another MN is: signed with a key of its own when announcements are signed by the HA
    (nodeapps.mobility.announcement), else sealed with the group SA of the MN's configuration."""
    import time as _time
    p = attack.params
    node = ctx.attacker.compromised(attack.compromised)
    place = p.get("on", "wlan1")
    source = ctx.attacker.link_local(place)
    prefix = ctx.lab.plan.office_prefix.network_address.packed
    count = p.get("count", 5)
    try:
        from nodeapps.mobility import announcement
    except ImportError:
        announcement = None
    if announcement is not None and hasattr(announcement, "build"):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from nodeapps import ipv6
        key = Ed25519PrivateKey.generate()   # not the HA's: only the HA holds that one
        packets = [announcement.build(key, ipv6.pton(source), prefix, _time.time_ns(), 1 << 40 | i)
                   for i in range(count)]
        how = "signed with a key of its own"
    else:
        from nodeapps.esp.sa import SecurityAssociation
        from nodeapps.runtime.mobility import build_announcement
        config = node.announcement_sa()
        config = dict(config, direction="out", local=config["remote"], remote=config["local"])
        sa = SecurityAssociation.from_config(config)
        sa.seq = 1 << 20
        packets = [build_announcement(sa, source, str(ctx.lab.plan.office_prefix), _time.time())
                   for _ in range(count)]
        how = "under the group SA it holds"
    return f"{ctx.attacker.inject(place, packets, gap=0.02)} forged office announcements on {place}, {how}"


# ---- junk ----------------------------------------------------------------------------------------------

JUNK_PROTOCOLS = ("udp", "esp", "mh", "esp-udp", "ipv6-trunc", "dstopts-trunc")


def junk(ctx, attack) -> str:
    """Random and truncated packets to every daemon: UDP to the VCM, care-of and probe ports, ESP shorter
    than a header, Mobility Headers of random length, ESP-in-UDP junk, IPv6 headers that promise more."""
    from nodeapps import ipv6
    p = attack.params
    node = ctx.attacker.compromised(attack.compromised) if attack.compromised else None
    # Inside the VPN: a compromised MN's tunnel carries the junk to office daemons (HA, VCM, the SG's LAN side).
    src = ipv6.pton(node.home_address if node else _place_address(ctx, attack))
    packets = []
    for target in ctx.addresses(p.get("targets", ["sg"])):
        dst = ipv6.pton(target)
        for proto in p.get("protocols", list(JUNK_PROTOCOLS)):
            for size in p.get("sizes", [0, 1, 3, 7, 8, 15, 23, 40, 97]):
                body = os.urandom(size)
                if proto == "udp":
                    for port in (7420, 7421, 7777):
                        udp = struct.pack("!HHHH", 40006, port, 8 + size, 0) + body
                        packets.append(ipv6.build_header(src, dst, ipv6.NH_UDP, len(udp)) + udp)
                    continue
                if proto == "esp-udp":
                    udp = struct.pack("!HHHH", 4500, 4500, 8 + size, 0) + body
                    packets.append(ipv6.build_header(src, dst, ipv6.NH_UDP, len(udp)) + udp)
                elif proto == "esp":
                    packets.append(ipv6.build_header(src, dst, ipv6.NH_ESP, size) + body)
                elif proto == "mh":
                    packets.append(ipv6.build_header(src, dst, ipv6.NH_MOBILITY, size) + body)
                elif proto == "ipv6-trunc":
                    packets.append(ipv6.build_header(src, dst, ipv6.NH_ESP, size + 200) + body)
                elif proto == "dstopts-trunc":
                    packets.append(ipv6.build_header(src, dst, ipv6.NH_DSTOPTS, size) + bytes([50, 9]) + body)
                else:
                    raise BuildError(f"params.protocols: {proto!r} is not one of {', '.join(JUNK_PROTOCOLS)}")
    if node is not None:
        packets = node.tunnel(node.reverse_tunnel(
            [pk for pk in packets if len(pk) >= 40 and (pk[4] << 8 | pk[5]) + 40 == len(pk)]))
    return f"{ctx.attacker.inject(ctx.place_of(attack), packets)} junk packets"


def control_junk(ctx, attack) -> str:
    """Junk requests to every node's control socket (a Unix stream socket in the lab's run directory):
    each request is written whole and the write side closed, then the answer read."""
    import socket
    sent = 0
    requests = [b"", b"\0" * 64, b"{", b"[]", b'{"cmd": 7}', b'{"cmd": "status", "last": "x"}',
                b'{"cmd": "events", "last": -5}', b'{"cmd": "events", "last": "x"}', b'{"cmd": "nonsense"}',
                b'{"cmd": {"a": []}}', os.urandom(300), b"\xff" * 2000]
    for node in ctx.lab.node_configs:
        for request in requests:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(2.0)
                    sock.connect(ctx.lab.control_socket(node))
                    sock.sendall(request + b"\n")
                    sock.shutdown(socket.SHUT_WR)
                    sock.recv(65536)
                    sent += 1
            except OSError:
                continue
    return f"{sent} junk control requests answered"


# kind -> (builder, {param: (types, required)})
KINDS = {
    "esp_replay": (esp_replay, {"target": (STR, False), "count": (INT, False), "sniff_seconds": ((int, float), False)}),
    "esp_tamper": (esp_tamper, {"target": (STR, False), "count": (INT, False), "sniff_seconds": ((int, float), False)}),
    "esp_unknown_spi": (esp_unknown_spi, {"targets": (LIST, False), "count": (INT, False)}),
    "esp_out_of_window": (esp_out_of_window, {"count": (INT, False)}),
    "clear_exthdr": (clear_exthdr, {"targets": (LIST, True), "variants": (LIST, False), "home": (STR, False),
                                    "count": (INT, False)}),
    "bu_for_other": (bu_for_other, {"victim": (STR, True), "at": (STR, False)}),
    "bu_bad_authenticator": (bu_bad_authenticator, {"targets": (LIST, False), "home": (STR, False),
                                                    "indices": (INT, False)}),
    "spoof_decap": (spoof_decap, {"via": (STR, True), "victim": (STR, False), "office_source": (STR, False),
                                  "outer": (STR, False), "port": (INT, False), "count": (INT, False)}),
    "inner_source": (inner_source, {"as": (STR, True), "to": (STR, False), "count": (INT, False)}),
    "vcm_control": (vcm_control, {"mode": (STR, True), "as": (STR, False), "count": (INT, False)}),
    "router_advertisement": (router_advertisement, {"prefix": (STR, False), "routers": (INT, False),
                                                    "off_link": (BOOL, False), "to": (STR, False),
                                                    "gap": ((int, float), False)}),
    "office_announcement": (office_announcement, {"on": (STR, False), "count": (INT, False)}),
    "junk": (junk, {"targets": (LIST, False), "protocols": (LIST, False), "sizes": (LIST, False)}),
    "control_junk": (control_junk, {}),
    "mh_bad_icv": (mh_bad_icv, {"victim": (STR, False), "count": (INT, False)}),
}
SCHEMAS = {kind: schema for kind, (_build, schema) in KINDS.items()}
