"""Netem detection (with a fake runner) and the exact tc/ethtool commands of the netem backend."""
import subprocess

import pytest

from nodeapps.linkemu import netem
from nodeapps.linkemu.errors import LinkConfigError
from nodeapps.linkemu.netem import NetemSupport, choose_backend, direction_commands, link_commands
from nodeapps.linkemu.params import LinkParams
from nodeapps.linkemu.profiles import make_config


class FakeRunner:
    def __init__(self, returncode, stderr=""):
        self.returncode, self.stderr, self.calls = returncode, stderr, []

    def __call__(self, command):
        self.calls.append(command)
        return subprocess.CompletedProcess(command, self.returncode, "", self.stderr)


def test_probe_adds_netem_in_a_throwaway_namespace():
    assert netem.probe_command(True) == ["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root",
                                         "netem", "delay", "1ms"]
    assert netem.probe_command(False)[:4] == ["unshare", "--user", "--map-root-user", "--net"]


def test_detection_reports_success_and_failure_and_is_cached():
    netem.detect_netem.cache_clear()
    try:
        ok = FakeRunner(0)
        assert netem.detect_netem(ok).available is True
        assert netem.detect_netem(ok) and len(ok.calls) == 1  # cached per process
        missing = FakeRunner(2, "Error: Specified qdisc kind is unknown.\n")
        result = netem.detect_netem(missing)
        assert not result and "qdisc kind is unknown" in result.detail
    finally:
        netem.detect_netem.cache_clear()


def test_detection_survives_a_runner_that_cannot_run():
    def broken(_command):
        raise FileNotFoundError(2, "No such file", "unshare")
    netem.detect_netem.cache_clear()
    try:
        assert not netem.detect_netem(broken)
    finally:
        netem.detect_netem.cache_clear()


def test_delay_only_uses_netem_and_keeps_offloads():
    assert direction_commands("h1-eth0", LinkParams(delay_ms=20)) == [
        ["tc", "qdisc", "replace", "dev", "h1-eth0", "root", "handle", "1:", "netem",
         "limit", "100000", "delay", "20ms"]]


def test_jitter_correlation_distribution_and_random_loss():
    params = LinkParams(delay_ms=20, jitter_ms=4, jitter_correlation=25, distribution="normal", loss=1.5,
                        reorder=True)
    assert direction_commands("x", params) == [
        ["ethtool", "-K", "x", "tso", "off", "gso", "off"],
        ["tc", "qdisc", "replace", "dev", "x", "root", "handle", "1:", "netem", "limit", "100000",
         "delay", "20ms", "4ms", "25%", "distribution", "normal", "loss", "random", "1.5%"]]


def test_gilbert_elliott_maps_to_gemodel():
    params = LinkParams(ge_p=2, ge_r=30, ge_loss_bad=90, ge_loss_good=0.5)
    assert direction_commands("x", params)[1] == [
        "tc", "qdisc", "replace", "dev", "x", "root", "handle", "1:", "netem", "limit", "100000",
        "loss", "gemodel", "2%", "30%", "90%", "0.5%"]


def test_rate_only_is_a_tbf_root_with_the_queue_in_bytes():
    assert direction_commands("x", LinkParams(rate_mbit=10, queue_packets=100)) == [
        ["ethtool", "-K", "x", "tso", "off", "gso", "off"],
        ["tc", "qdisc", "replace", "dev", "x", "root", "handle", "1:", "tbf",
         "rate", "10mbit", "burst", "3028", "limit", "151400"]]


def test_delay_and_rate_put_tbf_under_netem():
    commands = direction_commands("x", LinkParams(delay_ms=10, rate_mbit=100, queue_bytes=200_000))
    assert commands[1][-4:] == ["limit", "100000", "delay", "10ms"]
    assert commands[2] == ["tc", "qdisc", "add", "dev", "x", "parent", "1:1", "handle", "10:", "tbf",
                           "rate", "100mbit", "burst", "12500", "limit", "200000"]


def test_netem_queue_limit_without_rate():
    assert direction_commands("x", LinkParams(delay_ms=1, queue_packets=50))[0][9:11] == ["limit", "50"]


def test_no_parameters_no_commands():
    assert direction_commands("x", LinkParams()) == []


def test_link_commands_put_each_direction_on_its_sender():
    fwd, rev = link_commands("a-eth0", "b-eth0", make_config(forward={"delay": 5}, reverse={"delay": 7}))
    assert fwd[0][4] == "a-eth0" and "5ms" in fwd[0]
    assert rev[0][4] == "b-eth0" and "7ms" in rev[0]


YES, NO = NetemSupport(True, "ok"), NetemSupport(False, "netem probe failed: unknown qdisc")


@pytest.mark.parametrize("kwargs, support, expected", [
    ({"delay": 10}, YES, "netem"),
    ({"delay": 10}, NO, "userspace"),
    ({"delay": 10, "jitter": 2}, YES, "userspace"),           # netem would reorder
    ({"delay": 10, "jitter": 2, "reorder": True}, YES, "netem"),
    ({"profile": "lte"}, YES, "userspace"),                   # traces
    ({"delay": 10, "backend": "userspace"}, YES, "userspace"),
    ({"delay": 10, "backend": "netem"}, YES, "netem"),
    ({}, NO, "none"),                                         # nothing to emulate: plain veth
    ({"profile": "ideal"}, YES, "none"),
    ({"backend": "userspace"}, NO, "userspace"),              # unless asked for
])
def test_backend_choice(kwargs, support, expected):
    backend, reason = choose_backend(make_config(**kwargs), support)
    assert backend == expected and reason


@pytest.mark.parametrize("kwargs, support, fragment", [
    ({"delay": 10, "backend": "netem"}, NO, "unavailable"),
    ({"profile": "lte", "backend": "netem"}, YES, "trace-driven"),
])
def test_explicit_netem_that_cannot_work_is_an_error(kwargs, support, fragment):
    with pytest.raises(LinkConfigError, match=fragment):
        choose_backend(make_config(**kwargs), support)
