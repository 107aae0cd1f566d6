"""The UDP probe between two Mininet hosts over IPv6: 50 Hz for 2 s, SIGTERM flushing, an outage.

Node names start with "hx" (this suite's prefix). Every test stops what it started in ``finally``.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root and Mininet")]

mininet_net = pytest.importorskip("mininet.net")
from mininet.log import setLogLevel  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
A, B = "2001:db8:77::1", "2001:db8:77::2"


def two_hosts():
    setLogLevel("warning")
    net = mininet_net.Mininet(controller=None, build=False)
    h1 = net.addHost("hx1", ip=None)
    h2 = net.addHost("hx2", ip=None)
    net.addLink(h1, h2)
    net.build()
    for host, address in ((h1, A), (h2, B)):
        host.cmd(f"ip -6 addr add {address}/64 dev {host.name}-eth0 nodad")
    return net, h1, h2


def probe(host, *args, log):
    return host.popen([sys.executable, "-m", "nodeapps.probe", *args], cwd=ROOT,
                      stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_50hz_for_two_seconds(tmp_path):
    net, h1, h2 = two_hosts()
    procs = []
    try:
        echo = probe(h2, "echo", "--bind", B, "--duration", "6", "--out", str(tmp_path / "echo.jsonl"),
                     log=tmp_path / "echo.log")
        procs.append(echo)
        time.sleep(0.5)
        start = time.time()
        sender = probe(h1, "send", "--to", B, "--bind", A, "--rate", "50", "--duration", "2",
                       "--out", str(tmp_path / "send.jsonl"), "--summary", str(tmp_path / "sum.json"),
                       log=tmp_path / "send.log")
        procs.append(sender)
        assert sender.wait(15) == 0, (tmp_path / "send.log").read_text()
        elapsed = time.time() - start
        stop(echo)
    finally:
        for p in procs:
            stop(p)
        net.stop()
    records = read_jsonl(tmp_path / "send.jsonl")
    assert 98 <= len(records) <= 102 and elapsed < 6
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert all(r["status"] == "ok" and r["lost"] is False for r in records)
    for r in records:
        assert 0 < r["rtt_ms"] < 50 and 0 <= r["owd_ms"] <= r["rtt_ms"] + 0.5
        assert r["t_sent"] <= r["t_recv_remote"] <= r["t_echo_remote"] <= r["t_back"]
    sent = [r["t_sent"] for r in records]
    assert 1.9 <= sent[-1] - sent[0] <= 2.1
    summary = json.loads((tmp_path / "sum.json").read_text())
    assert summary["sent"] == len(records) and summary["lost"] == 0 and summary["duplicates"] == 0
    arrivals = read_jsonl(tmp_path / "echo.jsonl")
    assert [a["seq"] for a in arrivals] == list(range(len(records)))
    assert all(a["peer"] == A and not a["duplicate"] for a in arrivals)


def test_sigterm_flushes_and_an_outage_shows_as_loss_and_gap(tmp_path):
    net, h1, h2 = two_hosts()
    procs = []
    try:
        echo = probe(h2, "echo", "--bind", B, log=tmp_path / "echo.log")
        procs.append(echo)
        time.sleep(0.5)
        sender = probe(h1, "send", "--to", B, "--timeout", "0.3", "--out", str(tmp_path / "send.jsonl"),
                       "--summary", str(tmp_path / "sum.json"), log=tmp_path / "send.log")
        procs.append(sender)
        time.sleep(1.0)
        h2.cmd("ip link set hx2-eth0 down")
        time.sleep(0.6)
        h2.cmd("ip link set hx2-eth0 up")
        h2.cmd(f"ip -6 addr replace {B}/64 dev hx2-eth0 nodad")
        time.sleep(1.0)
        sender.send_signal(signal.SIGTERM)
        assert sender.wait(5) == 0, (tmp_path / "send.log").read_text()
        echo.send_signal(signal.SIGTERM)
        assert echo.wait(5) == 0
    finally:
        for p in procs:
            stop(p)
        net.stop()
    records = read_jsonl(tmp_path / "send.jsonl")
    assert [r["seq"] for r in sorted(records, key=lambda r: r["seq"])] == list(range(len(records)))
    lost = [r for r in records if r["status"] == "lost"]
    # 0.6 s down at 50 Hz, plus the time the link and its address take to come back.
    assert 25 <= len(lost) <= 100, len(lost)
    assert sum(r["status"] == "ok" for r in records) >= 50
    summary = json.loads((tmp_path / "sum.json").read_text())
    assert summary["interrupted"] is True and summary["max_gap_ms"] >= 550
    assert summary["received"] + summary["lost"] + summary["pending"] == summary["sent"]
    # The longest gap is the outage: it spans every lost probe's 20 ms slot, and at most those plus the
    # echoes the kernel queued during neighbour discovery and delivered late.
    gap, late = summary["max_gap_ms"], summary["late"]
    assert 20 * len(lost) - 40 <= gap <= 20 * (len(lost) + late) + 300, (gap, len(lost), late)
    assert summary["sent"] == len(records)
    assert "probe echo:" in (tmp_path / "echo.log").read_text()
