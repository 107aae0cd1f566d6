#!/usr/bin/env python3
"""Handover experiment: one scripted scenario of moves, run once per strategy on the same topology, with
RTT probes, bulk transfers, SG counters, signalling events and eavesdropper captures; writes a results
folder (experiments/records.py) and its figures (experiments/plotting.py).

Strategies are plug-ins, one module each in experiments/strategies/ (docs/strategies.md); --help lists
them. Without --strategies the run covers sg, vcm and insecure-ro; "--strategies all" adds the rest
(e.g. the mesh baseline).

    sudo python3 experiments/handover.py [--quick] [--strategies sg,vcm] [--scenario FILE]
"""
import _venv  # noqa: F401  (re-executes inside .venv)

import dataclasses
import json
import os
import random
import shutil
import sys
import threading
import time

import pandas as pd

from experiments import records, shell, strategies
from experiments.hostload import Sampler, cpu_wait_shares
from experiments.scenario import ScenarioError, load, load_default
from experiments.stats import confidence_interval
from experiments.cli import add_link_options, add_output_options, apply_link_options, not_root, strategy_parser
from experiments.strategies import StrategyError, StrategyRun
from nodeapps.linkemu.errors import LinkConfigError
from nodeapps.runtime.events import read_json_lines
from topologies import runs
from topologies.addressing import PlanError
from topologies.cluster import LoopbackServer
from topologies.errors import LabSpecError
from topologies.lab import LabError, SvpnLab
from topologies.spec import LabSpec
from topologies.svpn import SvpnTopo
from topologies.measurements import MeasurementError, iperf3
from topologies.pcap import pcap_frames

# The run without --strategies: the strategies marked default (strategies.names() lists every one).
STRATEGIES = strategies.names(default_only=True)
MARKER = "SVPNLAB-PROBE-PLAINTEXT"
CAPTURES = (("ir", "any", "ir"), ("ar1", "ar1-lan", "ar1-lan"), ("ar2", "ar2-lan", "ar2-lan"),
            ("ar3", "ar3-lan", "ar3-lan"))
PROBE_PORT_BASE = 7777
HOST_SAMPLE_S = 0.5   # /proc sampling period of the lab's processes (CPU wait per phase)
# iperf3 reports every this many seconds: a transfer's samples for its confidence interval.
THROUGHPUT_INTERVAL_S = 0.2
MAX_SEED = 2 ** 31 - 1


class Interrupted(Exception):
    pass


def parse_args(argv):
    parser = strategy_parser(__doc__, "handover.py")
    parser.add_argument("--scenario", help="scenario file (TOML; default experiments/scenarios/default.toml)")
    parser.add_argument("--quick", action="store_true", help="short phases (the scenario's quick form, for CI)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help=f"comma-separated, run in this order (from {', '.join(strategies.names())}, or all; "
                             f"default {','.join(STRATEGIES)})")
    parser.add_argument("--addressing", choices=["private", "public"], default="private",
                        help="address plan (default private)")
    parser.add_argument("--vcm-host", action="store_true",
                        help="vcm strategy: the VCM on its own office host (default: built into the SG)")
    parser.add_argument("--seed", type=int, default=1,
                        help="random seed, the same for every strategy: probe sessions and every link's random loss "
                             "and jitter (default 1)")
    parser.add_argument("--cli", metavar="PHASE", help="open the lab shell (experiments/shell.py) before this phase; "
                                                       "its time is left out of the figures")
    placement = parser.add_mutually_exclusive_group()
    placement.add_argument("--servers", default="",
                           help="comma-separated SSH destinations (user@host) the mobile nodes run on, round robin "
                                "(Mininet's cluster edition; docs/scaling.md); default: this machine")
    placement.add_argument("--loopback-server", action="store_true",
                           help="run the mobile nodes on a second server on this machine: a temporary sshd in its "
                                "own namespaces (needs 'make sshd')")
    parser.add_argument("--ssh-config", help="ssh -F file for --servers")
    add_output_options(parser)
    add_link_options(parser)
    args = parser.parse_args(argv)
    apply_link_options(parser, args)
    try:
        args.strategies = strategies.parse_list(args.strategies)
    except StrategyError as exc:
        parser.error(f"--strategies: {exc}")
    if not 0 <= args.seed <= MAX_SEED:
        parser.error(f"--seed must be between 0 and {MAX_SEED}")
    try:
        scenario = load(args.scenario) if args.scenario else load_default()
    except ScenarioError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    if args.quick:
        scenario = scenario.quick()
    if args.cli and args.cli not in [p.name for p in scenario.phases]:
        parser.error(f"--cli: no phase named {args.cli!r} (phases: {', '.join(p.name for p in scenario.phases)})")
    args.scenario_obj = scenario
    try:
        placement_spec = LabSpec(servers=args.servers, ssh_config=args.ssh_config)
    except LabSpecError as exc:
        parser.error(str(exc))
    args.run = StrategyRun(scenario=scenario, addressing=args.addressing, seed=args.seed, vcm_host=args.vcm_host,
                           link_params=args.link_params, ideal_links=args.ideal_links, cli_phase=args.cli,
                           servers=placement_spec.servers, ssh_config=args.ssh_config)
    return args


def endpoint_address(lab: SvpnLab, name: str) -> str:
    if name.startswith("mn"):
        return lab.plan.mobile(name).home_address
    return lab.plan.office[name]


def _wait_for(path: str, text: bytes, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                if text in f.read():
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


# SG counters (nodeapps/roles/security_gateway.py) -> (counters.csv metric, detail)
SG_RELAY_COUNTERS = {"relayed_mn_mn_packets": ("sg_relayed_packets", "mn-mn"),
                     "relayed_mn_mn_bytes": ("sg_relayed_bytes", "mn-mn"),
                     "relayed_mn_office_packets": ("sg_mn_office_packets", "mn-office"),
                     "relayed_mn_office_bytes": ("sg_mn_office_bytes", "mn-office")}


def sg_relay_counters(lab: SvpnLab) -> dict:
    """The SG's relay counters: packets and bytes from one MN to another, and between MNs and the office."""
    counters = lab.status("sg")["counters"]
    return {name: counters.get(name, 0) for name in SG_RELAY_COUNTERS}


def address_book(plan) -> dict:
    """Address -> node name for every address a signalling message may be sent to (config.json
    ``topology.addresses``; the sequence chart names receivers with it)."""
    book = {address: name for name, address in plan.office.items()}
    book[plan.sg_public] = "sg"
    if plan.xha_address:
        book[plan.xha_address] = "xha"
    for mn in plan.mobile_nodes:
        book[mn.home_address] = mn.name
        if mn.external_home_address:
            book[mn.external_home_address] = mn.name
        for access in plan.access.values():
            book[mn.address_in(access)] = mn.name
    return book


def path_function(scenario, t_moves: list[tuple[float, str, str]], node_events: list[dict], t0: float, pair):
    """path_of(t) for a probed pair: office when both ends are inside, direct while the MN1 side has sent
    on a direct path (data_first_direct .. fall_back_to_sg or data_via_sg), else via-sg."""
    a, b = pair
    switches = []   # (t, direct?)
    for e in node_events:
        if e.get("node") not in (a, b) or not b.startswith("mn"):
            continue
        if e["event"] == "data_first_direct":
            switches.append((e["time"] - t0, True))
        elif e["event"] in ("fall_back_to_sg", "data_via_sg"):
            switches.append((e["time"] - t0, False))
    switches.sort()

    def where(node, t):
        if not node.startswith("mn"):
            return "office"
        place = scenario.start.get(node, "office")
        for tm, n, to in t_moves:
            if n == node and tm <= t:
                place = to
        return place

    def path_of(t):
        if where(a, t) == "office" and where(b, t) == "office":
            return "office"
        direct = False
        for ts, d in switches:
            if ts <= t:
                direct = d
        for tm, n, to in t_moves:   # a move home ends route optimisation
            if tm <= t and to == "office" and n in (a, b):
                last = max((ts for ts, d in switches if d and ts <= t), default=-1)
                if tm > last:
                    direct = False
        if direct and "office" not in (where(a, t), where(b, t)):
            return "direct"
        return "via-sg"
    return path_of


def run_strategy(strategy: str, run: StrategyRun, folder: str, stop_flag: threading.Event) -> bool:
    """Run the scenario under one strategy (a registered name); append its rows and events to the folder.
    True if complete."""
    plugin = strategies.get(strategy)
    scenario = run.scenario
    run_dir = runs.new_run_dir("handover-")
    try:
        lab = SvpnLab(addressing=run.addressing, mobile_nodes=scenario.mobile_nodes,
                      attachments=[scenario.start[n] for n in scenario.nodes], mobility=True,
                      link_params=run.link_params, links=run.links, run_dir=run_dir, seed=run.seed,
                      servers=run.servers, ssh_config=run.ssh_config, **plugin.lab_options(run))
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    exp_events: list[dict] = []
    snapshots: list[tuple[str, dict]] = []
    throughput: list[dict] = []
    threads: list[threading.Thread] = []
    complete = False
    t0 = None
    probe_files = []
    node_events: list[dict] = []
    link_meta = {}
    sampler = None
    try:
        print(f"[{strategy}] building the lab ({run.addressing} addressing, {plugin.lab_summary(run)}) ...",
              flush=True)
        lab.start()
        rng = random.Random(run.seed)
        for i, probe in enumerate(scenario.probes):
            a, b = probe.between
            port = PROBE_PORT_BASE + i
            echo_log = f"echo-{i}.log"
            lab.popen(b, [sys.executable, "-m", "nodeapps.probe", "echo", "--bind", endpoint_address(lab, b),
                          "--port", str(port)], echo_log)
        for node, intf, label in CAPTURES:
            lab.popen(node, ["tcpdump", "--immediate-mode", "-U", "-n", "-s", "0", "-i", intf, "-w",
                             os.path.join(run_dir, f"{label}.pcap"), "ip6"], f"tcpdump-{label}.log")
        for node, intf, label in CAPTURES:
            if not _wait_for(os.path.join(run_dir, f"tcpdump-{label}.log"), b"listening on", 5.0):
                raise LabError(f"tcpdump on {node} {intf} did not start")
        time.sleep(0.2)   # echo servers bound
        t0 = time.time()
        exp_events.append({"time": t0, "node": "experiment", "event": "strategy_start", "strategy": strategy})
        sampler = Sampler(lab.processes(), HOST_SAMPLE_S, t0, memory=False)   # only the CPU wait is used
        sampler.start()
        senders = []
        for i, probe in enumerate(scenario.probes):
            a, b = probe.between
            out = os.path.join(run_dir, f"probe-{i}.jsonl")
            probe_files.append((probe.pair, out))
            senders.append(lab.popen(a, [sys.executable, "-m", "nodeapps.probe", "send", "--to",
                                         endpoint_address(lab, b), "--bind", endpoint_address(lab, a),
                                         "--rate", str(probe.rate_hz), "--port", str(PROBE_PORT_BASE + i),
                                         "--session", str(rng.randrange(1, 2 ** 31)), "--marker", MARKER,
                                         "--timeout", "1", "--out", out], f"probe-{i}.log"))
        phase_start = t0
        for phase in scenario.phases:
            if run.cli_phase == phase.name:   # the pause belongs to no phase: its counters, events and time
                snapshots.append(("", sg_relay_counters(lab)))
                paused, resumed, signum = shell.pause(lab, f"[{strategy}] before phase {phase.name}",
                                                      os.path.join(folder, "captures", strategy))
                exp_events.append({"time": paused, "node": "experiment", "event": "pause", "strategy": strategy,
                                   "phase": phase.name, "until": resumed})
                phase_start += resumed - paused
                if signum is not None:
                    stop_flag.set()
            if stop_flag.is_set():
                raise Interrupted
            now = time.time()
            snapshots.append((phase.name, sg_relay_counters(lab)))
            exp_events.append({"time": now, "node": "experiment", "event": "phase_start", "strategy": strategy,
                               "phase": phase.name})
            print(f"[{strategy}] phase {phase.name} ({phase.duration_s:g} s)", flush=True)
            plugin.before_phase(lab, phase, run)
            actions = [(m.at_s, "move", m) for m in phase.moves] + [(tr.start_s, "traffic", tr) for tr in phase.traffic]
            actions.sort(key=lambda x: x[0])
            for at, kind, item in actions:
                delay = phase_start + at - time.time()
                if delay > 0 and stop_flag.wait(delay):
                    raise Interrupted
                if kind == "move":
                    stamp = time.time()
                    exp_events.append({"time": stamp, "node": "experiment", "event": "move", "strategy": strategy,
                                       "phase": phase.name, "mn": item.node, "from": item.origin, "to": item.to})
                    exp_events[-1]["node"] = item.node
                    lab.move(item.node, item.to, now=stamp, wait=False)
                    print(f"[{strategy}]   move {item.node} {item.origin} -> {item.to}", flush=True)
                else:
                    length = item.duration_s if item.duration_s is not None else phase.duration_s - item.start_s
                    # iperf3 runs whole seconds and needs ~0.5 s to connect: keep it inside the phase
                    seconds = int(length - 0.5)
                    if seconds < 1:
                        print(f"[{strategy}]   tcp {item.flow}: skipped ({length:g} s is too short for iperf3)",
                              flush=True)
                        continue
                    th = threading.Thread(target=_bulk, daemon=True,
                                          args=(lab, item, seconds, strategy, phase.name, time.time() - t0,
                                                throughput, 5201 + len(threads) % 50))
                    th.start()
                    threads.append(th)
            delay = phase_start + phase.duration_s - time.time()
            if delay > 0 and stop_flag.wait(delay):
                raise Interrupted
            plugin.after_phase(lab, phase, run)
            phase_start += phase.duration_s
        snapshots.append(("", sg_relay_counters(lab)))
        for th in threads:
            th.join(timeout=15)
        for proc in senders:
            lab.stop_helper(proc)
        complete = True
    except Interrupted:
        print(f"[{strategy}] interrupted: keeping what was measured", flush=True)
    finally:
        try:
            if lab.net is not None:
                try:
                    if len(snapshots) and snapshots[-1][0] != "":
                        snapshots.append(("", sg_relay_counters(lab)))
                except Exception:   # noqa: BLE001  (the SG may be gone while tearing down)
                    pass
                node_events = lab.events()
        finally:
            if sampler is not None:
                records.append_rows(folder, "counters", host_wait_rows(strategy, sampler.stop(), exp_events, t0))
            lab.stop()
            link_meta = lab.link_metadata()
            if lab.node_configs:   # the run's ESP keys, so its captures can be decrypted (lab keys)
                lab.export_wireshark(os.path.join(folder, "captures", strategy, "wireshark"))
            records.append_rows(folder, "counters", records.handler_error_rows(strategy, lab.handler_errors()))
            records.append_rows(folder, "counters", [{"strategy": strategy, "phase": "end", **row}
                                                     for row in plugin.report(lab, run)])
    end = time.time()
    if t0 is not None:
        exp_events.append({"time": end, "node": "experiment", "event": "strategy_end", "strategy": strategy,
                           "complete": complete})
        records.append_events(folder, sorted(exp_events + node_events, key=lambda e: e["time"]))
        collect(strategy, scenario, folder, run_dir, t0, exp_events, node_events, snapshots, throughput,
                probe_files, address_book(lab.plan))
    shutil.rmtree(run_dir, ignore_errors=True)
    with open(os.path.join(folder, f"links-{strategy}.json"), "w", encoding="utf-8") as f:
        json.dump({"link_backend": link_meta, "lab_spec": lab.spec.to_dict()}, f, indent=1, default=str)
    return complete


def host_wait_rows(strategy: str, resources: pd.DataFrame, exp_events: list[dict], t0: float) -> list[dict]:
    """counters.csv rows: per phase, the median and peak over its sampling intervals of the CPU wait (%) of
    the lab's most starved process."""
    starts = [(e["time"] - t0, e["phase"]) for e in exp_events
              if e["event"] == "phase_start" and e.get("strategy") == strategy]
    ends = [t for t, _ in starts[1:]] + [resources.t.max() if not resources.empty else 0.0]
    rows = []
    for (start, phase), end in zip(starts, ends):
        waits = cpu_wait_shares(resources, (start, end), across="max")
        if waits is None:
            continue
        for detail, value in (("median", waits.median()), ("peak", waits.max())):
            rows.append({"strategy": strategy, "phase": phase, "metric": "host_cpu_wait_pct", "detail": detail,
                         "value": round(float(value), 2)})
    return rows


def _bulk(lab, traffic, seconds, strategy, phase, t_start, out, port):
    try:
        report = iperf3(lab.host(traffic.src), lab.host(traffic.dst), endpoint_address(lab, traffic.dst),
                        seconds=seconds, port=port, interval=THROUGHPUT_INTERVAL_S)
    except (MeasurementError, OSError, ValueError) as exc:
        print(f"[{strategy}]   iperf3 {traffic.flow}: {exc}", flush=True)
        return
    except Exception as exc:   # noqa: BLE001  (the lab was torn down under it)
        print(f"[{strategy}]   iperf3 {traffic.flow}: stopped ({exc.__class__.__name__})", flush=True)
        return
    samples = report["intervals_mbit_s"]
    out.append({"strategy": strategy, "phase": phase, "flow": traffic.flow, "protocol": report["protocol"],
                "t_start": t_start, "duration_s": report["seconds"], "mbit_s": report["mbit_s"],
                "retransmits": report.get("retransmits"), "samples": len(samples),
                "ci95_mbit_s": confidence_interval(samples).half_width,
                "intervals_mbit_s": ";".join(f"{v:.3f}" for v in samples)})


def collect(strategy, scenario, folder, run_dir, t0, exp_events, node_events, snapshots, throughput, probe_files,
            addresses):
    all_events = sorted(exp_events + node_events, key=lambda e: e["time"])
    spans = records.phase_spans(folder, [e for e in records.read_events(folder)])
    spans = spans[spans.strategy == strategy]
    t_moves = [(e["time"] - t0, e["mn"], e["to"]) for e in exp_events if e["event"] == "move"]
    rtt_rows = []
    for pair, path in probe_files:
        ends = tuple(pair.split("-"))
        path_of = path_function(scenario, t_moves, node_events, t0, ends)
        rows = records.probe_rows(read_json_lines(path), strategy=strategy, pair=pair, t0=t0, spans=spans,
                                  path_of=path_of)
        rtt_rows += rows
    records.append_rows(folder, "rtt", rtt_rows)
    for row in throughput:
        paths = [r["path"] for r in rtt_rows if r["pair"] == row["flow"].replace("->", "-")
                 and row["t_start"] <= r["t"] <= row["t_start"] + row["duration_s"]]
        row["path"] = max(set(paths), key=paths.count) if paths else ""
    records.append_rows(folder, "throughput", throughput)

    rtt = pd.DataFrame(rtt_rows, columns=[c for c, _ in records.SCHEMAS["rtt"]])
    if not rtt.empty:
        rtt["lost"] = rtt["lost"].astype(bool)
        rtt["rtt_ms"] = pd.to_numeric(rtt["rtt_ms"], errors="coerce")
    move_events = [{**e, "node": e["mn"]} for e in exp_events if e["event"] == "move"]
    move_table = records.moves(move_events and ([{"time": t0, "event": "strategy_start", "strategy": strategy}]
                                                + move_events))
    records.append_rows(folder, "handovers", records.handover_rows(rtt, move_table) if not rtt.empty else [])

    counters = []
    for i in range(len(snapshots) - 1):
        phase, before = snapshots[i]
        after = snapshots[i + 1][1]
        for name, (metric, detail) in SG_RELAY_COUNTERS.items():
            counters.append({"strategy": strategy, "phase": phase, "metric": metric, "detail": detail,
                             "value": after[name] - before[name]})
    phase_of = records.phase_finder(spans, strategy)
    by_kind: dict = {}
    for e in node_events:
        message = records.signalling_message(e, addresses)
        if message is not None:
            kind = message["kind"]
            phase = phase_of(e["time"] - t0)
            count, size = by_kind.get((phase, kind), (0, 0))
            by_kind[(phase, kind)] = (count + 1, size + (message["bytes"] or 0))
    for (phase, kind), (count, size) in sorted(by_kind.items()):
        counters.append({"strategy": strategy, "phase": phase, "metric": "signalling_messages", "detail": kind,
                         "value": count})
        counters.append({"strategy": strategy, "phase": phase, "metric": "signalling_bytes", "detail": kind,
                         "value": size})
    marker = MARKER.encode()
    captures = os.path.join(folder, "captures", strategy)
    os.makedirs(captures, exist_ok=True)
    phases = [p.name for p in scenario.phases]
    for _node, _intf, label in CAPTURES:
        path = os.path.join(run_dir, f"{label}.pcap")
        if os.path.exists(path):
            shutil.copy(path, captures)
        # Per phase and link (0 included), so the summary's per-phase rows carry it.
        exposed = dict.fromkeys(phases, 0)
        for t, frame in pcap_frames(path):
            found = frame.count(marker)
            if found:
                phase = phase_of(t - t0)
                exposed[phase] = exposed.get(phase, 0) + found * len(marker)
        for phase, value in exposed.items():
            counters.append({"strategy": strategy, "phase": phase, "metric": "plaintext_exposure_bytes",
                             "detail": label, "value": value})
    records.append_rows(folder, "counters", counters)
    del all_events


def main(argv=None) -> int:
    args = parse_args(argv)
    if not_root("handover.py"):
        return 2
    scenario = args.scenario_obj
    try:  # topology parameters (e.g. a --link naming no link) fail here, before any results folder exists
        topo = SvpnTopo(addressing=args.addressing, mobile_nodes=scenario.mobile_nodes,
                        attachments=[scenario.start[n] for n in scenario.nodes], link_params=args.link_params,
                        links="ideal" if args.ideal_links else "default", seed=args.seed)
    except (PlanError, LinkConfigError) as exc:
        print(f"handover.py: {exc}", file=sys.stderr)
        return 2
    os.makedirs(args.results, exist_ok=True)
    folder = records.new_folder(args.results, f"handover-{scenario.name}")
    stop_flag = threading.Event()

    def on_signal(_signum, _frame):
        stop_flag.set()

    runs.on_stop_signals(on_signal)
    config = {"experiment": "handover", "complete": False, "argv": sys.argv, "seed": args.seed,
              "strategies": args.strategies, "quick": args.quick, "addressing": args.addressing,
              "vcm": "host" if args.vcm_host else "in-sg", "scenario": scenario.to_dict(),
              "topology": {"links": "ideal" if args.ideal_links else "default", "link_params": args.link_params,
                           "seed": args.seed, "link_settings": topo.link_params, "plan": topo.plan.as_dict(),
                           "addresses": address_book(topo.plan)},
              "versions": records.versions()}
    records.write_config(folder, config)
    print(f"handover: scenario {scenario.name} ({scenario.duration_s:g} s per strategy), strategies "
          f"{', '.join(args.strategies)}; results in {folder}", flush=True)
    started = time.monotonic()
    complete = True
    code = 0
    server = None
    try:
        if args.loopback_server:
            server = LoopbackServer()
            server.start()
            args.run = dataclasses.replace(args.run, servers=(server.destination,), ssh_config=server.ssh_config)
        config["servers"] = list(args.run.servers)
        records.write_config(folder, config)
        for strategy in args.strategies:
            if stop_flag.is_set():
                complete = False
                break
            if not run_strategy(strategy, args.run, folder, stop_flag):
                complete = False
                break
    except (LabError, PlanError, LinkConfigError, ScenarioError, MeasurementError, StrategyError) as exc:
        print(f"handover.py: {exc}", file=sys.stderr)
        complete, code = False, 1
    finally:
        if server is not None:
            server.stop()
    for strategy in args.strategies:
        # Each lab's link report and specification, also of a strategy that was interrupted, go into config.json.
        lab_links = os.path.join(folder, f"links-{strategy}.json")
        if os.path.exists(lab_links):
            with open(lab_links, encoding="utf-8") as f:
                lab_record = json.load(f)
            config["topology"].setdefault("link_backend", {})[strategy] = lab_record["link_backend"]
            config.setdefault("lab_spec", {})[strategy] = lab_record["lab_spec"]   # LabSpec.from_dict rebuilds it
            os.remove(lab_links)
    config["complete"] = complete
    records.write_config(folder, config)
    records.write_summary(folder)
    if not args.no_plots:
        from experiments.plotting import draw_all
        draw_all(folder, workers=min(4, os.cpu_count() or 1))
    print(f"handover: {'complete' if complete else 'INCOMPLETE'} in {time.monotonic() - started:.1f} s; "
          f"{folder}", flush=True)
    with open(os.path.join(folder, "summary.md"), encoding="utf-8") as f:
        print(f.read())
    return code if complete or code else 130


if __name__ == "__main__":
    sys.exit(main())
