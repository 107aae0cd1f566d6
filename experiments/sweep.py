#!/usr/bin/env python3
"""Sweep experiment: the RTT gain of route optimisation (RTT between the two MNs' home addresses via the
SG under `sg` / on the direct path under `vcm`, or under the strategies --strategies names) as a function
of the distance to the office (the SG <-> Internet long-haul link's one-way delay) and of the cellular
access delay, with R repetitions per point and 95 % Student-t confidence intervals, against the value
computed from the link delays.

Each (axis value, repetition, strategy) runs the short scenario experiments/scenarios/sweep-point.toml
(MN1 on wlan1, MN2 on cellular, 50 Hz probes; setup phase, then a steady phase whose median RTT counts)
on a fresh lab, with experiments/handover.py's machinery; repetition r uses seed --seed + r for the
probes and for every emulated link (jitter and loss draws). While one axis is swept the other stays at
its default (long-haul 35 ms, cellular 20 ms).

Analytic one-way delays (the office LAN is ideal): direct = wlan1 + metro + metro + cellular;
via the SG = direct + 2 x long-haul (MN1 -> SG -> home agent -> SG -> MN2). RTT = 2 x one-way;
gain = RTT under the first strategy (sg) / RTT under the second (vcm); with more strategies, one gain
per further strategy (gain_<name>).

Writes results/sweep-<timestamp>/: config.json, sweep.csv (one row per axis x value x strategy x
repetition), summary.csv (mean and CI per axis x value x quantity, with the analytic value), summary.md,
plots/, and runs/<axis>-<value>-r<rep>/ with each point's handover-style records.

    sudo python3 experiments/sweep.py                     # long-haul 5,15,35,70 ms; cellular 10,20,40,80 ms; 3 reps
    sudo python3 experiments/sweep.py --quick             # 2 values per axis, 2 reps, short phases (CI)
    sudo python3 experiments/sweep.py --longhaul 10,50 --cell "" --reps 5
    sudo python3 experiments/sweep.py --quick --strategies sg,vcm,mesh
    python3 experiments/sweep.py --plot results/sweep-<timestamp>    # redraw the figures only
"""
import _venv  # noqa: F401  (re-executes inside .venv)

import math
import os
import sys
import threading
import time

import pandas as pd

from experiments import records, strategies
from experiments.cli import add_output_options, not_root, redraw, strategy_parser
from experiments.scenario import ScenarioError, load
from experiments.stats import confidence_interval
from experiments.strategies import StrategyError, StrategyRun
from nodeapps.linkemu.errors import LinkConfigError
from nodeapps.linkemu.profiles import make_config
from topologies.runs import on_stop_signals
from topologies.addressing import PlanError
from topologies.lab import LabError
from topologies.svpn import SvpnTopo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIO = os.path.join(ROOT, "experiments", "scenarios", "sweep-point.toml")
STRATEGIES = ("sg", "vcm")   # the default: the gain of the VCM's route optimisation over today's VPN
AXES = {"longhaul": "sg-ir", "cell": "ar3-cell"}      # axis -> the link whose one-way delay it sets
AXIS_LABELS = {"longhaul": "SG <-> Internet long-haul one-way delay (ms)",
               "cell": "cellular access one-way delay (ms)"}
DEFAULT_VALUES = {"longhaul": (5.0, 15.0, 35.0, 70.0), "cell": (10.0, 20.0, 40.0, 80.0)}
QUICK_VALUES = {"longhaul": (5.0, 70.0), "cell": (80.0,)}
# Links with random draws (jitter, loss) that a repetition's seed reseeds; the MNs' access legs are ideal.
SEEDED_LINKS = ("sg-ir", "ir-ar1", "ir-ar3", "ar1-wlan1", "ar3-cell")
PAIR = "mn1-mn2"
STEADY_PHASE = "steady"
MAX_DELAY_MS = 1000.0
SWEEP_COLUMNS = ["axis", "value_ms", "strategy", "rep", "seed", "longhaul_ms", "cell_ms", "path",
                 "rtt_median_ms", "rtt_mean_ms", "rtt_p95_ms", "samples", "loss_pct", "analytic_rtt_ms"]
SUMMARY_COLUMNS = ["axis", "value_ms", "quantity", "n", "mean", "ci_low", "ci_high", "half_width", "analytic"]


def _values(parser, option: str, text: str) -> tuple[float, ...]:
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            value = float(item.removesuffix("ms"))
        except ValueError:
            parser.error(f"--{option}: {item!r} is not a delay in ms")
        if not math.isfinite(value) or not 0 <= value <= MAX_DELAY_MS:
            parser.error(f"--{option}: {item} must be between 0 and {MAX_DELAY_MS:g} ms")
        out.append(value)
    if len(set(out)) != len(out):
        parser.error(f"--{option}: a value is named twice")
    return tuple(out)


def parse_args(argv):
    parser = strategy_parser(__doc__, "sweep.py")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help="comma-separated, at least two; the gain is the first one's RTT over each other's "
                             f"(from {', '.join(strategies.names())}; default {','.join(STRATEGIES)})")
    parser.add_argument("--longhaul", help="long-haul one-way delays in ms, comma-separated "
                                           "(default 5,15,35,70; --quick 5,70; empty: skip the axis)")
    parser.add_argument("--cell", help="cellular one-way delays in ms (default 10,20,40,80; --quick 80; "
                                       "empty: skip the axis)")
    parser.add_argument("--reps", type=int, help="repetitions per point, each with its own seed "
                                                  "(default 3, --quick 2; at least 2 for an interval)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first repetition (default 1)")
    parser.add_argument("--quick", action="store_true", help="fewer points, 2 reps, short phases (for CI)")
    parser.add_argument("--scenario", default=SCENARIO, help="scenario file of one point (default "
                                                             "experiments/scenarios/sweep-point.toml)")
    parser.add_argument("--addressing", choices=["private", "public"], default="private",
                        help="address plan (default private)")
    parser.add_argument("--vcm-host", action="store_true",
                        help="vcm strategy: the VCM on its own office host (default: built into the SG)")
    add_output_options(parser)
    parser.add_argument("--plot", metavar="FOLDER", help="only redraw the figures of a results folder")
    args = parser.parse_args(argv)
    if args.plot:
        return args
    try:
        args.strategies = strategies.parse_list(args.strategies)
    except StrategyError as exc:
        parser.error(f"--strategies: {exc}")
    if len(args.strategies) < 2:
        parser.error("--strategies: name at least two (the gain compares the first with the others)")
    values = QUICK_VALUES if args.quick else DEFAULT_VALUES
    args.axes = {}
    for axis in AXES:
        text = getattr(args, axis)
        args.axes[axis] = values[axis] if text is None else _values(parser, axis, text)
    if not any(args.axes.values()):
        parser.error("--longhaul and --cell are both empty: nothing to sweep")
    if args.reps is None:
        args.reps = 2 if args.quick else 3
    if not 1 <= args.reps <= 100:
        parser.error(f"--reps must be from 1 to 100, not {args.reps}")
    if not 0 <= args.seed <= 2 ** 31 - 1000:
        parser.error(f"--seed must be between 0 and {2 ** 31 - 1000}")
    try:
        scenario = load(args.scenario)
    except ScenarioError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    if args.quick:
        scenario = scenario.quick()
    if STEADY_PHASE not in [p.name for p in scenario.phases] or PAIR not in [p.pair for p in scenario.probes]:
        parser.error(f"--scenario: needs a phase named {STEADY_PHASE!r} and a probe between mn1 and mn2")
    args.scenario_obj = scenario
    return args


# ---- pure parts -------------------------------------------------------------------------------------

def points(axes: dict[str, tuple[float, ...]]) -> list[tuple[str, float]]:
    return [(axis, value) for axis, values in axes.items() for value in values]


def point_link_params(axis: str, value: float, seed: int) -> dict:
    """link_params for one run: the swept link's delay, and a seed derived from the repetition's seed
    for every link with random draws."""
    params = {name: {"seed": seed * 16 + k} for k, name in enumerate(SEEDED_LINKS)}
    params[AXES[axis]]["delay"] = f"{value:g}ms"
    return params


def link_delays(link_params: dict, addressing: str = "private") -> dict[str, tuple[float, float]]:
    """name -> (forward, reverse) one-way delay in ms of the links on the MN1-MN2 paths, from the default
    profiles and the overrides."""
    topo = SvpnTopo(addressing=addressing, mobile_nodes=2, attachments=["wlan1", "cell"], link_params=link_params)
    out = {}
    for name in ("sg-ir", "ir-ar1", "ir-ar3", "ar1-wlan1", "ar3-cell"):
        config = make_config(**topo.link_params[name])
        out[name] = (config.forward.delay_ms, config.reverse.delay_ms)
    return out


def analytic_rtt(delays: dict[str, tuple[float, float]], names=STRATEGIES) -> dict[str, float]:
    """RTT in ms per strategy (each on the path it promises, ``Strategy.mn_mn_path``): both directions of
    every link on the path. The userspace ESP, tunnel and link-emulation processes add a few milliseconds
    on top (measured in the README)."""
    def both(name):
        return delays[name][0] + delays[name][1]

    direct = both("ar1-wlan1") + both("ir-ar1") + both("ir-ar3") + both("ar3-cell")
    by_path = {"direct": direct, "via-sg": direct + 2 * both("sg-ir")}
    return {name: by_path[strategies.get(name).mn_mn_path] for name in names}


def gain_quantity(others: list[str], strategy: str) -> str:
    """summary.csv quantity of ``strategy``'s gain: "gain" for the first compared strategy."""
    return "gain" if strategy == others[0] else f"gain_{strategy}"


def run_folder_name(axis: str, value: float, rep: int) -> str:
    return f"{axis}-{value:g}ms-r{rep}"


def sweep_row(rtt: pd.DataFrame, *, axis, value, strategy, rep, seed, delays, analytic) -> dict:
    """sweep.csv row of one run from its rtt.csv: probes of the steady phase on the primary pair."""
    mine = rtt[(rtt.strategy == strategy) & (rtt.pair == PAIR) & (rtt.phase == STEADY_PHASE)]
    ok = mine[~mine.lost.astype(bool)]
    values = ok.rtt_ms.dropna()
    paths = ok.path[ok.path != ""] if "path" in ok else pd.Series(dtype=str)
    return {"axis": axis, "value_ms": value, "strategy": strategy, "rep": rep, "seed": seed,
            "longhaul_ms": delays["sg-ir"][0], "cell_ms": delays["ar3-cell"][0],
            "path": paths.mode().iloc[0] if not paths.empty else "",
            "rtt_median_ms": values.median() if not values.empty else math.nan,
            "rtt_mean_ms": values.mean() if not values.empty else math.nan,
            "rtt_p95_ms": values.quantile(0.95) if not values.empty else math.nan,
            "samples": len(values), "loss_pct": 100.0 * (len(mine) - len(ok)) / len(mine) if len(mine) else math.nan,
            "analytic_rtt_ms": analytic[strategy]}


def summarise(sweep: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per axis x value: mean and CI of each strategy's median RTT over repetitions, and of the gain of
    each strategy after the first (per repetition: the first one's RTT / its RTT, runs with the same seed)."""
    rows = []
    names = list(dict.fromkeys(sweep.strategy))
    reference, others = names[0], names[1:]
    for (axis, value), group in sweep.groupby(["axis", "value_ms"], sort=False):
        by = {s: group[group.strategy == s].set_index("rep") for s in names}
        for s in names:
            ci = confidence_interval(by[s].rtt_median_ms, level)
            analytic = by[s].analytic_rtt_ms.iloc[0] if not by[s].empty else math.nan
            rows.append({"axis": axis, "value_ms": value, "quantity": f"rtt_{s}_ms", "n": ci.n, "mean": ci.mean,
                         "ci_low": ci.low, "ci_high": ci.high, "half_width": ci.half_width, "analytic": analytic})
        for s in others:
            reps = sorted(set(by[reference].index) & set(by[s].index))
            gains = [by[reference].rtt_median_ms[r] / by[s].rtt_median_ms[r] for r in reps]
            ci = confidence_interval(gains, level)
            analytic = (by[reference].analytic_rtt_ms.iloc[0] / by[s].analytic_rtt_ms.iloc[0]
                        if reps else math.nan)
            rows.append({"axis": axis, "value_ms": value, "quantity": gain_quantity(others, s), "n": ci.n,
                         "mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high, "half_width": ci.half_width,
                         "analytic": analytic})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def summary_markdown(summary: pd.DataFrame, config: dict) -> str:
    out = [f"# sweep: RTT gain of route optimisation ({config.get('reps')} repetitions, 95 % CI)", ""]
    if not config.get("complete", True):
        out += ["**Incomplete run**: interrupted or failed; the tables hold what was measured.", ""]
    quantities = list(dict.fromkeys(summary.quantity))
    rtts = [q for q in quantities if q.startswith("rtt_")]
    gains = [q for q in quantities if q.startswith("gain")]
    out += ["| axis | one-way ms | " + " | ".join(f"RTT {q[4:-3]} ms" for q in rtts) + " | "
            + " | ".join(f"{q.replace('_', ' ')} | {q.replace('_', ' ')} analytic" for q in gains) + " |",
            "|---|---:|" + "---:|" * (len(rtts) + 2 * len(gains))]

    def cell(r):
        if r.empty or math.isnan(r["mean"].iloc[0]):
            return "–"
        hw = r.half_width.iloc[0]
        return f"{r['mean'].iloc[0]:.2f}" + ("" if math.isnan(hw) else f" ± {hw:.2f}")

    for (axis, value), g in summary.groupby(["axis", "value_ms"], sort=False):
        q = {k: g[g.quantity == k] for k in rtts + gains}
        cells = [cell(q[k]) for k in rtts]
        for k in gains:
            analytic = q[k].analytic.iloc[0] if not q[k].empty else math.nan
            cells += [cell(q[k]), f"{analytic:.2f}"]
        out.append(f"| {axis} | {value:g} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# ---- figures (from the folder alone) ----------------------------------------------------------------

def draw(folder: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from experiments.plotting import STRATEGY_COLORS, save_figure

    summary = pd.read_csv(os.path.join(folder, "summary.csv"))
    sweep = pd.read_csv(os.path.join(folder, "sweep.csv"))
    axes_present = list(dict.fromkeys(summary.axis))
    out_dir = os.path.join(folder, "plots")
    os.makedirs(out_dir, exist_ok=True)
    written = []

    def errorbar(ax, g, color, label):
        yerr = [(g["mean"] - g.ci_low).fillna(0).clip(lower=0), (g.ci_high - g["mean"]).fillna(0).clip(lower=0)]
        ax.errorbar(g.value_ms, g["mean"], yerr=yerr, fmt="o-", color=color, capsize=4, label=label)

    fig = Figure(figsize=(5 * max(1, len(axes_present)), 4), layout="constrained")
    panels = fig.subplots(1, max(1, len(axes_present)), squeeze=False)[0]
    names = list(dict.fromkeys(sweep.strategy))
    gains = [q for q in dict.fromkeys(summary.quantity) if q.startswith("gain")]
    for ax, axis in zip(panels, axes_present):
        for quantity, s in zip(gains, names[1:]):
            g = summary[(summary.axis == axis) & (summary.quantity == quantity)].sort_values("value_ms")
            suffix = "" if len(gains) == 1 else f", {s}"
            errorbar(ax, g, STRATEGY_COLORS.get(s, "#0072B2") if len(gains) > 1 else "#0072B2",
                     f"measured (mean, 95 % CI{suffix})")
            ax.plot(g.value_ms, g.analytic, "k--", marker="x", label=f"analytic (link delays{suffix})")
        ax.axhline(1.0, color="#999999", linewidth=0.8)
        ax.set(xlabel=AXIS_LABELS.get(axis, axis), ylabel=f"RTT gain ({names[0]} / other)")
        ax.set_title(f"gain vs {axis}")
        ax.grid(alpha=0.3)
        ax.legend()
    written += save_figure(fig, out_dir, "gain", dpi=130)

    fig = Figure(figsize=(5 * max(1, len(axes_present)), 4), layout="constrained")
    panels = fig.subplots(1, max(1, len(axes_present)), squeeze=False)[0]
    for ax, axis in zip(panels, axes_present):
        for s in names:
            g = summary[(summary.axis == axis) & (summary.quantity == f"rtt_{s}_ms")].sort_values("value_ms")
            errorbar(ax, g, STRATEGY_COLORS.get(s, "#555555"), f"{s} measured")
            ax.plot(g.value_ms, g.analytic, "--", color=STRATEGY_COLORS.get(s, "#555555"), alpha=0.7,
                    label=f"{s} analytic")
            reps = sweep[(sweep.axis == axis) & (sweep.strategy == s)]
            ax.scatter(reps.value_ms, reps.rtt_median_ms, s=10, color=STRATEGY_COLORS.get(s, "#555555"), alpha=0.4)
        ax.set(xlabel=AXIS_LABELS.get(axis, axis), ylabel="median RTT MN1 <-> MN2 (ms)")
        ax.set_title(f"measured vs analytic RTT, {axis}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    written += save_figure(fig, out_dir, "rtt-vs-analytic", dpi=130)
    return written



# ---- the run ----------------------------------------------------------------------------------------

def run_point(args, folder: str, axis: str, value: float, rep: int, stop: threading.Event) -> list[dict] | None:
    """Every strategy at one point and repetition; sweep.csv rows, or None if interrupted."""
    from experiments.handover import run_strategy
    seed = args.seed + rep - 1
    link_params = point_link_params(axis, value, seed)
    delays = link_delays(link_params, args.addressing)
    analytic = analytic_rtt(delays, args.strategies)
    sub = os.path.join(folder, "runs", run_folder_name(axis, value, rep))
    os.makedirs(sub)
    records.write_config(sub, {"experiment": "sweep-point", "complete": False, "seed": seed,
                               "strategies": list(args.strategies), "addressing": args.addressing,
                               "scenario": args.scenario_obj.to_dict(),
                               "topology": {"links": "default", "link_params": link_params}})
    run = StrategyRun(scenario=args.scenario_obj, addressing=args.addressing, seed=seed, vcm_host=args.vcm_host,
                      link_params=link_params)
    for strategy in args.strategies:
        if stop.is_set() or not run_strategy(strategy, run, sub, stop):
            return None
    rtt = records.read_table(sub, "rtt")
    return [sweep_row(rtt, axis=axis, value=value, strategy=s, rep=rep, seed=seed, delays=delays, analytic=analytic)
            for s in args.strategies]


def write_outputs(folder: str, rows: list[dict], config: dict) -> pd.DataFrame:
    sweep = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    sweep.to_csv(os.path.join(folder, "sweep.csv"), index=False, float_format="%.3f")
    summary = summarise(sweep) if not sweep.empty else pd.DataFrame(columns=SUMMARY_COLUMNS)
    summary.to_csv(os.path.join(folder, "summary.csv"), index=False, float_format="%.4f")
    with open(os.path.join(folder, "summary.md"), "w", encoding="utf-8") as f:
        f.write(summary_markdown(summary, config))
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.plot:
        return redraw("sweep.py", args.plot, "sweep", "summary.csv", draw)
    if not_root("sweep.py"):
        return 2
    todo = points(args.axes)
    try:  # every point's link parameters are checked before a results folder exists
        for axis, value in todo:
            link_delays(point_link_params(axis, value, args.seed), args.addressing)
    except (PlanError, LinkConfigError) as exc:
        print(f"sweep.py: {exc}", file=sys.stderr)
        return 2
    os.makedirs(args.results, exist_ok=True)
    folder = records.new_folder(args.results, "sweep")
    stop = threading.Event()
    on_stop_signals(lambda *_: stop.set())
    config = {"experiment": "sweep", "complete": False, "argv": sys.argv, "seed": args.seed, "reps": args.reps,
              "quick": args.quick, "axes": {a: list(v) for a, v in args.axes.items()},
              "axis_links": AXES, "strategies": list(args.strategies), "addressing": args.addressing,
              "vcm": "host" if args.vcm_host else "in-sg", "scenario": args.scenario_obj.to_dict(),
              "host": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}, "versions": records.versions()}
    records.write_config(folder, config)
    runs = len(todo) * args.reps * len(args.strategies)
    print(f"sweep: {len(todo)} points x {args.reps} reps x {len(args.strategies)} strategies = {runs} runs; "
          f"results in {folder}", flush=True)
    started = time.monotonic()
    rows: list[dict] = []
    complete, code = False, 0
    try:
        for rep in range(1, args.reps + 1):   # repetitions outermost: an interrupted sweep still covers every point
            for axis, value in todo:
                print(f"sweep: {axis} = {value:g} ms, repetition {rep}", flush=True)
                point = run_point(args, folder, axis, value, rep, stop)
                if point is None:
                    raise KeyboardInterrupt
                rows += point
                write_outputs(folder, rows, config)
        complete = True
    except KeyboardInterrupt:
        print("sweep: interrupted: keeping what was measured", flush=True)
    except (LabError, PlanError, LinkConfigError, ScenarioError, StrategyError) as exc:
        print(f"sweep.py: {exc}", file=sys.stderr)
        code = 1
    config["complete"] = complete
    config["wall_s"] = time.monotonic() - started
    config["host"]["loadavg_end"] = os.getloadavg()
    records.write_config(folder, config)
    write_outputs(folder, rows, config)
    if not args.no_plots and rows:
        draw(folder)
    print(f"sweep: {'complete' if complete else 'INCOMPLETE'} in {config['wall_s']:.0f} s; {folder}", flush=True)
    with open(os.path.join(folder, "summary.md"), encoding="utf-8") as f:
        print(f.read())
    return code if complete or code else 130


if __name__ == "__main__":
    sys.exit(main())
