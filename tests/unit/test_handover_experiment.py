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
    assert "available: sg, vcm, insecure-ro, mesh" in capsys.readouterr().err
    assert handover.parse_args(["--strategies", "all"]).strategies[:4] == ["sg", "vcm", "insecure-ro", "mesh"]
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
