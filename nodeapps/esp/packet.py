"""ESP wire format with AES-GCM: RFC 4303 framing, RFC 4106 nonce / AAD / IV rules.

    0        4        8                16                     len-16     len
    +--------+--------+----------------+----------------------+----------+
    |  SPI   | seq lo | IV (8 octets)  | ciphertext of        |   ICV    |
    |        |        |                | payload|pad|pl|nh    | (16 oct) |
    +--------+--------+----------------+----------------------+----------+

* IV: the 64-bit sequence counter (RFC 4106 §3.1 lets the sender use a counter; the SA never reuses one
  under a key because sequence numbers never cycle).
* Nonce: 4-byte salt || IV (RFC 4106 §4).
* AAD: SPI || seq, or SPI || seq hi || seq lo with extended sequence numbers (RFC 4106 §5).
* Padding: 1, 2, 3, ... so that payload + padding + 2 is a multiple of 4 (RFC 4303 §2.4; GCM needs no
  block alignment, RFC 4106 §3.2).

Functions take an ``AESGCM`` object built once per SA; nothing here keeps state.
"""
from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag

from .errors import EspParseError, IntegrityError

HEADER_LEN = 8
IV_LEN = 8
ICV_LEN = 16
SALT_LEN = 4
TRAILER_MIN = 2
# Shortest valid ESP packet: header, IV, empty payload with pad length and next header, ICV.
MIN_LEN = HEADER_LEN + IV_LEN + TRAILER_MIN + ICV_LEN
SEQ_LO_MASK = 0xFFFFFFFF

_HEADER_IV = struct.Struct("!IIQ")
_SPI_SEQ = struct.Struct("!II")
_AAD_ESN = struct.Struct("!III")
_NONCE = struct.Struct("!4sQ")  # salt || IV, RFC 4106 §4

# RFC 4303 §2.4: padding bytes are 1, 2, 3, ...; indexed by pad length.
_PADDING = tuple(bytes(range(1, n + 1)) for n in range(256))
# Padding + pad length + next header for the 4 pad lengths a sender uses, indexed by pad * 256 + next header.
_TRAILERS = tuple(_PADDING[pad] + bytes((pad, nh)) for pad in range(4) for nh in range(256))


def pad_length(payload_len: int) -> int:
    """Padding octets so that payload + padding + 2 ends on a 4-octet boundary (RFC 4303 §2.4)."""
    return (-payload_len - TRAILER_MIN) & 3


def esp_length(payload_len: int) -> int:
    """Total ESP packet length (header through ICV) for a payload of ``payload_len`` octets."""
    return HEADER_LEN + IV_LEN + payload_len + pad_length(payload_len) + TRAILER_MIN + ICV_LEN


def seal(aead, salt: bytes, spi: int, seq: int, next_header: int, payload: bytes, esn: bool = False,
         prefix: bytes = b"") -> bytes:
    """``prefix`` + the ESP packet carrying ``payload``; ``seq`` is the full (64-bit with ESN) number.

    ``prefix`` lets the caller put an outer IPv6 header in front without a second copy of the packet.
    """
    if not 0 <= next_header <= 255:
        raise ValueError(f"next header {next_header!r} is not an octet")
    pad = (-len(payload) - TRAILER_MIN) & 3
    header_iv = _HEADER_IV.pack(spi, seq & SEQ_LO_MASK, seq)  # RFC 4106 §3.1: IV is the counter
    if esn:
        aad = _AAD_ESN.pack(spi, seq >> 32, seq & SEQ_LO_MASK)  # RFC 4106 §5
    else:
        aad = _SPI_SEQ.pack(spi, seq)
    sealed = aead.encrypt(_NONCE.pack(salt, seq), payload + _TRAILERS[(pad << 8) | next_header], aad)
    return prefix + header_iv + sealed


def unpack_header(esp: bytes) -> tuple[int, int]:
    """(SPI, low 32 bits of the sequence number) after checking the packet can be an ESP packet at all."""
    if len(esp) < MIN_LEN:
        raise EspParseError(f"ESP packet of {len(esp)} octets is shorter than {MIN_LEN}")
    return _SPI_SEQ.unpack_from(esp)


def aad_for(esp: bytes, seq: int, esn: bool) -> bytes:
    """Additional authenticated data for a received packet whose full sequence number is ``seq``."""
    if esn:
        return esp[:4] + _SPI_SEQ.pack(seq >> 32, seq & SEQ_LO_MASK)  # RFC 4106 §5
    return esp[:HEADER_LEN]


def decrypt(aead, salt: bytes, esp: bytes, aad: bytes) -> bytes:
    """Plaintext (payload, padding, pad length, next header); IntegrityError if the ICV fails."""
    try:
        return aead.decrypt(salt + esp[HEADER_LEN:HEADER_LEN + IV_LEN], esp[HEADER_LEN + IV_LEN:], aad)
    except InvalidTag:
        raise IntegrityError("ICV check failed") from None


def strip_trailer(plaintext: bytes) -> tuple[int, bytes]:
    """(next header, payload) of decrypted ESP data; EspParseError on bad padding (RFC 4303 §2.4)."""
    pad = plaintext[-2]
    end = len(plaintext) - TRAILER_MIN - pad
    if end < 0:
        raise EspParseError(f"pad length {pad} exceeds the {len(plaintext) - TRAILER_MIN} octets of data")
    # RFC 4303 §2.4: the receiver may check the padding pattern; we drop on mismatch.
    if pad and plaintext[end:-TRAILER_MIN] != _PADDING[pad]:
        raise EspParseError("padding octets are not 1, 2, 3, ...")
    return plaintext[-1], plaintext[:end]
