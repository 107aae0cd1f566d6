"""Scenarios as data: a timeline of named phases in which mobile nodes move between networks.

A scenario file is TOML (read with ``tomllib``, written with ``tomli_w``), so users can copy the default
(``experiments/scenarios/default.toml``), edit it and pass it with ``--scenario FILE``::

    name = "my-scenario"
    description = "one line shown in reports"
    mobile_nodes = 2                      # nodes are mn1 .. mnN
    quick_scale = 0.25                    # --quick multiplies every duration by this ...
    quick_min_phase_s = 2.0               # ... but keeps each phase at least this long
    quick_min_traffic_s = 1.5             # ... and lengthens a phase so its traffic runs this long

    [start]                               # where each node is when the run begins
    mn1 = "office"
    mn2 = "office"

    [[probe]]                             # continuous UDP probes for the whole run (RTT, loss, gaps)
    between = ["mn1", "mn2"]
    rate_hz = 50

    [[phase]]
    name = "mn2-out"                      # letters, digits, '-' and '_'; unique
    duration_s = 6
    move = {node = "mn2", to = "wlan2"}   # or a list of them; optional at_s (offset into the phase)
    traffic = [{kind = "tcp", from = "mn1", to = "mn2", start_s = 2}]   # quick = false: not in --quick
    note = "free text"

Networks: ``office`` (inside the VPN) and the visited networks of the topology (``wlan1``, ``wlan2``,
``cell``). Traffic endpoints: the mobile nodes and the office hosts that serve traffic (``fs``, ``d1``,
``d2``, ``lap``). Traffic kinds: ``tcp`` and ``udp`` (bulk transfer measured for throughput; ``udp`` takes
``rate_mbit``) and ``probe`` (an extra UDP probe only in that phase). A traffic item runs from ``start_s``
(default 0) for ``duration_s`` (default: to the end of the phase).

Every problem raises :class:`ScenarioError` with a single line that names the file, the phase and the
field, e.g. ``default.toml: phase 3 'mn1-out': move.to: unknown network 'wlan3' (networks: office, ...)``.
``Scenario.to_dict()`` is what experiments store in ``config.json``; ``Scenario.from_dict`` reads it back
(plots need no TOML file); ``dumps`` writes the TOML form again.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace

import tomli_w

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from topologies.addressing import ACCESS_NETWORKS, MAX_MOBILE_NODES

SCENARIO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios")
DEFAULT_SCENARIO = os.path.join(SCENARIO_DIR, "default.toml")
NETWORKS = ("office", *ACCESS_NETWORKS)
OFFICE_ENDPOINTS = ("fs", "d1", "d2", "lap")
TRAFFIC_KINDS = ("tcp", "udp", "probe")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
MAX_DURATION_S = 3600.0
TOP_KEYS = {"name", "description", "mobile_nodes", "quick_scale", "quick_min_phase_s", "quick_min_traffic_s",
            "start", "probe", "phase"}
PHASE_KEYS = {"name", "duration_s", "move", "traffic", "note"}
MOVE_KEYS = {"node", "to", "at_s"}
TRAFFIC_KEYS = {"kind", "from", "to", "start_s", "duration_s", "rate_mbit", "quick"}
PROBE_KEYS = {"between", "rate_hz"}


class ScenarioError(ValueError):
    """A scenario that cannot be run; the message is one line naming the file, phase and field."""


@dataclass(frozen=True)
class Move:
    node: str
    to: str
    at_s: float = 0.0            # offset into the phase
    origin: str = ""             # where the node was (filled in by validation)


@dataclass(frozen=True)
class Traffic:
    kind: str
    src: str
    dst: str
    start_s: float = 0.0
    duration_s: float | None = None   # None: to the end of the phase
    rate_mbit: float | None = None    # udp only
    quick: bool = True                # kept in the quick form

    @property
    def flow(self) -> str:
        return f"{self.src}->{self.dst}"


@dataclass(frozen=True)
class Probe:
    between: tuple[str, str]
    rate_hz: float = 50.0

    @property
    def pair(self) -> str:
        return f"{self.between[0]}-{self.between[1]}"


@dataclass(frozen=True)
class Phase:
    name: str
    duration_s: float
    moves: tuple[Move, ...] = ()
    traffic: tuple[Traffic, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    phases: tuple[Phase, ...]
    mobile_nodes: int = 2
    start: dict = field(default_factory=dict)       # node -> network
    probes: tuple[Probe, ...] = ()
    description: str = ""
    quick_scale: float = 0.25
    quick_min_phase_s: float = 2.0
    quick_min_traffic_s: float = 0.0
    source: str = "<scenario>"

    @property
    def nodes(self) -> list[str]:
        return [f"mn{i}" for i in range(1, self.mobile_nodes + 1)]

    @property
    def duration_s(self) -> float:
        return sum(p.duration_s for p in self.phases)

    def phase_starts(self) -> dict[str, float]:
        """Phase name -> planned start, in seconds from the start of the scenario."""
        starts, t = {}, 0.0
        for phase in self.phases:
            starts[phase.name] = t
            t += phase.duration_s
        return starts

    def moves(self) -> list[tuple[str, float, Move]]:
        """(phase name, planned time from the scenario start, move) for every move, in order."""
        starts = self.phase_starts()
        return [(p.name, starts[p.name] + m.at_s, m) for p in self.phases for m in p.moves]

    def attachments(self, phase: str) -> dict[str, str]:
        """Where every node is at the end of the named phase."""
        where = dict(self.start)
        for p in self.phases:
            for m in p.moves:
                where[m.node] = m.to
            if p.name == phase:
                return where
        raise ScenarioError(f"{self.source}: no phase named {phase!r}")

    def scaled(self, factor: float, min_phase_s: float = 0.0, min_traffic_s: float = 0.0) -> "Scenario":
        """Every duration and offset multiplied by ``factor``; phases kept at least ``min_phase_s`` long; a
        traffic item left shorter than ``min_traffic_s`` gets that long (or its original length if shorter),
        and its phase is lengthened at the end to hold it (moves and starts keep their offsets)."""
        if not factor > 0:
            raise ScenarioError(f"{self.source}: scale factor must be positive, not {factor!r}")
        phases = []
        for p in self.phases:
            duration = max(p.duration_s * factor, min(min_phase_s, p.duration_s))
            ratio = duration / p.duration_s
            traffic = []
            for t in p.traffic:
                start = round(t.start_s * ratio, 3)
                original = t.duration_s if t.duration_s is not None else p.duration_s - t.start_s
                length = (t.duration_s if t.duration_s is not None else p.duration_s - t.start_s) * ratio
                if length < min(min_traffic_s, original):
                    length = min(min_traffic_s, original)
                    duration = max(duration, start + length)
                traffic.append(replace(t, start_s=start,
                                       duration_s=None if t.duration_s is None else round(length, 3)))
            phases.append(replace(
                p, duration_s=round(duration, 3),
                moves=tuple(replace(m, at_s=round(m.at_s * ratio, 3)) for m in p.moves), traffic=tuple(traffic)))
        return replace(self, phases=tuple(phases))

    def quick(self) -> "Scenario":
        """The short form for ``--quick`` (CI): without the traffic marked ``quick = false``, scaled by the
        file's own quick_scale, quick_min_phase_s and quick_min_traffic_s."""
        kept = tuple(replace(p, traffic=tuple(t for t in p.traffic if t.quick)) for p in self.phases)
        return replace(self, phases=kept).scaled(self.quick_scale, self.quick_min_phase_s, self.quick_min_traffic_s)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "description": self.description, "mobile_nodes": self.mobile_nodes,
            "quick_scale": self.quick_scale, "quick_min_phase_s": self.quick_min_phase_s,
            "quick_min_traffic_s": self.quick_min_traffic_s, "start": dict(self.start),
            "probe": [{"between": list(p.between), "rate_hz": p.rate_hz} for p in self.probes],
            "phase": [_phase_dict(p) for p in self.phases],
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "Scenario":
        return _build(data, source)


def _phase_dict(p: Phase) -> dict:
    out: dict = {"name": p.name, "duration_s": p.duration_s}
    if p.moves:
        out["move"] = [{"node": m.node, "to": m.to, **({"at_s": m.at_s} if m.at_s else {})} for m in p.moves]
    if p.traffic:
        out["traffic"] = []
        for t in p.traffic:
            item = {"kind": t.kind, "from": t.src, "to": t.dst}
            if t.start_s:
                item["start_s"] = t.start_s
            if t.duration_s is not None:
                item["duration_s"] = t.duration_s
            if t.rate_mbit is not None:
                item["rate_mbit"] = t.rate_mbit
            if not t.quick:
                item["quick"] = False
            out["traffic"].append(item)
    if p.note:
        out["note"] = p.note
    return out


# ------------------------------------------------------------------------------------------------------
# Loading and validation


def load(path: str) -> Scenario:
    """Read and validate a scenario file."""
    label = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read scenario file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(f"{label}: not UTF-8 text") from None
    return loads(text, label)


def load_default() -> Scenario:
    return load(DEFAULT_SCENARIO)


def loads(text: str, source: str = "<string>") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    return _build(data, source)


def _number(value, where: str, *, positive: bool = False, minimum: float = 0.0,
            maximum: float = MAX_DURATION_S) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScenarioError(f"{where} must be a number, not {value!r}")
    if positive and value <= 0:
        raise ScenarioError(f"{where} must be positive, not {value!r}")
    if value < minimum or value > maximum:
        raise ScenarioError(f"{where} must be between {minimum:g} and {maximum:g}, not {value!r}")
    return float(value)


def _unknown(keys, known: set, where: str) -> None:
    extra = sorted(set(keys) - known)
    if extra:
        raise ScenarioError(f"{where}: unknown field(s) {', '.join(extra)} (known: {', '.join(sorted(known))})")


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where} must be a table like {{key = value}}, not {value!r}")
    return value


def _build(data: dict, source: str) -> Scenario:
    _unknown(data, TOP_KEYS, source)
    name = data.get("name", os.path.splitext(source)[0] if source.endswith(".toml") else "")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ScenarioError(f"{source}: name must be 1-40 letters, digits, '-' or '_', not {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{source}: description must be text")
    count = data.get("mobile_nodes", 2)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_MOBILE_NODES:
        raise ScenarioError(f"{source}: mobile_nodes must be a whole number from 1 to {MAX_MOBILE_NODES}, "
                            f"not {count!r}")
    nodes = [f"mn{i}" for i in range(1, count + 1)]
    quick_scale = _number(data.get("quick_scale", 0.25), f"{source}: quick_scale", positive=True, maximum=1.0)
    quick_min = _number(data.get("quick_min_phase_s", 2.0), f"{source}: quick_min_phase_s")
    quick_traffic = _number(data.get("quick_min_traffic_s", 0.0), f"{source}: quick_min_traffic_s")

    start_raw = _table(data.get("start", {}), f"{source}: start")
    start = {}
    for node, network in start_raw.items():
        if node not in nodes:
            raise ScenarioError(f"{source}: start.{node}: unknown node (nodes: {', '.join(nodes)})")
        if network not in NETWORKS:
            raise ScenarioError(f"{source}: start.{node}: unknown network {network!r} "
                                f"(networks: {', '.join(NETWORKS)})")
        start[node] = network
    for node in nodes:
        start.setdefault(node, "office")

    endpoints = nodes + list(OFFICE_ENDPOINTS)
    probes = []
    raw_probes = data.get("probe", [])
    if not isinstance(raw_probes, list):
        raise ScenarioError(f"{source}: probe must be an array of tables ([[probe]])")
    for i, item in enumerate(raw_probes, 1):
        where = f"{source}: probe {i}"
        item = _table(item, where)
        _unknown(item, PROBE_KEYS, where)
        between = item.get("between")
        if not isinstance(between, list) or len(between) != 2 or not all(isinstance(e, str) for e in between):
            raise ScenarioError(f"{where}: between must name two endpoints, e.g. [\"mn1\", \"mn2\"]")
        for e in between:
            if e not in endpoints:
                raise ScenarioError(f"{where}: between: unknown endpoint {e!r} (endpoints: {', '.join(endpoints)})")
        if between[0] == between[1]:
            raise ScenarioError(f"{where}: between: both ends are {between[0]!r}")
        rate = _number(item.get("rate_hz", 50.0), f"{where}: rate_hz", positive=True, maximum=1000)
        probes.append(Probe((between[0], between[1]), rate))

    raw_phases = data.get("phase")
    if not isinstance(raw_phases, list) or not raw_phases:
        raise ScenarioError(f"{source}: no phases (add at least one [[phase]] with name and duration_s)")
    phases, seen, where_now = [], set(), dict(start)
    for i, item in enumerate(raw_phases, 1):
        label = f"{source}: phase {i}"
        item = _table(item, label)
        pname = item.get("name")
        if not isinstance(pname, str) or not NAME_RE.match(pname):
            raise ScenarioError(f"{label}: name must be 1-40 letters, digits, '-' or '_', not {pname!r}")
        label = f"{source}: phase {i} {pname!r}"
        _unknown(item, PHASE_KEYS, label)
        if pname in seen:
            raise ScenarioError(f"{label}: name: used by an earlier phase too")
        seen.add(pname)
        if "duration_s" not in item:
            raise ScenarioError(f"{label}: duration_s: missing")
        duration = _number(item["duration_s"], f"{label}: duration_s", positive=True)

        raw_moves = item.get("move", [])
        if isinstance(raw_moves, dict):
            raw_moves = [raw_moves]
        if not isinstance(raw_moves, list):
            raise ScenarioError(f"{label}: move must be {{node = ..., to = ...}} or a list of them")
        moves, moved = [], set()
        for m in raw_moves:
            m = _table(m, f"{label}: move")
            _unknown(m, MOVE_KEYS, f"{label}: move")
            node, to = m.get("node"), m.get("to")
            if node not in nodes:
                raise ScenarioError(f"{label}: move.node: unknown node {node!r} (nodes: {', '.join(nodes)})")
            if to not in NETWORKS:
                raise ScenarioError(f"{label}: move.to: unknown network {to!r} (networks: {', '.join(NETWORKS)})")
            if node in moved:
                raise ScenarioError(f"{label}: move: {node} moves twice in one phase (split the phase)")
            if where_now[node] == to:
                raise ScenarioError(f"{label}: move: {node} is already in {to}")
            at = _number(m.get("at_s", 0.0), f"{label}: move.at_s")
            if at >= duration:
                raise ScenarioError(f"{label}: move.at_s={at:g} is not inside the phase ({duration:g} s)")
            moves.append(Move(node, to, at, where_now[node]))
            moved.add(node)
            where_now[node] = to

        raw_traffic = item.get("traffic", [])
        if not isinstance(raw_traffic, list):
            raise ScenarioError(f"{label}: traffic must be a list of {{kind = ..., from = ..., to = ...}}")
        traffic = []
        for t in raw_traffic:
            t = _table(t, f"{label}: traffic")
            _unknown(t, TRAFFIC_KEYS, f"{label}: traffic")
            kind = t.get("kind")
            if kind not in TRAFFIC_KINDS:
                raise ScenarioError(f"{label}: traffic.kind: {kind!r} is not one of {', '.join(TRAFFIC_KINDS)}")
            src, dst = t.get("from"), t.get("to")
            for key, e in (("from", src), ("to", dst)):
                if e not in endpoints:
                    raise ScenarioError(f"{label}: traffic.{key}: unknown endpoint {e!r} "
                                        f"(endpoints: {', '.join(endpoints)})")
            if src == dst:
                raise ScenarioError(f"{label}: traffic: from and to are both {src!r}")
            t_start = _number(t.get("start_s", 0.0), f"{label}: traffic.start_s")
            t_len = t.get("duration_s")
            if t_len is not None:
                t_len = _number(t_len, f"{label}: traffic.duration_s", positive=True)
            if t_start + (t_len or 0.0) > duration + 1e-9 or t_start >= duration:
                raise ScenarioError(f"{label}: traffic {src}->{dst}: start_s + duration_s run past the phase "
                                    f"({duration:g} s)")
            rate = t.get("rate_mbit")
            if kind == "udp":
                rate = _number(rate if rate is not None else 10.0, f"{label}: traffic.rate_mbit",
                               positive=True, maximum=10000)
            elif rate is not None:
                raise ScenarioError(f"{label}: traffic.rate_mbit: only udp traffic has a rate")
            quick = t.get("quick", True)
            if not isinstance(quick, bool):
                raise ScenarioError(f"{label}: traffic.quick must be true or false, not {quick!r}")
            traffic.append(Traffic(kind, src, dst, t_start, t_len, rate, quick))
        note = item.get("note", "")
        if not isinstance(note, str):
            raise ScenarioError(f"{label}: note must be text")
        phases.append(Phase(pname, duration, tuple(moves), tuple(traffic), note))

    return Scenario(name=name, phases=tuple(phases), mobile_nodes=count, start=start, probes=tuple(probes),
                    description=description, quick_scale=quick_scale, quick_min_phase_s=quick_min,
                    quick_min_traffic_s=quick_traffic, source=source)


# ------------------------------------------------------------------------------------------------------
# Writing


def dumps(scenario: Scenario) -> str:
    """The scenario as TOML text that :func:`loads` reads back to an equal scenario."""
    return tomli_w.dumps(scenario.to_dict())
