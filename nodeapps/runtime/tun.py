"""TUN devices: where a node's inner (VPN) traffic enters and leaves the kernel."""
from __future__ import annotations

import fcntl
import os
import struct
import subprocess

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000


def open_tun(name: str) -> int:
    """Create (or attach to) TUN device ``name``; returns a non-blocking fd. Packets are bare IPv6."""
    if not 0 < len(name) <= 15:
        raise ValueError(f"TUN name {name!r} must be 1 to 15 characters")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def ip(*args: str) -> None:
    """Run one `ip` command; raise with its own message on failure."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def configure_tun(name: str, mtu: int, addresses: list[str], routes: list[str]) -> None:
    """Bring the TUN up with its inner addresses and the routes that steer VPN traffic into it."""
    # No link-local address: the kernel would otherwise send RS/MLD into the TUN.
    ip("link", "set", "dev", name, "addrgenmode", "none")
    ip("link", "set", "dev", name, "mtu", str(mtu), "up")
    for address in addresses:
        ip("-6", "addr", "add", address, "dev", name, "nodad")
    for route in routes:
        ip("-6", "route", "replace", route, "dev", name)
