"""The results folder of an experiment: tidy tables, an event log, a configuration, and a summary.

One run writes ``results/<name>-<YYYYmmdd-HHMMSS>/``::

    config.json      everything needed to rerun and to redraw: {"experiment", "complete", "argv", "seed",
                     "strategies": [...], "scenario": Scenario.to_dict(), "topology": {"plan":
                     AddressPlan.as_dict(), "addresses": {address: node name}, "seed", "link_settings":
                     {link: EmulatedLink settings, with the seed its emulator draws from}, "link_params":
                     {...}, "link_backend": {strategy: per-link backends, parameters and counters}},
                     "versions"}
    events.jsonl     one JSON object per line: {"time": epoch seconds, "node": who, "event": what, ...}
    rtt.csv          one row per probe (tidy; lost probes have an empty rtt_ms and lost=1)
    throughput.csv   one row per bulk transfer
    handovers.csv    one row per move and strategy
    counters.csv     long format: one number per strategy x phase x metric x detail
    summary.csv      one row per strategy x phase (computed by :func:`summarise` from the files above)
    summary.md       the headline tables in Markdown

Times in the CSV files (``t``, ``t_start``, ``t_move``) are seconds since that strategy's scenario started
(its ``strategy_start`` event), so strategies run one after another line up on one axis.

Experiment events (written by the experiment itself, ``node`` is "experiment" unless said otherwise)::

    {"event": "strategy_start", "strategy": "vcm"}
    {"event": "phase_start", "strategy": "vcm", "phase": "mn1-out"}
    {"event": "move", "strategy": "vcm", "phase": "mn1-out", "node": "mn1", "from": "office", "to": "wlan1"}
    {"event": "strategy_end", "strategy": "vcm", "complete": true}
    {"event": "pause", "strategy": "vcm", "phase": "mn1-out", "until": epoch seconds}   (``--cli``: the lab
        shell was open before that phase; the time up to ``until`` belongs to no phase)

Node events without a ``strategy`` field belong to the strategy whose start..end window holds their time.
Nodes log their signalling in neutral terms: a VCM control message as ``{"time": ..., "node": sender,
"event": "vcm_message", "peer": receiver, "type": "KEYS", "bytes": 180}`` (``"received": true`` on a
receiver's copy), a Mobile IPv6 message as ``mobility_sent``. Only this module names them after the
signalling diagram's steps, :data:`MESSAGE_KINDS` (the sequence chart's arrows and the counters' detail):
:func:`message_event` picks the step from the type, sender and receiver, :func:`signalling_message` reads an
event. Runs recorded before nodes logged neutrally hold events named after the kinds themselves
(``{"event": "keys_206", "node": sender, "to": receiver}``); they read the same.

Counter metrics (``counters.csv``, column ``metric``; ``detail`` says more, e.g. the message type or link):
:data:`COUNTER_METRICS`.
"""
from __future__ import annotations

import csv
import datetime
import json
import math
import os
from typing import Iterable, Optional

import pandas as pd
from tabulate import tabulate

from experiments.hostload import STARVED_PCT
from experiments.stats import confidence_interval
from nodeapps.probe.core import longest_gap
from nodeapps.runtime.events import read_json_lines

# name -> [(column, kind)]; kind is "str", "float", "int" or "bool" (written 0/1).
SCHEMAS: dict[str, list[tuple[str, str]]] = {
    "rtt": [("strategy", "str"), ("phase", "str"), ("pair", "str"), ("t", "float"), ("seq", "int"),
            ("rtt_ms", "float"), ("owd_ms", "float"), ("lost", "bool"), ("path", "str")],
    "throughput": [("strategy", "str"), ("phase", "str"), ("flow", "str"), ("protocol", "str"),
                   ("t_start", "float"), ("duration_s", "float"), ("mbit_s", "float"), ("retransmits", "int"),
                   ("loss_pct", "float"), ("path", "str"), ("samples", "int"), ("ci95_mbit_s", "float"),
                   ("intervals_mbit_s", "str")],
    "handovers": [("strategy", "str"), ("node", "str"), ("from", "str"), ("to", "str"), ("phase", "str"),
                  ("t_move", "float"), ("pair", "str"), ("gap_ms", "float"), ("lost_probes", "int"),
                  ("ro_setup_ms", "float")],
    "counters": [("strategy", "str"), ("phase", "str"), ("metric", "str"), ("detail", "str"),
                 ("value", "float")],
    "summary": [("strategy", "str"), ("phase", "str"), ("duration_s", "float"), ("pair", "str"),
                ("path", "str"), ("rtt_median_ms", "float"), ("rtt_p95_ms", "float"), ("rtt_samples", "int"),
                ("loss_pct", "float"), ("owd_median_ms", "float"), ("throughput_mbit_s", "float"),
                ("throughput_ci95_mbit_s", "float"), ("throughput_samples", "int"),
                ("emulation_overloaded", "str"), ("host_cpu_wait_pct", "float"),
                ("sg_relayed_packets", "int"), ("sg_relayed_bytes", "int"), ("sg_mn_office_packets", "int"),
                ("sg_mn_office_bytes", "int"), ("signalling_messages", "int"), ("signalling_bytes", "int"),
                ("plaintext_exposure_bytes", "int")],
}
PATHS = ("office", "via-sg", "via-ha", "direct")   # values of the path column ("" when unknown)
COUNTER_METRICS = {
    "sg_relayed_packets": "packets the SG relayed from one MN to another (each once, counted where it entered "
                          "the SG from an MN's tunnel, or left into one from an MN in the office; detail: mn-mn)",
    "sg_relayed_bytes": "bytes of those packets (the inner IPv6 packets, as decrypted or before encryption)",
    "sg_mn_office_packets": "packets between an MN's tunnel and the office other than MN-to-MN (detail: mn-office)",
    "sg_mn_office_bytes": "bytes of those packets",
    "signalling_messages": "control messages sent (detail: message kind, e.g. keys_206 or bu)",
    "signalling_bytes": "bytes of those messages on the wire",
    "plaintext_exposure_bytes": "payload marker bytes found in captures of public links (detail: link)",
    "handler_errors": "inputs whose handler raised, caught by the node app (detail: node; phase: end, the "
                      "node's count as it exited; a node that did not exit cleanly has no row)",
    "host_cpu_wait_pct": "share of the time (%) the lab's most starved process (node app, link emulator) sat "
                         "runnable without a CPU, per sampling interval (detail: median or peak over the phase)",
}
SUMMARY_COUNTERS = [m for m in COUNTER_METRICS if m not in ("handler_errors", "host_cpu_wait_pct")]

# Signalling messages drawn as arrows: event name -> (chart label, default sender, default receiver, meaning).
# The numbers are those of the signalling diagram the design follows; VCM message types in brackets.
MESSAGE_KINDS: dict[str, tuple[str, str, Optional[str], str]] = {
    "report_202": ("202 report", "sg", "vcm", "SG reports an MN's external address or a session [REPORT]"),
    "ack_204": ("204 ack", "vcm", "sg", "VCM acknowledges a report [REPORT_ACK]"),
    "keys_206": ("206 keys", "vcm", "mn2", "keys for the MN1-MN2 SA pair and MN1's address, to MN2 [KEYS]"),
    "keys_210": ("210 keys", "vcm", "mn1", "keys for the SA pair and MN2's address, to MN1 [KEYS]"),
    "ack_208": ("208 ack", "mn2", "vcm", "MN2 installed its inbound SA; the VCM relays it to MN1 "
                                         "[KEYS_ACK, then PEER_READY]"),
    "ack_212": ("212 ack", "mn1", "vcm", "MN1 installed its inbound SA; the VCM relays it to MN2 "
                                         "[KEYS_ACK, then PEER_READY]"),
    "peer_ready_ack": ("ready ack", None, "vcm", "an MN confirms a relayed 208/212 [PEER_READY_ACK]"),
    "fallback": ("fallback", "vcm", None, "peer went back inside: use the SG SA again [FALLBACK]"),
    "fallback_ack": ("fallback ack", None, "vcm", "[FALLBACK_ACK]"),
    "restarted": ("restarted", None, "vcm", "an MN's process started without direct SAs: its peers fall back "
                                            "and the pair is set up anew [RESTARTED]"),
    "restarted_ack": ("restarted ack", "vcm", None, "[RESTARTED_ACK]"),
    "unkeyed_peer": ("unkeyed peer", None, "vcm", "a peer's direct ESP arrives under an SA this MN does not hold: "
                                                  "the peer falls back and the pair is set up anew [UNKEYED_PEER]"),
    "unkeyed_peer_ack": ("unkeyed peer ack", "vcm", None, "[UNKEYED_PEER_ACK]"),
    "keys": ("keys", "vcm", None, "keys for a pair other than MN1-MN2 [KEYS]"),
    "bu": ("BU", None, None, "Mobile IPv6 binding update (RFC 6275 §6.1.7)"),
    "ba": ("BA", None, None, "binding acknowledgement (§6.1.8)"),
    "hoti": ("HoTI", None, None, "home test init (§6.1.3)"),
    "coti": ("CoTI", None, None, "care-of test init (§6.1.4)"),
    "hot": ("HoT", None, None, "home test (§6.1.5)"),
    "cot": ("CoT", None, None, "care-of test (§6.1.6)"),
    "be": ("BE", None, None, "binding error (§6.1.9)"),
    "brr": ("BRR", None, None, "binding refresh request (§6.1.2)"),
    "data_first_protected": ("first protected packet", None, None, "first user packet under the pair's new SA, "
                                                                   "through the home agents or direct (214/216)"),
    "data_first_direct": ("first direct packet", None, None, "first user packet on the direct SA pair "
                                                             "(the diagram's 220)"),
}
_MIPV6_NAMES = {"BU": "bu", "BA": "ba", "HOTI": "hoti", "COTI": "coti", "HOT": "hot", "COT": "cot", "BE": "be",
                "BRR": "brr"}
EXPERIMENT_EVENTS = ("strategy_start", "phase_start", "move", "strategy_end", "pause")


class RecordsError(ValueError):
    """A results folder or table that cannot be read or written; one line naming the file."""


def message_event(type_name: str, sender: str, receiver: str) -> str:
    """The chart's event name for a VCM protocol type (REPORT, KEYS, ...) or a MIPv6 message (BU, HoTI, ...)
    sent from ``sender`` to ``receiver`` (node names such as mn1, sg, vcm)."""
    t = type_name.upper()
    if t in _MIPV6_NAMES:
        return _MIPV6_NAMES[t]
    if t == "REPORT":
        return "report_202"
    if t == "REPORT_ACK":
        return "ack_204"
    if t == "KEYS":
        return {"mn2": "keys_206", "mn1": "keys_210"}.get(receiver, "keys")
    if t == "KEYS_ACK":   # first leg of 208 (from MN2) or 212 (from MN1)
        return {"mn2": "ack_208", "mn1": "ack_212"}.get(sender, "keys")
    if t == "PEER_READY":   # relayed leg: 208 goes on to MN1, 212 to MN2
        return {"mn1": "ack_208", "mn2": "ack_212"}.get(receiver, "keys")
    if t == "PEER_READY_ACK":
        return "peer_ready_ack"
    if t in ("FALLBACK", "FALLBACK_ACK", "RESTARTED", "RESTARTED_ACK", "UNKEYED_PEER", "UNKEYED_PEER_ACK"):
        return t.lower()
    raise RecordsError(f"unknown message type {type_name!r}")


def signalling_message(event: dict, addresses: Optional[dict] = None) -> Optional[dict]:
    """The signalling message an event records, as {"kind", "src", "dst", "bytes"} (``dst`` and ``bytes``
    may be None), or None. A ``vcm_message`` (``node`` sends to ``peer``) is named by :func:`message_event`;
    a receiver's record (``received``: the sender logged the message too) is left out. A node's
    ``mobility_sent`` event (``what`` = "BU seq 7 ...", "BA status 0 seq 7", "HoTI", ...) is named by its
    first word, and its receiver is the node that owns its ``dst`` address in ``addresses`` (address -> node
    name, config.json ``topology.addresses``). Events named after :data:`MESSAGE_KINDS` (older runs) are
    taken as they are (``node`` sends to ``to``, else the table's defaults)."""
    name = event.get("event")
    if name == "vcm_message":
        if event.get("received"):
            return None
        src, dst = event.get("node"), event.get("peer")
        try:
            kind = message_event(str(event.get("type")), str(src), str(dst))
        except RecordsError:
            return None   # a type this table does not chart
    elif name == "mobility_sent":
        word = str(event.get("what", "")).split(" ")[0].upper()
        if word not in _MIPV6_NAMES:
            return None
        kind = _MIPV6_NAMES[word]
        dst = (addresses or {}).get(str(event.get("dst", "")))
        src = event.get("node")
    elif name in MESSAGE_KINDS:
        if name in ("data_first_direct", "data_first_protected") or event.get("received"):
            return None   # not a message; or the receiver's record of one its sender logged too
        kind = name
        _label, default_src, default_dst, _meaning = MESSAGE_KINDS[name]
        src = event.get("node") or default_src
        dst = event.get("to") or default_dst
    else:
        return None
    size = event.get("bytes")
    return {"kind": kind, "src": src, "dst": dst, "bytes": int(size) if isinstance(size, (int, float)) else None}


# ------------------------------------------------------------------------------------------------------
# Folder, config and events


def new_folder(parent: str, name: str, stamp: Optional[str] = None) -> str:
    """Create ``parent/<name>-<stamp>`` (a suffix is added if that exists) and return its path."""
    stamp = stamp or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(parent, f"{name}-{stamp}")
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(parent, f"{name}-{stamp}-{n}")
    os.makedirs(path)
    return path


def versions() -> dict:
    """What produced a run, for config.json: Python, kernel, library versions and the git commit."""
    import platform
    import subprocess

    import matplotlib
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": platform.python_version(), "kernel": platform.release(), "pandas": pd.__version__,
            "matplotlib": matplotlib.__version__, "git_commit": commit}


def write_config(folder: str, config: dict) -> None:
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, default=str)
        f.write("\n")


def read_config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise RecordsError(f"{path}: missing (is {folder} a results folder?)") from None
    except json.JSONDecodeError as exc:
        raise RecordsError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None


def append_events(folder: str, events: Iterable[dict]) -> None:
    with open(os.path.join(folder, "events.jsonl"), "a", encoding="utf-8") as f:
        for event in events:
            f.write(json.dumps(event, separators=(",", ":"), default=str) + "\n")


def read_events(folder: str) -> list[dict]:
    """All events in time order; lines that are not JSON objects with a time and an event are skipped."""
    events = [event for event in read_json_lines(os.path.join(folder, "events.jsonl"))
              if isinstance(event.get("time"), (int, float)) and "event" in event]
    events.sort(key=lambda e: e["time"])
    return events


def strategy_windows(events: list[dict]) -> dict[str, tuple[float, float]]:
    """strategy -> (start, end) in epoch seconds, from strategy_start / strategy_end (end: last event)."""
    windows: dict[str, list] = {}
    last = events[-1]["time"] if events else 0.0
    for e in events:
        if e["event"] == "strategy_start":
            windows[e["strategy"]] = [e["time"], None]
        elif e["event"] == "strategy_end" and e.get("strategy") in windows:
            windows[e["strategy"]][1] = e["time"]
    ordered = sorted(windows.items(), key=lambda kv: kv[1][0])
    out = {}
    for i, (name, (start, end)) in enumerate(ordered):
        if end is None:
            end = ordered[i + 1][1][0] if i + 1 < len(ordered) else last
        out[name] = (start, end)
    return out


def events_by_strategy(events: list[dict]) -> dict[str, list[dict]]:
    """Events of each strategy with ``t`` (seconds since its start) added."""
    windows = strategy_windows(events)
    out: dict[str, list[dict]] = {s: [] for s in windows}
    for e in events:
        strategy = e.get("strategy")
        if strategy is None:
            strategy = next((s for s, (a, b) in windows.items() if a <= e["time"] <= b), None)
        if strategy in windows:
            out[strategy].append({**e, "t": e["time"] - windows[strategy][0]})
    return out


def phase_spans(folder: str, events: Optional[list[dict]] = None) -> pd.DataFrame:
    """strategy, phase, t_start, t_end (seconds since the strategy started), from phase_start events; a
    strategy without them gets the scenario's planned times from config.json."""
    events = read_events(folder) if events is None else events
    rows = []
    per = events_by_strategy(events)
    for strategy, evs in per.items():
        starts = [(e["phase"], e["t"]) for e in evs if e["event"] == "phase_start"]
        pauses = [e["t"] for e in evs if e["event"] == "pause"]
        end = next((e["t"] for e in evs if e["event"] == "strategy_end"), evs[-1]["t"] if evs else 0.0)
        for i, (phase, t) in enumerate(starts):
            t_end = starts[i + 1][1] if i + 1 < len(starts) else max(end, t)
            # A pause (the lab shell) before the next phase ends this one where it began.
            t_end = min([t_end] + [p for p in pauses if t <= p < t_end])
            rows.append({"strategy": strategy, "phase": phase, "t_start": t, "t_end": t_end})
    if not rows:
        try:
            config = read_config(folder)
        except RecordsError:
            config = {}
        scenario = config.get("scenario") or {}
        strategies = config.get("strategies") or list(per) or [""]
        for strategy in strategies:
            t = 0.0
            for phase in scenario.get("phase", []):
                rows.append({"strategy": strategy, "phase": phase["name"], "t_start": t,
                             "t_end": t + phase["duration_s"]})
                t += phase["duration_s"]
    return pd.DataFrame(rows, columns=["strategy", "phase", "t_start", "t_end"])


def moves(events: list[dict]) -> pd.DataFrame:
    rows = [{"strategy": s, "phase": e.get("phase", ""), "node": e.get("node"), "from": e.get("from"),
             "to": e.get("to"), "t": e["t"]}
            for s, evs in events_by_strategy(events).items() for e in evs if e["event"] == "move"]
    return pd.DataFrame(rows, columns=["strategy", "phase", "node", "from", "to", "t"])


# ------------------------------------------------------------------------------------------------------
# Tables


def _cell(value, kind: str):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if kind == "bool":
        return 1 if value else 0
    if kind == "int":
        return int(value)
    if kind == "float":
        return round(float(value), 6)
    return str(value)


def handler_error_rows(strategy: str, handler_errors: dict) -> list[dict]:
    """counters.csv rows of the nodes' final handler_errors (``SvpnLab.handler_errors()`` after stop)."""
    return [{"strategy": strategy, "phase": "end", "metric": "handler_errors", "detail": node, "value": count}
            for node, count in sorted(handler_errors.items())]


def append_rows(folder: str, table: str, rows) -> int:
    """Append rows (dicts or a DataFrame) to ``<table>.csv``, writing the header first if the file is new.
    Unknown columns are an error; missing ones stay empty. Returns the number of rows written."""
    if table not in SCHEMAS:
        raise RecordsError(f"unknown table {table!r} (tables: {', '.join(SCHEMAS)})")
    schema = SCHEMAS[table]
    names = [c for c, _ in schema]
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    path = os.path.join(folder, f"{table}.csv")
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    count = 0
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(names)
        for row in rows:
            unknown = set(row) - set(names)
            if unknown:
                raise RecordsError(f"{table}.csv: unknown column(s) {', '.join(sorted(unknown))}")
            writer.writerow([_cell(row.get(c), kind) for c, kind in schema])
            count += 1
    return count


def write_table(folder: str, table: str, rows) -> int:
    """Replace ``<table>.csv`` with these rows."""
    path = os.path.join(folder, f"{table}.csv")
    if os.path.exists(path):
        os.remove(path)
    return append_rows(folder, table, rows)


def read_table(folder: str, table: str) -> pd.DataFrame:
    """A table with its schema's types (floats NaN where empty, bools as bool); missing file -> empty."""
    if table not in SCHEMAS:
        raise RecordsError(f"unknown table {table!r} (tables: {', '.join(SCHEMAS)})")
    schema = SCHEMAS[table]
    path = os.path.join(folder, f"{table}.csv")
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(k)) for c, k in schema})
    try:
        df = pd.read_csv(path, dtype={c: "string" for c, k in schema if k == "str"}, keep_default_na=False,
                         na_values={c: [""] for c, k in schema if k != "str"})
    except (pd.errors.ParserError, ValueError) as exc:
        raise RecordsError(f"{path}: cannot read ({exc})") from None
    for c, kind in schema:
        if c not in df.columns:
            df[c] = pd.Series(dtype=_dtype(kind))
        elif kind == "str":
            df[c] = df[c].astype(str)
        elif kind == "bool":
            df[c] = df[c].fillna(0).astype(int).astype(bool)
        elif kind == "int":
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
        else:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df[[c for c, _ in schema]]


def _dtype(kind: str) -> str:
    return {"str": "object", "float": "float64", "int": "Int64", "bool": "bool"}[kind]


# ------------------------------------------------------------------------------------------------------
# Building rows from raw records


def phase_finder(spans: pd.DataFrame, strategy: str):
    """``t -> phase name`` for one strategy: the first span holding ``t``, else the last span begun by
    then, else ``""``; a time between two spans (a pause) belongs to none. The table is read once, so it suits per-packet and per-probe loops (a scenario has a
    handful of phases: a plain scan is enough)."""
    own = spans[spans.strategy == strategy]
    table = list(zip(own.t_start.tolist(), own.t_end.tolist(), (str(p) for p in own.phase)))

    def find(t: float) -> str:
        begun = ""
        for start, end, name in table:
            if start <= t:
                if t < end:
                    return name
                begun = name
            elif begun:
                return ""
        return begun
    return find


def phase_at(spans: pd.DataFrame, strategy: str, t: float) -> str:
    return phase_finder(spans, strategy)(t)


def probe_rows(records: Iterable[dict], *, strategy: str, pair: str, t0: float, spans: pd.DataFrame,
               path_of=None) -> list[dict]:
    """rtt.csv rows from the probe sender's JSON records (``nodeapps.probe``); ``path_of(t)`` may name the
    path at time ``t`` (seconds since the strategy started). Pending probes are left out."""
    rows = []
    phase_of = phase_finder(spans, strategy)
    for r in records:
        if r.get("status") == "pending":
            continue
        t = r["t_sent"] - t0
        rows.append({"strategy": strategy, "phase": phase_of(t), "pair": pair, "t": t,
                     "seq": r["seq"], "rtt_ms": r.get("rtt_ms"), "owd_ms": r.get("owd_ms"),
                     "lost": r.get("status") == "lost", "path": path_of(t) if path_of else ""})
    return rows


def handover_rows(rtt: pd.DataFrame, move_table: pd.DataFrame, *, before_s: float = 0.5,
                  after_s: float = 3.0) -> list[dict]:
    """One handovers.csv row per move and strategy: the longest interval without a probe delivery
    (echo arrival = t + rtt) in [t_move - before_s, min(t_move + after_s, next move of that strategy)] on
    the first probed pair that includes the moving node; lost probes sent in that window are counted.
    ``ro_setup_ms``: from the move to the first answered probe sent on the direct path in that window
    (empty when the pair never went direct)."""
    rows = []
    for strategy, group in move_table.groupby("strategy", sort=False):
        group = group.sort_values("t").to_dict("records")
        for i, mv in enumerate(group):
            end = min(mv["t"] + after_s, group[i + 1]["t"] if i + 1 < len(group) else math.inf)
            mine = rtt[rtt.strategy == strategy]
            pairs = [p for p in dict.fromkeys(mine.pair) if mv["node"] in p.split("-")]
            pair = pairs[0] if pairs else ""
            probes = mine[mine.pair == pair]
            window = probes[(probes.t >= mv["t"] - before_s) & (probes.t <= end)]
            ok = window[~window.lost & window.rtt_ms.notna()]
            gap_ms = math.nan
            if pair:
                gap, _a, _b = longest_gap(list(ok.t + ok.rtt_ms / 1000.0), mv["t"] - before_s, end)
                gap_ms = gap * 1000.0
            direct = ok[(ok.path == "direct") & (ok.t >= mv["t"])]
            ro_setup_ms = (direct.t.min() - mv["t"]) * 1000.0 if not direct.empty else math.nan
            rows.append({"strategy": strategy, "node": mv["node"], "from": mv["from"], "to": mv["to"],
                         "phase": mv["phase"], "t_move": mv["t"], "pair": pair, "gap_ms": gap_ms,
                         "lost_probes": int(window.lost.sum()), "ro_setup_ms": ro_setup_ms})
    return rows


# ------------------------------------------------------------------------------------------------------
# Summary


def primary_pair(rtt: pd.DataFrame, config: dict) -> str:
    probes = (config.get("scenario") or {}).get("probe") or []
    if probes:
        return "-".join(probes[0]["between"])
    return str(rtt.pair.iloc[0]) if not rtt.empty else ""


def is_mn_to_mn(flow: str) -> bool:
    """A transfer between two mobile nodes ("mn1->mn2"), the flow the strategies differ in."""
    ends = str(flow).split("->")
    return len(ends) == 2 and all(e.startswith("mn") for e in ends)


def throughput_samples(flows: pd.DataFrame) -> list[float]:
    """The per-interval rates of these transfers (iperf3's reports), or each transfer's own mean where a
    record has none (older results)."""
    samples: list[float] = []
    for row in flows.itertuples(index=False):
        text = getattr(row, "intervals_mbit_s", "")
        values = [float(v) for v in str(text).split(";") if v.strip() and v.strip() != "nan"]
        samples += values or ([float(row.mbit_s)] if not math.isnan(float(row.mbit_s)) else [])
    return samples


def overloaded_links(config: dict) -> dict[str, list[dict]]:
    """Per strategy, the links whose emulator fell behind in its lab: {"link", "late_fraction",
    "max_late_ms"}. The emulators count lateness over the whole lab, so it marks every phase of it."""
    out: dict[str, list[dict]] = {}
    for strategy, meta in ((config.get("topology") or {}).get("link_backend") or {}).items():
        for report in (meta or {}).get("links") or []:
            if report.get("overloaded"):
                stats = report.get("stats") or {}
                out.setdefault(strategy, []).append({"link": report.get("link") or "?",
                                                     "late_fraction": stats.get("late_fraction", math.nan),
                                                     "max_late_ms": stats.get("max_late_ms", math.nan)})
    return out


def summarise(folder: str) -> pd.DataFrame:
    """summary.csv rows: one per strategy x phase, RTT statistics of the primary pair (the scenario's first
    probe), loss, median one-way delay, throughput of the phase's MN-to-MN transfers (mean of iperf3's
    interval rates with a Student-t 95 % half-width; the intervals of one transfer are not independent, so
    read it as a spread, not a guarantee), the links whose emulator was overloaded in that strategy's lab,
    and the counters summed."""
    try:
        config = read_config(folder)
    except RecordsError:
        config = {}
    rtt = read_table(folder, "rtt")
    thr = read_table(folder, "throughput")
    counters = read_table(folder, "counters")
    spans = phase_spans(folder)
    pair = primary_pair(rtt, config)
    overloaded = overloaded_links(config)
    rows = []
    for span in spans.itertuples(index=False):
        probes = rtt[(rtt.strategy == span.strategy) & (rtt.phase == span.phase) & (rtt.pair == pair)]
        ok = probes[~probes.lost]["rtt_ms"].dropna()
        paths = probes[~probes.lost].path
        paths = paths[paths != ""]
        flows = thr[(thr.strategy == span.strategy) & (thr.phase == span.phase) & thr.flow.map(is_mn_to_mn)]
        rate = confidence_interval(throughput_samples(flows))
        row = {"strategy": span.strategy, "phase": span.phase, "duration_s": span.t_end - span.t_start,
               "pair": pair, "path": paths.mode().iloc[0] if not paths.empty else "",
               "rtt_median_ms": ok.median() if not ok.empty else math.nan,
               "rtt_p95_ms": ok.quantile(0.95) if not ok.empty else math.nan,
               "rtt_samples": len(ok),
               "loss_pct": 100.0 * probes.lost.sum() / len(probes) if len(probes) else math.nan,
               "owd_median_ms": probes.owd_ms.dropna().median() if probes.owd_ms.notna().any() else math.nan,
               "throughput_mbit_s": rate.mean, "throughput_ci95_mbit_s": rate.half_width,
               "throughput_samples": rate.n,
               "emulation_overloaded": "; ".join(o["link"] for o in overloaded.get(span.strategy, []))}
        mine = counters[(counters.strategy == span.strategy) & (counters.phase == span.phase)]
        wait = mine[(mine.metric == "host_cpu_wait_pct") & (mine.detail == "median")].value
        row["host_cpu_wait_pct"] = wait.iloc[0] if not wait.empty else math.nan
        for metric in SUMMARY_COUNTERS:
            row[metric] = mine[mine.metric == metric].value.sum()
        rows.append(row)
    return pd.DataFrame(rows, columns=[c for c, _ in SCHEMAS["summary"]])


def _fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, (int,)) or (isinstance(value, float) and value.is_integer() and digits == 0):
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table: the first column (names) left-aligned, the figures right-aligned."""
    align = ["left"] + ["right"] * (len(header) - 1)
    return tabulate(rows, header, tablefmt="pipe", colalign=align, disable_numparse=True).splitlines()


def summary_markdown(summary: pd.DataFrame, config: dict, rtt: Optional[pd.DataFrame] = None,
                     counters: Optional[pd.DataFrame] = None) -> str:
    """Markdown: median RTT per phase and strategy, then whole-run figures per strategy (the overall
    median comes from ``rtt`` when given, else it is the sample-weighted mean of the phase medians), the
    SG's load per phase, and (from ``counters``) the signalling messages and bytes by type."""
    strategies = list(dict.fromkeys(summary.strategy))
    phases = list(dict.fromkeys(summary.phase))
    title = config.get("experiment", "experiment")
    scenario = (config.get("scenario") or {}).get("name", "")
    pair = summary.pair.iloc[0] if not summary.empty else ""
    out = [f"# {title}: {scenario}".rstrip(": "), ""]
    if not config.get("complete", True):
        out += ["**Incomplete run**: interrupted; the tables hold what was measured.", ""]
    overloaded = overloaded_links(config)
    out += overload_lines(overloaded)
    starved = starved_phases(summary)
    out += starved_lines(starved)
    out += [f"Median RTT {pair} in ms (path) per phase:", ""]
    body = []
    for phase in phases:
        cells = [phase]
        for s in strategies:
            r = summary[(summary.strategy == s) & (summary.phase == phase)]
            if r.empty:
                cells.append("–")
                continue
            r = r.iloc[0]
            path = f" ({r.path})" if r.path else ""
            warn = s in overloaded or (s, phase) in starved
            cells.append(_fmt(r.rtt_median_ms, 2) + path + (" ⚠" if warn else ""))
        body.append(cells)
    out += _md_table(["phase"] + strategies, body) + [""]
    out += ["MN-to-MN TCP throughput per phase, Mbit/s (mean of iperf3's interval rates ± 95 % half-width, "
            "n intervals):", ""]
    body = []
    for phase in phases:
        cells = [phase]
        for s in strategies:
            r = summary[(summary.strategy == s) & (summary.phase == phase)]
            if r.empty or not r.iloc[0].throughput_samples or pd.isna(r.iloc[0].throughput_samples):
                cells.append("–")
                continue
            r = r.iloc[0]
            spread = f" ± {_fmt(r.throughput_ci95_mbit_s, 1)}" if not math.isnan(r.throughput_ci95_mbit_s) else ""
            cells.append(f"{_fmt(r.throughput_mbit_s, 1)}{spread} (n={int(r.throughput_samples)})")
        body.append(cells)
    out += _md_table(["phase"] + strategies, body) + [""]
    out += ["Per strategy, whole run:", ""]
    body = []
    for s in strategies:
        g = summary[summary.strategy == s]
        if rtt is not None:
            mine = rtt[(rtt.strategy == s) & (rtt.pair == pair) & ~rtt.lost].rtt_ms.dropna()
            overall = mine.median() if not mine.empty else math.nan
        else:
            w = g.rtt_samples.astype(float)
            overall = (g.rtt_median_ms * w).sum() / w.sum() if w.sum() else math.nan
        body.append([s, _fmt(overall, 2), _fmt(g.loss_pct.mean(), 1),
                     _fmt(float(g.sg_relayed_packets.sum()), 0), _fmt(g.sg_relayed_bytes.sum() / 1e6, 2),
                     _fmt(float(g.sg_mn_office_packets.sum()), 0), _fmt(g.sg_mn_office_bytes.sum() / 1e6, 2),
                     _fmt(float(g.signalling_messages.sum()), 0), _fmt(float(g.signalling_bytes.sum()), 0),
                     _fmt(float(g.plaintext_exposure_bytes.sum()), 0)])
    out += _md_table(["strategy", "median RTT ms", "loss %",
                      "SG relayed MN-MN packets", "SG relayed MN-MN MB", "SG MN-office packets",
                      "SG MN-office MB", "signalling messages", "signalling bytes", "plaintext exposure bytes"],
                     body) + [""]
    out += ["Packets the SG relays between mobile nodes (MN-MN) and between mobile nodes and the office, per "
            "phase:", ""]
    body = []
    for phase in phases:
        cells = [phase]
        for s in strategies:
            r = summary[(summary.strategy == s) & (summary.phase == phase)]
            cells.append("–" if r.empty else f"{_fmt(float(r.iloc[0].sg_relayed_packets), 0)} / "
                                             f"{_fmt(float(r.iloc[0].sg_mn_office_packets), 0)}")
        body.append(cells)
    out += _md_table(["phase (MN-MN / MN-office)"] + strategies, body)
    if counters is not None and not counters.empty:
        sig = counters[counters.metric.isin(["signalling_messages", "signalling_bytes"])]
        known = list(MESSAGE_KINDS)
        kinds = sorted(dict.fromkeys(sig.detail), key=lambda k: (known.index(k) if k in known else len(known), k))
        if kinds:
            out += ["", "Signalling messages / bytes by type, whole run:", ""]
            body = []
            for kind in kinds:
                cells = [MESSAGE_KINDS.get(kind, (kind,))[0]]
                for s in strategies:
                    mine = sig[(sig.strategy == s) & (sig.detail == kind)]
                    count = mine[mine.metric == "signalling_messages"].value.sum()
                    size = mine[mine.metric == "signalling_bytes"].value.sum()
                    cells.append(f"{_fmt(float(count), 0)} / {_fmt(float(size), 0)}")
                body.append(cells)
            out += _md_table(["message"] + strategies, body)
    return "\n".join(out) + "\n"


def overload_lines(overloaded: dict[str, list[dict]]) -> list[str]:
    """Markdown lines naming every overloaded link emulator per strategy (empty list when all kept time)."""
    if not overloaded:
        return []
    out = ["**Link emulation overloaded**: the delays measured in phases marked ⚠ are inflated.", ""]
    for strategy, links in overloaded.items():
        parts = [f"{o['link']} ({100 * o['late_fraction']:.1f} % of frames late, max "
                 f"{o['max_late_ms']:.1f} ms)" for o in links]
        out.append(f"- `{strategy}`: " + "; ".join(parts))
    return out + [""]


def starved_phases(summary: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(strategy, phase) -> median CPU wait (%) of the lab's most starved process, where it passed
    ``STARVED_PCT``: the host, not the emulated links, set those phases' delays."""
    if "host_cpu_wait_pct" not in summary:
        return {}
    hot = summary[summary.host_cpu_wait_pct > STARVED_PCT]
    return {(r.strategy, r.phase): float(r.host_cpu_wait_pct) for r in hot.itertuples(index=False)}


def starved_lines(starved: dict[tuple[str, str], float]) -> list[str]:
    """Markdown lines naming the phases in which the emulation host ran out of CPU (none: empty list)."""
    if not starved:
        return []
    out = [f"**Emulation host out of CPU**: in the phases marked ⚠ a lab process sat runnable without a CPU "
           f"for more than {STARVED_PCT:g} % of the time (median over the phase); their delays are the host's.",
           ""]
    out += [f"- `{strategy}`, {phase}: {pct:.0f} %" for (strategy, phase), pct in starved.items()]
    return out + [""]


def write_summary(folder: str) -> pd.DataFrame:
    """Compute, write summary.csv and summary.md, return the summary."""
    summary = summarise(folder)
    write_table(folder, "summary", summary)
    try:
        config = read_config(folder)
    except RecordsError:
        config = {}
    with open(os.path.join(folder, "summary.md"), "w", encoding="utf-8") as f:
        f.write(summary_markdown(summary, config, read_table(folder, "rtt"), read_table(folder, "counters")))
        f.write(decryption_markdown(folder))
    return summary


def decryption_markdown(folder: str) -> str:
    """How to read each strategy's captures decrypted: its Wireshark folder (ESP SA table, decryption on,
    colouring rules) and a tshark line that needs no file; empty when the run kept no keys."""
    root = os.path.join(folder, "captures")
    rows = []
    for strategy in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        table = os.path.join(root, strategy, "wireshark", "esp_sa")
        if not os.path.exists(table):
            continue
        with open(table, encoding="utf-8") as f:
            records = [line.strip() for line in f if line.startswith('"')]
        capture = f"captures/{strategy}/ir.pcap"
        options = " ".join(f"-o 'uat:esp_sa:{r}'" for r in records)
        rows += [f"- `{strategy}` ({len(records)} SAs): `WIRESHARK_CONFIG_DIR=captures/{strategy}/wireshark "
                 f"tshark -r {capture}`, or without the folder:", "",
                 f"  `tshark -r {capture} -o esp.enable_encryption_decode:TRUE {options}`", ""]
    if not rows:
        return ""
    return "\n".join(["", "Decrypting the captures (lab keys, fresh for every run; Wireshark: copy the folder to "
                      "~/.config/wireshark/profiles/ and choose it as the profile):", ""] + rows)
