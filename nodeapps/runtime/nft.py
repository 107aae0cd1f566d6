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


def ruleset(owned_protocols: tuple[int, ...], mobility: bool = False) -> str:
    protos = ", ".join(str(p) for p in owned_protocols)
    extra = ""
    if mobility:
        # A kernel without Mobile IPv6 answers a type 2 routing header or a Home Address option with a
        # parameter problem (RFC 6275 §6.3, §6.4 are ours to process): hide them too.
        extra = """
        meta nfproto ipv6 rt type 2 fib daddr type local counter drop
        meta nfproto ipv6 exthdr dst exists fib daddr type local counter drop"""
    return f"""
table inet {TABLE} {{
    chain prerouting {{
        type filter hook prerouting priority raw; policy accept;
        # Our AF_PACKET sockets already have a copy; the kernel must not parse or answer these.
        meta nfproto ipv6 meta l4proto {{ {protos} }} fib daddr type local counter drop{extra}
    }}
    chain output {{
        type filter hook output priority raw; policy accept;
        # Safety net: never tell a peer we do not understand a header we handle ourselves.
        icmpv6 type parameter-problem counter drop
    }}
}}
"""


def install(owned_protocols: tuple[int, ...], mobility: bool = False) -> None:
    remove()
    _nft(ruleset(owned_protocols, mobility))


def remove() -> None:
    subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)
