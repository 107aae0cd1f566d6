"""Mobile IPv6 protocol numbers and constants (RFC 6275 §6, §12, §13).

Times are in seconds. Lifetimes travel on the wire in units of 4 seconds.
"""
from __future__ import annotations

# Mobility Header types. RFC 6275 §6.1.2-§6.1.9.
MH_BRR = 0
MH_HOTI = 1
MH_COTI = 2
MH_HOT = 3
MH_COT = 4
MH_BU = 5
MH_BA = 6
MH_BE = 7

MH_NAMES = {MH_BRR: "BRR", MH_HOTI: "HoTI", MH_COTI: "CoTI", MH_HOT: "HoT", MH_COT: "CoT",
            MH_BU: "BU", MH_BA: "BA", MH_BE: "BE"}

# Mobility options. RFC 6275 §6.2.
OPT_PAD1 = 0
OPT_PADN = 1
OPT_BINDING_REFRESH_ADVICE = 2
OPT_ALTERNATE_COA = 3
OPT_NONCE_INDICES = 4
OPT_BINDING_AUTH_DATA = 5

# Destination option carrying the home address. RFC 6275 §6.3.
HOME_ADDRESS_OPTION = 201
# Routing header type for mobility. RFC 6275 §6.4.
ROUTING_TYPE_2 = 2

# Binding Acknowledgement status. RFC 6275 §6.1.8.
BA_ACCEPTED = 0
BA_ACCEPTED_PREFIX_DISCOVERY = 1
BA_REASON_UNSPECIFIED = 128
BA_ADMINISTRATIVELY_PROHIBITED = 129
BA_INSUFFICIENT_RESOURCES = 130
BA_HOME_REGISTRATION_NOT_SUPPORTED = 131
BA_NOT_HOME_SUBNET = 132
BA_NOT_HOME_AGENT_FOR_THIS_MN = 133
BA_DAD_FAILED = 134
BA_SEQUENCE_OUT_OF_WINDOW = 135
BA_EXPIRED_HOME_NONCE_INDEX = 136
BA_EXPIRED_CARE_OF_NONCE_INDEX = 137
BA_EXPIRED_NONCES = 138
BA_REGISTRATION_TYPE_CHANGE_DISALLOWED = 139

# Binding Error status. RFC 6275 §6.1.9.
BE_UNKNOWN_BINDING_FOR_HAO = 1
BE_UNRECOGNIZED_MH_TYPE = 2

# Protocol constants. RFC 6275 §12.
INITIAL_BINDACK_TIMEOUT = 1.0
MAX_BINDACK_TIMEOUT = 32.0
MAX_DELETE_BCE_TIMEOUT = 10.0
MAX_NONCE_LIFETIME = 240.0
MAX_TOKEN_LIFETIME = 210.0
MAX_UPDATE_RATE = 3  # Binding Updates per second to one node
MAX_RR_BINDING_LIFETIME = 420.0
HOME_REGISTRATION_LIFETIME = 420.0   # what an MN asks of its home agent (s); short, for the lab
# Configuration variable default. RFC 6275 §13.
INITIAL_BINDACK_TIMEOUT_FIRSTREG = 1.5

LIFETIME_UNIT = 4  # seconds per unit of the Lifetime field
MAX_LIFETIME_UNITS = 0xFFFF
SEQUENCE_MODULO = 1 << 16

NONCE_LENGTH = 8
KCN_LENGTH = 20
COOKIE_LENGTH = 8
TOKEN_LENGTH = 8
AUTHENTICATOR_LENGTH = 12


def seconds_to_units(seconds: float) -> int:
    """Lifetime in seconds to the 4-second units of the wire, rounded down, clamped to 16 bits."""
    return max(0, min(MAX_LIFETIME_UNITS, int(seconds // LIFETIME_UNIT)))


def units_to_seconds(units: int) -> int:
    return units * LIFETIME_UNIT
