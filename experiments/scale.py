#!/usr/bin/env python3
"""Scale experiment: N pairs of external mobile nodes start sessions through the security gateway; the
VCM gives every pair a direct ESP SA pair. Records per pair the VCM setup time (session detected at the
SG -> the initiator's first direct ESP packet, from the node events) and per node process its CPU time and
memory (RSS and PSS from /proc), sampled during the run.

--strategy runs another registered strategy (experiments/strategies/) instead: with `mesh` every two MNs
hold an SA pair from the start, so a pair's setup time runs from its first packet (no session to detect)
and is ~0, while the MN-MN SAs and their key material grow with the square of N. summary.csv holds the
MN-MN SAs made and their key material, and the model of both for vcm and mesh at this N.

Pair i is mn(2i-1) -> mn(2i); the 2N mobile nodes are spread round-robin over wlan1, cell and wlan2 (the
topology's default attachments) and start outside, registered with their home agent. Each pair's
initiator pings its peer's home address at --rate Hz from its arrival time (all at once, or one pair
every --interval seconds) until the end of the run.

Writes results/scale-<timestamp>/: config.json, events.jsonl, setup.csv (one row per pair), resources.csv
(one row per process and sample), summary.csv (metric, group, value, unit), summary.md, status.json (the
SG's counters and VCM channel statistics at the end), plots/.

    sudo python3 experiments/scale.py                    # 50 pairs (100 mobile nodes)
    sudo python3 experiments/scale.py --quick            # 5 pairs, for CI
    sudo python3 experiments/scale.py --pairs 20 --arrival staggered --interval 0.5 --vcm-host
    sudo python3 experiments/scale.py --quick --strategy mesh
    python3 experiments/scale.py --plot results/scale-<timestamp>   # redraw the figures only
"""
import _venv  # noqa: F401  (re-executes inside .venv)

import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time

import pandas as pd

from experiments import records, strategies
from experiments.hostload import RESOURCE_COLUMNS, Sampler, cpu_wait_shares, role_of
from experiments.cli import (add_link_options, add_output_options, apply_link_options, not_root, redraw,
                             strategy_parser)
from experiments.stats import percentile
from experiments.strategies import KEY_MATERIAL_PER_SA, StrategyError, StrategyRun
from nodeapps.linkemu.errors import LinkConfigError
from nodeapps.runtime.events import JsonLinesTail
from topologies import runs
from topologies.addressing import MAX_MOBILE_NODES, PlanError, default_attachments
from topologies.lab import LabError, SvpnLab
from topologies.spec import LabSpecError, check_ra_intervals
from topologies.svpn import SvpnTopo

MAX_PAIRS = MAX_MOBILE_NODES // 2
QUICK_PAIRS = 5
SETUP_COLUMNS = ["pair", "initiator", "responder", "net_initiator", "net_responder", "t_start", "ok",
                 "detect_ms", "switch_ms", "protected_ms", "setup_ms", "responder_direct_ms", "error", "pings_sent",
                 "pings_received"]
SUMMARY_COLUMNS = ["metric", "group", "value", "unit"]
ROLE_ORDER = ["mn", "sg", "vcm", "ha", "emulator", "radvd"]
# A median MN waiting for a CPU longer than this share of a sampling interval: the host is the bottleneck.
SATURATED_WAIT_PCT = 10.0
# Nobody moves in this experiment: RAs only keep the routers known.
RA_INTERVALS = (1.0, 3.0)
# The SG logs one session_detected (and the VCM's messages) per pair: the default cap of 20 events of a
# kind per second would hide most of them when 50 pairs start at once.
EVENT_RATE_LIMIT = 5000
# The key costs summary.csv models at the run's N, side by side.
COMPARED_STRATEGIES = ("vcm", "mesh")


class Interrupted(Exception):
    pass


def parse_args(argv):
    parser = strategy_parser(__doc__, "scale.py")
    parser.add_argument("--strategy", default="vcm",
                        help=f"how the pairs go direct (one of {', '.join(strategies.names())}; default vcm)")
    parser.add_argument("--pairs", type=int, help=f"mobile-node pairs (default 50, --quick {QUICK_PAIRS}; "
                                                   f"at most {MAX_PAIRS})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PAIRS} pairs and a short hold (for CI)")
    parser.add_argument("--arrival", choices=["all", "staggered"], default="all",
                        help="all pairs start at once (default) or one every --interval seconds")
    parser.add_argument("--interval", type=float, default=0.2,
                        help="seconds between pair arrivals with --arrival staggered (default 0.2)")
    parser.add_argument("--rate", type=float, default=50.0,
                        help="ping rate per pair in Hz (default 50, as benchmarks/vcm_setup_time.py)")
    parser.add_argument("--hold", type=float,
                        help="seconds to keep traffic running once every pair is direct (default 5, --quick 2)")
    parser.add_argument("--setup-timeout", type=float, default=30.0,
                        help="seconds after the last arrival before a pair without a direct path counts as "
                             "failed (default 30)")
    parser.add_argument("--sample", type=float, default=1.0,
                        help="seconds between CPU/memory samples (default 1)")
    parser.add_argument("--infra-nice", type=int, default=-10,
                        help="nice value of the shared nodes' processes (SG, home agents, VCM host, link emulators): "
                             "each stands for a machine of its own, but the kernel shares the CPU fairly among "
                             "all processes (sessions, with autogroups), so 100 MN processes would starve the SG "
                             "(default -10; 0: as is)")
    parser.add_argument("--addressing", choices=["private", "public"], default="private",
                        help="address plan (default private)")
    parser.add_argument("--vcm-host", action="store_true",
                        help="the VCM on its own office host (default: built into the SG)")
    parser.add_argument("--ra-interval", default=f"{RA_INTERVALS[0]:g},{RA_INTERVALS[1]:g}", metavar="MIN,MAX",
                        help="router advertisement interval range in seconds (default %(default)s: nobody moves "
                             "here; the lab's 0.03,0.07 for fast movement detection costs 100 MNs about half "
                             "a CPU in RA processing)")
    add_output_options(parser)
    parser.add_argument("--plot", metavar="FOLDER", help="only redraw the figures of a results folder")
    add_link_options(parser)
    args = parser.parse_args(argv)
    apply_link_options(parser, args)
    if args.plot:
        return args
    try:
        plugin = strategies.get(args.strategy)
    except StrategyError as exc:
        parser.error(f"--strategy: {exc}")
    if plugin.mn_mn_path != "direct":
        parser.error(f"--strategy: {args.strategy} never takes a pair direct; scale.py times how pairs go direct")
    if args.pairs is None:
        args.pairs = QUICK_PAIRS if args.quick else 50
    if not 1 <= args.pairs <= MAX_PAIRS:
        parser.error(f"--pairs must be from 1 to {MAX_PAIRS} (the address plan holds {MAX_MOBILE_NODES} "
                     f"mobile nodes), not {args.pairs}")
    if args.hold is None:
        args.hold = 2.0 if args.quick else 5.0
    if not -20 <= args.infra_nice <= 19:
        parser.error(f"--infra-nice must be from -20 to 19, not {args.infra_nice}")
    try:
        bounds = [float(v) for v in args.ra_interval.split(",")]
    except ValueError:
        bounds = []
    if len(bounds) != 2:
        parser.error(f"--ra-interval must be MIN,MAX in seconds, not {args.ra_interval!r}")
    try:
        args.ra_intervals = check_ra_intervals(bounds)   # the lab's own check
    except LabSpecError:
        parser.error(f"--ra-interval {args.ra_interval}: need 0.03 <= MIN <= 0.75 * MAX and 0.07 <= MAX <= 1800 "
                     "(RFC 6275 §7.5, RFC 4861 §6.2.1)")
    for name, low, high in (("interval", 0.0, 60.0), ("rate", 0.2, 100.0), ("hold", 0.0, 3600.0),
                            ("setup_timeout", 1.0, 3600.0), ("sample", 0.1, 60.0)):
        value = getattr(args, name)
        if not math.isfinite(value) or not low <= value <= high:
            parser.error(f"--{name.replace('_', '-')} must be between {low:g} and {high:g}, not {value:g}")
    return args


# ---- pure parts -------------------------------------------------------------------------------------

def pairs_of(n_pairs: int) -> list[tuple[str, str]]:
    return [(f"mn{2 * i - 1}", f"mn{2 * i}") for i in range(1, n_pairs + 1)]


def arrival_times(n_pairs: int, arrival: str, interval: float) -> list[float]:
    """Seconds after the start of traffic at which each pair starts."""
    return [0.0 if arrival == "all" else i * interval for i in range(n_pairs)]


def node_id(name: str) -> int:
    from nodeapps.roles.vcm_shell import mn_node_id
    return mn_node_id(int(name[2:]))


def setup_rows(events: list[dict], pairs: list[tuple[str, str]], homes: dict[str, str],
               starts: dict[str, float], attachments: dict[str, str], t0: float, *,
               session_detected: bool = True) -> list[dict]:
    """One setup.csv row per pair from the node events (times in epoch seconds): the first session
    detected at the SG for the pair's node ids after its start, the initiator's switch of its outbound
    traffic to the peer and its first direct packet, and the responder's first direct packet. Without
    ``session_detected`` (a strategy with no session to detect, as the mesh) times run from the pair's
    start."""
    rows = []
    wanted = ("session_detected", "switch_outbound", "data_first_protected", "data_first_direct")
    events = [e for e in events if e.get("event") in wanted]
    for i, (a, b) in enumerate(pairs, start=1):
        ida, idb = node_id(a), node_id(b)
        start = starts.get(a)
        switch = protected_a = first_a = first_b = None
        detect = None if session_detected else start
        for e in events:
            if start is None or e["time"] < start:
                continue
            kind, node = e["event"], e.get("node")
            if detect is None and kind == "session_detected" and node == "sg" \
                    and {e.get("node_a"), e.get("node_b")} == {ida, idb}:
                detect = e["time"]
            elif switch is None and kind == "switch_outbound" and node == a and e.get("peer") == idb:
                switch = e["time"]
            elif protected_a is None and kind == "data_first_protected" and node == a and e.get("dst") == homes[b]:
                protected_a = e["time"]
            elif first_a is None and kind == "data_first_direct" and node == a and e.get("dst") == homes[b]:
                first_a = e["time"]
            elif first_b is None and kind == "data_first_direct" and node == b and e.get("dst") == homes[a]:
                first_b = e["time"]
        ms = lambda x: None if x is None or detect is None else 1000.0 * (x - detect)  # noqa: E731
        error = ""
        if start is None:
            error = "not started"
        elif detect is None:
            error = "no session detected"
        elif first_a is None:
            error = "no direct packet"
        rows.append({"pair": i, "initiator": a, "responder": b, "net_initiator": attachments.get(a, ""),
                     "net_responder": attachments.get(b, ""),
                     "t_start": None if start is None else start - t0, "ok": not error,
                     "detect_ms": None if start is None or detect is None else 1000.0 * (detect - start),
                     "switch_ms": ms(switch), "protected_ms": ms(protected_a), "setup_ms": ms(first_a),
                     "responder_direct_ms": ms(first_b),
                     "error": error})
    return rows


def ping_counts(path: str) -> tuple[int | None, int | None]:
    """(transmitted, received) from the summary line ping prints when it is stopped."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None, None
    m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    return (int(m[1]), int(m[2])) if m else (None, None)


def mn_mn_sas_made(node_configs: dict, run_dir: str) -> dict[str, int]:
    """Per MN: the MN–MN SAs it held from the start (the mesh's pairs, in its configuration) plus those it
    made while running (the VCM's pairs, one line each in its key log)."""
    out = {}
    for node, config in node_configs.items():
        if not node.startswith("mn"):
            continue
        count = 2 * len((config.get("mobility", {}).get("mesh") or {}).get("peers", []))
        try:
            with open(os.path.join(run_dir, f"{node}.keys.jsonl"), encoding="utf-8", errors="replace") as f:
                count += sum(1 for line in f if line.strip())
        except OSError:
            pass
        out[node] = count
    return out


def key_rows(strategy: str, mobile_nodes: int, made: dict[str, int]) -> list[dict]:
    """summary.csv rows of the MN–MN keys: what this run's MNs made (median and total SAs, key material),
    and the model of every compared strategy at this N (each MN talking to one peer, as here)."""
    rows = []

    def add(metric, group, value, unit):
        rows.append({"metric": metric, "group": group, "value": value, "unit": unit})

    counts = sorted(made.values())
    median = counts[len(counts) // 2] if counts else math.nan
    add("mn_mn_sas_per_mn_median", strategy, median, "count")
    add("mn_mn_sas_total", strategy, sum(counts), "count")
    add("key_bytes_total", strategy, sum(counts) // 2 * KEY_MATERIAL_PER_SA, "bytes")
    for name in dict.fromkeys((strategy,) + COMPARED_STRATEGIES):
        try:
            model = strategies.get(name).costs(mobile_nodes, peers_per_mn=1)
        except StrategyError:
            continue
        add("model_sas_per_mn", name, model["mn_mn_sas_per_mn"], "count")
        add("model_key_bytes_per_mn", name, model["key_bytes_per_mn"], "bytes")
        add("model_key_bytes_total", name, model["key_bytes_total"], "bytes")
    return rows


def summary_rows(setup: pd.DataFrame, resources: pd.DataFrame, wall: dict,
                 traffic: tuple[float, float] | None = None) -> list[dict]:
    """summary.csv: setup-time percentiles and success count over all pairs; per role the median and
    maximum of each process's peak RSS and PSS and of its CPU time during the run, and its wait for a CPU
    while the pairs' traffic ran (``traffic``: start and end, seconds of the run); wall times."""
    rows = []

    def add(metric, group, value, unit):
        rows.append({"metric": metric, "group": group, "value": value, "unit": unit})

    add("pairs", "all", len(setup), "count")
    ok = setup[setup.ok.astype(bool)] if not setup.empty else setup
    add("pairs_ok", "all", len(ok), "count")
    times = list(ok.setup_ms.dropna()) if not ok.empty else []
    for q in (50, 90, 99):
        add(f"setup_p{q}", "all", percentile(times, q), "ms")
    add("setup_max", "all", max(times) if times else math.nan, "ms")
    if not ok.empty:
        add("detect_p50", "all", percentile(ok.detect_ms.dropna(), 50), "ms")
    if not resources.empty:
        per_proc = resources.groupby(["role", "node"]).agg(
            rss=("rss_kib", "max"), pss=("pss_kib", "max"), cpu_first=("cpu_s", "min"),
            cpu_last=("cpu_s", "max")).reset_index()
        per_proc["cpu"] = per_proc.cpu_last - per_proc.cpu_first
        span = resources.t.max() - resources.t.min()
        roles = sorted(per_proc.role.unique(), key=lambda r: ROLE_ORDER.index(r) if r in ROLE_ORDER else 99)
        for role in roles:
            g = per_proc[per_proc.role == role]
            add("processes", role, len(g), "count")
            add("rss_median", role, g.rss.median() / 1024.0, "MiB")
            add("rss_max", role, g.rss.max() / 1024.0, "MiB")
            add("pss_median", role, g.pss.median() / 1024.0, "MiB")
            add("pss_total", role, g.pss.sum() / 1024.0, "MiB")
            add("cpu_median", role, g.cpu.median(), "s")
            add("cpu_total", role, g.cpu.sum(), "s")
            if span > 0:
                add("cpu_pct_median", role, 100.0 * g.cpu.median() / span, "%")
            waits = cpu_wait_shares(resources[resources.role == role], traffic)
            if waits is not None:
                add("cpu_wait_pct_median", role, waits.median(), "%")
                add("cpu_wait_pct_peak", role, waits.max(), "%")
        add("pss_total", "all", per_proc.pss.sum() / 1024.0, "MiB")
        add("sampled_s", "all", span, "s")
    for key, value in wall.items():
        add(f"wall_{key}", "all", value, "s")
    return rows


def summary_markdown(summary: pd.DataFrame, config: dict) -> str:
    def get(metric, group="all"):
        r = summary[(summary.metric == metric) & (summary.group == group)]
        return float(r.value.iloc[0]) if not r.empty else math.nan

    strategy = config.get("strategy", "vcm")
    how = f"VCM {config.get('vcm')}" if strategy == "vcm" else f"strategy {strategy}"
    out = [f"# scale: {config.get('pairs')} pairs ({2 * config.get('pairs', 0)} mobile nodes), "
           f"{how}, arrival {config.get('arrival')}", ""]
    if not config.get("complete", True):
        out += ["**Incomplete run**: interrupted or failed; the tables hold what was measured.", ""]
    since = "session detected at the SG" if config.get("vcm") else "the pair's first packet: no session to detect"
    out += [f"Pairs direct: {get('pairs_ok'):.0f} of {get('pairs'):.0f}. Setup time ({since} "
            f"-> first direct packet): p50 {get('setup_p50'):.1f} ms, p90 {get('setup_p90'):.1f} ms, "
            f"p99 {get('setup_p99'):.1f} ms, max {get('setup_max'):.1f} ms.", ""]
    out += ["| role | processes | RSS median MiB | PSS median MiB | PSS total MiB | CPU median s |",
            "|---|---:|---:|---:|---:|---:|"]
    for role in [g for g in dict.fromkeys(summary[summary.metric == "processes"].group)]:
        out.append(f"| {role} | {get('processes', role):.0f} | {get('rss_median', role):.1f} | "
                   f"{get('pss_median', role):.1f} | {get('pss_total', role):.1f} | {get('cpu_median', role):.2f} |")
    peak = get("cpu_wait_pct_peak", "mn")
    if math.isfinite(peak):
        out += ["", f"Host CPU while the pairs' traffic ran: a median MN process waited for a CPU "
                    f"{get('cpu_wait_pct_median', 'mn'):.0f} % of a sampling interval, {peak:.0f} % in the worst one."]
        if peak > SATURATED_WAIT_PCT:
            out += [f"**The emulation host ran out of CPU** (over {SATURATED_WAIT_PCT:.0f} %): the setup times "
                    "include the MNs' wait for a CPU, not only the network's delays; fewer pairs or a lower "
                    "--rate measure the protocol."]
    models = [g for g in dict.fromkeys(summary[summary.metric == "model_sas_per_mn"].group)]
    if models:
        out += ["", f"MN-MN keys: {get('mn_mn_sas_total', strategy):.0f} SAs made in this run "
                    f"({get('key_bytes_total', strategy):.0f} bytes of key material). At this N, per model:", "",
                "| strategy | SAs per MN | key bytes per MN | key bytes in all |", "|---|---:|---:|---:|"]
        for name in models:
            out.append(f"| {name} | {get('model_sas_per_mn', name):.0f} | {get('model_key_bytes_per_mn', name):.0f} | "
                       f"{get('model_key_bytes_total', name):.0f} |")
    walls = summary[summary.metric.str.startswith("wall_")]
    out += ["", "Wall time: " + ", ".join(f"{r.metric[5:]} {r.value:.1f} s" for r in walls.itertuples()), ""]
    return "\n".join(out)


# ---- figures (from the folder alone) ----------------------------------------------------------------

def draw(folder: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    from experiments.plotting import save_figure

    setup = pd.read_csv(os.path.join(folder, "setup.csv"))
    resources = pd.read_csv(os.path.join(folder, "resources.csv"))
    out_dir = os.path.join(folder, "plots")
    os.makedirs(out_dir, exist_ok=True)
    written = []

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_cdf, ax_hist = fig.subplots(1, 2)
    times = np.sort(setup[setup.ok.astype(bool)].setup_ms.dropna().to_numpy())
    if len(times):
        ax_cdf.step(times, np.arange(1, len(times) + 1) / len(setup), where="post", color="#0072B2")
        for q, style in ((50, "--"), (99, ":")):
            v = np.percentile(times, q)
            ax_cdf.axvline(v, color="#555555", linestyle=style, linewidth=1, label=f"p{q} {v:.0f} ms")
        ax_cdf.legend(loc="lower right")
        ax_hist.hist(times, bins=min(30, max(5, len(times) // 3)), color="#0072B2", edgecolor="white")
    ax_cdf.set(xlabel="setup time, session detected -> first direct packet (ms)", ylabel="fraction of pairs",
               ylim=(0, 1.02), title=f"{int(setup.ok.sum())} of {len(setup)} pairs direct")
    ax_hist.set(xlabel="setup time (ms)", ylabel="pairs", title="histogram")
    for ax in (ax_cdf, ax_hist):
        ax.grid(alpha=0.3)
    written += save_figure(fig, out_dir, "setup-time", dpi=130)

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_mem, ax_cpu = fig.subplots(1, 2)
    if not resources.empty:
        per = resources.groupby(["role", "node"]).agg(pss=("pss_kib", "max"), rss=("rss_kib", "max"),
                                                     c0=("cpu_s", "min"), c1=("cpu_s", "max")).reset_index()
        per["cpu"] = per.c1 - per.c0
        roles = sorted(per.role.unique(), key=lambda r: ROLE_ORDER.index(r) if r in ROLE_ORDER else 99)
        for ax, column, label, scale in ((ax_mem, "pss", "peak PSS per process (MiB)", 1 / 1024.0),
                                         (ax_cpu, "cpu", "CPU time during the run per process (s)", 1.0)):
            data = [per[per.role == r][column].to_numpy() * scale for r in roles]
            ax.boxplot(data, showfliers=False)
            ax.set_xticks(range(1, len(roles) + 1), [f"{r}\n(n={len(d)})" for r, d in zip(roles, data)])
            for k, d in enumerate(data, start=1):
                ax.scatter(np.full(len(d), k) + np.linspace(-0.15, 0.15, len(d)), d, s=8, color="#0072B2",
                           alpha=0.6, zorder=3)
            ax.set(ylabel=label)
            ax.grid(alpha=0.3, axis="y")
        ax_mem.set_title("memory per node process, by role")
        ax_cpu.set_title("CPU per node process, by role")
    written += save_figure(fig, out_dir, "resources", dpi=130)
    return written



# ---- the run ----------------------------------------------------------------------------------------

def stop_pings(pings: list) -> None:
    """SIGINT, not SIGTERM: ping prints its transmitted/received summary only then."""
    for proc in pings:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 3.0
    for proc in pings:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:   # noqa: BLE001  (the lab's stop terminates what is left)
            pass


def renice(pid: int, nice: int) -> None:
    """Nice value of a process and of its autogroup: every node process runs in a session of its own
    (Mininet detaches them), and with sched_autogroup_enabled the scheduler first shares the CPU equally
    among sessions, so a nice value alone changes nothing (sched(7), "The autogroup feature")."""
    os.setpriority(os.PRIO_PROCESS, pid, nice)
    try:
        with open(f"/proc/{pid}/autogroup", "w", encoding="ascii") as f:
            f.write(str(nice))
    except OSError:
        pass   # kernel without autogroups: the process nice value is what counts


def save_status(lab: SvpnLab, folder: str) -> None:
    """The SG's (and VCM host's) status at the end of the run: counters, VCM sessions and the control
    channel's statistics (retransmissions, drops by reason), for explaining failed pairs."""
    out = {}
    for node in ("sg", "vcm"):
        if node in lab.node_configs:
            try:
                out[node] = lab.status(node)
            except Exception as exc:   # noqa: BLE001  (a status is a bonus; the run's data matter more)
                out[node] = {"error": str(exc)}
    with open(os.path.join(folder, "status.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, default=str)


def direct_initiators(lab: SvpnLab, pairs: list[tuple[str, str]], homes: dict[str, str],
                      logs: dict[str, JsonLinesTail], found: set) -> None:
    """Add to ``found`` the initiators whose event log shows their first direct packet to the peer."""
    for a, b in pairs:
        if a in found:
            continue
        log = logs.setdefault(a, JsonLinesTail(os.path.join(lab.run_dir, f"{a}.events.jsonl")))
        if any(e.get("event") == "data_first_direct" and e.get("dst") == homes[b] for e in log.read_new()):
            found.add(a)


def run(args, folder: str, stop: threading.Event, config: dict) -> bool:
    n_mn = 2 * args.pairs
    attachments = default_attachments(n_mn)
    plugin = strategies.get(args.strategy)
    strategy_run = StrategyRun(scenario=None, addressing=args.addressing, vcm_host=args.vcm_host,
                               link_params=args.link_params, ideal_links=args.ideal_links,
                               pairs=tuple(pairs_of(args.pairs)))
    options = plugin.lab_options(strategy_run)
    vcm = options.get("vcm")
    run_dir = runs.new_run_dir("scale-")
    made: dict[str, int] = {}
    wall: dict[str, float] = {}
    events: list[dict] = []
    exp_events: list[dict] = []
    starts: dict[str, float] = {}
    pings: list = []
    sampler = None
    resources = pd.DataFrame(columns=RESOURCE_COLUMNS)
    complete = False
    t0 = time.time()
    traffic_start = traffic = None
    lab = None
    try:
        lab = SvpnLab(addressing=args.addressing, mobile_nodes=n_mn, attachments=attachments, mobility=True,
                      link_params=args.link_params, links=strategy_run.links, run_dir=run_dir,
                      event_rate_limit=EVENT_RATE_LIMIT, ra_intervals=args.ra_intervals, **options)
        print(f"scale: building the lab with {n_mn} mobile nodes ({args.addressing} addressing, "
              f"{plugin.lab_summary(strategy_run)}) ...", flush=True)
        started = time.monotonic()
        lab.start()
        wall["build"] = time.monotonic() - started
        print(f"scale: lab up in {wall['build']:.1f} s; {len(lab.apps)} node apps", flush=True)
        processes = lab.processes()
        if args.infra_nice:
            for node, pid in processes.items():
                if role_of(node) in ("sg", "ha", "xha", "vcm", "emulator"):
                    renice(pid, args.infra_nice)
        sampler = Sampler(processes, args.sample, t0)
        sampler.start()
        names = [mn.name for mn in lab.plan.mobile_nodes]
        wall["register"] = lab.wait_registered(names, 30.0 + 0.5 * n_mn, stop)
        if wall["register"] is None:
            raise Interrupted
        print(f"scale: all {n_mn} mobile nodes registered after {wall['register']:.1f} s", flush=True)
        homes = {mn.name: mn.home_address for mn in lab.plan.mobile_nodes}
        pairs = pairs_of(args.pairs)
        offsets_at = arrival_times(args.pairs, args.arrival, args.interval)
        traffic_start = time.time()
        exp_events.append({"time": traffic_start, "node": "experiment", "event": "traffic_start"})
        interval = f"{1.0 / args.rate:.3f}"
        for (a, b), offset in zip(pairs, offsets_at):
            delay = traffic_start + offset - time.time()
            if delay > 0 and stop.wait(delay):
                raise Interrupted
            if stop.is_set():
                raise Interrupted
            starts[a] = time.time()
            pings.append(lab.popen(a, ["ping", "-6", "-n", "-q", "-i", interval, homes[b]], f"ping-{a}.log"))
            exp_events.append({"time": starts[a], "node": "experiment", "event": "pair_start", "initiator": a,
                               "responder": b})
        print(f"scale: {len(pairs)} pairs started ({args.arrival}); waiting for direct paths", flush=True)
        found: set = set()
        logs: dict[str, JsonLinesTail] = {}
        deadline = time.monotonic() + args.setup_timeout
        while len(found) < len(pairs) and time.monotonic() < deadline:
            lab.check_nodes()
            direct_initiators(lab, pairs, homes, logs, found)
            if stop.wait(0.2):
                raise Interrupted
        wall["all_direct"] = time.time() - traffic_start
        print(f"scale: {len(found)} of {len(pairs)} pairs direct after {wall['all_direct']:.1f} s; "
              f"holding {args.hold:g} s", flush=True)
        if stop.wait(args.hold):
            raise Interrupted
        complete = True
    except Interrupted:
        print("scale: interrupted: keeping what was measured", flush=True)
    finally:
        if traffic_start is not None:
            traffic = (traffic_start - t0, time.time() - t0)
        try:
            stop_pings(pings)
            if sampler is not None:
                resources = sampler.stop()
            if lab is not None and lab.net is not None:
                events = lab.events()
                save_status(lab, folder)
        finally:
            if lab is not None:
                stopping = time.monotonic()
                lab.stop()
                wall["teardown"] = time.monotonic() - stopping
                config["topology"]["link_backend"] = lab.link_metadata()
                config["lab_spec"] = lab.spec.to_dict()
                config["handler_errors"] = lab.handler_errors()   # per node, as each exited
            wall["total"] = time.time() - t0
            exp_events.append({"time": time.time(), "node": "experiment", "event": "run_end",
                               "complete": complete})
            records.append_events(folder, sorted(exp_events + events, key=lambda e: e["time"]))
            homes = {mn.name: mn.home_address for mn in lab.plan.mobile_nodes} if lab is not None else {}
            setup = pd.DataFrame(setup_rows(events, pairs_of(args.pairs), homes, starts,
                                            dict(zip([f"mn{i}" for i in range(1, n_mn + 1)], attachments)), t0,
                                            session_detected=vcm is not None)
                                 if homes else [], columns=SETUP_COLUMNS)
            for i, (a, _b) in enumerate(pairs_of(args.pairs)):
                sent, received = ping_counts(os.path.join(run_dir, f"ping-{a}.log"))
                setup.loc[i, ["pings_sent", "pings_received"]] = [sent, received]
            setup.to_csv(os.path.join(folder, "setup.csv"), index=False, float_format="%.3f")
            resources.to_csv(os.path.join(folder, "resources.csv"), index=False, float_format="%.3f")
            if lab is not None:
                made = mn_mn_sas_made(lab.node_configs, run_dir)
            summary = pd.DataFrame(summary_rows(setup, resources, wall, traffic) + key_rows(args.strategy, n_mn, made),
                                   columns=SUMMARY_COLUMNS)
            summary.to_csv(os.path.join(folder, "summary.csv"), index=False, float_format="%.3f")
            shutil.rmtree(run_dir, ignore_errors=True)
    return complete


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.plot:
        return redraw("scale.py", args.plot, "scale", "setup.csv", draw)
    if not_root("scale.py"):
        return 2
    try:  # topology parameters fail here, before any results folder exists
        SvpnTopo(addressing=args.addressing, mobile_nodes=2 * args.pairs, link_params=args.link_params,
                 links="ideal" if args.ideal_links else "default")
    except (PlanError, LinkConfigError) as exc:
        print(f"scale.py: {exc}", file=sys.stderr)
        return 2
    os.makedirs(args.results, exist_ok=True)
    folder = records.new_folder(args.results, "scale")
    stop = threading.Event()
    runs.on_stop_signals(lambda *_: stop.set())
    config = {"experiment": "scale", "complete": False, "argv": sys.argv, "pairs": args.pairs,
              "mobile_nodes": 2 * args.pairs, "quick": args.quick, "arrival": args.arrival,
              "interval_s": args.interval, "rate_hz": args.rate, "infra_nice": args.infra_nice, "hold_s": args.hold,
              "ra_intervals_s": list(args.ra_intervals),
              "setup_timeout_s": args.setup_timeout, "sample_s": args.sample, "addressing": args.addressing,
              "strategy": args.strategy,
              "vcm": strategies.get(args.strategy).lab_options(StrategyRun(scenario=None, vcm_host=args.vcm_host))
              .get("vcm"),
              "attachments": default_attachments(2 * args.pairs),
              "topology": {"links": "ideal" if args.ideal_links else "default", "link_params": args.link_params},
              "host": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
              "versions": records.versions()}
    records.write_config(folder, config)
    print(f"scale: {args.pairs} pairs; results in {folder}", flush=True)
    code = 0
    complete = False
    try:
        complete = run(args, folder, stop, config)
    except (LabError, PlanError, LinkConfigError, StrategyError) as exc:
        print(f"scale.py: {exc}", file=sys.stderr)
        code = 1
    config["complete"] = complete
    config["host"]["loadavg_end"] = os.getloadavg()
    records.write_config(folder, config)
    summary = pd.read_csv(os.path.join(folder, "summary.csv"))
    with open(os.path.join(folder, "summary.md"), "w", encoding="utf-8") as f:
        f.write(summary_markdown(summary, config))
    if not args.no_plots:
        draw(folder)
    print(f"scale: {'complete' if complete else 'INCOMPLETE'}; {folder}", flush=True)
    with open(os.path.join(folder, "summary.md"), encoding="utf-8") as f:
        print(f.read())
    return code if complete or code else 130


if __name__ == "__main__":
    sys.exit(main())
