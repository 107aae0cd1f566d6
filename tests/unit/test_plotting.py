"""Results folder tables (records) and figures (plotting) on a synthetic run: 3 strategies x 5 phases.

The synthetic folder has what a real run writes: config.json with scenario and address plan, events.jsonl
with experiment events and signalling messages, rtt.csv from probe records, throughput.csv, counters.csv;
handovers.csv and summary.csv are computed by experiments.records as the experiment will do.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from experiments import plotting, records
from experiments import scenario as sc
from topologies.addressing import make_plan

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STRATEGIES = ["sg", "vcm", "insecure-ro"]
EPOCH = 1_800_000_000.0
# One-way delays (ms) of the synthetic topology.
OFFICE, CORE, ACCESS = 0.1, 5.0, 2.0
RADIO = {"office": 0.0, "wlan1": 3.0, "wlan2": 3.0, "cell": 20.0}


def synthetic_rtt(strategy, where, t_ro):
    """RTT mn1-mn2 (ms) for the attachments ``where`` at time t (route optimised after t_ro)."""
    a, b = where["mn1"], where["mn2"]
    if a == "office" and b == "office":
        return 0.3
    leg = lambda n: OFFICE if n == "office" else RADIO[n] + ACCESS + CORE  # node to the SG
    via_sg = 2 * (leg(a) + leg(b))
    if a != "office" and b != "office" and strategy != "sg" and t_ro:
        return 2 * (RADIO[a] + ACCESS + ACCESS + RADIO[b]) + (0.4 if strategy == "vcm" else 0.2)
    return via_sg + (0.4 if strategy != "insecure-ro" else 0.2)


def make_results(folder, strategies=STRATEGIES, phases=5, seed=1):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    scenario = sc.load_default()
    scenario = sc.Scenario.from_dict({**scenario.to_dict(), "phase": scenario.to_dict()["phase"][:phases]},
                                     "synthetic")
    plan = make_plan("private", 2, ["office", "office"])
    addresses = {plan.office["ha"]: "ha", plan.sg_public: "sg"}
    for mn in plan.mobile_nodes:
        addresses[mn.home_address] = mn.name
        addresses.update({mn.address_in(a): mn.name for a in plan.access.values()})
    config = {"experiment": "handover", "complete": True, "seed": seed, "strategies": strategies,
              "scenario": scenario.to_dict(), "topology": {"plan": plan.as_dict(), "addresses": addresses,
                                                           "link_params": {"sg-ir": {"delay_ms": CORE}}}}
    records.write_config(folder, config)
    events, rtt_rows, thr_rows, counter_rows = [], [], [], []
    t_base = EPOCH
    for strategy in strategies:
        t0 = t_base
        events.append({"time": t0, "node": "experiment", "event": "strategy_start", "strategy": strategy})
        where = dict(scenario.start)
        ro_at = None
        probe = []
        for phase in scenario.phases:
            start = t0 + scenario.phase_starts()[phase.name]
            events.append({"time": start, "node": "experiment", "event": "phase_start", "strategy": strategy,
                           "phase": phase.name})
            for m in phase.moves:
                events.append({"time": start + m.at_s, "node": m.node, "event": "move", "strategy": strategy,
                               "phase": phase.name, "from": where[m.node], "to": m.to})
                where[m.node] = m.to
            outside = all(w != "office" for w in where.values())
            if outside and ro_at is None and strategy != "sg":
                ro_at = start + (0.35 if strategy == "vcm" else 0.15)
                # VCM control messages as the nodes log them (neutral: sender, receiver, type) ...
                if strategy == "vcm":
                    msgs = [("sg", "report_202", "vcm", "REPORT"), ("vcm", "ack_204", "sg", "REPORT_ACK"),
                            ("vcm", "keys_206", "mn2", "KEYS"), ("vcm", "keys_210", "mn1", "KEYS"),
                            ("mn2", "ack_208", "vcm", "KEYS_ACK"), ("vcm", "ack_208", "mn1", "PEER_READY"),
                            ("mn1", "ack_212", "vcm", "KEYS_ACK"), ("vcm", "ack_212", "mn2", "PEER_READY")]
                else:
                    msgs = []
                # ... and route optimisation as runs from before that logged it: named after the chart
                msgs += [("mn1", "hoti", "mn2", None), ("mn1", "coti", "mn2", None), ("mn2", "hot", "mn1", None),
                         ("mn2", "cot", "mn1", None), ("mn1", "bu", "mn2", None), ("mn2", "ba", "mn1", None)]
                for k, (src, kind, dst, vcm_type) in enumerate(msgs):
                    logged = ({"event": "vcm_message", "peer": dst, "type": vcm_type} if vcm_type
                              else {"event": kind, "to": dst})
                    events.append({"time": start + 0.02 + 0.03 * k, "node": src, **logged, "bytes": 120})
                    counter_rows.append({"strategy": strategy, "phase": phase.name,
                                         "metric": "signalling_messages", "detail": kind, "value": 1})
                    counter_rows.append({"strategy": strategy, "phase": phase.name,
                                         "metric": "signalling_bytes", "detail": kind, "value": 120})
            for m in phase.moves:   # binding update to the home agent on every move out
                if m.to != "office":
                    events.append({"time": start + 0.01, "node": m.node, "event": "bu", "to": "ha"})
                    events.append({"time": start + 0.012, "node": "ha", "event": "ba", "to": m.node})
                    counter_rows.append({"strategy": strategy, "phase": phase.name,
                                         "metric": "signalling_messages", "detail": "bu", "value": 1})
                    # and to the SG, as the nodes log it: mobility_sent with the destination address
                    coa = plan.mobile(m.node).address_in(plan.access[m.to])
                    events.append({"time": start + 0.014, "node": m.node, "event": "mobility_sent",
                                   "what": "BU seq 3 lifetime 60 to sg", "dst": plan.sg_public, "bytes": 122})
                    events.append({"time": start + 0.016, "node": "sg", "event": "mobility_sent",
                                   "what": "BA status 0 seq 3", "dst": coa, "bytes": 110})
            gap = {"sg": 0.15, "vcm": 0.22, "insecure-ro": 0.12}.get(strategy, 0.18) if phase.moves else 0.0
            n = int(phase.duration_s * 50)
            for i in range(n):
                t_sent = start + i * 0.02
                ro = ro_at is not None and t_sent >= ro_at
                base = synthetic_rtt(strategy, where, ro)
                lost = t_sent - start < gap
                rtt = None if lost else base * (1 + abs(rng.normal(0, 0.05))) + rng.exponential(0.2)
                probe.append({"seq": len(probe), "status": "lost" if lost else "ok", "t_sent": t_sent,
                              "rtt_ms": rtt, "owd_ms": None if lost else rtt / 2})
            thr = 900.0 if all(w == "office" for w in where.values()) else \
                (180.0 if strategy == "sg" or ro_at is None else 260.0) / (3 if "cell" in where.values() else 1)
            thr_rows.append({"strategy": strategy, "phase": phase.name, "flow": "mn1->mn2", "protocol": "tcp",
                             "t_start": start - t0 + 1.5, "duration_s": phase.duration_s - 1.5,
                             "mbit_s": thr * rng.uniform(0.9, 1.1), "retransmits": 3})
            external = sum(w != "office" for w in where.values())
            relayed = 0 if (external == 0 or (ro_at is not None and external == 2)) else 50 * phase.duration_s
            counter_rows.append({"strategy": strategy, "phase": phase.name, "metric": "sg_relayed_packets",
                                 "detail": "", "value": relayed * 2})
            counter_rows.append({"strategy": strategy, "phase": phase.name, "metric": "sg_relayed_bytes",
                                 "detail": "", "value": relayed * 2 * 150 + (2e6 if relayed else 0)})
            office = 20 * phase.duration_s * 2 if any(w != "office" for w in where.values()) else 0
            counter_rows.append({"strategy": strategy, "phase": phase.name, "metric": "sg_mn_office_packets",
                                 "detail": "mn-office", "value": office})
            counter_rows.append({"strategy": strategy, "phase": phase.name, "metric": "sg_mn_office_bytes",
                                 "detail": "mn-office", "value": office * 120})
            exposed = 64 * 50 * phase.duration_s if strategy == "insecure-ro" and ro_at is not None else 0
            counter_rows.append({"strategy": strategy, "phase": phase.name,
                                 "metric": "plaintext_exposure_bytes", "detail": "ir-ar1", "value": exposed})
        end = t0 + scenario.duration_s
        events.append({"time": end, "node": "experiment", "event": "strategy_end", "strategy": strategy,
                       "complete": True})
        records.append_events(folder, [e for e in events if e.get("strategy") == strategy or
                                       (e["time"] >= t0 and e["time"] <= end and "strategy" not in e)])
        events_so_far = records.read_events(folder)
        spans = records.phase_spans(folder, events_so_far)
        rtt_rows += records.probe_rows(probe, strategy=strategy, pair="mn1-mn2", t0=t0, spans=spans,
                                       path_of=lambda t, r=ro_at, t0=t0: (
                                           "office" if t < 3 else "direct" if r is not None and t + t0 >= r
                                           else "via-sg"))
        t_base = end + 5.0
        events = []
    # A second probed pair, to the file server.
    for strategy in strategies:
        for i in range(0, 300, 2):
            rtt_rows.append({"strategy": strategy, "phase": "", "pair": "mn1-fs", "t": i * 0.05, "seq": i,
                             "rtt_ms": 10.0 + rng.normal(0, 0.3), "lost": False, "path": "via-sg"})
    records.write_table(folder, "rtt", rtt_rows)
    records.write_table(folder, "throughput", thr_rows)
    records.write_table(folder, "counters", counter_rows)
    all_events = records.read_events(folder)
    rtt = records.read_table(folder, "rtt")
    records.write_table(folder, "handovers", records.handover_rows(rtt, records.moves(all_events)))
    records.write_summary(folder)
    return folder


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return make_results(str(tmp_path_factory.mktemp("results") / "handover-synthetic"))


@pytest.fixture(scope="module")
def res(results):
    return plotting.load(results)


# ---------------------------------------------------------------------------------------------- records


def test_tables_round_trip_with_types(tmp_path):
    rows = [{"strategy": "vcm", "phase": "p", "pair": "mn1-mn2", "t": 0.5, "seq": 1, "rtt_ms": 2.5,
             "lost": False, "path": "direct"},
            {"strategy": "vcm", "phase": "p", "pair": "mn1-mn2", "t": 0.52, "seq": 2, "rtt_ms": None,
             "lost": True, "path": ""}]
    assert records.write_table(str(tmp_path), "rtt", rows) == 2
    records.append_rows(str(tmp_path), "rtt", pd.DataFrame(rows[:1]))
    df = records.read_table(str(tmp_path), "rtt")
    assert list(df.columns) == [c for c, _ in records.SCHEMAS["rtt"]]
    assert len(df) == 3 and df.lost.tolist() == [False, True, False]
    assert math.isnan(df.rtt_ms[1]) and df.rtt_ms[0] == 2.5 and df.path[1] == "" and df.seq[2] == 1
    with open(tmp_path / "rtt.csv") as f:
        assert f.readline().strip() == "strategy,phase,pair,t,seq,rtt_ms,owd_ms,lost,path"
    empty = records.read_table(str(tmp_path), "throughput")
    assert empty.empty and "mbit_s" in empty.columns


def test_table_errors(tmp_path):
    with pytest.raises(records.RecordsError, match="unknown column"):
        records.write_table(str(tmp_path), "rtt", [{"strategy": "x", "colour": 1}])
    with pytest.raises(records.RecordsError, match="unknown table"):
        records.read_table(str(tmp_path), "nope")
    with pytest.raises(records.RecordsError, match="config.json: missing"):
        records.read_config(str(tmp_path))
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(records.RecordsError, match="not JSON"):
        records.read_config(str(tmp_path))


def test_versions_name_what_produced_the_run():
    v = records.versions()
    assert v["python"].startswith("3.") and v["pandas"] == pd.__version__ and "git_commit" in v


def test_new_folder_is_unique(tmp_path):
    a = records.new_folder(str(tmp_path), "handover", "20260101-000000")
    b = records.new_folder(str(tmp_path), "handover", "20260101-000000")
    assert os.path.basename(a) == "handover-20260101-000000" and b != a and os.path.isdir(b)


def test_events_windows_and_phase_spans(results):
    events = records.read_events(results)
    windows = records.strategy_windows(events)
    assert list(windows) == STRATEGIES
    per = records.events_by_strategy(events)
    # Node events without a strategy field land in the window that holds them.
    assert any(e.get("type") == "KEYS" for e in per["vcm"]) and not any(e.get("type") == "KEYS"
                                                                         for e in per["sg"])
    spans = records.phase_spans(results)
    vcm = spans[spans.strategy == "vcm"]
    assert vcm.phase.tolist() == ["both-inside", "mn2-out", "mn1-out", "route-optimised", "mn1-wlan-to-cell"]
    assert vcm.t_start.tolist() == pytest.approx([0, 3, 6, 10, 13]) and vcm.t_end.iloc[-1] == pytest.approx(16)


def test_phase_finder_names_the_phase_holding_a_time():
    import pandas as pd
    spans = pd.DataFrame([("a", "one", 0.0, 3.0), ("a", "two", 3.0, 5.0), ("b", "other", 0.0, 9.0),
                          ("a", "three", 5.0, 8.0)], columns=["strategy", "phase", "t_start", "t_end"])
    phase = records.phase_finder(spans, "a")
    assert [phase(t) for t in (-1.0, 0.0, 2.99, 3.0, 4.0, 5.0, 7.9)] == ["", "one", "one", "two", "two", "three",
                                                                         "three"]
    assert phase(8.0) == phase(100.0) == "three"        # after the last phase: still the last one
    assert records.phase_finder(spans, "c")(1.0) == ""  # no spans for that strategy
    assert records.phase_at(spans, "b", 4.0) == "other"


def test_phase_spans_fall_back_to_the_scenario(tmp_path):
    config = {"strategies": ["a"], "scenario": sc.load_default().to_dict()}
    records.write_config(str(tmp_path), config)
    spans = records.phase_spans(str(tmp_path))
    assert spans.phase.tolist()[:2] == ["both-inside", "mn2-out"] and spans.t_end.iloc[-1] == 19


def test_read_events_skips_bad_lines(tmp_path):
    (tmp_path / "events.jsonl").write_text('{"time": 2, "event": "b"}\nnot json\n[1]\n{"event": "x"}\n'
                                           '{"time": 1, "event": "a"}\n')
    assert [e["event"] for e in records.read_events(str(tmp_path))] == ["a", "b"]


def test_probe_rows_from_probe_records():
    spans = pd.DataFrame([{"strategy": "s", "phase": "p1", "t_start": 0.0, "t_end": 1.0},
                          {"strategy": "s", "phase": "p2", "t_start": 1.0, "t_end": 2.0}])
    recs = [{"seq": 0, "status": "ok", "t_sent": 100.5, "rtt_ms": 3.0, "owd_ms": 1.4},
            {"seq": 1, "status": "lost", "t_sent": 101.2, "rtt_ms": None},
            {"seq": 2, "status": "pending", "t_sent": 101.9, "rtt_ms": None}]
    rows = records.probe_rows(recs, strategy="s", pair="mn1-mn2", t0=100.0, spans=spans,
                              path_of=lambda t: "direct" if t > 1 else "via-sg")
    assert [(r["phase"], r["t"], r["lost"], r["path"]) for r in rows] == [("p1", 0.5, False, "via-sg"),
                                                                          ("p2", pytest.approx(1.2), True, "direct")]


def test_handover_gaps_measure_the_outage(results):
    h = records.read_table(results, "handovers")
    assert len(h) == 3 * 3   # three moves in five phases, three strategies
    vcm = h[h.strategy == "vcm"].set_index("phase")
    # Synthetic outage: 220 ms of lost probes after each move, plus the RTT of the first answered one.
    assert vcm.gap_ms["mn1-out"] == pytest.approx(220 + 40, abs=30)
    assert vcm.lost_probes["mn1-out"] == 11
    assert h[h.strategy == "sg"].gap_ms.max() < h[h.strategy == "vcm"].gap_ms.max()
    assert set(h["from"]) == {"office", "wlan1"} and set(h.pair) == {"mn1-mn2"}
    # Route optimisation: direct 350 ms (vcm) / 150 ms (insecure-ro) after MN1 left; never under sg.
    ro = h[h.phase == "mn1-out"].set_index("strategy").ro_setup_ms
    assert ro["vcm"] == pytest.approx(360, abs=15) and ro["insecure-ro"] == pytest.approx(160, abs=15)
    assert math.isnan(ro["sg"]) and math.isnan(vcm.ro_setup_ms["mn2-out"])


def md_rows(markdown: str) -> list[list[str]]:
    """The cells of every Markdown table row, stripped of the padding that aligns the columns."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in markdown.splitlines() if line.startswith("|")]


def test_summary_rows_and_markdown(results):
    s = records.read_table(results, "summary")
    assert len(s) == 3 * 5 and set(s.strategy) == set(STRATEGIES)
    ro = s[s.phase == "route-optimised"].set_index("strategy")
    assert ro.rtt_median_ms["vcm"] < ro.rtt_median_ms["sg"] * 0.7
    assert ro.path["vcm"] == "direct" and ro.path["sg"] == "via-sg"
    assert ro.plaintext_exposure_bytes["insecure-ro"] > 0 and ro.plaintext_exposure_bytes["vcm"] == 0
    assert ro.sg_relayed_packets["sg"] > 0 and ro.sg_relayed_packets["vcm"] == 0
    inside = s[s.phase == "both-inside"]
    assert (inside.rtt_median_ms < 1).all() and (inside.loss_pct == 0).all()
    assert s[s.phase == "mn2-out"].loss_pct.min() > 0
    md = open(os.path.join(results, "summary.md")).read()
    assert ["phase", "sg", "vcm", "insecure-ro"] in md_rows(md) and "route-optimised" in md and "(direct)" in md


def test_incomplete_run_is_marked(results, tmp_path):
    import shutil
    copy = str(tmp_path / "copy")
    shutil.copytree(results, copy)
    config = records.read_config(copy)
    records.write_config(copy, {**config, "complete": False})
    records.write_summary(copy)
    assert "Incomplete run" in open(os.path.join(copy, "summary.md")).read()
    assert "Incomplete" not in open(os.path.join(results, "summary.md")).read()
    fig = plotting.rtt_timeline_figure(plotting.load(copy))
    assert "INCOMPLETE" in fig._suptitle.get_text()


def test_throughput_is_per_phase_mn_to_mn_with_a_confidence_interval(results, tmp_path):
    import shutil
    copy = str(tmp_path / "copy")
    shutil.copytree(results, copy)
    thr = records.read_table(copy, "throughput")
    route = thr[(thr.strategy == "vcm") & (thr.phase == "route-optimised")].iloc[0].to_dict()
    # Interval rates 10/12/14 Mbit/s for the MN-to-MN transfer; a faster MN-to-office one is left out.
    rows = [r for r in thr.to_dict("records") if not (r["strategy"] == "vcm" and r["phase"] == "route-optimised")]
    rows.append({**route, "mbit_s": 11.0, "samples": 3, "intervals_mbit_s": "10.0;12.0;14.0"})
    rows.append({**route, "flow": "mn1->fs", "mbit_s": 900.0, "samples": 2, "intervals_mbit_s": "900;900"})
    records.write_table(copy, "throughput", rows)
    summary = records.write_summary(copy)
    row = summary[(summary.strategy == "vcm") & (summary.phase == "route-optimised")].iloc[0]
    assert row.throughput_mbit_s == pytest.approx(12.0)
    assert row.throughput_samples == 3
    assert row.throughput_ci95_mbit_s == pytest.approx(4.303 * 2 / math.sqrt(3), rel=1e-3)   # t(0.975, 2)
    md = open(os.path.join(copy, "summary.md")).read()
    assert "12.0 ± 5.0 (n=3)" in md
    whole_run = md.split("Per strategy, whole run:")[1].split("\n\n")[1]
    assert "throughput" not in whole_run.splitlines()[0]


def test_overloaded_link_emulators_are_named_and_their_phases_marked(results, tmp_path):
    import shutil
    copy = str(tmp_path / "copy")
    shutil.copytree(results, copy)
    config = records.read_config(copy)
    late = {"overloaded": True, "link": "sg-wan<->ir-sg", "stats": {"late_fraction": 0.032, "max_late_ms": 22.1}}
    config["topology"]["link_backend"] = {"vcm": {"links": [late, {"overloaded": False, "link": "ok"}]},
                                          "sg": {"links": [{"overloaded": False, "link": "ok"}]}}
    records.write_config(copy, config)
    summary = records.write_summary(copy)
    assert set(summary[summary.strategy == "vcm"].emulation_overloaded) == {"sg-wan<->ir-sg"}
    assert set(summary[summary.strategy == "sg"].emulation_overloaded) == {""}
    md = open(os.path.join(copy, "summary.md")).read()
    assert "Link emulation overloaded" in md and "sg-wan<->ir-sg (3.2 % of frames late, max 22.1 ms)" in md
    rtt_table = md.split("per phase:")[1].split("\n\n")[1].splitlines()
    assert all(line.split("|")[3].strip().endswith("⚠") for line in rtt_table[2:])      # vcm column
    assert not any(line.split("|")[2].strip().endswith("⚠") for line in rtt_table[2:])  # sg column
    assert "overloaded" not in open(os.path.join(results, "summary.md")).read()


def test_message_event_names():
    assert records.message_event("REPORT", "sg", "vcm") == "report_202"
    assert records.message_event("KEYS", "vcm", "mn2") == "keys_206"
    assert records.message_event("KEYS", "vcm", "mn1") == "keys_210"
    assert records.message_event("KEYS_ACK", "mn2", "vcm") == "ack_208"
    assert records.message_event("PEER_READY", "vcm", "mn1") == "ack_208"
    assert records.message_event("KEYS_ACK", "mn1", "vcm") == "ack_212"
    assert records.message_event("HoTI", "mn1", "mn2") == "hoti"
    assert records.message_event("KEYS", "vcm", "mn7") == "keys"
    with pytest.raises(records.RecordsError):
        records.message_event("HELLO", "a", "b")


# --------------------------------------------------------------------------------------------- plotting


def _collections_with_points(ax):
    return [c for c in ax.collections if len(c.get_offsets())]


def test_rtt_timeline_has_a_panel_per_strategy_with_phases_and_moves(res):
    fig = plotting.rtt_timeline_figure(res)
    axes = fig.axes
    assert len(axes) == 3
    for ax, strategy in zip(axes, STRATEGIES):
        assert strategy in ax.get_title(loc="left")
        points = _collections_with_points(ax)
        labels = [c.get_label() for c in points]
        assert "mn1-mn2 (strategy colour)" in labels and "mn1-fs" in labels and "lost probe" in labels
        assert "probes lost" in ax.get_title(loc="left")
        assert len(ax.patches) == 5                     # shaded phases
        dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert len(dashed) == 3                         # moves
        assert ax.get_yscale() == "log" and ax.get_ylabel() == "RTT (ms)"
        probe = next(c for c in points if c.get_label() == "mn1-mn2 (strategy colour)")
        assert tuple(probe.get_facecolor()[0][:3]) == pytest.approx(
            tuple(int(plotting.STRATEGY_COLORS[strategy][i:i + 2], 16) / 255 for i in (1, 3, 5)))
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == 3
    phase_names = {t.get_text() for t in axes[0].texts}
    assert {"both-inside", "route-optimised"} <= phase_names


def test_phase_bars_have_a_bar_per_strategy_and_phase(res):
    fig = plotting.phase_bars_figure(res)
    ax_rtt, ax_thr = fig.axes
    assert len(ax_rtt.patches) == 15 and len(ax_thr.patches) == 15
    assert [t.get_text() for t in ax_rtt.get_xticklabels()][:2] == ["both-inside", "mn2-out"]
    assert "ms" in ax_rtt.get_ylabel() and "Mbit/s" in ax_thr.get_ylabel()
    assert len(ax_rtt.get_legend().get_texts()) == 3
    heights = {p.get_facecolor()[:3]: [] for p in ax_rtt.patches}
    assert len(heights) == 3   # one colour per strategy


def test_cdf_has_one_line_per_strategy(res):
    fig = plotting.rtt_cdf_figure(res)
    [ax] = fig.axes
    assert len(ax.lines) == 3 and ax.get_xscale() == "log"
    for line in ax.lines:
        y = line.get_ydata()
        assert y[-1] == pytest.approx(1.0) and np.all(np.diff(y) >= 0)


def test_handover_gaps_and_costs(res):
    [ax] = plotting.handover_gaps_figure(res).axes
    assert len(ax.patches) == 9 and len(ax.get_xticklabels()) == 3
    assert "ms" in ax.get_ylabel()
    ax_sg, ax_sig, ax_bytes, ax_exp = plotting.costs_figure(res).axes
    assert len(ax_sg.patches) == 2 * 3 and len(ax_exp.patches) == 3
    assert [t.get_text() for t in ax_sg.get_legend().get_texts()] == ["MN \u2194 MN", "MN \u2194 office"]
    exposure = {t.get_text(): p.get_height() for t, p in zip(ax_exp.get_xticklabels(), ax_exp.patches)}
    assert exposure["insecure-ro"] > 0 and exposure["sg"] == 0 and exposure["vcm"] == 0
    kinds = [t.get_text() for t in ax_sig.get_legend().get_texts()]
    assert "206 keys" in kinds and "BU" in kinds
    assert [t.get_text() for t in ax_bytes.get_legend().get_texts()] == kinds
    assert "bytes" in ax_bytes.get_ylabel() and "messages" in ax_sig.get_ylabel()


def test_sequence_chart_draws_the_diagram_messages(res):
    assert plotting.sequence_strategies(res) == STRATEGIES   # every strategy sends BU to the HA
    arrows = plotting.message_arrows(res, "vcm")
    kinds = [a["kind"] for a in arrows]
    assert kinds.index("report_202") < kinds.index("keys_206") < kinds.index("ack_208")
    assert "bu" in kinds[kinds.index("ack_208"):]
    # The nodes' mobility_sent events become arrows too, the receiver named from its address.
    to_sg = [a for a in arrows if a["kind"] == "bu" and a["dst"] == "sg"]
    from_sg = [a for a in arrows if a["kind"] == "ba" and a["src"] == "sg"]
    assert len(to_sg) == len(from_sg) == 3 and to_sg[0]["bytes"] == 122 and from_sg[0]["dst"] == "mn2"
    assert ("vcm", "mn1") in [(a["src"], a["dst"]) for a in arrows if a["kind"] == "ack_208"]
    fig = plotting.sequence_figure(res, "vcm")
    [ax] = fig.axes
    texts = [t.get_text() for t in ax.texts]
    for lane in ("MN1", "MN2", "SG", "VCM", "HA"):
        assert lane in texts
    assert "206 keys" in texts and "212 ack" in texts and "phase mn1-out" in texts
    assert sum(1 for t in texts if t.startswith("moves ")) == 3
    arrow_count = sum(1 for child in ax.get_children() if type(child).__name__ == "Annotation"
                      and child.arrow_patch is not None)
    assert arrow_count == len(arrows)
    sg_arrows = plotting.message_arrows(res, "sg")
    assert {a["kind"] for a in sg_arrows} == {"bu", "ba"}


def test_topology_from_the_address_plan(res):
    [ax] = plotting.topology_figure(res).axes
    texts = [t.get_text() for t in ax.texts]
    for name in ("sg", "ir", "ar1", "ar2", "ar3", "wlan1", "cell", "mn1", "mn2", "fs", "vcm", "xha"):
        assert name in texts
    assert "2001:db8:21::/64" in texts and "sg-ir 5 ms" in texts
    assert any("moves in the scenario" in t and "mn2 \u2192 wlan2" in t for t in texts)


def test_empty_results_draw_placeholders(tmp_path):
    records.write_config(str(tmp_path), {"strategies": ["sg"], "scenario": sc.load_default().to_dict()})
    figs = plotting.figures(plotting.load(str(tmp_path)))
    assert set(figs) == {"rtt-timeline", "phase-bars", "rtt-cdf", "handover-gaps", "costs", "topology"}
    [ax] = figs["rtt-cdf"].axes
    assert any("no RTT records" in t.get_text() for t in ax.texts)


FIGURES = {"rtt-timeline", "phase-bars", "rtt-cdf", "handover-gaps", "costs", "topology"}


def _bars(ax):
    return [p for p in ax.patches if type(p).__name__ == "Rectangle"]


def check_figure_content(res, figs):
    """Axes count, axis labels and series per axes of every figure, against the data in ``res``."""
    strategies = res.strategies
    phases = res.phases()
    pairs = list(dict.fromkeys(res.rtt.pair))
    moves = len(res.handovers.drop_duplicates(["phase", "node"]))
    kinds = set(res.counters[res.counters.metric == "signalling_messages"].detail)
    assert set(figs) == FIGURES | {f"sequence-{s}" for s in plotting.sequence_strategies(res)}

    timeline = figs["rtt-timeline"].axes
    assert len(timeline) == len(strategies)
    for ax, strategy in zip(timeline, strategies):
        assert ax.get_ylabel() == "RTT (ms)" and ax.get_title(loc="left").startswith(plotting._label(strategy))
        lost = int(res.rtt[res.rtt.strategy == strategy].lost.any())
        assert len(_collections_with_points(ax)) == len(pairs) + lost
    assert timeline[-1].get_xlabel().startswith("time since")

    ax_rtt, ax_thr = figs["phase-bars"].axes
    assert len(_bars(ax_rtt)) == len(_bars(ax_thr)) == len(strategies) * len(phases)
    assert ax_rtt.get_ylabel().startswith("median RTT") and ax_thr.get_ylabel() == "throughput (Mbit/s)"
    assert [t.get_text() for t in ax_rtt.get_legend().get_texts()] == [plotting._label(s) for s in strategies]

    [ax] = figs["rtt-cdf"].axes
    assert len(ax.lines) == len(strategies) and ax.get_ylabel().startswith("fraction")
    assert ax.get_xlabel().startswith("RTT")

    [ax] = figs["handover-gaps"].axes
    assert len(_bars(ax)) == len(strategies) * moves and "ms" in ax.get_ylabel()

    ax_sg, ax_sig, ax_bytes, ax_exp = figs["costs"].axes
    assert len(_bars(ax_sg)) == 2 * len(strategies) and len(_bars(ax_exp)) == len(strategies)
    assert len(_bars(ax_sig)) == len(_bars(ax_bytes)) == len(kinds) * len(strategies)
    assert [t.get_text() for t in ax_exp.get_xticklabels()] == strategies
    assert "MB" in ax_sg.get_ylabel() and ax_sig.get_ylabel() == "messages sent" and ax_bytes.get_ylabel() == "bytes sent"

    for strategy in plotting.sequence_strategies(res):
        [ax] = figs[f"sequence-{strategy}"].axes
        arrows = [c for c in ax.get_children() if type(c).__name__ == "Annotation"]
        assert len(arrows) == min(80, len(plotting.message_arrows(res, strategy)))

    [ax] = figs["topology"].axes
    assert not ax.axison and "mn1" in [t.get_text() for t in ax.texts]


def test_every_figure_is_written_as_png_and_svg_with_its_content(results, tmp_path):
    res = plotting.load(results)
    written = plotting.draw_all(results, str(tmp_path))
    assert set(written) == FIGURES | {f"sequence-{s}" for s in STRATEGIES}
    for name, paths in written.items():
        png, svg = paths
        assert png == str(tmp_path / f"{name}.png") and svg == str(tmp_path / f"{name}.svg")
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(png) > 10_000, name
        with open(svg, encoding="utf-8") as f:
            text = f.read()
        assert "<svg" in text and text.count("<path") > 10, name
    check_figure_content(res, plotting.figures(res))


def test_an_unknown_strategy_gets_its_own_colour_and_its_name_as_label(tmp_path):
    strategies = ["sg", "vcm", "hybrid-x"]
    folder = make_results(str(tmp_path / "handover-other"), strategies=strategies, phases=4)
    res = plotting.load(folder)
    colours = [res.color(s) for s in strategies]
    assert len(set(colours)) == 3 and colours[2] not in plotting.STRATEGY_COLORS.values()
    assert plotting._label("hybrid-x") == "hybrid-x"
    figs = plotting.figures(res)
    check_figure_content(res, figs)
    ax_rtt, _ = figs["phase-bars"].axes
    assert "hybrid-x" in [t.get_text() for t in ax_rtt.get_legend().get_texts()]
    s = records.read_table(folder, "summary")
    assert set(s.strategy) == set(strategies)
    assert ["phase", "sg", "vcm", "hybrid-x"] in md_rows(open(os.path.join(folder, "summary.md")).read())


# Installed through sitecustomize, so it holds in the process plot.py runs in (and after a re-exec).
NO_MININET = """import sys


class _NoMininet:
    def find_spec(self, name, path=None, target=None):
        if name == "mininet" or name.startswith("mininet."):
            raise ImportError(f"No module named {name!r} (blocked: a machine without Mininet)", name=name)
        return None


sys.meta_path.insert(0, _NoMininet())
"""


def test_plot_py_redraws_the_same_figures_from_a_copied_folder_without_mininet(results, tmp_path):
    import shutil
    copy = tmp_path / "copied"
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("plots"))
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_MININET)
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    # The blocker works: Mininet cannot be imported in such a process.
    check = subprocess.run([sys.executable, "-c", "import mininet.net"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert check.returncode != 0 and "blocked" in check.stderr
    script = os.path.join(ROOT, "experiments", "plot.py")
    out = subprocess.run([sys.executable, script, str(copy)], env=env, capture_output=True, text=True,
                         timeout=180, cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    reference = tmp_path / "reference"
    expected = plotting.draw_all(results, str(reference))
    names = set(expected)
    assert names == FIGURES | {f"sequence-{s}" for s in STRATEGIES}
    assert set(os.listdir(copy / "plots")) == set(os.listdir(reference))
    assert set(os.listdir(reference)) == {f"{n}.{ext}" for n in names for ext in ("png", "svg")}
    for name in sorted(os.listdir(reference)):
        if name.endswith(".svg"):
            # Same drawing: the SVGs differ only in ids and the metadata date.
            a = (copy / "plots" / name).read_text()
            b = (reference / name).read_text()
            assert abs(a.count("<path") - b.count("<path")) == 0, name
        assert (copy / "plots" / name).stat().st_size > 5000, name
    for name in names:
        assert name in out.stdout   # it lists what it wrote


def test_draw_all_writes_png_and_svg(results, tmp_path):
    written = plotting.draw_all(results, str(tmp_path), formats=("png", "svg"), only=("rtt-cdf", "topology"))
    assert set(written) == {"rtt-cdf", "topology"}
    for paths in written.values():
        assert [os.path.splitext(p)[1] for p in paths] == [".png", ".svg"]
    with open(written["rtt-cdf"][0], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_draw_all_shared_among_processes_writes_the_same_figures_in_order(results, tmp_path):
    alone = plotting.draw_all(results, str(tmp_path / "one"), formats=("png",))
    shared = plotting.draw_all(results, str(tmp_path / "two"), formats=("png",), workers=3)
    assert list(shared) == list(alone)   # same names, same order as the figure list
    for name, paths in shared.items():
        assert os.path.dirname(paths[0]) == str(tmp_path / "two") and os.path.getsize(paths[0]) > 1000, name


def test_plot_py_errors_are_one_line(tmp_path):
    script = os.path.join(ROOT, "experiments", "plot.py")
    out = subprocess.run([sys.executable, script, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.strip().count("\n") == 0 and "config.json: missing" in out.stderr
    out = subprocess.run([sys.executable, script, str(tmp_path / "nope")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "is not a folder" in out.stderr


def test_signalling_messages_from_chart_and_mobility_events():
    book = {"2001:db8:0:1::1": "sg", "fdc0:ffee:0:1::3": "ha"}
    bu = {"event": "mobility_sent", "node": "mn1", "what": "BU seq 7 lifetime 15 to sg", "dst": "2001:db8:0:1::1",
          "bytes": 122}
    assert records.signalling_message(bu, book) == {"kind": "bu", "src": "mn1", "dst": "sg", "bytes": 122}
    ba = {"event": "mobility_sent", "node": "ha", "what": "BA status 0 seq 7", "dst": "2001:db8:21::a:1"}
    assert records.signalling_message(ba, book) == {"kind": "ba", "src": "ha", "dst": None, "bytes": None}
    assert records.signalling_message({**bu, "what": "data HAO"}, book) is None
    keys = {"event": "vcm_message", "node": "vcm", "peer": "mn2", "type": "KEYS", "bytes": 152}
    assert records.signalling_message(keys) == {"kind": "keys_206", "src": "vcm", "dst": "mn2", "bytes": 152}
    assert records.signalling_message({**keys, "type": "HELLO"}) is None     # no step of the chart
    # Runs recorded before the nodes logged neutrally read the same.
    keys = {"event": "keys_206", "node": "vcm", "to": "mn2", "bytes": 152}
    assert records.signalling_message(keys) == {"kind": "keys_206", "src": "vcm", "dst": "mn2", "bytes": 152}
    assert records.signalling_message({"event": "report_202"})["src"] == "sg"     # the table's defaults
    # The SG's record of a message an MN sent (and logged itself) is not a second message.
    assert records.signalling_message({"event": "ack_208", "node": "mn2", "to": "vcm", "received": True}) is None
    assert records.signalling_message({"event": "data_first_direct", "node": "mn1"}) is None
    assert records.signalling_message({"event": "session_detected", "node": "sg"}) is None
