"""What the mobility cores hand to their shell: datagrams to send (with an ESP hook) and events."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from nodeapps import ipv6


class Protection(enum.Enum):
    """What the runtime must do to a datagram before it leaves (RFC 3776). The cores never do ESP."""
    NONE = "none"
    # BU/BA between MN and HA (RFC 3776 §3.1): an ESP transport-mode header goes right in front of the
    # Mobility Header, after the Home Address option / type 2 routing header, with the MN–HA SA.
    ESP_TRANSPORT = "esp-transport"
    # HoTI reverse-tunnelled through the HA (RFC 3776 §3.1, §4.3): the packet is an IPv6-in-IPv6 packet to the
    # HA; protect the inner packet with the MN–HA tunnel-mode SA (whose outer addresses are the same).
    ESP_TUNNEL = "esp-tunnel"


@dataclass(frozen=True)
class Datagram:
    """A complete IPv6 packet ready for the wire once ``protection`` has been applied."""
    packet: bytes
    protection: Protection = Protection.NONE
    esp_peer: Optional[bytes] = None  # the node whose SA to use (the HA, or the MN's home address at the HA)
    description: str = ""

    @property
    def src(self) -> bytes:
        return self.packet[8:24]

    @property
    def dst(self) -> bytes:
        return self.packet[24:40]

    def __repr__(self) -> str:  # short, for logs and test failures
        return "Datagram(%s %s->%s %s)" % (self.description or "?", ipv6.ntop(self.src), ipv6.ntop(self.dst),
                                           self.protection.value)


# ---- events common to every core ------------------------------------------------------------------------

@dataclass(frozen=True)
class MessageDropped:
    """A received packet was dropped; ``reason`` is also the counter name."""
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class MobilityWrongSa:
    """A mobility message for ``home_address`` arrived under the SA the configuration binds to
    ``sa_home_address`` (RFC 3776 §4.2, RFC 4877 §4.2): one MN speaking for another. Dropped."""
    home_address: bytes
    sa_home_address: bytes
    message: str


# ---- binding cache events (home agent, correspondent node, security gateway) ----------------------------

@dataclass(frozen=True)
class BindingAdded:
    """A new binding. For a home registration the shell starts proxy ND and tunnels to the care-of address."""
    home_address: bytes
    care_of_address: bytes
    lifetime: float
    home_registration: bool


@dataclass(frozen=True)
class BindingUpdated:
    """An existing binding was refreshed or moved (``old_care_of_address`` differs when the MN moved)."""
    home_address: bytes
    old_care_of_address: bytes
    care_of_address: bytes
    lifetime: float
    home_registration: bool


@dataclass(frozen=True)
class BindingRemoved:
    """A binding ended: ``reason`` is "deregistered" or "expired". The shell stops tunnelling / proxying."""
    home_address: bytes
    care_of_address: bytes
    reason: str
    home_registration: bool


@dataclass(frozen=True)
class BindingRejected:
    """A BU was answered with an error status (RFC 6275 §6.1.8)."""
    home_address: bytes
    status: int


# ---- mobile node events -------------------------------------------------------------------------------

@dataclass(frozen=True)
class BindingAcknowledged:
    """A peer accepted a binding of ``care_of_address`` for ``lifetime`` seconds."""
    peer: bytes
    kind: str          # PeerKind value
    care_of_address: bytes
    lifetime: float


@dataclass(frozen=True)
class BindingDeregistered:
    """A peer acknowledged the deletion of our binding."""
    peer: bytes
    kind: str


@dataclass(frozen=True)
class BindingFailed:
    """No usable binding with ``peer``: a BA error status, or ``status`` None when retransmissions ran out."""
    peer: bytes
    kind: str
    status: Optional[int]


@dataclass(frozen=True)
class BindingLost:
    """Our binding at ``peer`` ran out of lifetime before a refresh was acknowledged."""
    peer: bytes
    kind: str


@dataclass(frozen=True)
class SequenceResynchronised:
    """A BA with status 135 told us the peer's last accepted sequence number; the next BU follows it."""
    peer: bytes
    sequence: int


@dataclass(frozen=True)
class RouteOptimisationStarted:
    """Traffic to ``correspondent`` may now go direct with a Home Address option."""
    correspondent: bytes
    care_of_address: bytes


@dataclass(frozen=True)
class RouteOptimisationStopped:
    """Traffic to ``correspondent`` goes through the home agent again."""
    correspondent: bytes
    reason: str


@dataclass(frozen=True)
class BindingErrorReceived:
    peer: bytes
    status: int
    home_address: bytes
