"""ESP wire format: golden bytes, padding (RFC 4303 §2.4), malformed packets."""
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodeapps.esp import SAD, SPD, EspParseError, IntegrityError, IPsecProcessor, SecurityAssociation
from nodeapps.esp import packet

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
SALT = bytes.fromhex("cafebabe")
SPI = 0x1001
# IPv6 fd00:1::10 -> fd00:2::20, hop limit 63, UDP 1234 -> 5678, "hello".
INNER = bytes.fromhex("60000000000d113ffd000001000000000000000000000010fd000002000000000000000000000020"
                      "04d2162e000da6cd68656c6c6f")
GOLDEN_ESP_TUNNEL = ("00001001" "00000001" "0000000000000001"
                     "d20519994a7240cb661bc11c467fa937d3688140b9f7489503b51ff677ed293b8487b7fc4ffa3a474d7d753e"
                     "7ec53f2e7367f81df18738370afeb33d32bc75ed1a" "3749377e4282e1")
GOLDEN_TUNNEL = ("600000000058324020010db800000000000000000000000120010db8000000000000000000000002"
                 + GOLDEN_ESP_TUNNEL)
GOLDEN_TRANSPORT = ("600000000030323ffd000001000000000000000000000010fd000002000000000000000000000020"
                    "00001001" "00000001" "0000000000000001"
                    "b6d70fb74a72f739f37ead71297ea8262ca473218b5efb4d932b58fef9dec69d")


def outbound_once(mode):
    sa = SecurityAssociation(name="x", direction="out", spi=SPI, key=KEY, salt=SALT, mode=mode,
                             local="2001:db8::1", remote="2001:db8::2")
    spd = SPD.from_config({"rules": [{"direction": "out", "action": "protect", "sa": "x"}]})
    return IPsecProcessor(spd, SAD([sa])).outbound(INNER)


def test_golden_esp_of_tunnel_payload():
    esp = packet.seal(AESGCM(KEY), SALT, SPI, 1, 41, INNER)
    assert esp.hex() == GOLDEN_ESP_TUNNEL


def test_golden_tunnel_mode_packet():
    verdict, _, out = outbound_once("tunnel")
    assert verdict == "protect"
    assert out.hex() == GOLDEN_TUNNEL


def test_golden_transport_mode_packet():
    verdict, _, out = outbound_once("transport")
    assert verdict == "protect"
    assert out.hex() == GOLDEN_TRANSPORT


def test_golden_esp_parses_back():
    esp = bytes.fromhex(GOLDEN_ESP_TUNNEL)
    assert packet.unpack_header(esp) == (SPI, 1)
    plain = packet.decrypt(AESGCM(KEY), SALT, esp, esp[:8])
    assert packet.strip_trailer(plain) == (41, INNER)


def test_iv_is_the_sequence_counter_and_nonce_uses_salt():
    esp = packet.seal(AESGCM(KEY), SALT, SPI, 0x0102030405, 6, b"x", esn=True)
    assert esp[4:8] == bytes.fromhex("02030405")  # low half on the wire
    assert esp[8:16] == bytes.fromhex("0000000102030405")  # RFC 4106 §3.1: IV = 64-bit counter
    aad = packet.aad_for(esp, 0x0102030405, esn=True)
    assert aad == bytes.fromhex("00001001" "00000001" "02030405")  # RFC 4106 §5
    assert packet.decrypt(AESGCM(KEY), SALT, esp, aad)[:1] == b"x"
    with pytest.raises(IntegrityError):  # the high half is authenticated although not sent
        packet.decrypt(AESGCM(KEY), SALT, esp, esp[:8])


@pytest.mark.parametrize("length", range(0, 12))
def test_padding_for_every_length_mod_4(length):
    payload = bytes(range(length))
    esp = packet.seal(AESGCM(KEY), SALT, SPI, 7, 17, payload)
    plain = AESGCM(KEY).decrypt(SALT + esp[8:16], esp[16:], esp[:8])
    pad = plain[-2]
    assert pad == (-(length + 2)) % 4  # RFC 4303 §2.4: minimal padding to a 4-octet boundary
    assert (length + pad + 2) % 4 == 0
    assert plain[length:length + pad] == bytes(range(1, pad + 1))
    assert plain[-1] == 17
    assert len(esp) == packet.esp_length(length)
    assert packet.strip_trailer(plain) == (17, payload)


def test_strip_trailer_accepts_longer_padding_within_the_data():
    plain = b"abc" + bytes(range(1, 10)) + bytes((9, 6))
    assert packet.strip_trailer(plain) == (6, b"abc")


@pytest.mark.parametrize("plain, message", [
    (b"ab" + bytes((3, 6)), "pad length"),  # pad length 3 but only 2 octets of data
    (bytes((0, 6))[:1] + bytes((200, 6)), "pad length"),
    (b"ab" + bytes((1, 3)) + bytes((2, 6)), "padding"),  # padding 1,3 instead of 1,2
    (b"a" + bytes((0,)) + bytes((1, 6)), "padding"),
])
def test_strip_trailer_rejects_bad_padding(plain, message):
    with pytest.raises(EspParseError, match=message):
        packet.strip_trailer(plain)


@pytest.mark.parametrize("length", [0, 1, 8, 16, packet.MIN_LEN - 1])
def test_short_packets_are_parse_errors(length):
    with pytest.raises(EspParseError):
        packet.unpack_header(bytes(length))


def test_shortest_packet_is_accepted():
    # Two octets of plaintext (pad length 0, next header 59): shorter than any aligned sender would emit,
    # yet well formed; the receiver does not insist on alignment.
    header_iv = bytes.fromhex("00001001" "00000001" "0000000000000001")
    esp = header_iv + AESGCM(KEY).encrypt(SALT + header_iv[8:], bytes((0, 59)), header_iv[:8])
    assert len(esp) == packet.MIN_LEN
    assert packet.unpack_header(esp) == (SPI, 1)
    assert packet.strip_trailer(packet.decrypt(AESGCM(KEY), SALT, esp, esp[:8])) == (59, b"")


def test_empty_payload_is_padded_to_alignment():
    esp = packet.seal(AESGCM(KEY), SALT, SPI, 1, 59, b"")
    assert len(esp) == packet.MIN_LEN + 2


def test_next_header_must_be_an_octet():
    with pytest.raises(ValueError):
        packet.seal(AESGCM(KEY), SALT, SPI, 1, 256, b"x")


def test_prefix_is_prepended():
    esp = packet.seal(AESGCM(KEY), SALT, SPI, 1, 41, INNER)
    assert packet.seal(AESGCM(KEY), SALT, SPI, 1, 41, INNER, prefix=b"HDR") == b"HDR" + esp


def test_aes256_key():
    key = bytes(range(32))
    esp = packet.seal(AESGCM(key), SALT, SPI, 3, 41, INNER)
    plain = packet.decrypt(AESGCM(key), SALT, esp, esp[:8])
    assert packet.strip_trailer(plain) == (41, INNER)
    with pytest.raises(IntegrityError):
        packet.decrypt(AESGCM(KEY + KEY), SALT, esp, esp[:8])
