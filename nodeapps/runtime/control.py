"""Local control socket: one JSON request line in, one JSON reply line out, then close.

Requests: {"cmd": "status"} and {"cmd": "events", "last": N}; with fault injection on, "drop-next" and the
roles' own fault commands. Non-blocking, driven by the node's loop.
Each request is its own input: a handler that refuses it raises ValueError and the client gets that one
line; anything else it raises is reported to ``on_error`` (the node counts it) and answered with a one-line
internal error, and the server goes on with the next request.
"""
from __future__ import annotations

import json
import os
import socket

MAX_REQUEST = 4096


class ControlServer:
    def __init__(self, path: str, handler, on_error=None):
        self.path = path
        self._handler = handler
        self._on_error = on_error   # (cmd, exception) of a request whose handler failed
        # The socket appears at its path only once it listens (bound under a temporary name, renamed):
        # the lab takes the path's existence as "ready", and a connect between bind and listen is refused.
        staging = path + ".new"
        for stale in (path, staging):
            if os.path.exists(stale):
                os.unlink(stale)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(staging)
        os.chmod(staging, 0o600)
        self.sock.listen(8)
        os.rename(staging, path)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> None:
        """Serve every waiting client; each request is small and answered at once."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return
            with conn:
                conn.settimeout(1.0)
                try:
                    conn.sendall(self._answer(self._read_line(conn)))
                except OSError:
                    pass  # client went away; nothing to clean up

    @staticmethod
    def _read_line(conn: socket.socket) -> bytes:
        data = b""
        while b"\n" not in data and len(data) < MAX_REQUEST:
            chunk = conn.recv(MAX_REQUEST)
            if not chunk:
                break
            data += chunk
        return data.split(b"\n", 1)[0]

    def _answer(self, line: bytes) -> bytes:
        """The reply line to one request line."""
        cmd = None
        try:
            request = json.loads(line or b"{}")
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            cmd = request.get("cmd")
            result = self._handler(request)
        except ValueError as exc:   # the request was refused: its own fault, told in one line
            return _line({"ok": False, "error": _one_line(str(exc))})
        except Exception as exc:    # a fault of the node's
            return self._failed(cmd, exc)
        try:
            return _line({"ok": True, "result": result}, default=str)
        except Exception as exc:    # a result that is no JSON (e.g. circular)
            return self._failed(cmd, exc)

    def _failed(self, cmd, exc: Exception) -> bytes:
        if self._on_error is not None:
            self._on_error(cmd, exc)
        return _line({"ok": False, "error": _one_line(f"internal error in {cmd!r}: {type(exc).__name__}: {exc}")})

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _line(reply: dict, **json_args) -> bytes:
    return json.dumps(reply, **json_args).encode() + b"\n"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def request(path: str, cmd: str, timeout: float = 2.0, **args) -> dict:
    """Client side: send one request, return the reply's result or raise OSError with the node's error."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    if not reply.get("ok"):
        raise OSError(f"node refused {cmd!r}: {reply.get('error')}")
    return reply["result"]
