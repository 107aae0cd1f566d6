"""Link emulation: delay, jitter, loss, rate and trace-driven capacity on Mininet links.

Two mechanisms give the same link model:

- kernel ``netem`` (+ ``tbf`` for rate) on the two ends of a plain veth pair, when the kernel has netem and
  the parameters can be expressed with it;
- a userspace emulator (``python -m nodeapps.linkemu.emulator``) in a small hidden namespace spliced into
  the link: node1 ⇄ veth ⇄ [emulator] ⇄ veth ⇄ node2.

Modules: ``params`` (validated parameters and units), ``profiles`` (named link types; ``make_config``
builds a link from a profile plus overrides), ``overrides`` (``--link`` on the command line), ``model``
(sans-IO link model, deterministic under a seed), ``traces`` (Mahimahi capacity traces, our Markov
generator), ``netem`` (kernel probe and tc command generation), ``emulator`` (the I/O shell).
The Mininet link class lives in ``topologies.links``.
"""
from nodeapps.linkemu.overrides import parse_override
from nodeapps.linkemu.params import LinkConfig, LinkConfigError, LinkParams
from nodeapps.linkemu.profiles import make_config

__all__ = ["LinkConfig", "LinkConfigError", "LinkParams", "make_config", "parse_override"]
