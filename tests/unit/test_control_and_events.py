import json
import os
import threading

import pytest

from nodeapps.cli import find_socket, render
from nodeapps.runtime.control import ControlServer, request
from nodeapps.runtime.events import EventLog, JsonLinesTail, read_json_lines


def serve_once(server):
    import select
    ready, _, _ = select.select([server.sock], [], [], 5)
    assert ready
    server.on_readable()


def test_control_socket_answers_status_and_reports_unknown_commands(tmp_path):
    path = str(tmp_path / "n.sock")
    server = ControlServer(path, lambda req: {"echo": req["cmd"]} if req["cmd"] == "status" else
                           (_ for _ in ()).throw(ValueError(f"unknown command {req['cmd']!r}")))
    try:
        t = threading.Thread(target=serve_once, args=(server,))
        t.start()
        assert request(path, "status") == {"echo": "status"}
        t.join()
        t = threading.Thread(target=serve_once, args=(server,))
        t.start()
        with pytest.raises(OSError, match="unknown command"):
            request(path, "reboot")
        t.join()
    finally:
        server.close()


def test_control_socket_path_appears_only_once_it_listens(tmp_path, monkeypatch):
    """The lab treats the path's existence as readiness: a connect in the gap between bind and listen
    would be refused, so the path must not exist before listen."""
    import socket
    path = str(tmp_path / "n.sock")
    seen_at_listen = []
    real_listen = socket.socket.listen

    def listen(sock, backlog):
        seen_at_listen.append(os.path.exists(path))
        return real_listen(sock, backlog)

    monkeypatch.setattr(socket.socket, "listen", listen)
    server = ControlServer(path, lambda req: {"cmd": req["cmd"]})
    try:
        assert seen_at_listen == [False]
        assert sorted(os.listdir(tmp_path)) == ["n.sock"]
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
    finally:
        server.close()
    assert not os.path.exists(path)


def test_event_log_writes_json_lines_and_caps_floods(tmp_path):
    path = tmp_path / "e.jsonl"
    log = EventLog("sg", str(path), per_second=3)
    for i in range(10):
        log.emit(100.0 + i * 0.01, "esp_drop", reason="replay", seq=i)
    log.emit(100.5, "sa_installed", name="x")
    log.emit(101.5, "esp_drop", reason="replay", seq=99)
    log.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    drops = [r for r in records if r["event"] == "esp_drop"]
    assert [r["seq"] for r in drops] == [0, 1, 2, 99]
    assert any(r["event"] == "sa_installed" for r in records)
    suppressed = [r for r in records if r["event"] == "events_suppressed"]
    assert suppressed and suppressed[0]["count"] == 7
    assert all(r["node"] == "sg" and "time" in r for r in records)


def test_json_lines_tail_takes_a_line_only_once_its_newline_is_written(tmp_path):
    path = tmp_path / "n.events.jsonl"
    tail = JsonLinesTail(str(path))
    assert tail.read_new() == []                        # not there yet
    whole = json.dumps({"time": 1.0, "event": "new_link", "prefix": "2001:db8:31::/64"}) + "\n"
    with open(path, "w") as f:
        f.write(whole + whole[:40])                      # a writer caught half way through its second line
    assert [r["event"] for r in tail.read_new()] == ["new_link"]
    with open(path, "a") as f:
        f.write(whole[40:] + "not json\n[1, 2]\n\n")
    assert [r["prefix"] for r in tail.read_new()] == ["2001:db8:31::/64"]
    assert tail.skipped == 2 and tail.read_new() == []
    with open(path, "a") as f:
        f.write(whole[:-1])                              # a last line cut short by a kill
    assert len(read_json_lines(str(path))) == 2


def test_status_renders_as_tables():
    status = {"node": "mn1", "role": "mobile-node", "pid": 1, "uptime_s": 2.0,
              "addresses": [{"interface": "svpn0", "address": "fdc0::1/128", "scope": "global"}],
              "counters": {"tun_rx": 5},
              "ipsec": {"sas": [{"name": "mn1->sg", "direction": "out", "spi": "0x00001000", "mode": "tunnel",
                                 "local": "2001:db8::1", "remote": "2001:db8::2",
                                 "counters": {"packets": 5, "bytes": 500, "replay_drops": 0, "icv_failures": 0}}],
                        "spd": {"rules": [{"direction": "out", "src": "::/0", "dst": "fdc0::/48",
                                           "action": "protect", "sa": "mn1->sg"}]},
                        "counters": {"out_protect": 5}},
              "recent_events": [{"time": 1.0, "node": "mn1", "event": "node_started", "pid": 1}]}
    text = render(status)
    assert "mn1->sg" in text and "0x00001000" in text and "protect" in text and "out_protect=5" in text
    assert "node_started" in text


def test_status_renders_the_route_optimisation_peers():
    status = {"node": "mn1", "role": "mobile-node", "pid": 1, "uptime_s": 1.0, "addresses": [],
              "ipsec": {"sas": [], "spd": {"rules": []}},
              "mobility": {"peers": [{"peer": "mn2", "internal": "fdc0:ffee:0:1::a:2", "external": "2001:db8:e0::a:2",
                                      "optimised": True, "peer_care_of": "2001:db8:22::a:2"}]}}
    text = render(status)
    row = [line for line in text.splitlines() if line.startswith("mn2")]
    assert row and "2001:db8:22::a:2" in row[0] and "yes" in row[0].split()
    status.pop("mobility")
    assert "route optimisation" not in render(status)


def test_find_socket_says_which_node_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="mn7"):
        find_socket("mn7", str(tmp_path))
    (tmp_path / "sg.sock").write_text("")
    assert find_socket("sg", str(tmp_path)) == str(tmp_path / "sg.sock")
