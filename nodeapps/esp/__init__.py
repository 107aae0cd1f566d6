"""Userspace IPsec ESP (RFC 4301/4303, AES-GCM per RFC 4106), split one concern per module:

packet (wire format), replay (anti-replay window), sa (one SA), sad / spd (the two databases),
processor (the per-packet pipeline). All of it is sans-IO: bytes in, bytes and events out.
"""
from .errors import (ConfigError, EspError, EspParseError, IntegrityError, ReplayError,  # noqa: F401
                     SequenceExhausted)
from .processor import IPsecProcessor  # noqa: F401
from . import udpencap  # noqa: F401
from .replay import ReplayWindow  # noqa: F401
from .sa import SecurityAssociation  # noqa: F401
from .sad import SAD  # noqa: F401
from .spd import SPD, Rule, Selector  # noqa: F401
