"""Link parameters: units, validation, both directions (profiles: ``profiles``; ``--link``: ``overrides``).

Canonical units inside :class:`LinkParams`: milliseconds, percent, Mbit/s, packets, bytes. Users may also
write strings with units (``"20ms"``, ``"500us"``, ``"1s"``, ``"10mbit"``, ``"1.5%"``); a bare number is in
the canonical unit. Everything impossible is refused with a one-line :class:`LinkConfigError`.

Direction: ``forward`` is node1 → node2, ``reverse`` node2 → node1. Profiles describe the forward direction
as the *uplink* (terminal → network), so put the terminal (host, mobile node) as node1.
"""
from __future__ import annotations

import dataclasses
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from nodeapps.linkemu.errors import LinkConfigError

DISTRIBUTIONS = ("uniform", "normal")
BACKENDS = ("auto", "netem", "userspace")
DEFAULT_QUEUE_PACKETS = 1000  # like netem's default limit and a veth's txqueuelen


@dataclass(frozen=True)
class LinkParams:
    """One direction of a link.

    Order of effects on a frame: loss (random or Gilbert–Elliott) → drop-tail queue in front of the
    bottleneck (fixed ``rate_mbit`` or a capacity ``trace``) → one-way ``delay_ms`` ± jitter.
    """
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    jitter_correlation: float = 0.0   # percent; AR(1) correlation of successive jitter samples
    distribution: str = "uniform"     # netem's default: delay ± jitter uniformly; "normal": std = jitter
    reorder: bool = False             # allow a packet to overtake an earlier one when jitter says so
    loss: float = 0.0                 # percent, independent per packet
    ge_p: Optional[float] = None      # Gilbert–Elliott: percent chance good → bad per packet
    ge_r: Optional[float] = None      # percent chance bad → good per packet
    ge_loss_bad: float = 100.0        # percent loss while bad (netem's 1-h)
    ge_loss_good: float = 0.0         # percent loss while good (netem's 1-k)
    rate_mbit: Optional[float] = None
    queue_packets: Optional[int] = None
    queue_bytes: Optional[int] = None
    trace: Optional[str] = None       # shipped trace name or path (Mahimahi format)

    def __post_init__(self) -> None:
        _check_range("delay", self.delay_ms, 0, 60_000, "ms")
        _check_range("jitter", self.jitter_ms, 0, 60_000, "ms")
        _check_range("jitter_correlation", self.jitter_correlation, 0, 100, "%")
        if self.distribution not in DISTRIBUTIONS:
            raise LinkConfigError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                                  f"not {self.distribution!r}")
        _check_range("loss", self.loss, 0, 100, "%")
        if (self.ge_p is None) != (self.ge_r is None):
            raise LinkConfigError("a Gilbert-Elliott loss model needs both ge_p and ge_r")
        if self.ge_p is not None:
            if self.loss:
                raise LinkConfigError("give either loss or a Gilbert-Elliott model (ge_p/ge_r), not both")
            _check_range("ge_p", self.ge_p, 0, 100, "%")
            _check_range("ge_r", self.ge_r, 0, 100, "%")
            if self.ge_r == 0:
                raise LinkConfigError("ge_r must be > 0 % (the bad state must end)")
        _check_range("ge_loss_bad", self.ge_loss_bad, 0, 100, "%")
        _check_range("ge_loss_good", self.ge_loss_good, 0, 100, "%")
        if self.rate_mbit is not None:
            _check_range("rate", self.rate_mbit, 0, 100_000, "Mbit/s")
            if self.rate_mbit == 0:
                raise LinkConfigError("rate must be > 0 Mbit/s (leave it unset for no limit)")
        if self.rate_mbit is not None and self.trace is not None:
            raise LinkConfigError("give either rate or trace for a direction, not both")
        if self.queue_packets is not None and self.queue_bytes is not None:
            raise LinkConfigError("give either queue_packets or queue_bytes, not both")
        for name in ("queue_packets", "queue_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise LinkConfigError(f"{name} must be a whole number >= 1, not {value!r}")
        if self.queue_bytes is not None and self.queue_bytes < 1514:
            raise LinkConfigError(f"queue_bytes {self.queue_bytes} cannot hold one full-size frame (1514)")
        if self.trace is not None:
            from nodeapps.linkemu.traces import load_trace  # checks the file now: errors at set-up time
            load_trace(self.trace)

    # Derived properties used by the model, the backends and the reports.
    @property
    def limited(self) -> bool:
        return self.rate_mbit is not None or self.trace is not None

    @property
    def queue_limit(self) -> tuple[Optional[int], Optional[int]]:
        """(packets, bytes) limits of the bottleneck queue; a default applies when only a rate is given."""
        if not self.limited:
            return None, None
        if self.queue_packets is None and self.queue_bytes is None:
            return DEFAULT_QUEUE_PACKETS, None
        return self.queue_packets, self.queue_bytes

    @property
    def acts_on_packets(self) -> bool:
        """True when segmentation offload must be off: loss and rate must see real frames."""
        return self.limited or self.loss > 0 or self.ge_p is not None

    @property
    def expected_loss(self) -> float:
        """Long-run loss fraction (0..1) of the loss stage."""
        if self.ge_p is None:
            return self.loss / 100
        p, r = self.ge_p / 100, self.ge_r / 100
        bad = p / (p + r) if p + r else 0.0
        return bad * self.ge_loss_bad / 100 + (1 - bad) * self.ge_loss_good / 100

    @property
    def jitter_std_ms(self) -> float:
        """Standard deviation of the delay sample (before order keeping and clipping at zero)."""
        return self.jitter_ms / math.sqrt(3) if self.distribution == "uniform" else self.jitter_ms

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that differ from the defaults (readable metadata, compact command lines)."""
        default = LinkParams()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LinkParams":
        return cls(**data)


@dataclass(frozen=True)
class LinkConfig:
    """Both directions of a link plus what produced them."""
    forward: LinkParams = field(default_factory=LinkParams)
    reverse: LinkParams = field(default_factory=LinkParams)
    profile: Optional[str] = None
    seed: Optional[int] = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise LinkConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise LinkConfigError(f"seed must be an integer, not {self.seed!r}")

    def with_seed(self, seed: int) -> "LinkConfig":
        return dataclasses.replace(self, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "seed": self.seed, "backend": self.backend,
                "forward": self.forward.to_dict(), "reverse": self.reverse.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LinkConfig":
        return cls(forward=LinkParams.from_dict(data.get("forward", {})),
                   reverse=LinkParams.from_dict(data.get("reverse", {})),
                   profile=data.get("profile"), seed=data.get("seed"), backend=data.get("backend", "auto"))


def _check_range(name: str, value: Any, low: float, high: float, unit: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise LinkConfigError(f"{name} must be a number, not {value!r}")
    if isinstance(value, int) and not -1e300 < value < 1e300:
        raise LinkConfigError(f"{name} is outside {low:g}..{high:g} {unit}")
    if not low <= value <= high:
        raise LinkConfigError(f"{name} {value:g} {unit} is outside {low:g}..{high:g} {unit}")


# ---------------------------------------------------------------------------------------------------------
# Friendly keyword arguments -> LinkParams fields

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_TIME_UNITS = {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 0.001, "µs": 0.001}
_RATE_UNITS = {"": 1.0, "mbit": 1.0, "mbps": 1.0, "mbit/s": 1.0, "kbit": 1e-3, "kbps": 1e-3, "kbit/s": 1e-3,
               "gbit": 1e3, "gbps": 1e3, "gbit/s": 1e3, "bit": 1e-6, "bps": 1e-6}
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "k": 1000, "kib": 1024, "mb": 1_000_000, "mib": 1 << 20}


def _with_unit(name: str, value: Any, units: Mapping[str, float]) -> float:
    if isinstance(value, bool):
        raise LinkConfigError(f"{name} must be a number, not {value!r}")
    try:
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            match = re.fullmatch(_NUMBER + r"\s*([a-zA-Zµ/%]*)", value.strip())
            number = None
            if match and match.group(2).lower() in units:
                number = float(match.group(1)) * units[match.group(2).lower()]
        else:
            number = None
    except OverflowError:
        raise LinkConfigError(f"{name} {value!r:.30} is too large") from None
    if number is not None:
        if math.isinf(number):
            raise LinkConfigError(f"{name} {value!r:.30} is too large")
        return number
    raise LinkConfigError(f"{name} {value!r} is not understood (units: "
                          f"{', '.join(u for u in units if u) or 'none'})")


def parse_time_ms(name: str, value: Any) -> float:
    return _with_unit(name, value, _TIME_UNITS)


def parse_rate_mbit(name: str, value: Any) -> float:
    return _with_unit(name, value, _RATE_UNITS)


def parse_percent(name: str, value: Any) -> float:
    return _with_unit(name, value, {"": 1.0, "%": 1.0})


def parse_size(name: str, value: Any, units: Mapping[str, float] = _SIZE_UNITS) -> int:
    number = _with_unit(name, value, units)
    if math.isnan(number) or number != int(number):
        raise LinkConfigError(f"{name} must be a whole number, not {value!r}")
    return int(number)


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise LinkConfigError(f"{name} must be true or false, not {value!r}")


def _burst_loss(value: Any) -> dict[str, float]:
    """``burst_loss=(mean loss %, mean burst length in packets)`` -> Gilbert model with h=0, k=1."""
    if isinstance(value, str):
        value = value.replace("/", ":").split(":")
    try:
        mean_loss, burst = (float(v) for v in value)
    except (TypeError, ValueError):
        raise LinkConfigError(f"burst_loss must be (mean loss %, mean burst length), not {value!r}") from None
    if not 0 < mean_loss < 100 or not 1 <= burst < 1e9:
        raise LinkConfigError(f"burst_loss needs 0 < loss < 100 % and burst length >= 1, got {value!r}")
    r = 1 / burst
    p = r * (mean_loss / 100) / (1 - mean_loss / 100)
    if p > 1:
        raise LinkConfigError(f"burst_loss {value!r}: that loss cannot be reached with such short bursts")
    return {"ge_p": p * 100, "ge_r": r * 100, "ge_loss_bad": 100.0, "ge_loss_good": 0.0}


_CONVERTERS = {
    "delay": ("delay_ms", parse_time_ms), "delay_ms": ("delay_ms", parse_time_ms),
    "jitter": ("jitter_ms", parse_time_ms), "jitter_ms": ("jitter_ms", parse_time_ms),
    "jitter_correlation": ("jitter_correlation", parse_percent),
    "distribution": ("distribution", lambda n, v: str(v)),
    "reorder": ("reorder", parse_bool),
    "loss": ("loss", parse_percent), "loss_pct": ("loss", parse_percent),
    "ge_p": ("ge_p", parse_percent), "ge_r": ("ge_r", parse_percent),
    "ge_loss_bad": ("ge_loss_bad", parse_percent), "ge_loss_good": ("ge_loss_good", parse_percent),
    "rate": ("rate_mbit", parse_rate_mbit), "rate_mbit": ("rate_mbit", parse_rate_mbit),
    "bw": ("rate_mbit", parse_rate_mbit),  # Mininet's TCLink name, Mbit/s
    "queue_packets": ("queue_packets", lambda n, v: parse_size(n, v, {"": 1, "p": 1})),
    "queue_bytes": ("queue_bytes", parse_size),
    "trace": ("trace", lambda n, v: str(v)),
}
PARAM_KEYS = frozenset(_CONVERTERS) | {"burst_loss"}
NONE_WORDS = ("none", "off", "")


def params_fields(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Friendly keyword arguments -> LinkParams field values (not yet validated together)."""
    fields: dict[str, Any] = {}
    for key, value in overrides.items():
        if key == "burst_loss":
            fields.update(_burst_loss(value))
            continue
        if key not in _CONVERTERS:
            raise LinkConfigError(f"unknown link parameter {key!r} (known: {', '.join(sorted(PARAM_KEYS))})")
        target, convert = _CONVERTERS[key]
        if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS
                             and target in ("rate_mbit", "queue_packets", "queue_bytes", "trace",
                                            "ge_p", "ge_r")):
            fields[target] = None
        else:
            fields[target] = convert(key, value)
    if fields.get("ge_p") is not None and "loss" not in fields:
        fields["loss"] = 0.0  # a Gilbert model given as an override replaces a profile's random loss
    if fields.get("loss") and "ge_p" not in fields:
        fields["ge_p"] = fields["ge_r"] = None  # and vice versa
    if fields.get("trace") is not None and "rate_mbit" not in fields:
        fields["rate_mbit"] = None
    if fields.get("rate_mbit") is not None and "trace" not in fields:
        fields["trace"] = None
    if fields.get("queue_packets") is not None and "queue_bytes" not in fields:
        fields["queue_bytes"] = None
    if fields.get("queue_bytes") is not None and "queue_packets" not in fields:
        fields["queue_packets"] = None
    return fields


def make_params(base: Optional[LinkParams] = None, **overrides: Any) -> LinkParams:
    try:
        return dataclasses.replace(base or LinkParams(), **params_fields(overrides))
    except TypeError as exc:  # a wrong type slipped past the converters
        raise LinkConfigError(str(exc)) from None


def default_seed(*names: str) -> int:
    """A stable per-link seed from its names, so repeated runs see the same random draws."""
    return zlib.crc32("|".join(names).encode())
