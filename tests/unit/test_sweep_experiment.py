"""experiments/sweep.py without a network: points, link parameters, analytic RTTs, tidy rows, confidence
intervals of the gain, argument errors."""
import math
import os
import sys

import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))   # the scripts import _venv as a sibling

from experiments import sweep  # noqa: E402


def test_points_and_link_parameters():
    assert sweep.points({"longhaul": (5.0, 70.0), "cell": (80.0,)}) == [
        ("longhaul", 5.0), ("longhaul", 70.0), ("cell", 80.0)]
    params = sweep.point_link_params("cell", 40.0, seed=3)
    assert params["ar3-cell"]["delay"] == "40ms" and "delay" not in params["sg-ir"]
    seeds = [p["seed"] for p in params.values()]
    assert len(set(seeds)) == len(seeds)                       # every link its own stream
    other = sweep.point_link_params("cell", 40.0, seed=4)
    assert not set(seeds) & {p["seed"] for p in other.values()}   # and repetitions do not share them


def test_analytic_rtt_from_the_default_profiles_and_overrides():
    # wlan 3 ms + metro 5 + metro 5 + LTE 20 each way: 66 ms direct; via the SG + 2 x 35 ms each way.
    base = sweep.analytic_rtt(sweep.link_delays({}))
    assert base == {"vcm": 66.0, "sg": 206.0}
    far = sweep.analytic_rtt(sweep.link_delays(sweep.point_link_params("longhaul", 70.0, 1)))
    assert far == {"vcm": 66.0, "sg": 66.0 + 4 * 70.0}
    slow = sweep.analytic_rtt(sweep.link_delays(sweep.point_link_params("cell", 80.0, 1)))
    assert slow["vcm"] == 66.0 + 2 * 60.0 and slow["sg"] - slow["vcm"] == 140.0


def rtt_frame(rows):
    return pd.DataFrame(rows, columns=["strategy", "phase", "pair", "t", "seq", "rtt_ms", "owd_ms", "lost", "path"])


def test_sweep_row_uses_the_steady_phase_of_the_pair():
    rtt = rtt_frame(
        [("vcm", "setup", "mn1-mn2", 0.1, 1, 300.0, None, False, "via-sg")] +
        [("vcm", "steady", "mn1-mn2", 2 + i / 50, i, 70.0 + i % 3, None, False, "direct") for i in range(10)] +
        [("vcm", "steady", "mn1-mn2", 3.0, 99, None, None, True, "")] +
        [("sg", "steady", "mn1-mn2", 2.0, 1, 210.0, None, False, "via-sg")])
    delays = sweep.link_delays({})
    row = sweep.sweep_row(rtt, axis="cell", value=20.0, strategy="vcm", rep=1, seed=1, delays=delays,
                          analytic=sweep.analytic_rtt(delays))
    assert set(row) == set(sweep.SWEEP_COLUMNS)
    assert row["path"] == "direct" and row["samples"] == 10
    assert row["rtt_median_ms"] == 71.0 and row["loss_pct"] == pytest.approx(100 / 11)
    assert row["analytic_rtt_ms"] == 66.0 and row["longhaul_ms"] == 35.0 and row["cell_ms"] == 20.0


def test_summary_gain_is_paired_by_repetition_with_a_t_interval():
    rows = []
    for rep, (sg, vcm) in enumerate([(200.0, 70.0), (210.0, 70.0), (220.0, 72.0)], start=1):
        for s, v in (("sg", sg), ("vcm", vcm)):
            rows.append({"axis": "longhaul", "value_ms": 35.0, "strategy": s, "rep": rep, "rtt_median_ms": v,
                         "analytic_rtt_ms": {"sg": 206.0, "vcm": 66.0}[s]})
    summary = sweep.summarise(pd.DataFrame(rows, columns=sweep.SWEEP_COLUMNS))
    gain = summary[summary.quantity == "gain"].iloc[0]
    gains = [200 / 70, 210 / 70, 220 / 72]
    mean = sum(gains) / 3
    sd = math.sqrt(sum((g - mean) ** 2 for g in gains) / 2)
    assert gain["n"] == 3 and gain["mean"] == pytest.approx(mean)
    assert gain.half_width == pytest.approx(4.3027 * sd / math.sqrt(3), rel=1e-3)
    assert gain.analytic == pytest.approx(206 / 66)
    sg = summary[summary.quantity == "rtt_sg_ms"].iloc[0]
    assert sg["mean"] == pytest.approx(210.0) and sg.analytic == 206.0
    text = sweep.summary_markdown(summary, {"reps": 3, "complete": True})
    assert "| longhaul | 35 | 210.00 ± " in text and "3.12 |" in text


@pytest.mark.parametrize("args, message", [
    (["--longhaul", "5,fast"], "--longhaul: 'fast' is not a delay in ms"),
    (["--cell", "-3"], "--cell: -3 must be between 0 and 1000 ms"),
    (["--cell", "10,10"], "--cell: a value is named twice"),
    (["--longhaul", "", "--cell", ""], "nothing to sweep"),
    (["--reps", "0"], "--reps must be from 1 to 100"),
    (["--scenario", "/no/such.toml"], "cannot read scenario file"),
])
def test_bad_arguments_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        sweep.parse_args(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err


def test_defaults_and_quick():
    args = sweep.parse_args([])
    assert args.axes == {"longhaul": (5.0, 15.0, 35.0, 70.0), "cell": (10.0, 20.0, 40.0, 80.0)} and args.reps == 3
    quick = sweep.parse_args(["--quick"])
    assert quick.reps == 2 and sum(p.duration_s for p in quick.scenario_obj.phases) < \
        sum(p.duration_s for p in args.scenario_obj.phases)
    assert sweep.parse_args(["--longhaul", "10ms,50", "--cell", ""]).axes == {"longhaul": (10.0, 50.0), "cell": ()}


def test_more_strategies_give_one_gain_each_against_the_first(capsys):
    rows = []
    for rep in (1, 2):
        for s, v in (("sg", 200.0 + rep), ("vcm", 70.0), ("mesh", 50.0)):
            rows.append({"axis": "cell", "value_ms": 20.0, "strategy": s, "rep": rep, "rtt_median_ms": v,
                         "analytic_rtt_ms": {"sg": 206.0, "vcm": 66.0, "mesh": 66.0}[s]})
    summary = sweep.summarise(pd.DataFrame(rows, columns=sweep.SWEEP_COLUMNS))
    gains = summary[summary.quantity.str.startswith("gain")].set_index("quantity")
    assert list(gains.index) == ["gain", "gain_mesh"]
    assert gains.loc["gain_mesh", "mean"] == pytest.approx((201 / 50 + 202 / 50) / 2)
    assert gains.loc["gain_mesh", "analytic"] == pytest.approx(206 / 66)
    text = sweep.summary_markdown(summary, {"reps": 2})
    assert "RTT mesh ms" in text and "gain mesh analytic" in text
    delays = sweep.link_delays({})
    analytic = sweep.analytic_rtt(delays, ["sg", "mesh", "insecure-ro"])
    assert analytic["mesh"] == analytic["insecure-ro"] < analytic["sg"]
    assert sweep.parse_args(["--strategies", "sg,vcm,mesh"]).strategies == ["sg", "vcm", "mesh"]
    with pytest.raises(SystemExit):
        sweep.parse_args(["--strategies", "vcm"])
    assert "name at least two" in capsys.readouterr().err
