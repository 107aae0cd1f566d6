"""Property: every role's inbound handlers take any input without raising, and count instead of failing.

Each case is one node of one lab configuration (``shell_harness.ROLE_CASES``: every role, both address
plans, mobility, the VCM in the SG and as a host, the external HA, the correspondent). Its shell is built
once per case and fed many inputs in turn (state carries over between examples, as on a real node):
arbitrary bytes; IPv6 packets to the node's own addresses with random extension-header stacks (HAO, type 2
and other routing headers, destination options, hop-by-hop, fragments, IPv6-in-IPv6); ESP under every
inbound SA the node holds (sealed with the real keys, so the bytes reach what lies behind the ICV check)
and under unknown SPIs, whole or cut short; Mobility Header messages of every type; VCM control datagrams;
router advertisements, office announcements and netlink messages (MN); control requests; TUN packets.
The handlers are called directly: an exception fails the test, and ``handler_errors`` must stay 0.
"""
from __future__ import annotations

import ipaddress
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeapps import ipv6
from nodeapps.mobility import announcement
from nodeapps.mobility import messages as mh
from nodeapps.roles import vcm_shell
from nodeapps.vcm import protocol as vp
from shell_harness import ROLE_CASES, ShellHarness, lab_configs

# Fixed and database-less, so every run (and CI) draws the same inputs; SVPNLAB_FUZZ_EXAMPLES=N scales the
# example counts up for a longer search, SVPNLAB_FUZZ_RANDOM=1 draws new inputs each run.
SCALE = max(1, int(os.environ.get("SVPNLAB_FUZZ_EXAMPLES", "40"))) / 40
FUZZ = settings(max_examples=int(40 * SCALE), deadline=None, database=None,
                derandomize=not os.environ.get("SVPNLAB_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_harnesses: dict[tuple[str, str], ShellHarness] = {}
_configs: dict[str, dict] = {}


def harness(variant: str, node: str) -> ShellHarness:
    """One shell per case for the whole module (building one per example would hide state bugs and cost
    time)."""
    key = (variant, node)
    if key not in _harnesses:
        if variant not in _configs:
            _configs[variant] = lab_configs(variant)
        _harnesses[key] = ShellHarness(_configs[variant][node])
    return _harnesses[key]


@pytest.fixture(scope="module", autouse=True)
def _close_harnesses():
    yield
    for h in _harnesses.values():
        h.close()
    _harnesses.clear()


def _assert_clean(h: ShellHarness) -> None:
    assert h.handler_errors == 0


def addresses_of(h: ShellHarness) -> list[bytes]:
    """Addresses the node's configuration mentions (its own, its peers', the VPN prefixes'), its own first."""
    found = list(h.own_addresses())

    def walk(value):
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and ":" in value:
            try:
                network = ipaddress.IPv6Network(value, strict=False)
            except ValueError:
                return
            found.append(network.network_address.packed)
            if network.prefixlen < 128:
                found.append((network.network_address + 0xA0001).packed)
    walk(h.config_dict)
    return list(dict.fromkeys(found))


# ---- packet recipes ------------------------------------------------------------------------------------

_NEXT_HEADERS = [ipv6.NH_UDP, ipv6.NH_TCP, 58, ipv6.NH_ESP, ipv6.NH_MOBILITY, ipv6.NH_IPV6, ipv6.NH_NONE,
                 ipv6.NH_DSTOPTS, ipv6.NH_ROUTING, ipv6.NH_HOPOPTS, ipv6.NH_FRAGMENT, ipv6.NH_AH, 253]


def draw_address(data, pool: list[bytes]) -> bytes:
    return data.draw(st.one_of(st.sampled_from(pool), st.binary(min_size=16, max_size=16)))


def draw_udp(data, src: bytes, dst: bytes) -> bytes:
    port = data.draw(st.sampled_from([vcm_shell.VCM_PORT, vcm_shell.CARE_OF_PORT, 4500, 53]) | st.integers(0, 65535))
    payload = data.draw(st.one_of(st.binary(max_size=64), st.builds(vp.encode, draw_message_strategy())))
    length = data.draw(st.sampled_from([8 + len(payload)] * 3 + [0, 7, 9 + len(payload), 65535]))
    return struct.pack("!HHHH", port, port, length, 0) + payload


def draw_mobility_header(data, src: bytes, dst: bytes) -> bytes:
    """A Mobility Header of any type (0..8 and beyond) with a random body, checksum right or not."""
    kind = data.draw(st.integers(0, 10))
    body = data.draw(st.binary(max_size=48))
    units = (6 + len(body) + 7) // 8 - 1
    body += bytes(8 * (units + 1) - 6 - len(body))
    units = data.draw(st.sampled_from([units] * 3 + [0, units + 1, 255]))
    header = bytes((ipv6.NH_NONE, units, kind, 0)) + b"\0\0" + body
    if len(header) >= 6 and data.draw(st.booleans()):
        header = mh.set_checksum(header, src, dst)
    return header


@st.composite
def draw_message_strategy(draw):
    """A VCM control message that encodes (types, senders, peers and SA parameters drawn)."""
    kind = draw(st.sampled_from(sorted(vp.TYPE_NAMES)))
    tlvs = []
    if kind in (vp.KEYS, vp.PEER_READY, vp.FALLBACK, vp.KEYS_ACK, vp.PEER_READY_ACK, vp.FALLBACK_ACK):
        tlvs.append(vp.SessionRef(draw(st.integers(1, 4)), draw(st.integers(1, 3))))
    if kind in (vp.KEYS, vp.FALLBACK):
        node = draw(st.sampled_from([11, 12, 13, 1, 2]))
        tlvs.append(vp.Peer(node, draw(st.sampled_from(["2001:db8:1::11", "fd00:10::12", "2001:db8:ee::a:1"])),
                            draw(st.sampled_from([None, "fd00:10::a:1", "fd00:10::a:2"]))))
    if kind == vp.KEYS:
        for direction in (vp.DIR_OUT, vp.DIR_IN):
            tlvs.append(vp.SaParams(direction, draw(st.integers(256, 2 ** 32 - 1)), "aes128gcm16", bytes(16),
                                    bytes(4), draw(st.integers(1, 7200)), "tunnel"))
    if kind in vp.RESPONSE_TYPES:
        tlvs.append(vp.Status(draw(st.sampled_from([0, 1, 2, 3]))))
    message = vp.Message(kind, draw(st.sampled_from([1, 2, 11, 12, 99])), draw(st.integers(0, 2 ** 40)),
                         draw(st.integers(0, 8)), tuple(tlvs))
    try:
        vp.encode(message)
    except (ValueError, KeyError):
        return vp.Message(vp.REPORT_ACK, 2, 1, 1, (vp.Status(0),))
    return message


def draw_extension_chain(data, pool: list[bytes], src: bytes, dst: bytes, depth: int) -> tuple[int, bytes]:
    """(first next header, bytes) of a random stack of extension headers and an upper layer."""
    upper = data.draw(st.sampled_from(_NEXT_HEADERS[:8]) | st.integers(0, 255))
    if upper == ipv6.NH_UDP:
        chain = draw_udp(data, src, dst)
    elif upper == ipv6.NH_MOBILITY:
        chain = draw_mobility_header(data, src, dst)
    elif upper == ipv6.NH_IPV6 and depth < 2:
        chain = draw_packet(data, pool, depth + 1)
    elif upper == ipv6.NH_ESP:
        chain = data.draw(st.binary(min_size=0, max_size=8)) + data.draw(st.binary(max_size=40))
    else:
        chain = data.draw(st.binary(max_size=48))
    nh = upper
    for _ in range(data.draw(st.integers(0, 3))):
        kind = data.draw(st.sampled_from(["hao", "padn", "pad1", "bad-option", "rh2", "rh2-bad", "rh0",
                                          "hbh", "frag", "short"]))
        if kind == "hao":
            header = mh.encode_home_address_destopts(nh, draw_address(data, pool))
            nh_type = ipv6.NH_DSTOPTS
        elif kind == "padn":
            header, nh_type = bytes((nh, 0, 1, 4, 0, 0, 0, 0)), ipv6.NH_DSTOPTS
        elif kind == "pad1":
            header, nh_type = bytes((nh, 0, 0, 0, 0, 0, 0, 0)), ipv6.NH_DSTOPTS
        elif kind == "bad-option":
            option = data.draw(st.binary(min_size=6, max_size=14))
            size = (2 + len(option) + 7) // 8 * 8
            header, nh_type = bytes((nh, size // 8 - 1)) + option + bytes(size - 2 - len(option)), ipv6.NH_DSTOPTS
        elif kind == "rh2":
            header, nh_type = mh.encode_type2_routing_header(nh, draw_address(data, pool)), ipv6.NH_ROUTING
        elif kind == "rh2-bad":
            header = bytes((nh, data.draw(st.sampled_from([0, 1, 2, 3])), 2, data.draw(st.integers(0, 3)))) + bytes(4)
            header += draw_address(data, pool) * ((header[1] + 1) * 8 // 16)
            header = header[:8 * (header[1] + 1)].ljust(8 * (header[1] + 1), b"\0")
            nh_type = ipv6.NH_ROUTING
        elif kind == "rh0":
            header, nh_type = bytes((nh, 2, 0, 1)) + bytes(4) + draw_address(data, pool), ipv6.NH_ROUTING
        elif kind == "hbh":
            header, nh_type = bytes((nh, 0, 1, 4, 0, 0, 0, 0)), ipv6.NH_HOPOPTS
        elif kind == "frag":
            header = bytes((nh, 0)) + data.draw(st.binary(min_size=6, max_size=6))
            nh_type = ipv6.NH_FRAGMENT
        else:   # a header whose length runs past the packet
            header, nh_type = bytes((nh, 200, 0, 0)), data.draw(st.sampled_from([ipv6.NH_DSTOPTS, ipv6.NH_ROUTING]))
        chain, nh = header + chain, nh_type
    return nh, chain


def draw_packet(data, pool: list[bytes], depth: int = 0, *, dst: bytes | None = None) -> bytes:
    src = draw_address(data, pool)
    dst = dst if dst is not None else draw_address(data, pool)
    nh, chain = draw_extension_chain(data, pool, src, dst, depth)
    length = data.draw(st.sampled_from(["ok"] * 6 + ["short", "long", "random"]))
    payload_len = {"ok": len(chain), "short": max(0, len(chain) - 3), "long": len(chain) + 5}.get(
        length, data.draw(st.integers(0, 65535)))
    packet = ipv6.build_header(src, dst, nh, payload_len) + chain
    if data.draw(st.integers(0, 9)) == 0:
        packet = packet[:data.draw(st.integers(0, len(packet)))]
    return packet


def draw_esp(data, h: ShellHarness, pool: list[bytes]) -> bytes:
    """ESP under one of the node's inbound SAs (valid ICV) with a random payload, or a damaged one."""
    sas = h.inbound_sas()
    if not sas or data.draw(st.integers(0, 4)) == 0:
        spi = data.draw(st.integers(0, 2 ** 32 - 1))
        body = struct.pack("!II", spi, data.draw(st.integers(0, 2 ** 32 - 1))) + data.draw(st.binary(max_size=64))
        dst = data.draw(st.sampled_from(h.own_addresses() or pool))
        return ipv6.build_header(draw_address(data, pool), dst, ipv6.NH_ESP, len(body)) + body
    sa = data.draw(st.sampled_from(sas))
    own = ipaddress.IPv6Address(sa["local"]).packed
    if sa["mode"] == "tunnel":
        inner_dst = data.draw(st.sampled_from(pool))
        next_header = data.draw(st.sampled_from([ipv6.NH_IPV6] * 5 + [ipv6.NH_NONE, ipv6.NH_UDP]))
        payload = draw_packet(data, pool, dst=inner_dst) if next_header == ipv6.NH_IPV6 else data.draw(
            st.binary(max_size=32))
    else:
        next_header, payload = draw_extension_chain(data, pool, ipv6.pton(sa["remote"]), own, 1)
    src = data.draw(st.sampled_from([None, None, None]) | st.sampled_from(pool))
    packet = h.esp(sa, next_header, payload, src=src)
    cut = data.draw(st.sampled_from(["whole"] * 5 + ["truncated", "flipped"]))
    if cut == "truncated":
        packet = packet[:data.draw(st.integers(0, len(packet)))]
    elif cut == "flipped":
        at = data.draw(st.integers(0, len(packet) - 1))
        packet = packet[:at] + bytes((packet[at] ^ 0xFF,)) + packet[at + 1:]
    return packet


def draw_bu_like(data, h: ShellHarness, pool: list[bytes]) -> bytes:
    """Well-formed Mobility Header messages (BU, BA, HoTI, CoTI, HoT, CoT, BRR, BE) with HAO / RH2 as
    the RFC places them, sometimes inside ESP transport under a mobility peer's SA."""
    src, dst = draw_address(data, pool), data.draw(st.sampled_from(h.own_addresses() or pool))
    cookie = data.draw(st.binary(min_size=8, max_size=8))
    token = data.draw(st.binary(min_size=8, max_size=8))
    seq = data.draw(st.integers(0, 65535))
    message = data.draw(st.sampled_from([
        mh.BindingUpdate(seq, data.draw(st.integers(0, 65535)), ack=True, home_registration=data.draw(st.booleans())),
        mh.BindingAcknowledgement(data.draw(st.sampled_from([0, 1, 128, 129, 135, 136])), False, seq, 100),
        mh.HomeTestInit(cookie), mh.CareOfTestInit(cookie), mh.HomeTest(1, cookie, token),
        mh.CareOfTest(2, cookie, token), mh.BindingRefreshRequest(),
        mh.BindingError(data.draw(st.sampled_from([1, 2, 3])), draw_address(data, pool)),
    ]))
    hao = draw_address(data, pool) if data.draw(st.booleans()) else None
    rh2 = draw_address(data, pool) if data.draw(st.integers(0, 3)) == 0 else None
    try:
        packet = mh.build_mobility_packet(src, dst, message, home_address=hao, routing_address=rh2)
    except (ValueError, TypeError):
        return draw_packet(data, pool)
    peers = [sa for sa in h.inbound_sas() if sa["mode"] == "transport"]
    if peers and data.draw(st.booleans()):
        sa = data.draw(st.sampled_from(peers))
        encoded = mh.encode_message(message, hao or ipv6.pton(sa["remote"]), ipv6.pton(sa["local"]))
        return h.esp(sa, ipv6.NH_MOBILITY, encoded)
    return packet


def draw_vcm_datagram(data, h: ShellHarness, pool: list[bytes]) -> bytes:
    """A VCM control datagram or care-of notice as UDP inside an SA the node trusts for them."""
    message = data.draw(draw_message_strategy())
    payload = data.draw(st.sampled_from(["vcm", "vcm", "mutated", "care-of"]))
    raw = vp.encode(message)
    if payload == "mutated":
        at = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + data.draw(st.binary(max_size=4)) + raw[at + 1:]
    elif payload == "care-of":
        raw = vcm_shell.encode_care_of(data.draw(st.sampled_from([11, 12, 13])), "2001:db8:1::1",
                                       data.draw(st.sampled_from([None, "2001:db8:a1::a:1"])))
        if data.draw(st.booleans()):
            raw = raw[:data.draw(st.integers(0, len(raw)))]
    port = data.draw(st.sampled_from([vcm_shell.VCM_PORT, vcm_shell.CARE_OF_PORT]))
    src, dst = data.draw(st.sampled_from(pool)), data.draw(st.sampled_from(pool))
    packet = vcm_shell.build_udp(src, dst, port, port, raw)
    sas = h.inbound_sas()
    if not sas:
        return packet
    sa = data.draw(st.sampled_from(sas))
    if sa["mode"] == "tunnel":
        return h.esp(sa, ipv6.NH_IPV6, packet)
    return h.esp(sa, ipv6.NH_UDP, packet[40:])


def draw_network_input(data, h: ShellHarness) -> bytes:
    pool = addresses_of(h)
    kind = data.draw(st.sampled_from(["bytes", "packet", "esp", "esp", "mobility", "vcm"]))
    if kind == "bytes":
        return data.draw(st.binary(max_size=200))
    if kind == "packet":
        return draw_packet(data, pool, dst=data.draw(st.sampled_from(h.own_addresses() or pool)))
    if kind == "esp":
        return draw_esp(data, h, pool)
    if kind == "mobility":
        return draw_bu_like(data, h, pool)
    return draw_vcm_datagram(data, h, pool)


CASE_IDS = [f"{variant}-{node}" for variant, node in ROLE_CASES]


# ---- properties ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant, node", ROLE_CASES, ids=CASE_IDS)
@FUZZ
@given(data=st.data())
def test_network_input_never_raises(variant, node, data):
    h = harness(variant, node)
    packets = [draw_network_input(data, h) for _ in range(data.draw(st.integers(1, 3)))]
    interface = data.draw(st.sampled_from(h.config.outer_interfaces))
    h.network(*packets, interface=interface)
    if data.draw(st.integers(0, 3)) == 0:
        h.timer(data.draw(st.floats(0, 30)))
    _assert_clean(h)


@pytest.mark.parametrize("variant, node", ROLE_CASES, ids=CASE_IDS)
@settings(FUZZ, max_examples=int(20 * SCALE))
@given(data=st.data())
def test_tun_input_never_raises(variant, node, data):
    h = harness(variant, node)
    pool = addresses_of(h)
    packets = [draw_packet(data, pool) if data.draw(st.booleans()) else data.draw(st.binary(max_size=120))
               for _ in range(data.draw(st.integers(1, 3)))]
    h.tun(*packets)
    _assert_clean(h)


_COMMANDS = ["status", "events", "forget-peer-binding", "vcm-inject", "drop-next", "fault", "nonsense"]


@pytest.mark.parametrize("variant, node", ROLE_CASES[::3], ids=CASE_IDS[::3])
@settings(FUZZ, max_examples=int(15 * SCALE))
@given(request=st.fixed_dictionaries({"cmd": st.sampled_from(_COMMANDS)}, optional={
    "last": st.integers(-5, 500) | st.text(max_size=3), "data": st.text("0123456789abcdef", max_size=40),
    "home_address": st.sampled_from(["fd00:10::a:1", "x", ""]) | st.text(max_size=5),
    "message": st.sampled_from(["KEYS", "bu", "HoTI", "REPORT", ""]) | st.text(max_size=5) | st.integers(),
    "direction": st.sampled_from(["in", "out"]) | st.text(max_size=3) | st.none(),
    "count": st.integers(-2, 2000) | st.booleans() | st.text(max_size=2)}))
def test_control_requests_answer_or_raise_value_error(variant, node, request):
    """The control server turns a ValueError into a one-line error reply; nothing else may escape."""
    h = harness(variant, node)
    try:
        reply = h.control(request)
    except ValueError:
        return
    assert isinstance(reply, dict)


def _mobile_cases():
    return [(v, n) for v, n in ROLE_CASES if n.startswith("mn") and v not in ("private",)]


def draw_router_advertisement(data) -> bytes:
    options = b""
    for _ in range(data.draw(st.integers(0, 4))):
        kind = data.draw(st.sampled_from([3, 7, 1, 5, 0, 200]))
        if kind == 3:
            prefix = data.draw(st.sampled_from(["2001:db8:a1::", "fd00:10::", "::", "ff02::"]))
            options += bytes((3, 4, data.draw(st.integers(0, 255)), data.draw(st.integers(0, 255)))) + \
                bytes(12) + ipaddress.IPv6Address(prefix).packed
        elif kind == 7:
            options += bytes((7, 1, 0, 0)) + struct.pack("!I", data.draw(st.integers(0, 2 ** 32 - 1)))
        else:
            options += bytes((kind, data.draw(st.integers(0, 3)))) + data.draw(st.binary(max_size=14))
    message = bytes((134, data.draw(st.sampled_from([0, 0, 1])))) + b"\0\0" + bytes((64, 0)) + \
        struct.pack("!H", data.draw(st.sampled_from([0, 1800, 65535]))) + bytes(8) + options
    if data.draw(st.integers(0, 4)) == 0:
        message = message[:data.draw(st.integers(0, len(message)))]
    return message


def draw_netlink(data, h: ShellHarness) -> bytes:
    """RTM_NEWLINK / RTM_NEWADDR / RTM_DELADDR messages (rtnetlink(7)) for our interface or another, with
    addresses in our prefixes or others, and sometimes plain bytes."""
    if data.draw(st.integers(0, 4)) == 0:
        return data.draw(st.binary(max_size=120))
    out = b""
    ifindex = data.draw(st.sampled_from([h.runtime.ifindex, h.runtime.ifindex, 1, 0]))
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from([16, 20, 21, 3]))
        if kind == 16:
            body = struct.pack("=BxHiII", 10, 1, ifindex, data.draw(st.sampled_from([0, 1, 0x10001])), 0)
        else:
            address = data.draw(st.sampled_from(["2001:db8:a1::a:1", "2001:db8:a2::7", "fd00:10::a:1",
                                                 "2001:db8:99::1", "fe80::1"]))
            attrs = struct.pack("=HH", 20, 1) + ipaddress.IPv6Address(address).packed
            if data.draw(st.booleans()):
                attrs += struct.pack("=HHI", 8, 8, data.draw(st.sampled_from([0, 0x40, 0x08, 0x80])))
            body = struct.pack("=BBBBI", data.draw(st.sampled_from([10, 10, 2])), 64, 0,
                               data.draw(st.sampled_from([0, 0, 253])), ifindex) + attrs
        length = data.draw(st.sampled_from([16 + len(body)] * 4 + [8, 16 + len(body) + 40]))
        out += struct.pack("=IHHII", length, kind, 0, 0, 0) + body
    return out


@pytest.mark.parametrize("variant, node", _mobile_cases(), ids=[f"{v}-{n}" for v, n in _mobile_cases()])
@settings(FUZZ, max_examples=int(25 * SCALE))
@given(data=st.data())
def test_mobile_node_link_inputs_never_raise(variant, node, data):
    """Router advertisements, office announcements (multicast ESP on the link) and netlink messages."""
    h = harness(variant, node)
    kind = data.draw(st.sampled_from(["ra", "ra", "beacon", "netlink"]))
    if kind == "ra":
        source = data.draw(st.sampled_from(["fe80::1", "fe80::2", "fe80::99"]))
        h.router_advertisement(*[draw_router_advertisement(data) for _ in range(data.draw(st.integers(1, 2)))],
                               source=source)
    elif kind == "beacon":
        ha = _configs[variant].get("ha", {}).get("mobility", {}).get("announcement")
        body = data.draw(st.binary(max_size=40))
        if ha is not None and data.draw(st.booleans()):
            # Signed by the HA's key or another, fresh or stale or replayed, then maybe cut or bit-flipped.
            key = announcement.load_private_key(ha["private_key"]) if data.draw(st.booleans()) else \
                announcement.load_private_key(announcement.generate_key_pair()[0])
            stamp = int((h.clock.time() + data.draw(st.sampled_from([0.0, 0.0, -5.0, 3.0]))) * 1e9)
            packet = announcement.build(key, ipv6.pton(_configs[variant]["ha"]["mobility"]["address"]),
                                        ipv6.pton(ha["prefix"].split("/")[0]), max(stamp, 0),
                                        data.draw(st.integers(0, 3)))
            cut = data.draw(st.integers(0, len(packet)))
            flip = data.draw(st.integers(0, len(packet) - 1))
            packet = bytearray(packet[:cut] if data.draw(st.booleans()) else packet)
            if data.draw(st.booleans()) and flip < len(packet):
                packet[flip] ^= 0x01
            packet = bytes(packet)
        else:
            packet = ipv6.build_header(ipv6.pton("fe80::2"), ipv6.pton("ff02::1"), ipv6.NH_ESP, len(body)) + body
        h.beacon(packet)
    else:
        h.netlink(draw_netlink(data, h))
    if data.draw(st.integers(0, 3)) == 0:
        h.timer(data.draw(st.floats(0, 5)))
    _assert_clean(h)


@pytest.mark.parametrize("variant, node", [("private-mobility", "ha")], ids=["office-ha"])
@settings(FUZZ, max_examples=int(10 * SCALE))
@given(messages=st.lists(st.binary(max_size=40), min_size=1, max_size=3))
def test_home_agent_router_solicitations_never_raise(variant, node, messages):
    h = harness(variant, node)
    h.router_advertisement(*messages, interface=h.runtime.interface)
    _assert_clean(h)
