"""A restarted node never sends a sequence number it sent before under the same key (RFC 4106 §3), and
never accepts again what it received before the restart."""
import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from nodeapps.esp import packet
from nodeapps.esp.errors import ReplayError, SequenceNotReserved
from nodeapps.esp.processor import IPsecProcessor
from nodeapps.esp.sa import SecurityAssociation
from nodeapps.esp.sad import SAD
from nodeapps.esp.spd import SPD
from nodeapps.runtime import sequences
from nodeapps.runtime.config import ConfigError, NodeConfig

KEY, SALT = "11" * 16, "22" * 4
OUT = {"name": "mn1-up", "direction": "out", "spi": 0x1001, "algorithm": "aes128gcm16", "key": KEY,
       "salt": SALT, "mode": "tunnel", "local": "2001:db8:21::a:1", "remote": "2001:db8:0:1::1"}
IN = {**OUT, "name": "sg-up", "direction": "in"}


def _seq_of(esp: bytes) -> int:
    return packet.unpack_header(esp)[1]


def _process(path):
    """A node process's SAs, as a restart builds them from the same configuration."""
    store = sequences.SequenceStore(str(path))
    out = SecurityAssociation.from_config(OUT)
    store.adopt([out])
    return store, out


def test_the_reservation_is_on_disk_before_the_first_packet(tmp_path):
    path = tmp_path / "mn1.seq.json"
    store, out = _process(path)
    recorded = json.loads(path.read_text())
    assert recorded == {"mn1-up/0x00001001": sequences.BLOCK}
    assert out.reserved == sequences.BLOCK and out.seq == 0
    assert _seq_of(out.seal(59, b"x")) == 1


def test_an_sa_stops_at_its_reservation_and_goes_on_once_it_is_renewed(tmp_path, monkeypatch):
    monkeypatch.setattr(sequences, "BLOCK", 8)
    monkeypatch.setattr(sequences, "RENEW_BELOW", 4)
    store, out = _process(tmp_path / "s.json")
    sent = [_seq_of(out.seal(59, b"x")) for _ in range(8)]
    assert sent == list(range(1, 9))
    with pytest.raises(SequenceNotReserved):
        out.seal(59, b"x")
    assert store.maintain(0.0)
    assert json.loads((tmp_path / "s.json").read_text())["mn1-up/0x00001001"] == 16
    assert _seq_of(out.seal(59, b"x")) == 9


def test_the_processor_drops_and_counts_an_unreserved_packet():
    out = SecurityAssociation.from_config(OUT)
    out.reserved = 0
    processor = IPsecProcessor(SPD.from_config({"vpn_prefixes": ["fdc0::/16"], "rules": [
        {"direction": "out", "src": "::/0", "dst": "::/0", "action": "protect", "sa": "mn1-up"}]}), SAD([out]))
    inner = bytes([0x60, 0, 0, 0, 0, 0, 59, 64]) + bytes(16) + bytes(16)
    verdict, _sa, wire = processor.outbound(inner)
    assert verdict == "discard" and wire is None and processor.counters["seq_exhausted"] == 1


def test_a_failed_write_never_lets_an_sa_past_what_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(sequences, "BLOCK", 8)
    monkeypatch.setattr(sequences, "RENEW_BELOW", 4)
    store, out = _process(tmp_path / "s.json")
    for _ in range(6):
        out.seal(59, b"x")
    store.path = str(tmp_path / "missing-dir" / "s.json")
    with pytest.raises(sequences.SequenceStoreError, match="missing-dir"):
        store.maintain(0.0)
    assert out.reserved == 8
    out.seal(59, b"x"), out.seal(59, b"x")
    with pytest.raises(SequenceNotReserved):
        out.seal(59, b"x")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 40), st.booleans()), min_size=1, max_size=6))
def test_no_sequence_number_is_sent_twice_across_crashes(tmp_path_factory, lives):
    """Each life sends some packets (maintaining the store or not) and then crashes without warning."""
    path = tmp_path_factory.mktemp("store") / "s.json"
    old_block, old_renew = sequences.BLOCK, sequences.RENEW_BELOW
    sequences.BLOCK, sequences.RENEW_BELOW = 16, 8
    try:
        seen = set()
        for count, maintain in lives:
            store, out = _process(path)
            for _ in range(count):
                if maintain:
                    store.maintain(0.0)
                try:
                    seq = _seq_of(out.seal(59, b"x"))
                except SequenceNotReserved:
                    continue
                assert seq not in seen, f"sequence number {seq} sent twice under one key"
                seen.add(seq)
    finally:
        sequences.BLOCK, sequences.RENEW_BELOW = old_block, old_renew


def test_a_restarted_receiver_refuses_what_it_received_before(tmp_path):
    sender = SecurityAssociation.from_config(OUT)
    captured = [sender.seal(59, b"payload") for _ in range(5)]
    path = tmp_path / "sg.seq.json"
    store = sequences.SequenceStore(str(path))
    receiver = SecurityAssociation.from_config(IN)
    store.adopt([receiver])
    for esp in captured:
        receiver.open(esp)
    assert store.maintain(10.0)   # the inbound edge is recorded
    restarted = SecurityAssociation.from_config(IN)
    sequences.SequenceStore(str(path)).adopt([restarted])
    for esp in captured:
        with pytest.raises(ReplayError):
            restarted.open(esp)
    assert restarted.open(sender.seal(59, b"new"))[1] == b"new"


def test_track_is_a_no_op_without_a_store_and_adopts_with_one(tmp_path):
    sa = SecurityAssociation.from_config(OUT)
    sequences.track(sa)
    assert sa.reserved is None
    store = sequences.SequenceStore(str(tmp_path / "t.json"))
    sequences.install(store)
    try:
        sequences.track(sa, None)
        sequences.track(sa)   # twice: once
        assert store.sas == [sa] and sa.reserved == sequences.BLOCK
    finally:
        sequences.install(None)


def test_a_bad_store_file_or_setting_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(sequences.SequenceStoreError, match="not a mapping"):
        sequences.SequenceStore(str(bad))
    base = {"node": "n", "role": "mobile-node", "tun": {"name": "t", "mtu": 1400, "addresses": [], "routes": []},
            "outer_interfaces": ["e"], "sas": [], "spd": {}, "control_socket": "/tmp/x.sock"}
    with pytest.raises(ConfigError, match="sequence_store must be a file path"):
        NodeConfig.from_dict({**base, "sequence_store": 5})
    assert NodeConfig.from_dict({**base, "sequence_store": os.fspath(bad)}).sequence_store == os.fspath(bad)
