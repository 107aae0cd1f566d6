"""experiments/scale.py --quick end to end: every pair gets its direct path in a plausible time, and every
node process has CPU and memory samples."""
import glob
import json
import os
import subprocess
import sys

import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Setup = three one-way MN<->SG trips (KEYS, KEYS_ACK, PEER_READY), about 1.5 x 87 ms with the default
# profiles (docs/vcm-runtime.md), plus up to one ping interval (20 ms) and the cellular jitter. One lost
# control datagram adds its retransmission (first RTO 0.25 s); more than 1.5 s means something is wrong.
UPPER_MS = 1500.0


def test_quick_scale_run_sets_up_every_pair_and_samples_every_process(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "scale.py"), "--quick",
                             "--results", str(tmp_path)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (folder,) = glob.glob(str(tmp_path / "scale-*"))
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert config["complete"] and config["pairs"] == 5
    from topologies.spec import LabSpec
    spec = LabSpec.from_dict(config["lab_spec"])
    assert spec.mobile_nodes == 10 and spec.ra_intervals == (1.0, 3.0) and spec.vcm == "in-sg"
    # every node app exited cleanly, none having caught an exception in a handler
    assert set(config["handler_errors"]) >= {f"mn{i}" for i in range(1, 11)} | {"sg", "ha"}
    assert not any(config["handler_errors"].values()), config["handler_errors"]
    setup = pd.read_csv(os.path.join(folder, "setup.csv"))
    assert len(setup) == 5 and setup.ok.all(), setup
    assert (setup.setup_ms > 0).all() and (setup.setup_ms < UPPER_MS).all(), setup.setup_ms
    # the detection needs the first ping to reach the SG: at least one MN->SG one-way delay (> 40 ms)
    assert (setup.detect_ms > 40).all(), setup.detect_ms
    assert (setup.switch_ms <= setup.setup_ms).all()

    resources = pd.read_csv(os.path.join(folder, "resources.csv"))
    nodes = set(resources.node)
    assert {f"mn{i}" for i in range(1, 11)} | {"sg", "ha"} <= nodes
    per_node = resources.groupby("node").size()
    assert (per_node >= 2).all(), per_node            # sampled during the run, not once
    assert (resources.rss_kib > 1000).all() and (resources.pss_kib > 0).all()
    assert set(resources.role) >= {"mn", "sg", "ha", "emulator"}

    summary = pd.read_csv(os.path.join(folder, "summary.csv"))
    get = {(r.metric, r.group): r.value for r in summary.itertuples()}
    assert get[("pairs_ok", "all")] == 5
    assert 0 < get[("setup_p50", "all")] <= get[("setup_p99", "all")] < UPPER_MS
    assert 5 < get[("rss_median", "mn")] < 500
    for name in ("setup-time", "resources"):
        assert os.path.getsize(os.path.join(folder, "plots", f"{name}.png")) > 1000
