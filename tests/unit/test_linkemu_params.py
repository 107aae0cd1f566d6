"""Link parameters: units, one-line errors for impossible input, profiles and overrides."""
from pathlib import Path

import pytest

from nodeapps.linkemu import profiles
from nodeapps.linkemu.errors import LinkConfigError
from nodeapps.linkemu.overrides import override_to_kwargs, parse_override
from nodeapps.linkemu.params import LinkConfig, LinkParams
from nodeapps.linkemu.profiles import make_config
from topologies import link_profiles


def one_line_error(**kwargs):
    with pytest.raises(LinkConfigError) as info:
        make_config(**kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def test_units_are_understood():
    config = make_config(delay="1.5s", jitter="500us", loss="2.5%", rate="512kbit", queue_bytes="64kb")
    p = config.forward
    assert (p.delay_ms, p.jitter_ms, p.loss, p.rate_mbit, p.queue_bytes) == (1500, 0.5, 2.5, 0.512, 64000)
    assert config.reverse == p
    assert make_config(bw=10, delay=20).forward.rate_mbit == 10
    assert make_config(rate="1gbit").forward.rate_mbit == 1000


@pytest.mark.parametrize("kwargs, fragment", [
    ({"delay": -1}, "delay -1 ms is outside"),
    ({"delay": "-5ms"}, "delay -5 ms is outside"),
    ({"loss": 101}, "loss 101 % is outside"),
    ({"loss": "150%"}, "loss 150 % is outside"),
    ({"jitter": "fast"}, "jitter 'fast' is not understood"),
    ({"rate": 0}, "rate must be > 0"),
    ({"rate": "10 furlongs"}, "not understood"),
    ({"rate": 10, "trace": "lte-down"}, "either rate or trace"),
    ({"queue_packets": 0}, "queue_packets must be"),
    ({"queue_bytes": 100}, "cannot hold one full-size frame"),
    ({"queue_packets": 5, "queue_bytes": 9000}, "either queue_packets or queue_bytes"),
    ({"distribution": "pareto"}, "distribution must be one of"),
    ({"ge_p": 5}, "needs both ge_p and ge_r"),
    ({"ge_p": 5, "ge_r": 0}, "ge_r must be > 0"),
    ({"loss": 1, "ge_p": 5, "ge_r": 10}, "either loss or a Gilbert-Elliott"),
    ({"burst_loss": (150, 2)}, "burst_loss needs"),
    ({"trace": "/nonexistent/capacity.trace"}, "cannot read"),
    ({"dleay": 5}, "unknown link parameter 'dleay'"),
    ({"profile": "satellite"}, "unknown link profile 'satellite'"),
    ({"backend": "magic"}, "backend must be one of"),
    ({"forward": 5}, "forward must be a dict"),
    ({"reorder": "maybe"}, "reorder must be true or false"),
])
def test_impossible_parameters_give_one_line_errors(kwargs, fragment):
    assert fragment in one_line_error(**kwargs)


def test_bad_trace_files_give_one_line_errors(tmp_path):
    cases = {"words.trace": "1\n2\nthree\n", "backwards.trace": "5\n3\n", "empty.trace": "\n",
             "zero.trace": "0\n0\n", "binary.trace": None}
    for name, text in cases.items():
        path = tmp_path / name
        if text is None:
            path.write_bytes(b"\xff\xfe\x00")
        else:
            path.write_text(text)
        message = one_line_error(trace=str(path))
        assert str(path) in message or name in message


def test_burst_loss_builds_a_gilbert_model_with_that_mean():
    p = make_config(burst_loss=(2, 4)).forward
    assert p.ge_r == pytest.approx(25)
    assert p.expected_loss == pytest.approx(0.02)


def test_every_profile_is_valid_and_documented():
    text = (Path(__file__).resolve().parents[2] / "docs" / "links.md").read_text(encoding="utf-8")
    for name in profiles.names():
        config = link_profiles.get(name)
        assert isinstance(config, LinkConfig) and config.profile == name
        assert f"`{name}`" in text
        for source in profiles.PROFILES[name]["sources"]:
            assert f"[{source}]" in text


def test_profile_shapes_wan_far_and_cellular_impaired():
    assert link_profiles.get("wan-longhaul").forward.delay_ms >= 20
    for name in ("lte", "5g", "3g"):
        config = link_profiles.get(name)
        for direction in (config.forward, config.reverse):
            assert direction.jitter_ms > 0 and direction.expected_loss > 0 and direction.trace
        assert config.forward.trace.endswith("-up") and config.reverse.trace.endswith("-down")


def test_profile_overrides_both_directions_then_one():
    config = link_profiles.get("wan-longhaul", delay="60ms", reverse={"rate": "10mbit"})
    assert config.forward.delay_ms == config.reverse.delay_ms == 60
    assert config.forward.rate_mbit == 100 and config.reverse.rate_mbit == 10
    assert config.forward.jitter_ms == 1  # untouched profile values stay


def test_overrides_replace_conflicting_profile_values():
    lte = link_profiles.get("lte", loss=1)
    assert lte.forward.loss == 1 and lte.forward.ge_p is None
    fixed = link_profiles.get("lte", rate="20mbit")
    assert fixed.reverse.rate_mbit == 20 and fixed.reverse.trace is None
    wan = link_profiles.get("wan-metro", burst_loss=(1, 2), queue_bytes=100_000)
    assert wan.forward.loss == 0 and wan.forward.ge_p is not None and wan.forward.queue_packets is None
    cleared = link_profiles.get("wan-metro", rate="none")
    assert cleared.forward.rate_mbit is None


def test_command_line_override_parses_and_validates():
    selector, values = parse_override("mn1-ar1:profile=lte,delay=30ms,rev.rate=5mbit")
    assert selector == "mn1-ar1"
    kwargs = override_to_kwargs(values)
    config = make_config(**kwargs)
    assert config.profile == "lte" and config.forward.delay_ms == 30
    assert config.reverse.rate_mbit == 5 and config.forward.trace == "lte-up"


@pytest.mark.parametrize("text, fragment", [
    ("nolink", "must look like LINK:key=value"),
    ("a-b:delay", "is not key=value"),
    ("a-b:delay=-3ms", "delay -3 ms is outside"),
    ("a-b:loss=120", "loss 120 % is outside"),
    ("a-b:colour=blue", "unknown link parameter"),
])
def test_command_line_override_errors_are_one_line(text, fragment):
    with pytest.raises(LinkConfigError) as info:
        parse_override(text)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_config_round_trips_through_its_dict():
    config = link_profiles.get("wlan", seed=7, backend="userspace")
    assert LinkConfig.from_dict(config.to_dict()) == config


def test_derived_properties():
    assert LinkParams(jitter_ms=3).jitter_std_ms == pytest.approx(3 / 3 ** 0.5)
    assert LinkParams(jitter_ms=3, distribution="normal").jitter_std_ms == 3
    assert LinkParams(rate_mbit=5).queue_limit == (1000, None)
    assert LinkParams(delay_ms=5).queue_limit == (None, None)
    assert LinkParams(delay_ms=5).acts_on_packets is False
    assert LinkParams(loss=1).acts_on_packets is True


def test_argparse_helpers_collect_overrides_per_link():
    import argparse
    from nodeapps.linkemu.overrides import add_link_arguments, link_overrides
    parser = argparse.ArgumentParser()
    add_link_arguments(parser)
    args = parser.parse_args(["--link", "mn1-ar1:profile=lte", "--link", "mn1-ar1:delay=30ms,fwd.loss=1",
                              "--link", "sg-office:delay=60ms", "--link-backend", "userspace"])
    overrides = link_overrides(args.link)
    assert args.link_backend == "userspace"
    assert overrides["mn1-ar1"] == {"profile": "lte", "delay": "30ms", "forward": {"loss": "1"}}
    assert make_config(**overrides["sg-office"]).reverse.delay_ms == 60


@pytest.mark.parametrize("kwargs", [
    {"queue_packets": float("inf")}, {"queue_bytes": float("nan")}, {"queue_bytes": "1e400"},
    {"delay": 10 ** 400}, {"delay": float("inf")}, {"rate": "1e999mbit"}, {"burst_loss": (1, float("inf"))},
    {"loss": float("nan")}, {"jitter": "nan"},
])
def test_non_finite_and_huge_numbers_are_one_line_errors(kwargs):
    one_line_error(**kwargs)


def test_canonical_field_names_work_as_keywords_too():
    p = make_config(delay_ms=30, jitter_ms=2, loss_pct=1, rate_mbit=5).forward
    assert (p.delay_ms, p.jitter_ms, p.loss, p.rate_mbit) == (30, 2, 1, 5)
