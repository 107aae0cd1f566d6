"""Structured event log: one JSON object per line (time, node, event, fields), plus a recent-events ring;
and the reader for such JSON-lines files, live or finished."""
from __future__ import annotations

import collections
import json


class EventLog:
    """Writes events to a JSON-lines file; repeats of one (event, reason, type) are capped per second."""

    def __init__(self, node: str, path: str | None, *, recent: int = 200, per_second: int = 20):
        self.node = node
        self._file = open(path, "a", buffering=1, encoding="utf-8") if path else None
        self.recent: collections.deque = collections.deque(maxlen=recent)
        self._per_second = per_second
        self._window_start = 0.0
        self._counts: dict[tuple, int] = {}
        self.suppressed = 0

    def emit(self, wall_time: float, event: str, **fields) -> None:
        key = (event, fields.get("reason"), fields.get("type"))
        if wall_time - self._window_start >= 1.0:
            if self.suppressed:
                self._write(wall_time, "events_suppressed", {"count": self.suppressed})
                self.suppressed = 0
            self._window_start = wall_time
            self._counts.clear()
        seen = self._counts.get(key, 0)
        self._counts[key] = seen + 1
        if seen >= self._per_second:
            self.suppressed += 1
            return
        self._write(wall_time, event, fields)

    def _write(self, wall_time: float, event: str, fields: dict) -> None:
        record = {"time": round(wall_time, 6), "node": self.node, "event": event, **fields}
        self.recent.append(record)
        if self._file:
            self._file.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


class JsonLinesTail:
    """Reads the records appended to a JSON-lines file since the last call. A line counts only once its
    newline is written: a reader can see another process's write half done (the kernel copies it a page at a
    time), and a kill can cut the last line short. Lines that are not JSON objects are counted and skipped."""

    def __init__(self, path: str):
        self.path = path
        self.offset = 0
        self.skipped = 0

    def read_new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        whole = data[:data.rfind(b"\n") + 1]
        self.offset += len(whole)
        records = []
        for line in whole.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                self.skipped += 1
        return records


def read_json_lines(path: str) -> list[dict]:
    """Every whole JSON-object line of a file ([] if there is none)."""
    return JsonLinesTail(path).read_new()
