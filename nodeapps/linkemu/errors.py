"""The one error type for bad link-emulation input (parameters, traces, command-line overrides)."""


class LinkConfigError(ValueError):
    """Impossible or malformed link parameters; the message is one line meant for the user."""
