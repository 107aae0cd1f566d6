"""EmulatedLink: a Mininet link with delay, jitter, loss, rate and capacity traces, with or without netem.

Theory of operation
-------------------
``EmulatedLink(node1, node2, profile="lte", delay="30ms", ...)`` builds a validated
:class:`~nodeapps.linkemu.params.LinkConfig` (profile, then overrides for both directions, then
``forward={...}`` for node1 → node2 and ``reverse={...}`` for node2 → node1) and picks a backend:

- ``none``: a plain veth pair, when ``auto`` finds nothing to emulate (e.g. profile ``ideal``).
- ``netem``: a plain veth pair; each sender's end gets ``netem`` (+ ``tbf`` for a rate). Chosen by ``auto``
  when the kernel has netem (probed once per process by really adding one in a throwaway namespace) and
  the parameters fit it (no trace; no jitter unless reordering is allowed).
- ``userspace``: node1 ── intf1 ⇄ side-a [hidden node running ``python -m nodeapps.linkemu.emulator``]
  side-b ⇄ intf2 ── node2. The hidden node is a Mininet ``Node`` named after the two nodes, not in
  ``net.hosts``; the link creates it and removes it (and the emulator) in ``stop()``/``delete()``, which
  ``net.stop()`` and ``net.delLink()`` call. The emulator also exits by itself if this process dies.

``intf1``/``intf2`` are on node1/node2 as for any Mininet link, so addressing code does not change.
After (or during) a run, ``link.report()`` / :func:`link_report` / :func:`emulation_metadata` give the
backend, the reason for it, the parameters, and the emulator's counters and lateness; a link whose
emulator fell behind (``overloaded``) is reported loudly on stop and marked unfaithful.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from mininet.link import Intf, Link
from mininet.log import error, info
from mininet.node import Node

from nodeapps.linkemu.errors import LinkConfigError
from nodeapps.linkemu.netem import NetemSupport, choose_backend, detect_netem, direction_commands
from nodeapps.linkemu.params import BACKENDS, PARAM_KEYS, LinkConfig, default_seed
from nodeapps.linkemu.profiles import make_config
from topologies.runs import RUN_ENV

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SIDE_A, SIDE_B = "emu-a", "emu-b"
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 3.0

_default_backend = os.environ.get("SVPNLAB_LINK_BACKEND", "auto")


def _random_mac() -> str:
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFC) | 0x02  # locally administered, unicast
    return ":".join(f"{b:02x}" for b in octets)


def set_default_backend(backend: Optional[str]) -> None:
    """Backend for links that do not name one (e.g. from ``--link-backend``): auto, netem or userspace;
    None leaves it unchanged."""
    global _default_backend
    if backend is None:
        return
    if backend not in BACKENDS:
        raise LinkConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    _default_backend = backend


def default_backend() -> str:
    return _default_backend


class EmulatedLink(Link):
    """A Mininet link with emulated impairments. Keyword arguments besides Mininet's own:

    profile: name from ``nodeapps.linkemu.profiles`` (default: none, i.e. an ideal wire);
    delay, jitter, jitter_correlation, distribution, reorder, loss, burst_loss, ge_p, ge_r, ge_loss_bad,
    ge_loss_good, rate (alias bw), queue_packets, queue_bytes, trace: both directions;
    forward / reverse: dicts of the same for node1 → node2 / node2 → node1;
    link_config: a ready LinkConfig (e.g. from ``link_profiles.get``) instead of the above;
    backend: auto | netem | userspace (default: :func:`default_backend`); seed: random seed.
    """

    def __init__(self, node1: Node, node2: Node, port1: Optional[int] = None, port2: Optional[int] = None,
                 intfName1: Optional[str] = None, intfName2: Optional[str] = None,
                 addr1: Optional[str] = None, addr2: Optional[str] = None, intf: type = Intf,
                 cls1: Optional[type] = None, cls2: Optional[type] = None,
                 params1: Optional[dict] = None, params2: Optional[dict] = None,
                 fast: bool = True, profile: Optional[str] = None, backend: Optional[str] = None,
                 seed: Optional[int] = None, link_config: Optional[LinkConfig] = None,
                 forward: Optional[dict] = None, reverse: Optional[dict] = None, **params: Any) -> None:
        emu_kwargs = {key: params.pop(key) for key in list(params) if key in PARAM_KEYS}
        if link_config is not None:
            if emu_kwargs or profile or forward or reverse:
                raise LinkConfigError("give either link_config or link parameters, not both")
            config = link_config
        else:
            config = make_config(profile, forward=forward, reverse=reverse, **emu_kwargs)
        params1 = dict(params1) if params1 else {}
        params2 = dict(params2) if params2 else {}
        params1.setdefault("port", port1 if port1 is not None else node1.newPort())
        params2.setdefault("port", port2 if port2 is not None else node2.newPort())
        intfName1 = intfName1 or self.intfName(node1, params1["port"])
        intfName2 = intfName2 or self.intfName(node2, params2["port"])
        if seed is None:
            seed = config.seed if config.seed is not None else default_seed(intfName1, intfName2)
        requested = backend or (config.backend if config.backend != "auto" else default_backend())
        config = LinkConfig(forward=config.forward, reverse=config.reverse, profile=config.profile,
                            seed=seed, backend=requested)
        self.config = config
        self.netem: NetemSupport = detect_netem()
        self.backend, self.backend_reason = choose_backend(config, self.netem)
        if getattr(node2, "isRemote", False):
            raise LinkConfigError(f"link {intfName1}-{intfName2}: only its first node may be on another server")
        if getattr(node1, "isRemote", False) and self.backend != "userspace":
            # The SSH Ethernet tunnel from the other server ends in the emulator's namespace, here.
            self.backend, self.backend_reason = "userspace", f"{node1.name} is on another server"
        self.hidden: Optional[Node] = None
        self.hidden_intfs: tuple[Intf, ...] = ()
        self.process: Optional[subprocess.Popen] = None
        self.tunnel: Optional[subprocess.Popen] = None
        self._workdir: Optional[str] = None
        self._final_stats: Optional[dict[str, Any]] = None
        self._tc_stats: Optional[dict[str, str]] = None
        self._deleted = False
        self.warnings: list[str] = []

        if self.backend in ("netem", "none"):
            Link.__init__(self, node1, node2, intfName1=intfName1, intfName2=intfName2, addr1=addr1,
                          addr2=addr2, intf=intf, cls1=cls1, cls2=cls2, params1=params1, params2=params2,
                          fast=fast, **params)
            try:
                self._apply_netem()
            except Exception:
                Link.delete(self)
                raise
        else:
            try:
                self._build_userspace(node1, node2, intfName1, intfName2, addr1, addr2, intf, cls1, cls2,
                                      params1, params2, params)
            except Exception:
                self._teardown_userspace(quiet=True)
                raise
        info(f"({self.describe()}) ")

    # -- netem backend ------------------------------------------------------------------------------------
    def _apply_netem(self) -> None:
        for node, dev, params in ((self.intf1.node, self.intf1.name, self.config.forward),
                                  (self.intf2.node, self.intf2.name, self.config.reverse)):
            for command in direction_commands(dev, params):
                out, err, code = node.pexec(command)
                if code != 0:
                    raise LinkConfigError(f"{node.name}: {shlex.join(command)} failed: "
                                          f"{' '.join((err or out).split())}")

    # -- userspace backend --------------------------------------------------------------------------------
    def hidden_name(self, node1: Node, node2: Node, port1: int) -> str:
        return f"{node1.name}-{node2.name}.{port1}"

    def _build_userspace(self, node1, node2, name1, name2, addr1, addr2, intf, cls1, cls2,
                         params1, params2, params) -> None:
        self.hidden = Node(self.hidden_name(node1, node2, params1["port"]), inNamespace=True)
        hidden = self.hidden
        hidden.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        params1 = {**params1, **params}
        params2 = {**params2, **params}
        params1.setdefault("moveIntfFn", self._ignore)
        params2.setdefault("moveIntfFn", self._ignore)
        # util.makeIntfPair wants both MACs or neither.
        if getattr(node1, "isRemote", False):
            # node1 runs on another server (topologies/cluster.py): an SSH Ethernet tunnel instead of a veth.
            self.tunnel = node1.ethernet_tunnel(name1, addr1 or _random_mac(), hidden.pid, SIDE_A, _random_mac())
        else:
            self.makeIntfPair(name1, SIDE_A, addr1 or _random_mac(), _random_mac(), node1, hidden,
                              deleteIntfs=False)
        self.makeIntfPair(SIDE_B, name2, _random_mac(), addr2 or _random_mac(), hidden, node2,
                          deleteIntfs=False)
        self.intf1 = (cls1 or intf)(name=name1, node=node1, link=self, mac=addr1, **params1)
        self.intf2 = (cls2 or intf)(name=name2, node=node2, link=self, mac=addr2, **params2)
        self.hidden_intfs = (Intf(SIDE_A, node=hidden, port=0, link=self, moveIntfFn=self._ignore),
                             Intf(SIDE_B, node=hidden, port=1, link=self, moveIntfFn=self._ignore))
        for name in (SIDE_A, SIDE_B):
            # Largest MTU: the wire is transparent; the hosts' ends decide the link's MTU.
            hidden.cmd(f"ip link set dev {name} mtu 65535 up")
        for end, params in ((self.intf1, self.config.forward), (self.intf2, self.config.reverse)):
            if params.acts_on_packets:
                # The sender must hand over real frames: loss and rate act per frame, not per 64 KB GSO blob.
                end.node.pexec(["ethtool", "-K", end.name, "tso", "off", "gso", "off"])
            end.node.pexec(["ip", "link", "set", "dev", end.name, "up"])
        # Inside the lab's run directory when there is one: a run's files live only there.
        self._workdir = tempfile.mkdtemp(prefix="linkemu-", dir=os.environ.get(RUN_ENV) or None)
        stats = os.path.join(self._workdir, "stats.json")
        log = open(os.path.join(self._workdir, "emulator.log"), "wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "nodeapps.linkemu.emulator", "--side-a", SIDE_A, "--side-b", SIDE_B,
                   "--config", json.dumps(self.config.to_dict()), "--stats", stats,
                   "--parent-pid", str(os.getpid())]
        try:
            self.process = hidden.popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, env=env, cwd=str(PROJECT_ROOT))
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not os.path.exists(stats):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"link emulator {hidden.name} did not start: {self._log_tail()}")
            time.sleep(0.01)

    def _log_tail(self) -> str:
        if not self._workdir:
            return "no log"
        try:
            lines = Path(self._workdir, "emulator.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "no output"

    def _read_stats(self) -> Optional[dict[str, Any]]:
        if not self._workdir:
            return None
        try:
            return json.loads(Path(self._workdir, "stats.json").read_text())
        except (OSError, ValueError):
            return None

    def _teardown_userspace(self, quiet: bool = False) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self._final_stats = self._read_stats()
            tail = self._log_tail()
            if "WARNING" in tail or "error" in tail:
                self.warnings.append(tail)
        for end in (getattr(self, "intf1", None), getattr(self, "intf2", None)):
            if end is not None and end.node is not None:
                end.node.cmd(f"ip link del dev {end.name} 2>/dev/null")
                end.node.delIntf(end)
        if self.tunnel is not None:
            if self.tunnel.poll() is None:
                self.tunnel.kill()
            self.tunnel.wait()
            self.tunnel = None
        if self.hidden is not None:
            self.hidden.terminate()
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        stats = self._final_stats
        if stats and stats.get("overloaded") and not quiet:
            message = (f"link {self}: emulator OVERLOADED: {stats['late']} of {stats['released']} frames "
                       f"({100 * stats['late_fraction']:.1f} %) released more than "
                       f"{stats['late_threshold_ms']:g} ms late (max {stats['max_late_ms']:.1f} ms); "
                       f"measured delays of this run are inflated")
            if message not in self.warnings:
                self.warnings.append(message)
            error(f"*** WARNING: {message}\n")

    # -- Mininet link protocol ----------------------------------------------------------------------------
    def delete(self) -> None:
        if self._deleted:
            return
        self._deleted = True
        if self.backend == "none":
            Link.delete(self)
        elif self.backend == "netem":
            self._tc_stats = {}
            for end in (self.intf1, self.intf2):
                out, _, code = end.node.pexec(["tc", "-s", "qdisc", "show", "dev", end.name])
                if code == 0:
                    self._tc_stats[end.name] = out
            Link.delete(self)
        else:
            self._teardown_userspace()

    def stop(self) -> None:
        self.delete()

    # -- reports ------------------------------------------------------------------------------------------
    def describe(self) -> str:
        parts = [self.backend]
        if self.config.profile:
            parts.append(self.config.profile)
        for label, params in (("fwd", self.config.forward), ("rev", self.config.reverse)):
            fields = params.to_dict()
            if fields:
                parts.append(label + " " + " ".join(f"{k}={v}" for k, v in fields.items()))
        return ", ".join(parts)

    def stats(self) -> Optional[dict[str, Any]]:
        """The emulator's counters (live while running, final after stop); None for netem links."""
        if self._final_stats is not None:
            return self._final_stats
        return self._read_stats() if self.backend == "userspace" else None

    @property
    def overloaded(self) -> bool:
        stats = self.stats()
        return bool(stats and stats.get("overloaded"))

    def report(self) -> dict[str, Any]:
        """Everything a run's metadata needs about this link."""
        stats = self.stats()
        return {
            "link": f"{self.intf1.name}<->{self.intf2.name}" if self.intf1 else None,
            "nodes": [self.intf1.node.name, self.intf2.node.name] if self.intf1 else None,
            "backend": self.backend, "backend_reason": self.backend_reason,
            "netem_available": self.netem.available, "netem_probe": self.netem.detail,
            "config": self.config.to_dict(),
            "hidden_node": self.hidden.name if self.hidden is not None else None,
            "stats": stats, "tc_stats": self._tc_stats,
            "overloaded": bool(stats and stats.get("overloaded")),
            "faithful": not (stats and stats.get("overloaded")),
            "warnings": list(self.warnings),
        }

    def __str__(self) -> str:
        if getattr(self, "intf1", None) is None or getattr(self, "intf2", None) is None:
            return f"EmulatedLink({self.config.profile or 'custom'})"
        return f"{self.intf1}<->{self.intf2}"


def emulated_links(net) -> list[EmulatedLink]:
    return [link for link in net.links if isinstance(link, EmulatedLink)]


def link_report(net) -> list[dict[str, Any]]:
    """Per-link reports of a network (call before or after ``net.stop()``; keep the link objects)."""
    return [link.report() for link in emulated_links(net)]


def emulation_metadata(links) -> dict[str, Any]:
    """Run metadata for a list of EmulatedLink (or a Mininet net): backends used, netem probe, faithfulness."""
    if hasattr(links, "links"):
        links = emulated_links(links)
    reports = [link.report() for link in links]
    netem = detect_netem()
    backends: dict[str, int] = {}
    for report in reports:
        backends[report["backend"]] = backends.get(report["backend"], 0) + 1
    overloaded = [report["link"] for report in reports if report["overloaded"]]
    return {"netem_available": netem.available, "netem_probe": netem.detail, "default_backend":
            default_backend(), "backends": backends, "faithful": not overloaded,
            "overloaded_links": overloaded, "links": reports}
