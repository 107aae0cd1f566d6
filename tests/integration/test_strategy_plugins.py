"""Strategies as plug-ins, end to end: `handover.py --quick` runs a strategy from a plug-in folder (a module
written by the test, found through SVPNLAB_STRATEGY_PATH) next to the mesh baseline, whose MNs hold their
SA pairs from the start and reach each other directly once both are outside, without the SG."""
import glob
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HANDOVER = os.path.join(ROOT, "experiments", "handover.py")
# A strategy as a user would add one: the SG's behaviour, plus hooks that leave a trace in the results.
PLUGIN = '''
from experiments.strategies import Strategy, register


@register
class CountingPhases(Strategy):
    name = "counted-sg"
    description = "sg, counting the phases the hooks saw"

    def __init__(self):
        self.before, self.after = [], []

    def before_phase(self, lab, phase, run):
        self.before.append(phase.name)
        lab.status("sg")            # the hooks get the running lab

    def after_phase(self, lab, phase, run):
        self.after.append(phase.name)

    def report(self, lab, run):
        return [{"metric": "hooked_phases", "detail": "before", "value": len(self.before)},
                {"metric": "hooked_phases", "detail": "after", "value": len(self.after)},
                {"metric": "plugin_seed", "detail": run.addressing, "value": run.seed}]
'''


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory) -> str:
    """One `handover.py --quick --strategies counted-sg,mesh` run; its results folder."""
    plugins = tmp_path_factory.mktemp("plugins")
    (plugins / "counted_sg.py").write_text(PLUGIN)
    parent = tmp_path_factory.mktemp("handover")
    env = dict(os.environ, SVPNLAB_STRATEGY_PATH=str(plugins))
    help_text = subprocess.run([sys.executable, HANDOVER, "--help"], capture_output=True, text=True, env=env,
                               timeout=60).stdout
    assert "counted-sg" in help_text and "sg, counting the phases" in help_text
    result = subprocess.run([sys.executable, HANDOVER, "--quick", "--no-plots", "--seed", "3",
                             "--strategies", "counted-sg,mesh", "--results", str(parent)],
                            capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (folder,) = glob.glob(str(parent / "handover-default-*"))
    return folder


def test_a_plugin_strategy_runs_the_scenario_with_its_hooks_and_rows(plugin_run):
    counters = pd.read_csv(os.path.join(plugin_run, "counters.csv"))
    rtt = pd.read_csv(os.path.join(plugin_run, "rtt.csv"))
    mine = counters[counters.strategy == "counted-sg"]
    hooked = mine[mine.metric == "hooked_phases"].set_index("detail").value
    assert hooked["before"] == hooked["after"] == 6   # every phase of the default scenario
    assert mine[mine.metric == "plugin_seed"].set_index("detail").value["private"] == 3
    assert set(rtt[rtt.strategy == "counted-sg"].phase) >= {"mn2-out", "route-optimised"}
    relayed = mine[mine.metric == "sg_relayed_packets"].set_index("phase").value
    assert relayed["route-optimised"] > 50, relayed            # it is the SG path: everything relayed


def _mesh_story(folder: str) -> str:
    """The mesh run's moves, registrations and notices, for an assertion's message."""
    wanted = {"move", "binding_added", "binding_updated", "peer_care_of", "data_first_direct", "data_via_sg"}
    with open(os.path.join(folder, "events.jsonl"), encoding="utf-8") as f:
        events = [json.loads(line) for line in f if line.strip()]
    start = max(e["time"] for e in events if e["event"] == "strategy_start" and e.get("strategy") == "mesh")
    return "\n".join(f"{e['time'] - start:.3f} {e.get('node')} {e['event']} "
                     f"{e.get('care_of_address') or e.get('to') or e.get('dst') or ''}"
                     for e in events if e["time"] >= start and e["event"] in wanted)


def test_mesh_is_direct_without_the_sg_once_both_mns_are_out(plugin_run):
    counters = pd.read_csv(os.path.join(plugin_run, "counters.csv"))
    rtt = pd.read_csv(os.path.join(plugin_run, "rtt.csv"))
    mesh = counters[counters.strategy == "mesh"]
    relayed = mesh[mesh.metric == "sg_relayed_packets"].set_index("phase").value
    via_sg = counters[(counters.strategy == "counted-sg") & (counters.metric == "sg_relayed_packets")]
    via_sg = via_sg.set_index("phase").value
    story = _mesh_story(plugin_run)
    # Both outside from mn1-out on: no key exchange to wait for, so the SG relays (next to) nothing between
    # them in the steady phase nor across MN1's WLAN -> cellular move (the care-of notices move the SAs),
    # where the SG path relays every packet ...
    for phase in ("route-optimised", "mn1-wlan-to-cell"):
        assert relayed[phase] <= 0.05 * via_sg[phase], (phase, relayed, via_sg, story)
    # ... while with one MN inside the office the SG path is the only one.
    assert relayed["mn2-out"] > 50 and relayed["mn2-returns"] > 20, relayed
    pair = rtt[(rtt.strategy == "mesh") & (rtt.pair == "mn1-mn2") & (rtt.lost == 0)]
    direct = pair.groupby("phase").path.agg(lambda p: (p == "direct").mean())
    assert direct["route-optimised"] >= 0.9 and direct["mn1-wlan-to-cell"] >= 0.9, (direct, story)
    assert direct["mn2-out"] == 0 and direct["mn2-returns"] == 0, direct
    # The cost side: keys for every pair from the start, nothing to set up, notices to follow moves.
    end = mesh[mesh.phase == "end"].set_index(["metric", "detail"]).value
    assert end["mn_mn_sas", "per-mn"] == 2 and end["key_material_bytes", "total"] == 40
    assert end["setup_s", "mn-mn"] == 0 and end["care_of_notices", "sg"] >= 2 and end["direct_sas_moved", "mns"] >= 2
    errors = counters[counters.metric == "handler_errors"]
    assert (errors.value == 0).all(), errors[errors.value != 0]
    signalling = mesh[mesh.metric == "signalling_messages"]
    assert not signalling.detail.str.contains("keys").any(), signalling   # no VCM message at all
