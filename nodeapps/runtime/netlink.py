"""rtnetlink (rtnetlink(7)) for the node processes, with pyroute2's message classes.

Theory of operation: pyroute2 encodes and decodes the messages; the sockets are ours, so nothing blocks
the daemon's select() loop and no helper thread or asyncio loop runs beside it (pyroute2's own IPRoute
runs an event loop per call).

* The monitor socket (``open_link_monitor``) is non-blocking and joined to multicast groups; the daemon
  select()s on it and hands each datagram to ``parse_link_messages`` / ``parse_address_messages``.
  Datagrams are hostile input: a message that runs past the datagram, or that pyroute2 cannot decode,
  ends the datagram; one whose body is shorter than its fixed struct is skipped; nothing raises.
* The request socket (``RouteRequests``, one per process, opened on first use and kept) carries address,
  route, rule and proxy-neighbour changes and the address/route dumps. The kernel handles a request inside
  the send call, so a batch is one ``sendto`` and its acknowledgements are already queued when it returns:
  no process start on a handover's critical path.
* ``run_ip`` / ``run_ip6_batch`` keep the `ip`-word form the roles speak (``("route", "replace", prefix,
  "dev", tun)``): ``command_message`` turns the forms the project uses into netlink messages; any other
  command still runs through the `ip` program.
"""
from __future__ import annotations

import functools
import ipaddress
import os
import socket
import subprocess
import struct
from dataclasses import dataclass

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink import NLMSG_DONE, NLMSG_ERROR, NETLINK_EXT_ACK, nlmsg
from pyroute2.netlink.rtnl import (
    RTM_DELADDR, RTM_DELNEIGH, RTM_DELROUTE, RTM_DELRULE, RTM_GETADDR, RTM_GETROUTE, RTM_NEWADDR,
    RTM_NEWLINK, RTM_NEWNEIGH, RTM_NEWROUTE, RTM_NEWRULE, RTMGRP_IPV6_IFADDR, RTMGRP_LINK,
)
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_DADFAILED, IFA_F_NODAD, IFA_F_TENTATIVE, ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_LOWER_UP, IFF_UP
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.ndmsg import NTF_PROXY, ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

NLMSG_HEADER_LEN = 16
RECEIVE_BUFFER = 1 << 16
IFA_ADDRESS = 1
IFA_FLAGS = 8
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_HOST = 254
SCOPE_NAMES = {RT_SCOPE_UNIVERSE: "global", 200: "site", 253: "link", RT_SCOPE_HOST: "host"}   # `ip`'s names
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3          # what `ip route add` marks its routes with
RTN_UNICAST = 1
FR_ACT_TO_TBL = 1
NUD_PERMANENT = 0x80
SOL_NETLINK = 270
TABLE_NAMES = {"main": RT_TABLE_MAIN, "local": 255, "default": 253}
# What pyroute2's decoders raise on bytes they cannot make sense of.
DECODE_ERRORS = (struct.error, ValueError, TypeError, IndexError, KeyError, AttributeError, UnicodeError)


class UnsupportedCommand(ValueError):
    """An `ip`-word command that ``command_message`` does not translate."""


# ---- decoding (hostile input) ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def fixed_body_length(kind: int) -> int:
    """Octets of the fixed struct after the header (ifinfomsg 16, ifaddrmsg 8, ...; rtnetlink(7)), from
    pyroute2's own field list: a shorter body would be decoded from the next message's bytes."""
    if kind == NLMSG_ERROR:
        return 4 + NLMSG_HEADER_LEN   # the error code and the request's header (netlink(7))
    fields = getattr(MarshalRtnl.msg_map.get(kind), "fields", ())
    try:
        return struct.calcsize("=" + "".join(fmt for _name, fmt in fields))
    except (struct.error, TypeError):
        return 0


def parse_messages(data: bytes) -> list[nlmsg]:
    """pyroute2's decoded messages of one netlink datagram, in order. Stops at the first message that is
    shorter than a header or runs past the datagram (rtnetlink(7): a datagram is a run of whole messages),
    or that pyroute2 cannot decode at all; skips one whose body is shorter than its fixed struct. A
    message decoded only in part comes without the broken attributes (``get_attr`` gives None), which
    the readers below check."""
    out = []
    consumed = 0
    parser = MarshalRtnl().parse(data)
    while True:
        if consumed + NLMSG_HEADER_LEN > len(data):
            return out
        length = struct.unpack_from("=I", data, consumed)[0]
        if length < NLMSG_HEADER_LEN or consumed + length > len(data):
            return out
        try:
            message = next(parser)
        except StopIteration:
            return out
        except DECODE_ERRORS:
            return out
        kind = struct.unpack_from("=H", data, consumed + 4)[0]
        if length >= NLMSG_HEADER_LEN + fixed_body_length(kind):
            out.append(message)
        consumed += length   # pyroute2 walks by the unaligned length too


def parse_link_messages(data: bytes) -> list[tuple[int, bool]]:
    """(interface index, carrier up) for each RTM_NEWLINK in a netlink datagram; the rest is skipped."""
    out = []
    for message in parse_messages(data):
        index, flags = message.get("index"), message.get("flags")
        if message["header"]["type"] == RTM_NEWLINK and isinstance(index, int) and isinstance(flags, int):
            out.append((index, bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)))
    return out


@dataclass(frozen=True)
class AddressChange:
    """One RTM_NEWADDR / RTM_DELADDR for an IPv6 address (rtnetlink(7), struct ifaddrmsg)."""
    added: bool
    ifindex: int
    address: str
    prefixlen: int
    scope: int
    flags: int

    @property
    def usable(self) -> bool:
        """Not waiting for (or failed) duplicate address detection: the kernel announces it again when
        DAD completes (RFC 4862 §5.4)."""
        return not self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)


def parse_address_messages(data: bytes) -> list[AddressChange]:
    """The IPv6 address changes in a netlink datagram; other families and messages are skipped."""
    out = []
    for message in parse_messages(data):
        kind = message["header"]["type"]
        if kind not in (RTM_NEWADDR, RTM_DELADDR) or message.get("family") != socket.AF_INET6:
            continue
        try:
            address = str(ipaddress.IPv6Address(message.get_attr("IFA_ADDRESS")))
        except DECODE_ERRORS:
            continue
        flags = message.get_attr("IFA_FLAGS")   # the full 32-bit flags (ifa_flags has 8)
        if not isinstance(flags, int):
            flags = message.get("flags")
        fields = (message.get("index"), message.get("prefixlen"), message.get("scope"), flags)
        if all(isinstance(value, int) for value in fields):   # a body cut short decodes without them
            out.append(AddressChange(kind == RTM_NEWADDR, fields[0], address, fields[1], fields[2], fields[3]))
    return out


def open_link_monitor(addresses: bool = False) -> socket.socket:
    """Non-blocking netlink socket that hears link (carrier) changes of this namespace, and with
    ``addresses`` also IPv6 address changes."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    sock.bind((0, RTMGRP_LINK | (RTMGRP_IPV6_IFADDR if addresses else 0)))
    sock.setblocking(False)
    return sock


# ---- building requests ----------------------------------------------------------------------------------

def _interface_index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise UnsupportedCommand(f"no interface {name!r}") from None


def _table(text: str) -> int:
    if text in TABLE_NAMES:
        return TABLE_NAMES[text]
    if not text.isdigit() or not 0 < int(text) < 2 ** 32:
        raise UnsupportedCommand(f"table {text!r}")
    return int(text)


def _options(words: tuple, known: tuple) -> dict:
    """``key value`` pairs (flags like ``nodad`` map to True); UnsupportedCommand for anything else."""
    options, index = {}, 0
    while index < len(words):
        word = words[index]
        if word == "nodad" and "nodad" in known:
            options[word] = True
            index += 1
        elif word in known and index + 1 < len(words):
            options[word] = words[index + 1]
            index += 2
        else:
            raise UnsupportedCommand(f"{word!r}")
    return options


_VERBS = {"add": NLM_F_CREATE | NLM_F_EXCL, "replace": NLM_F_CREATE | NLM_F_REPLACE, "del": 0}


def address_message(verb: str, interface: str, address: str, prefixlen: int, *, nodad: bool = False) -> nlmsg:
    message = ifaddrmsg()
    message["family"], message["prefixlen"] = socket.AF_INET6, prefixlen
    message["index"], message["scope"] = _interface_index(interface), RT_SCOPE_UNIVERSE
    message["flags"] = IFA_F_NODAD if nodad else 0
    message["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
    if nodad:
        message["attrs"].append(("IFA_FLAGS", IFA_F_NODAD))
    message["header"]["type"] = RTM_DELADDR if verb == "del" else RTM_NEWADDR
    message["header"]["flags"] = _VERBS[verb]
    return message


def route_message(verb: str, destination: str, interface: str, *, gateway: str | None = None,
                  table: int = RT_TABLE_MAIN) -> nlmsg:
    network = ipaddress.IPv6Network("::/0" if destination == "default" else destination)
    message = rtmsg()
    message["family"], message["dst_len"] = socket.AF_INET6, network.prefixlen
    message["table"] = table if table < 256 else 252   # RT_TABLE_COMPAT; RTA_TABLE carries the number
    message["proto"], message["scope"], message["type"] = RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST
    attrs = [("RTA_TABLE", table), ("RTA_OIF", _interface_index(interface))]
    if network.prefixlen:
        attrs.append(("RTA_DST", str(network.network_address)))
    if gateway is not None:
        attrs.append(("RTA_GATEWAY", str(ipaddress.IPv6Address(gateway))))
    message["attrs"] = attrs
    message["header"]["type"] = RTM_DELROUTE if verb == "del" else RTM_NEWROUTE
    message["header"]["flags"] = _VERBS[verb]
    return message


RTM_F_CLONED = 0x200   # rtnetlink.h: the request is about a cached (exception) route


def cached_route_delete_message(destination: str, interface: str, table: int = RT_TABLE_MAIN) -> nlmsg:
    """Delete the kernel's cached route to ``destination`` (a learnt path MTU, RFC 8201 §4), as
    `ip -6 route flush cache to <destination>` does for one address."""
    message = route_message("del", f"{ipaddress.IPv6Address(destination)}/128", interface, table=table)
    message["flags"] = RTM_F_CLONED
    return message


def forget_path_mtu(destination: str, interface: str) -> str:
    """The error text ("" when done; the kernel's "No such process" when nothing was cached)."""
    try:
        message = cached_route_delete_message(destination, interface)
    except UnsupportedCommand as exc:   # the interface is gone
        return str(exc)
    return _requests.apply([message])[0]


def rule_message(verb: str, table: int, priority: int, *, source: str | None = None,
                 in_interface: str | None = None) -> nlmsg:
    message = fibmsg()
    message["family"], message["action"] = socket.AF_INET6, FR_ACT_TO_TBL
    message["table"] = table if table < 256 else 252
    attrs = [("FRA_TABLE", table), ("FRA_PRIORITY", priority)]
    if source is not None:
        network = ipaddress.IPv6Network(source)
        message["src_len"] = network.prefixlen
        attrs.append(("FRA_SRC", str(network.network_address)))
    if in_interface is not None:
        attrs.append(("FRA_IIFNAME", in_interface))
    message["attrs"] = attrs
    message["header"]["type"] = RTM_DELRULE if verb == "del" else RTM_NEWRULE
    message["header"]["flags"] = _VERBS[verb] if verb != "replace" else NLM_F_CREATE
    return message


def proxy_neighbour_message(verb: str, address: str, interface: str) -> nlmsg:
    """A proxy ND entry (the home agent's defence of a home address, RFC 6275 §10.4.1)."""
    message = ndmsg()
    message["family"], message["ifindex"] = socket.AF_INET6, _interface_index(interface)
    message["state"], message["flags"] = NUD_PERMANENT, NTF_PROXY
    message["attrs"] = [("NDA_DST", str(ipaddress.IPv6Address(address)))]
    message["header"]["type"] = RTM_DELNEIGH if verb == "del" else RTM_NEWNEIGH
    message["header"]["flags"] = _VERBS[verb]
    return message


def command_message(words: tuple) -> nlmsg:
    """The netlink request for one `ip -6` command of the forms the roles use:
    ``addr add|replace|del ADDR/LEN dev IF [nodad]``, ``route add|replace|del PREFIX|default [via GW] dev IF
    [table T]``, ``rule add|del from PREFIX|iif IF lookup T priority N``, ``neigh add|replace|del proxy
    ADDR dev IF``. UnsupportedCommand for anything else (the caller runs `ip` then)."""
    words = tuple(str(w) for w in words)
    if len(words) < 3 or words[1] not in _VERBS:
        raise UnsupportedCommand(" ".join(words))
    obj, verb, target, rest = words[0], words[1], words[2], words[3:]
    try:
        if obj in ("addr", "address") and "/" in target:
            options = _options(rest, ("dev", "nodad"))
            address, prefixlen = target.split("/", 1)
            return address_message(verb, options["dev"], str(ipaddress.IPv6Address(address)), int(prefixlen),
                                   nodad=options.get("nodad", False))
        if obj == "route":
            options = _options(rest, ("dev", "via", "table"))
            return route_message(verb, target, options["dev"], gateway=options.get("via"),
                                 table=_table(options.get("table", "main")))
        if obj == "rule" and verb != "replace":
            options = _options(words[2:], ("from", "iif", "lookup", "priority"))
            return rule_message(verb, _table(options["lookup"]), int(options["priority"]),
                                source=options.get("from"), in_interface=options.get("iif"))
        if obj == "neigh" and target == "proxy" and len(rest) == 3 and rest[1] == "dev":
            return proxy_neighbour_message(verb, rest[0], rest[2])
    except (KeyError, ValueError) as exc:
        if isinstance(exc, UnsupportedCommand):
            raise
        raise UnsupportedCommand(" ".join(words)) from None
    raise UnsupportedCommand(" ".join(words))


# ---- the request socket ---------------------------------------------------------------------------------

def error_text(code: int, detail: str | None) -> str:
    """Like `ip`: the kernel's extended-ack message when it gave one, else the errno text."""
    return f"Error: {detail}" if isinstance(detail, str) and detail else f"RTNETLINK answers: {os.strerror(code)}"


class RouteRequests:
    """One NETLINK_ROUTE socket for changes and dumps, opened on first use and kept for the process."""

    RECEIVE_TIMEOUT_S = 0.25   # the kernel answers inside sendto; this only bounds a lost answer

    def __init__(self):
        self.sock: socket.socket | None = None
        self.sequence = 0

    def _socket(self) -> socket.socket:
        if self.sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
            sock.bind((0, 0))
            try:
                sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)   # error texts like `ip` shows
            except OSError:
                pass
            sock.settimeout(self.RECEIVE_TIMEOUT_S)
            self.sock = sock
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _encode(self, message: nlmsg, flags: int) -> tuple[int, bytes]:
        self.sequence = (self.sequence + 1) & 0xFFFFFFFF
        message["header"]["flags"] = (message["header"].get("flags") or 0) | flags
        message["header"]["sequence_number"] = self.sequence
        message.encode()
        return self.sequence, bytes(message.data)

    def apply(self, messages: list[nlmsg]) -> list[str]:
        """Send every request in one datagram (the kernel goes on after a failed one, like `ip -force`);
        one error text per request, "" where it succeeded."""
        if not messages:
            return []
        encoded = [self._encode(m, NLM_F_REQUEST | NLM_F_ACK) for m in messages]
        errors = {sequence: None for sequence, _ in encoded}
        try:
            sock = self._socket()
            sock.sendto(b"".join(data for _, data in encoded), (0, 0))
            while any(e is None for e in errors.values()):
                for message in parse_messages(sock.recv(RECEIVE_BUFFER)):
                    sequence = message["header"]["sequence_number"]
                    if message["header"]["type"] == NLMSG_ERROR and errors.get(sequence, "") is None:
                        errors[sequence] = _ack_error(message)
        except OSError as exc:
            self.close()   # a timed-out or broken socket is not reused: stale answers would confuse the next
            text = exc.strerror or str(exc)
            return [e if e is not None else text for e in errors.values()]
        return list(errors.values())

    def dump(self, message: nlmsg) -> list[nlmsg]:
        """Every message of a dump request (addresses, routes, ...); [] when the kernel would not say."""
        sequence, data = self._encode(message, NLM_F_REQUEST | NLM_F_DUMP)
        out = []
        try:
            sock = self._socket()
            sock.sendto(data, (0, 0))
            while True:
                for reply in parse_messages(sock.recv(RECEIVE_BUFFER)):
                    if reply["header"]["sequence_number"] != sequence:
                        continue
                    if reply["header"]["type"] in (NLMSG_DONE, NLMSG_ERROR):
                        return out
                    out.append(reply)
        except OSError:
            self.close()
            return out


def _ack_error(message: nlmsg) -> str:
    code = abs(message.get("error") or 0)
    return error_text(code, message.get_attr("NLMSGERR_ATTR_MSG")) if code else ""


_requests = RouteRequests()


def run_ip6_batch(*commands: tuple) -> list[str]:
    """Several `ip -6` commands, in order, as netlink requests on the process's one socket (an `ip`
    process per batch cost milliseconds on a handover's critical path); every command runs even if an
    earlier one failed. One error text per command, "" for those that succeeded. A batch with a form
    ``command_message`` does not know runs through `ip -6 -force -batch` whole."""
    if not commands:
        return []
    try:
        messages = [command_message(c) for c in commands]
    except UnsupportedCommand:
        return _ip_batch(commands)
    return _requests.apply(messages)


def run_ip(*args: str) -> str:
    """One `ip` command; the error text (empty on success). ``-6`` forms go through netlink."""
    if args[:1] == ("-6",):
        try:
            return _requests.apply([command_message(args[1:])])[0]
        except UnsupportedCommand:
            pass
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    return result.stderr.strip() if result.returncode else ""


def _ip_batch(commands: tuple) -> list[str]:
    script = "".join(" ".join(str(word) for word in command) + "\n" for command in commands)
    result = subprocess.run(["ip", "-6", "-force", "-batch", "-"], input=script, capture_output=True, text=True)
    return batch_errors(result.stderr, len(commands))


def batch_errors(stderr: str, count: int) -> list[str]:
    """Per-command errors from the stderr of `ip -force -batch`, which ends each failure's message with
    "Command failed -:N" (N counts from 1)."""
    errors, message = [""] * count, []
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("Command failed -:"):
            index = line.rsplit(":", 1)[1]
            if index.isdigit() and 1 <= int(index) <= count:
                errors[int(index) - 1] = " ".join(message) or "failed"
            message = []
        elif line:
            message.append(line)
    return errors


# ---- dumps ----------------------------------------------------------------------------------------------

def ipv6_addresses(interface: str | None = None) -> list[tuple[int, str, int, int]]:
    """(interface index, address, prefix length, scope) of the IPv6 addresses, of one interface or all."""
    request = ifaddrmsg()
    request["family"] = socket.AF_INET6
    request["header"]["type"] = RTM_GETADDR
    index = socket.if_nametoindex(interface) if interface is not None else None
    out = []
    for message in _requests.dump(request):
        if message.get("family") != socket.AF_INET6 or index not in (None, message.get("index")):
            continue
        address = message.get_attr("IFA_ADDRESS")
        if address:
            out.append((message.get("index"), address, message.get("prefixlen"), message.get("scope")))
    return out


def default_router(interface: str) -> str | None:
    """The gateway of the IPv6 default route out of ``interface`` in the main table, or None."""
    request = rtmsg()
    request["family"] = socket.AF_INET6
    request["header"]["type"] = RTM_GETROUTE
    index = socket.if_nametoindex(interface)
    for message in _requests.dump(request):
        if (message.get("dst_len") == 0 and message.get_attr("RTA_OIF") == index
                and message.get_attr("RTA_TABLE") in (None, RT_TABLE_MAIN) and message.get_attr("RTA_GATEWAY")):
            return message.get_attr("RTA_GATEWAY")
    return None
