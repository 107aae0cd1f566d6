"""rtnetlink through pyroute2's message classes: decoding the monitor's datagrams (hostile input), the
requests the roles' `ip`-word commands become, and the request socket's answers. No root needed."""
import struct

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
