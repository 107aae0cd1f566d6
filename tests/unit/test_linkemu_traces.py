"""Capacity traces: the shipped files are exactly what our Markov generator makes; loading is checked."""
import pytest

from nodeapps.linkemu import traces
from nodeapps.linkemu.errors import LinkConfigError


@pytest.mark.parametrize("name", sorted(traces.SHIPPED))
def test_shipped_trace_is_reproduced_by_the_generator(name):
    model = traces.SHIPPED[name]
    path = traces.SHIPPED_DIR / f"{name}{traces.SUFFIX}"
    assert path.read_text(encoding="ascii") == traces.trace_text(traces.markov_trace(model))
    stamps = traces.load_trace(name)
    assert stamps[-1] == model.duration_ms
    assert min(model.states_mbit) * 0.5 < traces.mean_rate_mbit(stamps) < max(model.states_mbit)


def test_generator_is_deterministic_and_seed_dependent():
    model = traces.MarkovModel((1.0, 5.0), 1 / 100, 0.5, 2000, 1)
    assert traces.markov_trace(model) == traces.markov_trace(model)
    other = traces.MarkovModel((1.0, 5.0), 1 / 100, 0.5, 2000, 2)
    assert traces.markov_trace(model) != traces.markov_trace(other)


def test_constant_state_gives_its_rate():
    stamps = traces.markov_trace(traces.MarkovModel((12.0,), 0.0, 0.0, 1000, 3))
    assert stamps.count(1) == 1 and len(stamps) == 1000  # 12 Mbit/s = exactly one 1500-byte packet per ms
    assert traces.mean_rate_mbit(tuple(stamps)) == pytest.approx(12.0)


def test_load_accepts_blank_lines_and_paths(tmp_path):
    path = tmp_path / "t.trace"
    path.write_text("1\n\n1\n4\n")
    assert traces.load_trace(str(path)) == (1, 1, 4)


def test_unknown_name_is_a_one_line_error():
    with pytest.raises(LinkConfigError) as info:
        traces.load_trace("no-such-trace")
    assert "cannot read" in str(info.value) and "\n" not in str(info.value)


def test_command_line_summary_and_errors(capsys, tmp_path):
    assert traces.main(["summary", "lte-up"]) == 0
    assert "lte-up: period 30000 ms" in capsys.readouterr().out
    assert traces.main(["summary", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: trace")
