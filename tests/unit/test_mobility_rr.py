"""Return routability (RFC 6275 §5.2.5, §6.2.7) checked against hmac/hashlib computed here."""
import hashlib
import hmac

import pytest

from nodeapps import ipv6
from nodeapps.mobility import messages as m
from nodeapps.mobility import rr

KCN = bytes(range(20))
NONCE = bytes.fromhex("1122334455667788")
HOA = ipv6.pton("2001:db8:1::10")
COA = ipv6.pton("2001:db8:2::10")
CN = ipv6.pton("2001:db8:3::5")


def test_keygen_tokens_match_rfc_formula():
    assert rr.home_keygen_token(KCN, HOA, NONCE) == hmac.new(KCN, HOA + NONCE + b"\x00", hashlib.sha1).digest()[:8]
    assert rr.care_of_keygen_token(KCN, COA, NONCE) == hmac.new(KCN, COA + NONCE + b"\x01", hashlib.sha1).digest()[:8]
    # The trailing octet separates the two: the same address gives different tokens.
    assert rr.home_keygen_token(KCN, HOA, NONCE) != rr.care_of_keygen_token(KCN, HOA, NONCE)


def test_kbm_with_and_without_care_of_token():
    home, care_of = b"H" * 8, b"C" * 8
    assert rr.binding_management_key(home, care_of) == hashlib.sha1(home + care_of).digest()
    assert rr.binding_management_key(home) == hashlib.sha1(home).digest()
    assert len(rr.binding_management_key(home)) == 20


def test_authenticator_covers_mh_data_without_checksum_and_authenticator():
    kbm = hashlib.sha1(b"k").digest()
    bu = m.BindingUpdate(0x0102, 105, ack=True, options=(m.NonceIndices(5, 6),))
    signed = rr.sign(bu, kbm, COA, CN)
    auth = signed.option(m.BindingAuthorizationData).authenticator
    assert len(auth) == 12
    mh = m.encode_message(signed, HOA, CN)  # real checksum in place
    # Independent MH Data: header with checksum zero ... up to and including the BAD type/length octets.
    assert mh[-14:-12] == bytes((5, 12)) and mh[-12:] == auth
    mh_data = mh[:4] + b"\0\0" + mh[6:-12]
    assert auth == hmac.new(kbm, COA + CN + mh_data, hashlib.sha1).digest()[:12]
    assert rr.verify(mh, kbm, COA, CN)
    # Any change to covered data, the addresses or the key breaks it; the checksum does not matter.
    assert not rr.verify(mh, kbm, HOA, CN)
    assert not rr.verify(mh, hashlib.sha1(b"x").digest(), COA, CN)
    tampered = bytearray(mh)
    tampered[7] ^= 1
    assert not rr.verify(bytes(tampered), kbm, COA, CN)
    other_checksum = mh[:4] + b"\x12\x34" + mh[6:]
    assert rr.verify(other_checksum, kbm, COA, CN)
    assert not rr.verify(m.encode_message(bu), kbm, COA, CN)  # no authenticator at all


def _counter_random():
    state = {"n": 0}

    def random_bytes(n):
        state["n"] += 1
        return bytes([state["n"]]) * n
    return random_bytes


def test_nonce_table_regeneration_and_lifetime():
    table = rr.NonceTable(_counter_random(), kcn=KCN, regeneration_interval=30, nonce_lifetime=240, first_index=65535)
    index, nonce = table.current(0.0)
    assert index == 65535 and len(nonce) == 8
    assert table.current(29.9) == (index, nonce)          # same nonce within the interval
    index2, nonce2 = table.current(30.0)
    assert index2 == 0 and nonce2 != nonce                 # 16-bit index wraps
    assert table.lookup(index, 240.0) == nonce             # valid for MAX_NONCE_LIFETIME
    assert table.lookup(index, 240.1) is None
    assert table.lookup(12345, 1.0) is None
    assert table.home_token(HOA, index2, 31.0) == rr.home_keygen_token(KCN, HOA, nonce2)
    assert table.care_of_token(COA, index2, 31.0) == rr.care_of_keygen_token(KCN, COA, nonce2)


def test_default_regeneration_leaves_room_for_token_lifetime():
    # A token taken at the end of a nonce's hand-out period is still accepted MAX_TOKEN_LIFETIME later.
    assert rr.NONCE_REGENERATION_INTERVAL + 210 <= 240
    with pytest.raises(ValueError):
        rr.NonceTable(_counter_random(), kcn=b"short")
