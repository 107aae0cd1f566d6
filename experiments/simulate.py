#!/usr/bin/env python3
"""Simulation at scale: the real VCM cores (SG monitor, VCM manager, one mobile agent per MN) driven on a
virtual clock with a simple network model, for thousands of mobile nodes and sessions, without Mininet
and without root.

Every control message is the protocol's real bytes: the cores encode, the driver carries the datagram
through an event heap with a per-MN one-way delay (and per-message jitter and loss), the receiving core
decodes. The driver applies each mobile agent's SA/SPD operations before sending what the agent queued
(the shell contract of nodeapps/vcm/mobile_agent.py) and checks the ordering rule at every outbound
switch: the peer already holds the inbound SA with that SPI and key. What is a model, not a core
(docs/simulation.md): the delays, the data traffic (the SG observes one packet per second of a session
that is not direct yet), and the MN-MN return routability and binding update that the direct pair waits
for in the lab's default `home-ro` mode.

Per N it reports the setup time (session detected at the SG -> both MNs hold the keys; -> the
initiator's outbound switch, the VCM's own part; -> the initiator's first direct packet), the VCM's CPU
time per session (time.process_time around every call into the manager), control bytes per session (the
encoded messages), the monitor's and manager's table sizes and memory (deep sys.getsizeof), and the
retransmissions. Writes results/simulate-<time>/: config.json, runs.csv (one row per session, last N
only), summary.csv (one row per N), summary.md, plots/metrics-vs-n.{png,svg}.

    python3 experiments/simulate.py                                   # 1000 MNs, 10000 sessions
    python3 experiments/simulate.py --mns 10000 --sessions 100000
    python3 experiments/simulate.py --ns 100,1000,10000               # 10 sessions per MN at each N
    python3 experiments/simulate.py --loss 0.05 --move-rate 2 --home-rate 1
    python3 experiments/simulate.py --plot results/simulate-<time>    # redraw the figure only
"""
import _venv  # noqa: F401  (re-executes inside .venv)

import argparse
import gc
import heapq
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

from experiments import records
from experiments.cli import OneLineErrorParser, add_output_options, redraw
from experiments.stats import percentile
from nodeapps.linkemu import profiles
from nodeapps.mobility.constants import INITIAL_BINDACK_TIMEOUT, MAX_BINDACK_TIMEOUT
from nodeapps.vcm import protocol as p
from nodeapps.vcm.channel import mn_control_path, sg_vcm_path, vcm_control_path
from nodeapps.vcm.manager import ManagerConfig, MnEntry, VcmManager
from nodeapps.vcm.mobile_agent import (FallBackToSg, InstallInbound, MobileAgent, MobileAgentConfig,
                                       SwitchOutbound)
from nodeapps.vcm.sg_monitor import MnBinding, MonitorConfig, SessionDetected, SgMonitor
from nodeapps.vcm.simulation import SG, VCM, FakeSecurityDb, InvariantError

OFFICE_LAN = profiles.get("lan").forward.delay_ms / 1000.0
FIRST_MN = 11                  # node ids as in nodeapps/vcm/simulation.py: SG 1, VCM 2, MNs from 11
# The lab's default link profiles (topologies/svpn.py DEFAULT_PROFILES) along an MN's paths, and the
# default attachments (topologies/addressing.py: round-robin WLAN 1, cellular, WLAN 2).
LAB_ACCESS = ("wlan", "lte", "wlan")
LAB_METRO, LAB_LONGHAUL = "wan-metro", "wan-longhaul"
SUMMARY_COLUMNS = [
    "mns", "sessions", "set_up", "already_direct", "no_pair", "interrupted", "failed", "wall_s", "cpu_s",
    "keys_p50_ms", "keys_p90_ms", "keys_p99_ms", "switch_p50_ms", "switch_p90_ms", "switch_p99_ms",
    "setup_p50_ms", "setup_p90_ms", "setup_p99_ms", "both_direct_p99_ms", "min_margin_ms",
    "vcm_cpu_us_per_session", "sg_cpu_us_per_session", "mn_cpu_us_per_session",
    "control_bytes_per_session", "control_messages_per_session", "retransmissions", "gave_up",
    "sg_flows", "sg_reported_pairs", "vcm_sessions", "vcm_spis", "sg_memory_kib", "vcm_memory_kib",
    "mn_memory_kib_mean", "moves", "returns", "move_redirect_p50_ms", "move_redirect_p99_ms", "events"]
RUN_COLUMNS = ["session", "initiator", "responder", "arrival_s", "detect_ms", "keys_ms", "switch_ms",
               "setup_ms", "both_direct_ms", "bound_ms", "outcome"]


class SimError(ValueError):
    """A parameter the simulation cannot run with (one line, names the parameter)."""


# ---- parameters --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SimConfig:
    mns: int = 1000
    sessions: int = 10000
    duration: float = 600.0          # virtual seconds over which sessions arrive
    drain: float = 120.0             # virtual seconds after that for the last setups
    loss: float = 0.0                # per-message loss on every network hop (control, data, RR)
    seed: int = 1
    move_rate: float = 0.0           # care-of changes per MN per hour (while outside)
    home_rate: float = 0.0           # returns to the office per MN per hour
    home_time: float = 300.0         # mean stay in the office (s) before leaving again
    access: str = "lab"              # one-way access delay: lab | fixed:MS | uniform:LO:HI | lognormal:MEDIAN:SIGMA
    jitter_ms: Optional[float] = None  # per-message jitter sigma; None: the lab profiles' (0 for other models)
    metro_ms: Optional[float] = None   # access router <-> Internet core (default: wan-metro profile)
    longhaul_ms: Optional[float] = None  # Internet core <-> SG (default: wan-longhaul profile)
    vcm: str = "in-sg"               # in-sg | host (own office host)
    office_ms: float = 0.1           # SG <-> VCM host one-way (lan profile)
    pair: str = "home-ro"            # home-ro: direct after MN-MN RR + BU; care-of: after the switch
    packet_interval: float = 0.02    # the sessions' packet spacing (50 Hz, as the lab's probes)
    strict: bool = False             # also apply every SA/SPD op to nodeapps/vcm/simulation.FakeSecurityDb

    def check(self) -> None:
        def need(ok: bool, text: str) -> None:
            if not ok:
                raise SimError(text)
        for name in ("duration", "drain", "loss", "move_rate", "home_rate", "home_time", "office_ms",
                     "packet_interval"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and math.isfinite(value), f"--{_opt(name)} must be a number")
        need(self.mns >= 2, f"--mns must be at least 2 (a session needs two mobile nodes), not {self.mns}")
        need(self.mns <= 1_000_000, f"--mns must be at most 1000000, not {self.mns}")
        need(self.sessions >= 0, f"--sessions must not be negative, not {self.sessions}")
        need(self.duration > 0, f"--duration must be above 0 s, not {self.duration:g}")
        need(self.drain >= 0, f"--drain must not be negative, not {self.drain:g}")
        need(0 <= self.loss < 1, f"--loss must be in [0, 1), not {self.loss:g}")
        need(self.loss <= 0.5, f"--loss above 0.5 leaves the control channel (8 attempts) mostly giving up, "
                               f"not {self.loss:g}")
        need(self.move_rate >= 0, f"--move-rate must not be negative, not {self.move_rate:g}")
        need(self.home_rate >= 0, f"--home-rate must not be negative, not {self.home_rate:g}")
        need(self.home_time > 0, f"--home-time must be above 0 s, not {self.home_time:g}")
        need(self.office_ms >= 0, f"--office-ms must not be negative, not {self.office_ms:g}")
        need(self.packet_interval > 0, f"--packet-interval must be above 0 s, not {self.packet_interval:g}")
        for name in ("jitter_ms", "metro_ms", "longhaul_ms"):
            value = getattr(self, name)
            need(value is None or (math.isfinite(value) and value >= 0),
                 f"--{_opt(name)} must be a non-negative number of ms, not {value}")
        need(self.vcm in ("in-sg", "host"), f"--vcm must be in-sg or host, not {self.vcm!r}")
        need(self.pair in ("home-ro", "care-of"), f"--pair must be home-ro or care-of, not {self.pair!r}")
        AccessModel.parse(self.access)


def _opt(name: str) -> str:
    return name.replace("_", "-")


class AccessModel:
    """One-way delay of an MN's access link (ms), drawn per MN and again at every move."""

    def __init__(self, kind: str, a: float = 0.0, b: float = 0.0):
        self.kind, self.a, self.b = kind, a, b
        self._lab = [(link.delay_ms, link.jitter_ms) for link in (profiles.get(name).forward for name in LAB_ACCESS)]

    @classmethod
    def parse(cls, text: str) -> "AccessModel":
        parts = text.split(":")
        kind, args = parts[0], parts[1:]
        arity = {"lab": 0, "fixed": 1, "uniform": 2, "lognormal": 2}
        if kind not in arity:
            raise SimError(f"--access must be lab, fixed:MS, uniform:LO:HI or lognormal:MEDIAN:SIGMA, not {text!r}")
        if len(args) != arity[kind]:
            raise SimError(f"--access {kind} takes {arity[kind]} number(s) after '{kind}:', not {text!r}")
        try:
            values = [float(x) for x in args]
        except ValueError:
            raise SimError(f"--access {text!r}: not a number") from None
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise SimError(f"--access {text!r}: values must be non-negative numbers")
        if kind == "uniform" and values[0] > values[1]:
            raise SimError(f"--access {text!r}: LO above HI")
        if kind == "lognormal" and values[0] <= 0:
            raise SimError(f"--access {text!r}: the median must be above 0")
        return cls(kind, *values)

    def draw(self, rng: random.Random, index: int) -> tuple[float, float]:
        """(delay ms, jitter sigma ms) of the access link of MN number ``index``."""
        if self.kind == "lab":
            return self._lab[index % len(self._lab)]
        if self.kind == "fixed":
            return self.a, 0.0
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b), 0.0
        return self.a * math.exp(rng.gauss(0.0, self.b)), 0.0


# ---- the network model ---------------------------------------------------------------------------------

class NetModel:
    """Delays (seconds) between the nodes. An MN's path to the SG: access -> metro -> Internet core ->
    long-haul -> SG; to another MN's care-of address: access -> metro -> core -> metro -> access; the MN-MN
    home path detours through the external home agent (metro both ways off the core). Jitter only adds
    delay (|N(0, sigma)|), as on the lab's emulated links, which keep packet order."""

    def __init__(self, cfg: SimConfig, rng: random.Random):
        self.cfg = cfg
        self.rng = rng
        self.access = AccessModel.parse(cfg.access)
        metro, longhaul = profiles.get(LAB_METRO).forward, profiles.get(LAB_LONGHAUL).forward
        lab = self.access.kind == "lab"
        self.metro = (metro.delay_ms if cfg.metro_ms is None else cfg.metro_ms) / 1000.0
        self.longhaul = (longhaul.delay_ms if cfg.longhaul_ms is None else cfg.longhaul_ms) / 1000.0
        self.fixed_jitter = None if cfg.jitter_ms is None else cfg.jitter_ms / 1000.0
        self.wan_sigma2 = (metro.jitter_ms ** 2 + longhaul.jitter_ms ** 2) / 1e6 if lab else 0.0
        self.office = 0.0 if cfg.vcm == "in-sg" else cfg.office_ms / 1000.0
        self.core: list[float] = []     # per MN: one-way to the Internet core (access + metro)
        self.sigma: list[float] = []    # per MN: jitter sigma to the SG
        for i in range(cfg.mns):
            self.core.append(0.0)
            self.sigma.append(0.0)
            self.redraw(i)

    def redraw(self, i: int) -> None:
        delay_ms, jitter_ms = self.access.draw(self.rng, i if self.access.kind != "lab" else self.rng.randrange(3))
        self.core[i] = delay_ms / 1000.0 + self.metro
        if self.fixed_jitter is not None:
            self.sigma[i] = self.fixed_jitter
        else:
            self.sigma[i] = math.sqrt((jitter_ms / 1000.0) ** 2 + self.wan_sigma2)

    def to_sg(self, i: int) -> float:
        """Base one-way delay MN <-> SG."""
        return self.core[i] + self.longhaul

    def jitter(self, sigma: float) -> float:
        return abs(self.rng.gauss(0.0, sigma)) if sigma else 0.0

    def lost(self) -> bool:
        return self.cfg.loss > 0 and self.rng.random() < self.cfg.loss

    def exchange(self, start: float, one_way: float, sigma: float, hops: int = 1) -> tuple[float, float]:
        """An MN's mobility request/response with RFC 6275 §11.8 retransmission (1 s, doubling, at most
        32 s): (time the request first arrived, time the response arrived). ``hops``: network crossings
        each way, each lost with the configured probability."""
        sent, timeout, arrived = start, INITIAL_BINDACK_TIMEOUT, None
        while True:
            if not any(self.lost() for _ in range(hops)):
                there = sent + one_way + self.jitter(sigma)
                arrived = there if arrived is None else arrived
                if not any(self.lost() for _ in range(hops)):
                    return arrived, there + one_way + self.jitter(sigma)
            sent += timeout
            timeout = min(2 * timeout, MAX_BINDACK_TIMEOUT)

    def route_optimise(self, start: float, x: int, y: int) -> tuple[float, float]:
        """Return routability and binding of MN x at MN y (the model of nodeapps/mobility's MN-MN route
        optimisation): HoTI/HoT via the home agent and CoTI/CoT straight, in parallel; then BU/BA.
        (time y holds x's binding, time x has y's acknowledgement)."""
        direct = self.core[x] + self.core[y]
        home = direct + 2 * self.metro
        sigma = math.hypot(self.sigma[x], self.sigma[y])
        _, hot = self.exchange(start, home, sigma, hops=2)
        _, cot = self.exchange(start, direct, sigma)
        return self.exchange(max(hot, cot), direct, sigma)

    def redirect(self, start: float, x: int, y: int) -> float:
        """After x moved: CoTI/CoT from the new care-of address, then BU/BA (the home token is reused,
        RFC 6275 §5.2.7); the time x's new binding is held by y."""
        direct = self.core[x] + self.core[y]
        sigma = math.hypot(self.sigma[x], self.sigma[y])
        _, cot = self.exchange(start, direct, sigma)
        return self.exchange(cot, direct, sigma)[0]


# ---- the simulation -----------------------------------------------------------------------------------

# event kinds
_DELIVER, _OBSERVE, _TIMER, _ARRIVAL, _TICK, _MOVE, _HOME, _LEAVE = range(8)


class _Session:
    __slots__ = ("index", "a", "b", "arrival", "detect", "keys", "switch", "ready", "bound", "done", "outcome",
                 "first_seen")

    def __init__(self, index: int, a: int, b: int, arrival: float):
        self.index, self.a, self.b, self.arrival = index, a, b, arrival
        self.detect: Optional[float] = None
        self.first_seen: Optional[float] = None   # the SG saw its first packet
        self.keys: dict = {}       # node -> inbound SA installed
        self.switch: dict = {}     # node -> outbound switched
        self.ready: dict = {}      # node -> MN-MN binding usable for its direction
        self.bound: Optional[float] = None
        self.done: Optional[dict] = None
        self.outcome = "pending"


class Simulation:
    def __init__(self, cfg: SimConfig):
        cfg.check()
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.net = NetModel(cfg, random.Random(cfg.seed * 7919 + 1))
        self.now = 0.0
        self._heap: list = []
        self._seq = 0
        self.events = 0
        n = cfg.mns
        self.node_of = [FIRST_MN + i for i in range(n)]
        self.index_of = {node: i for i, node in enumerate(self.node_of)}
        vcm_in_sg = cfg.vcm == "in-sg"
        vcm_addr, sg_addr = ("fd00:10::1", "fd00:10::1") if vcm_in_sg else ("fd00:10::2", "fd00:10::1")
        self.internal = [f"fd00:10::{node:x}" for node in self.node_of]
        self.external = [f"2001:db8:1::{node:x}" for node in self.node_of]
        self.internal_b = [_packed(a) for a in self.internal]
        self.sg_vcm_path = sg_vcm_path(vcm_addr, vcm_in_sg=vcm_in_sg)
        self.vcm_sg_path = sg_vcm_path(sg_addr, vcm_in_sg=vcm_in_sg)
        self.mn_path = [mn_control_path(a, vcm_in_sg=vcm_in_sg) for a in self.internal]
        self.to_vcm_path = vcm_control_path(vcm_addr, vcm_in_sg=vcm_in_sg)
        self.path_owner = {path: self.node_of[i] for i, path in enumerate(self.mn_path)}
        self.path_owner[self.vcm_sg_path] = SG
        spi_source = random.Random(cfg.seed * 7919)
        self.sg = SgMonitor(MonitorConfig(
            SG, VCM, self.sg_vcm_path,
            tuple(MnBinding(node, self.external[i], self.internal[i]) for i, node in enumerate(self.node_of)),
            max_flows=max(8192, 8 * n)))
        self.vcm = VcmManager(ManagerConfig(
            VCM, SG, self.vcm_sg_path,
            tuple(MnEntry(node, self.mn_path[i], self.external[i], self.internal[i])
                  for i, node in enumerate(self.node_of)),
            vcm_in_sg=vcm_in_sg, max_sessions=max(8192, 2 * cfg.sessions)),
            random_bytes=spi_source.randbytes)
        self.agents = [MobileAgent(MobileAgentConfig(node, VCM, self.to_vcm_path, self.external[i], self.internal[i]))
                       for i, node in enumerate(self.node_of)]
        self.db = [FakeSecurityDb(f"mn{node}") for node in self.node_of] if cfg.strict else None
        self.inside = [False] * n
        self.care_of_serial = [0] * n
        self.timer_at: dict = {}
        self._link_free: dict = {}   # (src, dst) -> time the last datagram on that link arrives
        # driver-side view of the MNs' SAs for the ordering check: per MN {spi: key} inbound
        self.inbound_keys: list = [dict() for _ in range(n)]
        self.direct_out: list = [dict() for _ in range(n)]   # per MN: peer index -> outbound SPI
        self.pending: dict = {}       # frozenset(pair of indexes) -> _Session being set up
        self.sessions: list = []
        self.cpu = {"vcm": 0.0, "sg": 0.0, "mn": 0.0}
        self.control_bytes = 0
        self.control_messages = 0
        self.bytes_by_type: dict = {}
        self.moves = self.returns = 0
        self.redirects: list = []
        self.already_direct = 0
        self.no_pair = 0

    # -- event heap --------------------------------------------------------------------------------
    def _push(self, when: float, kind: int, a=None, b=None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, a, b))

    def _core(self, node: int):
        if node == VCM:
            return self.vcm
        if node == SG:
            return self.sg
        return self.agents[node - FIRST_MN]

    def _bucket(self, node: int) -> str:
        return "vcm" if node == VCM else "sg" if node == SG else "mn"

    def _timed(self, node: int, call, *args):
        start = time.process_time()
        result = call(*args)
        self.cpu[self._bucket(node)] += time.process_time() - start
        return result

    def _delay(self, src: int, dst: int) -> Optional[float]:
        """One-way delay of a control datagram, None if it is lost."""
        if src < FIRST_MN and dst < FIRST_MN:   # SG <-> VCM
            if self.cfg.vcm == "in-sg":
                return 0.0    # same process (local path)
            return None if self.net.lost() else self.net.office
        mn = src if dst in (SG, VCM) else dst
        i = mn - FIRST_MN
        if self.net.lost():
            return None
        if self.inside[i]:
            return self.net.office + OFFICE_LAN   # in the office: the LAN, not the Internet
        return self.net.to_sg(i) + self.net.office + self.net.jitter(self.net.sigma[i])

    def flush(self, node: int, start: Optional[float] = None) -> None:
        """Events first (the SA ops), then datagrams; then re-arm the node's timer. ``start``: the CPU clock
        when the call into the core that this flush completes began (it is counted with the flush)."""
        core = self._core(node)
        if start is None:
            start = time.process_time()
        events = core.pop_events()
        datagrams = core.datagrams_to_send(self.now)
        timer = core.get_timer()
        self.cpu[self._bucket(node)] += time.process_time() - start
        if node >= FIRST_MN:
            for event in events:
                self._on_agent_event(node - FIRST_MN, event)
        elif node == SG:
            for event in events:
                if isinstance(event, SessionDetected):
                    session = self.pending.get(frozenset((event.node_a - FIRST_MN, event.node_b - FIRST_MN)))
                    if session is not None and session.detect is None:
                        session.detect = self.now
        for data, path in datagrams:
            dst = VCM if node != VCM else self.path_owner[path]
            self.control_messages += 1
            self.control_bytes += len(data)
            kind = data[1]
            self.bytes_by_type[kind] = self.bytes_by_type.get(kind, 0) + len(data)
            delay = self._delay(node, dst)
            if delay is not None:
                # Links keep packet order (as the lab's emulated links): jitter delays, never overtakes.
                link = (node, dst)
                when = max(self.now + delay, self._link_free.get(link, 0.0))
                self._link_free[link] = when
                self._push(when, _DELIVER, dst, (node, data))
        if timer is not None and self.timer_at.get(node) != timer:
            self.timer_at[node] = timer
            self._push(timer, _TIMER, node, timer)

    def _path_to(self, dst: int, src: int):
        """The path a datagram from ``src`` arrives over at ``dst`` (the channel checks it names the sender)."""
        if dst == VCM:   # the VCM's name for the SG's path, not the SG's for the VCM's (they differ with --vcm host)
            return self.vcm_sg_path if src == SG else self.mn_path[src - FIRST_MN]
        if dst == SG:
            return self.sg_vcm_path
        return self.to_vcm_path

    # -- the MNs' shell ------------------------------------------------------------------------------
    def _on_agent_event(self, i: int, event) -> None:
        if self.db is not None:
            for op in getattr(event, "ops", ()):
                self.db[i].apply(op)
        if isinstance(event, InstallInbound):
            for op in event.ops:
                if op.action == "add-sa":
                    self.inbound_keys[i][op.config["spi"]] = (op.config["key"], op.config["salt"])
            session = self.pending.get(frozenset((i, event.peer - FIRST_MN)))
            if session is not None and i not in session.keys:
                session.keys[i] = self.now
                self._start_binding(session, i)
        elif isinstance(event, SwitchOutbound):
            j = event.peer - FIRST_MN
            for op in event.ops:
                if op.action == "add-sa":
                    cfg = op.config
                    # The ordering rule: no outbound use before the peer can decrypt.
                    if self.inbound_keys[j].get(cfg["spi"]) != (cfg["key"], cfg["salt"]):
                        raise InvariantError(f"mn{self.node_of[i]} switched to SPI {cfg['spi']} that "
                                             f"mn{self.node_of[j]} cannot decrypt (t={self.now:.3f})")
                    self.direct_out[i][j] = cfg["spi"]
            session = self.pending.get(frozenset((i, j)))
            if session is not None and i not in session.switch:
                session.switch[i] = self.now
                self._maybe_done(session)
        elif isinstance(event, FallBackToSg):
            self.direct_out[i].pop(event.peer - FIRST_MN, None)

    def _start_binding(self, session: _Session, i: int) -> None:
        """Both MNs start MN-MN route optimisation once they hold the keys (the lab's `home-ro`)."""
        if self.cfg.pair == "care-of":
            session.ready[i] = self.now
            self._maybe_done(session)
            return
        j = session.b if i == session.a else session.a
        held_by_peer, acked = self.net.route_optimise(self.now, i, j)
        # i may send direct once its binding is acknowledged by j and it holds j's binding.
        session.ready[i] = max(session.ready.get(i, 0.0), acked)
        session.ready[("held", j)] = held_by_peer
        self._maybe_done(session)

    def _maybe_done(self, session: _Session) -> None:
        a, b = session.a, session.b
        if len(session.switch) < 2 or len(session.keys) < 2:
            return
        if self.cfg.pair == "home-ro":
            if ("held", a) not in session.ready or ("held", b) not in session.ready:
                return
            ready_a = max(session.ready[a], session.ready[("held", b)])
            ready_b = max(session.ready[b], session.ready[("held", a)])
        else:
            ready_a = ready_b = max(session.keys.values())
        direct_a = max(session.switch[a], ready_a)
        direct_b = max(session.switch[b], ready_b)
        # The initiator's packets leave every packet_interval from its arrival; the first after direct_a.
        k = math.ceil((direct_a - session.arrival) / self.cfg.packet_interval - 1e-9)
        first = session.arrival + k * self.cfg.packet_interval
        session.done = {"keys": max(session.keys.values()), "switch": session.switch[a], "setup": first,
                        "both": max(first, direct_b)}
        session.outcome = "direct"
        del self.pending[frozenset((a, b))]

    # -- scenario events -----------------------------------------------------------------------------
    def _arrival(self, index: int) -> None:
        outside = None
        for _ in range(64):
            a, b = self.rng.sample(range(self.cfg.mns), 2)
            if not self.inside[a] and not self.inside[b]:
                outside = (a, b)
                break
        if outside is None:
            self.no_pair += 1   # (nearly) everyone is in the office
            return
        a, b = outside
        key = frozenset((a, b))
        if b in self.direct_out[a] and a in self.direct_out[b] or key in self.pending:
            self.already_direct += 1   # the pair's packets already go direct (or are being set up)
            return
        session = _Session(index, a, b, self.now)
        self.sessions.append(session)
        self.pending[key] = session
        self._see(session)

    def _see(self, session: _Session) -> None:
        """The SG relays one packet of the session (a -> b): it decrypts it from a's SA and encrypts it
        into b's. A lost packet is replaced by the next, one packet interval later."""
        if self.inside[session.a] or self.inside[session.b]:
            return
        when = self.now
        while self.net.lost():
            when += self.cfg.packet_interval
        self._push(when + self.net.to_sg(session.a) + self.net.jitter(self.net.sigma[session.a]),
                   _OBSERVE, session)

    def _observe(self, session: _Session) -> None:
        if session.outcome != "pending" or self.inside[session.a] or self.inside[session.b]:
            return
        src, dst = self.internal_b[session.a], self.internal_b[session.b]
        start = time.process_time()
        self.sg.observe(self.now, src, dst, "in", self.node_of[session.a])
        self.sg.observe(self.now, src, dst, "out", self.node_of[session.b])
        self.cpu["sg"] += time.process_time() - start
        if session.first_seen is None:
            session.first_seen = self.now
        self.flush(SG)

    def _tick(self) -> None:
        """Once a second: sessions still via the SG send on (one observation stands for the second's
        packets: the monitor keeps only the last-seen time); pending sessions without a detection yet
        are observed again, so a lost REPORT chain or a fall-back is recovered as in the lab."""
        for session in list(self.pending.values()):
            if session.first_seen is not None and len(session.switch) < 2:
                self._see(session)
        if self.now < self.cfg.duration + self.cfg.drain:
            self._push(self.now + 1.0, _TICK)

    def _move(self, i: int) -> None:
        if not self.inside[i]:
            self.moves += 1
            self.net.redraw(i)
            self._bind(i)
            if self.cfg.pair == "home-ro":
                for j in list(self.direct_out[i]):
                    self.redirects.append(self.net.redirect(self.now, i, j) - self.now)
        self._schedule_move(i)

    def _bind(self, i: int) -> None:
        self.care_of_serial[i] += 1
        serial = self.care_of_serial[i]
        care_of = f"2001:db8:{(serial % 0xfffe) + 1:x}:{i >> 16:x}:{i & 0xffff:x}::1"
        start = time.process_time()
        self.sg.update_binding(self.now, self.node_of[i], care_of)
        self.cpu["sg"] += time.process_time() - start
        self.flush(SG)

    def _home(self, i: int) -> None:
        if self.inside[i]:
            return
        self.returns += 1
        self.inside[i] = True
        for key in [key for key in self.pending if i in key]:
            self.pending.pop(key).outcome = "interrupted"
        self._timed(FIRST_MN + i, self.agents[i].returned_inside, self.now)
        self.flush(FIRST_MN + i)
        start = time.process_time()
        self.sg.update_binding(self.now, self.node_of[i], None)
        self.cpu["sg"] += time.process_time() - start
        self.flush(SG)
        self._push(self.now + self.rng.expovariate(1.0 / self.cfg.home_time), _LEAVE, i)

    def _leave(self, i: int) -> None:
        self.inside[i] = False
        self._timed(FIRST_MN + i, self.agents[i].left_office, self.now)
        self._bind(i)
        self._schedule_home(i)

    def _schedule_move(self, i: int) -> None:
        if self.cfg.move_rate > 0:
            self._push(self.now + self.rng.expovariate(self.cfg.move_rate / 3600.0), _MOVE, i)

    def _schedule_home(self, i: int) -> None:
        if self.cfg.home_rate > 0:
            self._push(self.now + self.rng.expovariate(self.cfg.home_rate / 3600.0), _HOME, i)

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> "Simulation":
        cfg = self.cfg
        # Every MN starts outside, registered (as in scale.py): the SG reports them all to the VCM.
        for i in range(cfg.mns):
            self._timed(FIRST_MN + i, self.agents[i].left_office, self.now)
            self.care_of_serial[i] = 0
            start = time.process_time()
            self.sg.update_binding(self.now, self.node_of[i], f"2001:db8:a:{i >> 16:x}:{i & 0xffff:x}::1")
            self.cpu["sg"] += time.process_time() - start
            self._schedule_move(i)
            self._schedule_home(i)
        self.flush(SG)
        arrivals = sorted(self.rng.uniform(0.0, cfg.duration) for _ in range(cfg.sessions))
        for index, when in enumerate(arrivals):
            self._push(when, _ARRIVAL, index)
        self._push(1.0, _TICK)
        end = cfg.duration + cfg.drain
        heap = self._heap
        while heap:
            when, _, kind, a, b = heapq.heappop(heap)
            if when > end:
                break
            self.now = when
            self.events += 1
            if kind == _DELIVER:
                src, data = b
                start = time.process_time()
                self._core(a).receive(data, self._path_to(a, src), when)
                self.flush(a, start)
            elif kind == _OBSERVE:
                self._observe(a)
            elif kind == _TIMER:
                if self.timer_at.get(a) != b:
                    continue
                del self.timer_at[a]
                self._timed(a, self._core(a).handle_timer, self.now)
                self.flush(a)
            elif kind == _ARRIVAL:
                self._arrival(a)
            elif kind == _TICK:
                self._tick()
            elif kind == _MOVE:
                self._move(a)
            elif kind == _HOME:
                self._home(a)
            elif kind == _LEAVE:
                self._leave(a)
        for session in self.pending.values():
            session.outcome = "failed"
        return self

    # -- results -------------------------------------------------------------------------------------
    def lower_bound(self, session: _Session) -> float:
        """The fewest seconds from detection to the initiator's switch the protocol allows with the
        configured base delays: REPORT to the VCM, KEYS to the responder, its KEYS_ACK back, PEER_READY
        to the initiator (moves redraw delays: a bound for MNs that did not move)."""
        a, b = session.a, session.b
        office = self.net.office
        return office + 2 * (self.net.to_sg(b) + office) + (self.net.to_sg(a) + office)

    def session_rows(self) -> list[dict]:
        rows = []
        for s in self.sessions:
            ms = (lambda key: None if s.done is None or s.detect is None
                  else 1000.0 * (s.done[key] - s.detect))  # noqa: E731
            rows.append({"session": s.index, "initiator": self.node_of[s.a], "responder": self.node_of[s.b],
                         "arrival_s": s.arrival,
                         "detect_ms": None if s.detect is None else 1000.0 * (s.detect - s.arrival),
                         "keys_ms": ms("keys"), "switch_ms": ms("switch"), "setup_ms": ms("setup"),
                         "both_direct_ms": ms("both"), "bound_ms": 1000.0 * self.lower_bound(s),
                         "outcome": s.outcome})
        return rows

    def summary(self, wall: float, cpu: float, memory: bool = True) -> dict:
        rows = self.session_rows()
        ok = [r for r in rows if r["outcome"] == "direct" and r["switch_ms"] is not None]
        count = {o: sum(1 for r in rows if r["outcome"] == o) for o in ("direct", "interrupted", "failed")}
        per = max(1, len(ok))
        vcm_stats, sg_stats = self.vcm.channel.stats, self.sg.channel.stats
        agent_retx = sum(a.channel.stats["retransmit"] for a in self.agents)
        out = {"mns": self.cfg.mns, "sessions": self.cfg.sessions, "set_up": count["direct"],
               "already_direct": self.already_direct, "no_pair": self.no_pair, "interrupted": count["interrupted"],
               "failed": count["failed"], "wall_s": wall, "cpu_s": cpu}
        for name in ("keys", "switch", "setup"):
            values = [r[f"{name}_ms"] for r in ok]
            for q in (50, 90, 99):
                out[f"{name}_p{q}_ms"] = percentile(values, q)
        out["both_direct_p99_ms"] = percentile([r["both_direct_ms"] for r in ok], 99)
        out["min_margin_ms"] = min((r["switch_ms"] - r["bound_ms"] for r in ok), default=math.nan)
        out["vcm_cpu_us_per_session"] = 1e6 * self.cpu["vcm"] / per
        out["sg_cpu_us_per_session"] = 1e6 * self.cpu["sg"] / per
        out["mn_cpu_us_per_session"] = 1e6 * self.cpu["mn"] / per
        out["control_bytes_per_session"] = self.control_bytes / per
        out["control_messages_per_session"] = self.control_messages / per
        out["retransmissions"] = vcm_stats["retransmit"] + sg_stats["retransmit"] + agent_retx
        out["gave_up"] = vcm_stats["gave-up"] + sg_stats["gave-up"]
        out["sg_flows"] = self.sg.flow_count()
        out["sg_reported_pairs"] = len(self.sg._reported)
        out["vcm_sessions"] = len(self.vcm.sessions)
        out["vcm_spis"] = len(self.vcm._spis_in_use)
        if memory:
            out["sg_memory_kib"] = deep_size(self.sg) / 1024.0
            out["vcm_memory_kib"] = deep_size(self.vcm) / 1024.0
            sample = self.agents[:: max(1, len(self.agents) // 200)]
            out["mn_memory_kib_mean"] = sum(deep_size(a) for a in sample) / len(sample) / 1024.0
        out["moves"], out["returns"] = self.moves, self.returns
        redirects = [1000.0 * r for r in self.redirects]
        out["move_redirect_p50_ms"] = percentile(redirects, 50)
        out["move_redirect_p99_ms"] = percentile(redirects, 99)
        out["events"] = self.events
        return out


def _packed(text: str) -> bytes:
    import ipaddress
    return ipaddress.IPv6Address(text).packed


def deep_size(root) -> int:
    """Bytes reachable from ``root`` by sys.getsizeof over containers, instance dicts and slots; each
    object counted once; classes, functions and modules not counted (shared code, not state)."""
    seen = set()
    stack = [root]
    total = 0
    slots_of: dict = {}
    while stack:
        obj = stack.pop()
        kind = type(obj)
        if kind in _SKIP or id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if kind in _LEAVES:
            continue
        if kind is dict:
            stack.extend(obj.keys())
            stack.extend(obj.values())
            continue
        if kind in _CONTAINERS:
            stack.extend(obj)
            continue
        if hasattr(obj, "__dict__"):
            stack.append(obj.__dict__)
        slots = slots_of.get(kind)
        if slots is None:
            slots = slots_of[kind] = [slot for cls in kind.__mro__ for slot in getattr(cls, "__slots__", ())
                                      if slot not in ("__dict__", "__weakref__")]
        stack.extend(getattr(obj, slot, None) for slot in slots)
    return total


_LEAVES = frozenset({str, bytes, int, float, bool, type(None)})
_SKIP = frozenset({type, type(deep_size), type(sys), type(len)})
_CONTAINERS = frozenset({list, tuple, set, frozenset})


def simulate(cfg: SimConfig, memory: bool = True) -> tuple[Simulation, dict]:
    """Run one simulation; (the simulation, its summary row)."""
    gc_was = gc.isenabled()
    # The cores make no reference cycles worth collecting mid-run, and a collection walks every object the
    # run made (1e7 at 100,000 sessions): none during the run nor during the summary's 1e5 new rows.
    gc.disable()
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        sim = Simulation(cfg).run()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return sim, sim.summary(wall, cpu, memory)
    finally:
        if gc_was:
            gc.enable()


# ---- command line ---------------------------------------------------------------------------------------

def parse_args(argv):
    parser = OneLineErrorParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 3)[3],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mns", type=int, default=1000, help="mobile nodes (default 1000)")
    parser.add_argument("--sessions", type=int,
                        help="sessions arriving during --duration (default 10 per MN)")
    parser.add_argument("--ns", metavar="N,N,...", help="sweep over these MN counts (10 sessions per MN "
                                                        "unless --sessions)")
    parser.add_argument("--duration", type=float, default=600.0, help="virtual seconds of arrivals (default 600)")
    parser.add_argument("--drain", type=float, default=120.0,
                        help="virtual seconds after the arrivals for the last setups (default 120)")
    parser.add_argument("--loss", type=float, default=0.0, help="per-message loss probability (default 0)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--move-rate", type=float, default=0.0,
                        help="care-of changes per MN per hour (default 0)")
    parser.add_argument("--home-rate", type=float, default=0.0,
                        help="returns to the office per MN per hour (default 0)")
    parser.add_argument("--home-time", type=float, default=300.0,
                        help="mean seconds in the office before leaving again (default 300)")
    parser.add_argument("--access", default="lab",
                        help="one-way access delay per MN: lab (the lab's WLAN/LTE profiles, round-robin), "
                             "fixed:MS, uniform:LO:HI, lognormal:MEDIAN:SIGMA (default lab)")
    parser.add_argument("--jitter-ms", type=float, help="per-message jitter sigma (default: the lab profiles')")
    parser.add_argument("--metro-ms", type=float, help="access router <-> Internet core (default 5, wan-metro)")
    parser.add_argument("--longhaul-ms", type=float, help="Internet core <-> SG (default 35, wan-longhaul)")
    parser.add_argument("--vcm", choices=["in-sg", "host"], default="in-sg",
                        help="VCM built into the SG (default) or on its own office host")
    parser.add_argument("--office-ms", type=float, default=0.1, help="SG <-> VCM host one-way (default 0.1)")
    parser.add_argument("--pair", choices=["home-ro", "care-of"], default="home-ro",
                        help="direct pair on MN-MN route optimisation (default, needs RR + BU) or care-of")
    parser.add_argument("--packet-interval", type=float, default=0.02,
                        help="seconds between a session's packets (default 0.02: 50 Hz)")
    parser.add_argument("--strict", action="store_true",
                        help="also check every SA/SPD op against an in-memory SAD/SPD per MN (slower)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the memory measurement (a walk over every core object: ~5 s at 100,000 "
                             "sessions)")
    add_output_options(parser)
    parser.add_argument("--plot", metavar="FOLDER", help="only redraw the figure of a results folder")
    args = parser.parse_args(argv)
    if args.plot:
        return args, []
    if args.ns is not None:
        try:
            ns = [int(x) for x in args.ns.split(",") if x.strip()]
        except ValueError:
            parser.error(f"--ns must be MN counts separated by commas, not {args.ns!r}")
        if not ns:
            parser.error("--ns names no MN count")
    else:
        ns = [args.mns]
    configs = []
    for n in ns:
        sessions = args.sessions if args.sessions is not None else 10 * n
        cfg = SimConfig(mns=n, sessions=sessions, duration=args.duration, drain=args.drain, loss=args.loss,
                        seed=args.seed, move_rate=args.move_rate, home_rate=args.home_rate,
                        home_time=args.home_time, access=args.access, jitter_ms=args.jitter_ms,
                        metro_ms=args.metro_ms, longhaul_ms=args.longhaul_ms, vcm=args.vcm,
                        office_ms=args.office_ms, pair=args.pair, packet_interval=args.packet_interval,
                        strict=args.strict)
        try:
            cfg.check()
        except SimError as exc:
            parser.error(str(exc) if args.ns is None else f"N={n}: {exc}")
        configs.append(cfg)
    return args, configs


def summary_markdown(rows: list[dict], config: dict) -> str:
    def f(value, digits=1):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    out = [f"# simulate: {', '.join(str(r['mns']) for r in rows)} mobile nodes", "",
           f"Command: `{' '.join(config['argv'])}`", "",
           "Setup times from the session's detection at the SG: keys = both MNs hold their inbound SA; "
           "switch = the initiator switched outbound (the VCM's own part); setup = the initiator's first "
           "direct packet (after MN-MN route optimisation in `home-ro`).", "",
           "| N | sessions | set up | keys p50/p99 ms | switch p50/p99 ms | setup p50/p90/p99 ms | "
           "VCM CPU µs/session | control B/session | retransmissions | VCM sessions | VCM KiB | SG KiB | run wall / CPU s |",
           "|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['mns']} | {r['sessions']} | {r['set_up']} | {f(r['keys_p50_ms'])} / {f(r['keys_p99_ms'])} | "
                   f"{f(r['switch_p50_ms'])} / {f(r['switch_p99_ms'])} | {f(r['setup_p50_ms'])} / "
                   f"{f(r['setup_p90_ms'])} / {f(r['setup_p99_ms'])} | {f(r['vcm_cpu_us_per_session'], 0)} | "
                   f"{f(r['control_bytes_per_session'], 0)} | {r['retransmissions']} | {r['vcm_sessions']} | "
                   f"{f(r.get('vcm_memory_kib'), 0)} | {f(r.get('sg_memory_kib'), 0)} | {f(r['wall_s'])} / {f(r['cpu_s'])} |")
    out += ["", "Not set up: `already_direct` (the pair was direct or being set up already), `interrupted` (an MN "
            "went back to the office first), `failed` (not direct by the end). Memory: deep sys.getsizeof of "
            "the core objects (docs/simulation.md).", ""]
    return "\n".join(out)


def draw(folder: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import pandas as pd
    from matplotlib.figure import Figure

    from experiments.plotting import save_figure

    table = pd.read_csv(os.path.join(folder, "summary.csv")).sort_values("mns")
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    n = table.mns
    ax = axes[0][0]
    for column, label, style in (("switch_p50_ms", "switch p50", "-o"), ("switch_p99_ms", "switch p99", "--o"),
                                 ("setup_p50_ms", "first direct p50", "-s"),
                                 ("setup_p99_ms", "first direct p99", "--s")):
        ax.plot(n, table[column], style, label=label)
    ax.set(ylabel="ms after detection", title="setup time")
    ax.legend()
    ax = axes[0][1]
    ax.plot(n, table.vcm_cpu_us_per_session, "-o", label="VCM")
    ax.plot(n, table.sg_cpu_us_per_session, "-s", label="SG monitor")
    ax.plot(n, table.mn_cpu_us_per_session, "-^", label="both MN agents")
    ax.set(ylabel="CPU µs per session", title="core CPU time per session")
    ax.legend()
    ax = axes[1][0]
    ax.plot(n, table.control_bytes_per_session, "-o", color="#0072B2")
    ax.set(ylabel="bytes per session", title="control bytes per session (VCM messages)")
    ax.set_ylim(0, 1.25 * table.control_bytes_per_session.max())
    ax = axes[1][1]
    if "vcm_memory_kib" in table:
        ax.plot(n, table.vcm_memory_kib / 1024.0, "-o", label="VCM manager")
        ax.plot(n, table.sg_memory_kib / 1024.0, "-s", label="SG monitor")
    ax.set(ylabel="MiB (deep sys.getsizeof)", title="core state at the end", yscale="log")
    ax.legend()
    for row in axes:
        for ax in row:
            ax.set_xscale("log")
            ax.set_xlabel("mobile nodes N")
            ax.grid(alpha=0.3)
    out_dir = os.path.join(folder, "plots")
    os.makedirs(out_dir, exist_ok=True)
    return save_figure(fig, out_dir, "metrics-vs-n", dpi=130)


def main(argv=None) -> int:
    args, configs = parse_args(argv)
    if args.plot:
        return redraw("simulate.py", args.plot, "simulate", "summary.csv", draw)
    import pandas as pd
    os.makedirs(args.results, exist_ok=True)
    folder = records.new_folder(args.results, "simulate")
    config = {"experiment": "simulate", "argv": [os.path.basename(sys.argv[0])] + list(argv or sys.argv[1:]),
              "runs": [asdict(c) for c in configs], "host": {"cpus": os.cpu_count()},
              "versions": records.versions()}
    records.write_config(folder, config)
    rows = []
    last = None
    for cfg in configs:
        print(f"simulate: N={cfg.mns}, {cfg.sessions} sessions over {cfg.duration:g} s ...", flush=True)
        try:
            sim, row = simulate(cfg, memory=not args.no_memory)
        except InvariantError as exc:
            print(f"simulate.py: N={cfg.mns}: ordering rule broken: {exc}", file=sys.stderr)
            return 1
        rows.append(row)
        last = sim
        print(f"simulate: N={cfg.mns}: {row['set_up']} set up, {row['failed']} failed, setup p50 "
              f"{row['setup_p50_ms']:.1f} ms p99 {row['setup_p99_ms']:.1f} ms; wall {row['wall_s']:.1f} s",
              flush=True)
    pd.DataFrame(rows, columns=SUMMARY_COLUMNS).to_csv(os.path.join(folder, "summary.csv"), index=False,
                                                       float_format="%.3f")
    pd.DataFrame(last.session_rows(), columns=RUN_COLUMNS).to_csv(os.path.join(folder, "runs.csv"), index=False,
                                                                  float_format="%.3f")
    config["bytes_by_type"] = {p.TYPE_NAMES.get(k, str(k)): v for k, v in sorted(last.bytes_by_type.items())}
    records.write_config(folder, config)
    with open(os.path.join(folder, "summary.md"), "w", encoding="utf-8") as f:
        f.write(summary_markdown(rows, config))
    if not args.no_plots:
        draw(folder)
    with open(os.path.join(folder, "summary.md"), encoding="utf-8") as f:
        print(f.read())
    print(f"simulate: results in {folder}")
    return 0


if __name__ == "__main__":
    # A run's objects (1e7 at 100,000 sessions) live until this process ends: a collection would walk them
    # all to free nothing (20 s after the run), and so would the interpreter's teardown (10 s), skipped
    # once every result file is closed.
    gc.disable()
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
