"""rtnetlink through pyroute2's message classes: decoding the monitor's datagrams (hostile input), the
requests the roles' `ip`-word commands become, and the request socket's answers. No root needed."""
import errno
import os
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2.netlink import NLM_F_CREATE, NLM_F_REPLACE
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_DELRULE, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD
from pyroute2.netlink.rtnl.ndmsg import NTF_PROXY

from nodeapps import ipv6
from nodeapps.runtime import netlink as nl


def _newlink(index, flags, kind=nl.RTM_NEWLINK):
    body = struct.pack("=BxHiII", 10, 1, index, flags, 0xFFFFFFFF)
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_link_messages_report_carrier_per_interface_and_skip_the_rest():
    data = _newlink(3, nl.IFF_UP | nl.IFF_LOWER_UP) + _newlink(4, nl.IFF_UP) + _newlink(5, 0x1, kind=17)
    assert nl.parse_link_messages(data) == [(3, True), (4, False)]
    assert nl.parse_link_messages(data[:-3]) == [(3, True), (4, False)]  # truncated last message skipped
    assert nl.parse_link_messages(struct.pack("=IHHII", 4, 16, 0, 0, 0)) == []  # impossible length


# RTM_NEWADDR captured from `ip -6 addr add 2001:db8:21:1::5/64 dev d0 nodad` (ifindex 3) in a fresh
# namespace: ifaddrmsg, IFA_ADDRESS, IFA_CACHEINFO, IFA_FLAGS (permanent | nodad).
CAPTURED_NEWADDR = bytes.fromhex(
    "480000001400000000000000000000000a408200030000001400010020010db800210001000000000000000514000600"
    "ffffffffffffffff54d3000054d300000800080082000000")


def _addr_message(kind, index, address, prefixlen=64, scope=0, flags=0x80, family=10, extra=b""):
    attr = struct.pack("=HH", 20, nl.IFA_ADDRESS) + ipv6.pton(address) + extra
    body = struct.pack("=BBBBI", family, prefixlen, flags & 0xFF, scope, index) + attr
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_captured_newaddr_parses_to_the_added_address():
    assert nl.parse_address_messages(CAPTURED_NEWADDR) == [
        nl.AddressChange(True, 3, "2001:db8:21:1::5", 64, 0, 0x82)]
    deleted = CAPTURED_NEWADDR[:4] + struct.pack("=H", nl.RTM_DELADDR) + CAPTURED_NEWADDR[6:]
    assert nl.parse_address_messages(deleted)[0].added is False


def test_address_messages_skip_other_families_kinds_and_truncation():
    tentative = struct.pack("=HH", 8, nl.IFA_FLAGS) + struct.pack("=I", nl.IFA_F_TENTATIVE | 0x80)
    data = (_addr_message(nl.RTM_NEWADDR, 3, "2001:db8:22::7", extra=tentative)
            + _addr_message(nl.RTM_NEWADDR, 3, "2001:db8:22::8", family=2)      # not IPv6
            + _newlink(3, nl.IFF_UP)                                            # not an address message
            + _addr_message(nl.RTM_DELADDR, 4, "fe80::1", scope=253))
    changes = nl.parse_address_messages(data)
    assert [(c.added, c.ifindex, c.address, c.usable) for c in changes] == [
        (True, 3, "2001:db8:22::7", False), (False, 4, "fe80::1", True)]
    assert nl.parse_address_messages(data[:-3]) == changes[:1]             # truncated last message skipped
    broken = _addr_message(nl.RTM_NEWADDR, 3, "2001:db8:22::7")
    broken = broken[:24] + struct.pack("=HH", 99, nl.IFA_ADDRESS) + broken[28:]  # attribute past the end
    assert nl.parse_address_messages(broken) == []


def test_batch_errors_are_told_per_command():
    # stderr of `ip -6 -force -batch -` with commands 2 and 4 failing (as ip 6.x prints it)
    stderr = ("Error: ipv6: address not found.\nCommand failed -:2\n"
              "RTNETLINK answers: No such process\nCommand failed -:4\n")
    assert nl.batch_errors(stderr, 4) == ["", "Error: ipv6: address not found.", "",
                                          "RTNETLINK answers: No such process"]
    assert nl.batch_errors("", 2) == ["", ""]
    assert nl.batch_errors("Command failed -:9\n", 2) == ["", ""]  # out of range: ignored


# ---- hostile datagrams -----------------------------------------------------------------------------------

@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(data=st.data())
def test_monitor_datagrams_never_raise(data):
    """Whatever the socket hands over (real messages cut, bit-flipped or with lying lengths, or plain
    bytes), the readers return lists of well-formed entries and raise nothing."""
    valid = CAPTURED_NEWADDR + _newlink(3, nl.IFF_UP | nl.IFF_LOWER_UP) + _addr_message(nl.RTM_DELADDR, 3, "fe80::1")
    datagram = bytearray(data.draw(st.one_of(st.just(valid), st.binary(max_size=200))))
    for _ in range(data.draw(st.integers(0, 4))):
        if datagram:
            datagram[data.draw(st.integers(0, len(datagram) - 1))] = data.draw(st.integers(0, 255))
    datagram = bytes(datagram[:data.draw(st.integers(0, len(datagram)))])
    for index, up in nl.parse_link_messages(datagram):
        assert isinstance(index, int) and isinstance(up, bool)
    for change in nl.parse_address_messages(datagram):
        assert isinstance(change.ifindex, int) and isinstance(change.flags, int)
        ipv6.pton(change.address)


# ---- requests --------------------------------------------------------------------------------------------

def _decoded(message):
    """Our request as the kernel reads it: encoded, then decoded again by the monitor's reader."""
    message["header"]["sequence_number"] = 7
    message.encode()
    [back] = nl.parse_messages(bytes(message.data))
    return back


LO = socket.if_nametoindex("lo")


def test_address_commands_become_ifaddrmsg_requests():
    back = _decoded(nl.command_message(("addr", "replace", "2001:db8:21::a:1/64", "dev", "lo", "nodad")))
    assert back["header"]["type"] == nl.RTM_NEWADDR
    assert back["header"]["flags"] == NLM_F_CREATE | NLM_F_REPLACE     # `ip addr replace`
    assert (back["family"], back["prefixlen"], back["index"]) == (socket.AF_INET6, 64, LO)
    assert back.get_attr("IFA_ADDRESS") == back.get_attr("IFA_LOCAL") == "2001:db8:21::a:1"
    assert back.get_attr("IFA_FLAGS") == IFA_F_NODAD                   # RFC 4862 §5.4: no DAD
    delete = _decoded(nl.command_message(("addr", "del", "2001:db8:100:1::a:1/64", "dev", "lo")))
    assert delete["header"]["type"] == nl.RTM_DELADDR and delete.get_attr("IFA_FLAGS") is None


def test_route_commands_carry_table_gateway_and_interface():
    default = _decoded(nl.command_message(("route", "replace", "default", "via", "fe80::1", "dev", "lo")))
    assert default["header"]["type"] == RTM_NEWROUTE and default["dst_len"] == 0
    assert default.get_attr("RTA_DST") is None and default.get_attr("RTA_GATEWAY") == "fe80::1"
    assert (default.get_attr("RTA_OIF"), default.get_attr("RTA_TABLE")) == (LO, nl.RT_TABLE_MAIN)
    care_of = _decoded(nl.command_message(("route", "del", "2001:db8:21::a:1/128", "dev", "lo", "table", "100")))
    assert care_of["header"]["type"] == RTM_DELROUTE
    assert (care_of["dst_len"], care_of.get_attr("RTA_DST"), care_of.get_attr("RTA_TABLE")) == (
        128, "2001:db8:21::a:1", 100)
    big = _decoded(nl.command_message(("route", "replace", "2001:db8::/48", "dev", "lo", "table", "1000")))
    assert big.get_attr("RTA_TABLE") == 1000                           # past 255: only the attribute holds it


def test_forgetting_a_path_mtu_deletes_only_the_cached_route_to_that_address():
    message = _decoded(nl.cached_route_delete_message("2001:db8:100:1::a:1", "lo"))
    assert message["header"]["type"] == RTM_DELROUTE and message["flags"] & nl.RTM_F_CLONED
    assert (message["dst_len"], message.get_attr("RTA_DST"), message.get_attr("RTA_OIF")) == (
        128, "2001:db8:100:1::a:1", LO)
    assert "no interface" in nl.forget_path_mtu("2001:db8::1", "no-such-if0")   # told, never raised


def test_rule_and_proxy_neighbour_commands():
    rule = _decoded(nl.command_message(("rule", "add", "from", "2001:db8:77::1", "lookup", "200", "priority", "100")))
    assert (rule["src_len"], rule.get_attr("FRA_SRC"), rule.get_attr("FRA_TABLE"), rule.get_attr("FRA_PRIORITY")) \
        == (128, "2001:db8:77::1", 200, 100)
    by_interface = _decoded(nl.command_message(("rule", "del", "iif", "sg-lan", "lookup", "100", "priority", "100")))
    assert by_interface.get_attr("FRA_IIFNAME") == "sg-lan" and by_interface["header"]["type"] == RTM_DELRULE
    proxy = _decoded(nl.command_message(("neigh", "replace", "proxy", "2001:db8:100:1::a:1", "dev", "lo")))
    assert proxy["flags"] == NTF_PROXY and proxy.get_attr("NDA_DST") == "2001:db8:100:1::a:1"


@pytest.mark.parametrize("words", [
    ("link", "set", "dev", "lo", "up"),                                 # not a form we translate
    ("addr", "flush", "dev", "lo"),
    ("route", "replace", "2001:db8::/64", "dev", "lo", "metric", "5"),  # an option we do not know
    ("route", "replace", "2001:db8::/64", "dev", "no-such-if0"),        # `ip` says what is wrong
    ("addr", "add", "not-an-address/64", "dev", "lo"),
    ("rule", "add", "from", "2001:db8::1", "lookup", "200"),           # no priority
])
def test_other_commands_are_left_to_ip(words):
    with pytest.raises(nl.UnsupportedCommand):
        nl.command_message(words)


class FakeNetlink:
    """The kernel's side of the request socket: answers each request with the error code given for it."""

    def __init__(self, codes, lose_answers=False):
        self.codes, self.lose_answers, self.sent, self.closed = list(codes), lose_answers, [], False

    def sendto(self, data, address):
        self.sent.append(data)

    def recv(self, size):
        if self.lose_answers:
            raise socket.timeout("timed out")
        answers, offset = b"", 0
        for code in self.codes:
            length, kind, _flags, sequence, _pid = struct.unpack_from("=IHHII", self.sent[-1], offset)
            original = self.sent[-1][offset:offset + 16]
            body = struct.pack("=i", -code) + original
            answers += struct.pack("=IHHII", 16 + len(body), nl.NLMSG_ERROR, 0, sequence, 0) + body
            offset += length
        return answers

    def close(self):
        self.closed = True


def _requests(fake):
    requests = nl.RouteRequests()
    requests.sock = fake
    return requests


def test_one_datagram_carries_the_batch_and_each_request_gets_its_answer():
    fake = FakeNetlink([0, errno.EADDRNOTAVAIL, 0])
    commands = [("addr", "replace", "2001:db8:21::a:1/64", "dev", "lo", "nodad"),
                ("addr", "del", "2001:db8:22::a:1/64", "dev", "lo"),
                ("route", "replace", "default", "via", "fe80::1", "dev", "lo")]
    errors = _requests(fake).apply([nl.command_message(c) for c in commands])
    assert len(fake.sent) == 1                                           # one sendto for the whole batch
    assert errors == ["", "RTNETLINK answers: " + os.strerror(errno.EADDRNOTAVAIL), ""]


def test_a_lost_answer_fails_the_batch_and_drops_the_socket():
    fake = FakeNetlink([0], lose_answers=True)
    requests = _requests(fake)
    assert requests.apply([nl.command_message(("route", "del", "2001:db8::/64", "dev", "lo"))]) == ["timed out"]
    assert fake.closed and requests.sock is None                         # no stale answer reaches the next batch


def test_messages_whose_body_is_cut_short_are_skipped():
    # Header lengths that agree with the datagram, bodies shorter than struct ifinfomsg / ifaddrmsg.
    short_link = struct.pack("=IHHII", 16 + 4, nl.RTM_NEWLINK, 0, 0, 0) + bytes(4)
    short_addr = struct.pack("=IHHII", 16 + 2, nl.RTM_NEWADDR, 0, 0, 0) + bytes((10, 64))
    assert nl.parse_link_messages(short_link + _newlink(3, nl.IFF_UP | nl.IFF_LOWER_UP)) == [(3, True)]
    assert nl.parse_address_messages(short_addr) == []
    assert nl.parse_link_messages(short_link) == []
