"""Security Association: keys, sequence counter and anti-replay state of one ESP SA (AES-GCM, RFC 4106).

The per-packet calls are :meth:`SecurityAssociation.seal` (outbound) and :meth:`SecurityAssociation.open`
(inbound). Receive order follows RFC 4303 §3.4: sequence check, ICV, window update, then padding.
Sequence numbers start at 1 and never cycle (RFC 4303 §3.3.3): past the last one the SA refuses to send
(:class:`SequenceExhausted`), and on reaching the soft limit it records an ``sa_soft_limit`` event so the
key manager can install a successor first. Events wait in :attr:`events` until the processor collects them.
"""
from __future__ import annotations

import ipaddress

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import packet, udpencap
from .errors import ConfigError, EspParseError, IntegrityError, ReplayError, SequenceExhausted, SequenceNotReserved
from .replay import DEFAULT_WINDOW, MAX_WINDOW, MIN_WINDOW, ReplayWindow
from .sa_spec import ALGORITHMS, DIRECTIONS, MAX_SEQ, MAX_SEQ_ESN, MODES, SaSpec

_ALGORITHM_BY_KEY_LEN = {length: name for name, length in ALGORITHMS.items()}
NH_NONE = 59
DEFAULT_SOFT_LIMIT = (1 << 32) - (1 << 16)
DEFAULT_SOFT_LIMIT_ESN = (1 << 64) - (1 << 32)


class SaCounters:
    """Per-SA counters: plain int attributes; ``counters["packets"]`` works too."""

    __slots__ = ("packets", "bytes", "replay_drops", "icv_failures", "parse_errors", "dummy_drops")

    def __init__(self):
        self.packets = 0  # sealed (out) or delivered (in), dummies excluded
        self.bytes = 0  # payload octets of those packets
        self.replay_drops = 0
        self.icv_failures = 0
        self.parse_errors = 0
        self.dummy_drops = 0

    def __getitem__(self, name: str) -> int:
        if name not in self.__slots__:
            raise KeyError(name)
        return getattr(self, name)

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


def _fail(name, field: str, problem: str) -> ConfigError:
    return ConfigError(f"SA {name!r}: {field}: {problem}")


def _address(name, field: str, value) -> bytes:
    if isinstance(value, (bytes, bytearray)) and len(value) == 16:
        return bytes(value)
    if not isinstance(value, str):
        raise _fail(name, field, f"expected an IPv6 address, got {value!r}")
    try:
        return ipaddress.IPv6Address(value.strip()).packed
    except ValueError:
        raise _fail(name, field, f"not an IPv6 address: {value!r}") from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class SecurityAssociation:
    __slots__ = ("name", "direction", "spi", "mode", "local", "remote", "local_bytes", "remote_bytes",
                 "algorithm", "esn", "seq", "max_seq", "soft_limit", "window", "counters", "events",
                 "created_at", "tunnel", "outbound", "encap", "reserved", "_aead", "_salt", "_spi_hex",
                 "_exhausted")

    def __init__(self, name: str, direction: str, spi: int, key: bytes, salt: bytes, mode: str, local, remote,
                 replay_window: int = DEFAULT_WINDOW, esn: bool = False, soft_limit: int | None = None,
                 created_at=None, encap: str | None = None):
        if not isinstance(name, str) or not name:
            raise _fail(name, "name", "must be a non-empty string")
        if direction not in DIRECTIONS:
            raise _fail(name, "direction", f"must be 'out' or 'in', got {direction!r}")
        # RFC 4303 §2.1: 1..255 reserved by IANA, 0 never sent.
        if not _is_int(spi) or not 256 <= spi <= 0xFFFFFFFF:
            raise _fail(name, "spi", f"must be an integer in 256..0xffffffff, got {spi!r}")
        if not isinstance(key, (bytes, bytearray)) or len(key) not in _ALGORITHM_BY_KEY_LEN:
            raise _fail(name, "key", "must be 16 or 32 octets (AES-128/256-GCM)")
        if not isinstance(salt, (bytes, bytearray)) or len(salt) != packet.SALT_LEN:
            raise _fail(name, "salt", "must be 4 octets (RFC 4106 §8.1)")
        if mode not in MODES:
            raise _fail(name, "mode", f"must be 'tunnel' or 'transport', got {mode!r}")
        if not isinstance(esn, bool):
            raise _fail(name, "esn", f"must be true or false, got {esn!r}")
        if not _is_int(replay_window) or not MIN_WINDOW <= replay_window <= MAX_WINDOW:
            raise _fail(name, "replay_window",
                        f"must be an integer from {MIN_WINDOW} to {MAX_WINDOW}, got {replay_window!r}")
        if encap is not None and encap not in udpencap.ENCAPS:
            raise _fail(name, "encap", f"must be 'udp' (RFC 3948) or absent for native ESP, got {encap!r}")
        if encap is not None and mode != "tunnel":
            raise _fail(name, "encap", "UDP encapsulation is supported in tunnel mode only")
        if created_at is not None and not isinstance(created_at, (int, float, str)):
            raise _fail(name, "created_at", f"must be a number or text, got {created_at!r}")
        max_seq = MAX_SEQ_ESN if esn else MAX_SEQ
        if soft_limit is None:
            soft_limit = DEFAULT_SOFT_LIMIT_ESN if esn else DEFAULT_SOFT_LIMIT
        elif not _is_int(soft_limit) or not 1 <= soft_limit <= max_seq:
            raise _fail(name, "soft_limit", f"must be an integer in 1..{max_seq}, got {soft_limit!r}")
        self.name = name
        self.direction = direction
        self.outbound = direction == "out"
        self.spi = spi
        self._spi_hex = f"0x{spi:08x}"
        self.mode = mode
        self.tunnel = mode == "tunnel"
        self.local_bytes = _address(name, "local", local)
        self.remote_bytes = _address(name, "remote", remote)
        self.local = str(ipaddress.IPv6Address(self.local_bytes))
        self.remote = str(ipaddress.IPv6Address(self.remote_bytes))
        self.algorithm = _ALGORITHM_BY_KEY_LEN[len(key)]
        self.esn = esn
        self._aead = AESGCM(bytes(key))
        self._salt = bytes(salt)
        self.seq = 0  # last sequence number sent
        self.max_seq = max_seq
        self.soft_limit = soft_limit
        self.window = ReplayWindow(replay_window, esn)
        self.counters = SaCounters()
        self.events: list[dict] = []
        self.created_at = created_at
        self.encap = encap  # None: native ESP (next header 50); "udp": RFC 3948 ESP-in-UDP, port 4500
        # Highest sequence number the node has recorded (on disk) as possibly used; None: no limit. A
        # restarted node starts above it, so no (key, nonce) pair is ever used twice (RFC 4106 §3).
        self.reserved = None
        self._exhausted = False

    @classmethod
    def from_config(cls, config) -> "SecurityAssociation":
        """Build from a config mapping (hex key and salt) or a checked ``SaSpec``; any problem ->
        ConfigError naming the field."""
        spec = config if isinstance(config, SaSpec) else SaSpec.from_dict(config)
        return cls(name=spec.name, direction=spec.direction, spi=spec.spi, key=bytes.fromhex(spec.key),
                   salt=bytes.fromhex(spec.salt), mode=spec.mode, local=spec.local, remote=spec.remote,
                   replay_window=DEFAULT_WINDOW if spec.replay_window is None else spec.replay_window,
                   esn=bool(spec.esn), soft_limit=spec.soft_limit, created_at=spec.created_at, encap=spec.encap)

    @property
    def destination_bytes(self) -> bytes:
        """The address ESP packets of this SA are sent to: the SAD key together with the SPI."""
        return self.remote_bytes if self.outbound else self.local_bytes

    def seal(self, next_header: int, payload: bytes, prefix: bytes = b"") -> bytes:
        """``prefix`` + ESP packet (header .. ICV) carrying ``payload`` under the next sequence number."""
        if not self.outbound:
            raise ValueError(f"SA {self.name!r} is inbound and cannot seal")
        seq = self.seq + 1
        if seq > self.max_seq:
            if not self._exhausted:  # one event, however many packets are refused afterwards
                self._exhausted = True
                self.events.append({"event": "seq_exhausted", "sa": self.name, "spi": self._spi_hex})
            raise SequenceExhausted(f"SA {self.name!r} has used all sequence numbers")  # RFC 4303 §3.3.3
        if self.reserved is not None and seq > self.reserved:
            raise SequenceNotReserved(f"SA {self.name!r}: sequence number {seq} not yet recorded as used")
        if seq == self.soft_limit:
            self.events.append({"event": "sa_soft_limit", "sa": self.name, "spi": self._spi_hex, "seq": seq})
        esp = packet.seal(self._aead, self._salt, self.spi, seq, next_header, payload, self.esn, prefix)
        self.seq = seq
        counters = self.counters
        counters.packets += 1
        counters.bytes += len(payload)
        return esp

    def open(self, esp: bytes) -> tuple[int, bytes]:
        """(next header, payload) of an inbound ESP packet; raises ReplayError, IntegrityError, EspParseError.

        Next header 59 (a dummy packet, RFC 4303 §2.6) is returned like any other and counted as
        ``dummy_drops``; the caller discards it.
        """
        if self.outbound:
            raise ValueError(f"SA {self.name!r} is outbound and cannot open")
        counters = self.counters
        try:
            spi, seq_lo = packet.unpack_header(esp)
            if spi != self.spi:
                raise EspParseError(f"SPI 0x{spi:08x} does not belong to SA {self.name!r}")
            window = self.window
            seq = window.check(seq_lo)  # RFC 4303 §3.4.3: before the ICV
            aad = packet.aad_for(esp, seq, True) if self.esn else esp[:packet.HEADER_LEN]
            plaintext = packet.decrypt(self._aead, self._salt, esp, aad)  # RFC 4303 §3.4.4
            window.commit(seq)  # only authenticated packets move the window
            next_header, payload = packet.strip_trailer(plaintext)
        except ReplayError:
            counters.replay_drops += 1
            raise
        except IntegrityError:
            counters.icv_failures += 1
            raise
        except EspParseError:
            counters.parse_errors += 1
            raise
        if next_header == NH_NONE:
            counters.dummy_drops += 1
            return next_header, payload
        counters.packets += 1
        counters.bytes += len(payload)
        return next_header, payload

    def pop_events(self) -> list[dict]:
        events, self.events = self.events, []
        return events

    def status(self) -> dict:
        """JSON-able summary; never includes key or salt."""
        return {
            "name": self.name,
            "direction": self.direction,
            "spi": self._spi_hex,
            "mode": self.mode,
            "encap": self.encap or "none",
            "local": self.local,
            "remote": self.remote,
            "algorithm": self.algorithm,
            "esn": self.esn,
            "seq": self.seq,
            "highest_seq": self.window.top,
            "soft_limit": self.soft_limit,
            "replay_window": self.window.size,
            "counters": self.counters.as_dict(),
            "created_at": self.created_at,
        }

    def __repr__(self) -> str:
        return f"<SecurityAssociation {self.name!r} {self.direction} spi={self._spi_hex} {self.mode}>"

