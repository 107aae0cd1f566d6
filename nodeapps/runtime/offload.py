"""TCP segmentation and coalescing at the TUN boundary (virtio-net header offloads), pure functions.

Per-packet kernel work, not cryptography, limits a userspace tunnel. With IFF_VNET_HDR and TSO6 on the
TUN device the kernel hands us one TCP super-packet of up to 64 KB instead of ~45 wire-sized segments, and
accepts one back; ESP still protects each wire-sized segment separately (no fragmentation on the wire).

* ``segment``: a super-packet from the TUN -> wire-sized TCP segments with correct checksums (what the
  NIC would do for TSO).
* ``Coalescer``: decrypted in-order segments of one TCP flow -> one super-packet for the TUN (what GRO
  would do), merging only segments whose headers match except for sequence number and checksum.

Packets are bare IPv6 with no extension headers before TCP; anything else passes through unchanged.
"""
from __future__ import annotations

import struct

import numpy

VNET_HDR = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HDR_LEN = VNET_HDR.size
F_NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV6 = 4
GSO_ECN = 0x80
PLAIN_VNET_HDR = bytes(VNET_HDR_LEN)

NH_TCP = 6
IPV6_LEN = 40
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG, TCP_ECE, TCP_CWR = 1, 2, 4, 8, 16, 32, 64, 128
_MERGEABLE_FLAGS = TCP_ACK | TCP_PSH
MAX_PAYLOAD = 0xFFFF - 60 - 40  # IPv6 payload length field, minus the largest TCP header, with margin


class OffloadError(ValueError):
    """A super-packet from the TUN that cannot be segmented."""


def ones_sum(data) -> int:
    """One's complement sum of 16-bit big-endian words, reduced mod 0xFFFF (2**16 == 1 mod 0xFFFF)."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    return int.from_bytes(data, "big") % 0xFFFF


def chunk_sums(data, size: int, count: int) -> list[int]:
    """``ones_sum`` of each of the first ``count`` chunks of ``size`` (even) octets of ``data``, in one
    vectorised pass: per-chunk big-integer sums cost more than the cipher on wire-sized packets. Words
    are summed in host order and the result swapped back (byte-order independence, RFC 1071 §2(B))."""
    if size & 1:
        raise ValueError("chunk size must be even")
    words = numpy.frombuffer(data, dtype="<u2", count=count * size // 2).reshape(count, size // 2)
    sums = words.sum(axis=1, dtype=numpy.uint64) % 0xFFFF
    return (((sums & 0xFF) << 8) | (sums >> 8)).tolist()


def _pseudo_sum(packet: bytes, upper_len: int) -> int:
    # RFC 8200 §8.1: source, destination, upper-layer length, next header
    return (ones_sum(packet[8:40]) + upper_len + NH_TCP) % 0xFFFF


def _fold_complement(total: int) -> bytes:
    return ((~total) & 0xFFFF).to_bytes(2, "big")


def finish_checksum(packet: bytes, csum_start: int, csum_offset: int) -> bytes:
    """Complete a partial checksum (the field holds the pseudo-header sum) the way a NIC would."""
    at = csum_start + csum_offset
    if at + 2 > len(packet):
        raise OffloadError("checksum offset beyond packet end")
    return packet[:at] + _fold_complement(ones_sum(packet[csum_start:])) + packet[at + 2:]


def from_tun(data: bytes) -> list[bytes]:
    """Wire-sized, fully checksummed packets from one TUN read (virtio-net header first)."""
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(data)
    packet = data[VNET_HDR_LEN:]
    kind = gso_type & ~GSO_ECN
    if kind == GSO_TCPV6:
        return segment(packet, gso_size)
    if kind != GSO_NONE:
        raise OffloadError(f"unsupported GSO type {gso_type}")
    if flags & F_NEEDS_CSUM:
        return [finish_checksum(packet, csum_start, csum_offset)]
    return [packet]


def segment(packet: bytes, mss: int) -> list[bytes]:
    """Split a TCP/IPv6 super-packet into segments of at most ``mss`` payload octets (RFC 9293 §3.1 fields)."""
    if len(packet) < IPV6_LEN + 20 or packet[6] != NH_TCP:
        raise OffloadError("GSO packet is not TCP directly over IPv6")
    if mss <= 0:
        raise OffloadError("GSO packet without a segment size")
    header_len = IPV6_LEN + (packet[IPV6_LEN + 12] >> 4) * 4
    payload = memoryview(packet)[header_len:]
    total = len(payload)
    if total <= mss:
        tcp_len = len(packet) - IPV6_LEN
        tcp = bytearray(packet[IPV6_LEN:header_len])
        tcp[16:18] = b"\0\0"
        check = _fold_complement(_pseudo_sum(packet, tcp_len) + ones_sum(tcp) + ones_sum(payload))
        return [packet[:IPV6_LEN] + bytes(tcp[:16]) + check + bytes(tcp[18:]) + bytes(payload)]
    tcp = bytearray(packet[IPV6_LEN:header_len])
    tcp[4:8] = b"\0\0\0\0"
    tcp[16:18] = b"\0\0"
    flags = tcp[13]
    middle = flags & ~(TCP_FIN | TCP_PSH | TCP_CWR)
    tcp[13] = middle
    tcp_header_len = header_len - IPV6_LEN
    seq = int.from_bytes(packet[IPV6_LEN + 4:IPV6_LEN + 8], "big")
    full = total // mss
    # Checksum of segment i = fold(base + its length + its flags delta + its sequence number + its payload
    # sum); a 32-bit sequence number sums to itself modulo 0xFFFF, since 2**16 == 1 (mod 0xFFFF).
    base = ones_sum(packet[8:40]) + NH_TCP + ones_sum(tcp)
    if not mss & 1 and full > 1:
        sums = chunk_sums(payload, mss, full)
    else:
        sums = [ones_sum(payload[i * mss:(i + 1) * mss]) for i in range(full)]
    if full * mss < total:
        sums.append(ones_sum(payload[full * mss:]))
    ports, middle_words, tail = bytes(tcp[:4]), bytes(tcp[8:16]), bytes(tcp[18:])
    ip_head, ip_tail = packet[:4], packet[6:IPV6_LEN]
    last_index = len(sums) - 1
    out = []
    append = out.append
    for index, chunk_sum in enumerate(sums):
        offset = index * mss
        chunk = payload[offset:offset + mss]
        tcp_len = tcp_header_len + len(chunk)
        words = middle_words
        delta = 0
        if index == 0 or index == last_index:
            segment_flags = flags if index == last_index else flags & ~(TCP_FIN | TCP_PSH)
            if index:
                segment_flags &= ~TCP_CWR  # RFC 3168 §6.1.2: CWR only on the first segment
            delta = segment_flags - middle  # the flags are the low octet of their 16-bit word
            words = middle_words[:5] + bytes((segment_flags,)) + middle_words[6:]
        segment_seq = (seq + offset) & 0xFFFFFFFF
        check = (~((base + tcp_len + delta + segment_seq + chunk_sum) % 0xFFFF)) & 0xFFFF
        append(b"".join((ip_head, tcp_len.to_bytes(2, "big"), ip_tail, ports, segment_seq.to_bytes(4, "big"),
                         words, check.to_bytes(2, "big"), tail, chunk)))
    return out


class Coalescer:
    """Merge consecutive in-order TCP segments per flow into super-packets; call ``add`` per packet,
    then ``flush`` once per batch to get (virtio-net header + packet) buffers for the TUN.

    A merged super-packet goes to the kernel with a partial checksum, which the kernel never verifies,
    so every segment in it must be verified here first (as GRO does). That check is deferred to the
    moment a run is emitted, where all equal-size segments are summed in one vectorised pass; a run
    with a bad segment is not merged at all but written segment by segment, for the kernel to verify
    (and drop) each. A segment written alone is left to the kernel's own check."""

    __slots__ = ("_pending", "_out", "merged", "unmerged_runs")

    def __init__(self):
        # flow -> [first packet, TCP header, segment size, next seq, packets, payload octets, header length]
        self._pending: dict[bytes, list] = {}
        self._out: list[bytes] = []
        self.merged = 0
        self.unmerged_runs = 0  # runs written unmerged because a segment's checksum failed

    def add(self, packet: bytes) -> None:
        if len(packet) < IPV6_LEN + 20 or packet[6] != NH_TCP:
            self._out.append(PLAIN_VNET_HDR + packet)
            return
        header_len = IPV6_LEN + (packet[IPV6_LEN + 12] >> 4) * 4
        payload_len = len(packet) - header_len
        flow = packet[8:IPV6_LEN + 4]
        pending = self._pending.get(flow)
        flags = packet[IPV6_LEN + 13]
        mergeable = payload_len > 0 and not flags & ~_MERGEABLE_FLAGS and len(packet) >= header_len
        if pending is not None:
            first, header, size, next_seq, packets, total, first_header_len = pending
            seq = int.from_bytes(packet[IPV6_LEN + 4:IPV6_LEN + 8], "big")
            if (mergeable and seq == next_seq and payload_len <= size and total + payload_len <= MAX_PAYLOAD
                    and header_len == first_header_len
                    and packet[IPV6_LEN + 8:IPV6_LEN + 13] == header[8:13]  # ack, data offset
                    and packet[IPV6_LEN + 14:IPV6_LEN + 16] == header[14:16]  # window
                    and packet[IPV6_LEN + 20:header_len] == header[20:]  # options
                    and packet[:4] == first[:4] and packet[7] == first[7]):
                packets.append(packet)
                pending[3] = (seq + payload_len) & 0xFFFFFFFF
                pending[5] = total + payload_len
                if payload_len < size or flags & TCP_PSH:
                    pending[1] = header[:13] + bytes((header[13] | (flags & TCP_PSH),)) + header[14:]
                    self._emit(flow)
                return
            self._emit(flow)
        if not mergeable:
            self._out.append(PLAIN_VNET_HDR + packet)
            return
        seq = int.from_bytes(packet[IPV6_LEN + 4:IPV6_LEN + 8], "big")
        self._pending[flow] = [packet, packet[IPV6_LEN:header_len], payload_len,
                               (seq + payload_len) & 0xFFFFFFFF, [packet], payload_len, header_len]
        if flags & TCP_PSH:
            self._emit(flow)

    def _emit(self, flow: bytes) -> None:
        first, header, size, _next_seq, packets, total, header_len = self._pending.pop(flow)
        if len(packets) == 1:
            self._out.append(PLAIN_VNET_HDR + first)
            return
        chunks = [p[header_len:] for p in packets]
        payload = b"".join(chunks)
        if not self._all_valid(first, packets, chunks, payload, size, header_len):
            self.unmerged_runs += 1
            self._out.extend(PLAIN_VNET_HDR + p for p in packets)
            return
        self.merged += len(chunks) - 1
        tcp_len = len(header) + total
        # Partial checksum: the field holds the (uncomplemented) pseudo-header sum; the kernel finishes it.
        pseudo = _pseudo_sum(first, tcp_len) or 0xFFFF
        tcp = header[:16] + pseudo.to_bytes(2, "big") + header[18:]
        vnet = VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV6, IPV6_LEN + len(header), size, IPV6_LEN, 16)
        self._out.append(vnet + first[:4] + tcp_len.to_bytes(2, "big") + first[6:IPV6_LEN] + tcp + payload)

    @staticmethod
    def _all_valid(first: bytes, packets: list, chunks: list, payload: bytes, size: int, header_len: int) -> bool:
        """Every segment's TCP checksum (RFC 9293 §3.1) holds; the runs's segments share addresses and
        header length, all but the last have ``size`` payload octets."""
        full = len(chunks) if len(chunks[-1]) == size else len(chunks) - 1
        if size & 1 or full < 2:
            sums = [ones_sum(c) for c in chunks]
        else:
            sums = chunk_sums(payload, size, full) + [ones_sum(c) for c in chunks[full:]]
        base = ones_sum(first[8:40]) + NH_TCP + header_len - IPV6_LEN
        for packet, chunk, chunk_sum in zip(packets, chunks, sums):
            if (base + len(chunk) + ones_sum(packet[IPV6_LEN:header_len]) + chunk_sum) % 0xFFFF:
                return False
        return True

    def flush(self) -> list[bytes]:
        for flow in list(self._pending):
            self._emit(flow)
        out, self._out = self._out, []
        return out
