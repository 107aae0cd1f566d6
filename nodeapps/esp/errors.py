"""Exceptions of the ESP machinery.

Per-packet failures derive from :class:`EspError`; the processor turns each of them into a counted drop.
:class:`ConfigError` is for bad SA or policy configuration and carries a one-line message.
"""


class EspError(Exception):
    """A packet that this SA must not deliver."""


class EspParseError(EspError):
    """Malformed ESP packet: too short, or padding / pad length that breaks RFC 4303 §2.4."""


class IntegrityError(EspError):
    """The ICV did not verify (RFC 4303 §3.4.4): forged, corrupted or wrong key."""


class ReplayError(EspError):
    """Sequence number already received or left of the window (RFC 4303 §3.4.3).

    ``reason`` is ``"replayed"`` or ``"too_old"``.
    """

    def __init__(self, reason: str, seq: int):
        super().__init__(f"{reason}: sequence number {seq}")
        self.reason = reason
        self.seq = seq


class SequenceExhausted(EspError):
    """The outbound counter would cycle; the SA must be replaced (RFC 4303 §3.3.3)."""


class SequenceNotReserved(SequenceExhausted):
    """The next sequence number lies beyond what the node has recorded as used: sending it could repeat a
    nonce after a restart (RFC 4106 §3), so the SA waits until the reservation is extended."""


class ConfigError(ValueError):
    """Invalid SA or SPD configuration; the message is one line naming the field."""
