"""Structured event log: one JSON object per line (time, node, event, fields), plus a recent-events ring."""
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
