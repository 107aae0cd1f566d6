"""experiments/handover.py --quick end to end: every strategy runs the default scenario, and the CSVs show
what route optimisation buys (RTT), that every move has a handover gap, and that no probe payload is seen
in clear on a public link under sg and vcm, while insecure-ro (route optimisation without an SA) shows it."""
import glob
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from experiments.hostload import STARVED_PCT

TOLERANCE = 0.10
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The probe datagram (64 bytes of UDP payload) in ESP tunnel mode as a frame: Ethernet 14 + outer IPv6 40
# + ESP header 8 + IV 8 + (inner IPv6 40 + UDP 8 + 64, padded with the 2-byte trailer to 116) + ICV 16.
PROBE_FRAME = 202
HA_TUNNEL = 40   # the home agent's IPv6-in-IPv6 header on the SG's second leg (RFC 6275 §10.4.5)


def one_way_ms(kind: str, direction: str, frame: int) -> float:
    """Expected one-way time through one link of the default profile of ``kind``: its delay, the mean
    that clipping the normal jitter at zero adds, and serialisation of the frame at its rate."""
    import math

    from nodeapps.linkemu.profiles import make_config
    from topologies.svpn import DEFAULT_PROFILES

    params = getattr(make_config(DEFAULT_PROFILES[kind]), direction)
    extra = 0.0
    if params.jitter_ms and params.distribution == "normal":
        mu, sigma = params.delay_ms, params.jitter_ms
        phi = math.exp(-0.5 * (mu / sigma) ** 2) / math.sqrt(2 * math.pi)
        extra = sigma * phi - mu * 0.5 * math.erfc(mu / sigma / math.sqrt(2))   # E[max(0, X)] - mu
    serialise = frame * 8 / (params.rate_mbit * 1e3) if params.rate_mbit else 0.0
    return params.delay_ms + extra + serialise


def path_rtt_ms(hops) -> float:
    """Sum over the (link kind, direction, frame bytes) hops of a round trip. Forward is the uplink: MN side
    to access router on the WLAN links, access router to ir on the metro links, sg to ir on the long haul."""
    return sum(one_way_ms(kind, direction, frame) for kind, direction, frame in hops)


P, T = PROBE_FRAME, PROBE_FRAME + HA_TUNNEL
# MN1 on wlan1, MN2 on wlan2 (office links are ideal). Via the SG, each datagram reaches the SG in its
# sender's tunnel and leaves it in the receiver's tunnel inside the home agent's IPv6-in-IPv6 tunnel.
DIRECT = [("wlan1", "forward", P), ("ir-ar", "forward", P), ("ir-ar", "reverse", P), ("wlan2", "reverse", P),
          ("wlan2", "forward", P), ("ir-ar", "forward", P), ("ir-ar", "reverse", P), ("wlan1", "reverse", P)]
VIA_SG = [("wlan1", "forward", P), ("ir-ar", "forward", P), ("sg-ir", "reverse", P),
          ("sg-ir", "forward", T), ("ir-ar", "reverse", T), ("wlan2", "reverse", T),
          ("wlan2", "forward", P), ("ir-ar", "forward", P), ("sg-ir", "reverse", P),
          ("sg-ir", "forward", T), ("ir-ar", "reverse", T), ("wlan1", "reverse", T)]


def analytic_ratio() -> float:
    """RTT ratio direct / via the SG between MN1 on wlan1 and MN2 on wlan2, from the default profiles:
    per link its one-way delay, the mean that clipping the WLAN's normal jitter at zero adds (0.06 ms per
    crossing) and the probe frame's serialisation at the link rate (0.3 ms per round trip on the direct
    path, 0.4 ms via the SG): 32.5 / 172.6 ms = 0.1885 (delays alone: 32 / 172 = 0.186).

    What the links do not model is small while the emulators keep time: the userspace ESP nodes, TUN
    devices and probe processes added 1-2 ms to the direct round trip and 4-5 ms via the SG (ratio within
    2 % of this value). A ratio 11-13 % above it came from runs whose emulators fell behind (OVERLOADED,
    up to 20 % of frames released late by up to 30 ms on a busy machine): the later frames inflate the
    short direct path proportionally more when it is the vcm run that was starved."""
    return path_rtt_ms(DIRECT) / path_rtt_ms(VIA_SG)


# Links (node pairs as in config.json's link reports) the two compared paths cross.
DIRECT_LINKS = [{"swlan1", "ar1"}, {"ar1", "ir"}, {"ar2", "ir"}, {"swlan2", "ar2"}]
VIA_SG_LINKS = DIRECT_LINKS + [{"sg", "ir"}]


def late_links(backend: dict, path_links) -> list[str]:
    """The links of a path whose emulator fell behind in a strategy's run (its delays are inflated)."""
    return [link["link"] for link in backend["links"]
            if link.get("overloaded") and set(link.get("nodes") or ()) in path_links]


def starved_hosts(counters: pd.DataFrame, strategies, phase: str) -> list[str]:
    """The strategies whose lab ran out of host CPU in ``phase`` (a lab process waited for a CPU more than
    STARVED_PCT % of the time, median over the phase): their delays are the host's."""
    wait = counters[(counters.metric == "host_cpu_wait_pct") & (counters.detail == "median")
                    & (counters.phase == phase) & counters.strategy.isin(strategies)]
    return [f"host CPU in the {r.strategy} lab ({r.value:.0f} % wait)" for r in wait.itertuples()
            if r.value > STARVED_PCT]


def quiet(rtt: pd.DataFrame, thr: pd.DataFrame) -> pd.DataFrame:
    """Probes not sent while a bulk transfer of the same strategy ran (TCP fills the link queues)."""
    keep = pd.Series(True, index=rtt.index)
    for row in thr.itertuples(index=False):
        busy = (rtt.strategy == row.strategy) & (rtt.t >= row.t_start - 0.2) & (
            rtt.t <= row.t_start + row.duration_s + 0.5)
        keep &= ~busy
    return rtt[keep]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> str:
    """One `handover.py --quick` run (every strategy) for the tests of this module; its results folder."""
    parent = tmp_path_factory.mktemp("handover")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "handover.py"), "--quick",
                             "--results", str(parent)], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (folder,) = glob.glob(str(parent / "handover-default-*"))
    return folder


def test_quick_run_writes_results_that_show_route_optimisation(quick_run):
    folder = quick_run
    rtt = pd.read_csv(os.path.join(folder, "rtt.csv"))
    thr = pd.read_csv(os.path.join(folder, "throughput.csv"))
    handovers = pd.read_csv(os.path.join(folder, "handovers.csv"))
    counters = pd.read_csv(os.path.join(folder, "counters.csv"))
    strategies = ["sg", "vcm", "insecure-ro"]

    # No node app caught an exception in a handler, under any strategy (each node's count as it exited).
    errors = counters[counters.metric == "handler_errors"]
    for s in strategies:
        assert {"sg", "ha", "mn1", "mn2"} <= set(errors[errors.strategy == s].detail), errors
    assert (errors.value == 0).all(), errors[errors.value != 0]

    # Every move of the scenario (4) has a gap under every strategy.
    for s in strategies:
        mine = handovers[handovers.strategy == s]
        assert len(mine) == 4, mine
        assert mine.gap_ms.notna().all() and (mine.gap_ms > 0).all(), mine

    # No probe marker in clear on any captured public link under sg and vcm; under insecure-ro the
    # eavesdropper reads it once the route is optimised (and not before: the SG path is ESP).
    exposure = counters[counters.metric == "plaintext_exposure_bytes"]
    for s in strategies:
        mine = exposure[exposure.strategy == s]
        assert set(mine.detail) == {"ir", "ar1-lan", "ar2-lan", "ar3-lan"}
        if s == "insecure-ro":
            by_phase = mine.groupby("phase").value.sum()
            assert by_phase["route-optimised"] > 0 and by_phase["both-inside"] == by_phase["mn2-out"] == 0, by_phase
            assert mine[mine.detail == "ir"].value.sum() > 0, mine
        else:
            assert mine.value.sum() == 0, mine

    # insecure-ro takes the same direct path as vcm (care-of to care-of), far shorter than via the SG.
    steady = quiet(rtt[(rtt.pair == "mn1-mn2") & (rtt.phase == "route-optimised") & (rtt.lost == 0)], thr)
    ro = steady[(steady.strategy == "insecure-ro") & (steady.path == "direct")]
    sg = steady[steady.strategy == "sg"]
    assert len(ro) >= 10 and len(sg) >= 10, (len(ro), len(sg))
    assert ro.rtt_ms.median() < 0.5 * sg.rtt_ms.median(), (ro.rtt_ms.median(), sg.rtt_ms.median())

    # Throughput: a TCP transfer per strategy in two phases of the quick form; the direct path carries more.
    for s in strategies:
        mine = thr[thr.strategy == s]
        assert set(mine.phase) >= {"mn2-out", "mn1-out"}, mine
        # > 0 also via the SG: MN packets in the home agent's tunnel must fit the SG's tunnel to the other MN
        assert (mine.duration_s >= 1).all() and (mine.mbit_s > 0).all(), mine
    out = thr[thr.phase == "mn1-out"].set_index("strategy")
    assert out.path["vcm"] == "direct" and out.mbit_s["vcm"] > out.mbit_s["sg"], out

    # SG load: MN-to-MN packets relayed while both MNs are out, under sg; hardly any once the VCM has
    # moved them onto the direct path; counted apart from MN-office traffic.
    relayed = counters[counters.metric == "sg_relayed_packets"].groupby(["strategy", "phase"]).value.sum()
    assert relayed["sg", "route-optimised"] >= 50 * 2.25, relayed   # 50 Hz probe echoes and TCP, both ways
    assert relayed["vcm", "route-optimised"] < 0.1 * relayed["sg", "route-optimised"], relayed
    assert relayed["insecure-ro", "route-optimised"] < 0.1 * relayed["sg", "route-optimised"], relayed
    assert all(relayed[s, "both-inside"] == 0 for s in strategies), relayed
    office = counters[counters.metric == "sg_mn_office_packets"].groupby(["strategy", "phase"]).value.sum()
    assert office["sg", "route-optimised"] >= 20 * 2.25 and office["vcm", "route-optimised"] >= 20 * 2.25, office
    relayed_bytes = counters[counters.metric == "sg_relayed_bytes"].groupby(["strategy", "phase"]).value.sum()
    assert relayed_bytes["sg", "route-optimised"] > 100 * relayed["sg", "route-optimised"], relayed_bytes

    # Signalling by type with bytes: binding updates and acknowledgements under both, the VCM's under vcm.
    sig = counters[counters.metric.isin(["signalling_messages", "signalling_bytes"])]
    by = sig.groupby(["strategy", "metric", "detail"]).value.sum()
    for s in strategies:
        for kind in ("bu", "ba"):
            assert by[s, "signalling_messages", kind] >= 4, by      # one per move at least, to HA and SG
            assert by[s, "signalling_bytes", kind] >= 40 * by[s, "signalling_messages", kind], by
    for kind in ("report_202", "keys_206", "keys_210", "ack_208", "ack_212"):
        assert by["vcm", "signalling_messages", kind] >= 1 and by["vcm", "signalling_bytes", kind] > 0, by
    assert ("sg", "signalling_messages", "keys_206") not in by.index

    # The sequence chart of vcm has the VCM's messages and the binding updates, from this run's events.
    from experiments import plotting
    kinds = {a["kind"] for a in plotting.message_arrows(plotting.load(folder), "vcm")}
    assert {"report_202", "keys_206", "keys_210", "ack_208", "ack_212", "bu", "ba"} <= kinds, kinds

    # config.json: the seed, and that it reached every link's emulator.
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    assert config["seed"] == 1 and config["topology"]["seed"] == 1
    from topologies.svpn import link_seed
    for s in strategies:
        links = config["topology"]["link_backend"][s]["links"]
        assert links and all(link["config"]["seed"] is not None for link in links)
    assert config["topology"]["link_settings"]["sg-ir"]["seed"] == link_seed(1, "sg-ir")
    # each strategy's lab specification, whole: the lab can be built again from it
    from topologies.spec import LabSpec
    for s in strategies:
        spec = LabSpec.from_dict(config["lab_spec"][s])
        assert spec.seed == 1 and spec.mobility and (spec.vcm is not None) == (s == "vcm")

    for name in ("rtt-timeline", "phase-bars", "rtt-cdf", "handover-gaps", "costs", "topology", "sequence-vcm",
                 "sequence-sg", "sequence-insecure-ro"):
        for ext in ("png", "svg"):
            path = os.path.join(folder, "plots", f"{name}.{ext}")
            assert os.path.getsize(path) > 1000, path


def test_route_optimised_rtt_ratio_matches_the_analytic_value(quick_run):
    """Direct under vcm, via the SG under sg, in the quiet part of the route-optimised phase, against the
    links' delays. Only emulators that kept time say anything about delays: when one on the compared
    paths fell behind (a busy machine; marked overloaded in config.json) and the numbers are off, the
    comparison is skipped, with the numbers; numbers within the tolerance count either way."""
    folder = quick_run
    rtt = pd.read_csv(os.path.join(folder, "rtt.csv"))
    thr = pd.read_csv(os.path.join(folder, "throughput.csv"))
    with open(os.path.join(folder, "config.json")) as f:
        backends = json.load(f)["topology"]["link_backend"]
    late = late_links(backends["sg"], VIA_SG_LINKS) + late_links(backends["vcm"], DIRECT_LINKS)
    counters = pd.read_csv(os.path.join(folder, "counters.csv"))
    late += starved_hosts(counters, ["sg", "vcm"], "route-optimised")
    waits = counters[(counters.metric == "host_cpu_wait_pct") & (counters.phase == "route-optimised")]

    steady = quiet(rtt[(rtt.pair == "mn1-mn2") & (rtt.phase == "route-optimised") & (rtt.lost == 0)], thr)
    sg = steady[steady.strategy == "sg"]
    vcm = steady[(steady.strategy == "vcm") & (steady.path == "direct")]
    assert len(sg) >= 10 and len(vcm) >= 10, (len(sg), len(vcm))
    assert (sg.path == "via-sg").all()
    ratio = vcm.rtt_ms.median() / sg.rtt_ms.median()
    expected = analytic_ratio()
    detail = (f"ratio {ratio:.4f}, analytic {expected:.4f}, direct {vcm.rtt_ms.median():.2f} ms "
              f"(links {path_rtt_ms(DIRECT):.2f}), via SG {sg.rtt_ms.median():.2f} ms (links {path_rtt_ms(VIA_SG):.2f}); host CPU wait %: "
              + ", ".join(f"{r.strategy} {r.detail} {r.value:g}" for r in waits.itertuples()))
    print(detail)
    assert vcm.rtt_ms.median() < sg.rtt_ms.median(), detail
    # The detour itself is link delay: twice the long-haul link, both ways.
    detour = sg.rtt_ms.median() - vcm.rtt_ms.median()
    ratio_ok = abs(ratio - expected) <= TOLERANCE * expected
    detour_ok = abs(detour - (path_rtt_ms(VIA_SG) - path_rtt_ms(DIRECT))) <= TOLERANCE * detour
    if late and not (ratio_ok and detour_ok):
        pytest.skip(f"emulation overloaded: {', '.join(late)} (delays inflated); {detail}")
    assert ratio_ok, detail
    assert detour_ok, f"detour {detour:.2f} ms; {detail}"
