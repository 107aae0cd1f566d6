"""experiments/sweep.py --quick on one point (long-haul 70 ms, 2 repetitions): route optimisation gains
what the link delays say it should, and the tables carry confidence intervals."""
import glob
import json
import math
import os
import subprocess
import sys

import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Measured RTTs exceed the analytic ones (sums of configured one-way delays) by the userspace ESP, tunnel
# and emulator processing and by the jitter of the WLAN and LTE links, which cannot reorder packets and so
# only ever adds delay: about +5 ms on both paths with the default profiles (README, "More experiments").
# That lowers the gain below the analytic value by at most ~12 % at the default point; at 70 ms long-haul
# the analytic gain is 5.24 and +5 ms on each path gives 4.94 (-6 %). 15 % leaves room for a loaded machine.
TOLERANCE = 0.15


def test_quick_sweep_point_gains_as_computed(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "sweep.py"), "--quick",
                             "--longhaul", "70", "--cell", "", "--results", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    (folder,) = glob.glob(str(tmp_path / "sweep-*"))
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["complete"]
    errors = pd.concat([pd.read_csv(path) for path in glob.glob(os.path.join(folder, "runs", "*", "counters.csv"))])
    errors = errors[errors.metric == "handler_errors"]
    assert len(errors) >= 2 * 2 * 4 and (errors.value == 0).all(), errors   # 2 reps x 2 strategies x >= 4 nodes
    rows = pd.read_csv(os.path.join(folder, "sweep.csv"))
    assert len(rows) == 4 and set(rows.rep) == {1, 2} and set(rows.strategy) == {"sg", "vcm"}
    assert (rows.samples >= 40).all(), rows        # 1.5 s steady phase at 50 Hz
    assert (rows[rows.strategy == "sg"].path == "via-sg").all() and (rows[rows.strategy == "vcm"].path == "direct").all()
    for r in rows.itertuples():
        assert r.rtt_median_ms >= r.analytic_rtt_ms - 2, r        # no faster than the wires
        assert r.rtt_median_ms <= r.analytic_rtt_ms * (1 + TOLERANCE) + 5, r

    summary = pd.read_csv(os.path.join(folder, "summary.csv"))
    gain = summary[summary.quantity == "gain"].iloc[0]
    assert gain["n"] == 2 and gain["mean"] > 1.0 and gain.ci_low <= gain["mean"] <= gain.ci_high
    assert not math.isnan(gain.half_width)
    assert abs(gain["mean"] - gain.analytic) <= TOLERANCE * gain.analytic, gain
    for name in ("gain", "rtt-vs-analytic"):
        assert os.path.getsize(os.path.join(folder, "plots", f"{name}.png")) > 1000
    assert os.path.exists(os.path.join(folder, "runs", "longhaul-70ms-r1", "rtt.csv"))
