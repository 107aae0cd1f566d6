"""experiments/handover.py pieces that need no Mininet: the strategy list and its CLI checks, the MN pairs
insecure-ro route-optimises, and the shared pcap reader (topologies/pcap.py) behind the per-phase
plaintext exposure."""
import os
import struct
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))   # the scripts import _venv as a sibling

from experiments import handover  # noqa: E402
from experiments.strategies.insecure_ro import probed_mn_pairs  # noqa: E402
from topologies.pcap import pcap_frames  # noqa: E402


def test_insecure_ro_is_a_strategy_in_both_address_plans(capsys):
    assert handover.STRATEGIES == ("sg", "vcm", "insecure-ro")   # the default run; mesh on request
    args = handover.parse_args(["--strategies", "insecure-ro,sg"])
    assert args.strategies == ["insecure-ro", "sg"]
    args = handover.parse_args(["--strategies", "insecure-ro", "--addressing", "public"])
    assert (args.strategies, args.addressing) == (["insecure-ro"], "public")
    with pytest.raises(SystemExit):
        handover.parse_args(["--strategies", "ro"])
    assert "available: sg, vcm, vcm-key, insecure-ro, mesh" in capsys.readouterr().err
    assert handover.parse_args(["--strategies", "all"]).strategies[:5] == ["sg", "vcm", "vcm-key", "insecure-ro", "mesh"]
    assert handover.parse_args(["--strategies", "mesh", "--vcm-host"]).run.vcm_host


def test_pairs_are_the_probed_mobile_nodes_once():
    scenario = handover.load_default()
    assert probed_mn_pairs(scenario) == [("mn1", "mn2")]   # mn1-fs is not a pair of mobile nodes


@pytest.mark.parametrize("magic, order, scale", [(0xA1B2C3D4, "<", 1e-6), (0xA1B2C3D4, ">", 1e-6),
                                                 (0xA1B23C4D, "<", 1e-9)])
def test_pcap_frames_reads_times_and_frames(tmp_path, magic, order, scale):
    frames = [(1700000000, 250000 if scale == 1e-6 else 250000000, b"abc"), (1700000001, 5, b"SVPNLAB" * 3)]
    data = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 113)
    for sec, frac, frame in frames:
        data += struct.pack(order + "IIII", sec, frac, len(frame), len(frame)) + frame
    path = tmp_path / "x.pcap"
    path.write_bytes(data + b"\x00\x01")      # a truncated record at the end is ignored
    got = list(pcap_frames(str(path)))
    assert [f for _, f in got] == [b"abc", b"SVPNLAB" * 3]
    assert got[0][0] == pytest.approx(1700000000.25) and got[1][0] == pytest.approx(1700000001 + 5 * scale)
    assert list(pcap_frames(str(tmp_path / "missing.pcap"))) == []


def test_host_cpu_wait_is_recorded_per_phase_and_a_starved_phase_is_marked():
    """The most starved process counts (max over processes per interval), each phase gets its own median
    and peak, and summary.md flags only the phase past the threshold."""
    import pandas as pd
    from experiments import records
    from experiments.hostload import RESOURCE_COLUMNS, STARVED_PCT
    t0 = 1000.0
    rows = []
    # sg idles throughout; mn1 waits 2 % of each second in phase a (0-2 s) and 40 % in phase b (2-4 s)
    waits = {"sg": [0.0, 0.0, 0.0, 0.0, 0.0], "mn1": [0.0, 0.02, 0.04, 0.44, 0.84]}
    for node, series in waits.items():
        for t, wait in enumerate(series):
            rows.append({"t": float(t), "node": node, "role": "x", "pid": 1, "cpu_s": 0.0, "wait_s": wait,
                         "rss_kib": 1, "pss_kib": 1})
    resources = pd.DataFrame(rows, columns=RESOURCE_COLUMNS)
    events = [{"time": t0, "event": "phase_start", "strategy": "vcm", "phase": "a"},
              {"time": t0 + 2.0, "event": "phase_start", "strategy": "vcm", "phase": "b"},
              {"time": t0 + 2.0, "event": "phase_start", "strategy": "sg", "phase": "b"}]
    got = {(r["phase"], r["detail"]): r["value"] for r in handover.host_wait_rows("vcm", resources, events, t0)}
    assert got == {("a", "median"): 2.0, ("a", "peak"): 2.0, ("b", "median"): 40.0, ("b", "peak"): 40.0}
    summary = pd.DataFrame([{"strategy": "vcm", "phase": p, "pair": "mn1-mn2", "path": "direct",
                             "rtt_median_ms": 30.0, "host_cpu_wait_pct": got[(p, "median")]} for p in "ab"])
    assert records.starved_phases(summary) == {("vcm", "b"): 40.0}
    lines = records.starved_lines(records.starved_phases(summary))
    assert "out of CPU" in lines[0] and f"{STARVED_PCT:g} %" in lines[0] and lines[2] == "- `vcm`, b: 40 %"
    assert records.starved_lines(records.starved_phases(summary.assign(host_cpu_wait_pct=1.0))) == []
