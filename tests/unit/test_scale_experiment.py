"""experiments/scale.py without a network: pair rows from node events, the summary, /proc sampling,
argument errors; and the lab's SPI plan at the largest node count."""
import collections
import os
import sys

import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))   # the scripts import _venv as a sibling

from experiments import hostload, scale  # noqa: E402

HOMES = {f"mn{i}": f"fdc0:ffee:0:1::a:{i:x}" for i in range(1, 7)}


def ev(t, node, event, **fields):
    return {"time": t, "node": node, "event": event, **fields}


def test_setup_rows_time_each_pair_from_its_own_events():
    pairs = scale.pairs_of(3)
    assert pairs == [("mn1", "mn2"), ("mn3", "mn4"), ("mn5", "mn6")]
    events = [
        ev(99.0, "sg", "session_detected", node_a=11, node_b=12),        # before the pair started: ignored
        ev(100.05, "sg", "session_detected", node_a=12, node_b=11),      # pair 1 (ids 11, 12), either order
        ev(100.06, "sg", "session_detected", node_a=13, node_b=14),      # pair 2
        ev(100.20, "mn1", "switch_outbound", peer=12, session_id=1, generation=1, ops=[]),
        ev(100.205, "mn1", "data_first_protected", dst=HOMES["mn2"]),
        ev(100.21, "mn1", "data_first_direct", dst=HOMES["mn2"]),
        ev(100.22, "mn2", "data_first_direct", dst=HOMES["mn1"]),
        ev(100.30, "mn3", "data_first_direct", dst=HOMES["mn1"]),         # wrong peer: not pair 2's
    ]
    starts = {"mn1": 100.0, "mn3": 100.0, "mn5": 100.0}
    rows = scale.setup_rows(events, pairs, HOMES, starts, {"mn1": "wlan1", "mn2": "cell"}, t0=90.0)
    one, two, three = rows
    assert one["ok"] and one["error"] == "" and one["net_initiator"] == "wlan1" and one["net_responder"] == "cell"
    assert one["t_start"] == pytest.approx(10.0)
    assert one["detect_ms"] == pytest.approx(50.0)
    assert one["switch_ms"] == pytest.approx(150.0)
    assert one["protected_ms"] == pytest.approx(155.0) and one["setup_ms"] == pytest.approx(160.0)
    assert one["responder_direct_ms"] == pytest.approx(170.0)
    assert not two["ok"] and two["error"] == "no direct packet" and two["setup_ms"] is None
    assert not three["ok"] and three["error"] == "no session detected"


def test_setup_rows_mark_pairs_that_never_started():
    (row,) = scale.setup_rows([], [("mn1", "mn2")], HOMES, {}, {}, t0=0.0)
    assert not row["ok"] and row["error"] == "not started" and row["t_start"] is None


def test_arrivals():
    assert scale.arrival_times(3, "all", 0.5) == [0.0, 0.0, 0.0]
    assert scale.arrival_times(3, "staggered", 0.5) == [0.0, 0.5, 1.0]


def test_summary_percentiles_roles_and_wall_times():
    setup = pd.DataFrame([{"pair": i, "ok": i <= 100, "setup_ms": float(i), "detect_ms": 1.0}
                          for i in range(1, 102)], columns=scale.SETUP_COLUMNS)
    resources = pd.DataFrame([
        {"t": 0.0, "node": "mn1", "role": "mn", "pid": 1, "cpu_s": 1.0, "rss_kib": 30720, "pss_kib": 10240},
        {"t": 10.0, "node": "mn1", "role": "mn", "pid": 1, "cpu_s": 2.0, "rss_kib": 31744, "pss_kib": 11264},
        {"t": 0.0, "node": "mn2", "role": "mn", "pid": 2, "cpu_s": 1.0, "rss_kib": 20480, "pss_kib": 8192},
        {"t": 10.0, "node": "mn2", "role": "mn", "pid": 2, "cpu_s": 4.0, "rss_kib": 20480, "pss_kib": 8192},
        {"t": 0.0, "node": "sg", "role": "sg", "pid": 3, "cpu_s": 0.0, "rss_kib": 40960, "pss_kib": 20480},
    ], columns=hostload.RESOURCE_COLUMNS)
    summary = pd.DataFrame(scale.summary_rows(setup, resources, {"build": 12.5}))
    get = {(r.metric, r.group): r.value for r in summary.itertuples()}
    assert get[("pairs", "all")] == 101 and get[("pairs_ok", "all")] == 100
    assert get[("setup_p50", "all")] == pytest.approx(50.5)      # of 1..100; the failed pair 101 is left out
    assert get[("setup_p99", "all")] == pytest.approx(99.01)
    assert get[("processes", "mn")] == 2 and get[("processes", "sg")] == 1
    assert get[("rss_median", "mn")] == pytest.approx((31744 + 20480) / 2 / 1024)   # peak per process
    assert get[("pss_total", "mn")] == pytest.approx((11264 + 8192) / 1024)
    assert get[("cpu_median", "mn")] == pytest.approx(2.0)   # 1 s and 3 s during the run
    assert get[("cpu_pct_median", "mn")] == pytest.approx(20.0)
    assert get[("wall_build", "all")] == 12.5
    text = scale.summary_markdown(summary, {"pairs": 101, "vcm": "in-sg", "arrival": "all", "complete": False})
    assert "Incomplete run" in text and "100 of 101" in text and "| mn | 2 |" in text


def test_cpu_wait_is_a_share_of_each_interval_and_a_starved_host_is_named():
    rows = []
    for node, waits in (("mn1", [0.0, 0.1, 0.9]), ("mn2", [0.0, 0.3, 1.3]), ("mn3", [0.0, 0.0, 0.5])):
        for t, wait in zip((0.0, 1.0, 2.0), waits):
            rows.append({"t": t, "node": node, "role": "mn", "pid": 1, "cpu_s": t, "wait_s": wait,
                         "rss_kib": 2048, "pss_kib": 1024})
    resources = pd.DataFrame(rows, columns=hostload.RESOURCE_COLUMNS)
    shares = hostload.cpu_wait_shares(resources)
    assert list(shares.round(6)) == [10.0, 80.0]      # medians of (10, 30, 0) % and (80, 100, 50) %
    assert list(hostload.cpu_wait_shares(resources, (1.5, 2.5)).round(6)) == [80.0]   # the interval ending at 2 s
    setup = pd.DataFrame([{"pair": 1, "ok": True, "setup_ms": 100.0, "detect_ms": 50.0}], columns=scale.SETUP_COLUMNS)
    summary = pd.DataFrame(scale.summary_rows(setup, resources, {}))
    get = {(r.metric, r.group): r.value for r in summary.itertuples()}
    assert get[("cpu_wait_pct_peak", "mn")] == pytest.approx(80.0)
    assert get[("cpu_wait_pct_median", "mn")] == pytest.approx(45.0)
    text = scale.summary_markdown(summary, {"pairs": 1, "vcm": "in-sg", "arrival": "all"})
    assert "ran out of CPU" in text and "80 % in the worst one" in text
    calm = resources.assign(wait_s=resources.wait_s / 100)
    text = scale.summary_markdown(pd.DataFrame(scale.summary_rows(setup, calm, {})),
                                  {"pairs": 1, "vcm": "in-sg", "arrival": "all"})
    assert "Host CPU" in text and "ran out of CPU" not in text
    # samples without run-queue statistics give no figure rather than a made-up one
    assert hostload.cpu_wait_shares(resources.assign(wait_s=float("nan"))) is None


def test_read_proc_of_this_process_and_of_a_gone_one():
    mine = hostload.read_proc(os.getpid())
    assert mine["rss_kib"] > 1000 and mine["pss_kib"] > 0 and mine["cpu_s"] >= 0
    assert mine["wait_s"] is None or mine["wait_s"] >= 0
    assert hostload.read_proc(2 ** 22 + 12345) is None
    light = hostload.read_proc(os.getpid(), memory=False)   # handover's sampling: CPU only
    assert light["rss_kib"] is None and light["pss_kib"] is None and light["cpu_s"] >= mine["cpu_s"]


def test_roles():
    assert [hostload.role_of(n) for n in ("mn17", "sg", "vcm", "ha", "radvd-ar1", "sg-ir.emu")] == \
        ["mn", "sg", "vcm", "ha", "radvd", "emulator"]


@pytest.mark.parametrize("args, message", [
    (["--pairs", "0"], "--pairs must be from 1 to 100"),
    (["--pairs", "101"], "--pairs must be from 1 to 100"),
    (["--rate", "0"], "--rate must be between"),
    (["--interval", "-1"], "--interval must be between"),
    (["--hold", "nan"], "--hold must be between"),
    (["--arrival", "poisson"], "invalid choice"),
    (["--infra-nice", "-30"], "--infra-nice must be from -20 to 19"),
    (["--link", "sg-ir:delay=fast"], "--link sg-ir:delay=fast"),
    (["--ra-interval", "1"], "--ra-interval must be MIN,MAX"),
    (["--ra-interval", "0.01,0.05"], "--ra-interval 0.01,0.05: need 0.03 <= MIN"),
    (["--ra-interval", "3,3"], "--ra-interval 3,3: need"),
])
def test_bad_arguments_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        scale.parse_args(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err


def test_quick_defaults():
    args = scale.parse_args(["--quick"])
    assert args.pairs == scale.QUICK_PAIRS and args.hold == 2.0
    args = scale.parse_args([])
    assert args.pairs == 50 and args.arrival == "all" and args.ra_intervals == scale.RA_INTERVALS
    assert scale.parse_args(["--ra-interval", "0.03,0.07"]).ra_intervals == (0.03, 0.07)


@pytest.mark.parametrize("vcm", ["in-sg", "host"])
@pytest.mark.parametrize("correspondent", [False, True])
def test_lab_spis_stay_unique_with_the_most_mobile_nodes(vcm, correspondent, tmp_path):
    """Every SA the lab configures has its own SPI (two configs naming one SPI are the two ends of one
    SA), and none falls outside the range the VCM must not hand out."""
    from topologies.addressing import MAX_MOBILE_NODES
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="private", mobile_nodes=MAX_MOBILE_NODES, mobility=True, vcm=vcm,
                  correspondent=correspondent, run_dir=str(tmp_path))
    lab.run_dir = str(tmp_path)
    configs = lab._make_configs()
    names = collections.defaultdict(set)

    def walk(o):
        if isinstance(o, dict):
            if isinstance(o.get("spi"), int) and "name" in o:
                names[o["spi"]].add(o["name"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(configs)
    shared = {hex(spi): sorted(n) for spi, n in names.items() if len(n) > 1}
    assert not shared
    reserved = set(configs["sg"]["mobility"]["vcm"]["reserved_spis"])
    assert set(names) <= reserved
    assert len(names) >= 4 * MAX_MOBILE_NODES


def test_ping_counts(tmp_path):
    log = tmp_path / "ping.log"
    log.write_text("PING x 56 data bytes\n\n--- x ping statistics ---\n"
                   "250 packets transmitted, 248 received, 0.8% packet loss, time 5000ms\n")
    assert scale.ping_counts(str(log)) == (250, 248)
    assert scale.ping_counts(str(tmp_path / "none.log")) == (None, None)


def test_mesh_pairs_time_from_their_start_and_keys_are_counted_and_modelled(tmp_path):
    events = [ev(100.02, "mn1", "data_first_direct", dst=HOMES["mn2"]),
              ev(100.05, "mn2", "data_first_direct", dst=HOMES["mn1"])]
    (row,) = scale.setup_rows(events, [("mn1", "mn2")], HOMES, {"mn1": 100.0}, {}, t0=90.0,
                              session_detected=False)
    assert row["ok"] and row["detect_ms"] == 0 and row["setup_ms"] == pytest.approx(20.0)
    (row,) = scale.setup_rows(events, [("mn1", "mn2")], HOMES, {"mn1": 100.0}, {}, t0=90.0)
    assert not row["ok"] and row["error"] == "no session detected"   # the VCM's timing needs the SG's event
    # mn1 holds a mesh with 3 peers; mn2 made one pair at run time (a VCM key log line per SA)
    configs = {"mn1": {"mobility": {"mesh": {"peers": [{}, {}, {}]}}}, "mn2": {"mobility": {}}, "sg": {}}
    (tmp_path / "mn2.keys.jsonl").write_text('{"spi": 1}\n{"spi": 2}\n')
    made = scale.mn_mn_sas_made(configs, str(tmp_path))
    assert made == {"mn1": 6, "mn2": 2}
    rows = {(r["metric"], r["group"]): r["value"] for r in scale.key_rows("mesh", 100, made)}
    assert rows[("mn_mn_sas_total", "mesh")] == 8 and rows[("key_bytes_total", "mesh")] == 4 * 20
    assert rows[("model_sas_per_mn", "mesh")] == 198 and rows[("model_key_bytes_total", "mesh")] == 100 * 99 * 20
    assert rows[("model_sas_per_mn", "vcm")] == 2 and rows[("model_key_bytes_total", "vcm")] == 100 * 20
    summary = pd.DataFrame(scale.summary_rows(pd.DataFrame(columns=scale.SETUP_COLUMNS),
                                              pd.DataFrame(columns=hostload.RESOURCE_COLUMNS), {})
                           + scale.key_rows("mesh", 100, made))
    text = scale.summary_markdown(summary, {"pairs": 50, "strategy": "mesh", "vcm": None, "arrival": "all"})
    assert "strategy mesh" in text and "no session to detect" in text
    assert "| mesh | 198 | 3960 | 198000 |" in text and "| vcm | 2 | 40 | 2000 |" in text


def test_scale_takes_a_strategy_that_goes_direct(capsys):
    assert scale.parse_args(["--quick", "--strategy", "mesh"]).strategy == "mesh"
    assert scale.parse_args(["--quick"]).strategy == "vcm"
    for name, message in (("sg", "never takes a pair direct"), ("nope", "unknown strategy 'nope'")):
        with pytest.raises(SystemExit):
            scale.parse_args(["--strategy", name])
        assert message in capsys.readouterr().err
