"""A sequence-numbered UDP probe: round-trip time, one-way delay, loss, reordering and handover gaps.

A *sender* emits one small datagram every 1/rate seconds (50 Hz by default); an *echo* node stamps the
arrival time into it and returns it. The sender matches each echo to its probe and writes one record per
probe. Pieces:

* :mod:`nodeapps.probe.packet`: the wire format (magic, version, type, session, sequence, three
  timestamps, padding filled with a marker text that an eavesdropper can search for).
* :mod:`nodeapps.probe.core`: sans-IO cores, :class:`~nodeapps.probe.core.ProbeSender` and
  :class:`~nodeapps.probe.core.ProbeEcho`, driven with ``now`` as an argument, and :func:`longest_gap`.
* ``python -m nodeapps.probe {send,echo} ...``: the thin socket shell (see ``--help``).

One-way delay: every node of the lab is a network namespace on one machine, so all of them read the same
system clock and the difference between the echo's arrival stamp and the sender's send stamp is a true
one-way delay. On separate machines it would include their clock offset.
"""
from nodeapps.probe.core import ProbeEcho, ProbeSender, longest_gap
from nodeapps.probe.packet import ProbePacket, ProbeParseError

__all__ = ["ProbeEcho", "ProbePacket", "ProbeParseError", "ProbeSender", "longest_gap"]
