"""What a configuration says about one ESP SA (``SaSpec``), and the one builder of SA pairs (``sa_pair``).

A node configuration carries SAs as JSON objects: name, direction, SPI, algorithm, hex key and salt, mode,
local and remote address, and a few optional fields. ``SaSpec.from_dict`` checks such an object once, as
the node loads it, and raises ``ConfigError`` with one line naming the field; ``to_dict`` writes the same
object back. ``SecurityAssociation.from_config`` takes either form. ``sa_pair`` makes the two SAs two
peers share, each seen from both ends, with fresh keys: the lab and the benchmarks make pairs only there.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, replace
from typing import Callable, Optional, Union

from .errors import ConfigError
from .packet import SALT_LEN
from .replay import MAX_WINDOW, MIN_WINDOW
from .udpencap import ENCAPS

# strongSwan / IKEv2 names: AES-GCM with a 16-octet ICV, and the key length each needs (RFC 4106 §8.1).
ALGORITHMS = {"aes128gcm16": 16, "aes256gcm16": 32}
DEFAULT_ALGORITHM = "aes128gcm16"
DIRECTIONS = ("out", "in")
MODES = ("tunnel", "transport")
MAX_SEQ = (1 << 32) - 1
MAX_SEQ_ESN = (1 << 64) - 1
# RFC 4303 §2.1: SPI 0 is never sent and 1..255 are reserved by IANA.
MIN_SPI, MAX_SPI = 256, 0xFFFFFFFF
_REQUIRED = ("name", "direction", "spi", "algorithm", "key", "salt", "mode", "local", "remote")
_OPTIONAL = ("replay_window", "esn", "soft_limit", "created_at", "encap")


class _Where:
    """Names a field in messages: under a config path (``mobility.peers[0].out.spi``) or, without one,
    by the SA's name (``SA 'mn1->sg': spi:``)."""

    def __init__(self, path: Optional[str], name):
        self.path, self.name = path, name

    def fail(self, field: str, problem: str) -> ConfigError:
        if self.path:
            return ConfigError(f"{self.path}.{field}: {problem}")
        return ConfigError(f"SA {self.name!r}: {field}: {problem}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _hex(value, where: _Where, field: str) -> str:
    """Lower-case hex without separators; "0x" prefix and ":" between octets are accepted."""
    if not isinstance(value, str):
        raise where.fail(field, f"must be a hex string, got {type(value).__name__}")
    text = value.strip()
    if text[:2].lower() == "0x":
        text = text[2:]
    try:
        return bytes.fromhex(text.replace(":", "")).hex()
    except ValueError:
        raise where.fail(field, "not a hex string") from None


def _address(value, where: _Where, field: str) -> str:
    if not isinstance(value, str):
        raise where.fail(field, f"expected an IPv6 address, got {value!r}")
    try:
        return str(ipaddress.IPv6Address(value.strip()))
    except ValueError:
        raise where.fail(field, f"not an IPv6 address: {value!r}") from None


def _spi(value, where: _Where) -> int:
    if isinstance(value, str):   # "0x00001000" as written by hand
        try:
            value = int(value, 0)
        except ValueError:
            raise where.fail("spi", f"not an integer: {value!r}") from None
    if not _is_int(value) or not MIN_SPI <= value <= MAX_SPI:
        raise where.fail("spi", f"must be an integer in 256..0xffffffff (RFC 4303 §2.1), got {value!r}")
    return value


@dataclass(frozen=True)
class SaSpec:
    """One SA as configured, checked. ``key`` and ``salt`` are lower-case hex; optional fields are None
    when the configuration leaves them to the SA's defaults."""
    name: str
    direction: str
    spi: int
    key: str
    salt: str
    mode: str
    local: str
    remote: str
    algorithm: str = DEFAULT_ALGORITHM
    replay_window: Optional[int] = None
    esn: Optional[bool] = None
    soft_limit: Optional[int] = None
    created_at: Union[int, float, str, None] = None
    encap: Optional[str] = None

    @classmethod
    def from_dict(cls, data, where: Optional[str] = None) -> "SaSpec":
        """``where``: the config path of ``data`` for messages (default: the SA's name)."""
        if not isinstance(data, dict):
            if where:
                raise ConfigError(f"{where}: must be an object, not {type(data).__name__}")
            raise ConfigError(f"SA config must be a mapping, got {type(data).__name__}")
        at = _Where(where, data.get("name"))
        for field in _REQUIRED:
            if field not in data:
                raise at.fail(field, "missing")
        unknown = sorted(str(k) for k in data if k not in _REQUIRED and k not in _OPTIONAL)
        if unknown:
            raise at.fail(unknown[0], "unknown field")
        name = data["name"]
        if not isinstance(name, str) or not name:
            raise at.fail("name", "must be a non-empty string")
        if data["direction"] not in DIRECTIONS:
            raise at.fail("direction", f"must be 'out' or 'in', got {data['direction']!r}")
        algorithm = data["algorithm"]
        if algorithm not in ALGORITHMS:
            raise at.fail("algorithm", f"must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
        key = _hex(data["key"], at, "key")
        if len(key) // 2 != ALGORITHMS[algorithm]:   # RFC 4106 §8.1: 16 or 32 octets of AES key
            raise at.fail("key", f"{algorithm} needs {ALGORITHMS[algorithm]} octets, got {len(key) // 2}")
        salt = _hex(data["salt"], at, "salt")
        if len(salt) // 2 != SALT_LEN:   # RFC 4106 §8.1: 4 octets of salt after the key
            raise at.fail("salt", f"must be {SALT_LEN} octets (RFC 4106 §8.1), got {len(salt) // 2}")
        mode = data["mode"]
        if mode not in MODES:
            raise at.fail("mode", f"must be 'tunnel' or 'transport', got {mode!r}")
        return cls(name=name, direction=data["direction"], spi=_spi(data["spi"], at), key=key, salt=salt,
                   mode=mode, local=_address(data["local"], at, "local"),
                   remote=_address(data["remote"], at, "remote"), algorithm=algorithm,
                   **_optional_fields(data, at, mode))

    def to_dict(self) -> dict:
        """The JSON object a node configuration holds; optional fields only when set."""
        out = {"name": self.name, "spi": self.spi, "algorithm": self.algorithm, "key": self.key,
               "salt": self.salt, "mode": self.mode, "direction": self.direction, "local": self.local,
               "remote": self.remote}
        out.update((field, getattr(self, field)) for field in _OPTIONAL if getattr(self, field) is not None)
        return out

    def seen_from_peer(self) -> "SaSpec":
        """The same SA as the other end holds it: direction flipped, local and remote swapped."""
        return replace(self, direction="in" if self.direction == "out" else "out", local=self.remote,
                       remote=self.local)


def _optional_fields(data: dict, at: _Where, mode: str) -> dict:
    window = data.get("replay_window")
    if window is not None and (not _is_int(window) or not MIN_WINDOW <= window <= MAX_WINDOW):
        raise at.fail("replay_window", f"must be an integer from {MIN_WINDOW} to {MAX_WINDOW}, got {window!r}")
    esn = data.get("esn")
    if esn is not None and not isinstance(esn, bool):
        raise at.fail("esn", f"must be true or false, got {esn!r}")
    soft_limit = data.get("soft_limit")
    max_seq = MAX_SEQ_ESN if esn else MAX_SEQ
    if soft_limit is not None and (not _is_int(soft_limit) or not 1 <= soft_limit <= max_seq):
        raise at.fail("soft_limit", f"must be an integer in 1..{max_seq}, got {soft_limit!r}")
    created_at = data.get("created_at")
    if created_at is not None and (isinstance(created_at, bool) or not isinstance(created_at, (int, float, str))):
        raise at.fail("created_at", f"must be a number or text, got {created_at!r}")
    encap = data.get("encap")
    if encap is not None and encap not in ENCAPS:
        raise at.fail("encap", f"must be 'udp' (RFC 3948) or absent for native ESP, got {encap!r}")
    if encap is not None and mode != "tunnel":
        raise at.fail("encap", "UDP encapsulation is supported in tunnel mode only")
    return {"replay_window": window, "esn": esn, "soft_limit": soft_limit, "created_at": created_at,
            "encap": encap}


@dataclass(frozen=True)
class SaPair:
    """The two SAs one end holds with a peer: ``out`` to it, ``in_`` from it."""
    out: SaSpec
    in_: SaSpec

    @classmethod
    def from_dict(cls, data, where: str) -> "SaPair":
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: must be an object, not {type(data).__name__}")
        for direction in DIRECTIONS:
            if direction not in data:
                raise ConfigError(f"{where}.{direction}: missing")
        return cls(out=SaSpec.from_dict(data["out"], f"{where}.out"),
                   in_=SaSpec.from_dict(data["in"], f"{where}.in"))

    def to_dict(self) -> dict:
        return {"out": self.out.to_dict(), "in": self.in_.to_dict()}

    def seen_from_peer(self) -> "SaPair":
        """The peer's pair: our inbound SA is its outbound one and the other way round."""
        return SaPair(out=self.in_.seen_from_peer(), in_=self.out.seen_from_peer())


def sa_pair(name_out: str, name_in: str, spi: int, local: str, remote: str, *, mode: str = "transport",
            encap: Optional[str] = None, algorithm: str = DEFAULT_ALGORITHM,
            random_bytes: Callable[[int], bytes] = os.urandom) -> tuple[SaPair, SaPair]:
    """A fresh SA pair between ``local`` and ``remote``: (ours, theirs). Ours sends on ``spi`` and
    receives on ``spi + 1``; theirs is the same two SAs seen from the other end. ``random_bytes`` gives
    the key material (fixed bytes make a reproducible pair for tests and benchmarks)."""
    key_len = ALGORITHMS[algorithm]
    local, remote = str(ipaddress.IPv6Address(local)), str(ipaddress.IPv6Address(remote))

    def one(name: str, spi_: int, direction: str) -> SaSpec:
        return SaSpec(name=name, direction=direction, spi=spi_, key=random_bytes(key_len).hex(),
                      salt=random_bytes(SALT_LEN).hex(), mode=mode, local=local, remote=remote,
                      algorithm=algorithm, encap=encap)
    ours = SaPair(out=one(name_out, spi, "out"), in_=one(name_in, spi + 1, "in"))
    return ours, ours.seen_from_peer()
