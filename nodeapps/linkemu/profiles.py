"""Named link types with defaults taken from public measurement reports (cited in docs/links.md).

``get("lte", delay="30ms")`` returns a validated :class:`~nodeapps.linkemu.params.LinkConfig`; any value
can be overridden for both directions or, with ``forward={...}`` / ``reverse={...}``, for one.
Forward is the uplink (terminal → network): put the terminal as node1. Importable without Mininet.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from nodeapps.linkemu.errors import LinkConfigError
from nodeapps.linkemu.params import LinkConfig, make_params

# name -> {"summary", "common": both directions, "forward": uplink, "reverse": downlink, "sources"}.
# Values are one-way. "sources" are keys of the reference list in docs/links.md.
PROFILES: dict[str, dict[str, Any]] = {
    "ideal": {
        "summary": "no impairment (a plain wire through the chosen backend)",
        "common": {},
        "sources": [],
    },
    "lan": {
        "summary": "office switched Ethernet: sub-millisecond, lossless, capacity far above the lab's load",
        "common": {"delay": "0.1ms"},
        "sources": ["ieee8023"],
    },
    "wan-metro": {
        "summary": "metro / regional WAN between sites: a few ms, 100 Mbit/s business access, rare loss",
        "common": {"delay": "5ms", "jitter": "0.3ms", "loss": 0.01, "rate": "100mbit", "queue_packets": 500},
        "sources": ["verizon-latency", "fcc-mba"],
    },
    "wan-longhaul": {
        "summary": "long-haul / intercontinental WAN: tens of ms, 100 Mbit/s business access",
        "common": {"delay": "35ms", "jitter": "1ms", "loss": 0.05, "rate": "100mbit", "queue_packets": 1000},
        "sources": ["verizon-latency", "ripe-atlas"],
    },
    "wlan": {
        "summary": "public WLAN hotspot (802.11n/ac, shared): ms-scale jitter, bursty loss, asymmetric rate",
        "common": {"delay": "3ms", "jitter": "2ms", "distribution": "normal", "burst_loss": (0.5, 3),
                   "queue_packets": 300},
        "forward": {"rate": "20mbit"},
        "reverse": {"rate": "40mbit"},
        "sources": ["sui-wifi", "pei-wifi", "fcc-mba"],
    },
    "lte": {
        "summary": "LTE: ~40 ms base RTT, jitter, bursty loss, capacity from our Markov traces, deep buffers",
        "common": {"delay": "20ms", "jitter": "4ms", "distribution": "normal", "burst_loss": (0.2, 4),
                   "queue_packets": 500},
        "forward": {"trace": "lte-up"},
        "reverse": {"trace": "lte-down"},
        "sources": ["huang-lte", "jiang-bufferbloat", "opensignal", "ookla"],
    },
    "5g": {
        "summary": "5G (mid-band, NSA): ~15-20 ms base RTT, small jitter, capacity from our Markov traces",
        "common": {"delay": "8ms", "jitter": "2ms", "distribution": "normal", "burst_loss": (0.1, 3),
                   "queue_packets": 1000},
        "forward": {"trace": "5g-up"},
        "reverse": {"trace": "5g-down"},
        "sources": ["xu-5g", "narayanan-5g", "opensignal", "ookla"],
    },
    "3g": {
        "summary": "3G (HSPA): ~100 ms base RTT, large jitter, low capacity from our Markov traces",
        "common": {"delay": "50ms", "jitter": "10ms", "distribution": "normal", "burst_loss": (0.5, 4),
                   "queue_packets": 200},
        "forward": {"trace": "3g-up"},
        "reverse": {"trace": "3g-down"},
        "sources": ["huang-lte", "jiang-bufferbloat"],
    },
}


def names() -> list[str]:
    return list(PROFILES)


def definition(name: str) -> dict[str, Any]:
    try:
        return PROFILES[name]
    except KeyError:
        raise LinkConfigError(f"unknown link profile {name!r} (known: {', '.join(PROFILES)})") from None


def get(name: str, **overrides: Any) -> LinkConfig:
    """Validated parameters of profile ``name`` with ``overrides`` (see :func:`make_config`)."""
    return make_config(name, **overrides)


def make_config(profile: Optional[str] = None, *, forward: Optional[Mapping[str, Any]] = None,
                reverse: Optional[Mapping[str, Any]] = None, seed: Optional[int] = None,
                backend: Optional[str] = None, **common: Any) -> LinkConfig:
    """A validated :class:`LinkConfig`: the profile's values, then ``common`` overrides for both
    directions, then the per-direction ``forward`` / ``reverse`` overrides."""
    if profile is not None:
        base = definition(profile)
        fwd_fields = {**base.get("common", {}), **base.get("forward", {})}
        rev_fields = {**base.get("common", {}), **base.get("reverse", {})}
    else:
        fwd_fields, rev_fields = {}, {}
    for key in ("forward", "reverse"):
        value = {"forward": forward, "reverse": reverse}[key]
        if value is not None and not isinstance(value, Mapping):
            raise LinkConfigError(f"{key} must be a dict of link parameters, not {value!r}")
    fwd = make_params(make_params(None, **fwd_fields), **{**common, **(forward or {})})
    rev = make_params(make_params(None, **rev_fields), **{**common, **(reverse or {})})
    return LinkConfig(forward=fwd, reverse=rev, profile=profile, seed=seed, backend=backend or "auto")
