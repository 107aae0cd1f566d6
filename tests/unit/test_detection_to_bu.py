"""benchmarks/detection_to_bu.py: which BU belongs to which detection, read from event records."""
import json

from benchmarks import detection_to_bu as bench


def _event(time, event, node="mn1", **fields):
    return {"time": time, "event": event, "node": node, **fields}


EVENTS = [
    _event(1.0, "new_link", previous=None),                                       # first link of the run
    _event(1.001, "mobility_sent", what="BU seq 1 lifetime 105 to secured"),
    _event(2.0, "new_link", previous="2001:db8:21::/64"),
    _event(2.0015, "mobility_sent", what="BU seq 2 lifetime 105 to secured"),
    _event(2.0017, "mobility_sent", what="BU seq 3 lifetime 105 to home-agent"),  # same move: not counted again
    _event(3.0, "new_link", node="mn2", previous="2001:db8:22::/64"),
    _event(3.004, "mobility_sent", node="mn2", what="BU seq 9 lifetime 0 to secured"),
    _event(4.0, "address_hint", verdict="candidate"),
    _event(4.001, "mobility_sent", what="CoTI to 2001:db8::1"),                    # not a BU
    _event(6.0, "mobility_sent", what="BU seq 4 lifetime 105 to secured"),        # a retransmission, 2 s later
]


def test_each_detection_is_paired_with_the_next_bu_of_its_node():
    rows = bench.moves(EVENTS)
    assert [(r["node"], r["kind"], round(r["delay_ms"], 1)) for r in rows] == [
        ("mn1", "out", 1.5), ("mn2", "home", 4.0)]
    summary = bench.summary(rows)
    assert summary["all"] == {"moves": 2, "median_ms": 2.75, "max_ms": 4.0}


def test_reads_results_folders_and_node_event_files(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    lines = [json.dumps(e) for e in EVENTS] + ["{not json", "[]"]
    (tmp_path / "run" / "events.jsonl").write_text("\n".join(lines) + "\n")
    node_file = tmp_path / "mn1.events.jsonl"
    node_file.write_text("\n".join(json.dumps({k: v for k, v in e.items() if k != "node"})
                                   for e in EVENTS if e["node"] == "mn1") + "\n")
    assert len(bench.moves(bench.read_events(str(tmp_path / "run")))) == 2
    assert [r["node"] for r in bench.moves(bench.read_events(str(node_file)))] == ["mn1"]
    assert bench.main([str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
