"""Sockets for outer (on-the-wire) packets that the kernel here cannot handle itself.

Receive: one AF_PACKET socket per interface, with a classic BPF filter that passes only IPv6 frames
addressed to this host whose next header we own (ESP). Send: one raw IPv6 socket with IPV6_HDRINCL, so
the node builds whole packets (outer header, extension headers) itself. ESP in UDP (RFC 3948) uses one
UDP socket on port 4500 with segmentation offload and GRO instead (``open_udp_encap``).
"""
from __future__ import annotations

import ctypes
import socket
import struct

ETH_P_IPV6 = 0x86DD
ETH_HEADER_LEN = 14
_SOL_PACKET = 263
_PACKET_IGNORE_OUTGOING = 23
_SO_ATTACH_FILTER = 26
_SO_RCVBUFFORCE = 33
_SO_SNDBUFFORCE = 32
_IPV6_HDRINCL = 36
_SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # SKF_AD_OFF + SKF_AD_PKTTYPE
_PACKET_HOST = 0
_PACKET_OUTGOING = 4

# BPF opcodes
_LD_H_ABS = 0x28
_LD_B_ABS = 0x30
_JEQ_K = 0x15
_RET_K = 0x06


def _bpf_program(next_headers: tuple[int, ...], host_only: bool = True) -> list[tuple[int, int, int, int]]:
    """Accept frames to this host (or, without ``host_only``, also multicast), EtherType IPv6, whose first
    next header is one of ``next_headers``."""
    n = len(next_headers)
    program = [
        (_LD_B_ABS, 0, 0, _SKF_AD_PKTTYPE),
        (_JEQ_K, 0, n + 3, _PACKET_HOST) if host_only else (_JEQ_K, n + 3, 0, _PACKET_OUTGOING),
        (_LD_H_ABS, 0, 0, 12),
        (_JEQ_K, 0, n + 1, ETH_P_IPV6),            # not IPv6 -> drop
        (_LD_B_ABS, 0, 0, ETH_HEADER_LEN + 6),     # IPv6 next header
    ]
    for i, nh in enumerate(next_headers):
        program.append((_JEQ_K, n - i, 0, nh))     # match -> accept
    program.append((_RET_K, 0, 0, 0))              # drop
    program.append((_RET_K, 0, 0, 0x40000))        # accept whole frame
    return program


def _attach_filter(sock: socket.socket, program) -> None:
    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def open_capture(interface: str, next_headers: tuple[int, ...], rcvbuf: int = 8 << 20,
                 host_only: bool = True) -> socket.socket:
    """Non-blocking AF_PACKET socket on ``interface`` that sees only incoming matching frames."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
    try:
        _attach_filter(sock, _bpf_program(next_headers, host_only))
        sock.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, rcvbuf)
        sock.bind((interface, ETH_P_IPV6))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def open_sender(sndbuf: int = 8 << 20) -> socket.socket:
    """Raw IPv6 socket that sends packets whose IPv6 header we built ourselves."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_HDRINCL, 1)
    sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, sndbuf)
    return sock


# UDP-encapsulated ESP (RFC 3948): one UDP socket on port 4500 with segmentation offload both ways.
SOL_UDP = 17
UDP_SEGMENT = 103   # udp(7): send one buffer as equal-size datagrams (GSO)
UDP_GRO = 104       # udp(7): receive consecutive datagrams of a flow as one buffer, with their size
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
# The kernel's cap on datagrams per UDP_SEGMENT send (UDP_MAX_SEGMENTS; 64 on older kernels).
UDP_MAX_SEGMENTS = 64


def open_udp_encap(port: int, sndbuf: int = 8 << 20, rcvbuf: int = 8 << 20) -> socket.socket:
    """Non-blocking UDP socket on [::]:``port`` that hands over GRO-coalesced datagrams with their
    segment size (UDP_GRO cmsg) and destination address (IPV6_PKTINFO cmsg)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, sndbuf)
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, rcvbuf)
        sock.bind(("::", port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def pktinfo(source: bytes) -> tuple[int, int, bytes]:
    """Ancillary data choosing the source address of one send (ipv6(7) IPV6_PKTINFO, any interface)."""
    return socket.IPPROTO_IPV6, IPV6_PKTINFO, source + b"\0\0\0\0"


def gso(segment_size: int) -> tuple[int, int, bytes]:
    """Ancillary data for one UDP_SEGMENT send."""
    return SOL_UDP, UDP_SEGMENT, struct.pack("=H", segment_size)


def parse_udp_cmsgs(ancdata) -> tuple[int, bytes | None]:
    """(GRO segment size or 0, destination address or None) from one recvmsg's ancillary data."""
    size, destination = 0, None
    for level, kind, data in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
            size = struct.unpack_from("=i", data)[0]
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 16:
            destination = bytes(data[:16])
    return size, destination
