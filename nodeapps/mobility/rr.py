"""Return routability cryptography (RFC 6275 §5.2.5) and the correspondent node's nonce table (§5.2.7).

    home keygen token    = First(64, HMAC_SHA1(Kcn, home address | nonce | 0))
    care-of keygen token = First(64, HMAC_SHA1(Kcn, care-of address | nonce | 1))
    Kbm                  = SHA1(home keygen token | care-of keygen token)
                           SHA1(home keygen token)              when deregistering (§5.2.5)
    Authenticator        = First(96, HMAC_SHA1(Kbm, care-of address | correspondent | MH Data))  (§6.2.7)

"0" and "1" are single octets. MH Data is the Mobility Header with the checksum taken as zero and the
authenticator itself left out (``messages.authenticator_input``).
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Callable, Optional

from nodeapps.mobility.constants import (
    AUTHENTICATOR_LENGTH, KCN_LENGTH, MAX_NONCE_LIFETIME, MAX_TOKEN_LIFETIME, NONCE_LENGTH, TOKEN_LENGTH,
)
from nodeapps.mobility.messages import (
    BindingAuthorizationData, MobilityParseError, authenticator_input, authenticator_span, encode_message,
    with_option,
)

# A nonce is handed out for at most this long; with MAX_TOKEN_LIFETIME (210 s) of use by the MN the total
# stays inside MAX_NONCE_LIFETIME (240 s), so a token is never refused while the MN still trusts it.
NONCE_REGENERATION_INTERVAL = MAX_NONCE_LIFETIME - MAX_TOKEN_LIFETIME


def _first(bits: int, data: bytes) -> bytes:
    return data[:bits // 8]


def home_keygen_token(kcn: bytes, home_address: bytes, nonce: bytes) -> bytes:
    """RFC 6275 §5.2.5."""
    return _first(64, hmac.new(kcn, home_address + nonce + b"\x00", hashlib.sha1).digest())


def care_of_keygen_token(kcn: bytes, care_of_address: bytes, nonce: bytes) -> bytes:
    """RFC 6275 §5.2.5."""
    return _first(64, hmac.new(kcn, care_of_address + nonce + b"\x01", hashlib.sha1).digest())


def binding_management_key(home_token: bytes, care_of_token: Optional[bytes] = None) -> bytes:
    """Kbm. RFC 6275 §5.2.5: the care-of token is left out when deregistering (care-of = home address)."""
    return hashlib.sha1(home_token + (care_of_token or b"")).digest()


def authenticator(kbm: bytes, care_of_address: bytes, correspondent: bytes, mh_data: bytes) -> bytes:
    """RFC 6275 §6.2.7."""
    return _first(96, hmac.new(kbm, care_of_address + correspondent + mh_data, hashlib.sha1).digest())


def sign(message, kbm: bytes, care_of_address: bytes, correspondent: bytes):
    """``message`` (BU or BA) with a Binding Authorization Data option carrying its authenticator.

    The option is appended last (§6.2.7); the authenticator is computed over the encoded message with a
    zero checksum, which does not depend on the pseudo-header addresses.
    """
    placeholder = with_option(message, BindingAuthorizationData(bytes(AUTHENTICATOR_LENGTH)))
    mh_data = authenticator_input(encode_message(placeholder))
    return with_option(message, BindingAuthorizationData(authenticator(kbm, care_of_address, correspondent, mh_data)))


def verify(mh: bytes, kbm: bytes, care_of_address: bytes, correspondent: bytes) -> bool:
    """Check the authenticator inside an encoded BU/BA. False (never an exception) on any mismatch."""
    try:
        start, end = authenticator_span(mh)
    except MobilityParseError:
        return False
    mh_data = mh[:4] + b"\0\0" + mh[6:start] + mh[end:]
    return hmac.compare_digest(authenticator(kbm, care_of_address, correspondent, mh_data), mh[start:end])


@dataclass
class _Nonce:
    index: int
    nonce: bytes
    created_at: float


class NonceTable:
    """The correspondent node's secret Kcn and its nonces, identified by 16-bit indices (RFC 6275 §5.2.7).

    A new nonce is handed out every ``regeneration_interval`` seconds; a nonce is accepted in a BU for
    ``nonce_lifetime`` seconds after it was created (MAX_NONCE_LIFETIME), then the BU gets status 136-138.
    """

    def __init__(self, random_bytes: Callable[[int], bytes], *, kcn: Optional[bytes] = None,
                 regeneration_interval: float = NONCE_REGENERATION_INTERVAL,
                 nonce_lifetime: float = MAX_NONCE_LIFETIME, first_index: int = 0):
        self._random_bytes = random_bytes
        self.kcn = kcn if kcn is not None else random_bytes(KCN_LENGTH)
        if len(self.kcn) != KCN_LENGTH:
            raise ValueError("Kcn must be %d bytes" % KCN_LENGTH)
        self.regeneration_interval = regeneration_interval
        self.nonce_lifetime = nonce_lifetime
        self._next_index = first_index & 0xFFFF
        self._nonces: dict[int, _Nonce] = {}
        self._current: Optional[_Nonce] = None

    def current(self, now: float) -> tuple[int, bytes]:
        """(index, nonce) to hand out now."""
        if self._current is None or now - self._current.created_at >= self.regeneration_interval:
            self._purge(now)
            entry = _Nonce(self._next_index, self._random_bytes(NONCE_LENGTH), now)
            self._next_index = (self._next_index + 1) & 0xFFFF
            self._nonces[entry.index] = entry
            self._current = entry
        return self._current.index, self._current.nonce

    def lookup(self, index: int, now: float) -> Optional[bytes]:
        """The nonce for ``index`` if it is still valid, else None."""
        entry = self._nonces.get(index)
        if entry is None or now - entry.created_at > self.nonce_lifetime:
            return None
        return entry.nonce

    def _purge(self, now: float) -> None:
        for index in [i for i, e in self._nonces.items() if now - e.created_at > self.nonce_lifetime]:
            del self._nonces[index]

    def home_token(self, home_address: bytes, index: int, now: float) -> Optional[bytes]:
        nonce = self.lookup(index, now)
        return None if nonce is None else home_keygen_token(self.kcn, home_address, nonce)

    def care_of_token(self, care_of_address: bytes, index: int, now: float) -> Optional[bytes]:
        nonce = self.lookup(index, now)
        return None if nonce is None else care_of_keygen_token(self.kcn, care_of_address, nonce)


assert TOKEN_LENGTH == 8 and NONCE_LENGTH == 8
