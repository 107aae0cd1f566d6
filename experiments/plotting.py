"""Figures drawn only from a results folder (see :mod:`experiments.records` for its files).

No network is started and nothing here imports Mininet; matplotlib draws off-screen (``Figure`` objects
with the Agg canvas, no pyplot state). Every ``*_figure`` function takes a :class:`Results` (``load(dir)``)
and returns a ``matplotlib.figure.Figure``, so tests can inspect axes and series; :func:`draw_all` saves
them all as PNG and SVG:

=================  ==========================================================================================
file               content
=================  ==========================================================================================
rtt-timeline       RTT of every probed pair over time, one panel per strategy; phases shaded and named,
                   moves marked with dashed lines; lost probes as crosses along the top edge
phase-bars         per phase and strategy: median RTT of the primary pair (whisker up to the 95th
                   percentile) and mean throughput
rtt-cdf            distribution of the primary pair's RTT per strategy, whole run
handover-gaps      longest interval without a delivered probe around each move, per strategy
costs              per strategy: bytes the SG relays MN-to-MN and MN-office, signalling messages and bytes
                   by kind, plaintext exposure
sequence-<s>       message sequence chart of strategy <s> from events.jsonl: lanes MN1, MN2, SG, VCM, HA
                   (plus any other node that sends or receives), one arrow per message event named in
                   ``records.MESSAGE_KINDS``; events are spaced evenly (the time of each is written on the
                   left), phases are separated by lines and moves are marked on the moving node's lane
topology           nodes and links of the address plan in config.json, with prefixes, and the moves of
                   the scenario
=================  ==========================================================================================

Colours: one per strategy everywhere (:data:`STRATEGY_COLORS`; others get further colours of the
same colour-blind-safe palette in order of appearance).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyBboxPatch, Rectangle  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from experiments import records  # noqa: E402

# Okabe-Ito palette: distinguishable with the common colour-vision deficiencies.
STRATEGY_COLORS = {"sg": "#D55E00", "vcm": "#0072B2", "insecure-ro": "#E69F00", "ha": "#009E73"}
_SPARE_COLORS = ["#CC79A7", "#56B4E9", "#000000", "#F0E442", "#999999"]
STRATEGY_LABELS = {"sg": "sg (via security gateway)", "vcm": "vcm (direct, keys from the VCM)",
                   "insecure-ro": "insecure-ro (direct, no SA)", "ha": "ha (home agent tunnel)"}
LANES = ["mn1", "mn2", "sg", "vcm", "ha"]
PHASE_SHADES = ("#f2f2f2", "#ffffff")
FORMATS = ("png", "svg")
DPI = 130


@dataclass
class Results:
    folder: str
    config: dict
    events: list
    rtt: pd.DataFrame
    throughput: pd.DataFrame
    handovers: pd.DataFrame
    counters: pd.DataFrame
    summary: pd.DataFrame
    spans: pd.DataFrame
    moves: pd.DataFrame
    strategies: list = field(default_factory=list)
    pair: str = ""

    def color(self, strategy: str) -> str:
        if strategy in STRATEGY_COLORS:
            return STRATEGY_COLORS[strategy]
        others = [s for s in self.strategies if s not in STRATEGY_COLORS]
        i = others.index(strategy) if strategy in others else len(others)
        return _SPARE_COLORS[i % len(_SPARE_COLORS)]

    def phases(self) -> list[str]:
        scenario = (self.config.get("scenario") or {}).get("phase") or []
        names = [p["name"] for p in scenario] or list(dict.fromkeys(self.spans.phase))
        return names


def load(folder: str) -> Results:
    """Read everything the figures need; raises records.RecordsError for a folder that is not a result."""
    config = records.read_config(folder)
    events = records.read_events(folder)
    rtt = records.read_table(folder, "rtt")
    spans = records.phase_spans(folder, events)
    summary = records.summarise(folder)
    strategies = list(config.get("strategies") or [])
    for df in (spans, rtt, summary):
        for s in dict.fromkeys(df.strategy):
            if s not in strategies:
                strategies.append(s)
    return Results(folder, config, events, rtt, records.read_table(folder, "throughput"),
                   records.read_table(folder, "handovers"), records.read_table(folder, "counters"), summary,
                   spans, records.moves(events), strategies, records.primary_pair(rtt, config))


def _label(strategy: str) -> str:
    return STRATEGY_LABELS.get(strategy, strategy)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])


def _shade_phases(ax, spans: pd.DataFrame, names: bool) -> None:
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for i, span in enumerate(spans.itertuples(index=False)):
        ax.axvspan(span.t_start, span.t_end, color=PHASE_SHADES[i % 2], zorder=0, lw=0)
        if names:
            ax.text((span.t_start + span.t_end) / 2, 1.02, span.phase, transform=trans, ha="center",
                    va="bottom", fontsize=8, rotation=0, color="#333333", clip_on=False)


# ------------------------------------------------------------------------------------------------------
# RTT over time


def rtt_timeline_figure(res: Results) -> Figure:
    strategies = [s for s in res.strategies if s in set(res.rtt.strategy)] or res.strategies[:1]
    n = max(1, len(strategies))
    fig = Figure(figsize=(11, 1.5 + 2.3 * n), dpi=DPI, layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    pairs = list(dict.fromkeys(res.rtt.pair))
    markers = {p: m for p, m in zip(pairs, ["o", "s", "^", "D", "v"] * 4)}
    answered = res.rtt[~res.rtt.lost].rtt_ms.dropna()
    handles = {}
    for i, (ax, strategy) in enumerate(zip(axes, strategies)):
        spans = res.spans[res.spans.strategy == strategy]
        _shade_phases(ax, spans, names=(i == 0))
        data = res.rtt[res.rtt.strategy == strategy]
        if data.empty:
            _empty(ax, f"{strategy}: no RTT records")
            continue
        for pair in pairs:
            d = data[(data.pair == pair) & ~data.lost]
            primary = pair == res.pair
            h = ax.scatter(d.t, d.rtt_ms, s=6 if primary else 4, marker=markers[pair], linewidths=0,
                           color=res.color(strategy) if primary else "#7f7f7f", alpha=0.9 if primary else 0.6,
                           label=f"{pair}" + (" (strategy colour)" if primary else ""), zorder=3)
            handles.setdefault(h.get_label(), h)
        lost = data[data.lost]
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        if not lost.empty:
            h = ax.scatter(lost.t, np.full(len(lost), 0.95), transform=trans, marker="x", s=14, color="#c00000",
                           linewidths=0.8, label="lost probe", zorder=4, clip_on=False)
            handles.setdefault("lost probe", h)
        for mv in res.moves[res.moves.strategy == strategy].itertuples(index=False):
            ax.axvline(mv.t, color="#444444", ls="--", lw=0.9, zorder=2)
            ax.text(mv.t, 0.88, f" {mv.node}\u2192{mv.to}", transform=trans, fontsize=7.5, va="top",
                    ha="left", color="#222222", zorder=5)
        ax.set_yscale("log")
        ax.set_ylabel("RTT (ms)")
        lost_note = f"  \u2014  {len(lost)} of {len(data)} probes lost" if len(data) else ""
        ax.set_title(_label(strategy) + lost_note, loc="left", fontsize=9.5, color=res.color(strategy),
                     pad=14 if i == 0 else 4)
        ax.grid(axis="y", which="major", color="#dddddd", lw=0.6)
    if not answered.empty:
        # Headroom above the data for the move labels and the lost-probe crosses.
        axes[0].set_ylim(answered.min() / 1.6, answered.max() * 6)
    axes[-1].set_xlabel("time since the scenario started (s)")
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=len(handles),
                   fontsize=8, markerscale=2.5, frameon=False)
    incomplete = "" if res.config.get("complete", True) else " \u2014 INCOMPLETE RUN (interrupted)"
    fig.suptitle("Round-trip time over the scenario (phases shaded, moves dashed)" + incomplete, fontsize=11)
    return fig


# ------------------------------------------------------------------------------------------------------
# Per-phase bars


def _grouped(ax, res: Results, phases: list[str], values: dict, errors: dict | None = None,
             annotate: str | None = None, half_widths: dict | None = None) -> None:
    """Grouped bars per phase; ``errors``: upper whisker ends (e.g. a percentile), ``half_widths``:
    symmetric whiskers (a confidence interval)."""
    strategies = [s for s in res.strategies if s in values]
    width = 0.8 / max(1, len(strategies))
    x = np.arange(len(phases))
    for j, s in enumerate(strategies):
        ys = np.array(values[s], dtype=float)
        offs = x - 0.4 + width * (j + 0.5)
        yerr = None
        if errors is not None:
            upper = np.nan_to_num(np.array(errors[s], dtype=float) - ys, nan=0.0).clip(min=0)
            yerr = np.vstack([np.zeros_like(upper), upper])
        elif half_widths is not None:
            half = np.nan_to_num(np.array(half_widths[s], dtype=float), nan=0.0).clip(min=0)
            yerr = np.vstack([np.minimum(half, np.nan_to_num(ys)), half])
        ax.bar(offs, np.nan_to_num(ys), width * 0.92, color=res.color(s), label=_label(s), yerr=yerr,
               error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333333"})
        if annotate:
            tops = ys if errors is None else np.fmax(ys, np.array(errors[s], dtype=float))
            if half_widths is not None:
                tops = ys + np.nan_to_num(np.array(half_widths[s], dtype=float), nan=0.0)
            for xo, y, top in zip(offs, ys, tops):
                if not math.isnan(y):
                    ax.text(xo, top, annotate.format(y), ha="center", va="bottom", fontsize=7,
                            rotation=0 if len(strategies) <= 3 else 90)
    crowded = len(phases) > 6
    ax.set_xticks(x, phases, rotation=20 if crowded else 0, ha="right" if crowded else "center", fontsize=8.5)
    ax.grid(axis="y", color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)


def phase_bars_figure(res: Results) -> Figure:
    phases = res.phases()
    fig = Figure(figsize=(11, 7), dpi=DPI, layout="constrained")
    ax_rtt, ax_thr = fig.subplots(2, 1)
    med, p95, thr, thr_ci = {}, {}, {}, {}
    for s in res.strategies:
        g = res.summary[res.summary.strategy == s].set_index("phase")
        if g.empty:
            continue
        med[s] = [g.rtt_median_ms.get(p, math.nan) for p in phases]
        p95[s] = [g.rtt_p95_ms.get(p, math.nan) for p in phases]
        thr[s] = [g.throughput_mbit_s.get(p, math.nan) for p in phases]
        thr_ci[s] = [g.throughput_ci95_mbit_s.get(p, math.nan) for p in phases]
    if med:
        _grouped(ax_rtt, res, phases, med, p95, annotate="{:.1f}")
        ax_rtt.set_ylabel(f"median RTT {res.pair} (ms)")
        ax_rtt.set_title("RTT per phase (bar: median, whisker: 95th percentile)", loc="left", fontsize=10)
        ax_rtt.legend(fontsize=8, loc="upper left")
        ax_rtt.margins(y=0.15)
    else:
        _empty(ax_rtt, "no RTT records")
    if any(not all(math.isnan(v) for v in vals) for vals in thr.values()):
        _grouped(ax_thr, res, phases, thr, annotate="{:.1f}", half_widths=thr_ci)
        positive = [v for vals in thr.values() for v in vals if v > 0]
        if positive and max(positive) > 50 * min(positive):   # office Gbit/s next to WLAN Mbit/s
            ax_thr.set_yscale("log", nonpositive="clip")
            ax_thr.set_ylim(min(positive) / 2, max(positive) * 4)
        ax_thr.set_ylabel("throughput (Mbit/s)")
        ax_thr.set_title("MN-to-MN TCP throughput per phase (mean of iperf3's interval rates, whisker: 95 % "
                         "half-width)", loc="left", fontsize=10)
        ax_thr.margins(y=0.15)
    else:
        _empty(ax_thr, "no throughput records")
    return fig


# ------------------------------------------------------------------------------------------------------
# RTT distribution


def rtt_cdf_figure(res: Results) -> Figure:
    fig = Figure(figsize=(7.5, 4.8), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    drawn = 0
    for s in res.strategies:
        d = res.rtt[(res.rtt.strategy == s) & (res.rtt.pair == res.pair) & ~res.rtt.lost].rtt_ms.dropna()
        if d.empty:
            continue
        x = np.sort(d.to_numpy())
        y = np.arange(1, len(x) + 1) / len(x)
        ax.step(x, y, where="post", color=res.color(s), lw=1.6, label=f"{_label(s)} (n={len(x)})")
        drawn += 1
    if not drawn:
        _empty(ax, "no RTT records")
        return fig
    ax.set_xscale("log")
    ax.set_xlabel(f"RTT {res.pair} (ms, log scale)")
    ax.set_ylabel("fraction of probes \u2264 x")
    ax.set_ylim(0, 1.01)
    ax.grid(color="#dddddd", lw=0.6, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"RTT distribution over the whole scenario, {res.pair}", loc="left", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------------------
# Handover gaps


def handover_gaps_figure(res: Results) -> Figure:
    fig = Figure(figsize=(9, 4.8), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    h = res.handovers
    if h.empty:
        _empty(ax, "no handovers recorded")
        return fig
    keys = list(dict.fromkeys(zip(h.phase, h.node, h["from"], h.to)))
    labels = [f"{node}: {a}\u2192{b}\n({phase})" for phase, node, a, b in keys]
    values = {}
    for s in res.strategies:
        g = h[h.strategy == s]
        if g.empty:
            continue
        values[s] = [g[(g.phase == k[0]) & (g.node == k[1])].gap_ms.max() for k in keys]
    _grouped(ax, res, labels, values, annotate="{:.0f}")
    ax.set_xticks(np.arange(len(labels)), labels, rotation=0, ha="center", fontsize=8)
    ax.set_ylabel("longest interval without delivery (ms)")
    ax.set_title("Handover gap per move (probe echoes)", loc="left", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.margins(y=0.18)
    return fig


# ------------------------------------------------------------------------------------------------------
# Costs: SG load, signalling, exposure


def costs_figure(res: Results) -> Figure:
    """Four panels: the SG's relay load (MN-to-MN and MN-office bytes, one bar each per strategy), signalling
    messages and signalling bytes by kind (stacked, one bar per strategy), plaintext exposure."""
    fig = Figure(figsize=(15, 4.4), dpi=DPI, layout="constrained")
    ax_sg, ax_sig, ax_bytes, ax_exp = fig.subplots(1, 4)
    c = res.counters
    strategies = res.strategies
    x = np.arange(len(strategies))
    colors = [res.color(s) for s in strategies]

    width = 0.4
    for j, (metric, label, hatch) in enumerate((("sg_relayed_bytes", "MN \u2194 MN", None),
                                                 ("sg_mn_office_bytes", "MN \u2194 office", "//"))):
        values = [c[(c.strategy == s) & (c.metric == metric)].value.sum() / 1e6 for s in strategies]
        offs = x - width / 2 + j * width
        ax_sg.bar(offs, values, width * 0.92, color=colors, hatch=hatch, edgecolor="white", lw=0.4, label=label)
        for xi, v in zip(offs, values):
            ax_sg.text(xi, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax_sg.legend(fontsize=7.5, loc="upper right")
    ax_sg.set_ylabel("bytes relayed by the SG (MB)")
    ax_sg.set_title("Load on the security gateway", loc="left", fontsize=10)

    known = list(records.MESSAGE_KINDS)
    cmap = matplotlib.colormaps["tab20b"]   # avoids the strategy colours
    sig_all = c[c.metric.isin(["signalling_messages", "signalling_bytes"])]
    kinds = sorted(dict.fromkeys(sig_all.detail), key=lambda k: (known.index(k) if k in known else len(known), k))
    for ax, metric, ylabel, title in ((ax_sig, "signalling_messages", "messages sent", "Signalling messages by kind"),
                                      (ax_bytes, "signalling_bytes", "bytes sent", "Signalling bytes by kind")):
        sig = c[c.metric == metric]
        bottom = np.zeros(len(strategies))
        for k, kind in enumerate(kinds):
            values = np.array([sig[(sig.strategy == s) & (sig.detail == kind)].value.sum() for s in strategies])
            label = records.MESSAGE_KINDS.get(kind, (kind,))[0]
            ax.bar(x, values, bottom=bottom, color=cmap(k % 20), label=label, edgecolor="white", lw=0.4)
            bottom += values
        if kinds and sig.value.sum() > 0:
            for xi, v in zip(x, bottom):
                ax.text(xi, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=7.5)
            ax.legend(fontsize=6.5, ncols=2, loc="upper left")
            ax.margins(y=0.45)
        else:
            _empty(ax, "no signalling counted")
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left", fontsize=10)

    exposure = [c[(c.strategy == s) & (c.metric == "plaintext_exposure_bytes")].value.sum() for s in strategies]
    ax_exp.bar(x, exposure, color=colors)
    for xi, v in zip(x, exposure):
        ax_exp.text(xi, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    ax_exp.set_ylabel("payload marker bytes seen on public links")
    ax_exp.set_title("Plaintext exposure to an eavesdropper", loc="left", fontsize=10)
    for ax in (ax_sg, ax_sig, ax_bytes, ax_exp):
        if ax.get_xticks().size or ax in (ax_sg, ax_exp):
            ax.set_xticks(x, strategies)
        ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
        ax.grid(axis="y", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
    ax_sg.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.1f}"))
    ax_sg.margins(y=0.15)
    ax_exp.margins(y=0.15)
    if not max(exposure, default=0):   # all zero: a readable axis instead of ticks around 0
        ax_exp.set_ylim(0, 1)
        ax_exp.set_yticks([0, 1])
    return fig


# ------------------------------------------------------------------------------------------------------
# Message sequence chart


def message_arrows(res: Results, strategy: str) -> list[dict]:
    """The strategy's signalling messages as {t, src, dst, kind, label, bytes}, in time order: chart events
    and the nodes' ``mobility_sent`` events (BU, BA, HoTI, ...; receiver from config.json
    ``topology.addresses``); messages without a known sender or receiver are left out."""
    per = records.events_by_strategy(res.events).get(strategy, [])
    addresses = (res.config.get("topology") or {}).get("addresses") or {}
    arrows = []
    for e in per:
        message = records.signalling_message(e, addresses)
        if message is None:
            continue
        src, dst = message["src"], message["dst"]
        if not src or not dst or src == dst:
            continue
        label = records.MESSAGE_KINDS[message["kind"]][0]
        arrows.append({"t": e["t"], "src": src, "dst": dst, "kind": message["kind"],
                       "label": e.get("label") or label, "bytes": message["bytes"]})
    return arrows


def sequence_strategies(res: Results) -> list[str]:
    return [s for s in res.strategies if message_arrows(res, s)]


def sequence_figure(res: Results, strategy: str, max_messages: int = 80) -> Figure:
    arrows = message_arrows(res, strategy)[:max_messages]
    per = records.events_by_strategy(res.events).get(strategy, [])
    moves = [e for e in per if e["event"] == "move"]
    phases = [e for e in per if e["event"] == "phase_start"]
    lanes = list(LANES)
    for a in arrows:
        for node in (a["src"], a["dst"]):
            if node not in lanes:
                lanes.append(node)
    # Rows: phase headers, moves and messages, evenly spaced in time order.
    items = [("phase", e["t"], e) for e in phases] + [("move", e["t"], e) for e in moves] + \
            [("msg", a["t"], a) for a in arrows]
    order = {"phase": 0, "move": 1, "msg": 2}
    items.sort(key=lambda it: (it[1], order[it[0]]))
    rows = max(1, len(items))
    fig = Figure(figsize=(1.9 * len(lanes) + 1.6, 1.2 + 0.3 * rows), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    lane_x = {lane: i for i, lane in enumerate(lanes)}
    ax.set_xlim(-0.9, len(lanes) - 0.4)
    ax.set_ylim(rows + 0.2, -1.5)
    for lane, x in lane_x.items():
        ax.axvline(x, color="#888888", lw=1.0, zorder=1)
        ax.text(x, -0.7, lane.upper(), ha="center", va="bottom", fontsize=10, fontweight="bold",
                bbox={"boxstyle": "round,pad=0.3", "fc": "#eef3f8", "ec": "#555555"}, zorder=3)
    color = res.color(strategy)
    for y, (what, t, item) in enumerate(items, start=0):
        y = y + 0.5
        ax.text(-0.85, y, f"{t:7.3f} s", ha="left", va="center", fontsize=7, family="monospace",
                color="#555555")
        if what == "phase":
            ax.axhline(y - 0.3, color="#bbbbbb", lw=0.8, ls="-", zorder=0)
            ax.text(len(lanes) - 0.45, y, f"phase {item['phase']}", ha="right", va="center", fontsize=8,
                    style="italic", color="#333333", bbox={"fc": "white", "ec": "none", "pad": 0.5}, zorder=4)
        elif what == "move":
            x = lane_x.get(item.get("node"), None)
            if x is not None:
                ax.plot([x], [y], marker="D", color="#222222", ms=5, zorder=4)
                ax.text(x + 0.08, y, f"moves {item.get('from')} \u2192 {item.get('to')}", ha="left",
                        va="center", fontsize=7.5, color="#222222",
                        bbox={"fc": "white", "ec": "none", "pad": 0.5}, zorder=4)
        else:
            x0, x1 = lane_x[item["src"]], lane_x[item["dst"]]
            ax.annotate("", xy=(x1, y), xytext=(x0, y),
                        arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.2,
                                    "shrinkA": 0, "shrinkB": 0}, zorder=3)
            ax.text((x0 + x1) / 2, y - 0.08, item["label"], ha="center", va="bottom", fontsize=7.5,
                    color="#111111", zorder=4, bbox={"fc": "white", "ec": "none", "pad": 0.4})
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    shown = f" (first {max_messages})" if len(message_arrows(res, strategy)) > max_messages else ""
    fig.suptitle(f"Message sequence, strategy {strategy}{shown}: one row per event in time order "
                 f"(time since the scenario started on the left)", fontsize=9.5, x=0.02, ha="left")
    return fig


# ------------------------------------------------------------------------------------------------------
# Topology


def topology_figure(res: Results) -> Figure:
    topo = res.config.get("topology") or {}
    plan = topo.get("plan") or {}
    fig = Figure(figsize=(12, 6.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    if not plan:
        _empty(ax, "config.json has no topology.plan")
        return fig
    office = plan.get("office", {})
    access = plan.get("access", {})
    mns = plan.get("mobile_nodes", [])
    pos: dict[str, tuple[float, float]] = {}
    hosts = [h for h in office if h != "sg"]
    for i, h in enumerate(hosts):
        pos[h] = (0.0, 5.0 - i * (5.0 / max(1, len(hosts) - 1)))
    pos["office LAN"] = (1.5, 2.5)
    pos["sg"] = (3.0, 2.5)
    pos["ir"] = (4.7, 2.5)
    nets = list(access)
    ext = plan.get("external_home_prefix")
    rows = nets + (["xha"] if ext else [])
    for i, n in enumerate(rows):
        y = 5.0 - i * (5.0 / max(1, len(rows) - 1))
        if n == "xha":
            pos["xha"] = (6.3, y)
        else:
            pos[f"ar:{n}"] = (6.3, y)
            pos[f"net:{n}"] = (7.9, y)

    def box(name, label, sub, fc, ec="#444444"):
        x, y = pos[name]
        ax.add_patch(FancyBboxPatch((x - 0.5, y - 0.28), 1.0, 0.56, boxstyle="round,pad=0.02,rounding_size=0.08",
                                    fc=fc, ec=ec, lw=1.0, zorder=3))
        ax.text(x, y + 0.07, label, ha="center", va="center", fontsize=9, fontweight="bold", zorder=4)
        if sub:
            ax.text(x, y - 0.14, sub, ha="center", va="center", fontsize=6.2, family="monospace", zorder=4)

    def line(a, b, label=None, style="-", color="#555555"):
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.plot([x0, x1], [y0, y1], ls=style, color=color, lw=1.3, zorder=1)
        if label:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.12, label, ha="center", va="bottom", fontsize=6.5,
                    family="monospace", color="#333333", zorder=2,
                    bbox={"fc": "white", "ec": "none", "pad": 0.3, "alpha": 0.8})

    ax.add_patch(Rectangle((-0.75, -0.6), 4.5, 6.2, fc="#e8f3e8", ec="#5a9a5a", lw=1.0, ls="--", zorder=0))
    ax.text(-0.7, 5.5, f"internal portion (VPN {', '.join(plan.get('vpn_prefixes', []))})", fontsize=8,
            color="#2d6a2d", va="top")
    ax.add_patch(Rectangle((3.85, -0.6), 7.85, 6.2, fc="#f4f4f4", ec="#999999", lw=1.0, ls="--", zorder=0))
    ax.text(3.9, 5.5, "external portion (Internet, visited networks)", fontsize=8, color="#555555", va="top")
    params = topo.get("link_params") or {}

    def delay(name):
        p = params.get(name) or {}
        return f" {p['delay_ms']:g} ms" if "delay_ms" in p else ""

    for h in hosts:
        box(h, h, office[h], "#ffffff")
        line(h, "office LAN")
    box("office LAN", "office LAN", plan.get("office_prefix", ""), "#d9ead3")
    box("sg", "sg", plan.get("sg_public", ""), "#fde2c8", ec="#D55E00")
    line("office LAN", "sg")
    box("ir", "ir", "Internet core", "#eeeeee")
    line("sg", "ir", "sg-ir" + delay("sg-ir"))
    ar_names = {"wlan1": "ar1", "wlan2": "ar2", "cell": "ar3"}
    for n, info in access.items():
        ar = ar_names.get(n, f"ar-{n}")
        box(f"ar:{n}", ar, info.get("router", ""), "#eeeeee")
        box(f"net:{n}", n, info.get("prefix", ""), "#dde8f5" if info.get("kind") == "wlan" else "#f5e6dd")
        line("ir", f"ar:{n}", f"ir-{ar}" + delay(f"ir-{ar}"))
        line(f"ar:{n}", f"net:{n}", delay(f"{ar}-{n}").strip() or None)
    if ext:
        box("xha", "xha", ext, "#f0e6f5")
        line("ir", "xha")
    # Mobile nodes at their attachment in the plan.
    stacked: dict[str, int] = {}
    for mn in mns:
        where = mn.get("attachment", "office")
        k = stacked.get(where, 0)
        stacked[where] = k + 1
        if where == "office":
            pos[mn["name"]] = (1.5 + 1.2 * (k % 2), 1.2 - 0.75 * (k // 2))
            anchor = "office LAN"
        else:
            x, y = pos[f"net:{where}"]
            pos[mn["name"]] = (9.4 + 1.15 * (k // 2), y - 0.7 * (k % 2))
            anchor = f"net:{where}"
        box(mn["name"], mn["name"], mn.get("home_address", ""), "#cfe2f3", ec="#0072B2")
        line(anchor, mn["name"])
    scenario = res.config.get("scenario") or {}
    moves = []
    for p in scenario.get("phase", []):
        for m in (p.get("move") or []):
            moves.append(f"{p['name']}: {m['node']} \u2192 {m['to']}")
    if moves:
        ax.text(8.9, -0.45, "moves in the scenario\n" + "\n".join(f"{i}. {m}" for i, m in enumerate(moves, 1)),
                fontsize=7.5, va="bottom", ha="left", bbox={"fc": "white", "ec": "#999999", "pad": 4})
    ax.set_xlim(-0.8, 11.8)
    ax.set_ylim(-0.7, 5.7)
    ax.set_title(f"Topology and address plan ({plan.get('addressing', '?')} addressing)", loc="left",
                 fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------------------


def figure_builders(res: Results) -> dict:
    """Figure name -> function drawing it, in the order the figures are listed."""
    out = {"rtt-timeline": rtt_timeline_figure, "phase-bars": phase_bars_figure, "rtt-cdf": rtt_cdf_figure,
           "handover-gaps": handover_gaps_figure, "costs": costs_figure, "topology": topology_figure}
    for s in sequence_strategies(res):
        out[f"sequence-{s}"] = lambda r, s=s: sequence_figure(r, s)
    return out


def figures(res: Results) -> dict[str, Figure]:
    return {name: build(res) for name, build in figure_builders(res).items()}


def draw_all(folder: str, out_dir: str | None = None, formats=FORMATS, only=None,
             workers: int = 1) -> dict[str, list[str]]:
    """Draw every figure of a results folder (or those named in ``only``) into ``out_dir`` (default
    ``<folder>/plots``); returns figure name -> written paths. ``workers`` > 1 shares the figures out
    among that many processes (saving PNG and SVG is most of the time, and it is CPU-bound)."""
    res = load(folder)
    out_dir = out_dir or os.path.join(folder, "plots")
    os.makedirs(out_dir, exist_ok=True)
    names = [n for n in figure_builders(res) if only is None or n in only]
    if workers > 1 and len(names) > 1:
        import concurrent.futures
        import multiprocessing
        shares = [names[i::workers] for i in range(workers) if names[i::workers]]
        with concurrent.futures.ProcessPoolExecutor(len(shares),
                                                    mp_context=multiprocessing.get_context("fork")) as pool:
            parts = list(pool.map(_draw_share, [(folder, out_dir, tuple(formats), share) for share in shares]))
        merged = {k: v for part in parts for k, v in part.items()}
        return {name: merged[name] for name in names}
    builders = figure_builders(res)
    return {name: save_figure(builders[name](res), out_dir, name, formats) for name in names}


def save_figure(fig, out_dir: str, name: str, formats=FORMATS, **savefig) -> list[str]:
    """``fig`` as ``<out_dir>/<name>.<format>`` in each format; the paths written."""
    paths = []
    for fmt in formats:
        path = os.path.join(out_dir, f"{name}.{fmt}")
        fig.savefig(path, format=fmt, **savefig)
        paths.append(path)
    return paths


def _draw_share(job) -> dict[str, list[str]]:
    folder, out_dir, formats, share = job
    return draw_all(folder, out_dir, formats, only=share)
