"""TUN devices: where a node's inner (VPN) traffic enters and leaves the kernel."""
from __future__ import annotations

import fcntl
import os
import struct
import subprocess

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_TUNSETOFFLOAD = 0x400454D0
_TUN_F_CSUM = 0x01
_TUN_F_TSO6 = 0x04


def open_tun(name: str, offload: bool = True) -> tuple[int, bool]:
    """Create (or attach to) TUN device ``name``: (non-blocking fd, offloads on).

    With offloads every read and write starts with a virtio-net header and TCP may arrive as 64 KB
    super-packets (see ``nodeapps.runtime.offload``); a kernel that refuses them gets bare IPv6.
    """
    if not 0 < len(name) <= 15:
        raise ValueError(f"TUN name {name!r} must be 1 to 15 characters")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        flags = _IFF_TUN | _IFF_NO_PI | (_IFF_VNET_HDR if offload else 0)
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        if offload:
            try:
                fcntl.ioctl(fd, _TUNSETOFFLOAD, _TUN_F_CSUM | _TUN_F_TSO6)
            except OSError:
                os.close(fd)
                return open_tun(name, offload=False)
    except OSError:
        os.close(fd)
        raise
    return fd, offload


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
