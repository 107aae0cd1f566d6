"""TSO-style segmentation and GRO-style coalescing at the TUN boundary, checked with scapy."""
import os

import pytest
from scapy.layers.inet6 import IPv6
from scapy.layers.inet import TCP

from nodeapps.runtime.offload import (F_NEEDS_CSUM, GSO_TCPV6, PLAIN_VNET_HDR, VNET_HDR, VNET_HDR_LEN,
                                      Coalescer, OffloadError, chunk_sums, from_tun, ones_sum, segment)

SRC, DST = "fdc0:ffee:0:1::a:1", "fdc0:ffee:0:1::10"


def tcp_packet(payload: bytes, seq=1000, flags="A", options=(("NOP", None), ("NOP", None),
                                                               ("Timestamp", (7, 9)))) -> bytes:
    return bytes(IPv6(src=SRC, dst=DST) / TCP(sport=40000, dport=5201, seq=seq, ack=77, flags=flags,
                                              window=500, options=list(options)) / payload)


def checksum_ok(raw: bytes) -> bool:
    pkt = IPv6(raw)
    given = pkt[TCP].chksum
    del pkt[TCP].chksum
    return IPv6(bytes(pkt))[TCP].chksum == given


def test_ones_sum_matches_the_word_by_word_definition():
    data = os.urandom(1001)
    padded = data + b"\0"
    total = sum(int.from_bytes(padded[i:i + 2], "big") for i in range(0, len(padded), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert ones_sum(data) % 0xFFFF == total % 0xFFFF


def test_a_super_packet_is_split_into_mss_segments_with_valid_checksums_and_sequence_numbers():
    payload = os.urandom(5000)
    supers = tcp_packet(payload, seq=0xFFFFF000, flags="PA")
    segments = segment(supers, 1388)
    assert [len(IPv6(s)[TCP].payload) for s in segments] == [1388, 1388, 1388, 836]
    assert b"".join(bytes(IPv6(s)[TCP].payload) for s in segments) == payload
    seqs = [IPv6(s)[TCP].seq for s in segments]
    assert seqs == [(0xFFFFF000 + i * 1388) & 0xFFFFFFFF for i in range(4)]  # wraps modulo 2**32
    assert all(checksum_ok(s) for s in segments)
    assert [str(IPv6(s)[TCP].flags) for s in segments] == ["A", "A", "A", "PA"]  # PSH only on the last
    assert all(IPv6(s).plen == len(s) - 40 for s in segments)


def test_partial_checksum_from_the_tun_is_completed():
    raw = tcp_packet(b"hello world")
    # What the kernel hands over with NEEDS_CSUM: the pseudo-header sum, uncomplemented.
    pseudo = (ones_sum(raw[8:40]) + len(raw) - 40 + 6) % 0xFFFF
    partial = raw[:56] + pseudo.to_bytes(2, "big") + raw[58:]
    vnet = VNET_HDR.pack(F_NEEDS_CSUM, 0, 0, 0, 40, 16)
    (out,) = from_tun(vnet + partial)
    assert checksum_ok(out) and out[56:58] == raw[56:58]


def test_plain_packets_pass_through_and_unknown_gso_types_are_refused():
    raw = tcp_packet(b"x")
    assert from_tun(PLAIN_VNET_HDR + raw) == [raw]
    with pytest.raises(OffloadError):
        from_tun(VNET_HDR.pack(0, 3, 0, 1000, 0, 0) + raw)  # UDP fragmentation offload is not enabled


def test_in_order_segments_coalesce_into_one_gso_packet_that_segments_back_identically():
    payload = os.urandom(8000)
    segments = segment(tcp_packet(payload, flags="PA"), 1000)
    coalescer = Coalescer()
    for s in segments:
        coalescer.add(s)
    (out,) = coalescer.flush()
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(out)
    assert (flags, gso_type, gso_size, csum_start, csum_offset) == (F_NEEDS_CSUM, GSO_TCPV6, 1000, 40, 16)
    merged = out[VNET_HDR_LEN:]
    assert hdr_len == 40 + 32 and IPv6(merged).plen == len(merged) - 40
    assert bytes(IPv6(merged)[TCP].payload) == payload
    # finishing the partial checksum over the whole packet gives a valid TCP checksum
    (finished,) = from_tun(VNET_HDR.pack(F_NEEDS_CSUM, 0, 0, 0, 40, 16) + merged)
    assert checksum_ok(finished)
    assert segment(finished, 1000) == segments


def test_gaps_option_changes_and_control_flags_stop_coalescing():
    a = tcp_packet(b"a" * 100, seq=1000)
    b_gap = tcp_packet(b"b" * 100, seq=1200)  # 100 octets missing
    c_other_ts = tcp_packet(b"c" * 100, seq=1300, options=(("NOP", None), ("NOP", None), ("Timestamp", (8, 9))))
    d_fin = tcp_packet(b"d" * 100, seq=1400, flags="FA")
    coalescer = Coalescer()
    for p in (a, b_gap, c_other_ts, d_fin):
        coalescer.add(p)
    out = coalescer.flush()
    assert [o[VNET_HDR_LEN:] for o in out] == [a, b_gap, c_other_ts, d_fin]
    assert all(o[:VNET_HDR_LEN] == PLAIN_VNET_HDR for o in out)


def test_a_segment_with_a_bad_checksum_is_never_merged():
    good = tcp_packet(b"a" * 100, seq=1000)
    bad = bytearray(tcp_packet(b"b" * 100, seq=1100))
    bad[-1] ^= 0xFF
    coalescer = Coalescer()
    coalescer.add(good)
    coalescer.add(bytes(bad))
    out = coalescer.flush()
    assert len(out) == 2 and out[1][VNET_HDR_LEN:] == bytes(bad)


def test_flows_are_kept_apart_and_order_within_a_flow_is_kept():
    a1, a2 = segment(tcp_packet(os.urandom(200)), 100)
    other = bytes(IPv6(src=SRC, dst=DST) / TCP(sport=40001, dport=5201, seq=5, flags="A") / b"z")
    coalescer = Coalescer()
    for p in (a1, other, a2):
        coalescer.add(p)
    out = coalescer.flush()
    assert len(out) == 2
    assert other in [o[VNET_HDR_LEN:] for o in out]
    assert coalescer.merged == 1


def test_vectorised_chunk_sums_equal_the_per_chunk_sums():
    data = os.urandom(7 * 1342 + 11)
    assert [s % 0xFFFF for s in chunk_sums(data, 1342, 7)] == \
        [ones_sum(data[i * 1342:(i + 1) * 1342]) % 0xFFFF for i in range(7)]
    with pytest.raises(ValueError):
        chunk_sums(data, 1343, 2)


@pytest.mark.parametrize("mss", [1342, 1351])  # even: vectorised sums; odd: one by one
def test_segments_and_coalescing_agree_for_even_and_odd_segment_sizes(mss):
    payload = os.urandom(20 * mss + 77)
    segments = segment(tcp_packet(payload, flags="PA"), mss)
    assert len(segments) == 21 and all(checksum_ok(s) for s in segments)
    coalescer = Coalescer()
    for s in segments:
        coalescer.add(s)
    (out,) = coalescer.flush()
    assert coalescer.merged == 20 and bytes(IPv6(out[VNET_HDR_LEN:])[TCP].payload) == payload


def test_one_bad_segment_in_a_long_run_keeps_the_whole_run_unmerged_for_the_kernel_to_check():
    segments = segment(tcp_packet(os.urandom(10 * 1342), flags="A"), 1342)
    bad = bytearray(segments[6])
    bad[500] ^= 0x01
    segments[6] = bytes(bad)
    coalescer = Coalescer()
    for s in segments:
        coalescer.add(s)
    out = coalescer.flush()
    assert [o[VNET_HDR_LEN:] for o in out] == segments and all(o[:VNET_HDR_LEN] == PLAIN_VNET_HDR for o in out)
    assert coalescer.merged == 0 and coalescer.unmerged_runs == 1


def test_cwr_stays_on_the_first_segment_and_fin_psh_on_the_last_with_valid_checksums():
    payload = os.urandom(5 * 1342 + 10)
    segments = segment(tcp_packet(payload, seq=0xFFFFFFF0, flags="FPAC"), 1342)
    assert [str(IPv6(s)[TCP].flags) for s in segments] == ["AC", "A", "A", "A", "A", "FPA"]
    assert all(checksum_ok(s) for s in segments)
    assert [IPv6(s)[TCP].seq for s in segments] == [(0xFFFFFFF0 + i * 1342) & 0xFFFFFFFF for i in range(6)]
