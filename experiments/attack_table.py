"""Attacks as data: read and check the attack files of ``experiments/attacks.py`` (no Mininet, no root).

One TOML file holds ``[[attack]]`` tables::

    [[attack]]
    name = "esp-replay"                  # unique, [a-z0-9-]
    from = "wlan1"                       # wlan1 | wlan2 | cell | core | compromised:mnN | control
    kind = "esp_replay"                  # a builder of experiments/attacks.py (KINDS)
    params = { target = "sg" }           # the builder's parameters (checked by the builder's schema)
    expect = "dropped as a replay"       # the expected behaviour, in words (the README table's column)
    rise = { "sg:ipsec.counters.replay" = 1 }   # counters that must rise by at least this much
    unchanged = ["mn1:mobility.care_of_address"] # status values that must stay as they were
    bindings = ["ha:mn2", "sg:mn2"]      # the victim's binding at these nodes keeps its care-of address
    traffic = 0.8                        # reply fraction every probe flow keeps during the attack
    plans = ["private", "public"]        # optional: only in these address plans
    vcm = ["in-sg", "host"]              # optional: only with these VCM placements

Counters and status values are ``node:path``: ``path`` is dotted into the node's status
(``ipsec.counters.replay``), or a bare counter name summed over every ``counters`` section of the status
(``clear_dropped``). ``@vcm`` as the node is the SG with the VCM built in, the host ``vcm`` otherwise.
Every problem is an :class:`AttackFileError` whose one line names the file, the entry and the field.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

try:
    import tomllib
except ModuleNotFoundError:   # Python < 3.11
    import tomli as tomllib

PLACES = ("wlan1", "wlan2", "cell", "core", "control")
PLANS = ("private", "public")
VCM_PLACEMENTS = ("in-sg", "host")
NODES = ("sg", "ha", "xha", "cn", "vcm", "@vcm")
BINDING_NODES = ("ha", "sg", "xha")
FIELDS = ("name", "from", "kind", "params", "expect", "rise", "unchanged", "bindings", "traffic", "plans", "vcm")
REQUIRED = ("name", "from", "kind", "expect")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
MN_RE = re.compile(r"^mn[1-9][0-9]{0,2}$")
PATH_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


class AttackFileError(ValueError):
    """A malformed attack file or entry; the message is one line naming the file, entry and field."""


@dataclass(frozen=True)
class Attack:
    name: str
    source: str                 # place, "compromised:mnN" or "control"
    kind: str
    params: dict
    expect: str
    rise: dict = field(default_factory=dict)          # "node:path" -> minimum increase
    unchanged: tuple = ()                             # "node:path"
    bindings: tuple = ()                              # "node:mnN"
    traffic: float | None = None
    plans: tuple = PLANS
    vcm: tuple = VCM_PLACEMENTS
    file: str = ""

    @property
    def compromised(self) -> str | None:
        return self.source.split(":", 1)[1] if self.source.startswith("compromised:") else None

    def applies(self, plan: str, vcm: str) -> bool:
        return plan in self.plans and vcm in self.vcm


def _node_ok(node: str, mobile_nodes: int) -> bool:
    if node in NODES:
        return True
    return bool(MN_RE.match(node)) and int(node[2:]) <= mobile_nodes


def _names_list(where: str, key: str, value, allowed) -> tuple:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise AttackFileError(f"{where}: {key}: a non-empty list of names among {', '.join(allowed)}")
    for v in value:
        if v not in allowed:
            raise AttackFileError(f"{where}: {key}: {v!r} is not one of {', '.join(allowed)}")
    return tuple(value)


def _node_path(where: str, key: str, text, mobile_nodes: int) -> str:
    if not isinstance(text, str) or ":" not in text:
        raise AttackFileError(f"{where}: {key}: {text!r} is not node:path (e.g. sg:ipsec.counters.replay)")
    node, path = text.split(":", 1)
    if not _node_ok(node, mobile_nodes):
        raise AttackFileError(f"{where}: {key}: {text!r}: unknown node {node!r} "
                              f"(sg, ha, xha, cn, vcm, @vcm, mn1..mn{mobile_nodes})")
    if not PATH_RE.match(path):
        raise AttackFileError(f"{where}: {key}: {text!r}: the path must be dotted names")
    return text


def parse_attack(entry, where: str, kinds: dict, mobile_nodes: int = 2, file: str = "") -> Attack:
    """One ``[[attack]]`` table -> Attack. ``kinds`` maps each kind to its parameter schema
    {param: (type or tuple of types, required)}; ``where`` names the entry in errors."""
    if not isinstance(entry, dict):
        raise AttackFileError(f"{where}: an attack must be a table")
    name = entry.get("name")
    if isinstance(name, str) and NAME_RE.match(name):
        where = f"{where} ({name})"
    for key in REQUIRED:
        if key not in entry:
            raise AttackFileError(f"{where}: {key}: missing")
    unknown = sorted(k for k in entry if k not in FIELDS)
    if unknown:
        raise AttackFileError(f"{where}: {unknown[0]}: unknown field (fields: {', '.join(FIELDS)})")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise AttackFileError(f"{where}: name: {name!r} must be 1-48 characters of a-z, 0-9 and -")
    source = entry["from"]
    if not isinstance(source, str) or not (source in PLACES or (
            source.startswith("compromised:") and MN_RE.match(source[12:]) and int(source[14:]) <= mobile_nodes)):
        raise AttackFileError(f"{where}: from: {source!r} is not one of {', '.join(PLACES)} "
                              f"or compromised:mn1..mn{mobile_nodes}")
    kind = entry["kind"]
    if kind not in kinds:
        raise AttackFileError(f"{where}: kind: {kind!r} is not one of {', '.join(sorted(kinds))}")
    params = entry.get("params", {})
    if not isinstance(params, dict):
        raise AttackFileError(f"{where}: params: must be a table")
    schema = kinds[kind]
    for key, value in params.items():
        if key not in schema:
            raise AttackFileError(f"{where}: params.{key}: unknown parameter of {kind} "
                                  f"(parameters: {', '.join(sorted(schema)) or 'none'})")
        types, _required = schema[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise AttackFileError(f"{where}: params.{key}: {value!r} has the wrong type")
        if not isinstance(value, types):
            raise AttackFileError(f"{where}: params.{key}: {value!r} has the wrong type")
    for key, (_types, required) in schema.items():
        if required and key not in params:
            raise AttackFileError(f"{where}: params.{key}: missing (needed by {kind})")
    expect = entry["expect"]
    if not isinstance(expect, str) or not expect.strip() or "\n" in expect or "|" in expect:
        raise AttackFileError(f"{where}: expect: one line of text without '|'")
    rise = entry.get("rise", {})
    if not isinstance(rise, dict):
        raise AttackFileError(f"{where}: rise: must be a table of \"node:counter\" = minimum increase")
    for key, minimum in rise.items():
        _node_path(where, "rise", key, mobile_nodes)
        if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
            raise AttackFileError(f"{where}: rise: {key!r}: the minimum increase must be a whole number >= 1")
    unchanged = entry.get("unchanged", [])
    if not isinstance(unchanged, list):
        raise AttackFileError(f"{where}: unchanged: must be a list of \"node:path\"")
    for text in unchanged:
        _node_path(where, "unchanged", text, mobile_nodes)
    bindings = entry.get("bindings", [])
    if not isinstance(bindings, list):
        raise AttackFileError(f"{where}: bindings: must be a list of \"node:mnN\"")
    for text in bindings:
        node, _, mn = text.partition(":") if isinstance(text, str) else ("", "", "")
        if node not in BINDING_NODES or not MN_RE.match(mn) or int(mn[2:]) > mobile_nodes:
            raise AttackFileError(f"{where}: bindings: {text!r} is not node:mnN with node one of "
                                  f"{', '.join(BINDING_NODES)} and mnN up to mn{mobile_nodes}")
    traffic = entry.get("traffic")
    if traffic is not None and (isinstance(traffic, bool) or not isinstance(traffic, (int, float))
                                or not 0 <= traffic <= 1):
        raise AttackFileError(f"{where}: traffic: {traffic!r} must be a reply fraction from 0 to 1")
    plans = _names_list(where, "plans", entry["plans"], PLANS) if "plans" in entry else PLANS
    vcm = _names_list(where, "vcm", entry["vcm"], VCM_PLACEMENTS) if "vcm" in entry else VCM_PLACEMENTS
    if not (rise or unchanged or bindings or traffic is not None):
        raise AttackFileError(f"{where}: rise: an attack needs at least one of rise, unchanged, bindings, traffic")
    return Attack(name=name, source=source, kind=kind, params=dict(params), expect=expect.strip(), rise=dict(rise),
                  unchanged=tuple(unchanged), bindings=tuple(bindings),
                  traffic=float(traffic) if traffic is not None else None, plans=plans, vcm=vcm, file=file)


def parse_text(text: str, file: str, kinds: dict, mobile_nodes: int = 2) -> list[Attack]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AttackFileError(f"{file}: not valid TOML: {exc}") from None
    unknown = sorted(k for k in data if k != "attack")
    if unknown:
        raise AttackFileError(f"{file}: {unknown[0]}: unknown top-level key (only [[attack]] tables)")
    entries = data.get("attack")
    if not isinstance(entries, list) or not entries:
        raise AttackFileError(f"{file}: attack: no [[attack]] tables")
    return [parse_attack(e, f"{file}: attack {i + 1}", kinds, mobile_nodes, file) for i, e in enumerate(entries)]


def load(paths, kinds: dict, mobile_nodes: int = 2) -> list[Attack]:
    """Every attack of the files, in order; names must be unique across them."""
    attacks, seen = [], {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise AttackFileError(f"{path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise AttackFileError(f"{path}: not UTF-8 text") from None
        for attack in parse_text(text, path, kinds, mobile_nodes):
            if attack.name in seen:
                raise AttackFileError(f"{path}: attack {attack.name}: name: also used in {seen[attack.name]}")
            seen[attack.name] = path
            attacks.append(attack)
    return attacks
