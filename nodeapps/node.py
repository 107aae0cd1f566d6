"""The node process's entry point: read the node's configuration, pick its role's runtime, run it.

This module sits above ``nodeapps.runtime`` (the node shell: TUN, sockets, the epoll loop) and
``nodeapps.roles`` (the Mobile IPv6 and VCM roles built on that shell), so neither has to know the other
to get started. A node config without a "mobility" section runs the plain IPsec shell.

Run: python -m nodeapps.node CONFIG.json   (installed as ``svpnlab-node``)
"""
from __future__ import annotations

import argparse
import ctypes
import signal
import sys
import time

from nodeapps.roles.correspondent import CorrespondentRuntime
from nodeapps.roles.home_agent import HomeAgentRuntime
from nodeapps.roles.mobile_node import MobileNodeRuntime
from nodeapps.roles.security_gateway import GatewayRuntime
from nodeapps.roles.vcm_host import VcmHostRuntime
from nodeapps.runtime import sequences
from nodeapps.runtime.config import ConfigError, NodeConfig, build_processor
from nodeapps.runtime.daemon import NodeRuntime

# Role (NodeConfig.role) -> the runtime of a node with a "mobility" section.
RUNTIMES: dict[str, type[NodeRuntime]] = {
    "mobile-node": MobileNodeRuntime,
    "home-agent": HomeAgentRuntime,
    "correspondent": CorrespondentRuntime,
    "security-gateway": GatewayRuntime,
    "vcm": VcmHostRuntime,
}
_PR_SET_PDEATHSIG = 1
_PR_SET_TIMERSLACK = 29


def runtime_class(config: NodeConfig) -> type[NodeRuntime]:
    """The runtime for a node's role: the plain IPsec shell unless the node takes part in mobility."""
    if config.mobility is None:
        return NodeRuntime
    return RUNTIMES[config.role]


def _die_with_parent() -> None:
    """A node app must not outlive the lab that started it (it would pin its namespace)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        libc.prctl(_PR_SET_TIMERSLACK, 1)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="svpnlab-node", description="Run one svpnlab VPN node.")
    parser.add_argument("config", help="node configuration (JSON)")
    args = parser.parse_args(argv)
    try:
        config = NodeConfig.from_file(args.config)
        processor = build_processor(config, now=time.time)
        if config.sequence_store:
            # Before any SA can send: each continues above what an earlier process of this node used.
            store = sequences.SequenceStore(config.sequence_store)
            sequences.install(store)
            store.adopt(processor.sad)
    except (ConfigError, sequences.SequenceStoreError) as exc:
        print(f"svpnlab-node: {exc}", file=sys.stderr)
        return 2
    _die_with_parent()
    runtime = runtime_class(config)(config, processor)

    def stop(_signum, _frame):
        runtime.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        runtime.setup()
        print(f"svpnlab-node {config.node}: ready", flush=True)
        runtime.run()
    except OSError as exc:
        print(f"svpnlab-node {config.node}: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
