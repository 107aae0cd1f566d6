"""The strategy registry (experiments/strategies/): modules found by themselves, plug-in folders, one-line
errors, and the typed run description the experiments hand over."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))   # the scripts import _venv as a sibling

from experiments import strategies  # noqa: E402
from experiments.strategies import StrategyError, StrategyRun  # noqa: E402

PLUGIN = '''
from experiments.strategies import Strategy, register


@register
class Probe(Strategy):
    name = "probe-plugin"
    description = "a strategy from a plug-in folder"
'''


@pytest.fixture
def plugin_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(strategies.ENV_PATH, str(tmp_path))
    yield tmp_path
    monkeypatch.delenv(strategies.ENV_PATH)
    strategies.rediscover()


def test_every_module_of_the_package_is_discovered_in_listing_order():
    package = os.path.join(ROOT, "experiments", "strategies")
    modules = {f[:-3] for f in os.listdir(package) if f.endswith(".py") and not f.startswith("_")}
    found = {type(strategies.get(n)).__module__.rsplit(".", 1)[1] for n in strategies.names()}
    assert found == modules
    assert strategies.names()[:5] == ("sg", "vcm", "vcm-key", "insecure-ro", "mesh")
    assert strategies.names(default_only=True) == ("sg", "vcm", "insecure-ro")
    assert any(line.split()[:2] == ["mesh", "baseline:"] for line in strategies.describe().splitlines())


def test_unknown_name_is_one_line_listing_the_known_ones():
    with pytest.raises(StrategyError) as info:
        strategies.get("nope")
    message = str(info.value)
    assert "\n" not in message and "'nope'" in message
    assert "available: sg, vcm, vcm-key, insecure-ro, mesh" in message
    for text, error in (("sg,sg", "named twice"), (" , ", "at least one"), ("sg,ro", "'ro'")):
        with pytest.raises(StrategyError, match=error):
            strategies.parse_list(text)
    assert strategies.parse_list(" vcm , sg ") == ["vcm", "sg"]
    assert strategies.parse_list("all") == list(strategies.names())


def test_a_plugin_folder_adds_a_strategy_and_a_broken_one_is_named(plugin_folder):
    (plugin_folder / "probe_plugin.py").write_text(PLUGIN)
    strategies.rediscover()
    assert strategies.names()[-1] == "probe-plugin"
    assert strategies.get("probe-plugin").lab_options(StrategyRun(scenario=None)) == {}
    (plugin_folder / "broken.py").write_text("raise RuntimeError('no')\n")
    with pytest.raises(StrategyError, match="strategy module broken in .*RuntimeError: no"):
        strategies.rediscover()


def test_register_refuses_what_is_not_a_named_strategy():
    class Nameless(strategies.Strategy):
        pass
    with pytest.raises(StrategyError, match="no usable name"):
        strategies.register(Nameless)
    with pytest.raises(StrategyError, match="not a Strategy"):
        strategies.register(object)


def test_lab_options_follow_the_run_description():
    from experiments.scenario import load_default
    scenario = load_default()
    run = StrategyRun(scenario=scenario, vcm_host=True)
    assert strategies.get("vcm").lab_options(run) == {"vcm": "host"}
    assert strategies.get("vcm").lab_options(StrategyRun(scenario=scenario)) == {"vcm": "in-sg"}
    assert strategies.get("insecure-ro").lab_options(run) == {"route_optimisation": [("mn1", "mn2")]}
    assert strategies.get("insecure-ro").lab_options(StrategyRun(scenario=None, pairs=(("mn3", "mn4"),))) == {
        "route_optimisation": [("mn3", "mn4")]}
    assert strategies.get("mesh").lab_options(run) == {"mesh": True}
    assert strategies.get("sg").lab_options(run) == {}
    assert StrategyRun(scenario=None, ideal_links=True).links == "ideal"


@pytest.mark.parametrize("n", [2, 10, 100])
def test_mesh_keys_grow_with_the_square_and_the_vcms_with_the_pairs_that_talk(n):
    mesh, vcm = strategies.get("mesh").costs(n), strategies.get("vcm").costs(n, peers_per_mn=1)
    assert mesh["mn_mn_sas_per_mn"] == 2 * (n - 1) and mesh["key_bytes_total"] == n * (n - 1) * 20
    assert vcm["mn_mn_sas_per_mn"] == 2 and vcm["key_bytes_total"] == n * 20
    assert strategies.get("sg").costs(n)["key_bytes_total"] == 0
