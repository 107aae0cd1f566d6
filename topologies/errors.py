"""The lab's errors, apart from the lab so that its specification (topologies/spec.py) can raise them."""


class LabError(RuntimeError):
    """Something in the lab failed; the message is one line and names the node or parameter."""


class NodeAppDied(LabError):
    pass


class LabSpecError(LabError):
    """A lab specification field is invalid; the message names the field."""
