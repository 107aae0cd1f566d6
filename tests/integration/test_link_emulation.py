"""EmulatedLink in Mininet: delay and rate hold, nothing is left behind, emulators die with their parent.

Node names start with "le" (this suite's prefix); the hidden emulator nodes are named after them.
"""
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root and Mininet")]

mininet_net = pytest.importorskip("mininet.net")
from mininet.log import setLogLevel  # noqa: E402

from nodeapps.linkemu.netem import direction_commands  # noqa: E402
from nodeapps.linkemu.params import LinkParams  # noqa: E402
from topologies.links import EmulatedLink, emulation_metadata  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def two_hosts(prefix, **link_kwargs):
    setLogLevel("warning")
    net = mininet_net.Mininet(controller=None, build=False)
    h1 = net.addHost(f"{prefix}1", ip="10.77.0.1/24")
    h2 = net.addHost(f"{prefix}2", ip="10.77.0.2/24")
    link = net.addLink(h1, h2, cls=EmulatedLink, **link_kwargs)
    net.build()
    return net, h1, h2, link


def ping_rtts(host, count, interval="0.05"):
    out = host.cmd(f"ping -n -q -c {count} -i {interval} 10.77.0.2")
    match = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", out)
    assert match, out
    return [float(v) for v in match.groups()]


def rtt_while_on_time(host, link, expected, tolerance, tries=3):
    """Average RTT of 40 pings; measured again (up to ``tries`` times) while it is off and the emulator
    released frames late during the measurement: the host fell behind (e.g. the kernel still tearing down
    the previous test's namespaces), which inflates delays the emulator itself gets right."""
    for _ in range(tries):
        before = (link.stats() or {}).get("late", 0)
        _, avg, _, _ = ping_rtts(host, 40)
        time.sleep(1.1)   # the emulator writes its counters every second
        late = (link.stats() or {}).get("late", 0) - before
        if abs(avg - expected) <= tolerance or not late:
            return avg
    return avg


def test_20ms_each_way_gives_40ms_rtt_and_clean_teardown():
    net, h1, h2, link = two_hosts("le", delay="20ms")
    try:
        h1.cmd("ping -n -c 2 -i 0.2 10.77.0.2")  # ARP first (it is delayed too)
        avg = rtt_while_on_time(h1, link, 40.0, 1.5)
        assert abs(avg - 40.0) <= 1.5, f"RTT {avg} ms"
        report = link.report()
        assert report["backend"] in ("userspace", "netem") and report["backend_reason"]
        emulator_pid = link.process.pid if link.process else None
        hidden_pid = link.hidden.pid if link.hidden else None
        workdir = link._workdir
    finally:
        net.stop()
    if report["backend"] == "userspace":
        assert not alive(emulator_pid) and not alive(hidden_pid)
        assert workdir and not os.path.exists(workdir)
        final = link.stats()
        assert final["running"] is False and final["released"] >= 80
        assert final["directions"]["forward"]["offered"] >= 40
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert "le1-eth0" not in links and "le2-eth0" not in links
    metadata = emulation_metadata([link])
    assert metadata["backends"] == {report["backend"]: 1} and metadata["faithful"] in (True, False)


def test_rate_limit_holds_for_tcp():
    net, h1, h2, link = two_hosts("ler", delay="5ms", rate="20mbit")
    try:
        h2.cmd("iperf3 -s -1 -D -p 5301 --logfile /dev/null")
        time.sleep(0.3)
        out = h1.cmd("iperf3 -c 10.77.0.2 -p 5301 -t 6 -O 1 -J")
        import json
        result = json.loads(out[out.index("{"):])
        goodput = result["end"]["sum_received"]["bits_per_second"] / 1e6
        expected = 20 * 1448 / 1514  # MSS over Ethernet frame
        assert expected * 0.85 <= goodput <= expected * 1.05, f"goodput {goodput:.2f} Mbit/s"
        stats = link.stats()
        if stats:  # userspace: TCP reached the emulator as real frames, not GSO super-frames
            assert stats["directions"]["forward"]["max_frame"] <= 1514
    finally:
        net.stop()


def test_emulator_dies_with_its_parent():
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {ROOT!r})
        from mininet.net import Mininet
        from mininet.log import setLogLevel
        from topologies.links import EmulatedLink
        setLogLevel("warning")
        net = Mininet(controller=None, build=False)
        a, b = net.addHost("lep1"), net.addHost("lep2")
        link = net.addLink(a, b, cls=EmulatedLink, delay="1ms", backend="userspace")
        print(link.process.pid, link.hidden.pid, a.pid, b.pid, link._workdir, flush=True)
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    fields = proc.stdout.split()
    assert len(fields) == 5, proc.stderr
    pids, workdir = [int(p) for p in fields[:4]], fields[4]
    emulator = pids[0]
    try:
        deadline = time.monotonic() + 5
        while alive(emulator) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(emulator)
        assert not os.path.exists(workdir)  # an orphaned emulator removes its own stats directory
    finally:
        for pid in pids:  # the shells die on hang-up; make sure, by PID, nothing of ours survives
            if alive(pid):
                os.kill(pid, 9)


def test_nothing_to_emulate_is_a_plain_veth_pair():
    net, h1, h2, link = two_hosts("lei", profile="ideal")
    try:
        assert link.backend == "none" and link.hidden is None and link.process is None
        h1.cmd("ping -n -c 1 10.77.0.2")
        _, avg, _, _ = ping_rtts(h1, 5)
        assert avg < 1.0
    finally:
        net.stop()
    assert link.report()["backend"] == "none"


def test_generated_tbf_commands_are_accepted_by_this_kernel():
    setLogLevel("warning")
    net = mininet_net.Mininet(controller=None, build=False)
    try:
        h1, h2 = net.addHost("let1"), net.addHost("let2")
        net.addLink(h1, h2)
        net.build()
        for command in direction_commands("let1-eth0", LinkParams(rate_mbit=10, queue_bytes=100_000)):
            out, err, code = h1.pexec(command)
            assert code == 0, err
        assert "tbf" in h1.cmd("tc qdisc show dev let1-eth0")
    finally:
        net.stop()


NETEM_CASES = [
    LinkParams(delay_ms=20),
    LinkParams(delay_ms=20, jitter_ms=4, jitter_correlation=25, distribution="normal", reorder=True),
    LinkParams(delay_ms=5, loss=1.5),
    LinkParams(ge_p=2, ge_r=30, ge_loss_bad=90, ge_loss_good=0.5),
    LinkParams(delay_ms=10, rate_mbit=100, queue_bytes=200_000),
    LinkParams(rate_mbit=0.5, queue_packets=20),
    LinkParams(delay_ms=1, queue_packets=50),
]


@pytest.mark.parametrize("params", NETEM_CASES, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.to_dict().items()))
def test_generated_netem_commands_parse_with_this_tc(params):
    """tc checks options in userspace before asking the kernel: a parse error exits 1 with a message, a
    kernel refusal (no netem here) exits 2 with "Error: ...". Either success or a kernel refusal proves
    that the generated syntax is right, so the netem path is checked even on a kernel without netem."""
    commands = [c for c in direction_commands("lo", params) if c[0] == "tc"]
    assert commands
    script = " ; ".join(" ".join(c) + " ; echo rc=$?" for c in commands)
    out = subprocess.run(["unshare", "--net", "sh", "-c", script + " 2>&1"], capture_output=True, text=True,
                         timeout=20).stdout
    codes = re.findall(r"rc=(\d+)", out)
    assert len(codes) == len(commands), out
    for code in codes:
        assert code in ("0", "2"), out
    for marker in ("Illegal", "Usage", "What is", "No distribution", "Unknown"):
        assert marker not in out, out
