"""Kernel netem: does this kernel have it, can it express a link, and the tc/ethtool commands for it.

Detection really adds a netem qdisc inside a throwaway network namespace (``unshare --net``); listing
qdiscs proves nothing, and Mininet's TCLink only prints an error and carries on with no delay.

Per direction the sender's interface gets ``netem`` as root (delay, jitter, loss) and, for a rate, a ``tbf``
child holding the drop-tail queue — or a ``tbf`` root alone when only a rate is asked for.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable, Optional

from nodeapps.linkemu.errors import LinkConfigError
from nodeapps.linkemu.params import LinkConfig, LinkParams

NETEM_LIMIT = 100_000   # packets netem may hold while delaying; its default of 1000 caps throughput × delay
FRAME = 1514


@dataclass(frozen=True)
class NetemSupport:
    available: bool
    detail: str

    def __bool__(self) -> bool:
        return self.available


def probe_command(is_root: bool) -> list[str]:
    """The probe: add a netem qdisc to ``lo`` of a fresh namespace (user namespace too when not root)."""
    prefix = ["unshare", "--net"] if is_root else ["unshare", "--user", "--map-root-user", "--net"]
    return prefix + ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]


def interpret_probe(returncode: int, stderr: str) -> NetemSupport:
    if returncode == 0:
        return NetemSupport(True, "netem qdisc added in a throwaway namespace")
    text = " ".join(stderr.split()) or f"exit status {returncode}"
    return NetemSupport(False, f"netem probe failed: {text}")


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)


@functools.lru_cache(maxsize=1)
def detect_netem(runner: Optional[Callable[[list[str]], subprocess.CompletedProcess]] = None) -> NetemSupport:
    """Whether kernel netem works here; probed once per process (``detect_netem.cache_clear()`` to redo)."""
    if runner is None:
        if not shutil.which("unshare") or not shutil.which("tc"):
            return NetemSupport(False, "netem probe impossible: unshare or tc missing")
        runner = _run
    try:
        result = runner(probe_command(os.geteuid() == 0))
    except (OSError, subprocess.SubprocessError) as exc:
        return NetemSupport(False, f"netem probe failed: {exc}")
    return interpret_probe(result.returncode, result.stderr or "")


def netem_limits(params: LinkParams) -> Optional[str]:
    """Why ``params`` cannot be given to kernel netem faithfully, or None if it can."""
    if params.trace is not None:
        return "trace-driven capacity needs the userspace emulator"
    if params.jitter_ms and not params.reorder:
        return "netem reorders packets under jitter; keeping order needs the userspace emulator"
    return None


def choose_backend(config: LinkConfig, netem: NetemSupport) -> tuple[str, str]:
    """(backend, reason) for a link; an explicit ``netem`` the link cannot use is a LinkConfigError.
    ``none`` (a plain veth pair) when ``auto`` finds nothing to emulate in either direction."""
    limits = [why for why in (netem_limits(config.forward), netem_limits(config.reverse)) if why]
    if config.backend == "auto" and not config.forward.to_dict() and not config.reverse.to_dict():
        return "none", "auto: nothing to emulate (plain veth pair)"
    if config.backend == "userspace":
        return "userspace", "asked for"
    if config.backend == "netem":
        if not netem:
            raise LinkConfigError(f"backend netem asked for but unavailable ({netem.detail})")
        if limits:
            raise LinkConfigError(f"backend netem cannot emulate this link: {limits[0]}")
        return "netem", "asked for"
    if not netem:
        return "userspace", f"auto: {netem.detail}"
    if limits:
        return "userspace", f"auto: {limits[0]}"
    return "netem", "auto: kernel netem available"


def _ms(value: float) -> str:
    return f"{value:g}ms"


def _pct(value: float) -> str:
    return f"{value:g}%"


def netem_args(params: LinkParams) -> list[str]:
    """The netem options for one direction (empty when netem is not needed)."""
    args: list[str] = []
    if params.delay_ms or params.jitter_ms:
        args += ["delay", _ms(params.delay_ms)]
        if params.jitter_ms:
            args.append(_ms(params.jitter_ms))
            if params.jitter_correlation:
                args.append(_pct(params.jitter_correlation))
            if params.distribution == "normal":
                args += ["distribution", "normal"]
    if params.ge_p is not None:
        args += ["loss", "gemodel", _pct(params.ge_p), _pct(params.ge_r),
                 _pct(params.ge_loss_bad), _pct(params.ge_loss_good)]
    elif params.loss:
        args += ["loss", "random", _pct(params.loss)]
    if not args:
        return []
    limit = NETEM_LIMIT if params.rate_mbit is not None or params.queue_packets is None \
        else params.queue_packets
    return ["limit", str(limit)] + args


def tbf_args(params: LinkParams) -> list[str]:
    """tbf options for the rate and its drop-tail queue (bytes; packet limits count full-size frames)."""
    if params.rate_mbit is None:
        return []
    packets, queue_bytes = params.queue_limit
    limit = queue_bytes if queue_bytes is not None else packets * FRAME
    rate_bytes_per_ms = params.rate_mbit * 1e6 / 8 / 1000
    burst = max(2 * FRAME, int(rate_bytes_per_ms))  # ~1 ms of tokens: tight shaping, no stall at high rates
    return ["rate", f"{params.rate_mbit:g}mbit", "burst", str(burst), "limit", str(limit)]


def direction_commands(dev: str, params: LinkParams) -> list[list[str]]:
    """Commands to run in the sender's namespace so that frames leaving ``dev`` see ``params``."""
    commands: list[list[str]] = []
    if params.acts_on_packets:
        # Qdiscs see GSO super-frames; loss and rate must act on real frames.
        commands.append(["ethtool", "-K", dev, "tso", "off", "gso", "off"])
    netem = netem_args(params)
    tbf = tbf_args(params)
    if netem:
        commands.append(["tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "netem"] + netem)
        if tbf:
            commands.append(["tc", "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "tbf"] + tbf)
    elif tbf:
        commands.append(["tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "tbf"] + tbf)
    return commands


def link_commands(dev1: str, dev2: str, config: LinkConfig) -> tuple[list[list[str]], list[list[str]]]:
    """(commands for node1 on dev1 — the forward direction, commands for node2 on dev2 — reverse)."""
    return direction_commands(dev1, config.forward), direction_commands(dev2, config.reverse)
