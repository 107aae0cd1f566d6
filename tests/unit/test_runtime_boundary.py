"""No input stops a node: the per-input boundary of the node loop and the control socket, the SG's drop of
clear packets to its own addresses, and fault-injection commands only where the config enables them.

Runtimes are built from the lab's own configs (no root, no namespaces): their packet handlers read from a
datagram socketpair standing in for the AF_PACKET capture, and write to a pipe standing in for the TUN.
"""
import json
import os
import socket
import threading
import time

import pytest

from nodeapps import ipv6
from nodeapps.runtime.config import NodeConfig, build_processor
from nodeapps.runtime.control import ControlServer, request
from nodeapps.runtime.daemon import FAULT_INJECTION_DISABLED, SUMMARY_OCTETS, NodeRuntime
from nodeapps.runtime.packet_io import ETH_HEADER_LEN

pytest.importorskip("mininet.topo")   # the lab writes the configs
from topologies.lab import SvpnLab  # noqa: E402


def lab_configs(tmp_path, **options) -> dict:
    lab = SvpnLab(addressing="public", attachments=["wlan1", "wlan2"], **options)
    lab.run_dir = str(tmp_path)
    return lab._make_configs()


def runtime(cls, config: dict):
    node_config = NodeConfig.from_dict(config)
    return cls(node_config, build_processor(node_config, now=time.time))


class FakeWire:
    """A capture socket (frames in) and a TUN (packets out) without a kernel device."""

    def __init__(self):
        self.sender, self.capture = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.capture.setblocking(False)
        self.tun_read, self.tun_write = os.pipe()
        os.set_blocking(self.tun_read, False)

    def send(self, *packets: bytes) -> None:
        for packet in packets:
            self.sender.send(bytes(ETH_HEADER_LEN) + packet)

    def written(self) -> bytes:
        try:
            return os.read(self.tun_read, 1 << 20)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        self.sender.close()
        self.capture.close()
        os.close(self.tun_read)
        os.close(self.tun_write)


@pytest.fixture
def wire():
    w = FakeWire()
    yield w
    w.close()


def events(rt, name: str) -> list[dict]:
    return [e for e in rt.log.recent if e["event"] == name]


def one_loop_turn(rt) -> None:
    """Run the real loop for one turn: the timer is due at once and stops the loop after the fds."""
    rt.next_timer = lambda: 0.0
    rt.on_timer = lambda now: setattr(rt, "stopping", True)
    rt.run()


def packet(src: str, dst: str, next_header: int, payload: bytes) -> bytes:
    return ipv6.build_header(ipv6.pton(src), ipv6.pton(dst), next_header, len(payload)) + payload


def test_every_node_counts_handler_errors_from_the_start(tmp_path):
    for name, config in lab_configs(tmp_path).items():
        assert runtime(NodeRuntime, config).counters["handler_errors"] == 0, name


def test_a_packet_that_raises_costs_only_that_packet_and_is_logged_with_its_first_octets(tmp_path, wire):
    config = lab_configs(tmp_path)["mn1"]
    config = {k: v for k, v in config.items() if k != "mobility"}   # the plain node loop
    rt = runtime(NodeRuntime, config)
    rt.tun_fd = wire.tun_write
    good1, bad, good2 = (packet("2001:db8::1", "2001:db8::2", 50, bytes([i]) * 24) for i in (1, 2, 3))

    def inbound(p):
        if p == bad:
            raise AttributeError("'NoneType' object has no attribute 'name'")
        return "accept", None, p
    rt.processor.inbound = inbound
    rt._watch(wire.capture.fileno(), lambda now: rt.on_network(wire.capture, now), "network test")
    wire.send(good1, bad, good2)
    one_loop_turn(rt)
    assert wire.written() == good1 + good2          # the rest of the batch still reached the TUN
    assert rt.counters["handler_errors"] == 1
    [error] = events(rt, "handler_error")
    assert error["reason"] == "AttributeError: 'NoneType' object has no attribute 'name'"
    assert error["bytes"] == len(bad) and error["head"] == bad[:SUMMARY_OCTETS].hex()


def test_a_role_handler_that_raises_mid_batch_is_called_again_for_the_rest_and_its_flush(tmp_path, wire,
                                                                                          monkeypatch):
    from nodeapps.roles import security_gateway
    monkeypatch.setattr(security_gateway, "run_ip", lambda *args: "")
    config = lab_configs(tmp_path, mobility=True, vcm="in-sg")["sg"]
    rt = runtime(security_gateway.GatewayRuntime, config)
    rt.setup_role()
    rt.tun_fd = wire.tun_write
    sg = config["mobility"]["address"]
    good1, bad, good2 = (packet("2001:db8:21::9", sg, ipv6.NH_ESP, bytes([i]) * 4 + bytes(28)) for i in (1, 2, 3))
    inner = {good1: packet("fdc0::1", "fdc0::2", 59, b""), good2: packet("fdc0::3", "fdc0::4", 59, b"")}

    def inbound(p):
        if p == bad:
            raise KeyError("no such flow")
        return "accept", None, inner[p]   # sa None must not reach sa.name (the VCM monitor's lookup)
    rt.processor.inbound = inbound
    flushes = []
    rt._vcm_flush = lambda now: flushes.append(now)
    rt._watch(wire.capture.fileno(), lambda now: rt.on_network(wire.capture, now), "network sg-wan")
    wire.send(good1, bad, good2)
    one_loop_turn(rt)
    assert wire.written() == inner[good1] + inner[good2]
    assert flushes, "the post-batch flush ran"
    assert rt.counters["handler_errors"] == 1
    [error] = events(rt, "handler_error")
    assert error["handler"] == "network sg-wan" and error["reason"] == "KeyError: 'no such flow'"
    assert error["bytes"] == len(bad) and error["head"] == bad[:SUMMARY_OCTETS].hex()


def test_a_timer_that_raises_is_counted_and_held_off_briefly(tmp_path):
    config = {k: v for k, v in lab_configs(tmp_path)["mn1"].items() if k != "mobility"}
    rt = runtime(NodeRuntime, config)
    calls = []

    def on_timer(now):
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise ZeroDivisionError("division by zero")
        rt.stopping = True
    rt.next_timer = lambda: 0.0   # always due: without the hold-off a failing timer would spin
    rt.on_timer = on_timer
    rt.run()
    assert rt.counters["handler_errors"] == 1
    assert calls[1] - calls[0] >= 0.009
    [error] = events(rt, "handler_error")
    assert error["handler"] == "timer" and error["reason"] == "ZeroDivisionError: division by zero"
    assert "bytes" not in error


def test_a_control_request_that_raises_gets_one_line_and_the_node_serves_the_next(tmp_path):
    config = {k: v for k, v in lab_configs(tmp_path)["mn1"].items() if k != "mobility"}
    config["control_socket"] = str(tmp_path / "n.sock")
    rt = runtime(NodeRuntime, config)
    rt.control = ControlServer(config["control_socket"], rt.on_control, on_error=rt.control_error)
    rt._watch(rt.control.fileno(), lambda now: rt.control.on_readable(), "control")

    def broken_status():
        raise TypeError("unsupported operand type(s) for +: 'int' and\nNoneType")
    rt.status = broken_status
    answers = {}

    def client():
        try:
            with pytest.raises(OSError) as failed:
                request(config["control_socket"], "status")
            answers["status"] = str(failed.value)
            with pytest.raises(OSError) as refused:
                request(config["control_socket"], "events", last="many")
            answers["refused"] = str(refused.value)
            answers["events"] = request(config["control_socket"], "events", last=5)
        finally:
            rt.stopping = True
    thread = threading.Thread(target=client)
    thread.start()
    rt.run()
    thread.join()
    rt.control.close()
    assert answers["status"] == ("node refused 'status': internal error in 'status': TypeError: unsupported "
                                 "operand type(s) for +: 'int' and NoneType")
    assert "\n" not in answers["status"]
    assert "last 'many'" in answers["refused"]          # a refusal is the client's fault: not counted
    assert rt.counters["handler_errors"] == 1
    [error] = events(rt, "handler_error")
    assert error["handler"] == "control" and error["cmd"] == "status" and error["reason"].startswith("TypeError")
    assert error in answers["events"]["events"]


def test_control_server_answers_a_result_that_is_no_json_and_keeps_serving(tmp_path):
    path = str(tmp_path / "c.sock")
    failures = []
    circular = []
    circular.append(circular)
    server = ControlServer(path, lambda req: circular if req["cmd"] == "loop" else {"cmd": req["cmd"]},
                           on_error=lambda cmd, exc: failures.append((cmd, type(exc).__name__)))
    replies = {}

    def client():
        for cmd in ("loop", "status"):
            try:
                replies[cmd] = request(path, cmd)
            except OSError as exc:
                replies[cmd] = str(exc)
    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 5
    while thread.is_alive() and time.monotonic() < deadline:
        server.on_readable()
        time.sleep(0.005)
    thread.join()
    server.close()
    assert replies["loop"].startswith("node refused 'loop': internal error in 'loop': ValueError")
    assert replies["status"] == {"cmd": "status"}
    assert failures == [("loop", "ValueError")]


# ---- the SG drops clear packets to its own addresses ----

def sg_runtime(tmp_path, monkeypatch, wire, **options):
    from nodeapps.roles import security_gateway
    monkeypatch.setattr(security_gateway, "run_ip", lambda *args: "")
    config = lab_configs(tmp_path, mobility=True, **options)["sg"]
    rt = runtime(security_gateway.GatewayRuntime, config)
    rt.setup_role()
    rt.tun_fd = wire.tun_write
    return rt, config


@pytest.mark.parametrize("vcm", [None, "in-sg", "host"])
def test_sg_drops_clear_extension_header_packets_to_its_addresses(tmp_path, monkeypatch, wire, vcm):
    pytest.importorskip("scapy.layers.inet6")
    from scapy.layers.inet6 import HAO, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, MIP6MH_BU, PadN
    from scapy.layers.inet import UDP
    rt, config = sg_runtime(tmp_path, monkeypatch, wire, vcm=vcm)
    mobility = config["mobility"]
    attacker = "2001:db8:21::66"
    victim = mobility["peers"][0]["address"]
    clear = []
    for dst in [mobility["address"]] + mobility.get("local_addresses", []):
        clear += [
            IPv6(src=attacker, dst=dst) / IPv6ExtHdrDestOpt(options=[HAO(hoa=victim)]) / MIP6MH_BU(seq=7, flags=0),
            IPv6(src=attacker, dst=dst) / IPv6ExtHdrDestOpt(options=[HAO(hoa=victim)]) / UDP(dport=9) / b"data",
            IPv6(src=attacker, dst=dst) / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")]) / UDP(dport=9),
            IPv6(src=attacker, dst=dst) / IPv6ExtHdrRouting(type=2, segleft=1, addresses=[victim]) / UDP(dport=9),
        ]
    wire.send(*(bytes(p) for p in clear))
    rt.on_network(wire.capture, time.monotonic())
    assert rt.counters["clear_dropped"] == len(clear)
    assert rt.counters["handler_errors"] == 0
    assert wire.written() == b""                       # nothing reached the office
    assert events(rt, "clear_dropped")[0]["src"] == attacker


def test_sg_vcm_monitor_ignores_a_packet_without_sa(tmp_path, monkeypatch, wire):
    rt, _config = sg_runtime(tmp_path, monkeypatch, wire, vcm="in-sg")
    assert rt._vcm_inbound(None, packet("fdc0::1", "fdc0::2", 59, b""), time.monotonic()) is False


# ---- fault injection only where enabled ----

def mn_runtime(tmp_path, **options):
    from nodeapps.roles.mobile_node import MobileNodeRuntime
    config = lab_configs(tmp_path, mobility=True, vcm="in-sg", **options)["mn1"]
    rt = runtime(MobileNodeRuntime, config)
    sent = []
    from nodeapps.mobility.paths import LinkState, PathSelector
    from nodeapps.roles.mn_pairs import DirectPairs
    rt.pairs, rt.peer_routing, rt.paths = DirectPairs(rt), None, PathSelector(state=LinkState.AWAY)   # as setup_role would
    rt.pairs.agent = object()
    rt.pairs.send_to_vcm = sent.append
    return rt, sent


def test_lab_writes_fault_injection_into_every_node_config(tmp_path):
    assert {c["fault_injection"] for c in lab_configs(tmp_path, mobility=True, vcm="host").values()} == {False}
    on = lab_configs(tmp_path, mobility=True, vcm="host", fault_injection=True)
    assert {c["fault_injection"] for c in on.values()} == {True}
    assert NodeConfig.from_dict(on["sg"]).fault_injection is True


def test_fault_commands_are_refused_without_fault_injection(tmp_path):
    rt, sent = mn_runtime(tmp_path)
    for cmd, args in (("vcm-inject", {"data": "00ff"}), ("forget-peer-binding", {"home_address": "::1"})):
        with pytest.raises(ValueError) as refused:
            rt.on_control({"cmd": cmd, **args})
        assert str(refused.value) == FAULT_INJECTION_DISABLED
    assert sent == []
    assert rt.counters["handler_errors"] == 0


def test_fault_commands_work_with_fault_injection(tmp_path):
    rt, sent = mn_runtime(tmp_path, fault_injection=True)
    assert rt.on_control({"cmd": "vcm-inject", "data": "00ff"}) == {"sent": 2, "state": "away"}
    assert sent == [b"\x00\xff"]


def test_fault_injection_config_must_be_a_flag(tmp_path):
    from nodeapps.runtime.config import ConfigError
    config = lab_configs(tmp_path)["sg"]
    with pytest.raises(ConfigError, match="fault_injection must be true or false, not 'yes'"):
        NodeConfig.from_dict({**config, "fault_injection": "yes"})
    assert NodeConfig.from_dict({k: v for k, v in config.items() if k != "fault_injection"}).fault_injection \
        is False


# ---- the lab keeps each node's final counters; the integration fixture fails on handler_errors ----

class ExitedProcess:
    def poll(self):
        return 0

    def wait(self, timeout=None):
        return 0


def write_events(path, records) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")


def test_lab_stop_reads_each_node_apps_final_counters_and_tells_listeners(tmp_path, monkeypatch):
    import topologies.lab as lab_module
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lab = SvpnLab(addressing="public", attachments=["wlan1", "wlan2"], run_dir=str(run_dir))
    lab.run_dir = str(run_dir)
    lab.node_configs = {"sg": {}, "mn1": {}, "mn2": {}}
    lab.apps = {node: ExitedProcess() for node in lab.node_configs}
    write_events(run_dir / "sg.events.jsonl", [
        {"time": 1.0, "node": "sg", "event": "node_started", "role": "security-gateway"},
        {"time": 2.0, "node": "sg", "event": "handler_error", "handler": "network sg-wan",
         "reason": "AttributeError: 'NoneType' object has no attribute 'name'", "bytes": 64, "head": "6000"},
        {"time": 3.0, "node": "sg", "event": "handler_error", "handler": "control", "reason": "KeyError: 'x'",
         "cmd": "status"},
        {"time": 4.0, "node": "sg", "event": "node_stopped", "handler_errors": 2, "net_rx": 10}])
    write_events(run_dir / "mn1.events.jsonl", [{"time": 4.0, "node": "mn1", "event": "node_stopped",
                                                 "handler_errors": 0, "net_rx": 3}])
    (run_dir / "mn2.events.jsonl").write_text('{"time":4.0,"node":"mn2","event":"node_st')   # killed mid-line
    told = []
    monkeypatch.setattr(lab_module, "STOP_LISTENERS", [told.append])
    lab.stop()
    lab.stop()   # idempotent: read and told once
    assert told == [lab]
    assert lab.final_counters["sg"] == {"handler_errors": 2, "net_rx": 10}
    assert lab.handler_errors() == {"sg": 2, "mn1": 0}     # mn2 did not exit cleanly: no entry
    assert [e["handler"] for e in lab.handler_error_events] == ["network sg-wan", "control"]

    report = lab_module.handler_error_report(lab.handler_errors(), lab.handler_error_events)
    lines = report.splitlines()
    assert lines[0] == "sg: handler_errors = 2"
    assert "handler=network sg-wan" in lines[1] and "AttributeError" in lines[1] and "head=6000" in lines[1]
    assert "cmd=status" in lines[2]
    assert "mn1" not in report


def test_handler_error_report_is_empty_only_when_every_node_has_none():
    from topologies.lab import handler_error_report
    assert handler_error_report({"sg": 0, "ha": 0, "mn1": 0}, []) == ""
    assert handler_error_report({}, []) == ""
    assert handler_error_report({"sg": 0, "mn2": 1}, []) == "mn2: handler_errors = 1"
