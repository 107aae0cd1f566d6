"""SecurityAssociation: configuration, sequence numbers, receive order and counters."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeapps.esp import (ConfigError, EspError, EspParseError, IntegrityError, ReplayError, SecurityAssociation,
                          SequenceExhausted)
from nodeapps.esp import packet

KEY_HEX = "00112233445566778899aabbccddeeff"
CONFIG = {"name": "mn1->sg", "direction": "out", "spi": 0x1001, "algorithm": "aes128gcm16", "key": KEY_HEX,
          "salt": "0a0b0c0d", "mode": "tunnel", "local": "2001:db8::1", "remote": "2001:db8::2"}


def pair(**overrides):
    out_cfg = dict(CONFIG, **overrides)
    in_cfg = dict(out_cfg, direction="in", local=out_cfg["remote"], remote=out_cfg["local"])
    return SecurityAssociation.from_config(out_cfg), SecurityAssociation.from_config(in_cfg)


def test_constructor_api_and_addresses():
    sa = SecurityAssociation(name="mn1->sg", direction="out", spi=0x1001, key=bytes(16), salt=bytes(4),
                             mode="tunnel", local="2001:db8:0::1", remote="2001:db8::2", replay_window=64,
                             esn=False)
    assert sa.local == "2001:db8::1"
    assert sa.local_bytes == bytes.fromhex("20010db8" + "0" * 22 + "01")
    assert sa.remote_bytes[-1] == 2
    assert sa.destination_bytes == sa.remote_bytes
    assert sa.algorithm == "aes128gcm16"


def test_from_config_aes256_and_options():
    sa = SecurityAssociation.from_config(dict(CONFIG, algorithm="aes256gcm16", key=KEY_HEX * 2, spi="0x2000",
                                              replay_window=128, esn=True, direction="in", created_at=12.5))
    assert (sa.algorithm, sa.spi, sa.window.size, sa.esn, sa.created_at) == ("aes256gcm16", 0x2000, 128, True, 12.5)
    assert sa.destination_bytes == sa.local_bytes


BAD_CONFIGS = [
    ({"spi": 5}, "spi"),
    ({"spi": 2 ** 32}, "spi"),
    ({"spi": "zz"}, "spi"),
    ({"spi": True}, "spi"),
    ({"direction": "both"}, "direction"),
    ({"mode": "beet"}, "mode"),
    ({"algorithm": "aes128cbc"}, "algorithm"),
    ({"key": KEY_HEX[:-2]}, "key"),
    ({"key": "xyz"}, "key"),
    ({"key": 1234}, "key"),
    ({"algorithm": "aes256gcm16"}, "key"),
    ({"salt": "0a0b0c"}, "salt"),
    ({"salt": None}, "salt"),
    ({"local": "10.0.0.1"}, "local"),
    ({"remote": ["::1"]}, "remote"),
    ({"replay_window": 16}, "replay_window"),
    ({"replay_window": 10 ** 20}, "replay_window"),   # one-line error, not a bitmap that eats the memory
    ({"replay_window": "64"}, "replay_window"),
    ({"esn": "yes"}, "esn"),
    ({"soft_limit": 0}, "soft_limit"),
    ({"name": ""}, "name"),
    ({"lifetime": 3}, "lifetime"),
    ({"created_at": [1]}, "created_at"),
]


@pytest.mark.parametrize("change, field", BAD_CONFIGS)
def test_bad_config_names_field_and_sa(change, field):
    with pytest.raises(ConfigError) as info:
        SecurityAssociation.from_config(dict(CONFIG, **change))
    message = str(info.value)
    assert "\n" not in message
    assert field in message
    if "name" not in change:
        assert "mn1->sg" in message


@pytest.mark.parametrize("missing", ["name", "spi", "key", "salt", "mode", "local", "remote", "algorithm"])
def test_missing_field(missing):
    config = {k: v for k, v in CONFIG.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        SecurityAssociation.from_config(config)


def test_not_a_mapping():
    with pytest.raises(ConfigError):
        SecurityAssociation.from_config(["name"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(CONFIG) + ["replay_window", "esn", "x"]),
                       st.none() | st.booleans() | st.integers() | st.text(max_size=40) | st.binary(max_size=20),
                       max_size=12))
def test_any_config_gives_sa_or_config_error(overrides):
    try:
        SecurityAssociation.from_config(dict(CONFIG, **overrides))
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_sequence_starts_at_one_and_counts():
    out_sa, _ = pair()
    first = out_sa.seal(41, b"a" * 10)
    second = out_sa.seal(41, b"b" * 20)
    assert packet.unpack_header(first) == (0x1001, 1)
    assert packet.unpack_header(second) == (0x1001, 2)
    assert (out_sa.seq, out_sa.counters.packets, out_sa.counters.bytes) == (2, 2, 30)
    assert out_sa.counters["bytes"] == 30


def test_soft_limit_event_once_then_exhaustion_refuses():
    out_sa, _ = pair(soft_limit=2 ** 32 - 3)
    out_sa.seq = 2 ** 32 - 5
    out_sa.seal(41, b"x")
    assert out_sa.events == []
    out_sa.seal(41, b"x")  # seq 2**32 - 3: the soft limit
    assert out_sa.pop_events() == [{"event": "sa_soft_limit", "sa": "mn1->sg", "spi": "0x00001001",
                                    "seq": 2 ** 32 - 3}]
    out_sa.seal(41, b"x")
    last = out_sa.seal(41, b"x")
    assert packet.unpack_header(last)[1] == 2 ** 32 - 1
    assert out_sa.events == []
    for _ in range(3):
        with pytest.raises(SequenceExhausted):  # RFC 4303 §3.3.3: never cycle to 0
            out_sa.seal(41, b"x")
    assert out_sa.seq == 2 ** 32 - 1
    assert [e["event"] for e in out_sa.pop_events()] == ["seq_exhausted"]


def test_default_soft_limit():
    out_sa, _ = pair()
    assert out_sa.soft_limit == 2 ** 32 - 2 ** 16
    out_sa.seq = 2 ** 32 - 2 ** 16 - 1
    out_sa.seal(41, b"")
    assert out_sa.events[0]["event"] == "sa_soft_limit"


def test_esn_sender_crosses_2_32():
    out_sa, in_sa = pair(esn=True)
    out_sa.seq = 2 ** 32 - 2
    in_sa.window.commit(2 ** 32 - 3)
    packets = [out_sa.seal(6, bytes([i])) for i in range(3)]
    assert [packet.unpack_header(p)[1] for p in packets] == [2 ** 32 - 1, 0, 1]
    assert [in_sa.open(p) for p in packets] == [(6, b"\0"), (6, b"\1"), (6, b"\2")]
    assert in_sa.window.top == 2 ** 32 + 1


def test_open_round_trip_and_counters():
    out_sa, in_sa = pair()
    assert in_sa.open(out_sa.seal(41, b"payload")) == (41, b"payload")
    assert (in_sa.counters.packets, in_sa.counters.bytes) == (1, 7)


def test_replay_counted():
    out_sa, in_sa = pair()
    esp = out_sa.seal(41, b"p")
    in_sa.open(esp)
    with pytest.raises(ReplayError):
        in_sa.open(esp)
    assert in_sa.counters.replay_drops == 1


def test_tampered_packet_fails_icv_and_does_not_advance_window():
    out_sa, in_sa = pair()
    esp = bytearray(out_sa.seal(41, b"payload"))
    esp[20] ^= 1
    with pytest.raises(IntegrityError):
        in_sa.open(bytes(esp))
    forged_seq = bytearray(out_sa.seal(41, b"x"))
    forged_seq[4:8] = (1000).to_bytes(4, "big")  # seq is in the AAD
    with pytest.raises(IntegrityError):
        in_sa.open(bytes(forged_seq))
    assert in_sa.counters.icv_failures == 2
    assert in_sa.window.top == 0
    esp[20] ^= 1
    assert in_sa.open(bytes(esp)) == (41, b"payload")  # the genuine one is still welcome


def test_wrong_key_is_icv_failure():
    out_sa, _ = pair()
    _, other_in = pair(key="ff" * 16)
    with pytest.raises(IntegrityError):
        other_in.open(out_sa.seal(41, b"x"))


def test_truncated_and_foreign_spi_are_parse_errors():
    out_sa, in_sa = pair()
    esp = out_sa.seal(41, b"x")
    with pytest.raises(EspParseError):
        in_sa.open(esp[:20])
    foreign = (0x9999).to_bytes(4, "big") + esp[4:]
    with pytest.raises(EspParseError):
        in_sa.open(foreign)
    assert in_sa.counters.parse_errors == 2


def test_bad_padding_after_valid_icv_is_parse_error():
    out_sa, in_sa = pair()
    # An authentic packet whose padding is wrong: build it by hand with the same key and salt.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    header_iv = bytes.fromhex("00001001" "00000001" "0000000000000001")
    plain = b"ab" + bytes((7, 7)) + bytes((2, 41))
    esp = header_iv + AESGCM(bytes.fromhex(KEY_HEX)).encrypt(bytes.fromhex("0a0b0c0d") + header_iv[8:], plain,
                                                             header_iv[:8])
    with pytest.raises(EspParseError):
        in_sa.open(esp)
    assert in_sa.counters.parse_errors == 1
    assert in_sa.window.top == 1  # authentic, so the number is used up (RFC 4303 §3.4.3 order)


def test_dummy_packet_counted_not_delivered_as_data():
    out_sa, in_sa = pair()
    assert in_sa.open(out_sa.seal(59, b"")) == (59, b"")
    assert (in_sa.counters.dummy_drops, in_sa.counters.packets) == (1, 0)


def test_errors_share_a_base():
    for error in (ReplayError, IntegrityError, EspParseError, SequenceExhausted):
        assert issubclass(error, EspError)


def test_direction_is_enforced():
    out_sa, in_sa = pair()
    with pytest.raises(ValueError):
        in_sa.seal(41, b"x")
    with pytest.raises(ValueError):
        out_sa.open(out_sa.seal(41, b"x"))


def test_status_is_json_and_has_no_key_material():
    out_sa, in_sa = pair(created_at=100.0)
    in_sa.open(out_sa.seal(41, b"abc"))
    for sa in (out_sa, in_sa):
        status = sa.status()
        text = json.dumps(status)
        assert KEY_HEX not in text and "0a0b0c0d" not in text
        assert status["spi"] == "0x00001001"
        assert status["created_at"] == 100.0
    assert out_sa.status()["seq"] == 1
    assert in_sa.status()["highest_seq"] == 1
    assert in_sa.status()["counters"]["packets"] == 1
    assert in_sa.status()["replay_window"] == 64
    assert (in_sa.status()["local"], in_sa.status()["remote"]) == ("2001:db8::2", "2001:db8::1")
