"""An in-memory lab of the VCM cores on a fake clock: SG monitor, VCM, two MNs and lossy links.

Used by the unit tests and usable for analytic timing: every control datagram goes through
``Lab.fault`` (drop / duplicate / delay), every MN event is applied to an in-memory SAD and SPD
(:class:`FakeSecurityDb`) exactly as the shell contract says (events before datagrams), and
:meth:`Lab.check_invariants` verifies after every step that no MN holds an outbound direct SA whose
peer lacks the matching inbound SA.

Address plan (embodiment 1: private VPN addresses inside, external HoAs outside; embodiment 2: public only)::

    node   id   internal (emb. 1)   external / public HoA
    SG      1   fd00:10::1          -
    VCM     2   fd00:10::2          (emb. 2: 2001:db8:10::2)
    MN1    11   fd00:10::11         2001:db8:1::11 (emb. 2: 2001:db8:10::11)
    MN2    12   fd00:10::12         2001:db8:1::12 (emb. 2: 2001:db8:10::12)
"""
from __future__ import annotations

import heapq
import ipaddress
import random
from dataclasses import dataclass
from typing import Callable, Optional

from . import protocol as p
from .channel import ControlPath, mn_control_path, sg_vcm_path, vcm_control_path
from .manager import KEY_LIFETIME_S, ManagerConfig, MnEntry, VcmManager
from .mobile_agent import INBOUND_GRACE_S, MobileAgent, MobileAgentConfig
from .sg_monitor import MnBinding, MonitorConfig, SgMonitor

SG, VCM, MN1, MN2 = 1, 2, 11, 12
_ALGORITHMS = {"aes128gcm16": 16, "aes256gcm16": 32}


class InvariantError(AssertionError):
    pass


class FakeSecurityDb:
    """SAD + SPD of one MN, checking every op the agent emits against the config dict formats."""

    def __init__(self, name: str):
        self.name = name
        self.sad: dict[str, dict] = {}
        self.spd: list[dict] = []
        self.log: list = []

    def apply(self, op) -> None:
        cfg = op.config
        if op.action == "add-sa":
            _check_sa_config(cfg)
            if cfg["name"] in self.sad:
                raise InvariantError(f"{self.name}: SA {cfg['name']} added twice")
            if cfg["direction"] == "in" and any(sa["spi"] == cfg["spi"] and sa["direction"] == "in"
                                                for sa in self.sad.values()):
                raise InvariantError(f"{self.name}: inbound SPI {cfg['spi']} not unique")
            self.sad[cfg["name"]] = dict(cfg)
        elif op.action == "del-sa":
            if cfg["name"] not in self.sad:
                raise InvariantError(f"{self.name}: deleting unknown SA {cfg['name']}")
            if any(rule["sa"] == cfg["name"] for rule in self.spd):
                raise InvariantError(f"{self.name}: deleting SA {cfg['name']} still named by a rule")
            del self.sad[cfg["name"]]
        elif op.action == "add-spd":
            _check_rule(cfg)
            if cfg["sa"] not in self.sad:
                raise InvariantError(f"{self.name}: rule names missing SA {cfg['sa']}")
            if any(rule["name"] == cfg["name"] for rule in self.spd):
                raise InvariantError(f"{self.name}: rule name {cfg['name']} used twice")
            self.spd.insert(0, dict(cfg))   # peer-specific rules go ahead of the broad VPN rule
        elif op.action == "del-spd":
            if cfg not in self.spd:
                raise InvariantError(f"{self.name}: deleting unknown rule {cfg}")
            self.spd.remove(cfg)
        else:
            raise InvariantError(f"unknown op {op.action}")
        self.log.append(op)

    def outbound_sa_for(self, dst_inner: str) -> Optional[dict]:
        """The SA the first matching outbound rule uses for a destination, None = the SG path."""
        for rule in self.spd:
            if rule["direction"] == "out" and rule["dst"] == f"{dst_inner}/128":
                return self.sad[rule["sa"]]
        return None

    def inbound_by_spi(self, spi: int) -> Optional[dict]:
        return next((sa for sa in self.sad.values() if sa["direction"] == "in" and sa["spi"] == spi), None)


def _check_sa_config(cfg: dict) -> None:
    expected = {"name", "direction", "spi", "algorithm", "key", "salt", "mode", "local", "remote", "replay_window"}
    if set(cfg) != expected:
        raise InvariantError(f"SA config keys {sorted(cfg)}")
    if cfg["direction"] not in ("in", "out") or cfg["mode"] not in ("tunnel", "transport"):
        raise InvariantError(f"SA config {cfg['name']} direction/mode")
    if not 256 <= cfg["spi"] < 2 ** 32:
        raise InvariantError(f"SA config SPI {cfg['spi']}")
    if len(bytes.fromhex(cfg["key"])) != _ALGORITHMS[cfg["algorithm"]] or len(bytes.fromhex(cfg["salt"])) != 4:
        raise InvariantError("SA config key/salt length")
    ipaddress.IPv6Address(cfg["local"])
    ipaddress.IPv6Address(cfg["remote"])
    if cfg["replay_window"] != 64:
        raise InvariantError("replay window")


def _check_rule(rule: dict) -> None:
    expected = {"direction", "src", "dst", "proto", "sport", "dport", "action", "sa", "name"}
    if set(rule) != expected or rule["action"] not in ("protect", "bypass", "discard"):
        raise InvariantError(f"SPD rule {rule}")
    ipaddress.IPv6Network(rule["src"])
    ipaddress.IPv6Network(rule["dst"])


@dataclass
class MnSpec:
    node_id: int
    internal: Optional[str]
    external: str
    care_of: str


class Lab:
    """Four cores joined by fake links. ``fault(msg, src_id, dst_id) -> list of delays`` decides each
    datagram's fate: [] drops it, two entries duplicate it; the default delivers once after ``delay``."""

    def __init__(self, *, embodiment: int = 1, vcm_in_sg: bool = False, encapsulate: bool = True,
                 delay: float = 0.005, lifetime: int = KEY_LIFETIME_S, rekey_at: float = 0.75, seed: int = 1,
                 idle_timeout: Optional[float] = None, inbound_grace: float = INBOUND_GRACE_S,
                 triggers=None, algorithm: str = "aes128gcm16", agent_factory=MobileAgent):
        self.now = 0.0
        self.delay = delay
        self.embodiment = embodiment
        self.fault: Callable = lambda msg, src, dst: [self.delay]
        self.rng = random.Random(seed)
        self._seq = 0
        self._queue: list = []
        self.delivered: list = []          # (time, src, dst, Message)
        self.events: dict[int, list] = {SG: [], VCM: [], MN1: [], MN2: []}
        self.steps = 0
        self.data_log: list = []
        self.after_step: list = []         # callables run (with the lab) after every step

        if embodiment == 1:
            vcm_addr, sg_addr = "fd00:10::2", "fd00:10::1"
            self.mn = {MN1: MnSpec(MN1, "fd00:10::11", "2001:db8:1::11", "2001:db8:a::11"),
                       MN2: MnSpec(MN2, "fd00:10::12", "2001:db8:1::12", "2001:db8:b::12")}
            mode = "tunnel"
        else:
            vcm_addr, sg_addr = "2001:db8:10::2", "2001:db8:10::1"
            self.mn = {MN1: MnSpec(MN1, None, "2001:db8:10::11", "2001:db8:a::11"),
                       MN2: MnSpec(MN2, None, "2001:db8:10::12", "2001:db8:b::12")}
            mode = "transport"
        if vcm_in_sg:
            vcm_addr = sg_addr
        encapsulate = encapsulate or embodiment == 1
        self.paths: dict[int, dict[int, ControlPath]] = {SG: {}, VCM: {}, MN1: {}, MN2: {}}
        self.paths[SG][VCM] = sg_vcm_path(vcm_addr, vcm_in_sg=vcm_in_sg)
        self.paths[VCM][SG] = sg_vcm_path(sg_addr, vcm_in_sg=vcm_in_sg)
        for spec in self.mn.values():
            inner = spec.internal or spec.external
            self.paths[VCM][spec.node_id] = mn_control_path(inner, vcm_in_sg=vcm_in_sg, encapsulate=encapsulate)
            self.paths[spec.node_id][VCM] = vcm_control_path(vcm_addr, vcm_in_sg=vcm_in_sg, encapsulate=encapsulate)

        byte_source = random.Random(seed * 7919)
        self.random_calls = 0

        def random_bytes(n: int) -> bytes:
            self.random_calls += 1
            return bytes(byte_source.getrandbits(8) for _ in range(n))

        monitor_cfg = MonitorConfig(SG, VCM, self.paths[SG][VCM],
                                    tuple(MnBinding(s.node_id, s.external, s.internal) for s in self.mn.values()),
                                    idle_timeout=idle_timeout,
                                    **({"triggers": frozenset(triggers)} if triggers is not None else {}))
        self.sg = SgMonitor(monitor_cfg)
        self._vcm_config = ManagerConfig(
            VCM, SG, self.paths[VCM][SG],
            tuple(MnEntry(s.node_id, self.paths[VCM][s.node_id], s.external, s.internal) for s in self.mn.values()),
            algorithm=algorithm, mode=mode, lifetime=lifetime, rekey_at=rekey_at, vcm_in_sg=vcm_in_sg)
        self._random_bytes = random_bytes
        self.vcm = VcmManager(self._vcm_config, random_bytes=random_bytes)
        self.agents = {s.node_id: agent_factory(MobileAgentConfig(
            s.node_id, VCM, self.paths[s.node_id][VCM], s.external, s.internal, inbound_grace=inbound_grace))
            for s in self.mn.values()}
        self.db = {node: FakeSecurityDb(f"MN{node - 10}") for node in self.agents}
        self.cores = {SG: self.sg, VCM: self.vcm, MN1: self.agents[MN1], MN2: self.agents[MN2]}
        self.location = {MN1: "inside", MN2: "inside"}
        self.lost_spis: set = set()   # outbound SPIs whose receiver restarted without them (``restart_mn``)

    # -- wiring -----------------------------------------------------------------------------------
    def _route(self, src: int, path) -> int:
        for dst, known in self.paths[src].items():
            if known == path:
                return dst
        raise AssertionError(f"node {src} sent to unknown path {path}")

    def drain(self) -> None:
        """Apply events (MN shells first apply SA ops), then put datagrams on the links."""
        for node, core in self.cores.items():
            for event in core.pop_events():
                self.events[node].append(event)
                for op in getattr(event, "ops", ()):
                    self.db[node].apply(op)
            for data, path in core.datagrams_to_send(self.now):
                dst = self._route(node, path)
                msg = p.decode(data)
                for delay in self.fault(msg, node, dst):
                    self._seq += 1
                    heapq.heappush(self._queue, (self.now + delay, self._seq, node, dst, data))
        self.check_invariants()

    def inject(self, data: bytes, dst: int, path=None, delay: float = 0.0) -> None:
        """Put arbitrary bytes on the link towards ``dst`` as if they came over ``path``."""
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, None, dst, (data, path)))

    def next_time(self) -> Optional[float]:
        times = [self._queue[0][0]] if self._queue else []
        times += [t for t in (core.get_timer() for core in self.cores.values()) if t is not None]
        return min(times, default=None)

    def step(self) -> bool:
        when = self.next_time()
        if when is None:
            return False
        self.now = max(self.now, when)
        self.steps += 1
        if self._queue and self._queue[0][0] <= self.now:
            _, _, src, dst, data = heapq.heappop(self._queue)
            if src is None:
                data, path = data
                arrived_over = path
            else:
                arrived_over = self.paths[dst][src]
                self.delivered.append((self.now, src, dst, p.decode(data)))
            self.cores[dst].receive(data, arrived_over, self.now)
        else:
            for core in self.cores.values():
                timer = core.get_timer()
                if timer is not None and timer <= self.now:
                    core.handle_timer(self.now)
        self.drain()
        for hook in self.after_step:
            hook(self)
        return True

    def run(self, duration: float) -> None:
        end = self.now + duration
        while True:
            when = self.next_time()
            if when is None or when > end:
                break
            self.step()
        self.now = max(self.now, end)

    # -- scenario helpers -------------------------------------------------------------------------
    def inner(self, node: int) -> str:
        spec = self.mn[node]
        return spec.internal or spec.external

    def go_outside(self, node: int, *, bind: bool = True) -> None:
        self.location[node] = "outside"
        self.agents[node].left_office(self.now)
        if bind:
            self.sg.update_binding(self.now, node, self.mn[node].care_of)
        self.drain()

    def go_inside(self, node: int, *, deregister: bool = True, send_plain: bool = False) -> None:
        self.location[node] = "inside"
        self.agents[node].returned_inside(self.now)
        if deregister:
            self.sg.update_binding(self.now, node, None)
        if send_plain:
            self.sg.observe(self.now, _b(self.inner(node)), _b("fd00:10::99"), "in", None)
        self.drain()

    def send_data(self, src: int, dst: int) -> str:
        """One user packet src -> dst; returns the path it took (direct | via-sg) and checks decryption;
        "lost" for a direct packet under an SA the receiver's restarted process does not hold."""
        src_inner, dst_inner = _b(self.inner(src)), _b(self.inner(dst))
        sa = self.db[src].outbound_sa_for(self.inner(dst))
        if sa is not None and self.location[src] == "outside":
            peer_sa = self.db[dst].inbound_by_spi(sa["spi"])
            if peer_sa is None and sa["spi"] in self.lost_spis:
                # the receiver's new process lacks the SA: the packet is lost, and its shell tells its agent
                self.agents[dst].unkeyed_peer(self.mn[src].external, self.now)
                self.data_log.append((self.now, src, dst, "lost", sa["spi"]))
                self.drain()
                return "lost"
            if peer_sa is None or (peer_sa["key"], peer_sa["salt"]) != (sa["key"], sa["salt"]):
                raise InvariantError(f"direct packet {src}->{dst} SPI {sa['spi']} undecryptable")
            self.data_log.append((self.now, src, dst, "direct", sa["spi"]))
            return "direct"
        if self.location[src] == "outside":
            self.sg.observe(self.now, src_inner, dst_inner, "in", src)
        else:
            self.sg.observe(self.now, src_inner, dst_inner, "in", None)
        if self.location[dst] == "outside":
            self.sg.observe(self.now, src_inner, dst_inner, "out", dst)
        self.data_log.append((self.now, src, dst, "via-sg", None))
        self.drain()
        return "via-sg"

    def check_invariants(self) -> None:
        """Ordering rule: an outbound direct SA exists only if the peer has the matching inbound SA."""
        by_external = {spec.external: node for node, spec in self.mn.items()}
        for node, db in self.db.items():
            for sa in db.sad.values():
                if sa["direction"] != "out":
                    continue
                peer = by_external[sa["remote"]]
                inbound = self.db[peer].inbound_by_spi(sa["spi"])
                if inbound is None and sa["spi"] in self.lost_spis:
                    continue   # the black hole a restart opens; the protocol must close it (tests measure it)
                if inbound is None:
                    raise InvariantError(f"MN{node - 10} has outbound SPI {sa['spi']} but MN{peer - 10} "
                                         f"has no inbound SA for it (t={self.now:.3f})")
                if (inbound["key"], inbound["salt"], inbound["algorithm"]) != (sa["key"], sa["salt"], sa["algorithm"]):
                    raise InvariantError(f"SPI {sa['spi']}: key material differs between MN{node - 10} and peer")

    def restart_mn(self, node: int) -> None:
        """The MN's process starts again: a fresh agent (a higher counter, transaction ids from a new point)
        with an empty SAD/SPD, which tells the VCM at once. Its peers' outbound SAs towards it can no longer
        be decrypted (``lost_spis``) until the VCM moves those peers back to the SG path."""
        external = self.mn[node].external
        for other, db in self.db.items():
            if other != node:
                self.lost_spis |= {sa["spi"] for sa in db.sad.values()
                                   if sa["direction"] == "out" and sa["remote"] == external}
        old = self.agents[node]
        agent = type(old)(old.config, initial_counter=1 << 40, initial_txid=1 + self.rng.randrange(0xFFFFFFFF))
        self.agents[node] = self.cores[node] = agent
        self.db[node] = FakeSecurityDb(f"MN{node - 10}")
        agent.started(self.now)
        self.drain()

    def restart_sg(self) -> None:
        """The SG's process (and the VCM built into it) starts again, 1000 s later by its message counter:
        a fresh monitor and manager that know no session. Each MN outside registers with it again (the
        SG's refresh request), so the new VCM hears of it at once."""
        start = {"initial_counter": p.first_counter(int((1000 + self.now) * 1000)), "initial_txid": 1 + self.rng.randrange(0xFFFFFFFF)}
        self.sg = self.cores[SG] = SgMonitor(self.sg.config, **start)
        self.vcm = self.cores[VCM] = VcmManager(self._vcm_config, random_bytes=self._random_bytes, **start)
        for node, where in self.location.items():
            if where == "outside":
                self.sg.update_binding(self.now, node, self.mn[node].care_of)
        self.drain()

    def messages(self, msg_type: int, src: Optional[int] = None, dst: Optional[int] = None) -> list:
        return [m for t, s, d, m in self.delivered
                if m.type == msg_type and (src is None or s == src) and (dst is None or d == dst)]

    def events_of(self, node: int, cls) -> list:
        return [e for e in self.events[node] if isinstance(e, cls)]


def _b(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed
