"""nftables rules that keep the kernel's hands off the packets a node handles in userspace.

Without them, a kernel lacking ESP answers every ESP packet addressed to us with an ICMPv6 parameter
problem. The table lives in the node's own network namespace and is removed on exit.
"""
from __future__ import annotations

import subprocess

TABLE = "svpnlab"


def _nft(script: str) -> None:
    result = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if result.returncode != 0:
        raise OSError(f"nft: {result.stderr.strip()}")


def ruleset(owned_protocols: tuple[int, ...]) -> str:
    protos = ", ".join(str(p) for p in owned_protocols)
    return f"""
table inet {TABLE} {{
    chain prerouting {{
        type filter hook prerouting priority raw; policy accept;
        # Our AF_PACKET sockets already have a copy; the kernel must not parse or answer these.
        meta nfproto ipv6 meta l4proto {{ {protos} }} fib daddr type local counter drop
    }}
    chain output {{
        type filter hook output priority raw; policy accept;
        # Safety net: never tell a peer we do not understand a header we handle ourselves.
        icmpv6 type parameter-problem counter drop
    }}
}}
"""


def install(owned_protocols: tuple[int, ...]) -> None:
    remove()
    _nft(ruleset(owned_protocols))


def remove() -> None:
    subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)
